using FsCheck.Xunit;
using Rings.Linux.Net;
using Rings.Testing.Traffic;

namespace Rings.Tests.Net;

public class ChecksumAndFrameTests
{
    private static ushort NaiveSum(byte[] data)
    {
        uint sum = 0;
        for (var i = 0; i < data.Length; i += 2)
        {
            sum += (uint)(data[i] << 8) | (i + 1 < data.Length ? data[i + 1] : 0u);
            sum = (sum & 0xFFFF) + (sum >> 16);
        }

        return (ushort)sum;
    }

    [Property(MaxTest = 500)]
    public bool VectorSumEqualsRfc1071Definition(byte[] data, uint prefix)
    {
        // Lengthen some inputs past the vector threshold.
        var big = new byte[data.Length * ((prefix % 7) + 1)];
        for (var i = 0; i < big.Length; i++)
        {
            big[i] = data[i % Math.Max(1, data.Length)];
        }

        return InternetChecksum.Sum(data) == NaiveSum(data) && InternetChecksum.Sum(big) == NaiveSum(big);
    }

    [Fact]
    public void KnownVectorFromRfc1071()
    {
        // RFC 1071 section 3 example: 00 01 f2 03 f4 f5 f6 f7 sums to 0xddf2.
        Assert.Equal(0xddf2, InternetChecksum.Sum([0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]));
    }

    [Property(MaxTest = 200)]
    public bool FrameRoundTripsAndAnyBitFlipIsCaught(ulong sequence, long timestamp, byte size, ushort flip)
    {
        var frame = new byte[TestFrame.MinSize + size + (flip % 9000)];
        TestFrame.Write(frame, sequence, timestamp);
        if (!TestFrame.TryRead(frame, out var s, out var t) || s != sequence || t != timestamp)
        {
            return false;
        }

        var bit = flip % (frame.Length * 8);
        if (bit < 12 * 8)
        {
            return true; // MAC addresses are not covered (a reflector may swap them).
        }

        frame[bit / 8] ^= (byte)(1 << (bit % 8));
        return !TestFrame.TryRead(frame, out _, out _);
    }
}
