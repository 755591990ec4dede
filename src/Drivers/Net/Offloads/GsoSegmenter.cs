using System.Buffers.Binary;

namespace Rings.Linux.Net;

/// <summary>
/// Cuts a GSO frame (virtio 1.2 section 5.1.6.2: gso_type, gso_size) into the frames a driver that
/// did not negotiate segmentation offloads expects, each fully checksummed: TCP (TSO) and UDP
/// (USO) over IPv4 and IPv6, and IPv4 UFO as IP fragments. Frames go into a caller's
/// <see cref="ISegmentSink"/>; nothing is allocated. A frame is checked whole before the first
/// byte is written, and anything wrong with it comes back as a named <see cref="OffloadStatus"/>.
/// </summary>
/// <remarks>
/// hdr_len is only a hint (section 5.1.6.2): the headers are parsed, and hdr_len is only checked
/// to lie within the frame. Per segment, as Linux's GSO does: IPv4 total length, identification
/// (incremented per segment, the same for every fragment) and header checksum; IPv6 payload
/// length; TCP sequence number advanced by the payload before it, FIN and PSH on the last segment
/// only, CWR on the first only; UDP length; TCP and UDP checksums over the pseudo-header.
/// </remarks>
public static class GsoSegmenter
{
    private const byte TcpFin = 0x01;
    private const byte TcpPsh = 0x08;
    private const byte TcpCwr = 0x80;
    private const ushort Ipv4MoreFragments = 0x2000;

    private enum Kind : byte
    {
        Tcp,
        UdpSegments,
        UdpFragments,
    }

    /// <summary>
    /// Checks <paramref name="frame"/> and its header and says how many frames it becomes and how long
    /// the longest is, so a caller can gather that much room first.
    /// </summary>
    /// <param name="frame">The Ethernet frame (without the virtio_net_hdr).</param>
    /// <param name="header">Its virtio_net_hdr.</param>
    /// <param name="segments">How many frames segmenting writes.</param>
    /// <param name="maxSegmentLength">The length of the longest.</param>
    /// <returns>Ok, or what is wrong with the frame.</returns>
    public static OffloadStatus Measure(ReadOnlySpan<byte> frame, in VirtioNetHeader header, out int segments, out int maxSegmentLength)
    {
        var status = Plan(frame, header, out var plan);
        segments = plan.Count;
        maxSegmentLength = plan.MaxLength;
        return status;
    }

    /// <summary>Cuts <paramref name="frame"/> into the frames its header describes and writes them to <paramref name="sink"/>.</summary>
    /// <typeparam name="TSink">The sink; a struct, so calls on it are direct.</typeparam>
    /// <param name="frame">The Ethernet frame (without the virtio_net_hdr).</param>
    /// <param name="header">Its virtio_net_hdr (gso_type other than NONE).</param>
    /// <param name="sink">Receives the frames, after agreeing to take all of them.</param>
    /// <returns>
    /// Ok once every frame is committed; otherwise what is wrong, and nothing was written (except
    /// <see cref="OffloadStatus.SinkBufferTooShort"/>, which a sink that keeps its promise never causes).
    /// </returns>
    public static OffloadStatus Segment<TSink>(ReadOnlySpan<byte> frame, in VirtioNetHeader header, ref TSink sink)
        where TSink : ISegmentSink, allows ref struct
    {
        var status = Plan(frame, header, out var plan);
        if (status != OffloadStatus.Ok)
        {
            return status;
        }

        if (!sink.TryReserve(plan.Count, plan.MaxLength))
        {
            return OffloadStatus.NoRoom;
        }

        return plan.Kind == Kind.UdpFragments
            ? WriteFragments(frame, plan, ref sink)
            : WriteSegments(frame, plan, ref sink);
    }

    private static OffloadStatus Plan(ReadOnlySpan<byte> frame, in VirtioNetHeader header, out SegmentPlan plan)
    {
        plan = default;
        var type = (byte)(header.GsoType & ~VirtioNetGso.Ecn);
        var ecn = (header.GsoType & VirtioNetGso.Ecn) != 0;
        Kind kind;
        switch (type)
        {
            case VirtioNetGso.None:
                return OffloadStatus.NotGso;
            case VirtioNetGso.TcpV4 or VirtioNetGso.TcpV6:
                kind = Kind.Tcp;
                break;
            case VirtioNetGso.UdpL4:
                kind = Kind.UdpSegments;
                break;
            case VirtioNetGso.Udp:
                kind = Kind.UdpFragments;
                break;
            default:
                return OffloadStatus.UnknownGsoType;
        }

        if (ecn && kind != Kind.Tcp)
        {
            return OffloadStatus.EcnWithoutTcp;
        }

        if (header.GsoSize == 0)
        {
            return OffloadStatus.GsoSizeZero;
        }

        if (header.HeaderLength > frame.Length)
        {
            return OffloadStatus.HeaderLengthBeyondFrame;
        }

        var status = FrameLayout.Parse(frame, out var layout);
        if (status != OffloadStatus.Ok)
        {
            return status;
        }

        if (layout.Protocol != (kind == Kind.Tcp ? FrameLayout.ProtocolTcp : FrameLayout.ProtocolUdp))
        {
            return OffloadStatus.ProtocolMismatch;
        }

        if ((type == VirtioNetGso.TcpV4 && layout.IsIpv6) || (type == VirtioNetGso.TcpV6 && !layout.IsIpv6))
        {
            return OffloadStatus.GsoTypeMismatch;
        }

        int headers, unit;
        if (kind == Kind.UdpFragments)
        {
            if (layout.IsIpv6)
            {
                return OffloadStatus.UfoOverIpv6;
            }

            // Fragment offsets count 8-byte units (RFC 791), so every fragment but the last
            // carries a multiple of 8: a gso_size that is not one is rounded down.
            unit = header.GsoSize & ~7;
            if (unit == 0)
            {
                return OffloadStatus.UfoSizeTooSmall;
            }

            if (!Ipv4Options.AreWellFormed(frame.Slice(layout.L3Offset + 20, layout.L3HeaderLength - 20)))
            {
                return OffloadStatus.Ipv4OptionsMalformed;
            }

            headers = layout.L4Offset;
        }
        else
        {
            unit = header.GsoSize;
            headers = layout.PayloadOffset;
        }

        var payload = frame.Length - headers;
        var count = payload == 0 ? 1 : (payload + unit - 1) / unit;
        plan = new SegmentPlan(layout, kind, headers, unit, payload, count, headers + Math.Min(unit, payload));
        return OffloadStatus.Ok;
    }

    // TCP and USO: every frame has the full headers and up to gso_size bytes of payload.
    private static OffloadStatus WriteSegments<TSink>(ReadOnlySpan<byte> frame, in SegmentPlan plan, ref TSink sink)
        where TSink : ISegmentSink, allows ref struct
    {
        var layout = plan.Layout;
        var l4 = layout.L4Offset;
        var headers = plan.Headers;
        var tcp = plan.Kind == Kind.Tcp;
        uint pseudo = layout.PseudoHeaderSum(frame);
        var id = layout.IsIpv6 ? (ushort)0 : BinaryPrimitives.ReadUInt16BigEndian(frame[(layout.L3Offset + 4)..]);
        var sequence = tcp ? BinaryPrimitives.ReadUInt32BigEndian(frame[(l4 + 4)..]) : 0;
        var tcpFlags = tcp ? frame[l4 + 13] : (byte)0;
        var last = plan.Count - 1;
        for (var s = 0; s < plan.Count; s++)
        {
            var offset = s * plan.Unit;
            var segment = Next(ref sink, frame[..headers], frame.Slice(headers + offset, Math.Min(plan.Unit, plan.Payload - offset)));
            if (segment.IsEmpty)
            {
                return OffloadStatus.SinkBufferTooShort;
            }

            WriteIpHeader(segment, layout, (ushort)(id + s), fragment: -1);
            var l4Length = segment.Length - l4;
            if (tcp)
            {
                BinaryPrimitives.WriteUInt32BigEndian(segment[(l4 + 4)..], sequence + (uint)offset);
                var flags = tcpFlags;
                if (s != last)
                {
                    flags &= unchecked((byte)~(TcpFin | TcpPsh));
                }

                if (s != 0)
                {
                    flags &= unchecked((byte)~TcpCwr);
                }

                segment[l4 + 13] = flags;
                BinaryPrimitives.WriteUInt16BigEndian(segment[(l4 + 16)..], 0);
                var sum = InternetChecksum.Sum(segment[l4..], pseudo + (uint)l4Length);
                BinaryPrimitives.WriteUInt16BigEndian(segment[(l4 + 16)..], (ushort)~sum);
            }
            else
            {
                BinaryPrimitives.WriteUInt16BigEndian(segment[(l4 + 4)..], (ushort)l4Length);
                BinaryPrimitives.WriteUInt16BigEndian(segment[(l4 + 6)..], 0);
                var sum = InternetChecksum.Sum(segment[l4..], pseudo + (uint)l4Length);
                BinaryPrimitives.WriteUInt16BigEndian(segment[(l4 + 6)..], ChecksumOffload.Finalize(sum));
            }

            sink.Commit(segment.Length);
        }

        return OffloadStatus.Ok;
    }

    // UFO: one UDP datagram, its checksum computed whole, cut into IPv4 fragments that share the
    // identification (RFC 791); the UDP header travels in the first.
    private static OffloadStatus WriteFragments<TSink>(ReadOnlySpan<byte> frame, in SegmentPlan plan, ref TSink sink)
        where TSink : ISegmentSink, allows ref struct
    {
        var layout = plan.Layout;
        var l3 = layout.L3Offset;
        var l4 = layout.L4Offset;
        var headers = plan.Headers;
        var datagram = frame[l4..];

        // The sum skips the checksum field itself (bytes 6 and 7 of the UDP header).
        var sum = InternetChecksum.Sum(datagram[..6], layout.PseudoHeaderSum(frame) + (uint)datagram.Length);
        sum = InternetChecksum.Sum(datagram[8..], sum);
        var udpCheck = ChecksumOffload.Finalize(sum);
        var id = BinaryPrimitives.ReadUInt16BigEndian(frame[(l3 + 4)..]);
        var last = plan.Count - 1;
        for (var s = 0; s < plan.Count; s++)
        {
            var offset = s * plan.Unit;
            var segment = Next(ref sink, frame[..headers], datagram.Slice(offset, Math.Min(plan.Unit, plan.Payload - offset)));
            if (segment.IsEmpty)
            {
                return OffloadStatus.SinkBufferTooShort;
            }

            if (s == 0)
            {
                BinaryPrimitives.WriteUInt16BigEndian(segment[(l4 + 6)..], udpCheck);
            }
            else
            {
                Ipv4Options.KeepCopiedOnly(segment.Slice(l3 + 20, layout.L3HeaderLength - 20));
            }

            // A datagram that fits one fragment goes out whole, unchanged but for its checksum.
            var fragment = plan.Count == 1 ? -1 : (offset >> 3) | (s != last ? Ipv4MoreFragments : 0);
            WriteIpHeader(segment, layout, id, fragment);
            sink.Commit(segment.Length);
        }

        return OffloadStatus.Ok;
    }

    // The next frame: the headers, then this frame's piece of the payload. Empty when the sink
    // handed out less room than it had promised (a frame always has headers, so never empty).
    private static Span<byte> Next<TSink>(ref TSink sink, ReadOnlySpan<byte> headers, ReadOnlySpan<byte> piece)
        where TSink : ISegmentSink, allows ref struct
    {
        var length = headers.Length + piece.Length;
        var buffer = sink.Take(length);
        if (buffer.Length < length)
        {
            return default;
        }

        var segment = buffer[..length];
        headers.CopyTo(segment);
        piece.CopyTo(segment[headers.Length..]);
        return segment;
    }

    // fragment: the flags and offset word of an IPv4 fragment, or -1 to keep the original's
    // (no offset, no MF, as parsing checked; DF kept).
    private static void WriteIpHeader(Span<byte> segment, in FrameLayout layout, ushort id, int fragment)
    {
        var l3 = layout.L3Offset;
        if (layout.IsIpv6)
        {
            BinaryPrimitives.WriteUInt16BigEndian(segment[(l3 + 4)..], (ushort)(segment.Length - l3 - 40));
            return;
        }

        BinaryPrimitives.WriteUInt16BigEndian(segment[(l3 + 2)..], (ushort)(segment.Length - l3));
        BinaryPrimitives.WriteUInt16BigEndian(segment[(l3 + 4)..], id);
        if (fragment >= 0)
        {
            // Flags and offset replace the original's, DF included, as Linux's UFO does.
            BinaryPrimitives.WriteUInt16BigEndian(segment[(l3 + 6)..], (ushort)fragment);
        }

        BinaryPrimitives.WriteUInt16BigEndian(segment[(l3 + 10)..], 0);
        var check = (ushort)~InternetChecksum.Sum(segment.Slice(l3, layout.L3HeaderLength));
        BinaryPrimitives.WriteUInt16BigEndian(segment[(l3 + 10)..], check);
    }

    private readonly record struct SegmentPlan(FrameLayout Layout, Kind Kind, int Headers, int Unit, int Payload, int Count, int MaxLength);
}
