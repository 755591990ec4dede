namespace Rings.Linux.Net;

/// <summary>
/// The outcome of a software offload (checksum completion or segmentation). Anything but
/// <see cref="Ok"/> names what was wrong with the frame, its virtio_net_hdr or the room the caller
/// gave; nothing was written outside the caller's buffers in any case.
/// </summary>
public enum OffloadStatus : byte
{
    /// <summary>Done.</summary>
    Ok = 0,

    /// <summary>csum_start lies beyond the end of the frame.</summary>
    ChecksumStartBeyondFrame,

    /// <summary>The 2-byte checksum field at csum_start + csum_offset does not fit in the frame.</summary>
    ChecksumFieldBeyondFrame,

    /// <summary>gso_type is VIRTIO_NET_HDR_GSO_NONE: there is nothing to segment.</summary>
    NotGso,

    /// <summary>gso_type is none of TCPV4, UDP, TCPV6, UDP_L4 (with or without the ECN bit).</summary>
    UnknownGsoType,

    /// <summary>gso_size is 0.</summary>
    GsoSizeZero,

    /// <summary>hdr_len is larger than the frame.</summary>
    HeaderLengthBeyondFrame,

    /// <summary>The frame ends inside its Ethernet, IP, TCP or UDP header.</summary>
    FrameTooShort,

    /// <summary>More than one VLAN tag (802.1ad or stacked 802.1Q): only one 802.1Q tag is parsed.</summary>
    StackedVlanTags,

    /// <summary>The EtherType is neither IPv4 nor IPv6.</summary>
    UnsupportedEtherType,

    /// <summary>The IP version field disagrees with the EtherType.</summary>
    IpVersionMismatch,

    /// <summary>The gso_type is for the other IP version (TCPV4 on IPv6, TCPV6 on IPv4).</summary>
    GsoTypeMismatch,

    /// <summary>The IPv4 header length (IHL) is below 5 words.</summary>
    Ipv4HeaderLengthInvalid,

    /// <summary>The IPv4 options are malformed (an option length of 0 or 1, or past the header).</summary>
    Ipv4OptionsMalformed,

    /// <summary>The IP total (IPv4) or payload (IPv6) length does not match the bytes in the frame.</summary>
    IpLengthMismatch,

    /// <summary>The IPv4 packet is already a fragment (MF set or a fragment offset).</summary>
    Ipv4Fragment,

    /// <summary>The IPv6 next header is not TCP or UDP: extension headers are not parsed.</summary>
    Ipv6ExtensionHeaders,

    /// <summary>The IP protocol is not the one gso_type names (TCP for TCPV4/6, UDP for UDP and UDP_L4).</summary>
    ProtocolMismatch,

    /// <summary>The TCP data offset is below 5 words or past the end of the packet.</summary>
    TcpHeaderLengthInvalid,

    /// <summary>The UDP length field does not match the IP payload length.</summary>
    UdpLengthMismatch,

    /// <summary>The ECN bit is set on a UDP gso_type: it only describes TCP (virtio 1.2 section 5.1.6.2).</summary>
    EcnWithoutTcp,

    /// <summary>UFO over IPv6 would need a fragment header inserted; the device does not offer it.</summary>
    UfoOverIpv6,

    /// <summary>UFO with a gso_size below 8: IPv4 fragments carry multiples of 8 bytes.</summary>
    UfoSizeTooSmall,

    /// <summary>The frame needs more segments, or longer ones, than the caller's room.</summary>
    NoRoom,

    /// <summary>The sink handed out a buffer shorter than the segment it had reserved room for.</summary>
    SinkBufferTooShort,
}
