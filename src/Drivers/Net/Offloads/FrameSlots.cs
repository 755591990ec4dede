namespace Rings.Linux.Net;

/// <summary>
/// A segment sink over one caller-owned buffer cut into equal slots, with the length of each
/// frame written kept in a caller-owned span: a scratch area for segmentation, or a test's.
/// </summary>
public ref struct FrameSlots : ISegmentSink
{
    private readonly Span<byte> _buffer;
    private readonly Span<int> _lengths;
    private readonly int _slotSize;

    /// <summary>Slots of <paramref name="slotSize"/> bytes over <paramref name="buffer"/>.</summary>
    /// <param name="buffer">The storage; as many whole slots as fit are used.</param>
    /// <param name="slotSize">Bytes per slot (the longest frame a slot takes); positive.</param>
    /// <param name="lengths">Receives each frame's length; its length also bounds the frame count.</param>
    public FrameSlots(Span<byte> buffer, int slotSize, Span<int> lengths)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(slotSize);
        _buffer = buffer;
        _slotSize = slotSize;
        _lengths = lengths;
        Count = 0;
    }

    /// <summary>How many frames have been committed.</summary>
    public int Count { get; private set; }

    /// <summary>How many slots there are in all.</summary>
    public readonly int Capacity => Math.Min(_buffer.Length / _slotSize, _lengths.Length);

    /// <summary>The frame committed in slot <paramref name="index"/>.</summary>
    /// <param name="index">0 to <see cref="Count"/> - 1.</param>
    /// <returns>Its bytes.</returns>
    public readonly Span<byte> this[int index]
    {
        get
        {
            ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual((uint)index, (uint)Count, nameof(index));
            return _buffer.Slice(index * _slotSize, _lengths[index]);
        }
    }

    /// <summary>Forgets the frames written, to reuse the slots.</summary>
    public void Clear() => Count = 0;

    /// <inheritdoc/>
    public readonly bool TryReserve(int segments, int maxSegmentLength) =>
        maxSegmentLength <= _slotSize && segments <= Capacity - Count;

    /// <inheritdoc/>
    public readonly Span<byte> Take(int length) =>
        Count < Capacity ? _buffer.Slice(Count * _slotSize, _slotSize) : default;

    /// <inheritdoc/>
    public void Commit(int length)
    {
        _lengths[Count] = length;
        Count++;
    }
}
