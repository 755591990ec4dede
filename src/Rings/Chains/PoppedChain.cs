namespace Rings.Chains;

/// <summary>
/// A buffer popped by <see cref="IDeviceRing.PopBurst"/>: its token, its totals, and where its
/// validated segments (device-readable first) lie in the segment span the caller passed. Unlike a
/// <see cref="DescriptorChain"/>, it stays valid after the next pop, so a whole burst can be held.
/// </summary>
/// <param name="Token">What the device passes back to return the buffer.</param>
/// <param name="FirstSegment">Index of the buffer's first segment in the caller's segment span.</param>
/// <param name="SegmentCount">Segments of the buffer.</param>
/// <param name="ReadableCount">How many of them are device-readable.</param>
/// <param name="ReadableBytes">Total device-readable bytes.</param>
/// <param name="WritableBytes">Total device-writable bytes.</param>
/// <param name="Before">
/// The ring's <see cref="IDeviceRing.Position"/> just before this buffer was popped: passed to
/// <see cref="IDeviceRing.UndoPops"/>, it puts this buffer and every later one of the burst back,
/// so a caller can keep the head of a burst and give the tail back without knowing the format.
/// </param>
public readonly record struct PoppedChain(ChainToken Token, int FirstSegment, int SegmentCount, int ReadableCount, ulong ReadableBytes, ulong WritableBytes, RingPosition Before = default)
{
    /// <summary>The buffer's segments, readable ones first.</summary>
    /// <param name="segments">The segment span given to the pop.</param>
    /// <returns>The slice of <paramref name="segments"/> that is this buffer's.</returns>
    public ReadOnlySpan<ChainSegment> Segments(ReadOnlySpan<ChainSegment> segments) => segments.Slice(FirstSegment, SegmentCount);

    /// <summary>The buffer's device-readable segments.</summary>
    /// <param name="segments">The segment span given to the pop.</param>
    /// <returns>The readable slice of <paramref name="segments"/>.</returns>
    public ReadOnlySpan<ChainSegment> Readable(ReadOnlySpan<ChainSegment> segments) => segments.Slice(FirstSegment, ReadableCount);

    /// <summary>The buffer's device-writable segments.</summary>
    /// <param name="segments">The segment span given to the pop.</param>
    /// <returns>The writable slice of <paramref name="segments"/>.</returns>
    public ReadOnlySpan<ChainSegment> Writable(ReadOnlySpan<ChainSegment> segments) => segments.Slice(FirstSegment + ReadableCount, SegmentCount - ReadableCount);
}
