namespace Rings.Linux.VhostUser;

/// <summary>Front-end request codes of the vhost-user protocol (QEMU docs/interop/vhost-user.rst).</summary>
public enum VhostUserRequest : uint
{
    /// <summary>Not a request (0 is unused on the wire).</summary>
    None = 0,

    /// <summary>VHOST_USER_GET_FEATURES: reply u64 device features.</summary>
    GetFeatures = 1,

    /// <summary>VHOST_USER_SET_FEATURES: u64 features the front-end accepts.</summary>
    SetFeatures = 2,

    /// <summary>VHOST_USER_SET_OWNER: the sender owns the session.</summary>
    SetOwner = 3,

    /// <summary>VHOST_USER_RESET_OWNER (deprecated): disable all rings.</summary>
    ResetOwner = 4,

    /// <summary>VHOST_USER_SET_MEM_TABLE: memory regions, one fd each.</summary>
    SetMemTable = 5,

    /// <summary>VHOST_USER_SET_LOG_BASE (not supported: no live-migration logging).</summary>
    SetLogBase = 6,

    /// <summary>VHOST_USER_SET_LOG_FD (not supported).</summary>
    SetLogFd = 7,

    /// <summary>VHOST_USER_SET_VRING_NUM: vring state {index, queue size}.</summary>
    SetVringNum = 8,

    /// <summary>VHOST_USER_SET_VRING_ADDR: vring address description.</summary>
    SetVringAddr = 9,

    /// <summary>VHOST_USER_SET_VRING_BASE: vring state {index, base}.</summary>
    SetVringBase = 10,

    /// <summary>VHOST_USER_GET_VRING_BASE: stops the ring; reply vring state {index, base}.</summary>
    GetVringBase = 11,

    /// <summary>VHOST_USER_SET_VRING_KICK: u64 index (bit 8: no fd), kick eventfd.</summary>
    SetVringKick = 12,

    /// <summary>VHOST_USER_SET_VRING_CALL: u64 index (bit 8: no fd), call eventfd.</summary>
    SetVringCall = 13,

    /// <summary>VHOST_USER_SET_VRING_ERR: u64 index (bit 8: no fd), error eventfd.</summary>
    SetVringErr = 14,

    /// <summary>VHOST_USER_GET_PROTOCOL_FEATURES: reply u64 protocol features.</summary>
    GetProtocolFeatures = 15,

    /// <summary>VHOST_USER_SET_PROTOCOL_FEATURES: u64 protocol features the front-end accepts.</summary>
    SetProtocolFeatures = 16,

    /// <summary>VHOST_USER_GET_QUEUE_NUM: reply u64 most queues (queue pairs for net).</summary>
    GetQueueNum = 17,

    /// <summary>VHOST_USER_SET_VRING_ENABLE: vring state {index, 0 or 1}.</summary>
    SetVringEnable = 18,

    /// <summary>VHOST_USER_SEND_RARP (not supported).</summary>
    SendRarp = 19,

    /// <summary>VHOST_USER_NET_SET_MTU (not supported).</summary>
    NetSetMtu = 20,

    /// <summary>VHOST_USER_SET_BACKEND_REQ_FD: the back-end request socket.</summary>
    SetBackendReqFd = 21,

    /// <summary>VHOST_USER_GET_CONFIG: config access {u32 offset; u32 size; u32 flags; u8 payload[size]}; reply the same with the bytes, or an empty body on failure.</summary>
    GetConfig = 24,

    /// <summary>VHOST_USER_SET_CONFIG: config access with the bytes to write (refused: nothing in a net device's space is writable).</summary>
    SetConfig = 25,

    /// <summary>VHOST_USER_GET_INFLIGHT_FD: inflight description {0, 0, queues, queue size}; reply the description and the region's fd.</summary>
    GetInflightFd = 31,

    /// <summary>VHOST_USER_SET_INFLIGHT_FD: inflight description and the region's fd, handed back after a back-end restart.</summary>
    SetInflightFd = 32,

    /// <summary>VHOST_USER_RESET_DEVICE: disable rings and reset device state.</summary>
    ResetDevice = 34,

    /// <summary>VHOST_USER_GET_MAX_MEM_SLOTS: reply u64 most memory slots.</summary>
    GetMaxMemSlots = 36,

    /// <summary>VHOST_USER_ADD_MEM_REG: one memory region, one fd.</summary>
    AddMemReg = 37,

    /// <summary>VHOST_USER_REM_MEM_REG: one memory region to remove.</summary>
    RemMemReg = 38,

    /// <summary>VHOST_USER_SET_STATUS: u64 virtio device status.</summary>
    SetStatus = 39,

    /// <summary>VHOST_USER_GET_STATUS: reply u64 virtio device status.</summary>
    GetStatus = 40,
}

/// <summary>vhost-user protocol feature bits (negotiated with GET/SET_PROTOCOL_FEATURES).</summary>
[Flags]
public enum VhostUserProtocolFeatures : ulong
{
    /// <summary>No protocol features.</summary>
    None = 0,

    /// <summary>VHOST_USER_PROTOCOL_F_MQ (0): GET_QUEUE_NUM and several queues.</summary>
    Multiqueue = 1UL << 0,

    /// <summary>VHOST_USER_PROTOCOL_F_LOG_SHMFD (1).</summary>
    LogShmfd = 1UL << 1,

    /// <summary>VHOST_USER_PROTOCOL_F_RARP (2).</summary>
    Rarp = 1UL << 2,

    /// <summary>VHOST_USER_PROTOCOL_F_REPLY_ACK (3): NEED_REPLY on any request.</summary>
    ReplyAck = 1UL << 3,

    /// <summary>VHOST_USER_PROTOCOL_F_MTU (4).</summary>
    Mtu = 1UL << 4,

    /// <summary>VHOST_USER_PROTOCOL_F_BACKEND_REQ (5): SET_BACKEND_REQ_FD.</summary>
    BackendRequest = 1UL << 5,

    /// <summary>VHOST_USER_PROTOCOL_F_CONFIG (9).</summary>
    Config = 1UL << 9,

    /// <summary>VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD (12): GET/SET_INFLIGHT_FD, a shared region where the back-end records buffers in flight.</summary>
    InflightShmfd = 1UL << 12,

    /// <summary>VHOST_USER_PROTOCOL_F_RESET_DEVICE (13): RESET_DEVICE.</summary>
    ResetDevice = 1UL << 13,

    /// <summary>VHOST_USER_PROTOCOL_F_INBAND_NOTIFICATIONS (14).</summary>
    InbandNotifications = 1UL << 14,

    /// <summary>VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS (15): GET_MAX_MEM_SLOTS, ADD/REM_MEM_REG.</summary>
    ConfigureMemSlots = 1UL << 15,

    /// <summary>VHOST_USER_PROTOCOL_F_STATUS (16): SET/GET_STATUS.</summary>
    Status = 1UL << 16,
}

/// <summary>Constants of the vhost-user wire format.</summary>
public static class VhostUserConstants
{
    /// <summary>Bytes of the header {u32 request; u32 flags; u32 size}.</summary>
    public const int HeaderBytes = 12;

    /// <summary>The protocol version carried in the low two flag bits.</summary>
    public const uint Version = 0x1;

    /// <summary>Mask of the version bits.</summary>
    public const uint VersionMask = 0x3;

    /// <summary>Flag bit 2: this message is a reply.</summary>
    public const uint ReplyFlag = 0x4;

    /// <summary>Flag bit 3: the sender wants a reply (REPLY_ACK).</summary>
    public const uint NeedReplyFlag = 0x8;

    /// <summary>VHOST_USER_F_PROTOCOL_FEATURES: feature bit 30, protocol features are supported.</summary>
    public const VirtioFeatures ProtocolFeaturesBit = (VirtioFeatures)(1UL << 30);

    /// <summary>Most regions in SET_MEM_TABLE (VHOST_MEMORY_BASELINE_NREGIONS).</summary>
    public const int MaxMemTableRegions = 8;

    /// <summary>Bytes of one memory region description {gpa, size, uaddr, mmap offset}.</summary>
    public const int RegionBytes = 32;

    /// <summary>Bytes of a vring address description.</summary>
    public const int VringAddressBytes = 40;

    /// <summary>Bytes of an inflight description {u64 mmap size; u64 mmap offset; u16 queues; u16 queue size}, padded to 8 as C lays it out.</summary>
    public const int InflightBytes = 24;

    /// <summary>Bytes of an inflight description without the trailing padding (accepted from a sender that packs it).</summary>
    public const int InflightPackedBytes = 20;

    /// <summary>Bytes of a config access header {u32 offset; u32 size; u32 flags} (GET/SET_CONFIG).</summary>
    public const int ConfigHeaderBytes = 12;

    /// <summary>Most config bytes one GET/SET_CONFIG carries (VHOST_USER_MAX_CONFIG_SIZE).</summary>
    public const int MaxConfigBytes = 256;

    /// <summary>Largest payload of any supported message (a full SET_MEM_TABLE).</summary>
    public const int MaxSupportedPayloadBytes = 8 + (MaxMemTableRegions * RegionBytes);

    /// <summary>Largest payload read off the socket at all; bigger sizes end the connection.</summary>
    public const int MaxPayloadBytes = 4096;

    /// <summary>Bits 0-7 of SET_VRING_KICK/CALL/ERR: the vring index.</summary>
    public const ulong VringIndexMask = 0xFF;

    /// <summary>Bit 8 of SET_VRING_KICK/CALL/ERR: no file descriptor attached (poll instead).</summary>
    public const ulong VringNoFdFlag = 0x100;

    /// <summary>Bit 0 of the vring address flags: VHOST_VRING_F_LOG.</summary>
    public const uint VringFlagLog = 0x1;
}

/// <summary>Virtio device status bits (virtio 1.2 section 2.1).</summary>
public static class DeviceStatus
{
    /// <summary>ACKNOWLEDGE (1).</summary>
    public const byte Acknowledge = 1;

    /// <summary>DRIVER (2).</summary>
    public const byte Driver = 2;

    /// <summary>DRIVER_OK (4).</summary>
    public const byte DriverOk = 4;

    /// <summary>FEATURES_OK (8).</summary>
    public const byte FeaturesOk = 8;

    /// <summary>DEVICE_NEEDS_RESET (64).</summary>
    public const byte NeedsReset = 64;

    /// <summary>FAILED (128).</summary>
    public const byte Failed = 128;
}
