namespace Rings.Linux.Net;

/// <summary>gso_type values of virtio_net_hdr (virtio 1.2 section 5.1.6).</summary>
public static class VirtioNetGso
{
    /// <summary>VIRTIO_NET_HDR_GSO_NONE: not a GSO frame.</summary>
    public const byte None = 0;

    /// <summary>VIRTIO_NET_HDR_GSO_TCPV4: TCP over IPv4, cut into gso_size payloads (TSO).</summary>
    public const byte TcpV4 = 1;

    /// <summary>VIRTIO_NET_HDR_GSO_UDP: one UDP datagram, IP-fragmented into gso_size pieces (UFO).</summary>
    public const byte Udp = 3;

    /// <summary>VIRTIO_NET_HDR_GSO_TCPV6: TCP over IPv6 (TSO).</summary>
    public const byte TcpV6 = 4;

    /// <summary>VIRTIO_NET_HDR_GSO_UDP_L4: UDP cut into datagrams of gso_size payload (USO).</summary>
    public const byte UdpL4 = 5;

    /// <summary>VIRTIO_NET_HDR_GSO_ECN: the TCP frame has CWR set (HOST_ECN/GUEST_ECN).</summary>
    public const byte Ecn = 0x80;
}
