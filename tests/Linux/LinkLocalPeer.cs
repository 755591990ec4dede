using System.Buffers.Binary;
using System.Net;
using Rings.Linux.Net;

namespace Rings.Tests.Linux;

/// <summary>
/// A host that exists only inside a test, behind a TAP device: it answers ARP requests for its
/// IPv4 address and ICMP echo requests to it, and builds UDP frames, so the kernel on the other
/// side of the TAP has a real peer to ping and to talk to.
/// </summary>
public sealed class LinkLocalPeer(MacAddress mac, IPAddress address)
{
    private const int Ethernet = 14;
    private readonly byte[] _address = address.GetAddressBytes();

    public MacAddress Mac => mac;

    public int ArpReplies { get; private set; }

    public int EchoReplies { get; private set; }

    /// <summary>Writes the answer to <paramref name="frame"/> into <paramref name="reply"/>.</summary>
    /// <returns>The reply's length, or 0 when the frame asks nothing of this peer.</returns>
    public int Answer(ReadOnlySpan<byte> frame, Span<byte> reply)
    {
        if (frame.Length < Ethernet)
        {
            return 0;
        }

        var type = BinaryPrimitives.ReadUInt16BigEndian(frame[12..]);
        if (type == 0x0806 && frame.Length >= Ethernet + 28)
        {
            return AnswerArp(frame, reply);
        }

        return type == 0x0800 ? AnswerEcho(frame, reply) : 0;
    }

    /// <summary>A UDP/IPv4 frame from this peer. With <paramref name="partialChecksum"/> the UDP checksum field holds only the pseudo-header sum, for the receiver to complete (NEEDS_CSUM).</summary>
    /// <returns>The frame's length.</returns>
    public int BuildUdp(Span<byte> frame, MacAddress destinationMac, IPAddress destination, ushort port, ReadOnlySpan<byte> payload, bool partialChecksum)
    {
        destinationMac.WriteTo(frame);
        mac.WriteTo(frame[6..]);
        BinaryPrimitives.WriteUInt16BigEndian(frame[12..], 0x0800);
        var ip = frame[Ethernet..];
        var udpLength = 8 + payload.Length;
        ip[..20].Clear();
        ip[0] = 0x45;
        BinaryPrimitives.WriteUInt16BigEndian(ip[2..], (ushort)(20 + udpLength));
        BinaryPrimitives.WriteUInt16BigEndian(ip[6..], 0x4000);
        ip[8] = 64;
        ip[9] = 17;
        _address.CopyTo(ip[12..]);
        destination.GetAddressBytes().CopyTo(ip[16..]);
        BinaryPrimitives.WriteUInt16BigEndian(ip[10..], InternetChecksum.Compute(ip[..20]));

        var udp = ip[20..];
        BinaryPrimitives.WriteUInt16BigEndian(udp, 40000);
        BinaryPrimitives.WriteUInt16BigEndian(udp[2..], port);
        BinaryPrimitives.WriteUInt16BigEndian(udp[4..], (ushort)udpLength);
        BinaryPrimitives.WriteUInt16BigEndian(udp[6..], 0);
        payload.CopyTo(udp[8..]);
        var pseudo = PseudoHeaderSum(ip);
        var check = partialChecksum ? pseudo : (ushort)~InternetChecksum.Sum(udp[..udpLength], pseudo);
        BinaryPrimitives.WriteUInt16BigEndian(udp[6..], check);
        return Ethernet + 20 + udpLength;
    }

    /// <summary>The folded ones' complement sum of the UDP/TCP pseudo-header of the IPv4 packet <paramref name="ip"/>.</summary>
    public static ushort PseudoHeaderSum(ReadOnlySpan<byte> ip)
    {
        Span<byte> pseudo = stackalloc byte[12];
        ip.Slice(12, 8).CopyTo(pseudo);
        pseudo[9] = ip[9];
        BinaryPrimitives.WriteUInt16BigEndian(pseudo[10..], (ushort)(BinaryPrimitives.ReadUInt16BigEndian(ip[2..]) - ((ip[0] & 0xF) * 4)));
        return InternetChecksum.Sum(pseudo);
    }

    private int AnswerArp(ReadOnlySpan<byte> frame, Span<byte> reply)
    {
        var arp = frame[Ethernet..];

        // Ethernet/IPv4 request (htype 1, ptype 0x0800, oper 1) for this peer's address.
        if (BinaryPrimitives.ReadUInt16BigEndian(arp) != 1 || BinaryPrimitives.ReadUInt16BigEndian(arp[2..]) != 0x0800
            || arp[4] != 6 || arp[5] != 4 || BinaryPrimitives.ReadUInt16BigEndian(arp[6..]) != 1 || !arp.Slice(24, 4).SequenceEqual(_address))
        {
            return 0;
        }

        frame.Slice(6, 6).CopyTo(reply);
        mac.WriteTo(reply[6..]);
        BinaryPrimitives.WriteUInt16BigEndian(reply[12..], 0x0806);
        var answer = reply[Ethernet..];
        arp[..6].CopyTo(answer);
        BinaryPrimitives.WriteUInt16BigEndian(answer[6..], 2);
        mac.WriteTo(answer[8..]);
        _address.CopyTo(answer[14..]);
        arp.Slice(8, 10).CopyTo(answer[18..]);
        ArpReplies++;
        return Ethernet + 28;
    }

    private int AnswerEcho(ReadOnlySpan<byte> frame, Span<byte> reply)
    {
        var ip = frame[Ethernet..];
        if (ip.Length < 20 || ip[0] >> 4 != 4 || ip[9] != 1 || !ip.Slice(16, 4).SequenceEqual(_address))
        {
            return 0;
        }

        var headerLength = (ip[0] & 0xF) * 4;
        var total = BinaryPrimitives.ReadUInt16BigEndian(ip[2..]);
        if (headerLength < 20 || total > ip.Length || total < headerLength + 8 || ip[headerLength] != 8)
        {
            return 0;
        }

        // The request turned around: addresses swapped, type 0 (echo reply), checksums redone.
        var length = Ethernet + total;
        frame[..length].CopyTo(reply);
        frame.Slice(6, 6).CopyTo(reply);
        mac.WriteTo(reply[6..]);
        var answer = reply[Ethernet..];
        ip.Slice(16, 4).CopyTo(answer[12..]);
        ip.Slice(12, 4).CopyTo(answer[16..]);
        answer[8] = 64;
        BinaryPrimitives.WriteUInt16BigEndian(answer[10..], 0);
        BinaryPrimitives.WriteUInt16BigEndian(answer[10..], InternetChecksum.Compute(answer[..headerLength]));
        var icmp = answer[headerLength..total];
        icmp[0] = 0;
        BinaryPrimitives.WriteUInt16BigEndian(icmp[2..], 0);
        BinaryPrimitives.WriteUInt16BigEndian(icmp[2..], InternetChecksum.Compute(icmp));
        EchoReplies++;
        return length;
    }
}
