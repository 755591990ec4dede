namespace Rings.Chains;

/// <summary>
/// One piece of a buffer as the driver describes it: a guest-physical address and a length.
/// Whether the device reads or writes it is said by which list it is passed in.
/// </summary>
/// <param name="Address">Guest-physical address of the first byte.</param>
/// <param name="Length">Length in bytes.</param>
public readonly record struct BufferSegment(ulong Address, uint Length)
{
    /// <summary>
    /// What a buffer of these segments holds: device-readable bytes, and device-writable bytes
    /// (saturating at <see cref="uint.MaxValue"/>, the most a used length can say).
    /// </summary>
    /// <param name="readable">Segments the device reads.</param>
    /// <param name="writable">Segments the device writes.</param>
    /// <param name="readBytes">Total device-readable bytes.</param>
    /// <param name="writeBytes">Total device-writable bytes, saturated.</param>
    internal static void Totals(ReadOnlySpan<BufferSegment> readable, ReadOnlySpan<BufferSegment> writable, out ulong readBytes, out uint writeBytes)
    {
        readBytes = 0;
        writeBytes = 0;
        foreach (var s in readable)
        {
            readBytes += s.Length;
        }

        foreach (var s in writable)
        {
            writeBytes = writeBytes + s.Length < writeBytes ? uint.MaxValue : writeBytes + s.Length;
        }
    }
}
