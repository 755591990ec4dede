namespace Rings.Memory;

/// <summary>Translation of ring parts at setup time, where a bad address is the caller's error.</summary>
internal static class RingPart
{
    /// <summary>Translates a ring part that must lie wholly in one region and be aligned.</summary>
    public static nint Translate(GuestMemory memory, ulong address, ulong bytes, uint alignment, string what)
    {
        ArgumentNullException.ThrowIfNull(memory);
        if ((address & (alignment - 1)) != 0)
        {
            throw new ArgumentException($"{what} at 0x{address:x} is not {alignment}-byte aligned");
        }

        if (!memory.TryTranslate(address, bytes, out var host))
        {
            throw new ArgumentException($"{what} at 0x{address:x} (+{bytes} bytes) is not inside the memory table");
        }

        return host;
    }
}
