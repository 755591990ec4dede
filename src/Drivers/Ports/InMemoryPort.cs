using System.Runtime.InteropServices;
using Rings.Linux.Net;
using Rings.Linux.Plumbing;
using Rings.Linux.Runtime;

namespace Rings.Linux.Ports;

/// <summary>
/// A port whose peer is code in this process: frames are injected with <see cref="TryInject"/>
/// and what the pipeline transmits is taken with <see cref="TryTake"/>, each through a
/// single-producer single-consumer ring of fixed slots in native memory. For tests, examples
/// and benchmarks; also the smallest complete example of a port kind.
/// <para>
/// <see cref="TransmitBudget"/> limits how many frames the port accepts (to play a full
/// destination); <see cref="Loop"/> makes <see cref="Receive"/> yield the injected frames again
/// and again without consuming them, and <see cref="Discard"/> makes <see cref="Transmit"/>
/// count and drop what it copies (a traffic source and sink for benchmarks).
/// </para>
/// </summary>
public sealed unsafe class InMemoryPort : Port
{
    private readonly byte* _memory;
    private readonly int _slots;
    private readonly int _slotBytes;
    private readonly int[] _lengths;
    private readonly VirtioNetHeader[] _headers;
    private readonly EventFd _wakeup;

    // Inbound (peer -> pipeline): the injecting thread owns _inHead, the worker _inTail.
    private long _inHead;
    private long _inTail;
    private int _inTaken;

    // Outbound (pipeline -> peer): the worker owns _outHead and _outPending, the taking thread _outTail.
    private long _outHead;
    private long _outPending;
    private long _outTail;
    private int _wantWakeup;
    private bool _disposed;

    /// <summary>Creates a port with <paramref name="slots"/> frames of room each way.</summary>
    /// <param name="name">Its name.</param>
    /// <param name="slots">Frames each ring holds (a power of two is not needed).</param>
    /// <param name="slotBytes">Largest frame, in bytes.</param>
    public InMemoryPort(string name, int slots = 256, int slotBytes = 2048)
        : base("memory", name)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(slots, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(slotBytes, FrameBurst.MinFrameLength);
        _slots = slots;
        _slotBytes = slotBytes;
        _memory = (byte*)NativeMemory.AlignedAlloc((nuint)((long)slots * slotBytes * 2), 64);
        _lengths = new int[slots * 2];
        _headers = new VirtioNetHeader[slots * 2];
        _wakeup = EventFd.Create();
        Mtu = Math.Clamp(slotBytes - LinkHeaderBytes, 68, FrameBurst.MaxFrameLength - LinkHeaderBytes);
    }

    /// <summary>Most frames <see cref="Transmit"/> still accepts (decremented as it does); negative for no limit.</summary>
    public int TransmitBudget { get; set; } = -1;

    /// <summary>What the port takes on transmit beyond complete frames, as a peer would have negotiated it (none by default).</summary>
    public PortOffloads AcceptedOffloads
    {
        get => Offloads;
        set => Offloads = value;
    }

    /// <summary>When true, <see cref="Receive"/> yields the injected frames over and over without consuming them.</summary>
    public bool Loop { get; set; }

    /// <summary>When true, <see cref="Transmit"/> copies each frame into one scratch slot and forgets it.</summary>
    public bool Discard { get; set; }

    /// <summary>Frames injected and not yet received (approximate from other threads).</summary>
    public int Pending => (int)(Volatile.Read(ref _inHead) - Volatile.Read(ref _inTail));

    /// <summary>Frames transmitted and not yet taken.</summary>
    public int Available => (int)(Volatile.Read(ref _outHead) - Volatile.Read(ref _outTail));

    /// <inheritdoc/>
    public override bool CanReturn => true;

    /// <summary>Brings the link up or down, as a peer arriving or leaving would.</summary>
    /// <param name="state">The new state.</param>
    /// <param name="reason">Why.</param>
    public void SetLinkState(LinkState state, string reason = "set by the test") => SetLink(state, reason);

    /// <inheritdoc/>
    public override void Open() => SetLink(LinkState.Up, "opened");

    /// <summary>Injects a frame as if the peer sent it (one thread at a time).</summary>
    /// <param name="frame">The Ethernet bytes.</param>
    /// <param name="header">Its virtio-net header.</param>
    /// <returns>False when the inbound ring is full or the frame too long.</returns>
    public bool TryInject(ReadOnlySpan<byte> frame, VirtioNetHeader header = default)
    {
        var head = _inHead;
        if (frame.Length > _slotBytes || head - Volatile.Read(ref _inTail) >= _slots)
        {
            return false;
        }

        var slot = (int)(head % _slots);
        frame.CopyTo(new Span<byte>(_memory + ((long)slot * _slotBytes), _slotBytes));
        _lengths[slot] = frame.Length;
        _headers[slot] = header;

        // Release: the slot is written before the worker can see it.
        Volatile.Write(ref _inHead, head + 1);

        // Store-load: the published head before the worker's wish for a wake-up is read.
        Interlocked.MemoryBarrier();
        if (Volatile.Read(ref _wantWakeup) != 0)
        {
            _wakeup.Signal();
        }

        return true;
    }

    /// <summary>Takes the oldest frame the pipeline transmitted (one thread at a time).</summary>
    /// <param name="destination">Where to copy it (at least the slot size to be sure).</param>
    /// <param name="length">Its length.</param>
    /// <param name="header">Its virtio-net header.</param>
    /// <returns>False when none is waiting.</returns>
    public bool TryTake(Span<byte> destination, out int length, out VirtioNetHeader header)
    {
        var tail = _outTail;
        if (tail == Volatile.Read(ref _outHead))
        {
            length = 0;
            header = default;
            return false;
        }

        var slot = _slots + (int)(tail % _slots);
        length = _lengths[slot];
        header = _headers[slot];
        new ReadOnlySpan<byte>(_memory + ((long)slot * _slotBytes), length).CopyTo(destination);

        // Release: the slot is read before the worker may reuse it.
        Volatile.Write(ref _outTail, tail + 1);
        return true;
    }

    /// <inheritdoc/>
    public override int Receive(FrameBurst burst)
    {
        // Acquire: the slots up to head are written.
        var available = (int)(Volatile.Read(ref _inHead) - _inTail);
        var n = Math.Min(available, burst.Room);
        for (var k = 0; k < n; k++)
        {
            var slot = (int)((_inTail + k) % _slots);
            burst.TryAdd(_headers[slot], new FrameSegment(_memory + ((long)slot * _slotBytes), _lengths[slot]), (ulong)slot, isPrivate: true);
        }

        _inTaken = n;
        return n;
    }

    /// <inheritdoc/>
    public override void Release(FrameBurst burst)
    {
        if (!Loop)
        {
            // Release: the worker is done with the slots before the injector may reuse them.
            Volatile.Write(ref _inTail, _inTail + _inTaken - burst.Returned);
        }

        _inTaken = 0;
    }

    /// <inheritdoc/>
    public override int Transmit(FrameBurst burst, ReadOnlySpan<byte> frames)
    {
        if (Link == LinkState.Down)
        {
            Counters.Count(DropReason.LinkDown, frames.Length);
            return frames.Length;
        }

        var room = Discard ? int.MaxValue : _slots - (int)(_outPending - Volatile.Read(ref _outTail));
        if (TransmitBudget >= 0)
        {
            room = Math.Min(room, TransmitBudget);
        }

        var sent = 0;
        long bytes = 0;
        var k = 0;
        for (; k < frames.Length && sent < room; k++)
        {
            int frame = frames[k];
            var length = burst.Length(frame);
            if (length > MaxFrameLength || length > _slotBytes)
            {
                Counters.Count(DropReason.OverMtu);
                continue;
            }

            var slot = Discard ? _slots : _slots + (int)(_outPending % _slots);
            burst.CopyTo(frame, new Span<byte>(_memory + ((long)slot * _slotBytes), _slotBytes));
            if (!Discard)
            {
                _lengths[slot] = length;
                _headers[slot] = burst.Header(frame);
                _outPending++;
            }

            sent++;
            bytes += length;
        }

        if (TransmitBudget >= 0)
        {
            TransmitBudget -= sent;
        }

        Counters.Transmitted(sent, bytes);
        return k;
    }

    /// <inheritdoc/>
    public override bool MayHaveRoom =>
        Link == LinkState.Down || Discard || (TransmitBudget != 0 && _outPending - Volatile.Read(ref _outTail) < _slots);

    /// <inheritdoc/>
    public override void Flush()
    {
        // Release: the slots are written before the taker can see them.
        Volatile.Write(ref _outHead, _outPending);
    }

    /// <inheritdoc/>
    public override bool EnableWakeups()
    {
        Volatile.Write(ref _wantWakeup, 1);

        // Store-load: the wish is visible before the ring is checked again (the injector does the mirror image).
        Interlocked.MemoryBarrier();
        return Volatile.Read(ref _inHead) != _inTail;
    }

    /// <inheritdoc/>
    public override void DisableWakeups()
    {
        Volatile.Write(ref _wantWakeup, 0);
        _wakeup.TryConsume(out _);
    }

    /// <inheritdoc/>
    public override int GetWakeupDescriptors(Span<FileDescriptor> descriptors)
    {
        if (descriptors.Length == 0)
        {
            return 0;
        }

        descriptors[0] = _wakeup.Handle;
        return 1;
    }

    /// <inheritdoc/>
    protected override void Dispose(bool disposing)
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        SetLink(LinkState.Down, "closed");
        NativeMemory.AlignedFree(_memory);
        if (disposing)
        {
            _wakeup.Dispose();
        }
    }
}
