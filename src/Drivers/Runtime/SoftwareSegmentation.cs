using System.Runtime.InteropServices;
using Rings.Linux.Net;

namespace Rings.Linux.Runtime;

/// <summary>
/// A worker's scratch for cutting GSO frames (5.1.6.2: gso_type, gso_size) for a destination that
/// did not negotiate their segmentation offload: <see cref="GsoSegmenter"/> writes the segments
/// into one native buffer, each a complete frame of the <see cref="Segments"/> burst, which the
/// destination then transmits like any other. Allocated once per worker and reused for every
/// frame, so segmenting allocates nothing.
/// </summary>
internal sealed unsafe class SoftwareSegmentation : IDisposable
{
    /// <summary>
    /// Bytes for the segments of one frame: a 64 KiB frame cut at an MSS of 256 (headers repeated
    /// 256 times) still fits; a frame that needs more is refused as a whole.
    /// </summary>
    public const int ScratchBytes = 256 << 10;

    private const int Alignment = 64;

    private readonly byte* _scratch;
    private readonly byte* _gather;
    private readonly byte[] _order = new byte[FrameBurst.MaxCapacity];
    private bool _disposed;

    public SoftwareSegmentation()
    {
        Segments = new FrameBurst(FrameBurst.MaxCapacity);
        _scratch = (byte*)NativeMemory.AlignedAlloc(ScratchBytes, Alignment);
        _gather = (byte*)NativeMemory.AlignedAlloc(FrameBurst.MaxFrameLength, Alignment);
        for (var i = 0; i < _order.Length; i++)
        {
            _order[i] = (byte)i;
        }
    }

    ~SoftwareSegmentation() => Free();

    /// <summary>The segments of the last frame cut (complete frames: no offload asked in their headers).</summary>
    public FrameBurst Segments { get; }

    /// <summary>The indices 0 to <paramref name="count"/> - 1 of <see cref="Segments"/>, for <c>Port.Transmit</c>.</summary>
    public ReadOnlySpan<byte> Order(int count) => _order.AsSpan(0, count);

    /// <summary>
    /// Cuts frame <paramref name="frame"/> of <paramref name="burst"/> into <see cref="Segments"/>
    /// (emptied first). The source is only read: a peer's device-readable buffer is never written (2.7.4).
    /// </summary>
    /// <returns>Ok, or why the frame cannot be cut (then <see cref="Segments"/> is empty).</returns>
    public OffloadStatus Cut(FrameBurst burst, int frame)
    {
        // The segments go out on the worker of the frame they came from (Port.Transmit reads FrameBurst.Worker).
        Segments.Reset(null, default, burst.Now, burst.Worker);
        ReadOnlySpan<byte> bytes;
        var pieces = burst.Segments(frame);
        if (pieces.Length == 1)
        {
            bytes = pieces[0].Span;
        }
        else
        {
            // The segmenter reads the frame whole; a frame in pieces is gathered once.
            var gather = new Span<byte>(_gather, FrameBurst.MaxFrameLength);
            bytes = gather[..burst.CopyTo(frame, gather)];
        }

        var sink = new Sink(_scratch, Segments);
        var status = GsoSegmenter.Segment(bytes, burst.Header(frame), ref sink);
        if (status != OffloadStatus.Ok)
        {
            Segments.Clear();
        }

        return status;
    }

    public void Dispose()
    {
        Free();
        GC.SuppressFinalize(this);
    }

    private void Free()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        Segments.Dispose();
        NativeMemory.AlignedFree(_scratch);
        NativeMemory.AlignedFree(_gather);
    }

    // Segments laid one after the other in the scratch, each starting on a cache line, each added
    // to the burst as a private frame with an empty virtio-net header (a complete frame).
    private struct Sink(byte* scratch, FrameBurst segments) : ISegmentSink
    {
        private int _used;

        private static int Slot(int length) => (length + Alignment - 1) & ~(Alignment - 1);

        public readonly bool TryReserve(int count, int maxSegmentLength) =>
            count <= segments.Room && (long)count * Slot(maxSegmentLength) <= ScratchBytes;

        public readonly Span<byte> Take(int length) =>
            _used + length <= ScratchBytes ? new Span<byte>(scratch + _used, length) : default;

        public void Commit(int length)
        {
            segments.TryAdd(default, new FrameSegment(scratch + _used, length), 0, isPrivate: true);
            _used += Slot(length);
        }
    }
}
