using Rings.Linux.Net;
using Rings.Linux.VhostUser;

namespace Rings.Linux.Device;

/// <summary>What a vhost-user back-end offers and how it behaves.</summary>
public sealed class VhostUserBackendOptions
{
    /// <summary>
    /// The default virtio-net device features: VERSION_1, EVENT_IDX, INDIRECT_DESC, RING_PACKED,
    /// IN_ORDER, MRG_RXBUF and MAC.
    /// </summary>
    public const VirtioFeatures DefaultNetFeatures =
        VirtioFeatures.Version1 | VirtioFeatures.EventIndex | VirtioFeatures.IndirectDescriptors | VirtioFeatures.RingPacked |
        VirtioFeatures.InOrder | VirtioFeatures.NetMergeRxBuffers | VirtioFeatures.NetMac;

    /// <summary>The default protocol features: MQ, REPLY_ACK, STATUS, CONFIGURE_MEM_SLOTS, RESET_DEVICE, INFLIGHT_SHMFD and CONFIG.</summary>
    public const VhostUserProtocolFeatures DefaultProtocolFeatures =
        VhostUserProtocolFeatures.Multiqueue | VhostUserProtocolFeatures.ReplyAck | VhostUserProtocolFeatures.Status |
        VhostUserProtocolFeatures.ConfigureMemSlots | VhostUserProtocolFeatures.ResetDevice | VhostUserProtocolFeatures.InflightShmfd |
        VhostUserProtocolFeatures.Config;

    /// <summary>The default of <see cref="Mac"/>: a locally administered unicast address.</summary>
    public static readonly MacAddress DefaultMac = MacAddress.Parse("02:52:49:4e:47:10");

    /// <summary>Protocol features this implementation can honour; others are never offered.</summary>
    public const VhostUserProtocolFeatures SupportedProtocolFeatures = DefaultProtocolFeatures | VhostUserProtocolFeatures.BackendRequest;

    /// <summary>
    /// Path of the socket: where this back-end listens, or with <see cref="Connect"/> where the
    /// front-end listens and this back-end connects.
    /// </summary>
    public string? SocketPath { get; set; }

    /// <summary>
    /// Client mode: connect to a front-end that listens on <see cref="SocketPath"/> (QEMU's
    /// <c>server=on</c>, DPDK virtio-user's <c>server=1</c>) instead of listening, retrying every
    /// <see cref="ReconnectIntervalMilliseconds"/> until it answers and again after each connection
    /// ends. One front-end is served at a time.
    /// </summary>
    public bool Connect { get; set; }

    /// <summary>In client mode, how long to wait between connection attempts (default one second).</summary>
    public int ReconnectIntervalMilliseconds { get; set; } = 1000;

    /// <summary>
    /// Device features offered (VHOST_USER_F_PROTOCOL_FEATURES is always added). Both ring formats
    /// are served; leave RING_PACKED out to offer split rings only.
    /// </summary>
    public VirtioFeatures DeviceFeatures { get; set; } = DefaultNetFeatures;

    /// <summary>Protocol features offered (limited to <see cref="SupportedProtocolFeatures"/>).</summary>
    public VhostUserProtocolFeatures ProtocolFeatures { get; set; } = DefaultProtocolFeatures;

    /// <summary>
    /// Queue pairs (GET_QUEUE_NUM answers this, and <c>max_virtqueue_pairs</c> in the config space);
    /// the device has twice as many vrings. 1 to 128. Above 1, VIRTIO_NET_F_MQ is offered too.
    /// </summary>
    public int MaxQueuePairs { get; set; } = 1;

    /// <summary>The MAC address in the config space (GET_CONFIG, virtio 1.2 section 5.1.4).</summary>
    public MacAddress Mac { get; set; } = DefaultMac;

    /// <summary>The MTU in the config space (meaningful to a driver only with VIRTIO_NET_F_MTU).</summary>
    public ushort Mtu { get; set; } = 1500;

    /// <summary>The virtio-net config space GET_CONFIG reads: <see cref="Mac"/>, link up, <see cref="MaxQueuePairs"/> and <see cref="Mtu"/>.</summary>
    public VirtioNetConfig NetConfig => new(Mac, VirtioNetConfig.LinkUp, (ushort)MaxQueuePairs, Mtu);

    /// <summary>Front-ends served at once, each on its own connection thread; more wait in the listen backlog (see <see cref="RefuseWhenFull"/>).</summary>
    public int MaxConnections { get; set; } = 1;

    /// <summary>
    /// When true, a front-end that connects while <see cref="MaxConnections"/> are served is
    /// accepted and closed at once (and logged) instead of waiting in the backlog: a port serves
    /// one front-end, and a second one should learn so, not hang.
    /// </summary>
    public bool RefuseWhenFull { get; set; }

    /// <summary>The default of <see cref="MaxMemoryBytes"/>: 64 GiB.</summary>
    public const ulong DefaultMaxMemoryBytes = 64UL << 30;

    /// <summary>
    /// Memory slots (GET_MAX_MEM_SLOTS answers this) when CONFIGURE_MEM_SLOTS is negotiated, and
    /// the most regions one front-end may have mapped at once (a memory table holds at most 8).
    /// </summary>
    public int MaxMemorySlots { get; set; } = 32;

    /// <summary>
    /// The most bytes of its memory one front-end may have mapped at once (the sum of its regions'
    /// sizes and of its inflight region's, if it asked for one), checked before anything is
    /// mapped: a table, region or inflight region beyond it is refused with
    /// <see cref="VhostUserErrorCode.BudgetExceeded"/>. Bounds what a front-end can take of the
    /// process's address space (sparse files cost nothing to create).
    /// </summary>
    public ulong MaxMemoryBytes { get; set; } = DefaultMaxMemoryBytes;

    /// <summary>
    /// False (the default): every region's file must be sealed against shrinking (F_SEAL_SHRINK,
    /// as QEMU's memory-backend-memfd and the Rings front-end do), else it is refused with
    /// <see cref="VhostUserErrorCode.UnsealedMemory"/>. A front-end that could truncate a mapped
    /// file would make the next access fault (SIGBUS), which kills the whole process, every
    /// front-end's service with it. True trusts front-ends whose memory cannot be sealed (DPDK
    /// without hugepages, hugetlbfs and other plain files) not to do that.
    /// </summary>
    public bool TrustUnsealedMemory { get; set; }

    /// <summary>Builds device rings of either format (<see cref="RingFormat.DeviceFactory"/> by default).</summary>
    public DeviceRingFactory RingFactory { get; set; } = RingFormat.DeviceFactory;

    /// <summary>Where connections, ring starts and stops and errors are logged (<see cref="Diagnostics.RingsEvents"/>); nothing by default.</summary>
    public Microsoft.Extensions.Logging.ILogger Logger { get; set; } = Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance;

    /// <summary>How long the rest of a message may take once its first byte arrived, and a reply may take to be sent.</summary>
    public int MessageTimeoutMilliseconds { get; set; } = 5000;

    /// <summary>
    /// How long a new connection may hold a slot without sending a message while another
    /// front-end waits for one (every front-end speaks first, at once): short, so idle
    /// connections cannot keep the slots from front-ends waiting behind them. With no one
    /// waiting, a connection that sends nothing is closed at <see cref="SetupTimeoutMilliseconds"/>.
    /// </summary>
    public int FirstMessageTimeoutMilliseconds { get; set; } = 2000;

    /// <summary>
    /// How long a front-end may take to get a ring running after it connected. One that has not
    /// by then loses its slot as soon as another front-end waits for one (with no one waiting it
    /// may go on setting up: a VM's driver starts its rings only when the guest boots). A
    /// connection that has sent no message at all by then is closed in any case.
    /// </summary>
    public int SetupTimeoutMilliseconds { get; set; } = 10_000;

    /// <summary>
    /// The user ids whose front-ends are served (checked with SO_PEERCRED when a connection is
    /// accepted); null or empty for any user who can open the socket (it is created owner-only).
    /// </summary>
    public IReadOnlyCollection<uint>? AllowedUids { get; set; }

    /// <summary>
    /// How long a data path may take to let go of a ring when it stops (the QueueStopped handler's
    /// deadline). One that takes longer leaves its ring broken and its front-end disconnected;
    /// other front-ends are not held up.
    /// </summary>
    public int StopTimeoutMilliseconds { get; set; } = 2000;

    /// <summary>The features GET_FEATURES answers: <see cref="DeviceFeatures"/>, VHOST_USER_F_PROTOCOL_FEATURES, and VIRTIO_NET_F_MQ with more than one queue pair.</summary>
    public VirtioFeatures OfferedFeatures =>
        DeviceFeatures | VhostUserConstants.ProtocolFeaturesBit | (MaxQueuePairs > 1 ? VirtioFeatures.NetMultiqueue : VirtioFeatures.None);

    /// <summary>The protocol features GET_PROTOCOL_FEATURES answers.</summary>
    public VhostUserProtocolFeatures OfferedProtocolFeatures => ProtocolFeatures & SupportedProtocolFeatures;

    /// <summary>Number of vrings (two per queue pair).</summary>
    public int QueueCount => 2 * MaxQueuePairs;
}
