namespace Rings.Memory;

/// <summary>
/// One contiguous piece of guest memory: a guest-physical range and where it is
/// mapped in this process. The owner of the mapping keeps it alive for as long
/// as any <see cref="GuestMemory"/> refers to it.
/// </summary>
/// <param name="GuestPhysicalAddress">First guest-physical address of the region.</param>
/// <param name="Length">Length of the region in bytes.</param>
/// <param name="HostAddress">Where the first byte is mapped in this process.</param>
public readonly record struct GuestMemoryRegion(ulong GuestPhysicalAddress, ulong Length, nint HostAddress)
{
    /// <summary>
    /// Offset of <paramref name="address"/> inside this region when the whole range
    /// [address, address + length) lies inside it. Overflow-safe for any input.
    /// </summary>
    /// <param name="address">Guest-physical address of the first byte.</param>
    /// <param name="length">Number of bytes wanted.</param>
    /// <param name="offset">Offset from the region start when the range fits.</param>
    /// <returns>True when the whole range lies inside the region.</returns>
    public bool TryGetOffset(ulong address, ulong length, out ulong offset)
    {
        // Unsigned subtraction so no sum can overflow. address < base is tested on its own:
        // for a region ending at 2^64 the wrapped offset of address 0 is exactly Length.
        offset = address - GuestPhysicalAddress;
        if (address < GuestPhysicalAddress || offset > Length)
        {
            return false;
        }

        return length <= Length - offset;
    }
}
