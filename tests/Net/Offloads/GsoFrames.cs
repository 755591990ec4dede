using System.Buffers.Binary;
using FsCheck;
using FsCheck.Fluent;
using Rings.Linux.Net;

namespace Rings.Tests.Net.Offloads;

internal enum Transport
{
    Tcp,
    UdpSegments,
    UdpFragments,
}

/// <summary>What a random GSO frame is made of; <see cref="GsoFrames.Build"/> turns it into bytes.</summary>
internal sealed record GsoSpec(
    bool Vlan,
    bool Ipv6,
    Transport Transport,
    int Ipv4OptionWords,
    int TcpOptionWords,
    int PayloadLength,
    int GsoSize,
    ushort IpId,
    bool DontFragment,
    uint Sequence,
    byte TcpFlags,
    bool Ecn,
    int PayloadSeed,
    int HeaderLengthHint,
    int Flow);

/// <summary>A GSO frame as a guest would send it, with the offsets its builder knows.</summary>
internal sealed class GsoFrame
{
    public required GsoSpec Spec { get; init; }

    public required byte[] Bytes { get; init; }

    public required VirtioNetHeader Header { get; init; }

    public required int L3 { get; init; }

    public required int L4 { get; init; }

    public required int PayloadOffset { get; init; }

    public byte Protocol => Spec.Transport == Transport.Tcp ? (byte)6 : (byte)17;

    public ReadOnlySpan<byte> Addresses => Bytes.AsSpan(L3 + (Spec.Ipv6 ? 8 : 12), Spec.Ipv6 ? 32 : 8);

    public ReadOnlySpan<byte> Payload => Bytes.AsSpan(PayloadOffset);

    /// <summary>The payload bytes of each frame: gso_size, rounded down to 8 for IPv4 fragments.</summary>
    public int Unit => Spec.Transport == Transport.UdpFragments ? Spec.GsoSize & ~7 : Spec.GsoSize;

    public int ExpectedSegments
    {
        get
        {
            var cut = Spec.Transport == Transport.UdpFragments ? Bytes.Length - L4 : Payload.Length;
            return cut == 0 ? 1 : (cut + Unit - 1) / Unit;
        }
    }
}

internal static class GsoFrames
{
    public const int ServerPort = 5201;

    public const byte TcpFin = 0x01;
    public const byte TcpPsh = 0x08;
    public const byte TcpCwr = 0x80;

    /// <summary>Random valid specs: VLAN or not, IPv4 (with options) or IPv6, TCP, USO or UFO, any MSS.</summary>
    public static Gen<GsoSpec> Specs =>
        from shape in Gen.Choose(0, 7)
        from transport in Gen.Elements(Transport.Tcp, Transport.Tcp, Transport.UdpSegments, Transport.UdpFragments)
        from ipOptions in Gen.Choose(0, 10)
        from tcpOptions in Gen.Choose(0, 10)
        from payload in Gen.Frequency((2, Gen.Choose(0, 200)), (5, Gen.Choose(0, 16000)), (1, Gen.Choose(16000, 65000)))
        from gsoSize in Gen.Frequency((1, Gen.Choose(1, 64)), (4, Gen.Choose(1, 9000)), (2, Gen.Elements(536, 1448, 1460, 1472, 1480)))
        from id in Gen.Frequency((1, Gen.Choose(65500, 65535)), (3, Gen.Choose(0, 65535)))
        from sequence in Gen.Frequency((1, Gen.Choose(-70000, -1)), (3, Gen.Choose(int.MinValue, int.MaxValue)))
        from flags in Gen.Choose(0, 255)
        from seed in Gen.Choose(0, int.MaxValue)
        from hint in Gen.Choose(0, 3)
        select new GsoSpec(
            Vlan: (shape & 1) != 0,
            Ipv6: (shape & 2) != 0,
            Transport: (shape & 2) != 0 && transport == Transport.UdpFragments ? Transport.UdpSegments : transport,
            Ipv4OptionWords: ipOptions,
            TcpOptionWords: tcpOptions,
            PayloadLength: payload,
            GsoSize: gsoSize,
            IpId: (ushort)id,
            DontFragment: (shape & 4) != 0,
            Sequence: unchecked((uint)sequence),
            TcpFlags: (byte)(flags & ~0x26), // no SYN, RST or URG in a data burst
            Ecn: (flags & 0x80) != 0 && (flags & 1) != 0,
            PayloadSeed: seed,
            HeaderLengthHint: hint,
            Flow: 0);

    public static GsoFrame Build(GsoSpec spec)
    {
        var l3 = spec.Vlan ? 18 : 14;
        var ipHeader = spec.Ipv6 ? 40 : 20 + (4 * spec.Ipv4OptionWords);
        var l4 = l3 + ipHeader;
        var l4Header = spec.Transport == Transport.Tcp ? 20 + (4 * spec.TcpOptionWords) : 8;
        var payloadOffset = l4 + l4Header;

        // Keep the IP packet within 65535 bytes and the frame within 400 segments.
        var room = (spec.Ipv6 ? 65535 + 40 : 65535) - ipHeader - l4Header;
        var payloadLength = Math.Min(spec.PayloadLength, room);
        var cut = spec.Transport == Transport.UdpFragments ? payloadLength + 8 : payloadLength;
        var gsoSize = Math.Max(spec.GsoSize, (cut + 399) / 400);
        if (spec.Transport == Transport.UdpFragments)
        {
            // Fragments carry multiples of 8; the low bits of gso_size stay to test rounding down.
            var minUnit = Math.Max(8, ((cut + 399) / 400 + 7) & ~7);
            if ((spec.GsoSize & ~7) < minUnit)
            {
                gsoSize = minUnit + (spec.GsoSize & 7);
            }
        }

        spec = spec with { PayloadLength = payloadLength, GsoSize = gsoSize, Ecn = spec.Ecn && spec.Transport == Transport.Tcp };
        var frame = new byte[payloadOffset + payloadLength];
        var f = frame.AsSpan();

        byte[] dst = [0x02, 0x52, 0x47, 0x53, 0x4F, 0x02];
        byte[] src = [0x02, 0x52, 0x47, 0x53, 0x4F, 0x01];
        dst.CopyTo(f);
        src.CopyTo(f[6..]);
        if (spec.Vlan)
        {
            BinaryPrimitives.WriteUInt16BigEndian(f[12..], 0x8100);
            BinaryPrimitives.WriteUInt16BigEndian(f[14..], 0x2064); // priority 1, VLAN 100
        }

        BinaryPrimitives.WriteUInt16BigEndian(f[(l3 - 2)..], spec.Ipv6 ? (ushort)0x86DD : (ushort)0x0800);
        var protocol = spec.Transport == Transport.Tcp ? (byte)6 : (byte)17;
        if (spec.Ipv6)
        {
            BinaryPrimitives.WriteUInt32BigEndian(f[l3..], 0x6000_0000u | (uint)(spec.Flow & 0xFFFFF));
            BinaryPrimitives.WriteUInt16BigEndian(f[(l3 + 4)..], (ushort)(frame.Length - l3 - 40));
            f[l3 + 6] = protocol;
            f[l3 + 7] = 64;
            byte[] linkLocal = [0xFE, 0x80, 0, 0, 0, 0, 0, 0, 0, 0x52, 0x47, 0xFF, 0xFE, 0x53, 0, 0];
            linkLocal.CopyTo(f[(l3 + 8)..]);
            BinaryPrimitives.WriteUInt16BigEndian(f[(l3 + 22)..], (ushort)spec.Flow);
            linkLocal.CopyTo(f[(l3 + 24)..]);
            BinaryPrimitives.WriteUInt16BigEndian(f[(l3 + 38)..], (ushort)(spec.Flow + 0x8000));
        }
        else
        {
            f[l3] = (byte)(0x40 | (ipHeader / 4));
            BinaryPrimitives.WriteUInt16BigEndian(f[(l3 + 2)..], (ushort)(frame.Length - l3));
            BinaryPrimitives.WriteUInt16BigEndian(f[(l3 + 4)..], spec.IpId);
            f[l3 + 6] = spec.DontFragment ? (byte)0x40 : (byte)0;
            f[l3 + 8] = 64;
            f[l3 + 9] = protocol;
            f[(l3 + 12)..].Fill(0); // 169.254.x.y, x.y from the flow: one flow per frame in a batch
            byte[] source = [169, 254, (byte)(1 + (spec.Flow >> 8)), (byte)spec.Flow];
            byte[] destination = [169, 254, (byte)(128 + (spec.Flow >> 8)), (byte)spec.Flow];
            source.CopyTo(f[(l3 + 12)..]);
            destination.CopyTo(f[(l3 + 16)..]);
            WriteIpv4Options(f.Slice(l3 + 20, ipHeader - 20));
            f[(l3 + 10)..(l3 + 12)].Clear();
            BinaryPrimitives.WriteUInt16BigEndian(f[(l3 + 10)..], (ushort)~Rfc1071.Sum(f.Slice(l3, ipHeader)));
        }

        BinaryPrimitives.WriteUInt16BigEndian(f[l4..], (ushort)(40000 + spec.Flow));
        BinaryPrimitives.WriteUInt16BigEndian(f[(l4 + 2)..], ServerPort);
        int csumOffset;
        if (spec.Transport == Transport.Tcp)
        {
            BinaryPrimitives.WriteUInt32BigEndian(f[(l4 + 4)..], spec.Sequence);
            BinaryPrimitives.WriteUInt32BigEndian(f[(l4 + 8)..], 0x0102_0304);
            f[l4 + 12] = (byte)((l4Header / 4) << 4);
            f[l4 + 13] = (byte)(spec.TcpFlags | 0x10); // ACK
            BinaryPrimitives.WriteUInt16BigEndian(f[(l4 + 14)..], 502);
            WriteTcpOptions(f.Slice(l4 + 20, l4Header - 20));
            csumOffset = 16;
        }
        else
        {
            BinaryPrimitives.WriteUInt16BigEndian(f[(l4 + 4)..], (ushort)(frame.Length - l4));
            csumOffset = 6;
        }

        new Random(spec.PayloadSeed).NextBytes(f[payloadOffset..]);

        // A guest leaves the pseudo-header sum in the checksum field (virtio 1.2 section 5.1.6.2).
        var pseudo = Rfc1071.PseudoHeader(f.Slice(l3 + (spec.Ipv6 ? 8 : 12), spec.Ipv6 ? 32 : 8), protocol, frame.Length - l4);
        BinaryPrimitives.WriteUInt16BigEndian(f[(l4 + csumOffset)..], pseudo);

        byte gsoType = spec.Transport switch
        {
            Transport.Tcp => spec.Ipv6 ? VirtioNetGso.TcpV6 : VirtioNetGso.TcpV4,
            Transport.UdpSegments => VirtioNetGso.UdpL4,
            _ => VirtioNetGso.Udp,
        };
        var hint = spec.HeaderLengthHint switch
        {
            1 => 0,
            2 => (spec.PayloadSeed % (frame.Length + 1)),
            _ => payloadOffset,
        };
        var header = new VirtioNetHeader
        {
            Flags = VirtioNetHeader.FlagNeedsCsum,
            GsoType = (byte)(gsoType | (spec.Ecn ? VirtioNetGso.Ecn : 0)),
            HeaderLength = (ushort)hint,
            GsoSize = (ushort)spec.GsoSize,
            CsumStart = (ushort)l4,
            CsumOffset = (ushort)csumOffset,
        };
        return new GsoFrame { Spec = spec, Bytes = frame, Header = header, L3 = l3, L4 = l4, PayloadOffset = payloadOffset };
    }

    // A router alert (copied into every fragment), a record route (first fragment only), NOPs.
    private static void WriteIpv4Options(Span<byte> options)
    {
        options.Fill(1);
        var k = 0;
        if (options.Length - k >= 4)
        {
            ((ReadOnlySpan<byte>)[0x94, 4, 0, 0]).CopyTo(options[k..]);
            k += 4;
        }

        if (options.Length - k >= 8)
        {
            ((ReadOnlySpan<byte>)[7, 7, 4, 0, 0, 0, 0]).CopyTo(options[k..]);
        }
    }

    // A timestamp option when there is room, padded with NOPs.
    private static void WriteTcpOptions(Span<byte> options)
    {
        options.Fill(1);
        if (options.Length >= 12)
        {
            ((ReadOnlySpan<byte>)[1, 1, 8, 10, 0, 0, 0x12, 0x34, 0, 0, 0x56, 0x78]).CopyTo(options);
        }
    }
}
