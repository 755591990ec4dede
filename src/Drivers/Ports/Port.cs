using System.Net.NetworkInformation;
using Rings.Linux.Plumbing;
using Rings.Linux.Runtime;

namespace Rings.Linux.Ports;

/// <summary>
/// One attachment point of a pipeline: a peer that frames come from and go to, in bursts. A
/// port kind is one subclass (vhost-user, virtio-user, tap, in-memory); <see cref="PortKinds"/>
/// maps its specification prefix to its constructor.
/// <para>
/// <b>Data path.</b> <see cref="Receive"/>, <see cref="Release"/>, <see cref="Transmit"/>,
/// <see cref="Flush()"/> and the wake-up members are called only by the worker that owns the port,
/// once per burst (a virtual call per burst, never per frame), and must not allocate, lock,
/// block or throw for anything a peer does. A port with several <see cref="Lanes"/> (queue pairs)
/// may be served by several workers at once, each owning some lanes (<see cref="LaneWorkers"/>):
/// it keeps its data-path state per worker, takes the worker from <see cref="FrameBurst.Worker"/>
/// or the worker argument of the overloads, and touches only the lanes that worker owns. In one polling round the worker calls, for this port
/// as the ingress: <c>Receive</c>, then (after the processor) <c>Transmit</c> + <c>Flush</c> on
/// each destination, then <c>Release</c>; as a destination, any number of <c>Transmit</c> calls
/// each followed by one <c>Flush</c>.
/// </para>
/// <para>
/// <b>Control plane.</b> Connections, queue starts and stops happen on other threads. Before a
/// port lets go of anything the data path may be touching (rings, guest memory, descriptors) it
/// unpublishes it (a volatile reference swap the data path reads once per call) and then calls
/// <see cref="WaitForDataPath"/>, which returns once the owning worker has finished the round it
/// was in. Link changes go through <see cref="SetLink"/>.
/// </para>
/// </summary>
public abstract class Port : IDisposable
{
    /// <summary>The default MTU (bytes of IP packet per Ethernet frame).</summary>
    public const int DefaultMtu = 1500;

    /// <summary>Ethernet header plus one VLAN tag: a frame may be this much longer than the MTU.</summary>
    public const int LinkHeaderBytes = 18;

    /// <summary>How long <see cref="WaitForDataPath"/> waits by default before it gives up.</summary>
    public const int DefaultQuiesceMilliseconds = 2000;

    private volatile int _link = (int)LinkState.Down;
    private volatile IPortOwner[]? _owners;
    private int[] _laneWorkers = [0];
    private volatile Diagnostics.PacketCapture? _capture;
    private int _mtu = DefaultMtu;

    /// <summary>Creates a port.</summary>
    /// <param name="kind">The kind, as in its specification prefix (for example <c>vhost-user</c>).</param>
    /// <param name="name">A name for tables and logs, usually the specification (for example <c>vhost-user:/run/vm1.sock</c>).</param>
    protected Port(string kind, string name)
    {
        ArgumentException.ThrowIfNullOrEmpty(kind);
        ArgumentException.ThrowIfNullOrEmpty(name);
        Kind = kind;
        Name = name;
    }

    /// <summary>Raised on a control thread when the link goes up or down.</summary>
    public event EventHandler<LinkChangedEventArgs>? LinkChanged;

    /// <summary>The kind (for example <c>vhost-user</c>, <c>tap</c>).</summary>
    public string Kind { get; }

    /// <summary>A name for tables and logs.</summary>
    public string Name { get; }

    /// <summary>The port's place in its pipeline (0 to 63), or -1 before it joins one. Bit <c>Index</c> of a <see cref="PortMask"/>.</summary>
    public int Index { get; internal set; } = -1;

    /// <summary>Whether the port can move frames now.</summary>
    public LinkState Link => (LinkState)_link;

    /// <summary>The MAC address of the port's own interface when it has one (a TAP device, the address a virtio peer was configured with); null otherwise.</summary>
    public PhysicalAddress? Mac { get; protected set; }

    /// <summary>
    /// The MTU: frames longer than <see cref="MaxFrameLength"/> that are not GSO frames are
    /// dropped on transmit as <see cref="DropReason.OverMtu"/>.
    /// </summary>
    public int Mtu
    {
        get => _mtu;
        protected set
        {
            ArgumentOutOfRangeException.ThrowIfLessThan(value, 68);
            ArgumentOutOfRangeException.ThrowIfGreaterThan(value, FrameBurst.MaxFrameLength - LinkHeaderBytes);
            _mtu = value;
        }
    }

    /// <summary>The longest frame (Ethernet bytes) the port transmits: <see cref="Mtu"/> plus an Ethernet header and a VLAN tag.</summary>
    public int MaxFrameLength => _mtu + LinkHeaderBytes;

    /// <summary>What the peer accepts on transmit beyond complete frames (partial checksums, segmentation); set when it is negotiated.</summary>
    public PortOffloads Offloads { get; protected set; }

    /// <summary>Frames, bytes and drops by reason.</summary>
    public PortCounters Counters { get; } = new();

    /// <summary>Where the port's control-plane events are logged (<see cref="Diagnostics.RingsEvents.PortEvent"/>, and its peer's connections); nothing by default. Set before <see cref="Open"/>.</summary>
    public Microsoft.Extensions.Logging.ILogger Logger { get; set; } = Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance;

    /// <summary>
    /// True when <see cref="Release"/> can give the last <see cref="FrameBurst.Returned"/> takes
    /// back to the peer untouched, to be received again later (a virtio ring rewinds its
    /// position). A port that cannot (a TAP device has already read them) returns false, and the
    /// worker never asks it to.
    /// </summary>
    public virtual bool CanReturn => false;

    /// <summary>
    /// Where the owning worker copies every frame received from and handed to the peer, or null.
    /// Set it while the port runs to start a capture; set it back to null and stop the pipeline
    /// (or wait for a round) before disposing the capture.
    /// </summary>
    public Diagnostics.PacketCapture? Capture
    {
        get => _capture;
        set => _capture = value;
    }

    /// <summary>
    /// The virtqueues the port drives now, for monitoring (<see cref="Diagnostics.RingsMetrics"/>):
    /// none for kinds without rings, none while no peer is attached. Read from any thread.
    /// </summary>
    public virtual IEnumerable<Diagnostics.PortQueue> Queues => [];

    /// <summary>A line about the port's current state for tables and logs (peer, queues, features).</summary>
    public virtual string Status => Link == LinkState.Up ? "up" : "down";

    /// <summary>
    /// Parts of the data path that different workers may serve at once: a virtio port's queue
    /// pairs (5.1.6.5.5), each with its own receive and transmit queue. 1 (the default) for a port
    /// one worker serves whole.
    /// </summary>
    public virtual int Lanes => 1;

    /// <summary>
    /// The worker that owns each lane (index: lane), as the pipeline dealt them; a lane's queues
    /// are touched by its owner only. All 0 outside a pipeline.
    /// </summary>
    public IReadOnlyList<int> LaneWorkers => _laneWorkers;

    /// <summary>The workers that serve the port (the owners of its lanes), set by the pipeline.</summary>
    internal IPortOwner[]? Owners
    {
        get => _owners;
        set => _owners = value;
    }

    /// <summary>
    /// The pipeline deals the lanes to workers (before its workers start): <paramref name="laneWorkers"/>[lane]
    /// is the lane's worker among <paramref name="workers"/>.
    /// </summary>
    internal void AssignLanes(int[] laneWorkers, int workers)
    {
        _laneWorkers = laneWorkers;
        OnLanesAssigned(workers);
    }

    /// <summary>
    /// Called once the pipeline has dealt the lanes (<see cref="LaneWorkers"/>), before any worker
    /// runs: a port with several lanes builds its per-worker state here.
    /// </summary>
    /// <param name="workers">Workers of the pipeline (worker indices are 0 to <paramref name="workers"/> - 1).</param>
    protected virtual void OnLanesAssigned(int workers)
    {
    }

    /// <summary>
    /// Creates what the port needs (listening socket, device, connection). Throws
    /// <see cref="IOException"/> or <see cref="ArgumentException"/> with a message a user can act
    /// on (for example "socket path already in use") and leaves nothing behind when it does.
    /// </summary>
    public virtual void Open()
    {
    }

    // ---- Data path (the owning worker only) ---------------------------------------------------

    /// <summary>
    /// Takes up to <see cref="FrameBurst.Room"/> frames from the peer into <paramref name="burst"/>
    /// (<see cref="FrameBurst.TryAddChain"/>, <see cref="FrameBurst.TryAdd(in Net.VirtioNetHeader, FrameSegment, ulong, bool)"/>).
    /// Never waits. The frames' memory stays the peer's until <see cref="Release"/>.
    /// </summary>
    /// <param name="burst">The burst to fill (already reset by the worker).</param>
    /// <returns>Takes made (frames and discarded takes); 0 when there was nothing.</returns>
    public abstract int Receive(FrameBurst burst);

    /// <summary>
    /// Gives back what <see cref="Receive"/> took into <paramref name="burst"/> (its
    /// <see cref="FrameBurst.Completions"/>), after the worker has transmitted its frames: the
    /// first <see cref="FrameBurst.Taken"/> - <see cref="FrameBurst.Returned"/> as consumed, the
    /// last <see cref="FrameBurst.Returned"/> (frames no destination had room for, only when
    /// <see cref="CanReturn"/>) untouched, to be received again. Publishes once and notifies the
    /// peer only if it asked.
    /// </summary>
    /// <param name="burst">The burst received earlier in the same round.</param>
    public abstract void Release(FrameBurst burst);

    /// <summary>
    /// Copies the frames <paramref name="frames"/> of <paramref name="burst"/> (indices, in order)
    /// to the peer. Never waits for room: returns how many of them, from the first, it consumed
    /// (handed over, or dropped and counted by the port for a reason of its own such as
    /// <see cref="DropReason.OverMtu"/> or <see cref="DropReason.LinkDown"/>); the caller counts
    /// the rest <see cref="DropReason.DestinationFull"/>. Counts what it hands over with
    /// <see cref="PortCounters.Transmitted"/>. What is written becomes visible at <see cref="Flush()"/>.
    /// </summary>
    /// <param name="burst">The burst holding the frames (from any port).</param>
    /// <param name="frames">Indices of the frames to send.</param>
    /// <returns>Frames consumed, from the start of <paramref name="frames"/>.</returns>
    public abstract int Transmit(FrameBurst burst, ReadOnlySpan<byte> frames);

    /// <summary>Publishes what <see cref="Transmit"/> wrote since the last flush, and notifies the peer only if it asked.</summary>
    public abstract void Flush();

    /// <summary>
    /// <see cref="Flush()"/> for what worker <paramref name="worker"/> transmitted (on the lanes it
    /// owns). A port with one lane flushes everything.
    /// </summary>
    /// <param name="worker">The worker.</param>
    public virtual void Flush(int worker) => Flush();

    /// <summary>
    /// True when worker <paramref name="worker"/> can transmit to the port now on a lane of its
    /// own; the worker that owns lane 0 always can (a port with one lane: its one worker). Read by
    /// that worker once per round; a worker that cannot hands its frames for the port to the
    /// owner of lane 0.
    /// </summary>
    /// <param name="worker">The worker.</param>
    /// <returns>Whether it transmits itself.</returns>
    public virtual bool TransmitsFrom(int worker) => true;

    /// <summary>
    /// False only when a <see cref="Transmit"/> now would certainly find no room (a virtio receive
    /// queue with no buffer posted); true otherwise, also when unsure. Read by the owning worker
    /// between rounds, so it is cheap: a worker holding frames for this port asks it before taking
    /// them again, instead of taking, refusing and giving them back every round.
    /// </summary>
    public virtual bool MayHaveRoom => true;

    /// <summary><see cref="MayHaveRoom"/> for the lanes worker <paramref name="worker"/> transmits on.</summary>
    /// <param name="worker">The worker.</param>
    /// <returns>False only when a transmit by that worker would certainly find no room.</returns>
    public virtual bool MayHaveRoomFor(int worker) => MayHaveRoom;

    /// <summary>
    /// Before the worker sleeps: asks the peer for a notification when frames arrive, then (after a
    /// full fence) checks again. Returns true when frames are already waiting (the worker must not
    /// sleep). A port with nothing to wait on returns false.
    /// </summary>
    /// <returns>True when there is work.</returns>
    public virtual bool EnableWakeups() => false;

    /// <summary><see cref="EnableWakeups()"/> for the lanes worker <paramref name="worker"/> owns.</summary>
    /// <param name="worker">The worker.</param>
    /// <returns>True when there is work.</returns>
    public virtual bool EnableWakeups(int worker) => EnableWakeups();

    /// <summary>After the worker wakes (and when it starts polling): stops asking for notifications and consumes any that are pending.</summary>
    public virtual void DisableWakeups()
    {
    }

    /// <summary><see cref="DisableWakeups()"/> for the lanes worker <paramref name="worker"/> owns.</summary>
    /// <param name="worker">The worker.</param>
    public virtual void DisableWakeups(int worker) => DisableWakeups();

    /// <summary>
    /// The descriptors that become readable when this port has work (kick eventfds, a TAP
    /// descriptor). A blocking worker polls the descriptors of all its ports at once.
    /// </summary>
    /// <param name="descriptors">Where to write them.</param>
    /// <returns>How many were written (at most the span's length).</returns>
    public virtual int GetWakeupDescriptors(Span<FileDescriptor> descriptors) => 0;

    /// <summary><see cref="GetWakeupDescriptors(Span{FileDescriptor})"/> of the lanes worker <paramref name="worker"/> owns.</summary>
    /// <param name="descriptors">Where to write them.</param>
    /// <param name="worker">The worker.</param>
    /// <returns>How many were written.</returns>
    public virtual int GetWakeupDescriptors(Span<FileDescriptor> descriptors, int worker) => GetWakeupDescriptors(descriptors);

    // ---- Control plane ---------------------------------------------------------------------

    /// <summary>
    /// After unpublishing state the data path may hold: waits until every worker serving the port
    /// has left the round it was in, so nothing of the old state is touched any more. Returns at
    /// once when no worker owns the port.
    /// </summary>
    /// <param name="timeoutMilliseconds">The deadline.</param>
    /// <returns>False when the worker did not get out in time (it is stuck; the caller must not free what it may touch).</returns>
    protected bool WaitForDataPath(int timeoutMilliseconds = DefaultQuiesceMilliseconds)
    {
        // Store-load: the caller's unpublish must be visible before the worker's round marker is
        // read (the worker fences between raising its marker and reading the published state).
        Interlocked.MemoryBarrier();
        if (_owners is not { } owners)
        {
            return true;
        }

        var deadline = Environment.TickCount64 + timeoutMilliseconds;
        foreach (var owner in owners)
        {
            if (!owner.WaitQuiescent((int)Math.Max(0, deadline - Environment.TickCount64)))
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>Logs a control-plane event of the port to <see cref="Logger"/>, with the port's name.</summary>
    /// <param name="line">The event.</param>
    protected void Say(string line) => Diagnostics.RingsLog.PortEvent(Logger, Name, line);

    /// <summary>Logs that one of the port's queues was found broken (once per break).</summary>
    /// <param name="queue">The queue's name.</param>
    /// <param name="reason">Why.</param>
    protected void SayBroken(string queue, BrokenReason reason) => Diagnostics.RingsLog.QueueBroken(Logger, Name, queue, reason);

    /// <summary>Wakes the workers serving the port if they sleep (new descriptors to poll, state to pick up).</summary>
    protected void WakeDataPath()
    {
        if (_owners is { } owners)
        {
            foreach (var owner in owners)
            {
                owner.Wake();
            }
        }
    }

    /// <summary>Sets the link state and, when it changed, raises <see cref="LinkChanged"/> on the calling thread.</summary>
    /// <param name="state">The new state.</param>
    /// <param name="reason">Why, for logs.</param>
    protected void SetLink(LinkState state, string reason)
    {
        if (Interlocked.Exchange(ref _link, (int)state) == (int)state)
        {
            return;
        }

        Interlocked.Increment(ref Counters.LinkChanges);
        LinkChanged?.Invoke(this, new LinkChangedEventArgs(state, reason));
        WakeDataPath();
    }

    /// <summary>Closes the port and removes what <see cref="Open"/> created.</summary>
    public void Dispose()
    {
        Dispose(true);
        GC.SuppressFinalize(this);
    }

    /// <summary>Releases the port's resources.</summary>
    /// <param name="disposing">True from <see cref="Dispose()"/>.</param>
    protected virtual void Dispose(bool disposing)
    {
    }

    /// <inheritdoc/>
    public override string ToString() => Name;
}

/// <summary>The worker that owns a port, as the port's control plane sees it.</summary>
internal interface IPortOwner
{
    /// <summary>Waits until the worker has left the polling round it is in (at once when it is outside one).</summary>
    /// <param name="timeoutMilliseconds">The deadline.</param>
    /// <returns>False on timeout.</returns>
    bool WaitQuiescent(int timeoutMilliseconds);

    /// <summary>Wakes the worker if it sleeps.</summary>
    void Wake();
}
