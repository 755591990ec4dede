namespace Rings.Linux.Plumbing;

/// <summary>Whether <see cref="TapDevice.Open"/> may create the device, attach to an existing one, or both.</summary>
public enum TapOpenMode
{
    /// <summary>Create the device if no interface has the name, else attach to the existing TAP device.</summary>
    CreateOrAttach,

    /// <summary>Create the device; fail if an interface has the name.</summary>
    Create,

    /// <summary>Attach to an existing (persistent) TAP device; fail if there is none.</summary>
    Attach,
}

/// <summary>
/// Offloads of a TAP device (TUNSETOFFLOAD, the TUN_F_* flags): what this side accepts from the
/// kernel. With <see cref="Checksum"/> the kernel may hand over frames with a partial checksum
/// (virtio_net_hdr NEEDS_CSUM), with the TSO and USO flags GSO frames larger than the MTU; without
/// them it completes checksums and segments before the frame is read.
/// </summary>
[Flags]
public enum TapOffloads : uint
{
    /// <summary>Every frame arrives complete.</summary>
    None = 0,

    /// <summary>TUN_F_CSUM: partial checksums (required by all the others).</summary>
    Checksum = 0x01,

    /// <summary>TUN_F_TSO4: TCP over IPv4 segmentation.</summary>
    Tso4 = 0x02,

    /// <summary>TUN_F_TSO6: TCP over IPv6 segmentation.</summary>
    Tso6 = 0x04,

    /// <summary>TUN_F_TSO_ECN: TSO with the ECN (CWR) bit.</summary>
    TsoEcn = 0x08,

    /// <summary>TUN_F_UFO: UDP fragmentation offload (old kernels only).</summary>
    Ufo = 0x10,

    /// <summary>TUN_F_USO4: UDP segmentation over IPv4.</summary>
    Uso4 = 0x20,

    /// <summary>TUN_F_USO6: UDP segmentation over IPv6.</summary>
    Uso6 = 0x40,
}

/// <summary>The link of a TAP device as this side last saw it.</summary>
public enum TapLinkState
{
    /// <summary>The interface is up: frames pass.</summary>
    Up,

    /// <summary>The interface is administratively down: the kernel refuses frames (EIO) and sends none.</summary>
    Down,

    /// <summary>The interface was deleted (ip link del): the descriptor is dead (EBADFD) for good.</summary>
    Deleted,
}

/// <summary>The outcome of one frame's receive or transmit.</summary>
public enum TapStatus
{
    /// <summary>The frame was read or written.</summary>
    Done,

    /// <summary>Nothing to read, or the kernel cannot take a frame now: try again later.</summary>
    WouldBlock,

    /// <summary>The interface is down: nothing passes until it is brought up.</summary>
    LinkDown,

    /// <summary>The interface was deleted: nothing passes again on this descriptor.</summary>
    Deleted,

    /// <summary>This frame was lost and counted (too large for the buffer, or refused by the kernel); the next may pass.</summary>
    Dropped,
}

/// <summary>Counters of a <see cref="TapDevice"/>'s data path.</summary>
/// <param name="ReceivedFrames">Frames read.</param>
/// <param name="ReceivedBytes">Bytes read, virtio-net headers included.</param>
/// <param name="TransmittedFrames">Frames written.</param>
/// <param name="TransmittedBytes">Bytes written, virtio-net headers included.</param>
/// <param name="ReceiveDropped">Frames lost on receive: too large for the buffer, or an error reading them.</param>
/// <param name="TransmitRefused">Frames the kernel refused (a malformed header or frame; dropped).</param>
/// <param name="LinkDownErrors">Transmits refused because the link was down.</param>
public readonly record struct TapCounters(
    long ReceivedFrames,
    long ReceivedBytes,
    long TransmittedFrames,
    long TransmittedBytes,
    long ReceiveDropped,
    long TransmitRefused,
    long LinkDownErrors);
