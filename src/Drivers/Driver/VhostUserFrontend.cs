using Rings.Linux.Plumbing;
using Rings.Linux.VhostUser;
using Rings.Memory;
using static Rings.Linux.VhostUser.VhostUserErrorCode;

namespace Rings.Linux.Driver;

/// <summary>What a vhost-user front-end asks for.</summary>
public sealed class VhostUserFrontendOptions
{
    /// <summary>Path of the back-end's socket.</summary>
    public string? SocketPath { get; set; }

    /// <summary>Bytes of shared memory (rings and buffers), default 64 MiB.</summary>
    public ulong MemoryBytes { get; set; } = 64UL << 20;

    /// <summary>
    /// Whether the shared memory comes from 2 MiB hugetlb pages (<see cref="Plumbing.HugePages"/>);
    /// off by default. With hugepages, <see cref="MemoryBytes"/> is rounded up to whole 2 MiB pages;
    /// <see cref="VhostUserFrontend.Memory"/> tells the page size used and, with Auto, why it fell back.
    /// </summary>
    public HugePages HugePages { get; set; } = HugePages.Off;

    /// <summary>Guest-physical address of the first byte of memory (descriptors carry these).</summary>
    public ulong GuestPhysicalBase { get; set; }

    /// <summary>Queue pairs to set up (two vrings each: receive, transmit).</summary>
    public int QueuePairs { get; set; } = 1;

    /// <summary>Descriptors per ring.</summary>
    public int QueueSize { get; set; } = 256;

    /// <summary>
    /// Device features the driver can use; the negotiated set is these and what the back-end offers.
    /// RING_PACKED among them asks for packed rings (<see cref="RingFormat.Of"/>), which the back-end must offer.
    /// </summary>
    public VirtioFeatures Features { get; set; } =
        VirtioFeatures.Version1 | VirtioFeatures.EventIndex | VirtioFeatures.IndirectDescriptors | VirtioFeatures.NetMergeRxBuffers;

    /// <summary>Protocol features the front-end can use.</summary>
    public VhostUserProtocolFeatures ProtocolFeatures { get; set; } =
        VhostUserProtocolFeatures.Multiqueue | VhostUserProtocolFeatures.ReplyAck | VhostUserProtocolFeatures.Status |
        VhostUserProtocolFeatures.ConfigureMemSlots | VhostUserProtocolFeatures.InflightShmfd;

    /// <summary>Send the memory with ADD_MEM_REG when CONFIGURE_MEM_SLOTS is negotiated (else SET_MEM_TABLE).</summary>
    public bool UseAddMemReg { get; set; } = true;

    /// <summary>How long to wait for each reply.</summary>
    public int ReplyTimeoutMilliseconds { get; set; } = 5000;

    /// <summary>Builds the driver rings (<see cref="RingFormat.DriverFactory"/> by default).</summary>
    public DriverRingFactory RingFactory { get; set; } = RingFormat.DriverFactory;

    /// <summary>Where the negotiation is logged (<see cref="Diagnostics.RingsEvents.Negotiated"/>); nothing by default.</summary>
    public Microsoft.Extensions.Logging.ILogger Logger { get; set; } = Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance;
}

/// <summary>One ring as the front-end set it up.</summary>
public sealed class FrontendQueue
{
    private IDriverRing? _ring;
    private volatile bool _deviceBroken;

    internal FrontendQueue(int index, int size, RingFormat format, RingAreas guestAreas, RingAreas userAreas, EventFd kick, EventFd call, EventFd error)
    {
        Index = index;
        Size = size;
        Format = format;
        GuestAreas = guestAreas;
        UserAreas = userAreas;
        Kick = kick;
        Call = call;
        Error = error;
    }

    /// <summary>The vring index.</summary>
    public int Index { get; }

    /// <summary>Descriptors in the ring.</summary>
    public int Size { get; }

    /// <summary>The ring format.</summary>
    public RingFormat Format { get; }

    /// <summary>The ring areas, guest-physical.</summary>
    public RingAreas GuestAreas { get; }

    /// <summary>The ring areas in this process's address space (what SET_VRING_ADDR carries).</summary>
    public RingAreas UserAreas { get; }

    /// <summary>The driver side of the ring.</summary>
    public IDriverRing Ring
    {
        get => _ring ?? throw new InvalidOperationException($"vring {Index} has no driver ring yet");
        internal set => _ring = value;
    }

    /// <summary>
    /// The vhost-user name of the ring for messages: <c>receiveq1 (vring 0)</c>,
    /// <c>transmitq1 (vring 1)</c>, ... (virtio 1.2 section 5.1.2).
    /// </summary>
    public string Name => $"{(Index % 2 == 0 ? "receiveq" : "transmitq")}{(Index / 2) + 1} (vring {Index})";

    /// <summary>The doorbell this side rings when the device asked for a kick.</summary>
    public EventFd Kick { get; }

    /// <summary>The doorbell the device rings.</summary>
    public EventFd Call { get; }

    /// <summary>The doorbell the device rings when it finds the ring broken (SET_VRING_ERR).</summary>
    public EventFd Error { get; }

    /// <summary>
    /// True once the device said it found the ring broken (its error doorbell rang): it will use no
    /// more buffers until the device is reset. See <see cref="VhostUserFrontend.QueueBroken"/>.
    /// </summary>
    public bool DeviceBroken
    {
        get => _deviceBroken;
        internal set => _deviceBroken = value;
    }

    /// <summary>
    /// Why the ring stopped, in words, or null while it works: the device's report, or the rule the
    /// device broke as this side's ring found it (<see cref="IDriverRing.BrokenReason"/>).
    /// </summary>
    public string? BrokenDescription =>
        _deviceBroken ? $"the device reported {Name} broken (vring error eventfd); it needs a reset"
        : _ring is { IsBroken: true } r ? $"the device broke a rule on {Name}: {r.BrokenReason}; it needs a reset"
        : null;

    /// <summary>True while the back-end runs the ring.</summary>
    public bool Running { get; internal set; }

    /// <summary>The position the back-end reported when the ring was last stopped.</summary>
    public RingPosition? SavedPosition { get; internal set; }

    internal uint Base { get; set; }
}

/// <summary>
/// The guest side of vhost-user: owns one shared memory file, lays out the rings and a buffer
/// area in it, connects to a back-end, negotiates, sends the memory table and the ring setup
/// with kick and call doorbells, and can stop a ring and restart it from the saved base.
/// Memory layout: rings from offset 0 (each page-aligned), then the buffer area to the end.
/// Every failure of the back-end or the connection is a <see cref="VhostUserException"/> whose
/// code tells a refused request from a dead connection.
/// </summary>
public sealed class VhostUserFrontend : IDisposable
{
    private readonly VhostUserFrontendOptions _options;
    private readonly List<FileDescriptor> _replyFds = [];
    private readonly FrontendQueue[] _queues;
    private readonly bool _ownsChannel;
    private readonly EventFd _stopWatching = EventFd.Create();
    private SharedMemory? _memory;
    private VhostUserChannel? _channel;
    private FileDescriptor? _inflight;        // the back-end's inflight region, kept across its restarts
    private InflightDescription _inflightDescription;
    private FileDescriptor? _replyFd;         // a descriptor the last reply carried (GET_INFLIGHT_FD)
    private Thread[] _watchers = [];
    private bool _disposed;

    private VhostUserFrontend(VhostUserFrontendOptions options, VhostUserChannel channel, bool ownsChannel, SharedMemory memory, FrontendQueue[] queues, ulong bufferOffset)
    {
        _options = options;
        _channel = channel;
        _ownsChannel = ownsChannel;
        _memory = memory;
        _queues = queues;
        GuestMemory = new GuestMemory(memory.RegionAt(options.GuestPhysicalBase));
        BufferAddress = options.GuestPhysicalBase + bufferOffset;
        BufferBytes = memory.Length - bufferOffset;
    }

    /// <summary>The shared memory.</summary>
    public SharedMemory Memory => _memory ?? throw new ObjectDisposedException(nameof(VhostUserFrontend));

    /// <summary>The memory as a table keyed by guest-physical address.</summary>
    public GuestMemory GuestMemory { get; }

    /// <summary>Guest-physical address of the buffer area (after the rings).</summary>
    public ulong BufferAddress { get; }

    /// <summary>Bytes in the buffer area.</summary>
    public ulong BufferBytes { get; }

    /// <summary>The features offered by the back-end.</summary>
    public VirtioFeatures OfferedFeatures { get; private set; }

    /// <summary>The negotiated features.</summary>
    public VirtioFeatures Features { get; private set; }

    /// <summary>The negotiated protocol features.</summary>
    public VhostUserProtocolFeatures ProtocolFeatures { get; private set; }

    /// <summary>Queue pairs the back-end supports (GET_QUEUE_NUM; 1 without MQ).</summary>
    public ulong BackendQueuePairs { get; private set; } = 1;

    /// <summary>The rings, by vring index.</summary>
    public IReadOnlyList<FrontendQueue> Queues => _queues;

    /// <summary>True while the front-end holds a back-end's inflight region (INFLIGHT_SHMFD negotiated).</summary>
    public bool HasInflightRegion => _inflight is not null;

    /// <summary>The inflight region's description as the back-end gave it (meaningful with <see cref="HasInflightRegion"/>).</summary>
    public InflightDescription InflightRegion => _inflightDescription;

    /// <summary>Times the front-end reconnected to a restarted back-end.</summary>
    public int Reconnects { get; private set; }

    /// <summary>
    /// Raised once per ring when the device reports it broken through the ring's error doorbell
    /// (SET_VRING_ERR), on a thread of the front-end's own, within milliseconds of the device
    /// finding the break. <see cref="FrontendQueue.DeviceBroken"/> is set before it is raised.
    /// The ring uses no more buffers until the device is reset.
    /// </summary>
    public event EventHandler<FrontendQueueEventArgs>? QueueBroken;

    /// <summary>The first ring the device reported broken, or null while none is.</summary>
    public FrontendQueue? BrokenQueue
    {
        get
        {
            foreach (var q in _queues)
            {
                if (q.DeviceBroken)
                {
                    return q;
                }
            }

            return null;
        }
    }

    /// <summary>
    /// Creates the memory and rings, connects to <see cref="VhostUserFrontendOptions.SocketPath"/>
    /// and sets everything up; every ring is running and enabled when this returns.
    /// </summary>
    /// <param name="options">What to ask for.</param>
    /// <returns>The connected front-end.</returns>
    /// <exception cref="VhostUserException">The back-end refused something or offers too little (<see cref="VhostUserErrorCode.Refused"/>,
    /// <see cref="VhostUserErrorCode.NotOffered"/>, ...), or the connection failed (<see cref="VhostUserError.IsConnectionLost"/>).</exception>
    public static VhostUserFrontend Connect(VhostUserFrontendOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentException.ThrowIfNullOrEmpty(options.SocketPath, nameof(options));
        Validate(options);
        UnixSocket socket;
        try
        {
            socket = UnixSocket.Connect(options.SocketPath);
        }
        catch (IOException e)
        {
            throw new VhostUserException(new VhostUserError(SocketError, e.Message), e);
        }

        var channel = new VhostUserChannel(socket) { MessageTimeoutMilliseconds = options.ReplyTimeoutMilliseconds };
        try
        {
            return Create(options, channel, ownsChannel: true);
        }
        catch
        {
            channel.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Sets up over a connection the caller made and keeps, instead of connecting to
    /// <see cref="VhostUserFrontendOptions.SocketPath"/> (which is then ignored). For a back-end that
    /// connects to the front-end (vhost-user client mode: the caller listens and accepts), a socket
    /// handed over by another process, or a caller that sends requests this type does not send
    /// itself between the front-end's own (the channel carries one request and its reply at a time,
    /// so one thread at a time may use it). The front-end never closes <paramref name="channel"/>:
    /// the caller closes it, after disposing the front-end, or earlier to drop the connection.
    /// </summary>
    /// <param name="channel">A connected channel to the back-end; nothing may have been sent on it yet.</param>
    /// <param name="options">What to ask for.</param>
    /// <returns>The front-end, every ring running and enabled.</returns>
    /// <exception cref="VhostUserException">As for <see cref="Connect(VhostUserFrontendOptions)"/>.</exception>
    public static VhostUserFrontend Connect(VhostUserChannel channel, VhostUserFrontendOptions options)
    {
        ArgumentNullException.ThrowIfNull(channel);
        ArgumentNullException.ThrowIfNull(options);
        Validate(options);
        return Create(options, channel, ownsChannel: false);
    }

    private static void Validate(VhostUserFrontendOptions options)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(options.QueuePairs, 1, nameof(options));
        ArgumentOutOfRangeException.ThrowIfGreaterThan(options.QueuePairs, 128, nameof(options));
        var format = RingFormat.Of(options.Features);
        if (!format.IsValidSize(options.QueueSize))
        {
            throw new ArgumentOutOfRangeException(nameof(options), options.QueueSize, $"a {format} queue size is {format.SizeRule}");
        }
    }

    private static VhostUserFrontend Create(VhostUserFrontendOptions options, VhostUserChannel channel, bool ownsChannel)
    {
        var format = RingFormat.Of(options.Features);
        var memory = SharedMemory.Create(options.MemoryBytes, "rings-guest", options.HugePages);
        var queues = new List<FrontendQueue>();
        VhostUserFrontend? frontend = null;
        try
        {
            // Lay the rings out first, page-aligned, then the buffer area.
            var page = (ulong)SharedMemory.PageSize;
            ulong offset = 0;
            var layout = format.Layout(options.QueueSize);
            var layouts = new (RingAreas Areas, ulong Offset)[2 * options.QueuePairs];
            for (var i = 0; i < layouts.Length; i++)
            {
                layouts[i] = (layout.At(offset), offset);
                offset += ((ulong)layout.TotalBytes + page - 1) / page * page;
            }

            if (offset >= memory.Length)
            {
                throw new ArgumentException($"{options.MemoryBytes} bytes of memory do not hold the rings ({offset} bytes)", nameof(options));
            }

            var guestBase = options.GuestPhysicalBase;
            var userBase = (ulong)memory.HostAddress;
            var guestMemory = new GuestMemory(memory.RegionAt(guestBase));
            foreach (var (areas, _) in layouts)
            {
                var guestAreas = new RingAreas(guestBase + areas.DescriptorArea, guestBase + areas.DriverArea, guestBase + areas.DeviceArea);
                var userAreas = new RingAreas(userBase + areas.DescriptorArea, userBase + areas.DriverArea, userBase + areas.DeviceArea);
                queues.Add(new FrontendQueue(queues.Count, options.QueueSize, format, guestAreas, userAreas, EventFd.CreateForPeer(), EventFd.CreateForPeer(), EventFd.CreateForPeer()));
            }

            frontend = new VhostUserFrontend(options, channel, ownsChannel, memory, [.. queues], offset);
            frontend.Setup();
            frontend.WatchErrors();
            return frontend;
        }
        catch
        {
            if (frontend is not null)
            {
                frontend.Dispose();
            }
            else
            {
                foreach (var q in queues)
                {
                    q.Kick.Dispose();
                    q.Call.Dispose();
                    q.Error.Dispose();
                }

                memory.Dispose();
            }

            throw;
        }
    }

    /// <summary>
    /// False once the back-end has gone away: the control socket turned readable, which on the
    /// front-end's channel only happens at end of file or error (the back-end sends nothing
    /// unasked there). Cheap enough to poll a few times a second.
    /// </summary>
    public bool IsConnected
    {
        get
        {
            if (_channel is not { } channel || channel.Socket.Handle.IsClosed)
            {
                return false;
            }

            try
            {
                return !Poll.WaitReadable(channel.Socket.Handle, 0);
            }
            catch (ObjectDisposedException)
            {
                // The caller closed its channel (see Connect(VhostUserChannel, ...)) meanwhile.
                return false;
            }
        }
    }

    /// <summary>The bytes at guest-physical <paramref name="address"/> (for filling and reading buffers).</summary>
    /// <param name="address">Guest-physical address.</param>
    /// <param name="length">Bytes.</param>
    /// <returns>A span over shared memory.</returns>
    public Span<byte> GuestSpan(ulong address, int length)
    {
        if (!GuestMemory.TryGetSpan(address, (uint)length, out var span))
        {
            throw new ArgumentOutOfRangeException(nameof(address), $"0x{address:x}+{length} is outside the memory");
        }

        return span;
    }

    /// <summary>
    /// Stops a ring: disables it (when protocol features are negotiated) and asks for its base
    /// (GET_VRING_BASE), which the back-end returns after it stopped processing the ring.
    /// </summary>
    /// <param name="index">The vring index.</param>
    /// <returns>The position the back-end stopped at.</returns>
    public RingPosition StopQueue(int index)
    {
        var q = _queues[index];
        if (HasProtocolFeatures)
        {
            Request(VhostUserMessage.WithState(VhostUserRequest.SetVringEnable, (uint)index, 0, AckOn));
        }

        var reply = Request(VhostUserMessage.WithState(VhostUserRequest.GetVringBase, (uint)index, 0));
        if (reply.State.Index != (uint)index)
        {
            throw Failure(UnexpectedReply, VhostUserRequest.GetVringBase, $"the reply names vring {reply.State.Index}, asked for {index}");
        }

        q.Base = reply.State.Num;
        q.SavedPosition = q.Format.DecodeBase(reply.State.Num);
        q.Running = false;
        return q.SavedPosition.Value;
    }

    /// <summary>Restarts a stopped ring from the base it was stopped at, with its addresses and doorbells.</summary>
    /// <param name="index">The vring index.</param>
    public void StartQueue(int index)
    {
        StartRing(_queues[index]);
        if (HasProtocolFeatures)
        {
            Request(VhostUserMessage.WithState(VhostUserRequest.SetVringEnable, (uint)index, 1, AckOn));
        }
    }

    /// <summary>
    /// Enables or disables a running ring (SET_VRING_ENABLE) without stopping it: a disabled ring
    /// keeps its buffers and position, and the back-end neither takes nor fills its buffers until it
    /// is enabled again. This is how a vhost-user front-end turns queue pairs on and off (there is no
    /// control queue between front-end and back-end). Needs VHOST_USER_F_PROTOCOL_FEATURES.
    /// </summary>
    /// <param name="index">The vring index.</param>
    /// <param name="enabled">True to enable.</param>
    /// <exception cref="InvalidOperationException">Protocol features were not negotiated: rings are always enabled.</exception>
    public void SetQueueEnabled(int index, bool enabled)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual((uint)index, (uint)_queues.Length, nameof(index));
        if (!HasProtocolFeatures)
        {
            throw new InvalidOperationException("without VHOST_USER_F_PROTOCOL_FEATURES every ring is enabled");
        }

        Request(VhostUserMessage.WithState(VhostUserRequest.SetVringEnable, (uint)index, enabled ? 1u : 0u, AckOn));
    }

    /// <summary>
    /// Reads <paramref name="size"/> bytes of the device's config space at <paramref name="offset"/>
    /// (GET_CONFIG; the CONFIG protocol feature must be negotiated: ask for it in
    /// <see cref="VhostUserFrontendOptions.ProtocolFeatures"/>). For a net device, virtio 1.2 section 5.1.4.
    /// </summary>
    /// <param name="offset">Byte offset into the config space.</param>
    /// <param name="size">Bytes to read, 1 to 256.</param>
    /// <returns>The bytes.</returns>
    /// <exception cref="VhostUserException">CONFIG is not negotiated, or the back-end refused the access (an empty reply) or answered another.</exception>
    public byte[] ReadConfig(uint offset, uint size)
    {
        ArgumentOutOfRangeException.ThrowIfZero(size);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(size, (uint)VhostUserConstants.MaxConfigBytes);
        if ((ProtocolFeatures & VhostUserProtocolFeatures.Config) == 0)
        {
            throw Failure(NotNegotiated, VhostUserRequest.GetConfig, "the CONFIG protocol feature was not negotiated");
        }

        var reply = Request(VhostUserMessage.WithConfig(VhostUserRequest.GetConfig, offset, new byte[size]));
        if (reply.Config is not { } access)
        {
            throw Failure(Refused, VhostUserRequest.GetConfig, $"the back-end refused to read {size} config bytes at offset {offset}");
        }

        if (access.Offset != offset || access.Data.Length != size)
        {
            throw Failure(UnexpectedReply, VhostUserRequest.GetConfig, $"the reply carries {access.Data.Length} bytes at offset {access.Offset}, asked for {size} at {offset}");
        }

        return access.Data;
    }

    /// <summary>
    /// Stops every ring, as a device stop does (QEMU stops all rings together; some back-ends, such
    /// as DPDK's net_vhost driver, expect that and lose track of rings left running).
    /// </summary>
    /// <returns>Each ring's position, by vring index.</returns>
    public RingPosition[] StopQueues() => _queues.Select(q => StopQueue(q.Index)).ToArray();

    /// <summary>Restarts every ring from its saved base.</summary>
    public void StartQueues()
    {
        foreach (var q in _queues)
        {
            StartQueue(q.Index);
        }
    }

    /// <summary>
    /// After the back-end went away (see <see cref="IsConnected"/>): connects to
    /// <see cref="VhostUserFrontendOptions.SocketPath"/> again and sets the device up as it was, from
    /// the ring state in this front-end's own memory. The same memory, rings and doorbells; the
    /// features and protocol features negotiated again (they must come out the same); the inflight
    /// region handed back (SET_INFLIGHT_FD); each ring restarted where the device stands as ring memory
    /// shows it (<see cref="IDriverRing.DevicePosition"/>), so every buffer made available and not yet
    /// used is read again, or, with the inflight region, completed exactly once by the back-end.
    /// The driver rings keep their buffers and go on as if nothing happened. One attempt: the caller
    /// retries while the back-end restarts.
    /// </summary>
    /// <exception cref="InvalidOperationException">The caller owns the connection (use <see cref="Reconnect(VhostUserChannel)"/>).</exception>
    /// <exception cref="VhostUserException">The back-end is not there (yet), refused something, or offers other features than before.</exception>
    public void Reconnect()
    {
        if (!_ownsChannel)
        {
            throw new InvalidOperationException("the caller owns the connection: reconnect with Reconnect(VhostUserChannel)");
        }

        UnixSocket socket;
        try
        {
            socket = UnixSocket.Connect(_options.SocketPath!);
        }
        catch (IOException e)
        {
            throw new VhostUserException(new VhostUserError(SocketError, e.Message), e);
        }

        _channel?.Dispose();
        _channel = new VhostUserChannel(socket) { MessageTimeoutMilliseconds = _options.ReplyTimeoutMilliseconds };
        Resume();
    }

    /// <summary>
    /// As <see cref="Reconnect()"/>, over a new connection the caller made and keeps (a back-end that
    /// connects to a listening front-end). The caller closes the old channel.
    /// </summary>
    /// <param name="channel">A connected channel to the restarted back-end; nothing sent on it yet.</param>
    /// <exception cref="VhostUserException">The back-end refused something or offers other features than before.</exception>
    public void Reconnect(VhostUserChannel channel)
    {
        ArgumentNullException.ThrowIfNull(channel);
        if (_ownsChannel)
        {
            _channel?.Dispose();
        }

        _channel = channel;
        Resume();
    }

    private void Resume()
    {
        var features = Features;
        var protocol = ProtocolFeatures;
        Setup(resume: true);
        if (Features != features || ProtocolFeatures != protocol)
        {
            throw Failure(NotOffered, VhostUserRequest.SetFeatures, $"the restarted back-end negotiated features 0x{(ulong)Features:x}, protocol 0x{(ulong)ProtocolFeatures:x}; before 0x{(ulong)features:x}, 0x{(ulong)protocol:x}");
        }

        Reconnects++;
    }

    /// <summary>Closes the connection (unless the caller gave it and keeps it), then unmaps the memory and closes the doorbells.</summary>
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        _stopWatching.Signal();
        foreach (var watcher in _watchers)
        {
            watcher.Join();
        }

        _watchers = [];

        if (_ownsChannel)
        {
            _channel?.Dispose();
        }

        _channel = null;
        foreach (var fd in _replyFds)
        {
            fd.Dispose();
        }

        _replyFds.Clear();
        _inflight?.Dispose();
        _inflight = null;
        foreach (var q in _queues)
        {
            q.Kick.Dispose();
            q.Call.Dispose();
            q.Error.Dispose();
        }

        _stopWatching.Dispose();
        _memory?.Dispose();
        _memory = null;
    }

    // One thread sleeps on every ring's error doorbell (and a stop doorbell): a break the device
    // reports reaches the driver without the data path polling for it.
    // (Poll takes at most 64 descriptors: beyond 63 rings, every further 63 get a thread.)
    private void WatchErrors()
    {
        var threads = new List<Thread>();
        for (var first = 0; first < _queues.Length; first += Poll.MaxDescriptors - 1)
        {
            var queues = _queues.AsSpan(first, Math.Min(Poll.MaxDescriptors - 1, _queues.Length - first)).ToArray();
            var thread = new Thread(() => Watch(queues)) { Name = "vhost-user error watch", IsBackground = true };
            thread.Start();
            threads.Add(thread);
        }

        _watchers = [.. threads];
    }

    private void Watch(FrontendQueue[] queues)
    {
        var fds = new FileDescriptor[queues.Length + 1];
        fds[0] = _stopWatching.Handle;
        for (var i = 0; i < queues.Length; i++)
        {
            fds[i + 1] = queues[i].Error.Handle;
        }

        var ready = new bool[fds.Length];
        while (true)
        {
            Poll.WaitReadable(fds, -1, ready);
            if (ready[0])
            {
                return;
            }

            for (var i = 0; i < queues.Length; i++)
            {
                var q = queues[i];
                if (ready[i + 1] && q.Error.TryConsume(out _) && !q.DeviceBroken)
                {
                    q.DeviceBroken = true;
                    Diagnostics.RingsLog.ProtocolError(_options.Logger, "vhost-user frontend", q.BrokenDescription ?? q.Name);
                    try
                    {
                        QueueBroken?.Invoke(this, new FrontendQueueEventArgs(q));
                    }
                    catch (Exception e)
                    {
                        // This is the front-end's own thread: an exception escaping it would end the
                        // process, and the other rings' reports would go unheard.
                        Diagnostics.RingsLog.HandlerFailed(_options.Logger, "vhost-user frontend: QueueBroken", $"{e.GetType().Name}: {e.Message}");
                    }
                }
            }
        }
    }

    private bool HasProtocolFeatures => (Features & VhostUserConstants.ProtocolFeaturesBit) != 0;

    private bool AckOn => (ProtocolFeatures & VhostUserProtocolFeatures.ReplyAck) != 0;

    private void Setup(bool resume = false)
    {
        OfferedFeatures = (VirtioFeatures)Request(VhostUserMessage.Empty(VhostUserRequest.GetFeatures)).Value;
        if ((OfferedFeatures & VirtioFeatures.Version1) == 0)
        {
            throw Failure(NotOffered, VhostUserRequest.GetFeatures, $"back-end does not offer VIRTIO_F_VERSION_1 (features 0x{(ulong)OfferedFeatures:x})");
        }

        if ((_options.Features & ~OfferedFeatures & VirtioFeatures.RingPacked) != 0)
        {
            throw Failure(NotOffered, VhostUserRequest.GetFeatures, "back-end does not offer VIRTIO_F_RING_PACKED");
        }

        if ((OfferedFeatures & VhostUserConstants.ProtocolFeaturesBit) != 0)
        {
            var offered = (VhostUserProtocolFeatures)Request(VhostUserMessage.Empty(VhostUserRequest.GetProtocolFeatures)).Value;
            ProtocolFeatures = offered & _options.ProtocolFeatures;
            Send(VhostUserMessage.WithU64(VhostUserRequest.SetProtocolFeatures, (ulong)ProtocolFeatures));
        }

        Request(VhostUserMessage.Empty(VhostUserRequest.SetOwner, AckOn));

        if ((ProtocolFeatures & VhostUserProtocolFeatures.Multiqueue) != 0)
        {
            BackendQueuePairs = Request(VhostUserMessage.Empty(VhostUserRequest.GetQueueNum)).Value;
            if (BackendQueuePairs < (ulong)_options.QueuePairs)
            {
                throw Failure(NotOffered, VhostUserRequest.GetQueueNum, $"back-end supports {BackendQueuePairs} queue pairs, {_options.QueuePairs} wanted");
            }
        }
        else if (_options.QueuePairs > 1)
        {
            throw Failure(NotNegotiated, VhostUserRequest.GetProtocolFeatures, $"{_options.QueuePairs} queue pairs need the back-end's MQ protocol feature (VHOST_USER_PROTOCOL_F_MQ), which it does not offer");
        }

        // Several pairs are a device feature too (5.1.3): without VIRTIO_NET_F_MQ only receiveq1 and transmitq1 exist.
        var wanted = _options.Features;
        if (_options.QueuePairs > 1)
        {
            if ((OfferedFeatures & VirtioFeatures.NetMultiqueue) == 0)
            {
                throw Failure(NotOffered, VhostUserRequest.GetFeatures, $"{_options.QueuePairs} queue pairs need VIRTIO_NET_F_MQ, which the back-end does not offer (features 0x{(ulong)OfferedFeatures:x})");
            }

            wanted |= VirtioFeatures.NetMultiqueue;
        }

        Features = (wanted & OfferedFeatures) | (OfferedFeatures & VhostUserConstants.ProtocolFeaturesBit);
        Request(VhostUserMessage.WithU64(VhostUserRequest.SetFeatures, (ulong)Features, AckOn));

        var status = (byte)(DeviceStatus.Acknowledge | DeviceStatus.Driver | DeviceStatus.FeaturesOk);
        var hasStatus = (ProtocolFeatures & VhostUserProtocolFeatures.Status) != 0;
        if (hasStatus)
        {
            Request(VhostUserMessage.WithU64(VhostUserRequest.SetStatus, status, AckOn));
            var back = Request(VhostUserMessage.Empty(VhostUserRequest.GetStatus)).Value;
            if ((back & DeviceStatus.FeaturesOk) == 0)
            {
                throw Failure(Refused, VhostUserRequest.GetStatus, $"back-end cleared FEATURES_OK (status 0x{back:x})");
            }
        }

        SetInflight();
        SendMemory();

        foreach (var q in _queues)
        {
            if (!resume || q.Ring is null)
            {
                q.Ring = _options.RingFactory(new DriverRingSetup(q.Format, GuestMemory, q.GuestAreas, q.Size, Features));

                // Fresh rings start at 0; packed ones with both wrap counters set (2.8.1).
                q.Base = q.Format.EncodeBase(new RingPosition(0));
            }
            else
            {
                // The back-end lost its state: it resumes where ring memory shows the device stood.
                q.Base = q.Format.EncodeBase(q.Ring.PrepareDeviceRestart());
            }

            StartRing(q);
        }

        if (HasProtocolFeatures)
        {
            foreach (var q in _queues)
            {
                Request(VhostUserMessage.WithState(VhostUserRequest.SetVringEnable, (uint)q.Index, 1, AckOn));
            }
        }

        if (hasStatus)
        {
            Request(VhostUserMessage.WithU64(VhostUserRequest.SetStatus, (byte)(status | DeviceStatus.DriverOk), AckOn));
        }

        Diagnostics.RingsLog.Negotiated(_options.Logger, _options.SocketPath ?? "the back-end", (ulong)Features, (ulong)ProtocolFeatures);
    }

    /// <summary>
    /// INFLIGHT_SHMFD: the first time, asks the back-end for its inflight region (GET_INFLIGHT_FD) and
    /// keeps it; every time, hands it back (SET_INFLIGHT_FD) before the rings start, so a restarted
    /// back-end finds what its predecessor had in flight.
    /// </summary>
    private void SetInflight()
    {
        if ((ProtocolFeatures & VhostUserProtocolFeatures.InflightShmfd) == 0)
        {
            return;
        }

        if (_inflight is null)
        {
            var reply = Request(VhostUserMessage.WithInflight(VhostUserRequest.GetInflightFd, new InflightDescription(0, 0, (ushort)_queues.Length, (ushort)_options.QueueSize)));
            _inflight = _replyFd ?? throw Failure(MissingDescriptor, VhostUserRequest.GetInflightFd, "the reply carries no region");
            _replyFd = null;
            _inflightDescription = reply.Inflight;
        }

        Request(VhostUserMessage.WithInflight(VhostUserRequest.SetInflightFd, _inflightDescription, AckOn), [_inflight]);
    }

    private void SendMemory()
    {
        var memory = Memory;
        var region = new MemoryRegionDescription(_options.GuestPhysicalBase, memory.Length, (ulong)memory.HostAddress, 0);
        if (_options.UseAddMemReg && (ProtocolFeatures & VhostUserProtocolFeatures.ConfigureMemSlots) != 0)
        {
            var slots = Request(VhostUserMessage.Empty(VhostUserRequest.GetMaxMemSlots)).Value;
            if (slots < 1)
            {
                throw Failure(NotOffered, VhostUserRequest.GetMaxMemSlots, "back-end offers no memory slots");
            }

            Request(VhostUserMessage.WithRegion(VhostUserRequest.AddMemReg, region, AckOn), [memory.Handle!]);
        }
        else
        {
            Request(VhostUserMessage.WithMemTable([region], AckOn), [memory.Handle!]);
        }
    }

    private void StartRing(FrontendQueue q)
    {
        var index = (uint)q.Index;
        Request(VhostUserMessage.WithState(VhostUserRequest.SetVringNum, index, (uint)q.Size, AckOn));
        Request(VhostUserMessage.WithState(VhostUserRequest.SetVringBase, index, q.Base, AckOn));
        var a = q.UserAreas;
        Request(VhostUserMessage.WithAddress(new VringAddress(index, 0, a.DescriptorArea, a.DeviceArea, a.DriverArea, 0), AckOn));

        // Call and error before kick: a back-end starts the ring on the kick, and then has both already.
        Request(VhostUserMessage.WithFile(VhostUserRequest.SetVringCall, index, hasFd: true, AckOn), [q.Call.Handle]);
        try
        {
            Request(VhostUserMessage.WithFile(VhostUserRequest.SetVringErr, index, hasFd: true, AckOn), [q.Error.Handle]);
        }
        catch (VhostUserException e) when (e.Error.Code == Refused)
        {
            Diagnostics.RingsLog.ProtocolError(_options.Logger, "vhost-user frontend", $"the back-end takes no error doorbell for {q.Name}: a break it finds shows only as buffers that do not come back");
        }
        Request(VhostUserMessage.WithFile(VhostUserRequest.SetVringKick, index, hasFd: true, AckOn), [q.Kick.Handle]);
        q.Running = true;
    }

    /// <summary>
    /// Sends a request and, when its row in <see cref="VhostUserRequests"/> says a reply follows
    /// (an explicit one, or an ack asked for), waits for it and checks it.
    /// </summary>
    private VhostUserMessage Request(in VhostUserMessage message, ReadOnlySpan<FileDescriptor> fds = default)
    {
        Send(message, fds);
        var row = VhostUserRequests.Find(message.Request)!;
        if (!row.ReplyDue(message.NeedsReply, AckOn))
        {
            return default;
        }

        var channel = _channel!;
        var status = channel.Receive(_replyFds, _options.ReplyTimeoutMilliseconds);
        try
        {
            if (status != ReceiveStatus.Message)
            {
                throw new VhostUserException(channel.LastError.About(message.Request));
            }

            var error = VhostUserCodec.DecodeReply(channel.Received, _replyFds.Count, out var reply);
            if (error.IsError)
            {
                throw new VhostUserException(error.About(message.Request));
            }

            if (reply.Request != message.Request)
            {
                throw Failure(UnexpectedReply, message.Request, $"the reply names {reply.Request}");
            }

            if (row.Reply == VhostUserReplyRule.AckIfAsked && reply.Value != 0)
            {
                throw Failure(Refused, message.Request, $"NACK {reply.Value}");
            }

            if (row.ReplyDescriptors > 0 && _replyFds.Count > 0)
            {
                // Kept (GET_INFLIGHT_FD's region); the rest are closed below.
                _replyFd?.Dispose();
                _replyFd = _replyFds[0];
                _replyFds.RemoveAt(0);
            }

            return reply;
        }
        finally
        {
            foreach (var fd in _replyFds)
            {
                fd.Dispose();
            }

            _replyFds.Clear();
        }
    }

    private static VhostUserException Failure(VhostUserErrorCode code, VhostUserRequest request, string detail) =>
        new(new VhostUserError(code, request, detail));

    private void Send(in VhostUserMessage message, ReadOnlySpan<FileDescriptor> fds = default)
    {
        try
        {
            _channel!.Send(message, fds);
        }
        catch (IOException e)
        {
            var code = e.HResult is LibC.EPIPE or LibC.ECONNRESET ? PeerClosed : SocketError;
            throw new VhostUserException(new VhostUserError(code, message.Request, e.Message), e);
        }
    }
}

/// <summary>Carries the ring an event of a <see cref="VhostUserFrontend"/> concerns.</summary>
public sealed class FrontendQueueEventArgs : EventArgs
{
    /// <summary>Creates the arguments.</summary>
    /// <param name="queue">The ring.</param>
    public FrontendQueueEventArgs(FrontendQueue queue)
    {
        Queue = queue;
    }

    /// <summary>The ring.</summary>
    public FrontendQueue Queue { get; }
}
