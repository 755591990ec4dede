namespace Rings;

/// <summary>
/// Virtio feature bit numbers used by Rings (virtio 1.2 sections 6 and 5.1.3), as bit masks.
/// </summary>
public static class FeatureBits
{
    /// <summary>VIRTIO_F_INDIRECT_DESC (28): indirect descriptor tables.</summary>
    public const ulong IndirectDescriptors = 1UL << 28;

    /// <summary>VIRTIO_F_EVENT_IDX (29): used_event and avail_event fields.</summary>
    public const ulong EventIndex = 1UL << 29;

    /// <summary>VIRTIO_F_VERSION_1 (32): compliance with virtio 1.x.</summary>
    public const ulong Version1 = 1UL << 32;

    /// <summary>VIRTIO_F_RING_PACKED (34): the packed virtqueue layout.</summary>
    public const ulong RingPacked = 1UL << 34;

    /// <summary>VIRTIO_F_IN_ORDER (35): buffers are used in the order they were made available.</summary>
    public const ulong InOrder = 1UL << 35;

    /// <summary>VIRTIO_F_NOTIFICATION_DATA (38): the driver passes extra data in notifications.</summary>
    public const ulong NotificationData = 1UL << 38;

    /// <summary>VIRTIO_NET_F_CSUM (0): the device handles packets with partial checksum.</summary>
    public const ulong NetCsum = 1UL << 0;

    /// <summary>VIRTIO_NET_F_GUEST_CSUM (1): the driver handles packets with partial checksum.</summary>
    public const ulong NetGuestCsum = 1UL << 1;

    /// <summary>VIRTIO_NET_F_MAC (5): the device has a given MAC address.</summary>
    public const ulong NetMac = 1UL << 5;

    /// <summary>VIRTIO_NET_F_MRG_RXBUF (15): the driver can merge receive buffers.</summary>
    public const ulong NetMergeRxBuffers = 1UL << 15;

    /// <summary>VIRTIO_NET_F_STATUS (16): the configuration status field is available.</summary>
    public const ulong NetStatus = 1UL << 16;

    /// <summary>VIRTIO_NET_F_CTRL_VQ (17): a control channel is available.</summary>
    public const ulong NetControlQueue = 1UL << 17;

    /// <summary>VIRTIO_NET_F_MQ (22): multiqueue with automatic receive steering.</summary>
    public const ulong NetMultiqueue = 1UL << 22;

    /// <summary>The ring-level features a negotiated feature word implies.</summary>
    /// <param name="negotiated">The negotiated 64-bit feature word.</param>
    /// <returns>The ring features among them.</returns>
    public static RingFeatures ToRingFeatures(ulong negotiated)
    {
        var f = RingFeatures.None;
        if ((negotiated & IndirectDescriptors) != 0)
        {
            f |= RingFeatures.IndirectDescriptors;
        }

        if ((negotiated & EventIndex) != 0)
        {
            f |= RingFeatures.EventIndex;
        }

        if ((negotiated & InOrder) != 0)
        {
            f |= RingFeatures.InOrder;
        }

        return f;
    }
}

/// <summary>The negotiated features that change how a ring behaves.</summary>
[Flags]
public enum RingFeatures
{
    /// <summary>No ring features.</summary>
    None = 0,

    /// <summary>VIRTIO_F_INDIRECT_DESC: chains may be indirect tables.</summary>
    IndirectDescriptors = 1,

    /// <summary>VIRTIO_F_EVENT_IDX: notifications are suppressed with event indices.</summary>
    EventIndex = 2,

    /// <summary>VIRTIO_F_IN_ORDER: buffers are used in the order they were made available.</summary>
    InOrder = 4,
}
