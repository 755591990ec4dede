using System.Buffers.Binary;

namespace Rings.Tests.Net.Offloads;

/// <summary>
/// Checks the frames cut from a <see cref="GsoFrame"/> field by field against what its builder
/// knows (no parsing shared with the library): lengths, IDs, sequence numbers, flags, checksums
/// with <see cref="Rfc1071"/>, and that the payloads put back together are the original.
/// </summary>
internal static class SegmentChecker
{
    public static void Check(GsoFrame original, IReadOnlyList<byte[]> segments)
    {
        Assert.Equal(original.ExpectedSegments, segments.Count);
        if (original.Spec.Transport == Transport.UdpFragments)
        {
            CheckFragments(original, segments);
            return;
        }

        var o = original.Bytes;
        var l3 = original.L3;
        var l4 = original.L4;
        var headers = original.PayloadOffset;
        var tcp = original.Spec.Transport == Transport.Tcp;
        var reassembled = new List<byte>(original.Payload.Length);
        for (var s = 0; s < segments.Count; s++)
        {
            var seg = segments[s];
            var payload = seg.Length - headers;
            Assert.InRange(payload, 0, original.Unit);
            Assert.True(s == segments.Count - 1 || payload == original.Unit, "only the last segment may be short");
            Assert.Equal(o.AsSpan(0, l3).ToArray(), seg.AsSpan(0, l3).ToArray());
            CheckIpHeader(original, seg, (ushort)(original.Spec.IpId + s), o.AsSpan(l3 + 6, 2));

            // Ports (and for TCP the ack, window, urgent pointer and options) are unchanged.
            Assert.Equal(o.AsSpan(l4, 4).ToArray(), seg.AsSpan(l4, 4).ToArray());
            if (tcp)
            {
                Assert.Equal(unchecked(original.Spec.Sequence + (uint)(s * original.Unit)), BinaryPrimitives.ReadUInt32BigEndian(seg.AsSpan(l4 + 4)));
                Assert.Equal(o.AsSpan(l4 + 8, 5).ToArray(), seg.AsSpan(l4 + 8, 5).ToArray());
                var flags = o[l4 + 13];
                if (s != segments.Count - 1)
                {
                    flags &= unchecked((byte)~(GsoFrames.TcpFin | GsoFrames.TcpPsh));
                }

                if (s != 0)
                {
                    flags &= unchecked((byte)~GsoFrames.TcpCwr);
                }

                Assert.Equal(flags, seg[l4 + 13]);
                Assert.Equal(o.AsSpan(l4 + 14, 2).ToArray(), seg.AsSpan(l4 + 14, 2).ToArray());
                Assert.Equal(o.AsSpan(l4 + 18, headers - l4 - 18).ToArray(), seg.AsSpan(l4 + 18, headers - l4 - 18).ToArray());
            }
            else
            {
                Assert.Equal(seg.Length - l4, BinaryPrimitives.ReadUInt16BigEndian(seg.AsSpan(l4 + 4)));
                Assert.NotEqual(0, BinaryPrimitives.ReadUInt16BigEndian(seg.AsSpan(l4 + 6)));
            }

            var pseudo = Rfc1071.PseudoHeader(original.Addresses, original.Protocol, seg.Length - l4);
            Assert.Equal(0xFFFF, Rfc1071.Sum(seg.AsSpan(l4), pseudo));
            reassembled.AddRange(seg.AsSpan(headers).ToArray());
        }

        Assert.Equal(original.Payload.ToArray(), reassembled.ToArray());
    }

    public static void CheckIpHeader(GsoFrame original, byte[] seg, ushort id, ReadOnlySpan<byte> fragmentWord)
    {
        var l3 = original.L3;
        if (original.Spec.Ipv6)
        {
            Assert.Equal(original.Bytes.AsSpan(l3, 4).ToArray(), seg.AsSpan(l3, 4).ToArray());
            Assert.Equal(seg.Length - l3 - 40, BinaryPrimitives.ReadUInt16BigEndian(seg.AsSpan(l3 + 4)));
            Assert.Equal(original.Bytes.AsSpan(l3 + 6, 34).ToArray(), seg.AsSpan(l3 + 6, 34).ToArray());
            return;
        }

        var ihl = (original.Bytes[l3] & 0xF) * 4;
        Assert.Equal(original.Bytes[l3], seg[l3]);
        Assert.Equal(seg.Length - l3, BinaryPrimitives.ReadUInt16BigEndian(seg.AsSpan(l3 + 2)));
        Assert.Equal(id, BinaryPrimitives.ReadUInt16BigEndian(seg.AsSpan(l3 + 4)));
        Assert.Equal(fragmentWord.ToArray(), seg.AsSpan(l3 + 6, 2).ToArray());
        Assert.Equal(original.Bytes.AsSpan(l3 + 8, 2).ToArray(), seg.AsSpan(l3 + 8, 2).ToArray());
        Assert.Equal(original.Bytes.AsSpan(l3 + 12, 8).ToArray(), seg.AsSpan(l3 + 12, 8).ToArray());
        Assert.Equal(0xFFFF, Rfc1071.Sum(seg.AsSpan(l3, ihl)));
    }

    private static void CheckFragments(GsoFrame original, IReadOnlyList<byte[]> fragments)
    {
        var o = original.Bytes;
        var l3 = original.L3;
        var l4 = original.L4;
        var ihl = l4 - l3;
        var datagram = new List<byte>(o.Length - l4);
        for (var s = 0; s < fragments.Count; s++)
        {
            var seg = fragments[s];
            var last = s == fragments.Count - 1;
            var length = seg.Length - l4;
            Assert.InRange(length, 1, original.Unit);
            Assert.True(last || length == original.Unit, "only the last fragment may be short");

            // A datagram that fits one fragment keeps its flags; otherwise offset and MF (RFC 791).
            var word = fragments.Count == 1
                ? BinaryPrimitives.ReadUInt16BigEndian(o.AsSpan(l3 + 6))
                : (ushort)((datagram.Count / 8) | (last ? 0 : 0x2000));
            Assert.Equal(0, datagram.Count % 8);
            byte[] fragmentWord = [(byte)(word >> 8), (byte)word];
            CheckIpHeader(original, seg, original.Spec.IpId, fragmentWord);

            // Options: all in the first fragment; only the copied ones (router alert) after it.
            for (var k = 20; k < ihl; k++)
            {
                var expected = o[l3 + k];
                if (s > 0 && k >= 24 && k < 31)
                {
                    expected = 1; // the record route became NOPs
                }

                Assert.Equal(expected, seg[l3 + k]);
            }

            datagram.AddRange(seg.AsSpan(l4).ToArray());
        }

        var whole = datagram.ToArray();
        Assert.Equal(o.AsSpan(l4, 6).ToArray(), whole.AsSpan(0, 6).ToArray());
        Assert.Equal(o.AsSpan(l4 + 8).ToArray(), whole.AsSpan(8).ToArray());
        Assert.NotEqual(0, BinaryPrimitives.ReadUInt16BigEndian(whole.AsSpan(6)));
        var pseudo = Rfc1071.PseudoHeader(original.Addresses, 17, whole.Length);
        Assert.Equal(0xFFFF, Rfc1071.Sum(whole, pseudo));
    }
}
