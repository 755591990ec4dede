using System.Buffers.Binary;

namespace Rings.Linux.Net;

/// <summary>
/// Where the headers of an Ethernet frame carrying TCP or UDP over IPv4 or IPv6 are: Ethernet
/// with at most one 802.1Q tag, IPv4 with options, IPv6 without extension headers. Every offset
/// is checked against the frame before it is returned, so users index without further checks.
/// </summary>
internal readonly struct FrameLayout
{
    /// <summary>EtherType IPv4.</summary>
    public const ushort EtherTypeIpv4 = 0x0800;

    /// <summary>EtherType IPv6.</summary>
    public const ushort EtherTypeIpv6 = 0x86DD;

    /// <summary>EtherType of an 802.1Q tag.</summary>
    public const ushort EtherTypeVlan = 0x8100;

    /// <summary>EtherType of an 802.1ad (QinQ) service tag.</summary>
    public const ushort EtherTypeQinQ = 0x88A8;

    /// <summary>IP protocol number of TCP.</summary>
    public const byte ProtocolTcp = 6;

    /// <summary>IP protocol number of UDP.</summary>
    public const byte ProtocolUdp = 17;

    /// <summary>Offset of the IP header.</summary>
    public int L3Offset { get; init; }

    /// <summary>True for IPv6, false for IPv4.</summary>
    public bool IsIpv6 { get; init; }

    /// <summary>IP header length (IHL x 4 for IPv4, 40 for IPv6).</summary>
    public int L3HeaderLength { get; init; }

    /// <summary>Offset of the TCP or UDP header.</summary>
    public int L4Offset => L3Offset + L3HeaderLength;

    /// <summary>TCP or UDP.</summary>
    public byte Protocol { get; init; }

    /// <summary>TCP data offset x 4, or 8 for UDP.</summary>
    public int L4HeaderLength { get; init; }

    /// <summary>Offset of the transport payload (the end of all headers).</summary>
    public int PayloadOffset => L4Offset + L4HeaderLength;

    /// <summary>Offset and length of the source and destination addresses (the pseudo-header's).</summary>
    public int AddressOffset => L3Offset + (IsIpv6 ? 8 : 12);

    /// <summary>Length of both addresses together.</summary>
    public int AddressLength => IsIpv6 ? 32 : 8;

    /// <summary>Parses the headers of <paramref name="frame"/>, which must end where the IP packet ends.</summary>
    /// <param name="frame">The Ethernet frame (no virtio_net_hdr).</param>
    /// <param name="layout">The header offsets when the result is <see cref="OffloadStatus.Ok"/>.</param>
    /// <returns>Ok, or what is wrong.</returns>
    public static OffloadStatus Parse(ReadOnlySpan<byte> frame, out FrameLayout layout)
    {
        layout = default;
        if (frame.Length < 14)
        {
            return OffloadStatus.FrameTooShort;
        }

        var etherType = BinaryPrimitives.ReadUInt16BigEndian(frame[12..]);
        var l3 = 14;
        if (etherType == EtherTypeVlan)
        {
            if (frame.Length < 18)
            {
                return OffloadStatus.FrameTooShort;
            }

            etherType = BinaryPrimitives.ReadUInt16BigEndian(frame[16..]);
            l3 = 18;
            if (etherType is EtherTypeVlan or EtherTypeQinQ)
            {
                return OffloadStatus.StackedVlanTags;
            }
        }
        else if (etherType == EtherTypeQinQ)
        {
            return OffloadStatus.StackedVlanTags;
        }

        int l3Length;
        byte protocol;
        bool ipv6;
        if (etherType == EtherTypeIpv4)
        {
            if (frame.Length < l3 + 20)
            {
                return OffloadStatus.FrameTooShort;
            }

            if (frame[l3] >> 4 != 4)
            {
                return OffloadStatus.IpVersionMismatch;
            }

            l3Length = (frame[l3] & 0xF) * 4;
            if (l3Length < 20)
            {
                return OffloadStatus.Ipv4HeaderLengthInvalid;
            }

            var total = BinaryPrimitives.ReadUInt16BigEndian(frame[(l3 + 2)..]);
            if (frame.Length < l3 + l3Length)
            {
                return OffloadStatus.FrameTooShort;
            }

            if (total < l3Length || l3 + total != frame.Length)
            {
                return OffloadStatus.IpLengthMismatch;
            }

            if ((BinaryPrimitives.ReadUInt16BigEndian(frame[(l3 + 6)..]) & 0x3FFF) != 0)
            {
                return OffloadStatus.Ipv4Fragment;
            }

            protocol = frame[l3 + 9];
            ipv6 = false;
        }
        else if (etherType == EtherTypeIpv6)
        {
            if (frame.Length < l3 + 40)
            {
                return OffloadStatus.FrameTooShort;
            }

            if (frame[l3] >> 4 != 6)
            {
                return OffloadStatus.IpVersionMismatch;
            }

            l3Length = 40;
            if (l3 + 40 + BinaryPrimitives.ReadUInt16BigEndian(frame[(l3 + 4)..]) != frame.Length)
            {
                return OffloadStatus.IpLengthMismatch;
            }

            protocol = frame[l3 + 6];
            if (protocol is not (ProtocolTcp or ProtocolUdp))
            {
                return OffloadStatus.Ipv6ExtensionHeaders;
            }

            ipv6 = true;
        }
        else
        {
            return OffloadStatus.UnsupportedEtherType;
        }

        var l4 = l3 + l3Length;
        int l4Length;
        if (protocol == ProtocolTcp)
        {
            if (frame.Length < l4 + 20)
            {
                return OffloadStatus.FrameTooShort;
            }

            l4Length = (frame[l4 + 12] >> 4) * 4;
            if (l4Length < 20 || l4 + l4Length > frame.Length)
            {
                return OffloadStatus.TcpHeaderLengthInvalid;
            }
        }
        else if (protocol == ProtocolUdp)
        {
            if (frame.Length < l4 + 8)
            {
                return OffloadStatus.FrameTooShort;
            }

            if (BinaryPrimitives.ReadUInt16BigEndian(frame[(l4 + 4)..]) != frame.Length - l4)
            {
                return OffloadStatus.UdpLengthMismatch;
            }

            l4Length = 8;
        }
        else
        {
            return OffloadStatus.ProtocolMismatch;
        }

        layout = new FrameLayout
        {
            L3Offset = l3,
            IsIpv6 = ipv6,
            L3HeaderLength = l3Length,
            Protocol = protocol,
            L4HeaderLength = l4Length,
        };
        return OffloadStatus.Ok;
    }

    /// <summary>The ones' complement sum of the pseudo-header without its length (RFC 793, RFC 8200 section 8.1).</summary>
    /// <param name="frame">The frame.</param>
    /// <returns>Addresses plus protocol, folded.</returns>
    public ushort PseudoHeaderSum(ReadOnlySpan<byte> frame) =>
        InternetChecksum.Sum(frame.Slice(AddressOffset, AddressLength), Protocol);
}
