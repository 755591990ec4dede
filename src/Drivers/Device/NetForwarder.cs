using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using Rings.Chains;
using Rings.Linux.Net;

namespace Rings.Linux.Device;

/// <summary>What one <see cref="NetForwarder.Forward{TTx, TRx}(TTx, TRx, int, bool)"/> call did.</summary>
/// <param name="Frames">Frames delivered into receive buffers.</param>
/// <param name="Dropped">Frames consumed but not delivered (too large for a non-mergeable receive buffer).</param>
/// <param name="ReceiveFull">True when forwarding stopped because the receive queue had no room: wait for the driver to post buffers.</param>
public readonly record struct ForwardResult(int Frames, int Dropped, bool ReceiveFull);

/// <summary>
/// The vhost-net data path for one direction: pops frames from a driver's transmit queue and
/// copies each into receive buffers of a destination driver (the sender itself when reflecting),
/// writing a fresh <c>virtio_net_hdr_v1</c>. Both used rings are published once per burst.
/// </summary>
public static class NetForwarder
{
    /// <summary>Most receive buffers one frame may span under MRG_RXBUF.</summary>
    public const int MaxMergedBuffers = 64;

    // Buffers one burst call pops from each ring (a larger burst is forwarded in several), and the
    // segments each call may fill: a chain with more segments than that stays available and is
    // forwarded by the per-frame path.
    private const int BurstChains = 64;
    private const int BurstSegments = 256;

    /// <summary>
    /// Moves up to <paramref name="burst"/> frames from <paramref name="tx"/> into <paramref name="rx"/>.
    /// Backs off (without dropping) when <paramref name="rx"/> lacks buffers. Publishes both used
    /// rings once; the caller asks <c>CallNeeded</c> on each afterwards.
    /// </summary>
    /// <remarks>
    /// Frames that each fit one receive buffer, the common case, go a burst at a time: one
    /// <see cref="IDeviceRing.PopSingles"/> on each ring while frames and receive buffers are one
    /// segment each (so the driver's index is read once and the descriptors of the whole burst are
    /// fetched together, not one cross-core miss after another, and each buffer's record is its
    /// segment), <see cref="IDeviceRing.PopBurst"/> where a buffer of several segments comes next;
    /// one <see cref="IDeviceRing.PushUsedBurst"/> on each (one batch for the frames under
    /// IN_ORDER). A frame that needs several receive buffers (MRG_RXBUF), or a chain too long for
    /// the burst's scratch, goes through the per-frame path with its own pops; what a burst popped
    /// but did not use is put back with <see cref="IDeviceRing.UndoNewestPops"/>.
    /// </remarks>
    /// <typeparam name="TTx">Device side of the source's transmit queue.</typeparam>
    /// <typeparam name="TRx">Device side of the destination's receive queue.</typeparam>
    /// <param name="tx">The transmit queue to drain.</param>
    /// <param name="rx">The receive queue to fill.</param>
    /// <param name="burst">Most frames to move.</param>
    /// <param name="mergeable">True when VIRTIO_NET_F_MRG_RXBUF was negotiated with the destination.</param>
    /// <returns>What was done.</returns>
    [SkipLocalsInit]
    public static ForwardResult Forward<TTx, TRx>(TTx tx, TRx rx, int burst, bool mergeable)
        where TTx : IDeviceRing
        where TRx : IDeviceRing =>
        Forward(tx, rx, burst, mergeable, singles: true);

    /// <summary>
    /// <see cref="Forward{TTx, TRx}(TTx, TRx, int, bool)"/>, with the pop of one-segment buffers
    /// (<see cref="IDeviceRing.PopSingles"/>) on or off: off, every burst pops whole records (the
    /// tests compare the two).
    /// </summary>
    [SkipLocalsInit]
    internal static ForwardResult Forward<TTx, TRx>(TTx tx, TRx rx, int burst, bool mergeable, bool singles)
        where TTx : IDeviceRing
        where TRx : IDeviceRing
    {
        // One look at the destination's ring per call, not per frame: if it runs dry mid-burst,
        // the pops come back short and what the burst cannot use is put back.
        var receiveFull = !rx.HasAvailable && !rx.IsBroken;
        var frames = 0;
        var dropped = 0;
        var perFrame = false;
        if (!receiveFull)
        {
            // Scratch for one burst; not zeroed (SkipLocalsInit): only what the pops wrote is read.
            Span<PoppedChain> txChains = stackalloc PoppedChain[BurstChains];
            Span<ChainSegment> txSegments = stackalloc ChainSegment[BurstSegments];
            Span<PoppedChain> rxChains = stackalloc PoppedChain[BurstChains];
            Span<ChainSegment> rxSegments = stackalloc ChainSegment[BurstSegments];
            Span<ChainToken> txTokens = stackalloc ChainToken[BurstChains];
            Span<ChainToken> rxTokens = stackalloc ChainToken[BurstChains];
            Span<uint> written = stackalloc uint[BurstChains];
            while (frames + dropped < burst && !rx.IsBroken && !tx.IsBroken)
            {
                var want = Math.Min(BurstChains, burst - frames - dropped);
                var step = singles
                    ? ForwardSingles(tx, rx, mergeable, txSegments[..want], rxSegments, txTokens, rxTokens, written)
                    : new BurstStep(0, 0, BurstOutcome.Chains);
                var moved = step.Frames + step.Dropped;
                if (step.Outcome == BurstOutcome.Chains)
                {
                    // A buffer of several segments at the head of a queue: the rest of this step
                    // goes with whole records.
                    frames += step.Frames;
                    dropped += step.Dropped;
                    step = ForwardBurst(tx, rx, mergeable, txChains[..(want - moved)], txSegments, rxChains, rxSegments, txTokens, rxTokens, written);
                    moved += step.Frames + step.Dropped;
                }

                frames += step.Frames;
                dropped += step.Dropped;
                if (step.Outcome == BurstOutcome.Continue && moved == want)
                {
                    continue;
                }

                receiveFull = step.Outcome == BurstOutcome.ReceiveFull;
                perFrame = step.Outcome == BurstOutcome.PerFrame;
                break;
            }
        }

        if (perFrame)
        {
            var rest = ForwardEach(tx, rx, burst - frames - dropped, mergeable);
            frames += rest.Frames;
            dropped += rest.Dropped;
            receiveFull = rest.ReceiveFull;
        }

        rx.PublishUsed();
        tx.PublishUsed();

        // Inflight tracking: only now, with the transmit batch published, may the receive batch be
        // recorded as done; a kill in between leaves the receive side saying its batch went out.
        InflightDeviceRing.FinishPublish(tx);
        InflightDeviceRing.FinishPublish(rx);
        return new ForwardResult(frames, dropped, receiveFull);
    }

    private enum BurstOutcome
    {
        // The burst went as far as the transmit queue had frames.
        Continue,

        // The receive queue ran out of buffers (or broke): wait for the driver to post more.
        ReceiveFull,

        // A frame needs what a burst does not do (several receive buffers, a long chain): the
        // per-frame path takes over from it.
        PerFrame,

        // Nothing more to do now: the transmit queue is empty or broken.
        Stop,

        // A buffer of several segments is next on a queue: a burst with whole records
        // (ForwardBurst) takes it. Only ForwardSingles says this.
        Chains,
    }

    private readonly record struct BurstStep(int Frames, int Dropped, BurstOutcome Outcome);

    // One burst: pops up to txChains.Length frames and as many receive buffers as whole records,
    // and forwards them (Step). Publishes nothing.
    private static BurstStep ForwardBurst<TTx, TRx>(TTx tx, TRx rx, bool mergeable, Span<PoppedChain> txChains, Span<ChainSegment> txSegments, Span<PoppedChain> rxChains, Span<ChainSegment> rxSegments, Span<ChainToken> txTokens, Span<ChainToken> rxTokens, Span<uint> written)
        where TTx : IDeviceRing
        where TRx : IDeviceRing
    {
        var txCount = tx.PopBurst(txChains, txSegments);
        if (txCount == 0)
        {
            // Empty or broken, or a head chain longer than the scratch holds: that one goes alone.
            return new BurstStep(0, 0, !tx.IsBroken && tx.HasAvailable ? BurstOutcome.PerFrame : BurstOutcome.Stop);
        }

        var rxCount = rx.PopBurst(rxChains[..txCount], rxSegments);
        return Step(tx, rx, mergeable, new Records(txChains, txSegments, txTokens), txCount, new Records(rxChains, rxSegments, rxTokens), rxCount, txTokens, rxTokens, written, txChains.Length);
    }

    // One burst of the common case, every frame and every receive buffer one segment: pops each
    // side with PopSingles, so a buffer's record is its segment and the tokens are ready to be
    // returned, and forwards them (Step). Publishes nothing.
    private static BurstStep ForwardSingles<TTx, TRx>(TTx tx, TRx rx, bool mergeable, Span<ChainSegment> txSegments, Span<ChainSegment> rxSegments, Span<ChainToken> txTokens, Span<ChainToken> rxTokens, Span<uint> written)
        where TTx : IDeviceRing
        where TRx : IDeviceRing
    {
        var txCount = tx.PopSingles(txSegments, txTokens);
        if (txCount == 0)
        {
            // Empty or broken, or a frame of several segments next.
            return new BurstStep(0, 0, !tx.IsBroken && tx.HasAvailable ? BurstOutcome.Chains : BurstOutcome.Stop);
        }

        var rxCount = rx.PopSingles(rxSegments[..txCount], rxTokens);
        return Step(tx, rx, mergeable, new Singles(txSegments), txCount, new Singles(rxSegments), rxCount, txTokens, rxTokens, written, txSegments.Length);
    }

    // A burst's frames and receive buffers, as one of the two pops wrote them: whole records
    // (PopBurst) or one segment each (PopSingles). Struct type arguments, so Step is compiled for
    // each kind with no test for the other.
    private interface IPopped
    {
        // True for PopSingles' segments: a buffer of several segments ends the burst (Chains)
        // rather than going to the per-frame path, and each token is already where the return
        // reads it.
        static abstract bool OneSegmentEach { get; }

        ulong ReadableBytes(int i);

        ulong WritableBytes(int i);

        // The buffer's segment when it is one readable segment: the small-frame copy's source.
        bool TryOneSegment(int i, out ReadOnlySpan<byte> bytes);

        // Where the receive header goes: the first writable segment (empty when there is none).
        Span<byte> Header(int i);

        ReadOnlySpan<ChainSegment> Readable(int i);

        ReadOnlySpan<ChainSegment> Writable(int i);

        // Puts buffer i's token at index i of the tokens returned (every buffer before it went).
        void KeepToken(int i);
    }

    private readonly ref struct Records(Span<PoppedChain> chains, Span<ChainSegment> segments, Span<ChainToken> tokens) : IPopped
    {
        private readonly Span<PoppedChain> _chains = chains;
        private readonly Span<ChainSegment> _segments = segments;
        private readonly Span<ChainToken> _tokens = tokens;

        public static bool OneSegmentEach => false;

        public ulong ReadableBytes(int i) => _chains[i].ReadableBytes;

        public ulong WritableBytes(int i) => _chains[i].WritableBytes;

        public bool TryOneSegment(int i, out ReadOnlySpan<byte> bytes)
        {
            ref readonly var chain = ref _chains[i];
            bytes = chain.SegmentCount == 1 ? _segments[chain.FirstSegment].Span : default;
            return chain.SegmentCount == 1;
        }

        public Span<byte> Header(int i)
        {
            // Its first writable segment, unless that is empty (then the cursor, which skips
            // empty segments, finds where it goes). The cursor is made only where it is needed.
            ref readonly var buffer = ref _chains[i];
            var header = buffer.SegmentCount > buffer.ReadableCount ? _segments[buffer.FirstSegment + buffer.ReadableCount].Span : default;
            return header.IsEmpty ? new SegmentCursor(buffer.Writable(_segments)).Current : header;
        }

        public ReadOnlySpan<ChainSegment> Readable(int i) => _chains[i].Readable(_segments);

        public ReadOnlySpan<ChainSegment> Writable(int i) => _chains[i].Writable(_segments);

        public void KeepToken(int i) => _tokens[i] = _chains[i].Token;
    }

    private readonly ref struct Singles(Span<ChainSegment> segments) : IPopped
    {
        private readonly Span<ChainSegment> _segments = segments;

        public static bool OneSegmentEach => true;

        public ulong ReadableBytes(int i) => _segments[i].IsWritable ? 0 : _segments[i].Length;

        public ulong WritableBytes(int i) => _segments[i].IsWritable ? _segments[i].Length : 0;

        public bool TryOneSegment(int i, out ReadOnlySpan<byte> bytes)
        {
            bytes = _segments[i].Span;
            return true;
        }

        public Span<byte> Header(int i) => _segments[i].IsWritable ? _segments[i].Span : default;

        public ReadOnlySpan<ChainSegment> Readable(int i) => _segments.Slice(i, 1);

        public ReadOnlySpan<ChainSegment> Writable(int i) => _segments.Slice(i, 1);

        // The pop wrote it there.
        public void KeepToken(int i)
        {
        }
    }

    // A burst's frames, popped (txCount of them, of the wanted), into its receive buffers (rxCount):
    // copies each frame into the next buffer, returns both bursts as used, and puts back whatever
    // was popped and not used. Publishes nothing.
    private static BurstStep Step<TTx, TRx, TPopped>(TTx tx, TRx rx, bool mergeable, TPopped frames, int txCount, TPopped buffers, int rxCount, Span<ChainToken> txTokens, Span<ChainToken> rxTokens, Span<uint> written, int wanted)
        where TTx : IDeviceRing
        where TRx : IDeviceRing
        where TPopped : IPopped, allows ref struct
    {
        var outcome = BurstOutcome.Continue;
        var dropped = 0;
        var filled = 0;
        var i = 0;
        for (; i < txCount; i++)
        {
            var readable = frames.ReadableBytes(i);
            if (readable < VirtioNetHeader.Size)
            {
                // 5.1.6.2: every transmitted buffer starts with the header (a device-writable one
                // has no readable bytes). The frames before it are returned below; it and those
                // after it stay with the broken queue.
                tx.MarkBroken(BrokenReason.HeaderTooShort);
                outcome = BurstOutcome.Stop;
                break;
            }

            if (filled == rxCount)
            {
                // Fewer receive buffers than frames: the driver has posted no more (wait for it),
                // or the next one is more than this burst takes (several segments for a burst of
                // single segments, a chain too long for the scratch for one of records).
                outcome = rx.IsBroken ? BurstOutcome.Stop
                    : !rx.HasAvailable ? BurstOutcome.ReceiveFull
                    : TPopped.OneSegmentEach ? BurstOutcome.Chains : BurstOutcome.PerFrame;
                break;
            }

            var header = buffers.Header(filled);
            if (header.Length < VirtioNetHeader.Size)
            {
                // Rings needs the receive header in the first writable segment.
                rx.MarkBroken(BrokenReason.HeaderTooShort);
                outcome = BurstOutcome.Stop;
                break;
            }

            var payload = readable - VirtioNetHeader.Size;
            if (payload > buffers.WritableBytes(filled) - VirtioNetHeader.Size)
            {
                if (mergeable)
                {
                    // Needs several receive buffers (5.1.6.4): the per-frame path merges them.
                    outcome = BurstOutcome.PerFrame;
                    break;
                }

                // Does not fit one buffer and may not be merged (5.1.6.3.1): dropped, returned
                // below with the others; the buffer stays for the next frame.
                frames.KeepToken(i);
                rx.Counters.RecordDrop();
                dropped++;
                continue;
            }

            long copied;
            var oneSegment = frames.TryOneSegment(i, out var source);
            if (oneSegment && TryCopySmallFrame(source, header))
            {
                copied = (long)payload;
            }
            else if (TPopped.OneSegmentEach)
            {
                // One segment each (the header's is the buffer's): one copy, with no cursors
                // (they cost a 1514-byte frame's loopback about a tenth of its rate). The frame,
                // then its header: the two may be the same memory.
                source.Slice(VirtioNetHeader.Size, (int)payload).CopyTo(header[VirtioNetHeader.Size..]);
                new VirtioNetHeader { NumBuffers = 1 }.TryWrite(header);
                copied = (long)payload;
            }
            else
            {
                // The frame, then its header: the two may be the same memory.
                var from = new SegmentCursor(frames.Readable(i));
                from.Skip(VirtioNetHeader.Size);
                var to = new SegmentCursor(buffers.Writable(filled));
                to.Advance(VirtioNetHeader.Size);
                copied = to.CopyFrom(ref from, (long)payload);
                new VirtioNetHeader { NumBuffers = 1 }.TryWrite(header);
            }

            buffers.KeepToken(filled);
            written[filled] = (uint)(VirtioNetHeader.Size + copied);
            frames.KeepToken(i);
            filled++;
        }

        // Every frame popped went, but fewer than wanted were popped and more are there: the next
        // has several segments, for a burst of single segments.
        if (TPopped.OneSegmentEach && i == txCount && txCount < wanted && !tx.IsBroken && tx.HasAvailable)
        {
            outcome = BurstOutcome.Chains;
        }

        // Every frame before i went, delivered or dropped, in ring order.
        EndBurst(tx, rx, txCount - i, rxCount - filled, txTokens[..i], rxTokens[..filled], written[..filled]);
        return new BurstStep(filled, dropped, outcome);
    }

    // The end of a burst, of either kind: what was popped and not used goes back, the newest pops
    // of each queue (the frames from the first one not forwarded, unless that one broke its queue;
    // the receive buffers from the first one not filled), then both bursts are returned, the
    // frames in ring order. Publishes nothing.
    private static void EndBurst<TTx, TRx>(TTx tx, TRx rx, int txUnused, int rxUnused, ReadOnlySpan<ChainToken> txTokens, ReadOnlySpan<ChainToken> rxTokens, ReadOnlySpan<uint> written)
        where TTx : IDeviceRing
        where TRx : IDeviceRing
    {
        if (txUnused > 0 && !tx.IsBroken)
        {
            tx.UndoNewestPops(txUnused);
        }

        if (rxUnused > 0)
        {
            rx.UndoNewestPops(rxUnused);
        }

        rx.PushUsedBurst(rxTokens, written);
        if (txTokens.Length > 1 && tx.InOrder)
        {
            // Under IN_ORDER the frames, popped in ring order and none written to, go back with
            // one used entry naming the last (2.7.9, 2.8.8): one line for the driver to read
            // instead of one per eight (split) or four (packed) frames.
            tx.PushUsedInOrderBatch(txTokens[^1], 0, txTokens.Length);
        }
        else
        {
            tx.PushUsedBurst(txTokens, default);
        }
    }

    // The receive header of a forwarded frame as the first 32 bytes of a vector: all zero but
    // num_buffers (bytes 10 and 11) = 1; and the mask that keeps the bytes after it.
    private static readonly Vector256<byte> ReceiveHeader = Vector256.Create((byte)0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
    private static readonly Vector256<byte> AfterHeader = Vector256.Create((byte)0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF);

    /// <summary>
    /// The common case of a burst's copy: a frame of 32 to 96 bytes with its header (a small
    /// frame) in one transmit segment, into a receive segment that holds it whole. Copied as the
    /// transmit buffer's bytes with the header replaced, in two or three 32-byte loads and stores
    /// (the later ones overlapping when the length is not a multiple of 32), with no call and no
    /// separate header stores: each store waits for its line, which the driver's core last held.
    /// </summary>
    /// <param name="source">The transmit segment: header and frame.</param>
    /// <param name="destination">The receive segment.</param>
    /// <returns>False when the case does not apply (nothing written): the general copy takes it.</returns>
    private static bool TryCopySmallFrame(ReadOnlySpan<byte> source, Span<byte> destination)
    {
        var length = source.Length;
        if (!Vector256.IsHardwareAccelerated || length < 32 || length > 96 || destination.Length < length)
        {
            return false;
        }

        // Read before any store: the source and the destination may be the same memory.
        var head = (Vector256.Create(source) & AfterHeader) | ReceiveHeader;
        var tail = Vector256.Create(source[(length - 32)..]);
        if (length <= 64)
        {
            // The tail first: when the frame is shorter than 44 bytes it covers header bytes,
            // which the head's store then puts right.
            tail.CopyTo(destination[(length - 32)..]);
            head.CopyTo(destination);
            return true;
        }

        var middle = Vector256.Create(source[32..]);
        tail.CopyTo(destination[(length - 32)..]);
        middle.CopyTo(destination[32..]);
        head.CopyTo(destination);
        return true;
    }

    // The per-frame path: each frame popped on its own, spread over as many receive buffers as it
    // needs (MRG_RXBUF), both pops undone when the receive queue runs dry. Publishes nothing.
    private static ForwardResult ForwardEach<TTx, TRx>(TTx tx, TRx rx, int burst, bool mergeable)
        where TTx : IDeviceRing
        where TRx : IDeviceRing
    {
        Span<ChainToken> tokens = stackalloc ChainToken[MaxMergedBuffers];
        Span<uint> written = stackalloc uint[MaxMergedBuffers];
        var frames = 0;
        var dropped = 0;
        // One look at the destination's ring per burst, not per frame: if it runs dry mid-burst,
        // the receive pop below fails and both pops are undone.
        var receiveFull = !rx.HasAvailable && !rx.IsBroken;
        while (!receiveFull && !rx.IsBroken && frames + dropped < burst)
        {
            var txBefore = tx.Position;
            if (!tx.TryPop(out var frame))
            {
                break;
            }

            if (frame.ReadableBytes < VirtioNetHeader.Size)
            {
                // 5.1.6.2: every transmitted buffer starts with the header.
                tx.MarkBroken(BrokenReason.HeaderTooShort);
                break;
            }

            var payload = (long)frame.ReadableBytes - VirtioNetHeader.Size;
            var source = new SegmentCursor(frame.Readable);
            source.Skip(VirtioNetHeader.Size);

            var rxBefore = rx.Position;
            var buffers = 0;
            long copied = 0;
            var ok = true;
            Span<byte> firstHeader = default;
            while (true)
            {
                if (!rx.TryPop(out var buffer))
                {
                    ok = false;
                    break;
                }

                var destination = new SegmentCursor(buffer.Writable);
                var count = 0;
                if (buffers == 0)
                {
                    // Rings needs the receive header in the first writable segment.
                    if (destination.Current.Length < VirtioNetHeader.Size)
                    {
                        rx.MarkBroken(BrokenReason.HeaderTooShort);
                        ok = false;
                        break;
                    }

                    firstHeader = destination.Current[..VirtioNetHeader.Size];
                    destination.Advance(VirtioNetHeader.Size);
                    count = VirtioNetHeader.Size;
                }

                var n = destination.CopyFrom(ref source, payload - copied);
                copied += n;
                tokens[buffers] = buffer.Token;
                written[buffers] = (uint)(count + n);
                buffers++;
                if (copied == payload)
                {
                    break;
                }

                if (!mergeable || buffers == MaxMergedBuffers || buffers == rx.Size)
                {
                    // Does not fit one buffer and may not be merged (5.1.6.3.1), or could never fit
                    // the whole receive ring: drop it, keep the buffers.
                    buffers = -1;
                    break;
                }
            }

            if (!ok)
            {
                // Not enough receive buffers (or a broken receive queue): put both sides back.
                rx.UndoPops(rxBefore);
                tx.UndoPops(txBefore);
                receiveFull = !rx.IsBroken;
                break;
            }

            if (buffers < 0)
            {
                rx.UndoPops(rxBefore);
                tx.PushUsed(frame.Token, 0);
                rx.Counters.RecordDrop();
                dropped++;
                continue;
            }

            var header = new VirtioNetHeader { NumBuffers = (ushort)buffers };
            header.TryWrite(firstHeader);
            rx.PushUsedBurst(tokens[..buffers], written[..buffers]);

            tx.PushUsed(frame.Token, 0);
            frames++;
        }

        return new ForwardResult(frames, dropped, receiveFull);
    }
}
