using System.Runtime.CompilerServices;

namespace Rings.Chains;

/// <summary>
/// A buffer popped by <see cref="IDeviceRing.PopBurst"/>: its token, its totals, and where its
/// validated segments (device-readable first) lie in the segment span the caller passed. Unlike a
/// <see cref="DescriptorChain"/>, it stays valid after the next pop, so a whole burst can be held.
/// </summary>
public readonly record struct PoppedChain
{
    // Packed into words so a pop writes a buffer's record with five stores rather than one per
    // field: a device's pop writes one per buffer, and on a busy core every store holds a place
    // in the store buffer until the ring's and the buffers' lines (owned by the other side's
    // core) come in. _head: the token (low half) and the first segment; _counts: the segment
    // count (low half) and the readable count.
    private readonly ulong _head;
    private readonly ulong _counts;

    /// <summary>Creates the record of a popped buffer.</summary>
    /// <param name="token">What the device passes back to return the buffer.</param>
    /// <param name="firstSegment">Index of the buffer's first segment in the caller's segment span.</param>
    /// <param name="segmentCount">Segments of the buffer.</param>
    /// <param name="readableCount">How many of them are device-readable.</param>
    /// <param name="readableBytes">Total device-readable bytes.</param>
    /// <param name="writableBytes">Total device-writable bytes.</param>
    /// <param name="before">
    /// The ring's <see cref="IDeviceRing.Position"/> just before this buffer was popped: passed to
    /// <see cref="IDeviceRing.UndoPops"/>, it puts this buffer and every later one of the burst back,
    /// so a caller can keep the head of a burst and give the tail back without knowing the format.
    /// </param>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public PoppedChain(ChainToken token, int firstSegment, int segmentCount, int readableCount, ulong readableBytes, ulong writableBytes, RingPosition before = default)
    {
        _head = token.Value | ((ulong)(uint)firstSegment << 32);
        _counts = (uint)segmentCount | ((ulong)(uint)readableCount << 32);
        ReadableBytes = readableBytes;
        WritableBytes = writableBytes;
        Before = before;
    }

    /// <summary>What the device passes back to return the buffer.</summary>
    public ChainToken Token { get => new ChainToken((uint)_head); init => _head = (_head & ~0xFFFFFFFFUL) | value.Value; }

    /// <summary>Index of the buffer's first segment in the caller's segment span.</summary>
    public int FirstSegment { get => (int)(_head >> 32); init => _head = (uint)_head | ((ulong)(uint)value << 32); }

    /// <summary>Segments of the buffer.</summary>
    public int SegmentCount { get => (int)(uint)_counts; init => _counts = (_counts & ~0xFFFFFFFFUL) | (uint)value; }

    /// <summary>How many of them are device-readable.</summary>
    public int ReadableCount { get => (int)(_counts >> 32); init => _counts = (uint)_counts | ((ulong)(uint)value << 32); }

    /// <summary>Total device-readable bytes.</summary>
    public ulong ReadableBytes { get; init; }

    /// <summary>Total device-writable bytes.</summary>
    public ulong WritableBytes { get; init; }

    /// <summary>
    /// The ring's <see cref="IDeviceRing.Position"/> just before this buffer was popped (see the constructor).
    /// </summary>
    public RingPosition Before { get; init; }

    /// <summary>The parts, in the constructor's order.</summary>
    /// <param name="token">The token.</param>
    /// <param name="firstSegment">The first segment's index.</param>
    /// <param name="segmentCount">The segments.</param>
    /// <param name="readableCount">The readable segments.</param>
    /// <param name="readableBytes">The readable bytes.</param>
    /// <param name="writableBytes">The writable bytes.</param>
    /// <param name="before">The position before the pop.</param>
    public void Deconstruct(out ChainToken token, out int firstSegment, out int segmentCount, out int readableCount, out ulong readableBytes, out ulong writableBytes, out RingPosition before)
    {
        token = Token;
        firstSegment = FirstSegment;
        segmentCount = SegmentCount;
        readableCount = ReadableCount;
        readableBytes = ReadableBytes;
        writableBytes = WritableBytes;
        before = Before;
    }

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
