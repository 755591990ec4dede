namespace Rings.Tests.Net.Offloads;

/// <summary>
/// The Internet checksum written straight from RFC 1071 section 1, independent of the library:
/// big-endian 16-bit words added with an end-around carry after every addition.
/// </summary>
internal static class Rfc1071
{
    public static ushort Sum(ReadOnlySpan<byte> data, uint initial = 0)
    {
        uint sum = initial;
        while (sum > 0xFFFF)
        {
            sum = (sum & 0xFFFF) + (sum >> 16);
        }

        for (var i = 0; i < data.Length; i += 2)
        {
            var word = (uint)(data[i] << 8) | (i + 1 < data.Length ? data[i + 1] : 0u);
            sum += word;
            if (sum > 0xFFFF)
            {
                sum -= 0xFFFF;
            }
        }

        return (ushort)sum;
    }

    /// <summary>The ones' complement sum of a TCP or UDP pseudo-header (RFC 793, RFC 768, RFC 8200 section 8.1).</summary>
    public static ushort PseudoHeader(ReadOnlySpan<byte> addresses, byte protocol, int length)
    {
        var s = Sum(addresses);
        s = Sum([0, protocol], s);
        return Sum([(byte)(length >> 24), (byte)(length >> 16), (byte)(length >> 8), (byte)length], s);
    }
}
