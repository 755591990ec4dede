using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using Rings.Linux.Net;

namespace Rings.Tests.Net.Offloads;

public class InternetChecksumTests
{
    // Every vector width is tested on any machine: an unaccelerated width runs in software with
    // the same arithmetic, so only its speed differs.
    private static readonly int[] Widths = [512, 256, 128, 0];

    private static Gen<(int Length, int Offset, int Seed, uint Initial)> Inputs =>
        from length in Gen.Frequency((3, Gen.Choose(0, 200)), (3, Gen.Choose(0, 2000)), (2, Gen.Choose(0, 70000)))
        from offset in Gen.Choose(0, 63)
        from seed in Gen.Choose(0, int.MaxValue)
        from initial in Gen.Frequency((2, Gen.Constant(0)), (1, Gen.Choose(0, 0xFFFF)), (1, Gen.Choose(int.MinValue, int.MaxValue)))
        select (length, offset, seed, unchecked((uint)initial));

    [Property(MaxTest = 400)]
    public Property EveryPathEqualsTheScalarReferenceAndRfc1071() =>
        Prop.ForAll(Inputs.ToArbitrary(), input =>
        {
            // The data sits at any offset of a larger array, so loads start at any alignment.
            var buffer = new byte[input.Offset + input.Length + 64];
            new Random(input.Seed).NextBytes(buffer);
            var data = buffer.AsSpan(input.Offset, input.Length);
            var expected = Rfc1071.Sum(data, input.Initial);
            Assert.Equal(expected, InternetChecksum.SumScalar(data, input.Initial));
            Assert.Equal(expected, InternetChecksum.Sum(data, input.Initial));
            foreach (var width in Widths)
            {
                Assert.Equal(expected, InternetChecksum.SumWith(data, width, input.Initial));
            }
        });

    [Property(MaxTest = 300)]
    public Property PartialSumsCombineAtOddAndEvenBoundaries() =>
        Prop.ForAll(Inputs.ToArbitrary(), input =>
        {
            var data = new byte[input.Length];
            new Random(input.Seed).NextBytes(data);
            var split = input.Length == 0 ? 0 : input.Seed % (input.Length + 1);
            var first = InternetChecksum.Sum(data.AsSpan(0, split));
            var second = InternetChecksum.Sum(data.AsSpan(split));
            Assert.Equal(Rfc1071.Sum(data), InternetChecksum.Combine(first, second, split));
        });

    [Property(MaxTest = 200)]
    public Property RunsOfOnesAndZerosAtAnyLength() =>
        Prop.ForAll(Gen.Choose(0, 5000).ToArbitrary(), Gen.Elements<byte>(0x00, 0xFF, 0x80, 0x01).ToArbitrary(), (length, fill) =>
        {
            var data = new byte[length];
            Array.Fill(data, fill);
            var expected = Rfc1071.Sum(data);
            foreach (var width in Widths)
            {
                Assert.Equal(expected, InternetChecksum.SumWith(data, width));
            }

            Assert.Equal(expected, InternetChecksum.Sum(data));
        });

    [Fact]
    public void KnownVectorFromRfc1071()
    {
        // RFC 1071 section 3: 00 01 f2 03 f4 f5 f6 f7 sums to 0xddf2.
        byte[] data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        Assert.Equal(0xddf2, InternetChecksum.Sum(data));
        Assert.Equal(0xddf2, InternetChecksum.SumScalar(data));
        Assert.Equal(0x220d, InternetChecksum.Compute(data));
    }

    [Fact]
    public void ZeroIsOnlyTheSumOfZeros()
    {
        Assert.Equal(0, InternetChecksum.Sum(new byte[4096]));
        Assert.Equal(0, InternetChecksum.Sum([]));

        // 0xFFFF + 0x0000 + ... is a nonzero sum congruent to 0: the fold keeps it 0xFFFF.
        var data = new byte[4096];
        data[100] = 0xFF;
        data[101] = 0xFF;
        Assert.Equal(0xFFFF, InternetChecksum.Sum(data));
    }

    [Fact]
    public void SumsPastTheLaneFlushBoundaryStayExact()
    {
        // All-ones words grow every lane as fast as possible; 3 MiB crosses the 1 MiB flush
        // more than once, and the odd tail goes through every narrower path.
        var data = new byte[(3 << 20) + 37];
        Array.Fill(data, (byte)0xFF);
        data[^1] = 0x7E;
        var expected = InternetChecksum.SumScalar(data);
        Assert.Equal(Rfc1071.Sum(data), expected);
        foreach (var width in Widths)
        {
            Assert.Equal(expected, InternetChecksum.SumWith(data, width));
        }
    }

    [Fact]
    public void AddAndCombineFoldTheCarry()
    {
        Assert.Equal(0x0002, InternetChecksum.Add(0xFFFF, 0x0002));
        Assert.Equal(0x0002, InternetChecksum.Add(0x8000, 0x8001));
        Assert.Equal(0xFFFF, InternetChecksum.Add(0xFFFE, 0x0001));
        Assert.Equal(0x3412, InternetChecksum.Combine(0, 0x1234, 1));
        Assert.Equal(0x1234, InternetChecksum.Combine(0, 0x1234, 2));
    }

    [Fact]
    public void SummingAllocatesNothing()
    {
        var data = new byte[65536];
        new Random(7).NextBytes(data);
        ushort sink = 0;
        for (var i = 0; i < 10; i++)
        {
            sink ^= InternetChecksum.Sum(data);
        }

        Assert.Equal(0, Allocations.Steady(() =>
        {
            for (var i = 0; i < 1000; i++)
            {
                sink ^= InternetChecksum.Sum(data.AsSpan(i % 64));
            }
        }));
        GC.KeepAlive(sink);
    }
}
