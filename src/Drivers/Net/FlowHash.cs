using System.Buffers.Binary;

namespace Rings.Linux.Net;

/// <summary>
/// The flow hash that spreads frames over queue pairs: the Toeplitz hash of receive-side scaling
/// (the hash virtio-net's RSS uses, virtio 1.2 section 5.1.6.4.3.1) with the standard Microsoft
/// key, over the flow's addresses and ports, and the default indirection table (entry i is pair
/// i mod N, as Linux fills it). Every frame of a flow hashes alike, so a flow stays on one pair
/// and in order. Pure functions, nothing allocated.
/// </summary>
public static class FlowHash
{
    /// <summary>Entries of the indirection table (the RSS default, a power of two).</summary>
    public const int IndirectionEntries = 128;

    // Headers are read here with FrameLayout's constants, not parsed through FrameLayout: that one
    // needs a whole TCP or UDP header and a frame ending where its packet ends; a hash takes any
    // frame, fragments and other protocols too.

    /// <summary>The standard 40-byte RSS key (Microsoft's, also the default of many NICs and DPDK's testpmd).</summary>
    public static ReadOnlySpan<byte> MicrosoftKey =>
    [
        0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f, 0xb0,
        0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30, 0xf2, 0x0c,
        0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
    ];

    /// <summary>
    /// The Toeplitz hash of <paramref name="input"/>: for every input bit set, the 32 key bits
    /// starting at that bit's position are XORed into the result.
    /// </summary>
    /// <param name="key">The secret key: at least 4 bytes longer than <paramref name="input"/>.</param>
    /// <param name="input">The bytes hashed, in network order.</param>
    /// <returns>The hash.</returns>
    public static uint Toeplitz(ReadOnlySpan<byte> key, ReadOnlySpan<byte> input)
    {
        if (key.Length < input.Length + 4)
        {
            throw new ArgumentException($"a key of {key.Length} bytes hashes at most {key.Length - 4} bytes, not {input.Length}", nameof(key));
        }

        uint result = 0;

        // The 32-bit key window for the current input bit, refilled one key bit per input bit.
        var window = BinaryPrimitives.ReadUInt32BigEndian(key);
        for (var i = 0; i < input.Length; i++)
        {
            var next = key[i + 4];
            var b = input[i];
            for (var bit = 7; bit >= 0; bit--)
            {
                // Branch-free: the mask is all ones when the input bit is set.
                result ^= window & (uint)-((b >> bit) & 1);
                window = (window << 1) | (uint)((next >> bit) & 1);
            }
        }

        return result;
    }

    /// <summary>
    /// The Toeplitz hash with <see cref="MicrosoftKey"/> by table: a byte's contribution depends only
    /// on its value and position, so it is looked up (one load per input byte, the most a flow
    /// tuple has being 36) instead of walked bit by bit on every frame.
    /// </summary>
    private static uint MicrosoftHash(ReadOnlySpan<byte> input)
    {
        var table = MicrosoftTable;
        uint result = 0;
        for (var i = 0; i < input.Length; i++)
        {
            result ^= table[(i << 8) | input[i]];
        }

        return result;
    }

    private static readonly uint[] MicrosoftTable = BuildTable(MicrosoftKey, 36);

    private static uint[] BuildTable(ReadOnlySpan<byte> key, int positions)
    {
        var table = new uint[positions << 8];
        Span<byte> one = stackalloc byte[positions];
        for (var position = 0; position < positions; position++)
        {
            for (var value = 0; value < 256; value++)
            {
                one.Clear();
                one[position] = (byte)value;
                table[(position << 8) | value] = Toeplitz(key, one);
            }
        }

        return table;
    }

    /// <summary>
    /// The flow hash of an Ethernet frame with the Microsoft key. IPv4 and IPv6 (after at most one
    /// 802.1Q tag): addresses and, for TCP and UDP that are not fragments, ports, in the order RSS
    /// hashes them (source address, destination address, source port, destination port). Any other
    /// frame (ARP, the tool's own test frames of EtherType 0x88B5) hashes the destination and source
    /// MAC addresses, so one layer-2 conversation keeps to one pair; RSS proper would send such
    /// frames to one default queue and leave the other pairs idle.
    /// </summary>
    /// <param name="frame">The frame, from its Ethernet header.</param>
    /// <returns>The hash; a frame too short for an Ethernet header hashes to 0.</returns>
    public static uint OfFrame(ReadOnlySpan<byte> frame)
    {
        if (frame.Length < 14)
        {
            return 0;
        }

        var etherType = BinaryPrimitives.ReadUInt16BigEndian(frame[12..]);
        var l3 = 14;
        if (etherType == FrameLayout.EtherTypeVlan && frame.Length >= 18)
        {
            etherType = BinaryPrimitives.ReadUInt16BigEndian(frame[16..]);
            l3 = 18;
        }

        Span<byte> tuple = stackalloc byte[36];
        var ip = frame[l3..];
        if (etherType == FrameLayout.EtherTypeIpv4 && ip.Length >= 20 && (ip[0] >> 4) == 4)
        {
            var headerBytes = (ip[0] & 0x0F) * 4;
            ip.Slice(12, 8).CopyTo(tuple);

            // Fragments other than the first carry no ports; no fragment is hashed with ports, so all
            // pieces of one datagram land together (the RSS rule for fragments).
            var fragment = (BinaryPrimitives.ReadUInt16BigEndian(ip[6..]) & 0x3FFF) != 0;
            var protocol = ip[9];
            if (!fragment && protocol is FrameLayout.ProtocolTcp or FrameLayout.ProtocolUdp && headerBytes >= 20 && ip.Length >= headerBytes + 4)
            {
                ip.Slice(headerBytes, 4).CopyTo(tuple[8..]);
                return MicrosoftHash(tuple[..12]);
            }

            return MicrosoftHash(tuple[..8]);
        }

        if (etherType == FrameLayout.EtherTypeIpv6 && ip.Length >= 40 && (ip[0] >> 4) == 6)
        {
            ip.Slice(8, 32).CopyTo(tuple);

            // Only when the transport header follows the fixed header directly: extension headers
            // are not walked, and such a flow hashes by its addresses (still one pair per flow).
            var next = ip[6];
            if (next is FrameLayout.ProtocolTcp or FrameLayout.ProtocolUdp && ip.Length >= 44)
            {
                ip.Slice(40, 4).CopyTo(tuple[32..]);
                return MicrosoftHash(tuple);
            }

            return MicrosoftHash(tuple[..32]);
        }

        frame[..12].CopyTo(tuple);
        return MicrosoftHash(tuple[..12]);
    }

    /// <summary>
    /// The queue pair a hash picks through the default indirection table: entry <c>hash mod 128</c>,
    /// which holds pair <c>entry mod N</c> (Linux's default table).
    /// </summary>
    /// <param name="hash">A flow hash.</param>
    /// <param name="pairs">Queue pairs in use, 1 to 128.</param>
    /// <returns>The pair index, 0 to <paramref name="pairs"/> - 1.</returns>
    public static int PairOf(uint hash, int pairs)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(pairs, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(pairs, IndirectionEntries);
        return (int)(hash & (IndirectionEntries - 1)) % pairs;
    }
}
