using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Rings.Linux.Driver;
using Rings.Linux.Net;
using Rings.Linux.Plumbing;
using Rings.Linux.Runtime;

namespace Rings.Linux.Ports;

/// <summary>
/// The driver side of a virtio-net device over vhost-user: the port connects to a vhost-user
/// back-end's socket (DPDK's <c>net_vhost</c>, another <c>rings</c> process), owns the shared
/// memory and drives one queue pair through <see cref="VirtioNetDriver"/>, or N with <c>queues=N</c>.
/// <para>
/// Frames from the back-end are taken in place from used receive buffers, in this process's own
/// memory, and the buffers are posted again at <see cref="Release"/>; frames for the back-end are
/// copied into transmit buffers and published once per burst at <see cref="Flush()"/>, which kicks
/// only when the device asked (2.7.13, 2.8.22). MRG_RXBUF is not negotiated, so every frame lies
/// in one receive buffer sized for the MTU (5.1.6.3.1). By default no offloads are negotiated: the
/// back-end sends complete frames and gets complete frames (the runtime completes checksums and
/// segments GSO frames first). With <c>offload=on</c> the port acks CSUM, HOST_TSO4/6, HOST_ECN and
/// HOST_USO where the back-end offers them and hands it partial checksums and GSO frames of up
/// to 64 KiB as they are (transmit buffers are then 64 KiB each); it still takes no GUEST_* offload.
/// </para>
/// <para>
/// With <c>queues=N</c> (above 1) the port negotiates VIRTIO_NET_F_MQ and the vhost-user MQ
/// protocol feature and drives N pairs (5.1.6.5.5); a back-end that offers fewer is refused at
/// <see cref="Open"/>. Each pair is a lane (<see cref="Port.Lanes"/>) that the pipeline gives to
/// one worker: a worker receives from its own pairs only, the next one in turn each round, and
/// transmits each frame on one of its own pairs chosen by the frame's flow hash
/// (<see cref="FlowHash"/>), so a flow stays on one pair and in order. All N pairs run as soon as
/// the port is connected (the driver side enables them), so a worker with a pair of the port
/// always transmits itself.
/// </para>
/// <para>
/// A back-end that goes away (its end of the socket closes) is the link going down. With
/// <c>reconnect=on</c> (the default with one pair) the port then connects again every second and, once the
/// back-end is back, resumes from the rings in its own memory (<see cref="VhostUserFrontend.Reconnect()"/>,
/// the inflight region handed back when the back-end offers one) and the link comes up again.
/// With several pairs reconnecting is off, and asking for it is refused.
/// </para>
/// </summary>
public sealed unsafe class VirtioUserPort : Port
{
    /// <summary>How often the control connection is checked for a back-end that went away.</summary>
    public const int MonitorMilliseconds = 200;

    /// <summary>The most queue pairs a port drives.</summary>
    public const int MaxQueuePairs = VhostUserPort.MaxQueuePairs;

    private readonly object _gate = new();
    private readonly VhostUserFrontendOptions _options;
    private readonly int _maxTransmitFrame;
    private volatile VirtioNetDriver[]? _drivers;   // by pair; published whole, null while not connected
    private VhostUserFrontend? _frontend;
    private VirtioNetDriver[]? _detached;            // while the back-end is away: kept for the reconnect
    private long _nextAttempt;
    private readonly bool _reconnect;
    private readonly bool _offloads;
    private Timer? _monitor;
    private string _status = "not connected";

    // Data path only: each worker's own state (index: worker), read and written by that worker
    // alone. Replaced whole before the workers start (OnLanesAssigned).
    private WorkerState[] _workers;

    /// <summary>The features <c>offload=on</c> acks where the back-end offers them: what the device takes from the driver (5.1.3).</summary>
    public const VirtioFeatures OffloadFeatures =
        VirtioFeatures.NetCsum | VirtioFeatures.NetHostTso4 | VirtioFeatures.NetHostTso6 | VirtioFeatures.NetHostEcn | VirtioFeatures.NetHostUso;

    /// <summary>Creates the port from <c>virtio-user:PATH[,mtu=N][,queue-size=N][,queues=N][,ring=split|packed][,reconnect=on|off][,offload=on|off][,hugepages=auto|on|off]</c> (it connects in <see cref="Open"/>).</summary>
    /// <param name="spec">The specification.</param>
    /// <exception cref="ArgumentException">An option is wrong, or <c>reconnect=on</c> is asked with several queue pairs.</exception>
    public VirtioUserPort(PortSpec spec)
        : base("virtio-user", spec?.Text ?? throw new ArgumentNullException(nameof(spec)))
    {
        spec.RejectUnknown("mtu", "queue-size", "queues", "ring", "reconnect", "offload", "hugepages");
        _offloads = spec.GetOnOff("offload", false);
        QueuePairs = spec.GetInt("queues", 1, 1, MaxQueuePairs);
        _reconnect = spec.GetOnOff("reconnect", QueuePairs == 1);
        if (_reconnect && QueuePairs > 1)
        {
            throw new ArgumentException($"port '{spec.Text}': reconnect=on works with one queue pair; with queues={QueuePairs} leave reconnect out or give reconnect=off");
        }

        _workers = [new WorkerState(LaneState.All(QueuePairs))];
        SocketPath = spec.Target;
        Mtu = spec.GetInt("mtu", DefaultMtu, 68, ushort.MaxValue - VirtioNetHeader.Size - LinkHeaderBytes);
        var features = VirtioFeatures.Version1 | VirtioFeatures.EventIndex | VirtioFeatures.IndirectDescriptors | (_offloads ? OffloadFeatures : 0);
        var ring = spec.Options.TryGetValue("ring", out var r) ? r : "split";
        features |= ring switch
        {
            "split" => 0,
            "packed" => VirtioFeatures.RingPacked,
            _ => throw new ArgumentException($"port '{spec.Text}': ring must be split or packed, not '{ring}'"),
        };
        var format = RingFormat.Of(features);
        var size = spec.GetInt("queue-size", 256, 2, RingFormat.MaxSize);
        if (!format.IsValidSize(size))
        {
            throw new ArgumentException($"port '{spec.Text}': a {format} queue size is {format.SizeRule}, not {size}");
        }

        // A GSO frame may be up to 64 KiB: every transmit buffer must hold one (no chaining of buffers here).
        _maxTransmitFrame = _offloads ? MaxTransmitFrame : MaxFrameLength;
        var huge = spec.Options.TryGetValue("hugepages", out var h) ? h : "auto";
        _options = new VhostUserFrontendOptions
        {
            SocketPath = SocketPath,
            QueueSize = size,
            QueuePairs = QueuePairs,
            MemoryBytes = Math.Max(new VhostUserFrontendOptions().MemoryBytes, MemoryFor(QueuePairs, size, _maxTransmitFrame)),
            Features = features,
            HugePages = huge switch
            {
                "auto" => HugePages.Auto,
                "on" => HugePages.On,
                "off" => HugePages.Off,
                _ => throw new ArgumentException($"port '{spec.Text}': hugepages must be auto, on or off, not '{huge}'"),
            },
        };
    }

    /// <summary>The back-end's socket path.</summary>
    public string SocketPath { get; }

    /// <summary>Queue pairs driven (<c>queues=</c>, 1 by default): each a lane the pipeline gives to one worker.</summary>
    public int QueuePairs { get; }

    /// <inheritdoc/>
    public override int Lanes => QueuePairs;

    /// <summary>The driver of pair 0 while connected (features, rings and their counters).</summary>
    public VirtioNetDriver? Driver => _drivers?[0];

    /// <summary>The drivers of every pair while connected (index: pair), else empty.</summary>
    public IReadOnlyList<VirtioNetDriver> Drivers => _drivers ?? [];

    /// <inheritdoc/>
    public override IEnumerable<Diagnostics.PortQueue> Queues =>
        _drivers is { } drivers
            ? drivers.SelectMany(d => new[] { Diagnostics.PortQueue.Of(Diagnostics.PortQueue.Label("receiveq", d.Pair), d.Receive.Ring!), Diagnostics.PortQueue.Of(Diagnostics.PortQueue.Label("transmitq", d.Pair), d.Transmit.Ring!) })
            : [];

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

    /// <inheritdoc/>
    public override void Open()
    {
        lock (_gate)
        {
            if (_drivers is not null || _monitor is not null)
            {
                throw new InvalidOperationException($"{Name} is already open");
            }

            _options.Logger = Logger;
            VhostUserFrontend frontend;
            VirtioNetDriver[] drivers;
            try
            {
                // Fewer pairs offered than asked (GET_QUEUE_NUM, VIRTIO_NET_F_MQ) fails here with the numbers.
                frontend = VhostUserFrontend.Connect(_options);
            }
            catch (Exception e) when (e is IOException or System.Net.Sockets.SocketException or InvalidOperationException or ArgumentException)
            {
                throw new IOException($"{Name}: cannot set up with a vhost-user back-end at {SocketPath}: {e.Message}", e);
            }

            try
            {
                drivers = VirtioNetDriver.ForEachPair(frontend, _maxTransmitFrame);
            }
            catch (ArgumentException e)
            {
                frontend.Dispose();
                throw new IOException($"{Name}: cannot lay out the buffers: {e.Message}", e);
            }

            var features = frontend.Features;
            Offloads = OffloadsOf(features);
            var memory = frontend.Memory;
            var pairs = QueuePairs == 1 ? string.Empty : $", {QueuePairs} queue pairs of {frontend.BackendQueuePairs}";
            _status = $"connected: {RingFormat.Of(features)} ring of {drivers[0].Receive.Size}, features 0x{(ulong)features:x}, memory in {memory.PageBytes >> 10} KiB pages{pairs}";
            if (memory.HugePageFallback is { } fallback)
            {
                Say(fallback);
            }

            _frontend = frontend;

            // Release: the drivers are complete before a worker can see them.
            _drivers = drivers;
            _monitor = new Timer(static state => ((VirtioUserPort)state!).CheckBackend(), this, MonitorMilliseconds, MonitorMilliseconds);
            Say(_status);
            SetLink(LinkState.Up, "connected to the back-end");
        }
    }

    // The largest frame one transmit buffer holds behind its header (a descriptor's length is 32 bits,
    // but a GSO frame never exceeds an IP packet of 64 KiB plus its link header).
    private const int MaxTransmitFrame = ushort.MaxValue - VirtioNetHeader.Size;

    // Memory for the rings and every pair's buffers (VirtioNetDriver lays them out): a transmit
    // and a receive buffer per descriptor, rounded up to cache lines, plus a bound on the ring
    // areas (16 bytes a descriptor and 8 a used element, 2.7 and 2.8, with alignment) and 1 MiB
    // to spare. Only above the default does it change anything.
    private static ulong MemoryFor(int pairs, int queueSize, int maxTransmitFrame)
    {
        static ulong Align(int bytes) => (ulong)((bytes + 63) / 64 * 64);
        var buffers = Align(VirtioNetHeader.Size + maxTransmitFrame) + Align(VirtioNetHeader.Size + Math.Max(maxTransmitFrame, VirtioNetDriver.DefaultMaxFrameSize));
        var rings = 2 * ((32UL * (ulong)queueSize) + 8192);
        var total = ((ulong)pairs * (((ulong)queueSize * buffers) + rings)) + (1UL << 20);
        return (total + (1UL << 20) - 1) & ~((1UL << 20) - 1);
    }

    // What the device takes from this driver beyond complete frames (5.1.6.2): CSUM for partial
    // checksums, HOST_TSO4/6, HOST_ECN and HOST_USO for GSO frames.
    private static PortOffloads OffloadsOf(VirtioFeatures features)
    {
        var o = PortOffloads.None;
        o |= (features & VirtioFeatures.NetCsum) != 0 ? PortOffloads.Checksum : 0;
        o |= (features & VirtioFeatures.NetHostTso4) != 0 ? PortOffloads.Tso4 : 0;
        o |= (features & VirtioFeatures.NetHostTso6) != 0 ? PortOffloads.Tso6 : 0;
        o |= (features & VirtioFeatures.NetHostEcn) != 0 ? PortOffloads.Ecn : 0;
        o |= (features & VirtioFeatures.NetHostUso) != 0 ? PortOffloads.Uso : 0;
        return o;
    }

    // ---- Data path -------------------------------------------------------------------------

    /// <inheritdoc/>
    public override int Receive(FrameBurst burst)
    {
        var drivers = _drivers;
        if (drivers is null)
        {
            return 0;
        }

        // One pair per round, the next one of this worker's in turn that has frames: a burst comes
        // from one receive queue, so Release gives the buffers back to that queue alone.
        var state = StateOf(burst.Worker);
        var owned = state.Owned;
        for (var n = 0; n < owned.Length; n++)
        {
            var driver = drivers[owned[(state.NextLane + n) % owned.Length]];
            var taken = Receive(driver, burst);
            if (taken > 0)
            {
                state.NextLane = (state.NextLane + n + 1) % owned.Length;
                state.Receiving = driver;
                return taken;
            }
        }

        return 0;
    }

    private static int Receive(VirtioNetDriver driver, FrameBurst burst)
    {
        var path = driver.Path;
        var taken = 0;
        while (burst.Room > 0 && path.TryReceiveInPlace(out var frame))
        {
            // The device wrote the header right before the frame, in the same buffer (5.1.6.3.1, no MRG_RXBUF).
            var data = frame.Data;
            var start = (byte*)Unsafe.AsPointer(ref MemoryMarshal.GetReference(data));
            VirtioNetHeader.TryRead(new ReadOnlySpan<byte>(start - VirtioNetHeader.Size, VirtioNetHeader.Size), out var header);
            header.NumBuffers = 0;
            burst.TryAdd(header, new FrameSegment(start, data.Length), (ulong)frame.Slot, isPrivate: true);
            taken++;
        }

        return taken;
    }

    /// <inheritdoc/>
    public override void Release(FrameBurst burst)
    {
        var state = StateOf(burst.Worker);
        var driver = state.Receiving;
        state.Receiving = null;
        if (driver is null || burst.Taken == 0)
        {
            return;
        }

        var path = driver.Path;
        foreach (var slot in burst.Completions)
        {
            path.Release(new ReceivedFrame((int)slot, default));
        }

        if (path.RefillReceive())
        {
            driver.Receive.Kick.Signal();
        }
    }

    /// <inheritdoc/>
    public override int Transmit(FrameBurst burst, ReadOnlySpan<byte> frames)
    {
        var state = StateOf(burst.Worker);
        var counters = Counters.For(burst.Worker);
        var drivers = state.Transmitting ??= _drivers;
        var owned = state.Owned;
        if (drivers is null || owned.Length == 0)
        {
            counters.Count(DropReason.LinkDown, frames.Length);
            return frames.Length;
        }

        // Every pair's buffers hold the same frames (one layout for all).
        var maxFrameSize = drivers[owned[0]].Path.MaxFrameSize;
        var maxLength = Math.Min(MaxFrameLength, maxFrameSize);
        var sent = 0;
        long bytes = 0;
        var k = 0;
        for (; k < frames.Length; k++)
        {
            int frame = frames[k];
            var length = burst.Length(frame);
            var header = burst.Header(frame);
            if ((length > maxLength && header.GsoType == VirtioNetHeader.GsoNone) || length > maxFrameSize)
            {
                counters.Count(DropReason.OverMtu);
                continue;
            }

            // A driver sets no flag but NEEDS_CSUM (5.1.6.2.1); the worker left a request in the
            // header only where this port's device took it (Offloads).
            header.Flags &= VirtioNetHeader.FlagNeedsCsum;

            // This worker's pair for the frame's flow: one flow, one pair, in order (5.1.6.5.5).
            var pair = owned.Length == 1 ? owned[0] : owned[FlowHash.PairOf(FlowHash.OfFrame(burst.Head(frame)), owned.Length)];
            var path = drivers[pair].Path;
            if (!path.TryLeaseTransmit(out var lease))
            {
                // No free transmit buffer: the back-end has not finished with enough yet.
                break;
            }

            burst.CopyTo(frame, lease.Frame[..length]);
            if (!path.Submit(lease, length, header))
            {
                // The ring is broken (the device broke a rule): nothing more goes out.
                counters.Count(DropReason.LinkDown, frames.Length - k);
                k = frames.Length;
                break;
            }

            state.Submitted |= 1UL << pair;
            sent++;
            bytes += length;
        }

        counters.Transmitted(sent, bytes);
        return k;
    }

    /// <inheritdoc/>
    public override void Flush() => Flush(0);

    /// <inheritdoc/>
    public override void Flush(int worker)
    {
        var state = StateOf(worker);
        var drivers = state.Transmitting;
        state.Transmitting = null;
        var submitted = state.Submitted;
        state.Submitted = 0;
        if (drivers is null)
        {
            return;
        }

        // Only the pairs this round submitted on: one publication and at most one kick each.
        while (submitted != 0)
        {
            var pair = System.Numerics.BitOperations.TrailingZeroCount(submitted);
            submitted &= submitted - 1;
            var driver = drivers[pair];
            if (driver.Path.FlushTransmit())
            {
                driver.Transmit.Kick.Signal();
            }
        }
    }

    /// <inheritdoc/>
    public override bool TransmitsFrom(int worker)
    {
        // Every pair runs while connected: a worker owning one transmits itself; the home worker
        // also while down (it counts the frames link-down).
        var state = StateOf(worker);
        return state.Home || (_drivers is not null && state.Owned.Length > 0);
    }

    /// <inheritdoc/>
    public override bool EnableWakeups() => EnableWakeups(0);

    /// <inheritdoc/>
    public override bool EnableWakeups(int worker)
    {
        if (_drivers is not { } drivers)
        {
            return false;
        }

        var pending = false;
        foreach (var pair in StateOf(worker).Owned)
        {
            pending |= drivers[pair].Receive.Ring!.EnableUsedNotifications();
            pending |= drivers[pair].Path.HasPendingReceive;
        }

        return pending;
    }

    /// <inheritdoc/>
    public override void DisableWakeups() => DisableWakeups(0);

    /// <inheritdoc/>
    public override void DisableWakeups(int worker)
    {
        if (_drivers is { } drivers)
        {
            foreach (var pair in StateOf(worker).Owned)
            {
                var driver = drivers[pair];
                driver.Receive.Ring!.DisableUsedNotifications();
                driver.Receive.Call.TryConsume(out _);
            }
        }
    }

    /// <inheritdoc/>
    public override int GetWakeupDescriptors(Span<FileDescriptor> descriptors) => GetWakeupDescriptors(descriptors, 0);

    /// <inheritdoc/>
    public override int GetWakeupDescriptors(Span<FileDescriptor> descriptors, int worker)
    {
        var n = 0;
        if (_drivers is { } drivers)
        {
            foreach (var pair in StateOf(worker).Owned)
            {
                if (n < descriptors.Length)
                {
                    descriptors[n++] = drivers[pair].Receive.Call.Handle;
                }
            }
        }

        return n;
    }

    /// <inheritdoc/>
    protected override void OnLanesAssigned(int workers)
    {
        _workers = LaneState.ForWorkers(LaneWorkers, workers, static lanes => new WorkerState(lanes));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private WorkerState StateOf(int worker) => LaneState.For(_workers, worker);

    // ---- Control plane ---------------------------------------------------------------------

    /// <summary>On the monitor's timer thread: a closed control connection is the back-end gone; with reconnect on, try to get it back.</summary>
    private void CheckBackend()
    {
        lock (_gate)
        {
            if (_drivers is { } drivers && Link == LinkState.Up && !_frontend!.IsConnected)
            {
                _status = "down: the back-end went away";
                Say("the back-end went away");
                SetLink(LinkState.Down, "back-end disconnected");
                if (!_reconnect)
                {
                    // The memory and rings are ours and stay mapped until the port closes: the data
                    // path may go on touching them harmlessly; it only stops getting anything.
                    return;
                }

                // The reconnect rewrites ring state: the data path lets go of the drivers first.
                _drivers = null;
                if (!WaitForDataPath())
                {
                    Say($"the data path did not let go of the rings within {DefaultQuiesceMilliseconds} ms; not reconnecting");
                    return;
                }

                _detached = drivers;
                _nextAttempt = 0;
            }

            if (_detached is { } detached && Environment.TickCount64 >= _nextAttempt)
            {
                var frontend = _frontend!;
                try
                {
                    frontend.Reconnect();
                }
                catch (IOException)
                {
                    // VhostUserException included: not back yet (or refusing); try again in a second.
                    _nextAttempt = Environment.TickCount64 + 1000;
                    return;
                }

                // A back-end that sleeps until kicked learns at once that buffers wait.
                foreach (var driver in detached)
                {
                    driver.Transmit.Kick.Signal();
                    driver.Receive.Kick.Signal();
                }

                _detached = null;
                _status = $"connected again ({frontend.Reconnects} reconnect(s)){(frontend.HasInflightRegion ? ", inflight region handed back" : string.Empty)}";
                Say(_status);

                // Release: the reconnected drivers are complete before a worker can see them.
                _drivers = detached;
                SetLink(LinkState.Up, "reconnected to the back-end");
            }
        }
    }

    /// <inheritdoc/>
    protected override void Dispose(bool disposing)
    {
        lock (_gate)
        {
            _monitor?.Dispose();
            _monitor = null;
            if (_detached is { } detached)
            {
                _detached = null;
                Close(detached);
                return;
            }

            var drivers = _drivers;
            if (drivers is null)
            {
                return;
            }

            // Unpublish, then let the workers leave the round that may hold the rings.
            _drivers = null;
            if (!WaitForDataPath())
            {
                Say($"the data path did not let go of the rings within {DefaultQuiesceMilliseconds} ms; the memory is kept");
                return;
            }

            Close(drivers);
            _status = "closed";
            SetLink(LinkState.Down, "closed");
        }
    }

    // Caller holds _gate. The drivers share the front-end (and its memory), which goes last.
    private void Close(VirtioNetDriver[] drivers)
    {
        foreach (var driver in drivers)
        {
            driver.Dispose();
        }

        _frontend?.Dispose();
        _frontend = null;
    }

    /// <summary>
    /// One worker's data-path state: its pairs, the pair a round received from and the drivers it
    /// transmitted with, so a detach in the middle of a round never strands what was taken or
    /// submitted. Touched by that worker only.
    /// </summary>
    private sealed class WorkerState(ulong pairs) : LaneState(pairs)
    {
        public VirtioNetDriver? Receiving { get; set; }

        public VirtioNetDriver[]? Transmitting { get; set; }

        /// <summary>Bit n: this round submitted frames on pair n (published at Flush).</summary>
        public ulong Submitted { get; set; }
    }
}
