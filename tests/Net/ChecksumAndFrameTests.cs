using System.Runtime.Intrinsics;
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

    [Property(MaxTest = 300)]
    public bool SampledFramesAreWhollyCheckedOneInSixtyFourAndByTheirHeadOtherwise(ulong sequence, long timestamp, byte size, ushort flip, byte[] stale)
    {
        // A buffer that held anything before: WriteHeader leaves the fill and the checksum as they were.
        var frame = new byte[TestFrame.MinSize + size];
        stale.AsSpan(0, Math.Min(stale.Length, frame.Length)).CopyTo(frame);
        var whole = (sequence % TestFrame.SampleEvery) == 0;
        if (whole)
        {
            TestFrame.Write(frame, sequence, timestamp);
        }
        else
        {
            TestFrame.WriteHeader(frame, sequence, timestamp, TestFrame.DefaultFlow);
        }

        if (!TestFrame.TryReadSampled(frame, out var s, out var t) || s != sequence || t != timestamp)
        {
            return false;
        }

        // A full check of a frame of head only fails unless the stale bytes happen to sum right;
        // a sampled frame's damage anywhere past the addresses is caught, a head-only frame's
        // only in the EtherType or the sequence (which the generator counts as loss or duplicates).
        var bit = 12 * 8 + (flip % ((frame.Length - 12) * 8));
        frame[bit / 8] ^= (byte)(1 << (bit % 8));
        var caught = !TestFrame.TryReadSampled(frame, out var after, out _) || after != sequence;
        var inHead = bit < 22 * 8;
        return whole || inHead ? caught : !caught;
    }

    [Fact]
    public void AHeadWrittenAloneKeepsTheBytesBehindIt()
    {
        var frame = new byte[64];
        frame.AsSpan().Fill(0xA5);
        TestFrame.WriteHeader(frame, 5, 7, TestFrame.DefaultFlow);
        Assert.All(frame[30..], b => Assert.Equal(0xA5, b));
        Assert.True(TestFrame.TryReadSampled(frame, out var s, out var t));
        Assert.Equal((5UL, 7L), (s, t));
        Assert.False(TestFrame.TryRead(frame, out _, out _));
    }

    [Property(MaxTest = 300)]
    public bool AHeadLineHoldsWhatWriteHeaderWritesBehindTheHeadersPlace(ulong sequence, long timestamp, ushort flow)
    {
        // The line a transmit buffer starts with: 12 bytes of header place, then the frame.
        var expected = new byte[64];
        TestFrame.WriteHeader(expected.AsSpan(12), sequence, timestamp, flow);
        TestFrame.HeadLine(sequence, timestamp, flow, out var low, out var high);
        var line = new byte[64];
        low.CopyTo(line);
        high.CopyTo(line.AsSpan(32));
        // A frame of head only passes the sampled check, but for the one in SampleEvery checked whole.
        return line.AsSpan().SequenceEqual(expected)
            && ((sequence % TestFrame.SampleEvery) == 0
                || (TestFrame.TryReadSampled(line.AsSpan(12), out var s, out var t) && s == sequence && t == timestamp));
    }
}
