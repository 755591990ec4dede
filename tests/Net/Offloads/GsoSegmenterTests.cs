using System.Buffers.Binary;
using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using Rings.Linux.Net;

namespace Rings.Tests.Net.Offloads;

public class GsoSegmenterTests
{
    private const int Guard = 64;
    private const byte GuardByte = 0xA5;

    [Property(MaxTest = 300)]
    public Property RandomGsoFramesBecomeValidSegmentsThatReassemble() =>
        Prop.ForAll(GsoFrames.Specs.ToArbitrary(), spec =>
        {
            var frame = GsoFrames.Build(spec);
            Assert.Equal(OffloadStatus.Ok, GsoSegmenter.Measure(frame.Bytes, frame.Header, out var count, out var longest));
            Assert.Equal(frame.ExpectedSegments, count);
            var segments = SegmentAll(frame);
            Assert.Equal(longest, segments.Max(s => s.Length));
            SegmentChecker.Check(frame, segments);
        });

    [Property(MaxTest = 5)]
    public Property TsharkFindsRandomSegmentsValidAndTheirPayloadsReassemble() =>
        Prop.ForAll(Gen.ArrayOf(GsoFrames.Specs, 24).ToArbitrary(), specs =>
        {
            // One flow (addresses, ports, flow label) per frame, so tshark never mixes two
            // frames' IPv4 fragments.
            var frames = specs.Select((s, i) => GsoFrames.Build(s with { Flow = i + 1 })).ToArray();
            var all = new List<byte[]>();
            var owner = new List<int>();
            for (var i = 0; i < frames.Length; i++)
            {
                foreach (var segment in SegmentAll(frames[i]))
                {
                    all.Add(segment);
                    owner.Add(i);
                }
            }

            var rows = Tshark.Dissect(
                all,
                "ip.checksum.status", "ip.len", "ip.flags.mf", "ipv6.plen", "tcp.checksum.status", "tcp.seq_raw", "tcp.len",
                "tcp.payload", "udp.checksum.status", "udp.length", "udp.payload", "_ws.malformed", "_ws.expert.severity");
            var payloads = frames.Select(_ => new List<byte>()).ToArray();
            for (var k = 0; k < all.Count; k++)
            {
                var frame = frames[owner[k]];
                var row = rows[k];
                var where = $"segment {k} of frame {owner[k]} ({frame.Spec})";
                Assert.True(row["_ws.malformed"] == "", where);
                Assert.DoesNotContain(Tshark.SeverityError, row["_ws.expert.severity"].Split(','));
                if (frame.Spec.Ipv6)
                {
                    Assert.Equal((all[k].Length - frame.L3 - 40).ToString(), row["ipv6.plen"]);
                }
                else
                {
                    Assert.True(row["ip.checksum.status"] == Tshark.ChecksumGood, where);
                    Assert.Equal((all[k].Length - frame.L3).ToString(), row["ip.len"]);
                }

                switch (frame.Spec.Transport)
                {
                    case Transport.Tcp:
                        Assert.True(row["tcp.checksum.status"] == Tshark.ChecksumGood, where);
                        Assert.Equal(unchecked(frame.Spec.Sequence + (uint)payloads[owner[k]].Count).ToString(), row["tcp.seq_raw"]);
                        Assert.Equal((all[k].Length - frame.PayloadOffset).ToString(), row["tcp.len"]);
                        payloads[owner[k]].AddRange(Tshark.Bytes(row["tcp.payload"]));
                        break;
                    case Transport.UdpSegments:
                        Assert.True(row["udp.checksum.status"] == Tshark.ChecksumGood, where);
                        Assert.Equal((all[k].Length - frame.L4).ToString(), row["udp.length"]);
                        payloads[owner[k]].AddRange(Tshark.Bytes(row["udp.payload"]));
                        break;
                    default:
                        // tshark reassembles the fragments and dissects UDP once, at the last.
                        var last = k + 1 == all.Count || owner[k + 1] != owner[k];
                        Assert.Equal(last ? "0" : "1", row["ip.flags.mf"] == "" ? "0" : row["ip.flags.mf"]);
                        if (last)
                        {
                            Assert.True(row["udp.checksum.status"] == Tshark.ChecksumGood, where);
                            payloads[owner[k]].AddRange(Tshark.Bytes(row["udp.payload"]));
                        }

                        break;
                }
            }

            for (var i = 0; i < frames.Length; i++)
            {
                Assert.Equal(frames[i].Payload.ToArray(), payloads[i].ToArray());
            }
        });

    [Fact]
    public void TcpSegmentsAdvanceTheSequenceAndKeepPshFinLastAndCwrFirst()
    {
        var frame = GsoFrames.Build(new GsoSpec(
            Vlan: true, Ipv6: false, Transport.Tcp, Ipv4OptionWords: 2, TcpOptionWords: 3, PayloadLength: 4000, GsoSize: 1000,
            IpId: 65534, DontFragment: true, Sequence: 0xFFFF_FC00, TcpFlags: GsoFrames.TcpPsh | GsoFrames.TcpFin | GsoFrames.TcpCwr,
            Ecn: true, PayloadSeed: 1, HeaderLengthHint: 0, Flow: 1));
        Assert.Equal(VirtioNetGso.TcpV4 | VirtioNetGso.Ecn, frame.Header.GsoType);
        var segments = SegmentAll(frame);
        Assert.Equal(4, segments.Count);
        var l3 = frame.L3;
        var l4 = frame.L4;
        uint[] sequences = [0xFFFF_FC00, 0xFFFF_FFE8, 0x0000_03D0, 0x0000_07B8];
        ushort[] ids = [65534, 65535, 0, 1];
        byte[] flags = [0x80 | 0x10, 0x10, 0x10, 0x10 | 0x08 | 0x01];
        for (var s = 0; s < 4; s++)
        {
            Assert.Equal(sequences[s], BinaryPrimitives.ReadUInt32BigEndian(segments[s].AsSpan(l4 + 4)));
            Assert.Equal(ids[s], BinaryPrimitives.ReadUInt16BigEndian(segments[s].AsSpan(l3 + 4)));
            Assert.Equal(flags[s], segments[s][l4 + 13]);
            Assert.Equal(0x40, segments[s][l3 + 6]); // DF kept
            Assert.Equal(frame.PayloadOffset + 1000, segments[s].Length);
        }

        SegmentChecker.Check(frame, segments);
    }

    [Fact]
    public void NoRoomRefusesTheWholeFrameAndWritesNothing()
    {
        var frame = GsoFrames.Build(Plain(Transport.Tcp, ipv6: true, payload: 4000, gsoSize: 1000));
        var buffer = new byte[4 * 2000];
        Array.Fill(buffer, GuardByte);
        var lengths = new int[3];
        var sink = new FrameSlots(buffer, 2000, lengths);
        Assert.Equal(OffloadStatus.NoRoom, GsoSegmenter.Segment(frame.Bytes, frame.Header, ref sink));
        Assert.Equal(0, sink.Count);
        Assert.All(buffer, b => Assert.Equal(GuardByte, b));

        // Slots shorter than a segment are no room either.
        var small = new FrameSlots(buffer, frame.PayloadOffset + 999, new int[8]);
        Assert.Equal(OffloadStatus.NoRoom, GsoSegmenter.Segment(frame.Bytes, frame.Header, ref small));
        Assert.All(buffer, b => Assert.Equal(GuardByte, b));

        var enough = new FrameSlots(buffer, 2000, new int[4]);
        Assert.Equal(OffloadStatus.Ok, GsoSegmenter.Segment(frame.Bytes, frame.Header, ref enough));
        Assert.Equal(4, enough.Count);
    }

    [Fact]
    public void ASinkThatBreaksItsPromiseGetsANamedError()
    {
        var frame = GsoFrames.Build(Plain(Transport.UdpSegments, ipv6: false, payload: 3000, gsoSize: 1000));
        var sink = new ShortSink(new byte[100]);
        Assert.Equal(OffloadStatus.SinkBufferTooShort, GsoSegmenter.Segment(frame.Bytes, frame.Header, ref sink));
        var fragments = GsoFrames.Build(Plain(Transport.UdpFragments, ipv6: false, payload: 3000, gsoSize: 1000));
        Assert.Equal(OffloadStatus.SinkBufferTooShort, GsoSegmenter.Segment(fragments.Bytes, fragments.Header, ref sink));
    }

    [Fact]
    public void UfoRoundsGsoSizeDownToEightAndFragmentsKeepOneId()
    {
        var frame = GsoFrames.Build(Plain(Transport.UdpFragments, ipv6: false, payload: 2990, gsoSize: 1005) with { Ipv4OptionWords = 3 });
        var segments = SegmentAll(frame);
        Assert.Equal(3, segments.Count); // 2998 bytes of datagram in 1000-byte pieces
        Assert.Equal([0x20, 0x00], segments[0].AsSpan(frame.L3 + 6, 2).ToArray());
        Assert.Equal([0x20, 125], segments[1].AsSpan(frame.L3 + 6, 2).ToArray());
        Assert.Equal([0x00, 250], segments[2].AsSpan(frame.L3 + 6, 2).ToArray());
        SegmentChecker.Check(frame, segments);
    }

    [Fact]
    public void AFrameWithoutPayloadIsOneSegment()
    {
        var frame = GsoFrames.Build(Plain(Transport.Tcp, ipv6: false, payload: 0, gsoSize: 1448));
        var segments = SegmentAll(frame);
        Assert.Single(segments);
        SegmentChecker.Check(frame, segments);
    }

    public static TheoryData<string, OffloadStatus> Malformations() => new()
    {
        { "gso none", OffloadStatus.NotGso },
        { "gso type 2", OffloadStatus.UnknownGsoType },
        { "gso size 0", OffloadStatus.GsoSizeZero },
        { "hdr_len past the frame", OffloadStatus.HeaderLengthBeyondFrame },
        { "truncated", OffloadStatus.FrameTooShort },
        { "truncated in the tcp header", OffloadStatus.FrameTooShort },
        { "two vlan tags", OffloadStatus.StackedVlanTags },
        { "qinq", OffloadStatus.StackedVlanTags },
        { "arp", OffloadStatus.UnsupportedEtherType },
        { "version 6 in ipv4", OffloadStatus.IpVersionMismatch },
        { "tcpv6 on ipv4", OffloadStatus.GsoTypeMismatch },
        { "ihl 4", OffloadStatus.Ipv4HeaderLengthInvalid },
        { "total length one more", OffloadStatus.IpLengthMismatch },
        { "total length one less", OffloadStatus.IpLengthMismatch },
        { "more fragments", OffloadStatus.Ipv4Fragment },
        { "ipv6 payload length", OffloadStatus.IpLengthMismatch },
        { "ipv6 hop-by-hop", OffloadStatus.Ipv6ExtensionHeaders },
        { "udp gso on tcp", OffloadStatus.ProtocolMismatch },
        { "data offset 4", OffloadStatus.TcpHeaderLengthInvalid },
        { "data offset 15 past the end", OffloadStatus.TcpHeaderLengthInvalid },
        { "udp length", OffloadStatus.UdpLengthMismatch },
        { "ecn on uso", OffloadStatus.EcnWithoutTcp },
        { "ufo on ipv6", OffloadStatus.UfoOverIpv6 },
        { "ufo gso size 7", OffloadStatus.UfoSizeTooSmall },
        { "ufo option length 1", OffloadStatus.Ipv4OptionsMalformed },
        { "ufo option past the header", OffloadStatus.Ipv4OptionsMalformed },
    };

    [Theory]
    [MemberData(nameof(Malformations))]
    public void MalformedFramesGetNamedErrorsAndNothingWritten(string what, OffloadStatus expected)
    {
        var (bytes, header) = Malformed(what);
        var buffer = new byte[64 * 1024];
        Array.Fill(buffer, GuardByte);
        var sink = new FrameSlots(buffer, 2048, new int[32]);
        Assert.Equal(expected, GsoSegmenter.Segment(bytes, header, ref sink));
        Assert.Equal(expected, GsoSegmenter.Measure(bytes, header, out _, out _));
        Assert.Equal(0, sink.Count);
        Assert.All(buffer, b => Assert.Equal(GuardByte, b));
    }

    [Property(MaxTest = 3000)]
    public void RandomBytesAndHeadersNeverThrowOrWriteOutsideTheSink(byte[] bytes, byte flags, byte gsoType, ushort hdrLen, ushort gsoSize, byte slots)
    {
        var header = new VirtioNetHeader { Flags = flags, GsoType = (byte)((gsoType % 8) | (gsoType & 0x80)), HeaderLength = hdrLen, GsoSize = (ushort)(gsoSize % 3000) };
        SegmentIntoGuardedSlots(bytes, header, 1 + (slots % 40), 256);
    }

    [Property(MaxTest = 1000)]
    public Property CorruptedFramesNeverThrowOrWriteOutsideTheSink() =>
        Prop.ForAll(
            GsoFrames.Specs.ToArbitrary(),
            Gen.ArrayOf(Gen.Choose(0, int.MaxValue), 6).ToArbitrary(),
            (spec, noise) =>
            {
                var frame = GsoFrames.Build(spec with { PayloadLength = spec.PayloadLength % 3000 });
                var bytes = frame.Bytes;

                // Overwrite a few header bytes, maybe truncate, maybe change a header field.
                for (var k = 0; k < noise[0] % 4; k++)
                {
                    bytes[noise[k + 1] % Math.Min(bytes.Length, frame.PayloadOffset + 4)] = (byte)(noise[k + 1] >> 16);
                }

                var length = noise[5] % 3 == 0 ? noise[5] % (bytes.Length + 1) : bytes.Length;
                var header = frame.Header;
                switch (noise[4] % 5)
                {
                    case 0: header.GsoSize = (ushort)(noise[4] >> 8); break;
                    case 1: header.HeaderLength = (ushort)(noise[4] >> 8); break;
                    case 2: header.GsoType = (byte)(noise[4] >> 8); break;
                }

                SegmentIntoGuardedSlots(bytes.AsSpan(0, length).ToArray(), header, 1 + (noise[3] % 64), 1 + (noise[2] % 4000));
            });

    [Fact]
    public void SegmentingAllocatesNothing()
    {
        var frame = GsoFrames.Build(Plain(Transport.Tcp, ipv6: false, payload: 64000, gsoSize: 1448));
        var buffer = new byte[64 * 1600];
        var lengths = new int[64];
        for (var i = 0; i < 200; i++)
        {
            var warm = new FrameSlots(buffer, 1600, lengths);
            Assert.Equal(OffloadStatus.Ok, GsoSegmenter.Segment(frame.Bytes, frame.Header, ref warm));
        }

        Assert.Equal(0, Allocations.Steady(() =>
        {
            for (var i = 0; i < 50; i++)
            {
                var sink = new FrameSlots(buffer, 1600, lengths);
                GsoSegmenter.Segment(frame.Bytes, frame.Header, ref sink);
            }
        }));
    }

    internal static List<byte[]> SegmentAll(GsoFrame frame)
    {
        var slot = frame.PayloadOffset + frame.Unit;
        var count = frame.ExpectedSegments;
        var buffer = new byte[slot * count];
        var lengths = new int[count];
        var sink = new FrameSlots(buffer, slot, lengths);
        var status = GsoSegmenter.Segment(frame.Bytes, frame.Header, ref sink);
        Assert.True(status == OffloadStatus.Ok, $"{status} for {frame.Spec}");
        var result = new List<byte[]>(sink.Count);
        for (var i = 0; i < sink.Count; i++)
        {
            result.Add(sink[i].ToArray());
        }

        return result;
    }

    private static void SegmentIntoGuardedSlots(byte[] bytes, VirtioNetHeader header, int slots, int slotSize)
    {
        var buffer = new byte[Guard + (slots * slotSize) + Guard];
        Array.Fill(buffer, GuardByte);
        var lengths = new int[slots];
        var sink = new FrameSlots(buffer.AsSpan(Guard, slots * slotSize), slotSize, lengths);
        var original = bytes.ToArray();
        var status = GsoSegmenter.Segment(bytes, header, ref sink);
        Assert.True(Enum.IsDefined(status));
        Assert.Equal(original, bytes);
        Assert.All(buffer.AsSpan(0, Guard).ToArray(), b => Assert.Equal(GuardByte, b));
        Assert.All(buffer.AsSpan(buffer.Length - Guard).ToArray(), b => Assert.Equal(GuardByte, b));
        if (status == OffloadStatus.Ok)
        {
            Assert.InRange(sink.Count, 1, slots);
        }
        else
        {
            Assert.Equal(0, sink.Count);
        }
    }

    private static GsoSpec Plain(Transport transport, bool ipv6, int payload, int gsoSize) => new(
        Vlan: false, ipv6, transport, Ipv4OptionWords: 0, TcpOptionWords: 0, payload, gsoSize, IpId: 7, DontFragment: false,
        Sequence: 1000, TcpFlags: 0x18, Ecn: false, PayloadSeed: 3, HeaderLengthHint: 0, Flow: 1);

    private static (byte[] Bytes, VirtioNetHeader Header) Malformed(string what)
    {
        var tcp4 = GsoFrames.Build(Plain(Transport.Tcp, ipv6: false, payload: 3000, gsoSize: 1000) with { Ipv4OptionWords = 3 });
        var tcp6 = GsoFrames.Build(Plain(Transport.Tcp, ipv6: true, payload: 3000, gsoSize: 1000));
        var uso4 = GsoFrames.Build(Plain(Transport.UdpSegments, ipv6: false, payload: 3000, gsoSize: 1000));
        var uso6 = GsoFrames.Build(Plain(Transport.UdpSegments, ipv6: true, payload: 3000, gsoSize: 1000));
        var ufo = GsoFrames.Build(Plain(Transport.UdpFragments, ipv6: false, payload: 3000, gsoSize: 1000) with { Ipv4OptionWords = 3 });
        var f = tcp4.Bytes;
        var h = tcp4.Header;
        var l3 = tcp4.L3;
        var l4 = tcp4.L4;
        switch (what)
        {
            case "gso none": h.GsoType = VirtioNetGso.None; break;
            case "gso type 2": h.GsoType = 2; break;
            case "gso size 0": h.GsoSize = 0; break;
            case "hdr_len past the frame": h.HeaderLength = (ushort)(f.Length + 1); break;
            case "truncated": h.HeaderLength = 0; return (f[..12], h);
            case "truncated in the tcp header": h.HeaderLength = 0; return (Retotal(f[..(l4 + 10)], l3), h);
            case "two vlan tags": return (Tagged(Tagged(f, 0x8100), 0x8100), h);
            case "qinq": return (Tagged(Tagged(f, 0x8100), 0x88A8), h);
            case "arp": f[13] = 0x06; break;
            case "version 6 in ipv4": f[l3] = 0x68; break;
            case "tcpv6 on ipv4": h.GsoType = VirtioNetGso.TcpV6; break;
            case "ihl 4": f[l3] = 0x44; break;
            case "total length one more": BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(l3 + 2), (ushort)(f.Length - l3 + 1)); break;
            case "total length one less": BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(l3 + 2), (ushort)(f.Length - l3 - 1)); break;
            case "more fragments": f[l3 + 6] |= 0x20; break;
            case "ipv6 payload length": BinaryPrimitives.WriteUInt16BigEndian(tcp6.Bytes.AsSpan(tcp6.L3 + 4), 100); return (tcp6.Bytes, tcp6.Header);
            case "ipv6 hop-by-hop": tcp6.Bytes[tcp6.L3 + 6] = 0; return (tcp6.Bytes, tcp6.Header);
            case "udp gso on tcp": h.GsoType = VirtioNetGso.UdpL4; break;
            case "data offset 4": f[l4 + 12] = 0x40; break;
            case "data offset 15 past the end":
                var cut = Retotal(f[..(l4 + 40)], l3);
                cut[l4 + 12] = 0xF0;
                return (cut, h);
            case "udp length": BinaryPrimitives.WriteUInt16BigEndian(uso4.Bytes.AsSpan(uso4.L4 + 4), 9); return (uso4.Bytes, uso4.Header);
            case "ecn on uso": var e = uso6.Header; e.GsoType |= VirtioNetGso.Ecn; return (uso6.Bytes, e);
            case "ufo on ipv6": var u = uso6.Header; u.GsoType = VirtioNetGso.Udp; return (uso6.Bytes, u);
            case "ufo gso size 7": var s = ufo.Header; s.GsoSize = 7; return (ufo.Bytes, s);
            case "ufo option length 1": ufo.Bytes[ufo.L3 + 25] = 1; return (ufo.Bytes, ufo.Header);
            case "ufo option past the header": ufo.Bytes[ufo.L3 + 25] = 9; return (ufo.Bytes, ufo.Header);
            default: throw new ArgumentException(what);
        }

        return (f, h);
    }

    // The frame cut short, with the IPv4 total length following, so the cut is what is wrong.
    private static byte[] Retotal(byte[] frame, int l3)
    {
        BinaryPrimitives.WriteUInt16BigEndian(frame.AsSpan(l3 + 2), (ushort)(frame.Length - l3));
        return frame;
    }

    // A tag of type outer inserted after the MAC addresses: [dst src outer tci] type ...
    private static byte[] Tagged(byte[] frame, ushort outer)
    {
        var tagged = new byte[frame.Length + 4];
        frame.AsSpan(0, 12).CopyTo(tagged);
        BinaryPrimitives.WriteUInt16BigEndian(tagged.AsSpan(12), outer);
        BinaryPrimitives.WriteUInt16BigEndian(tagged.AsSpan(14), 0x0064);
        frame.AsSpan(12).CopyTo(tagged.AsSpan(16));
        return tagged;
    }

    private struct ShortSink(byte[] buffer) : ISegmentSink
    {
        public readonly bool TryReserve(int segments, int maxSegmentLength) => true;

        public readonly Span<byte> Take(int length) => buffer;

        public readonly void Commit(int length)
        {
        }
    }
}
