namespace Rings;

/// <summary>
/// Virtio feature bits (virtio 1.2 sections 6 and 5.1.3): the device-independent ones that change
/// how a ring behaves and the virtio-net ones Rings uses. One type for every feature word in the
/// API; it becomes a raw 64-bit word only where a protocol carries it.
/// </summary>
[Flags]
public enum VirtioFeatures : ulong
{
    /// <summary>No features.</summary>
    None = 0,

    /// <summary>VIRTIO_NET_F_CSUM (0): the device handles packets with partial checksum.</summary>
    NetCsum = 1UL << 0,

    /// <summary>VIRTIO_NET_F_GUEST_CSUM (1): the driver handles packets with partial checksum.</summary>
    NetGuestCsum = 1UL << 1,

    /// <summary>VIRTIO_NET_F_MTU (3): the device reports a maximum MTU.</summary>
    NetMtu = 1UL << 3,

    /// <summary>VIRTIO_NET_F_MAC (5): the device has a given MAC address.</summary>
    NetMac = 1UL << 5,

    /// <summary>VIRTIO_NET_F_GUEST_TSO4 (7): the driver can receive TSOv4.</summary>
    NetGuestTso4 = 1UL << 7,

    /// <summary>VIRTIO_NET_F_GUEST_TSO6 (8): the driver can receive TSOv6.</summary>
    NetGuestTso6 = 1UL << 8,

    /// <summary>VIRTIO_NET_F_GUEST_ECN (9): the driver can receive TSO with ECN.</summary>
    NetGuestEcn = 1UL << 9,

    /// <summary>VIRTIO_NET_F_GUEST_UFO (10): the driver can receive UFO.</summary>
    NetGuestUfo = 1UL << 10,

    /// <summary>VIRTIO_NET_F_HOST_TSO4 (11): the device can receive TSOv4.</summary>
    NetHostTso4 = 1UL << 11,

    /// <summary>VIRTIO_NET_F_HOST_TSO6 (12): the device can receive TSOv6.</summary>
    NetHostTso6 = 1UL << 12,

    /// <summary>VIRTIO_NET_F_HOST_ECN (13): the device can receive TSO with ECN.</summary>
    NetHostEcn = 1UL << 13,

    /// <summary>VIRTIO_NET_F_MRG_RXBUF (15): the driver can merge receive buffers.</summary>
    NetMergeRxBuffers = 1UL << 15,

    /// <summary>VIRTIO_NET_F_STATUS (16): the configuration status field is available.</summary>
    NetStatus = 1UL << 16,

    /// <summary>VIRTIO_NET_F_CTRL_VQ (17): a control channel is available.</summary>
    NetControlQueue = 1UL << 17,

    /// <summary>VIRTIO_NET_F_MQ (22): multiqueue with automatic receive steering.</summary>
    NetMultiqueue = 1UL << 22,

    /// <summary>VIRTIO_F_INDIRECT_DESC (28): indirect descriptor tables.</summary>
    IndirectDescriptors = 1UL << 28,

    /// <summary>VIRTIO_F_EVENT_IDX (29): used_event and avail_event fields.</summary>
    EventIndex = 1UL << 29,

    /// <summary>VIRTIO_F_VERSION_1 (32): compliance with virtio 1.x.</summary>
    Version1 = 1UL << 32,

    /// <summary>VIRTIO_F_RING_PACKED (34): the packed virtqueue layout (see <see cref="RingFormat.Of"/>).</summary>
    RingPacked = 1UL << 34,

    /// <summary>VIRTIO_F_IN_ORDER (35): buffers are used in the order they were made available.</summary>
    InOrder = 1UL << 35,

    /// <summary>VIRTIO_F_NOTIFICATION_DATA (38): the driver passes extra data in notifications.</summary>
    NotificationData = 1UL << 38,

    /// <summary>VIRTIO_NET_F_GUEST_USO4 (54): the driver can receive USO over IPv4.</summary>
    NetGuestUso4 = 1UL << 54,

    /// <summary>VIRTIO_NET_F_GUEST_USO6 (55): the driver can receive USO over IPv6.</summary>
    NetGuestUso6 = 1UL << 55,

    /// <summary>VIRTIO_NET_F_HOST_USO (56): the device can receive USO packets.</summary>
    NetHostUso = 1UL << 56,
}
