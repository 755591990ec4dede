namespace Rings.Linux.Runtime;

/// <summary>
/// What a port accepts on transmit beyond plain, fully checksummed frames: the offloads its peer
/// negotiated (for a virtio peer the GUEST_* feature bits, for a TAP device TUNSETOFFLOAD).
/// A frame whose virtio-net header asks for something the destination lacks is completed in
/// software before it goes there: checksums completed, GSO frames segmented (or dropped as
/// <see cref="DropReason.OffloadUnsupported"/> when that cannot be done).
/// </summary>
[Flags]
public enum PortOffloads
{
    /// <summary>Only complete frames with valid checksums.</summary>
    None = 0,

    /// <summary>Partial checksums (VIRTIO_NET_HDR_F_NEEDS_CSUM; virtio GUEST_CSUM).</summary>
    Checksum = 1,

    /// <summary>TCP over IPv4 segmentation (GSO TCPV4; virtio GUEST_TSO4).</summary>
    Tso4 = 2,

    /// <summary>TCP over IPv6 segmentation (GSO TCPV6; virtio GUEST_TSO6).</summary>
    Tso6 = 4,

    /// <summary>The ECN bit of GSO frames (virtio GUEST_ECN).</summary>
    Ecn = 8,

    /// <summary>UDP segmentation (GSO UDP_L4; virtio GUEST_USO4/6).</summary>
    Uso = 16,
}
