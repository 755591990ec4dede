namespace Rings.Linux.Runtime;

/// <summary>
/// A run of frame bytes in this process: guest memory already translated and checked (a
/// vhost-user port's view of a transmit chain), a port's own buffers, or a burst's scratch.
/// Valid until the burst that holds it is released.
/// </summary>
public readonly unsafe struct FrameSegment
{
    /// <summary>Describes <paramref name="length"/> bytes at <paramref name="start"/>.</summary>
    /// <param name="start">The first byte; the memory must stay mapped until the burst is released.</param>
    /// <param name="length">Length in bytes (0 or more).</param>
    public FrameSegment(byte* start, int length)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        Start = start;
        Length = length;
    }

    /// <summary>The first byte.</summary>
    public byte* Start { get; }

    /// <summary>Length in bytes.</summary>
    public int Length { get; }

    /// <summary>The bytes.</summary>
    public Span<byte> Span => new(Start, Length);
}
