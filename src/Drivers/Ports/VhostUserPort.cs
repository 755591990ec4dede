using System.Runtime.CompilerServices;
using Rings.Chains;
using Rings.Linux.Device;
using Rings.Linux.Net;
using Rings.Linux.Plumbing;
using Rings.Linux.Runtime;
using Rings.Linux.VhostUser;

namespace Rings.Linux.Ports;

/// <summary>
/// The device side of a virtio-net device over vhost-user: serves one front-end (a QEMU VM,
/// DPDK's <c>net_virtio_user</c>, <c>rings guest</c>) on a Unix socket created owner-only. A
/// second front-end that connects while one is attached is refused (closed at once).
/// <para>
/// Frames the guest transmits are read in place from its memory (never written, 2.7.4); frames
/// for the guest are copied straight into its receive buffers, merged over several under
/// MRG_RXBUF (5.1.6.3.1), so guest to guest costs one copy. Used rings are published once per
/// burst and the guest is called only when it asked (2.7.7, 2.7.10).
/// </para>
/// <para>
/// The front-end attaching (both queues of pair 0 started) is the link going up; a queue of pair 0
/// stopping or the front-end leaving is the link going down, and the port waits for its worker to
/// let go of the rings before the session may unmap anything.
/// </para>
/// <para>
/// With <c>queues=N</c> the device offers VIRTIO_NET_F_MQ and up to N queue pairs (5.1.6.5.5);
/// the front-end decides how many run. Each pair is a lane (<see cref="Port.Lanes"/>) that the
/// pipeline gives to one worker (<see cref="Port.LaneWorkers"/>); a worker touches only its own
/// pairs' rings, so several workers serve the port at once without a lock. Each round a worker
/// takes from the next of its pairs' transmit queues in turn, and a frame it sends to the guest
/// goes to the receive queue of one of its own running pairs, chosen by the frame's flow hash
/// (<see cref="FlowHash"/>), so a flow from one source stays on one pair and in order. Pairs
/// other than 0 join and leave on their own, never taking the link down.
/// </para>
/// </summary>
public class VhostUserPort : Port
{
    /// <summary>The MTU when none is given: anything the guest's buffers hold, up to a 64 KiB GSO frame.</summary>
    public const int UnlimitedMtu = FrameBurst.MaxFrameLength - LinkHeaderBytes;

    /// <summary>The most queue pairs a port serves.</summary>
    public const int MaxQueuePairs = 64;

    private readonly object _gate = new();
    private readonly VhostQueue?[] _queues;
    private VhostUserBackend? _backend;
    private object? _session;
    private volatile Attachment? _active;
    private string _status;

    // Data path only: each worker's own state (index: worker), read and written by that worker
    // alone. Replaced whole before the workers start (OnLanesAssigned).
    private WorkerState[] _workers;

    /// <summary>
    /// Creates the port from <c>vhost-user:PATH[,mtu=N][,queues=N][,max-memory=MIB][,unsealed=trust|refuse][,offload=on|off]</c>
    /// (not yet listening). <c>queues</c> is the most queue pairs offered (1 to <see cref="MaxQueuePairs"/>, default 1);
    /// <c>offload=on</c> offers <see cref="OffloadFeatures"/> (default off); <c>max-memory</c> is the front-end's memory budget in MiB;
    /// <c>unsealed=trust</c> accepts memory files that are not sealed against shrinking (a
    /// front-end that cannot seal, such as DPDK without hugepages), trusting it not to truncate them.
    /// </summary>
    /// <param name="spec">The specification.</param>
    public VhostUserPort(PortSpec spec)
        : this("vhost-user", spec, connect: false)
    {
    }

    /// <summary>Creates a port of a kind that serves vhost-user the way <paramref name="connect"/> says.</summary>
    /// <param name="kind">The kind's name.</param>
    /// <param name="spec">The specification (<c>KIND:PATH</c> with the options of <c>vhost-user:</c>).</param>
    /// <param name="connect">Connect to a front-end that listens on the path instead of listening on it.</param>
    protected VhostUserPort(string kind, PortSpec spec, bool connect)
        : base(kind, spec?.Text ?? throw new ArgumentNullException(nameof(spec)))
    {
        spec.RejectUnknown("mtu", "max-memory", "unsealed", "offload", "queues");
        OffersOffloads = spec.GetOnOff("offload", false);
        SocketPath = spec.Target;
        Connect = connect;
        Mtu = spec.GetInt("mtu", UnlimitedMtu, 68, UnlimitedMtu);
        QueuePairs = spec.GetInt("queues", 1, 1, MaxQueuePairs);
        _queues = new VhostQueue?[2 * QueuePairs];
        _workers = [new WorkerState(LaneState.All(QueuePairs))];
        _status = connect ? "connecting to a front-end" : "waiting for a front-end";
        MaxMemoryBytes = (ulong)spec.GetInt("max-memory", (int)(VhostUserBackendOptions.DefaultMaxMemoryBytes >> 20), 1, MaxMemoryMib) << 20;
        TrustUnsealedMemory = (spec.Options.TryGetValue("unsealed", out var unsealed) ? unsealed : "refuse") switch
        {
            "trust" => true,
            "refuse" => false,
            _ => throw new ArgumentException($"port '{spec.Text}': unsealed must be trust or refuse, not '{unsealed}'"),
        };
    }

    /// <summary>
    /// The checksum and segmentation features <c>offload=on</c> offers (5.1.3): the front-end may
    /// send partial checksums and TSO/USO frames (CSUM, HOST_*), and take them (GUEST_*). What it
    /// acks of GUEST_* becomes <see cref="Port.Offloads"/>; frames it did not take are completed
    /// and segmented by the switch before they reach it.
    /// </summary>
    public const VirtioFeatures OffloadFeatures =
        VirtioFeatures.NetCsum | VirtioFeatures.NetGuestCsum |
        VirtioFeatures.NetHostTso4 | VirtioFeatures.NetHostTso6 | VirtioFeatures.NetHostEcn | VirtioFeatures.NetHostUso |
        VirtioFeatures.NetGuestTso4 | VirtioFeatures.NetGuestTso6 | VirtioFeatures.NetGuestEcn |
        VirtioFeatures.NetGuestUso4 | VirtioFeatures.NetGuestUso6;

    /// <summary>True when the port offers <see cref="OffloadFeatures"/> (<c>offload=on</c>).</summary>
    public bool OffersOffloads { get; }

    /// <summary>The largest <c>max-memory</c>, in MiB (16 TiB).</summary>
    public const int MaxMemoryMib = 16 << 20;

    /// <summary>The front-end's memory budget (<see cref="VhostUserBackendOptions.MaxMemoryBytes"/>).</summary>
    public ulong MaxMemoryBytes { get; }

    /// <summary>Whether memory not sealed against shrinking is accepted (<see cref="VhostUserBackendOptions.TrustUnsealedMemory"/>).</summary>
    public bool TrustUnsealedMemory { get; }

    /// <summary>The socket path.</summary>
    public string SocketPath { get; }

    /// <summary>True when the port connects to a front-end that listens (client mode) rather than listening.</summary>
    public bool Connect { get; }

    /// <inheritdoc/>
    public override bool CanReturn => true;

    /// <summary>Each queue pair is a lane: the pipeline may spread the pairs over workers.</summary>
    public override int Lanes => QueuePairs;

    /// <summary>The most queue pairs offered (<c>queues=</c>); the front-end runs as many as it wants of them.</summary>
    public int QueuePairs { get; }

    /// <summary>Queue pairs attached now (both rings started), 0 while no front-end is attached.</summary>
    public int RunningPairs => _active?.Pairs.Length ?? 0;

    /// <summary>User ids whose front-ends are served (SO_PEERCRED), or null for any; set before <see cref="Open"/>.</summary>
    public IReadOnlyCollection<uint>? AllowedUids { get; set; }

    /// <summary>The back-end once opened (connections, errors, refusals).</summary>
    public VhostUserBackend? Backend => _backend;

    /// <inheritdoc/>
    public override string Status
    {
        get
        {
            lock (_gate)
            {
                return _status;
            }
        }
    }

    /// <summary>The device side of the guest's transmit queue of pair 0 while attached (for counters).</summary>
    public IDeviceRing? TransmitRing => _active?.Pairs[0].Tx;

    /// <summary>The device side of the guest's receive queue of pair 0 while attached (for counters).</summary>
    public IDeviceRing? ReceiveRing => _active?.Pairs[0].Rx;

    /// <inheritdoc/>
    public override IEnumerable<Diagnostics.PortQueue> Queues
    {
        get
        {
            if (_active is not { } a)
            {
                return [];
            }

            // Virtio's names: receiveq1/transmitq1 for pair 0 (here without the number), receiveqN+1 for pair N.
            var queues = new List<Diagnostics.PortQueue>(2 * a.Pairs.Length);
            foreach (var pair in a.Pairs)
            {
                var n = pair.Number == 0 ? string.Empty : (pair.Number + 1).ToString(System.Globalization.CultureInfo.InvariantCulture);
                queues.Add(Diagnostics.PortQueue.Of("receiveq" + n, pair.Rx));
                queues.Add(Diagnostics.PortQueue.Of("transmitq" + n, pair.Tx));
            }

            return queues;
        }
    }

    /// <inheritdoc/>
    public override void Open()
    {
        if (_backend is not null)
        {
            throw new InvalidOperationException($"{Name} is already open");
        }

        var options = new VhostUserBackendOptions
        {
            SocketPath = SocketPath,
            Connect = Connect,
            MaxConnections = 1,
            RefuseWhenFull = true,
            MaxQueuePairs = QueuePairs,
            AllowedUids = AllowedUids,
            MaxMemoryBytes = MaxMemoryBytes,
            TrustUnsealedMemory = TrustUnsealedMemory,
            Logger = Logger,
        };
        if (OffersOffloads)
        {
            options.DeviceFeatures |= OffloadFeatures;
        }

        var backend = new VhostUserBackend(options);
        backend.QueueStarted += (session, e) => OnQueueStarted(session!, e.Queue);
        backend.QueueStopped += (session, e) => OnQueueStopped(session!, e);
        backend.SessionEnded += (session, reason) => OnSessionEnded(session!, reason);
        try
        {
            backend.Start();
        }
        catch (Exception e) when (e is IOException or ArgumentException)
        {
            backend.Dispose();
            throw new IOException($"{Name}: cannot {(Connect ? "connect to" : "listen on")} {SocketPath}: {e.Message}", e);
        }

        _backend = backend;
    }

    // ---- Data path -------------------------------------------------------------------------

    /// <inheritdoc/>
    public override int Receive(FrameBurst burst)
    {
        var a = _active;
        if (a is null)
        {
            return 0;
        }

        // One pair per round, the next one of this worker's in turn that has frames: a burst comes
        // from one transmit queue, so Release gives it back to that queue alone.
        var state = StateOf(burst.Worker);
        var pairs = a.Pairs;
        for (var n = 0; n < pairs.Length; n++)
        {
            var pair = pairs[(state.NextLane + n) % pairs.Length];
            if (!state.Owns(pair))
            {
                continue;
            }

            var taken = Receive(pair, burst, state);
            if (taken > 0)
            {
                state.NextLane = (state.NextLane + n + 1) % pairs.Length;
                state.Receiving = pair;
                return taken;
            }
        }

        return 0;
    }

    private int Receive(Pair pair, FrameBurst burst, WorkerState state)
    {
        pair.Prepare();
        var tx = pair.Tx;
        if (tx.IsBroken)
        {
            pair.TxQueue.ReportBroken();
            return 0;
        }

        if (!pair.TxQueue.Enabled)
        {
            // A disabled ring's buffers are neither taken nor returned (vhost-user, Ring states).
            return 0;
        }

        var taken = 0;
        while (burst.Room > 0)
        {
            // Where this take starts, should it be given back (Release, FrameBurst.Returned).
            state.TakePositions[taken] = tx.Position;
            if (!tx.TryPop(out var chain))
            {
                break;
            }

            if (chain.ReadableBytes < VirtioNetHeader.Size)
            {
                // 5.1.6.2: every transmitted buffer starts with the header. The queue needs a reset.
                tx.MarkBroken(BrokenReason.HeaderTooShort);
                Counters.For(burst.Worker).Count(DropReason.Malformed);
                break;
            }

            var token = chain.Token;
            if (!burst.TryAddChain(chain.Readable, token.Id | ((ulong)token.DescriptorCount << 16)))
            {
                // Cannot happen after the room check; put it back rather than lose it.
                break;
            }

            taken++;
        }

        if (tx.IsBroken)
        {
            // Found broken by a pop or the header check above: the front-end hears of it now.
            pair.TxQueue.ReportBroken();
        }

        return taken;
    }

    /// <inheritdoc/>
    public override void Release(FrameBurst burst)
    {
        var state = StateOf(burst.Worker);
        var pair = state.Receiving;
        state.Receiving = null;
        if (pair is null)
        {
            return;
        }

        var tx = pair.Tx;
        var keep = burst.Taken - burst.Returned;
        if (keep < burst.Taken)
        {
            // Nothing had room for these: the guest keeps them, we pop (and check) them again later.
            tx.UndoPops(state.TakePositions[keep]);
        }

        if (keep == 0)
        {
            return;
        }

        var tokens = state.ReleaseTokens.AsSpan(0, keep);
        var completions = burst.Completions;
        for (var i = 0; i < tokens.Length; i++)
        {
            tokens[i] = new ChainToken((ushort)completions[i], (ushort)(completions[i] >> 16));
        }

        // Transmit buffers: nothing written into any.
        tx.PushUsedBurst(tokens, default);
        tx.PublishUsed();
        if (tx.CallNeeded())
        {
            pair.TxCall?.Signal();
        }
    }

    /// <inheritdoc/>
    public override int Transmit(FrameBurst burst, ReadOnlySpan<byte> frames)
    {
        var state = StateOf(burst.Worker);
        var counters = Counters.For(burst.Worker);
        var a = state.Transmitting ??= _active;
        if (a is null)
        {
            counters.Count(DropReason.LinkDown, frames.Length);
            return frames.Length;
        }

        // Frames go to this worker's pairs that the guest enabled (it may run fewer than it has), each by its flow.
        var pairs = a.Pairs;
        Span<byte> usable = stackalloc byte[MaxQueuePairs];
        var usableCount = 0;
        var available = false;
        var owned = 0;
        for (var p = 0; p < pairs.Length; p++)
        {
            var pair = pairs[p];
            if (!state.Owns(pair))
            {
                continue;
            }

            owned++;
            if (pair.Rx.IsBroken)
            {
                pair.RxQueue.ReportBroken();
            }
            else if (pair.RxQueue.Enabled)
            {
                pair.Prepare();
                usable[usableCount++] = (byte)p;
                available |= pair.Rx.HasAvailable;
            }
        }

        if (usableCount == 0)
        {
            if (!state.Home)
            {
                // This worker's pairs left since its round began: nothing taken, the frames are
                // refused and go to the home worker next round (TransmitsFrom is false now).
                return 0;
            }

            // Every receive queue of the home worker broken or disabled: down until the front-end resets or enables one.
            counters.Count(DropReason.LinkDown, frames.Length);
            return frames.Length;
        }

        if (!available)
        {
            // One look at the guest's rings for the whole burst: nothing posted, nothing popped and undone.
            return 0;
        }

        var offloads = Offloads;
        var maxLength = MaxFrameLength;
        Span<ChainToken> tokens = stackalloc ChainToken[NetForwarder.MaxMergedBuffers];
        Span<uint> written = stackalloc uint[NetForwarder.MaxMergedBuffers];
        var sent = 0;
        long bytes = 0;
        var k = 0;
        for (; k < frames.Length; k++)
        {
            int frame = frames[k];
            var length = burst.Length(frame);
            var source = burst.Header(frame);
            if (length > maxLength && source.GsoType == VirtioNetHeader.GsoNone)
            {
                counters.Count(DropReason.OverMtu);
                continue;
            }

            var pair = pairs[usable[usableCount == 1 ? 0 : FlowHash.PairOf(FlowHash.OfFrame(burst.Head(frame)), usableCount)]];
            var rx = pair.Rx;
            if (rx.IsBroken)
            {
                // Broke earlier in this burst: that pair is down until the front-end resets it; the others run.
                counters.Count(DropReason.LinkDown);
                continue;
            }

            var segments = burst.Segments(frame);
            var rxBefore = rx.Position;
            var buffers = 0;
            var copied = 0;
            var segment = 0;
            var offset = 0;
            var full = false;
            Span<byte> firstHeader = default;
            while (true)
            {
                if (!rx.TryPop(out var buffer))
                {
                    full = true;
                    break;
                }

                var writable = buffer.Writable;
                var count = 0;
                var w = 0;
                var wOffset = 0;
                if (buffers == 0)
                {
                    // Rings needs the receive header in the first writable segment.
                    if (writable.Length == 0 || writable[0].Length < VirtioNetHeader.Size)
                    {
                        rx.MarkBroken(BrokenReason.HeaderTooShort);
                        full = true;
                        break;
                    }

                    firstHeader = writable[0].Span[..VirtioNetHeader.Size];
                    wOffset = VirtioNetHeader.Size;
                    count = VirtioNetHeader.Size;
                }

                // Gather the frame's runs into this buffer's writable segments.
                while (copied < length && w < writable.Length)
                {
                    var dst = writable[w].Span[wOffset..];
                    if (dst.Length == 0)
                    {
                        w++;
                        wOffset = 0;
                        continue;
                    }

                    var src = segments[segment].Span[offset..];
                    var n = Math.Min(dst.Length, src.Length);
                    src[..n].CopyTo(dst);
                    copied += n;
                    count += n;
                    wOffset += n;
                    offset += n;
                    if (offset == segments[segment].Length)
                    {
                        segment++;
                        offset = 0;
                    }
                }

                tokens[buffers] = buffer.Token;
                written[buffers] = (uint)count;
                buffers++;
                if (copied == length)
                {
                    break;
                }

                if (!pair.Mergeable || buffers == NetForwarder.MaxMergedBuffers || buffers == rx.Size)
                {
                    // Does not fit one buffer and may not be merged (5.1.6.3.1), or never could.
                    buffers = -1;
                    break;
                }
            }

            if (full)
            {
                // No receive buffer (or a broken queue): give the pops back.
                rx.UndoPops(rxBefore);
                if (rx.IsBroken)
                {
                    // The guest broke this receive queue: it is down until reset, not full.
                    pair.RxQueue.ReportBroken();
                    counters.Count(DropReason.LinkDown);
                    continue;
                }

                // The caller counts the rest as destination full.
                break;
            }

            if (buffers < 0)
            {
                rx.UndoPops(rxBefore);
                counters.Count(DropReason.OverMtu);
                continue;
            }

            // 5.1.6.4.1: without GUEST_CSUM the flags are zero; without GUEST_TSO/USO no GSO
            // (frames needing either were completed in software before they got here).
            var header = source;
            if ((offloads & PortOffloads.Checksum) == 0)
            {
                header.Flags = 0;
            }

            header.NumBuffers = (ushort)buffers;
            header.TryWrite(firstHeader);
            rx.PushUsedBurst(tokens[..buffers], written[..buffers]);

            sent++;
            bytes += length;
        }

        state.Transmitted += sent;
        counters.Transmitted(sent, bytes);
        return k;
    }

    /// <inheritdoc/>
    public override void Flush() => Flush(0);

    /// <inheritdoc/>
    public override void Flush(int worker)
    {
        var state = StateOf(worker);
        var a = state.Transmitting;
        state.Transmitting = null;
        if (a is null || state.Transmitted == 0)
        {
            return;
        }

        state.Transmitted = 0;
        foreach (var pair in a.Pairs)
        {
            if (!state.Owns(pair))
            {
                // Another worker's ring: its index is that worker's to publish.
                continue;
            }

            // Nothing pushed on a pair: nothing published, no call (PublishUsed and CallNeeded say so).
            pair.Rx.PublishUsed();
            if (pair.Rx.CallNeeded())
            {
                pair.RxCall?.Signal();
            }
        }
    }

    /// <inheritdoc/>
    public override bool MayHaveRoom => MayHaveRoomFor(0);

    /// <inheritdoc/>
    public override bool MayHaveRoomFor(int worker)
    {
        if (_active is not { } a)
        {
            return true;
        }

        var state = StateOf(worker);
        var owned = false;
        foreach (var pair in a.Pairs)
        {
            if (!state.Owns(pair))
            {
                continue;
            }

            owned = true;
            if (pair.Rx.HasAvailable || pair.Rx.IsBroken || !pair.RxQueue.Enabled)
            {
                return true;
            }
        }

        // None of its own running: unsure, the frames may go to the home worker now.
        return !owned;
    }

    /// <inheritdoc/>
    public override bool TransmitsFrom(int worker)
    {
        var state = StateOf(worker);
        if (state.Home)
        {
            return true;
        }

        if (_active is not { } a)
        {
            return false;
        }

        foreach (var pair in a.Pairs)
        {
            if (state.Owns(pair) && pair.RxQueue.Enabled && !pair.Rx.IsBroken)
            {
                return true;
            }
        }

        return false;
    }

    /// <inheritdoc/>
    public override bool EnableWakeups() => EnableWakeups(0);

    /// <inheritdoc/>
    public override bool EnableWakeups(int worker)
    {
        var a = _active;
        if (a is null)
        {
            return false;
        }

        var state = StateOf(worker);
        var pending = false;
        foreach (var pair in a.Pairs)
        {
            if (!state.Owns(pair))
            {
                continue;
            }

            if (pair.TxKick is null)
            {
                // The front-end polls and will never kick: neither may we sleep.
                return true;
            }

            pending |= pair.Tx.EnableAvailNotifications();
        }

        return pending;
    }

    /// <inheritdoc/>
    public override void DisableWakeups() => DisableWakeups(0);

    /// <inheritdoc/>
    public override void DisableWakeups(int worker)
    {
        if (_active is { } a)
        {
            var state = StateOf(worker);
            foreach (var pair in a.Pairs)
            {
                if (!state.Owns(pair))
                {
                    continue;
                }

                pair.Tx.DisableAvailNotifications();
                pair.TxKick?.TryConsume(out _);
            }
        }
    }

    /// <inheritdoc/>
    public override int GetWakeupDescriptors(Span<FileDescriptor> descriptors) => GetWakeupDescriptors(descriptors, 0);

    /// <inheritdoc/>
    public override int GetWakeupDescriptors(Span<FileDescriptor> descriptors, int worker)
    {
        var n = 0;
        if (_active is { } a)
        {
            var state = StateOf(worker);
            foreach (var pair in a.Pairs)
            {
                if (state.Owns(pair) && pair.TxKick is { } kick && n < descriptors.Length)
                {
                    descriptors[n++] = kick.Handle;
                }
            }
        }

        return n;
    }

    // ---- Control plane (vhost-user connection thread) ----------------------------------------

    // Internal so the forwarding fuzz target can attach rings without a socket.
    internal void OnQueueStarted(object session, VhostQueue queue)
    {
        lock (_gate)
        {
            if (queue.Index >= _queues.Length)
            {
                Say($"ignoring vring {queue.Index}: {QueuePairs} queue pair(s) are served");
                return;
            }

            if (!ReferenceEquals(_session, session))
            {
                _session = session;
                Array.Clear(_queues);
            }

            _queues[queue.Index] = queue;
            var number = queue.Index / 2;
            if (_queues[2 * number] is not { } rx || _queues[(2 * number) + 1] is not { } tx)
            {
                return;
            }

            if (_active is { } a)
            {
                if (Array.Exists(a.Pairs, p => p.Number == number))
                {
                    return;
                }

                // Another pair joins: a new attachment with it (release: complete before the worker sees it).
                _active = new Attachment([.. a.Pairs, new Pair(number, tx, rx)]);
                _status = StatusOf(_active);

                // Its worker may sleep on descriptors without this pair's kick.
                WakeDataPath();
                return;
            }

            if (number != 0)
            {
                // Waits for pair 0, which brings the link up and takes this pair along.
                return;
            }

            var pairs = new List<Pair>();
            for (var p = 0; p < QueuePairs; p++)
            {
                if (_queues[2 * p] is { } r && _queues[(2 * p) + 1] is { } t)
                {
                    pairs.Add(new Pair(p, t, r));
                }
            }

            var attachment = new Attachment([.. pairs]);
            Offloads = OffloadsOf(rx.Features);
            _status = StatusOf(attachment);

            // Release: the attachment is complete before a worker can see it.
            _active = attachment;
            SetLink(LinkState.Up, "front-end attached");
        }
    }

    private void OnQueueStopped(object session, VhostQueueEventArgs e)
    {
        var queue = e.Queue;
        lock (_gate)
        {
            if (!ReferenceEquals(_session, session) || queue.Index >= _queues.Length || !ReferenceEquals(_queues[queue.Index], queue))
            {
                return;
            }

            _queues[queue.Index] = null;
            var number = queue.Index / 2;
            var name = (queue.Index % 2 == 0 ? "receiveq" : "transmitq") + (number == 0 ? string.Empty : (number + 1).ToString(System.Globalization.CultureInfo.InvariantCulture));
            if (queue.Ring.IsBroken)
            {
                SayBroken(name, queue.Ring.BrokenReason);
            }

            var left = number == 0
                ? Detach(name + " stopped", e.StopTimeoutMilliseconds)
                : DetachPair(number, e.StopTimeoutMilliseconds);
            if (!left)
            {
                // The session breaks the ring and closes this front-end's connection.
                e.ReportNotStopped($"the worker of {Name} did not leave its round");
            }
        }
    }

    private void OnSessionEnded(object session, VhostUserError reason)
    {
        lock (_gate)
        {
            if (!ReferenceEquals(_session, session))
            {
                return;
            }

            Array.Clear(_queues);
            _session = null;
            Detach(reason.IsError ? $"front-end disconnected: {reason}" : "front-end disconnected");
            _status = Connect ? "connecting to a front-end" : "waiting for a front-end";
        }
    }

    // Caller holds _gate (only this port's control plane takes it; the worker never does). The
    // session frees the rings once we return: unpublish, then wait for the worker to leave the
    // round that may hold them. False when it did not in time: the memory lease then goes to a
    // thread that waits for the worker, so its round never reads unmapped memory.
    private bool Detach(string why, int timeoutMilliseconds = DefaultQuiesceMilliseconds)
    {
        if (_active is not { } a)
        {
            return true;
        }

        _active = null;
        var left = Release(a.Pairs, timeoutMilliseconds);
        _status = $"down: {why}";
        SetLink(LinkState.Down, why);
        return left;
    }

    // One pair other than 0 stops: the others run on, the link stays up.
    private bool DetachPair(int number, int timeoutMilliseconds)
    {
        if (_active is not { } a || Array.Find(a.Pairs, p => p.Number == number) is not { } gone)
        {
            return true;
        }

        _active = new Attachment([.. a.Pairs.Where(p => p.Number != number)]);
        _status = StatusOf(_active);
        return Release([gone], timeoutMilliseconds);
    }

    private bool Release(Pair[] pairs, int timeoutMilliseconds)
    {
        var left = WaitForDataPath(timeoutMilliseconds < 0 ? DefaultQuiesceMilliseconds : timeoutMilliseconds);
        if (left)
        {
            foreach (var pair in pairs)
            {
                pair.ReleaseMemory();
            }

            return true;
        }

        Say($"the data path did not let go of the rings within {timeoutMilliseconds} ms; the front-end is disconnected");
        var lingering = new Thread(() =>
        {
            while (!WaitForDataPath(1000))
            {
            }

            foreach (var pair in pairs)
            {
                pair.ReleaseMemory();
            }
        })
        { IsBackground = true, Name = $"{Name} release" };
        lingering.Start();
        return false;
    }

    /// <inheritdoc/>
    protected override void OnLanesAssigned(int workers)
    {
        _workers = LaneState.ForWorkers(LaneWorkers, workers, static lanes => new WorkerState(lanes));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private WorkerState StateOf(int worker) => LaneState.For(_workers, worker);

    private static string StatusOf(Attachment a)
    {
        var first = a.Pairs[0];
        var pairs = a.Pairs.Length == 1 ? string.Empty : $", {a.Pairs.Length} queue pairs";
        return $"front-end attached: {first.TxQueue.Format.Name} ring of {first.Tx.Size}, features 0x{(ulong)first.TxQueue.Features:x}, MRG_RXBUF {(first.Mergeable ? "on" : "off")}{pairs}";
    }

    private static PortOffloads OffloadsOf(VirtioFeatures features)
    {
        // What the driver takes on receive (5.1.6.4): GUEST_CSUM for partial checksums, GUEST_TSO4/6,
        // GUEST_ECN and GUEST_USO4 with GUEST_USO6 for GSO frames (a driver that took those posts
        // buffers for 64 KiB frames or merges them, 5.1.6.3.1).
        var o = PortOffloads.None;
        o |= (features & VirtioFeatures.NetGuestCsum) != 0 ? PortOffloads.Checksum : 0;
        o |= (features & VirtioFeatures.NetGuestTso4) != 0 ? PortOffloads.Tso4 : 0;
        o |= (features & VirtioFeatures.NetGuestTso6) != 0 ? PortOffloads.Tso6 : 0;
        o |= (features & VirtioFeatures.NetGuestEcn) != 0 ? PortOffloads.Ecn : 0;
        o |= (features & (VirtioFeatures.NetGuestUso4 | VirtioFeatures.NetGuestUso6)) == (VirtioFeatures.NetGuestUso4 | VirtioFeatures.NetGuestUso6) ? PortOffloads.Uso : 0;
        return o;
    }

    /// <inheritdoc/>
    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            // Ends the connection: its rings stop (raising the events above) before this returns.
            _backend?.Dispose();
            _backend = null;
        }
    }

    /// <summary>
    /// One worker's data-path state: the pairs it owns, and the attachment a round started with,
    /// so a stop in the middle of a round never strands what was popped (the control plane waits
    /// for the round). Touched by that worker only.
    /// </summary>
    private sealed class WorkerState(ulong pairs) : LaneState(pairs)
    {
        public Pair? Receiving { get; set; }

        public Attachment? Transmitting { get; set; }

        public int Transmitted { get; set; }

        public RingPosition[] TakePositions { get; } = new RingPosition[FrameBurst.MaxCapacity];

        public ChainToken[] ReleaseTokens { get; } = new ChainToken[FrameBurst.MaxCapacity];

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public bool Owns(Pair pair) => Owns(pair.Number);
    }

    /// <summary>The running queue pairs as the data path sees them: immutable, replaced whole when a pair joins or leaves. Pair 0 is always first.</summary>
    private sealed class Attachment(Pair[] pairs)
    {
        public Pair[] Pairs { get; } = pairs;
    }

    /// <summary>A started queue pair as the data path uses it. Immutable once published, but for <see cref="Prepare"/>.</summary>
    private sealed class Pair
    {
        private readonly IDisposable _txMemory;
        private readonly IDisposable _rxMemory;
        private bool _prepared;

        public Pair(int number, VhostQueue tx, VhostQueue rx)
        {
            Number = number;
            TxQueue = tx;
            RxQueue = rx;
            Tx = tx.Ring;
            Rx = rx.Ring;
            TxKick = tx.Kick;
            TxCall = tx.Call;
            RxCall = rx.Call;
            Mergeable = (rx.Features & VirtioFeatures.NetMergeRxBuffers) != 0;

            _txMemory = tx.LeaseMemory();
            _rxMemory = rx.LeaseMemory();
        }

        /// <summary>The pair's number: its receive queue is vring 2 x Number, its transmit queue the next.</summary>
        public int Number { get; }

        public VhostQueue TxQueue { get; }

        public VhostQueue RxQueue { get; }

        public IDeviceRing Tx { get; }

        public IDeviceRing Rx { get; }

        public EventFd? TxKick { get; }

        public EventFd? TxCall { get; }

        public EventFd? RxCall { get; }

        public bool Mergeable { get; }

        /// <summary>Lets the front-end's memory go, once the data path no longer reads it.</summary>
        public void ReleaseMemory()
        {
            _txMemory.Dispose();
            _rxMemory.Dispose();
        }

        /// <summary>On the worker, once: no kicks wanted while it polls (it asks before sleeping), none ever for receive buffers (a full receive queue drops, it is never waited for).</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public void Prepare()
        {
            if (!_prepared)
            {
                _prepared = true;
                Tx.DisableAvailNotifications();
                Rx.DisableAvailNotifications();
            }
        }
    }
}
