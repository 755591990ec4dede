using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Rings.Chains;
using Rings.Linux.Net;
using Rings.Linux.Ports;

namespace Rings.Linux.Runtime;

/// <summary>
/// Up to <see cref="Capacity"/> frames received from one ingress port, with a decision per frame.
/// One burst per worker per ingress port, allocated once and reused: nothing here allocates per frame.
/// <para>
/// A port's <see cref="Port.Receive"/> appends what it takes from its peer with one of the
/// <c>TryAdd</c> methods (or <see cref="AddDiscarded"/> for something taken that is not a frame).
/// Bytes stay where the port found them (guest memory, the port's own buffers): the burst holds
/// <see cref="FrameSegment"/>s, the frame's <c>virtio_net_hdr</c> and a contiguous copy of its
/// head when the first segment is short. Every take records a completion value of the port's
/// choosing, in order; <see cref="Port.Release"/> hands them back to the peer.
/// </para>
/// <para>
/// A <see cref="FrameProcessor"/> reads frames (<see cref="Length"/>, <see cref="Header"/>,
/// <see cref="Head"/>, <see cref="Segments"/>), may modify them through <see cref="Writable"/>
/// (a private copy unless the bytes are already the port's own), and decides each one:
/// <see cref="Forward"/>, <see cref="Send"/>, <see cref="Flood"/> or <see cref="Drop"/>. A frame
/// left undecided is dropped and counted <see cref="DropReason.Undecided"/>.
/// </para>
/// One thread uses a burst at a time (the worker that owns its ingress port).
/// </summary>
public sealed unsafe class FrameBurst : IDisposable
{
    /// <summary>Largest capacity (frame indices fit a byte).</summary>
    public const int MaxCapacity = 256;

    /// <summary>Most segments one frame may have; a frame with more is dropped <see cref="DropReason.Malformed"/>.</summary>
    public const int MaxSegmentsPerFrame = 64;

    /// <summary>Bytes <see cref="Head"/> guarantees contiguous (or the whole frame when shorter).</summary>
    public const int HeadBytes = 64;

    /// <summary>Shortest frame: an Ethernet header. Shorter ones are dropped <see cref="DropReason.Runt"/>.</summary>
    public const int MinFrameLength = 14;

    /// <summary>Longest frame a burst takes (a 64 KiB GSO frame with Ethernet and VLAN headers); longer ones are dropped <see cref="DropReason.Malformed"/>.</summary>
    public const int MaxFrameLength = 65536 + 64;

    private const int WritableSlotBytes = MaxFrameLength;

    private readonly FrameSegment[] _segments;
    private readonly int[] _firstSegment;
    private readonly byte[] _segmentCount;
    private readonly int[] _length;
    private readonly VirtioNetHeader[] _header;
    private readonly nint[] _head;
    private readonly bool[] _private;
    private readonly ulong[] _destinations;
    private readonly DropReason[] _reason;
    private readonly ulong[] _completions;
    private readonly short[] _frameOfTake;
    private readonly byte* _headScratch;
    private byte* _writableScratch;
    private int _segmentsUsed;
    private int _count;
    private int _taken;
    private long _bytes;
    private bool _disposed;

    /// <summary>Creates a burst.</summary>
    /// <param name="capacity">Most frames (and takes) per burst, 1 to <see cref="MaxCapacity"/>.</param>
    public FrameBurst(int capacity)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(capacity, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(capacity, MaxCapacity);
        Capacity = capacity;
        _segments = new FrameSegment[(capacity * 4) + MaxSegmentsPerFrame];
        _firstSegment = new int[capacity];
        _segmentCount = new byte[capacity];
        _length = new int[capacity];
        _header = new VirtioNetHeader[capacity];
        _head = new nint[capacity];
        _private = new bool[capacity];
        _destinations = new ulong[capacity];
        _reason = new DropReason[capacity];
        _completions = new ulong[capacity];
        _frameOfTake = new short[capacity];
        _headScratch = (byte*)NativeMemory.AlignedAlloc((nuint)(capacity * HeadBytes), 64);
    }

    /// <summary>Releases the burst's native scratch memory.</summary>
    ~FrameBurst() => Free();

    /// <summary>Most frames (and takes) per burst.</summary>
    public int Capacity { get; }

    /// <summary>Frames in the burst (indices 0 to Count - 1).</summary>
    public int Count => _count;

    /// <summary>Takes so far: frames plus discarded takes. Each has a completion in <see cref="Completions"/>.</summary>
    public int Taken => _taken;

    /// <summary>How many more takes fit.</summary>
    public int Room => Capacity - _taken;

    /// <summary>Ethernet bytes of the frames in the burst.</summary>
    public long Bytes => _bytes;

    /// <summary>The port the frames came from (null for a burst filled outside a pipeline).</summary>
    public Port? Ingress { get; private set; }

    /// <summary>The ingress port's index, or -1.</summary>
    public int IngressIndex { get; private set; } = -1;

    /// <summary>Where <see cref="Flood"/> sends: every port whose link is up, except the ingress port.</summary>
    public PortMask FloodMask { get; private set; }

    /// <summary>Milliseconds on a monotonic clock (<see cref="Environment.TickCount64"/>), read once per burst: for aging, rate limits.</summary>
    public long Now { get; private set; }

    /// <summary>The index of the worker that handles this burst (0 with one worker).</summary>
    public int Worker { get; private set; }

    /// <summary>
    /// How many of the last takes <see cref="Port.Release"/> is to give back to the peer untouched
    /// (frames no destination had room for, held back to be received again); set by the worker,
    /// only for a port that <see cref="Port.CanReturn"/>. They are always a suffix of the takes.
    /// </summary>
    public int Returned { get; internal set; }

    /// <summary>The completion values of every take, in the order taken, for the ingress port's <see cref="Port.Release"/>.</summary>
    public ReadOnlySpan<ulong> Completions => _completions.AsSpan(0, _taken);

    /// <summary>
    /// Empties the burst and says where its next frames come from. The worker calls this before
    /// each <see cref="Port.Receive"/>; tests and examples may call it directly.
    /// </summary>
    /// <param name="ingress">The port the frames will come from (null outside a pipeline).</param>
    /// <param name="flood">Where <see cref="Flood"/> sends (the ingress port is removed).</param>
    /// <param name="now">The clock value for <see cref="Now"/>.</param>
    /// <param name="worker">The worker index.</param>
    public void Reset(Port? ingress, PortMask flood, long now, int worker = 0)
    {
        Ingress = ingress;
        IngressIndex = ingress?.Index ?? -1;
        FloodMask = IngressIndex >= 0 ? flood.Without(IngressIndex) : flood;
        Now = now;
        Worker = worker;
        Clear();
    }

    /// <summary>Forgets every frame and take (after <see cref="Port.Release"/>).</summary>
    public void Clear()
    {
        _count = 0;
        _taken = 0;
        _segmentsUsed = 0;
        _bytes = 0;
        Returned = 0;
    }

    // ---- Filling (ports) -------------------------------------------------------------------

    /// <summary>
    /// Takes a virtio transmit chain as it lies in guest memory: a <c>virtio_net_hdr_v1</c>
    /// followed by the frame, across any number of device-readable segments (the header may be
    /// split, 5.1.6.2). The bytes stay in place and are never written (2.7.4). A chain too short
    /// for the header or for an Ethernet header, too long, or in too many pieces is taken and
    /// counted as a drop on the ingress port.
    /// </summary>
    /// <param name="readable">The chain's device-readable segments.</param>
    /// <param name="completion">The port's value to release the chain with (for example a packed <see cref="ChainToken"/>).</param>
    /// <returns>False when the burst has no room (nothing was taken); true when taken.</returns>
    public bool TryAddChain(ReadOnlySpan<ChainSegment> readable, ulong completion)
    {
        if (_taken == Capacity || _segments.Length - _segmentsUsed < MaxSegmentsPerFrame)
        {
            return false;
        }

        if (readable.Length == 1 && readable[0].Length > VirtioNetHeader.Size)
        {
            // The common chain: header and frame in one buffer (every driver Rings knows sends so).
            var whole = readable[0].Span;
            VirtioNetHeader.TryRead(whole, out var h);
            h.Flags &= VirtioNetHeader.FlagNeedsCsum;
            var at = _segmentsUsed;
            var frame = whole[VirtioNetHeader.Size..];
            _segments[at] = new FrameSegment((byte*)Unsafe.AsPointer(ref MemoryMarshal.GetReference(frame)), frame.Length);
            return Commit(h, at, 1, frame.Length, completion, isPrivate: false);
        }

        // Split off the header; it may straddle segments.
        Span<byte> headerBytes = stackalloc byte[VirtioNetHeader.Size];
        var got = 0;
        var index = 0;
        var offset = 0;
        long total = 0;
        while (index < readable.Length && got < VirtioNetHeader.Size)
        {
            var s = readable[index].Span;
            var n = Math.Min(s.Length, VirtioNetHeader.Size - got);
            s[..n].CopyTo(headerBytes[got..]);
            got += n;
            if (n == s.Length)
            {
                index++;
                offset = 0;
            }
            else
            {
                offset = n;
            }
        }

        if (got < VirtioNetHeader.Size)
        {
            AddDiscarded(completion, DropReason.Malformed);
            return true;
        }

        var first = _segmentsUsed;
        var pieces = 0;
        for (var k = index; k < readable.Length; k++)
        {
            var span = readable[k].Span;
            var start = k == index ? offset : 0;
            var length = span.Length - start;
            if (length == 0)
            {
                continue;
            }

            if (pieces == MaxSegmentsPerFrame)
            {
                AddDiscarded(completion, DropReason.Malformed);
                return true;
            }

            _segments[first + pieces++] = new FrameSegment((byte*)Unsafe.AsPointer(ref MemoryMarshal.GetReference(span)) + start, length);
            total += length;
        }

        // A driver sets no flag but NEEDS_CSUM on transmit (5.1.6.2.1): a DATA_VALID from a guest
        // is a claim no device checked, and must not reach a receiver as one.
        VirtioNetHeader.TryRead(headerBytes, out var header);
        header.Flags &= VirtioNetHeader.FlagNeedsCsum;
        return Commit(header, first, pieces, total, completion, isPrivate: false);
    }

    /// <summary>
    /// Takes a frame of one contiguous run of bytes (the header already read by the port).
    /// </summary>
    /// <param name="header">The frame's virtio-net header (offload state passes through).</param>
    /// <param name="frame">The Ethernet bytes.</param>
    /// <param name="completion">The port's value to release the frame with.</param>
    /// <param name="isPrivate">True when the bytes are the port's own and may be modified in place (not a peer's device-readable buffer).</param>
    /// <returns>False when the burst has no room (nothing was taken); true when taken.</returns>
    public bool TryAdd(in VirtioNetHeader header, FrameSegment frame, ulong completion, bool isPrivate)
    {
        if (_taken == Capacity || _segmentsUsed == _segments.Length)
        {
            return false;
        }

        var first = _segmentsUsed;
        _segments[first] = frame;
        return Commit(header, first, frame.Length == 0 ? 0 : 1, frame.Length, completion, isPrivate);
    }

    /// <summary>Takes a frame made of several runs of bytes.</summary>
    /// <param name="header">The frame's virtio-net header.</param>
    /// <param name="frame">The Ethernet bytes, in order.</param>
    /// <param name="completion">The port's value to release the frame with.</param>
    /// <param name="isPrivate">True when the bytes are the port's own and may be modified in place.</param>
    /// <returns>False when the burst has no room (nothing was taken); true when taken.</returns>
    public bool TryAdd(in VirtioNetHeader header, ReadOnlySpan<FrameSegment> frame, ulong completion, bool isPrivate)
    {
        if (_taken == Capacity || _segments.Length - _segmentsUsed < MaxSegmentsPerFrame)
        {
            return false;
        }

        var first = _segmentsUsed;
        var pieces = 0;
        long total = 0;
        foreach (var s in frame)
        {
            if (s.Length == 0)
            {
                continue;
            }

            if (pieces == MaxSegmentsPerFrame)
            {
                AddDiscarded(completion, DropReason.Malformed);
                return true;
            }

            _segments[first + pieces++] = s;
            total += s.Length;
        }

        return Commit(header, first, pieces, total, completion, isPrivate);
    }

    /// <summary>
    /// Records a take that is not a frame (a malformed buffer, say): its completion is released
    /// with the others, and the drop is counted on the ingress port.
    /// </summary>
    /// <param name="completion">The port's value to release it with.</param>
    /// <param name="reason">Why it is not a frame.</param>
    public void AddDiscarded(ulong completion, DropReason reason)
    {
        if (_taken == Capacity)
        {
            throw new InvalidOperationException("the burst is full");
        }

        _frameOfTake[_taken] = -1;
        _completions[_taken++] = completion;
        Ingress?.Counters.For(Worker).Count(reason);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool Commit(in VirtioNetHeader header, int first, int pieces, long length, ulong completion, bool isPrivate)
    {
        if (length < MinFrameLength || length > MaxFrameLength)
        {
            AddDiscarded(completion, length < MinFrameLength ? DropReason.Runt : DropReason.Malformed);
            return true;
        }

        var i = _count++;
        _frameOfTake[_taken] = (short)i;
        _completions[_taken++] = completion;
        _segmentsUsed = first + pieces;
        _firstSegment[i] = first;
        _segmentCount[i] = (byte)pieces;
        _length[i] = (int)length;
        _header[i] = header;
        _private[i] = isPrivate;
        _destinations[i] = 0;
        _reason[i] = DropReason.Undecided;
        _bytes += length;

        // The head contiguous: in place when the first segment holds it, else copied.
        var headLength = Math.Min((int)length, HeadBytes);
        var s = _segments[first];
        if (s.Length >= headLength)
        {
            _head[i] = (nint)s.Start;
        }
        else
        {
            var scratch = _headScratch + (i * HeadBytes);
            CopyOut(first, pieces, new Span<byte>(scratch, headLength));
            _head[i] = (nint)scratch;
        }

        return true;
    }

    /// <summary>The frame a take made, or -1 for a discarded take.</summary>
    internal int FrameOfTake(int take) => _frameOfTake[take];

    // ---- Reading and modifying (processors, transmitting ports) ----------------------------

    /// <summary>The frame's length in Ethernet bytes (no virtio-net header).</summary>
    /// <param name="frame">Frame index.</param>
    /// <returns>The length.</returns>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int Length(int frame) => _length[Check(frame)];

    /// <summary>The frame's virtio-net header as the source gave it; a processor may change its offload fields.</summary>
    /// <param name="frame">Frame index.</param>
    /// <returns>A reference to the header.</returns>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ref VirtioNetHeader Header(int frame) => ref _header[Check(frame)];

    /// <summary>The first min(<see cref="Length"/>, <see cref="HeadBytes"/>) bytes, contiguous, read-only.</summary>
    /// <param name="frame">Frame index.</param>
    /// <returns>The head.</returns>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ReadOnlySpan<byte> Head(int frame) => new((void*)_head[Check(frame)], Math.Min(_length[frame], HeadBytes));

    /// <summary>The frame's bytes as runs, in order.</summary>
    /// <param name="frame">Frame index.</param>
    /// <returns>The segments (valid until the burst is cleared).</returns>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ReadOnlySpan<FrameSegment> Segments(int frame) => _segments.AsSpan(_firstSegment[Check(frame)], _segmentCount[frame]);

    /// <summary>True when the frame's bytes may be written where they are (the port's own memory or a copy).</summary>
    /// <param name="frame">Frame index.</param>
    /// <returns>True when private.</returns>
    public bool IsPrivate(int frame) => _private[Check(frame)];

    /// <summary>
    /// The whole frame, contiguous and writable. A frame in a peer's device-readable buffers is
    /// first copied into the burst's own memory (copy on write: the device never writes such a
    /// buffer, 2.7.4 and 2.8); a private one-segment frame is returned in place. Every later read
    /// and transmit of the frame sees the change.
    /// </summary>
    /// <param name="frame">Frame index.</param>
    /// <returns>The frame's bytes.</returns>
    public Span<byte> Writable(int frame)
    {
        Check(frame);
        var first = _firstSegment[frame];
        var length = _length[frame];
        if (_private[frame] && _segmentCount[frame] == 1)
        {
            return _segments[first].Span;
        }

        if (_writableScratch is null)
        {
            // Once per burst lifetime, and only for processors that write.
            _writableScratch = (byte*)NativeMemory.AlignedAlloc((nuint)((long)Capacity * WritableSlotBytes), 64);
        }

        var copy = _writableScratch + ((long)frame * WritableSlotBytes);
        CopyOut(first, _segmentCount[frame], new Span<byte>(copy, length));

        // The frame becomes one private segment in place of its first (a frame has at least one).
        _segments[first] = new FrameSegment(copy, length);
        _segmentCount[frame] = 1;
        _private[frame] = true;
        _head[frame] = (nint)copy;
        return new Span<byte>(copy, length);
    }

    /// <summary>Copies the frame's bytes into <paramref name="destination"/>.</summary>
    /// <param name="frame">Frame index.</param>
    /// <param name="destination">Where to copy; stops when full.</param>
    /// <returns>Bytes copied.</returns>
    public int CopyTo(int frame, Span<byte> destination)
    {
        Check(frame);
        return CopyOut(_firstSegment[frame], _segmentCount[frame], destination);
    }

    // ---- Decisions --------------------------------------------------------------------------

    /// <summary>Sends the frame to one port (the ingress port too, to reflect it).</summary>
    /// <param name="frame">Frame index.</param>
    /// <param name="port">Destination port index, 0 to 63.</param>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Forward(int frame, int port)
    {
        _destinations[Check(frame)] = 1UL << port;
        _reason[frame] = DropReason.None;
    }

    /// <summary>Sends the frame to every port in <paramref name="ports"/> (a copy each); an empty set drops it as <see cref="DropReason.NoRoute"/>.</summary>
    /// <param name="frame">Frame index.</param>
    /// <param name="ports">The destinations (the ingress port only if it is in the set).</param>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Send(int frame, PortMask ports)
    {
        _destinations[Check(frame)] = ports.Bits;
        _reason[frame] = ports.IsEmpty ? DropReason.NoRoute : DropReason.None;
    }

    /// <summary>
    /// Sends the frame to every port whose link is up except the ingress port (<see cref="FloodMask"/>).
    /// With no such port the frame is undeliverable as <see cref="DropReason.LinkDown"/> (counted on
    /// the ingress port, or held there while the pipeline's hold time allows).
    /// </summary>
    /// <param name="frame">Frame index.</param>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Flood(int frame)
    {
        var flood = FloodMask.Bits;
        _destinations[Check(frame)] = flood;
        _reason[frame] = flood == 0 ? DropReason.LinkDown : DropReason.None;
    }

    /// <summary>Drops the frame, counted on the ingress port under <paramref name="reason"/>.</summary>
    /// <param name="frame">Frame index.</param>
    /// <param name="reason">Why (not <see cref="DropReason.None"/>).</param>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Drop(int frame, DropReason reason)
    {
        _destinations[Check(frame)] = 0;
        _reason[frame] = reason == DropReason.None ? DropReason.Filtered : reason;
    }

    /// <summary>Where the frame goes (empty when dropped or undecided).</summary>
    /// <param name="frame">Frame index.</param>
    /// <returns>The destinations.</returns>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public PortMask Destinations(int frame) => new(_destinations[Check(frame)]);

    /// <summary>Why the frame is dropped: <see cref="DropReason.None"/> when it has destinations, <see cref="DropReason.Undecided"/> before a decision.</summary>
    /// <param name="frame">Frame index.</param>
    /// <returns>The reason.</returns>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public DropReason DropReasonOf(int frame) => _reason[Check(frame)];

    /// <summary>Frees the native scratch memory.</summary>
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
        NativeMemory.AlignedFree(_headScratch);
        if (_writableScratch is not null)
        {
            NativeMemory.AlignedFree(_writableScratch);
            _writableScratch = null;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private int Check(int frame)
    {
        if ((uint)frame >= (uint)_count)
        {
            ThrowFrame(frame);
        }

        return frame;
    }

    private int CopyOut(int first, int pieces, Span<byte> destination)
    {
        var copied = 0;
        for (var k = 0; k < pieces && copied < destination.Length; k++)
        {
            var s = _segments[first + k].Span;
            var n = Math.Min(s.Length, destination.Length - copied);
            s[..n].CopyTo(destination[copied..]);
            copied += n;
        }

        return copied;
    }

    private static void ThrowFrame(int frame) => throw new ArgumentOutOfRangeException(nameof(frame), frame, "no such frame in the burst");
}
