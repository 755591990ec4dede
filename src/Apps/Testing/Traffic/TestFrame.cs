using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using Rings.Linux.Net;

namespace Rings.Testing.Traffic;

/// <summary>
/// The frames the <c>rings</c> tool sends and checks: Ethernet II between locally administered
/// MAC addresses with the local experimental EtherType 0x88B5, carrying a sequence number, a send
/// timestamp and an Internet checksum over the payload, so every frame that comes back can be
/// checked for loss, duplication and corruption.
/// </summary>
public static class TestFrame
{
    /// <summary>EtherType 0x88B5 (IEEE 802 local experimental).</summary>
    public const ushort EtherType = 0x88B5;

    /// <summary>The flow of <see cref="Write(Span{byte}, ulong, long)"/>: the last two bytes of <see cref="SourceMac"/>.</summary>
    public const ushort DefaultFlow = 0x4701;

    /// <summary>Smallest frame: Ethernet header plus the fields below.</summary>
    public const int MinSize = 14 + 8 + 8 + 2;

    private const int SequenceOffset = 14;
    private const int TimestampOffset = 22;
    private const int ChecksumOffset = 30;
    private const int FillOffset = 32;

    // Byte k is (byte)k, long enough for any frame starting at any offset below 256.
    private static readonly byte[] Pattern = MakePattern();

    /// <summary>Source MAC used by the generator (locally administered, unicast).</summary>
    public static ReadOnlySpan<byte> SourceMac => [0x02, 0x52, 0x49, 0x4E, 0x47, 0x01];

    /// <summary>Destination MAC used by the generator (locally administered, unicast).</summary>
    public static ReadOnlySpan<byte> DestinationMac => [0x02, 0x52, 0x49, 0x4E, 0x47, 0x02];

    /// <summary>Ethernet, IPv4 and TCP headers of a <see cref="WriteTcpGso"/> frame (no options).</summary>
    public const int TcpHeadersSize = 14 + 20 + 20;

    /// <summary>Source address of <see cref="WriteTcpGso"/> frames (link-local, 169.254.250.1).</summary>
    public static ReadOnlySpan<byte> GsoSourceAddress => [169, 254, 250, 1];

    /// <summary>Destination address of <see cref="WriteTcpGso"/> frames (link-local, 169.254.250.2).</summary>
    public static ReadOnlySpan<byte> GsoDestinationAddress => [169, 254, 250, 2];

    /// <summary>TCP source port of <see cref="WriteTcpGso"/> frames.</summary>
    public const ushort GsoSourcePort = 40_000;

    /// <summary>TCP destination port of <see cref="WriteTcpGso"/> frames.</summary>
    public const ushort GsoDestinationPort = 5_001;

    /// <summary>
    /// Writes a TCP/IPv4 frame over the whole of <paramref name="frame"/> as a driver hands one to a
    /// device that negotiated CSUM and HOST_TSO4 (virtio 1.2 5.1.6.2): valid Ethernet, IPv4 (header
    /// checksum, DF, identification from the sequence number) and TCP headers (ACK and PSH, the
    /// sequence number advanced by the payload of every frame before), the TCP checksum field
    /// holding the pseudo-header sum, and a header asking for the checksum (NEEDS_CSUM) and for
    /// segmentation into <paramref name="gsoSize"/>-byte segments (GSO TCPV4). The payload starts
    /// with the sequence number and timestamp, then the fill of <see cref="Write"/>.
    /// </summary>
    /// <param name="frame">The frame buffer; its length is the frame size, at least <see cref="TcpHeadersSize"/> + 16, at most an IPv4 packet of 65,535 bytes.</param>
    /// <param name="sequence">The frame's number.</param>
    /// <param name="timestamp">The send time.</param>
    /// <param name="gsoSize">The MSS, 1 or more.</param>
    /// <param name="header">The virtio-net header to send it with.</param>
    public static void WriteTcpGso(Span<byte> frame, ulong sequence, long timestamp, int gsoSize, out VirtioNetHeader header)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(frame.Length, TcpHeadersSize + 16, nameof(frame));
        ArgumentOutOfRangeException.ThrowIfGreaterThan(frame.Length, 14 + ushort.MaxValue, nameof(frame));
        ArgumentOutOfRangeException.ThrowIfLessThan(gsoSize, 1);
        DestinationMac.CopyTo(frame);
        SourceMac.CopyTo(frame[6..]);
        BinaryPrimitives.WriteUInt16BigEndian(frame[12..], 0x0800);
        var ip = frame.Slice(14, 20);
        var tcp = frame[34..];
        var payload = frame.Length - TcpHeadersSize;
        ip[0] = 0x45;
        ip[1] = 0;
        BinaryPrimitives.WriteUInt16BigEndian(ip[2..], (ushort)(frame.Length - 14));
        BinaryPrimitives.WriteUInt16BigEndian(ip[4..], (ushort)sequence);
        BinaryPrimitives.WriteUInt16BigEndian(ip[6..], 0x4000);
        ip[8] = 64;
        ip[9] = 6;
        BinaryPrimitives.WriteUInt16BigEndian(ip[10..], 0);
        GsoSourceAddress.CopyTo(ip[12..]);
        GsoDestinationAddress.CopyTo(ip[16..]);
        BinaryPrimitives.WriteUInt16BigEndian(ip[10..], (ushort)~InternetChecksum.Sum(ip));

        BinaryPrimitives.WriteUInt16BigEndian(tcp, GsoSourcePort);
        BinaryPrimitives.WriteUInt16BigEndian(tcp[2..], GsoDestinationPort);
        BinaryPrimitives.WriteUInt32BigEndian(tcp[4..], unchecked((uint)(sequence * (ulong)payload)));
        BinaryPrimitives.WriteUInt32BigEndian(tcp[8..], 1);
        tcp[12] = 5 << 4;
        tcp[13] = 0x18; // ACK, PSH
        BinaryPrimitives.WriteUInt16BigEndian(tcp[14..], ushort.MaxValue);
        BinaryPrimitives.WriteUInt16BigEndian(tcp[18..], 0);
        var data = frame[TcpHeadersSize..];
        BinaryPrimitives.WriteUInt64LittleEndian(data, sequence);
        BinaryPrimitives.WriteInt64LittleEndian(data[8..], timestamp);
        Pattern.AsSpan((byte)sequence, data.Length - 16).CopyTo(data[16..]);

        // 5.1.6.2: with NEEDS_CSUM the field holds the pseudo-header sum (addresses, protocol,
        // TCP length), not complemented; the device sums from csum_start onwards.
        var pseudo = InternetChecksum.Sum(ip.Slice(12, 8), 6u + (uint)(frame.Length - 34));
        BinaryPrimitives.WriteUInt16BigEndian(tcp[16..], (ushort)pseudo);
        header = new VirtioNetHeader
        {
            Flags = VirtioNetHeader.FlagNeedsCsum,
            GsoType = VirtioNetGso.TcpV4,
            HeaderLength = TcpHeadersSize,
            GsoSize = (ushort)gsoSize,
            CsumStart = 34,
            CsumOffset = 16,
        };
    }

    /// <summary>Writes a test frame over the whole of <paramref name="frame"/>.</summary>
    /// <param name="frame">The frame buffer; its length is the frame size (at least <see cref="MinSize"/>).</param>
    /// <param name="sequence">The sequence number.</param>
    /// <param name="timestamp">The send time (any clock the receiver shares).</param>
    public static void Write(Span<byte> frame, ulong sequence, long timestamp) => Write(frame, sequence, timestamp, DefaultFlow);

    /// <summary>
    /// Writes a test frame of flow <paramref name="flow"/> over the whole of <paramref name="frame"/>:
    /// the flow is the last two bytes of the source MAC address, which the flow hash of these
    /// (non-IP) frames covers (<see cref="FlowHash.OfFrame"/>).
    /// </summary>
    /// <param name="frame">The frame buffer; its length is the frame size (at least <see cref="MinSize"/>).</param>
    /// <param name="sequence">The sequence number.</param>
    /// <param name="timestamp">The send time (any clock the receiver shares).</param>
    /// <param name="flow">The flow.</param>
    public static void Write(Span<byte> frame, ulong sequence, long timestamp, ushort flow)
    {
        WriteHeader(frame, sequence, timestamp, flow);

        // Fill byte i is (byte)(sequence + i): a copy from the repeating pattern, not a loop.
        var fill = frame[FillOffset..];
        var pattern = Pattern.AsSpan((byte)sequence, fill.Length);
        pattern.CopyTo(fill);

        // The checksum is summed from the values and the pattern, not read back from the frame
        // just written (loads over fresh stores stall). The fill starts at an even offset of the
        // summed range, so the two partial sums add (RFC 1071).
        var sum = InternetChecksum.Sum(pattern, SumLittleEndian(sequence) + SumLittleEndian((ulong)timestamp));
        BinaryPrimitives.WriteUInt16BigEndian(frame[ChecksumOffset..], (ushort)~sum);
    }

    /// <summary>
    /// Writes only the head of a test frame: addresses, EtherType, sequence number and timestamp
    /// (the first 30 bytes), leaving the fill and the checksum as they were. For frames that
    /// <see cref="TryReadSampled"/> checks by their head alone (sequence numbers not a multiple of
    /// <see cref="SampleEvery"/>).
    /// </summary>
    /// <param name="frame">The frame buffer (at least <see cref="MinSize"/> bytes).</param>
    /// <param name="sequence">The sequence number.</param>
    /// <param name="timestamp">The send time.</param>
    /// <param name="flow">The flow.</param>
    public static void WriteHeader(Span<byte> frame, ulong sequence, long timestamp, ushort flow)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(frame.Length, MinSize, nameof(frame));

        // Four stores, not one per field: each waits in the store buffer until the frame's line
        // (last read on the device's core) arrives, and a burst of frames written field by field
        // fills that buffer while the first lines are still on their way. The second word holds
        // the rest of the source address, the flow and the EtherType; its last two bytes are
        // overwritten by the sequence number.
        BinaryPrimitives.WriteUInt64LittleEndian(frame, AddressWord);
        BinaryPrimitives.WriteUInt64LittleEndian(
            frame[8..],
            SourceTail | ((ulong)BinaryPrimitives.ReverseEndianness(flow) << 16) | ((ulong)BinaryPrimitives.ReverseEndianness(EtherType) << 32));
        BinaryPrimitives.WriteUInt64LittleEndian(frame[SequenceOffset..], sequence);
        BinaryPrimitives.WriteInt64LittleEndian(frame[TimestampOffset..], timestamp);
    }

    /// <summary>
    /// The head <see cref="WriteHeader"/> writes (zero after it), as the two halves of the first
    /// cache line of a transmit buffer: frame byte N at line byte 12 + N, behind the place of the
    /// 12-byte virtio-net header (zero here). Built in registers, for
    /// <c>NetDriverPath.SubmitLine</c>: a head written to memory and read back as a vector waits
    /// for its stores to leave the store buffer (a load that spans several stores cannot take
    /// its bytes from them).
    /// </summary>
    /// <param name="sequence">The sequence number.</param>
    /// <param name="timestamp">The send time.</param>
    /// <param name="flow">The flow.</param>
    /// <param name="low">Line bytes 0 to 31: the header's place, then frame bytes 0 to 19.</param>
    /// <param name="high">Line bytes 32 to 63: frame bytes 20 to 51.</param>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void HeadLine(ulong sequence, long timestamp, ushort flow, out Vector256<byte> low, out Vector256<byte> high)
    {
        // Little-endian words of the line: frame bytes 0-3 at 12-15, 4-11 at 16-23 (the rest of
        // the addresses, the flow), 12-19 at 24-31 (EtherType, six bytes of the sequence number),
        // 20-27 at 32-39 (its last two, six of the timestamp), 28-29 at 40-41.
        var ether = (ulong)BinaryPrimitives.ReverseEndianness(EtherType);
        var stamp = (ulong)timestamp;
        low = Vector256.Create(
            0UL,
            (AddressWord & 0xFFFF_FFFF) << 32,
            (AddressWord >> 32) | (SourceTail << 32) | ((ulong)BinaryPrimitives.ReverseEndianness(flow) << 48),
            ether | (sequence << 16)).AsByte();
        high = Vector256.Create((sequence >> 48) | (stamp << 16), stamp >> 48, 0UL, 0UL).AsByte();
    }

    // Bytes 0 to 7 of every frame's head: the destination address and the source's first two bytes.
    private static readonly ulong AddressWord = BinaryPrimitives.ReadUInt64LittleEndian([.. DestinationMac, .. SourceMac[..2]]);

    // Bytes 8 and 9: the source address's third and fourth bytes (its last two carry the flow).
    private static readonly ulong SourceTail = BinaryPrimitives.ReadUInt16LittleEndian(SourceMac[2..4]);

    /// <summary>
    /// One frame in this many (those whose sequence number is a multiple of it) is written and
    /// checked whole when frames are sampled (<see cref="Verification.Sample"/>).
    /// </summary>
    public const int SampleEvery = 64;

    /// <summary>
    /// Checks a frame that came back as <see cref="Verification.Sample"/> does: the EtherType and
    /// the sequence number of every frame, the checksum too when the sequence number is a multiple
    /// of <see cref="SampleEvery"/> (<see cref="TryRead"/>). Reads only the frame's head otherwise.
    /// </summary>
    /// <param name="frame">The frame as received.</param>
    /// <param name="sequence">Its sequence number when intact.</param>
    /// <param name="timestamp">Its send time when intact.</param>
    /// <returns>True when the frame is intact as far as checked.</returns>
    public static bool TryReadSampled(ReadOnlySpan<byte> frame, out ulong sequence, out long timestamp)
    {
        if (frame.Length < MinSize || BinaryPrimitives.ReadUInt16BigEndian(frame[12..]) != EtherType)
        {
            sequence = 0;
            timestamp = 0;
            return false;
        }

        sequence = BinaryPrimitives.ReadUInt64LittleEndian(frame[SequenceOffset..]);
        if ((sequence % SampleEvery) == 0)
        {
            return TryRead(frame, out sequence, out timestamp);
        }

        timestamp = BinaryPrimitives.ReadInt64LittleEndian(frame[TimestampOffset..]);
        return true;
    }

    /// <summary>
    /// Checks a frame that came back: EtherType and checksum. MAC addresses may have been swapped
    /// by a reflecting peer, so either order is accepted.
    /// </summary>
    /// <param name="frame">The frame as received.</param>
    /// <param name="sequence">Its sequence number when intact.</param>
    /// <param name="timestamp">Its send time when intact.</param>
    /// <returns>True when the frame is intact.</returns>
    public static bool TryRead(ReadOnlySpan<byte> frame, out ulong sequence, out long timestamp)
    {
        sequence = 0;
        timestamp = 0;
        if (frame.Length < MinSize || BinaryPrimitives.ReadUInt16BigEndian(frame[12..]) != EtherType)
        {
            return false;
        }

        // The checksum field is part of the summed range, so an intact payload sums to 0xFFFF.
        if (InternetChecksum.Sum(frame[SequenceOffset..]) != 0xFFFF)
        {
            return false;
        }

        sequence = BinaryPrimitives.ReadUInt64LittleEndian(frame[SequenceOffset..]);
        timestamp = BinaryPrimitives.ReadInt64LittleEndian(frame[TimestampOffset..]);
        return true;
    }

    /// <summary>
    /// The first flow, counting from <see cref="DefaultFlow"/>, whose frames the flow hash steers to
    /// queue pair <paramref name="pair"/> of <paramref name="pairs"/> (<see cref="FlowHash.PairOf"/>).
    /// </summary>
    /// <param name="pair">The pair, 0 to <paramref name="pairs"/> - 1.</param>
    /// <param name="pairs">Queue pairs in use, 1 to 128.</param>
    /// <returns>The flow.</returns>
    public static ushort FlowFor(int pair, int pairs)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(pair);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(pair, pairs);
        Span<byte> header = stackalloc byte[14];
        for (var i = 0; i <= ushort.MaxValue; i++)
        {
            var flow = (ushort)(DefaultFlow + i);
            DestinationMac.CopyTo(header);
            SourceMac.CopyTo(header[6..]);
            BinaryPrimitives.WriteUInt16BigEndian(header[10..], flow);
            BinaryPrimitives.WriteUInt16BigEndian(header[12..], EtherType);
            if (FlowHash.PairOf(FlowHash.OfFrame(header), pairs) == pair)
            {
                return flow;
            }
        }

        // Unreachable: the 65,536 flows cover every entry of the 128-entry indirection table.
        throw new InvalidOperationException($"no flow hashes to pair {pair} of {pairs}");
    }

    // The Internet checksum contribution of a u64 stored little-endian at an even offset: the
    // sum of its 16-bit words read big-endian, i.e. the byte-swapped sum of its little-endian words.
    private static uint SumLittleEndian(ulong value)
    {
        var sum = (value & 0xFFFF) + ((value >> 16) & 0xFFFF) + ((value >> 32) & 0xFFFF) + (value >> 48);
        sum = (sum & 0xFFFF) + (sum >> 16);
        sum = (sum & 0xFFFF) + (sum >> 16);
        return (uint)(((sum >> 8) & 0xFF) | ((sum & 0xFF) << 8));
    }

    private static byte[] MakePattern()
    {
        var p = new byte[65536 + 256];
        for (var i = 0; i < p.Length; i++)
        {
            p[i] = (byte)i;
        }

        return p;
    }
}
