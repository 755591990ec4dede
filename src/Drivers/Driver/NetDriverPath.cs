using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using Rings.Chains;
using Rings.Linux.Device;
using Rings.Linux.Net;

namespace Rings.Linux.Driver;

/// <summary>
/// The guest side of one virtio-net queue pair: transmit buffers and receive buffers in slabs of
/// shared memory, the 12-byte header on every frame, receive buffers kept posted, transmit buffers
/// reclaimed in bursts. Copy-in/copy-out over spans, or zero copy with leases. No allocation per
/// frame. Owned by one thread. Never trusts the device: bad used lengths or <c>num_buffers</c>
/// count as errors and the buffers go back to the ring.
/// </summary>
/// <typeparam name="TTx">Driver side of the transmit queue.</typeparam>
/// <typeparam name="TRx">Driver side of the receive queue.</typeparam>
public sealed class NetDriverPath<TTx, TRx> : INetDriverPath
    where TTx : IDriverRing
    where TRx : IDriverRing
{
    private readonly TTx _tx;
    private readonly TRx _rx;

    // The rings themselves, for callers that see the path as INetDriverPath: a ring struct would
    // be boxed anew at every read, and would not be the ring the caller set up.
    private readonly IDriverRing _txRing;
    private readonly IDriverRing _rxRing;
    private readonly BufferSlab _txSlab;
    private readonly BufferSlab _rxSlab;
    private readonly int[] _txSlotOfId;
    private readonly int[] _rxSlotOfId;
    private readonly bool _mergeable;

    // SubmitHead's line: the plain header (zero) and the frame's head, zero after it, handed to
    // SubmitLine whole.
    private readonly byte[] _headLine = new byte[BufferSlab.LineSize];

    // Whether a streamed line (non-temporal stores) awaits the store fence owed before the next
    // publication of the transmit ring.
    private bool _fenceOwed;

    // Burst scratch for RefillReceive and ReclaimTransmit: one ring call per burst, no allocation.
    private const int Burst = 64;
    private readonly BufferSegment[] _refillSegments = new BufferSegment[Burst];
    private readonly int[] _refillSlots = new int[Burst];
    private readonly ushort[] _refillIds = new ushort[Burst];
    private readonly UsedElement[] _reclaimed = new UsedElement[Burst];

    // Used receive buffers taken from the ring in one burst and not yet gathered into frames.
    private readonly UsedElement[] _received = new UsedElement[Burst];
    private readonly int[] _receivedSlots = new int[Burst];
    private int _receivedNext;
    private int _receivedCount;

    // Submitted frames not yet added to the transmit ring: they go in with one TryAddBurst at the
    // next flush (or when a burst's worth is waiting), so the descriptors and avail entries of a
    // burst are written together. Nothing the device can see changes: a frame was never visible
    // before FlushTransmit's publish.
    private readonly BufferSegment[] _stagedSegments = new BufferSegment[Burst];
    private readonly int[] _stagedSlots = new int[Burst];
    private readonly ushort[] _stagedIds = new ushort[Burst];
    private int _staged;

    // A merged frame whose buffers have not all been taken yet (5.1.6.4).
    private readonly int[] _mergeSlots;
    private readonly int[] _mergeLengths;
    private int _mergeTaken;
    private int _mergeExpected;

    /// <summary>Creates the queue pair's data path over rings and slabs already set up.</summary>
    /// <param name="tx">Driver side of the transmit queue.</param>
    /// <param name="rx">Driver side of the receive queue.</param>
    /// <param name="txSlab">Transmit buffers: each holds the header and the largest frame to send.</param>
    /// <param name="rxSlab">Receive buffers: each at least 12 + 1514 bytes, or the largest frame without MRG_RXBUF.</param>
    /// <param name="mergeable">True when VIRTIO_NET_F_MRG_RXBUF was negotiated.</param>
    public NetDriverPath(TTx tx, TRx rx, BufferSlab txSlab, BufferSlab rxSlab, bool mergeable)
    {
        ArgumentNullException.ThrowIfNull(tx);
        ArgumentNullException.ThrowIfNull(rx);
        ArgumentNullException.ThrowIfNull(txSlab);
        ArgumentNullException.ThrowIfNull(rxSlab);
        ArgumentOutOfRangeException.ThrowIfLessThan(txSlab.BufferSize, VirtioNetHeader.Size + 1, nameof(txSlab));
        ArgumentOutOfRangeException.ThrowIfLessThan(rxSlab.BufferSize, VirtioNetHeader.Size + 1, nameof(rxSlab));
        _tx = tx;
        _rx = rx;
        _txRing = RingOf(tx);
        _rxRing = RingOf(rx);
        _txSlab = txSlab;
        _rxSlab = rxSlab;
        _mergeable = mergeable;
        _txSlotOfId = new int[tx.Size];
        _rxSlotOfId = new int[rx.Size];
        _mergeSlots = new int[NetForwarder.MaxMergedBuffers];
        _mergeLengths = new int[NetForwarder.MaxMergedBuffers];
    }

    private static IDriverRing RingOf<TRing>(TRing ring)
        where TRing : IDriverRing => ring switch
    {
        Rings.Split.SplitDriver split => split.Ring,
        Rings.Packed.PackedDriver packed => packed.Ring,
        _ => ring,
    };

    /// <summary>The transmit ring.</summary>
    public TTx Transmit => _tx;

    /// <summary>The receive ring.</summary>
    public TRx Receive => _rx;

    /// <inheritdoc/>
    IDriverRing INetDriverPath.Transmit => _txRing;

    /// <inheritdoc/>
    IDriverRing INetDriverPath.Receive => _rxRing;

    /// <inheritdoc/>
    public TResult Accept<TResult>(INetDriverPathVisitor<TResult> visitor)
    {
        ArgumentNullException.ThrowIfNull(visitor);
        return visitor.Visit(this);
    }

    /// <summary>Bytes per receive buffer, the 12-byte header included.</summary>
    public int ReceiveBufferSize => _rxSlab.BufferSize;

    /// <summary>True when VIRTIO_NET_F_MRG_RXBUF was negotiated: a received frame may span several buffers.</summary>
    public bool Mergeable => _mergeable;

    /// <summary>Largest frame <see cref="TrySend"/> accepts.</summary>
    public int MaxFrameSize => _txSlab.BufferSize - VirtioNetHeader.Size;

    /// <summary>Frames received with a bad header, length or <c>num_buffers</c>, and discarded.</summary>
    public long ReceiveErrors { get; private set; }

    /// <summary>Frames received that did not fit the destination given to <see cref="TryReceive"/> (copied truncated).</summary>
    public long Truncated { get; private set; }

    /// <summary>
    /// True when used receive buffers were taken from the ring (a burst at a time) and not yet
    /// handed out as frames: the ring then looks empty while frames wait here, so a caller about
    /// to sleep on the ring's notification asks this first.
    /// </summary>
    public bool HasPendingReceive => _receivedNext < _receivedCount;

    /// <summary>Posts free receive buffers and publishes them.</summary>
    /// <returns>True when the device asked to be kicked for the new buffers.</returns>
    public bool RefillReceive()
    {
        var segments = _refillSegments;
        var slots = _refillSlots;
        var ids = _refillIds;
        while (_rx.FreeDescriptors > 0)
        {
            // Up to a burst of free slots, then one ring call for all of them.
            var want = Math.Min(_rx.FreeDescriptors, Burst);
            var n = _rxSlab.TakeBurst(slots.AsSpan(0, want));
            var bufferSize = (uint)_rxSlab.BufferSize;
            for (var i = 0; i < n; i++)
            {
                segments[i] = new BufferSegment(_rxSlab.AddressOf(slots[i]), bufferSize);
            }

            if (n == 0)
            {
                break;
            }

            var added = _rx.TryAddBurst(segments.AsSpan(0, n), deviceWritable: true, ids);
            for (var i = 0; i < added; i++)
            {
                _rxSlotOfId[ids[i]] = slots[i];
            }

            if (added < n)
            {
                // The ring refused the rest (broken): the slots go back to the slab.
                for (var i = added; i < n; i++)
                {
                    _rxSlab.Return(slots[i]);
                }

                break;
            }
        }

        _rx.Publish();
        return _rx.KickNeeded();
    }

    /// <summary>Takes back transmit buffers the device has finished with.</summary>
    /// <returns>Buffers reclaimed.</returns>
    public int ReclaimTransmit()
    {
        // A burst per ring call (one look at the device's index each); until one comes back short.
        var n = 0;
        int taken;
        do
        {
            taken = _tx.TakeUsed(_reclaimed);
            for (var i = 0; i < taken; i++)
            {
                _txSlab.Return(_txSlotOfId[_reclaimed[i].Id]);
            }

            n += taken;
        }
        while (taken == Burst);

        return n;
    }

    /// <summary>Copies <paramref name="frame"/> into a transmit buffer behind a header. Visible at <see cref="FlushTransmit"/>.</summary>
    /// <param name="frame">The Ethernet frame.</param>
    /// <returns>False when no transmit buffer or descriptor is free.</returns>
    /// <exception cref="ArgumentException">The frame is larger than <see cref="MaxFrameSize"/>.</exception>
    public bool TrySend(ReadOnlySpan<byte> frame)
    {
        if (frame.Length > MaxFrameSize)
        {
            throw new ArgumentException($"a {frame.Length}-byte frame does not fit a {MaxFrameSize}-byte transmit buffer", nameof(frame));
        }

        if (!TryLeaseTransmit(out var lease))
        {
            return false;
        }

        frame.CopyTo(lease.Frame);
        return Submit(lease, frame.Length);
    }

    /// <summary>
    /// Writes the virtio-net header of the next <paramref name="count"/> transmit buffers a lease
    /// would hand out, before any frame is built in them: their lines were last read by the
    /// device's core, and one store to each, back to back, asks for all of them at once instead
    /// of waiting for each as its frame is built. The header written is the plain one
    /// <see cref="Submit(in TransmitLease, int)"/> writes.
    /// </summary>
    /// <param name="count">Frames about to be built.</param>
    public void PrepareTransmit(int count)
    {
        count = Math.Min(count, Burst);
        for (var i = 0; i < count; i++)
        {
            var slot = _txSlab.PeekFree(i);
            if (slot < 0)
            {
                break;
            }

            // The first 8 bytes of the plain header (flags, gso_type, hdr_len, gso_size): zero.
            MemoryMarshal.Write(_txSlab.Span(slot), 0UL);
        }
    }

    /// <summary>Leases a transmit buffer in shared memory to build a frame in place (zero copy).</summary>
    /// <param name="lease">The lease; write the frame into <see cref="TransmitLease.Frame"/> then call <see cref="Submit(in TransmitLease, int)"/>.</param>
    /// <returns>False when no transmit buffer is free (after reclaiming).</returns>
    public bool TryLeaseTransmit(out TransmitLease lease)
    {
        if (FreeTransmitDescriptors <= 0 || !_txSlab.TryTake(out var slot))
        {
            ReclaimTransmit();
            if (FreeTransmitDescriptors <= 0 || !_txSlab.TryTake(out slot))
            {
                lease = default;
                return false;
            }
        }

        lease = new TransmitLease(slot, _txSlab.Span(slot)[VirtioNetHeader.Size..]);
        return true;
    }

    /// <summary>Submits a leased buffer holding a frame of <paramref name="length"/> bytes.</summary>
    /// <param name="lease">A lease from <see cref="TryLeaseTransmit"/>.</param>
    /// <param name="length">Frame length in bytes.</param>
    /// <returns>False when the ring refused it (broken); the buffer is then returned.</returns>
    public bool Submit(in TransmitLease lease, int length) => Submit(lease, length, default);

    /// <summary>
    /// Submits a leased buffer holding a frame of <paramref name="length"/> bytes behind
    /// <paramref name="header"/>: a partial checksum or a GSO frame (5.1.6.2), for a device that
    /// negotiated CSUM or HOST_TSO*/HOST_USO.
    /// </summary>
    /// <param name="lease">A lease from <see cref="TryLeaseTransmit"/>.</param>
    /// <param name="length">Frame length in bytes.</param>
    /// <param name="header">The virtio-net header to send it with (num_buffers is written as 0).</param>
    /// <returns>
    /// False when the ring refused it (broken, or no descriptor left for it); the buffer is then
    /// returned. An accepted frame joins the ring at the next <see cref="FlushTransmit"/> (or once
    /// a burst's worth waits); if the ring breaks before then (the device broke a rule), it is
    /// not sent, and the ring's broken state says so.
    /// </returns>
    public bool Submit(in TransmitLease lease, int length, VirtioNetHeader header)
    {
        if (!TryAccept(lease.Slot, length))
        {
            return false;
        }

        header.NumBuffers = 0;
        header.TryWrite(_txSlab.Span(lease.Slot));
        Stage(lease.Slot, length);
        return true;
    }

    // Submit's and SubmitLine's checks: a length that fits the buffer, and a ring that would take
    // the frame (not broken, a descriptor free for it); a refused frame's buffer goes back.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool TryAccept(int slot, int length)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(length, MaxFrameSize);
        if (_tx.IsBroken || FreeTransmitDescriptors <= 0)
        {
            // The ring would refuse it: broken, or every descriptor taken by frames already submitted.
            _txSlab.Return(slot);
            return false;
        }

        return true;
    }

    // Stages a written frame for the next AddStaged (at once when a burst's worth waits).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void Stage(int slot, int length)
    {
        _stagedSegments[_staged] = new BufferSegment(_txSlab.AddressOf(slot), (uint)(VirtioNetHeader.Size + length));
        _stagedSlots[_staged] = slot;
        if (++_staged == Burst)
        {
            AddStaged();
        }
    }

    /// <summary>Bytes of a frame's head <see cref="SubmitHead"/> writes: a cache line less the virtio-net header.</summary>
    public const int StreamedHeadSize = BufferSlab.LineSize - VirtioNetHeader.Size;

    /// <summary>
    /// Submits a leased buffer holding a frame of <paramref name="length"/> bytes of which only
    /// the head is written now: the plain virtio-net header and <paramref name="head"/> (zero
    /// after it, up to <see cref="StreamedHeadSize"/> bytes of frame) go into the buffer's first
    /// cache line at once with non-temporal stores, so the line is not first taken back from the
    /// device's core, which read it a lap ago (an ordinary store waits for that, and holds up every
    /// store behind it). The rest of the frame is what the buffer already holds. For a traffic
    /// source that rewrites only each frame's head; where the CPU has no such stores, the line is
    /// written as usual.
    /// </summary>
    /// <param name="lease">A lease from <see cref="TryLeaseTransmit"/>; write nothing into its frame before this call.</param>
    /// <param name="length">Frame length in bytes.</param>
    /// <param name="head">The frame's first bytes, at most <see cref="StreamedHeadSize"/> (and at most <see cref="MaxFrameSize"/>).</param>
    /// <returns>False when the ring refused it (broken, or no descriptor left for it); the buffer is then returned.</returns>
    public bool SubmitHead(in TransmitLease lease, int length, ReadOnlySpan<byte> head)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThan(head.Length, Math.Min(StreamedHeadSize, MaxFrameSize), nameof(head));
        var line = _headLine.AsSpan();
        head.CopyTo(line[VirtioNetHeader.Size..]);
        line[(VirtioNetHeader.Size + head.Length)..].Clear();
        return SubmitLine(lease, length, Vector256.Create((ReadOnlySpan<byte>)line), Vector256.Create((ReadOnlySpan<byte>)line[32..]));
    }

    /// <summary>
    /// As <see cref="SubmitHead"/>, the buffer's first cache line given whole in two halves held in
    /// registers: <paramref name="low"/>'s first 12 bytes are the header's place (this call puts
    /// the plain header there), frame byte N is line byte 12 + N. For a caller that builds its
    /// heads from values: a head written to memory and read back as a vector waits for its stores
    /// to leave the store buffer.
    /// </summary>
    /// <param name="lease">A lease from <see cref="TryLeaseTransmit"/>; write nothing into its frame before this call.</param>
    /// <param name="length">Frame length in bytes.</param>
    /// <param name="low">Line bytes 0 to 31: the header's place, then frame bytes 0 to 19.</param>
    /// <param name="high">Line bytes 32 to 63: frame bytes 20 to 51.</param>
    /// <returns>False when the ring refused it (broken, or no descriptor left for it); the buffer is then returned.</returns>
    /// <remarks>Inlined (its fallback apart), so the line's halves stay in registers from the caller's loop to the stores.</remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool SubmitLine(in TransmitLease lease, int length, Vector256<byte> low, Vector256<byte> high)
    {
        if (!TryAccept(lease.Slot, length))
        {
            return false;
        }

        // The plain header: all 12 bytes zero (no flags, no GSO, num_buffers 0 on transmit).
        low &= PastHeader;
        if (_txSlab.TryStreamLine(lease.Slot, low, high))
        {
            _fenceOwed = true;
        }
        else
        {
            WriteLine(lease.Slot, low, high);
        }

        Stage(lease.Slot, length);
        return true;
    }

    // SubmitLine's line written the ordinary way: as much of it as the buffer holds (a buffer
    // smaller than a line is never streamed). Apart, so SubmitLine can be inlined.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void WriteLine(int slot, Vector256<byte> low, Vector256<byte> high)
    {
        Span<byte> line = stackalloc byte[BufferSlab.LineSize];
        low.CopyTo(line);
        high.CopyTo(line[32..]);
        var buffer = _txSlab.Span(slot);
        line[..Math.Min(line.Length, buffer.Length)].CopyTo(buffer);
    }

    // Keeps a line's bytes from 12 on: the first 12 are the virtio-net header's.
    private static readonly Vector256<byte> PastHeader = Vector256.Create(
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
        0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, (byte)0xFF);

    /// <summary>Publishes the frames sent since the last flush.</summary>
    /// <returns>True when the device asked to be kicked.</returns>
    public bool FlushTransmit()
    {
        AddStaged();
        if (_fenceOwed)
        {
            // Lines streamed by SubmitLine are not ordered by the publication's release store
            // (x86 orders ordinary stores only): the fence makes them visible first, so a device
            // that sees the descriptors sees the frames' heads (2.7.13, 2.8.21.1.1).
            BufferSlab.StoreFence();
            _fenceOwed = false;
        }

        _tx.Publish();
        return _tx.KickNeeded();
    }

    // Adds the staged frames to the transmit ring with one call. Each had a free descriptor when it
    // was submitted; only a ring that broke since (a device that broke a rule on the used side,
    // found while reclaiming) refuses them, and then their buffers go back to the slab.
    private void AddStaged()
    {
        var n = _staged;
        if (n == 0)
        {
            return;
        }

        _staged = 0;
        var added = _tx.TryAddBurst(_stagedSegments.AsSpan(0, n), deviceWritable: false, _stagedIds);
        for (var i = 0; i < added; i++)
        {
            _txSlotOfId[_stagedIds[i]] = _stagedSlots[i];
        }

        for (var i = added; i < n; i++)
        {
            _txSlab.Return(_stagedSlots[i]);
        }
    }

    // Transmit descriptors neither in the ring nor promised to a staged frame.
    private int FreeTransmitDescriptors => _tx.FreeDescriptors - _staged;

    /// <summary>
    /// Copies the next received frame (without its header) into <paramref name="destination"/> and
    /// reposts its buffers (published at the next <see cref="RefillReceive"/>).
    /// </summary>
    /// <param name="destination">Where the frame goes.</param>
    /// <param name="length">The frame's full length; more than <paramref name="destination"/>'s when truncated.</param>
    /// <returns>False when no whole frame is waiting.</returns>
    public bool TryReceive(Span<byte> destination, out int length)
    {
        length = 0;
        while (true)
        {
            if (!TryGather())
            {
                return false;
            }

            if (_mergeExpected < 0)
            {
                // A bad frame was discarded; look for the next.
                ResetMerge();
                continue;
            }

            var copied = 0;
            var total = 0;
            for (var i = 0; i < _mergeTaken; i++)
            {
                var skip = i == 0 ? VirtioNetHeader.Size : 0;
                var part = _rxSlab.Span(_mergeSlots[i]).Slice(skip, _mergeLengths[i] - skip);
                total += part.Length;
                var n = Math.Min(part.Length, destination.Length - copied);
                part[..n].CopyTo(destination[copied..]);
                copied += n;
                _rxSlab.Return(_mergeSlots[i]);
            }

            if (total > destination.Length)
            {
                Truncated++;
            }

            length = total;
            ResetMerge();
            return true;
        }
    }

    /// <summary>
    /// Zero copy: hands out the next received frame that sits in one buffer as a span over shared
    /// memory. The buffer stays out of the ring until <see cref="Release"/>. A frame spanning
    /// several buffers is not returned here; use <see cref="TryReceive"/> for those.
    /// </summary>
    /// <param name="frame">The frame.</param>
    /// <returns>False when no single-buffer frame is at the head of the queue.</returns>
    public bool TryReceiveInPlace(out ReceivedFrame frame)
    {
        // The common case first: no frame half gathered, a buffer taken already, and its header
        // (or the lack of MRG_RXBUF) saying the frame lies in it alone.
        if (_mergeExpected == 0 && _mergeTaken == 0 && _receivedNext < _receivedCount)
        {
            var first = _receivedSlots[_receivedNext];
            var length = (int)_received[_receivedNext].Length;
            var buffer = _rxSlab.Span(first);
            if (length >= VirtioNetHeader.Size && (!_mergeable || BinaryPrimitives.ReadUInt16LittleEndian(buffer[VirtioNetHeader.NumBuffersOffset..]) == 1))
            {
                _receivedNext++;
                frame = new ReceivedFrame(first, buffer.Slice(VirtioNetHeader.Size, length - VirtioNetHeader.Size));
                return true;
            }
        }

        frame = default;
        while (true)
        {
            if (!TryGather())
            {
                return false;
            }

            if (_mergeExpected < 0)
            {
                ResetMerge();
                continue;
            }

            if (_mergeExpected != 1)
            {
                return false;
            }

            var slot = _mergeSlots[0];
            frame = new ReceivedFrame(slot, _rxSlab.Span(slot).Slice(VirtioNetHeader.Size, _mergeLengths[0] - VirtioNetHeader.Size));
            _mergeTaken = 0;
            _mergeExpected = 0;
            return true;
        }
    }

    /// <summary>Gives a frame from <see cref="TryReceiveInPlace"/> back; its buffer is reposted at the next <see cref="RefillReceive"/>.</summary>
    /// <param name="frame">The frame.</param>
    public void Release(in ReceivedFrame frame) => _rxSlab.Return(frame.Slot);

    // Takes used receive buffers until one whole frame is gathered. Sets _mergeExpected = -1
    // for a frame that must be discarded (its buffers already returned to the slab).
    private bool TryGather()
    {
        while (_mergeExpected == 0 || _mergeTaken < _mergeExpected)
        {
            if (_receivedNext == _receivedCount)
            {
                // A burst of used elements per ring call (one look at the device's index), handed
                // out one by one below; they are taken in ring order, so frames stay in order.
                _receivedNext = 0;
                _receivedCount = _rx.TakeUsed(_received);
                if (_receivedCount == 0)
                {
                    return false;
                }

                // Each id's slot is looked up now: once taken, the id's descriptor is free, and the
                // next refill may give the id to another buffer before these are gathered.
                // Their headers (and small frames) are asked for at once, so the lines the
                // device's core wrote travel here side by side rather than one per frame.
                for (var i = 0; i < _receivedCount; i++)
                {
                    var s = _rxSlotOfId[_received[i].Id];
                    _receivedSlots[i] = s;
                    _rxSlab.Prefetch(s);
                }
            }

            var slot = _receivedSlots[_receivedNext];
            var len = (int)_received[_receivedNext].Length;
            _receivedNext++;
            if (_mergeTaken == 0)
            {
                // First buffer of a frame: the header says how many buffers follow (5.1.6.4).
                if (len < VirtioNetHeader.Size || !VirtioNetHeader.TryRead(_rxSlab.Span(slot), out var header))
                {
                    Discard(slot);
                    return true;
                }

                int expected = header.NumBuffers;
                if (!_mergeable)
                {
                    expected = 1;
                }
                else if (expected < 1 || expected > NetForwarder.MaxMergedBuffers || expected > _rx.Size)
                {
                    Discard(slot);
                    return true;
                }

                _mergeExpected = expected;
            }

            _mergeSlots[_mergeTaken] = slot;
            _mergeLengths[_mergeTaken] = len;
            _mergeTaken++;
        }

        return true;
    }

    private void Discard(int slot)
    {
        _rxSlab.Return(slot);
        ReceiveErrors++;
        _mergeExpected = -1;
        _mergeTaken = 0;
    }

    private void ResetMerge()
    {
        _mergeTaken = 0;
        _mergeExpected = 0;
    }
}

/// <summary>A transmit buffer leased for building a frame in place.</summary>
public readonly ref struct TransmitLease
{
    internal TransmitLease(int slot, Span<byte> frame)
    {
        Slot = slot;
        Frame = frame;
    }

    /// <summary>The slab slot.</summary>
    internal int Slot { get; }

    /// <summary>Where the frame goes (after the header), as large as the largest frame.</summary>
    public Span<byte> Frame { get; }
}

/// <summary>A received frame lent in place from shared memory.</summary>
public readonly ref struct ReceivedFrame
{
    internal ReceivedFrame(int slot, Span<byte> data)
    {
        Slot = slot;
        Data = data;
    }

    /// <summary>The slab slot.</summary>
    internal int Slot { get; }

    /// <summary>The frame's bytes (no header).</summary>
    public Span<byte> Data { get; }
}
