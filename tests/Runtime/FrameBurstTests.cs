using Rings.Linux.Net;
using Rings.Linux.Runtime;

namespace Rings.Tests.Runtime;

/// <summary>Filling a burst from chains and runs, reading heads, copy on write, decisions.</summary>
public unsafe class FrameBurstTests
{
    private static byte[] Pattern(int length)
    {
        var b = new byte[length];
        for (var i = 0; i < length; i++)
        {
            b[i] = (byte)(i * 13);
        }

        return b;
    }

    [Fact]
    public void ATransmitChainKeepsOnlyTheFlagsADriverMaySet()
    {
        // A guest's header claims DATA_VALID (and RSC_INFO) with NEEDS_CSUM, split across two segments.
        var bytes = Pattern(VirtioNetHeader.Size + 60);
        new VirtioNetHeader { Flags = VirtioNetHeader.FlagNeedsCsum | VirtioNetHeader.FlagDataValid | 4, CsumStart = 34, CsumOffset = 16 }.TryWrite(bytes);
        using var burst = new FrameBurst(4);
        fixed (byte* p = bytes)
        {
            Rings.Chains.ChainSegment[] chain = [new((nint)p, 5, writable: false), new((nint)(p + 5), (uint)(bytes.Length - 5), writable: false)];
            Assert.True(burst.TryAddChain(chain, 3));
            Assert.Equal(1, burst.Count);
            Assert.Equal(60, burst.Length(0));
            Assert.Equal(VirtioNetHeader.FlagNeedsCsum, burst.Header(0).Flags);
            Assert.Equal(34, burst.Header(0).CsumStart);
            Assert.Equal(16, burst.Header(0).CsumOffset);
            Assert.True(burst.Head(0).SequenceEqual(bytes.AsSpan(VirtioNetHeader.Size)));
        }
    }

    [Fact]
    public void AFrameInManyRunsHasAContiguousHeadAndCopiesOutWhole()
    {
        var bytes = Pattern(300);
        using var burst = new FrameBurst(8);
        fixed (byte* p = bytes)
        {
            FrameSegment[] runs = [new(p, 5), new(p + 5, 30), new(p + 35, 265)];
            Assert.True(burst.TryAdd(default, runs, 7, isPrivate: false));
            Assert.Equal(1, burst.Count);
            Assert.Equal(300, burst.Length(0));
            Assert.Equal(3, burst.Segments(0).Length);
            Assert.True(burst.Head(0).SequenceEqual(bytes.AsSpan(0, FrameBurst.HeadBytes)));
            var copy = new byte[300];
            Assert.Equal(300, burst.CopyTo(0, copy));
            Assert.Equal(bytes, copy);
            Assert.Equal([7UL], burst.Completions.ToArray());
        }
    }

    [Fact]
    public void WritableCopiesAPeersBytesAndLeavesThemAlone()
    {
        var bytes = Pattern(100);
        var original = (byte[])bytes.Clone();
        using var burst = new FrameBurst(4);
        fixed (byte* p = bytes)
        {
            Assert.True(burst.TryAdd(default, new FrameSegment(p, 100), 0, isPrivate: false));
            var w = burst.Writable(0);
            w[0] = 0xEE;
            Assert.Equal(original, bytes);
            Assert.Equal(0xEE, burst.Head(0)[0]);
            Assert.True(burst.IsPrivate(0));
            var copy = new byte[100];
            burst.CopyTo(0, copy);
            Assert.Equal(0xEE, copy[0]);
        }
    }

    [Fact]
    public void WritableModifiesAPrivateFrameInPlace()
    {
        var bytes = Pattern(100);
        using var burst = new FrameBurst(4);
        fixed (byte* p = bytes)
        {
            Assert.True(burst.TryAdd(default, new FrameSegment(p, 100), 0, isPrivate: true));
            burst.Writable(0)[1] = 0xAB;
            Assert.Equal(0xAB, bytes[1]);
        }
    }

    [Fact]
    public void RuntsAndOversizedFramesAreTakenAsCountedDropsNotFrames()
    {
        var bytes = new byte[FrameBurst.MaxFrameLength + 1];
        using var burst = new FrameBurst(4);
        fixed (byte* p = bytes)
        {
            Assert.True(burst.TryAdd(default, new FrameSegment(p, 13), 1, isPrivate: true));
            Assert.True(burst.TryAdd(default, new FrameSegment(p, bytes.Length), 2, isPrivate: true));
            Assert.True(burst.TryAdd(default, new FrameSegment(p, 14), 3, isPrivate: true));
        }

        Assert.Equal(1, burst.Count);
        Assert.Equal(3, burst.Taken);
        Assert.Equal([1UL, 2UL, 3UL], burst.Completions.ToArray());
    }

    [Fact]
    public void TooManyRunsIsMalformedAndAFullBurstRefuses()
    {
        var bytes = new byte[200];
        using var burst = new FrameBurst(2);
        fixed (byte* p = bytes)
        {
            var runs = new FrameSegment[FrameBurst.MaxSegmentsPerFrame + 1];
            for (var i = 0; i < runs.Length; i++)
            {
                runs[i] = new FrameSegment(p + i, 1);
            }

            Assert.True(burst.TryAdd(default, runs, 1, isPrivate: true));
            Assert.Equal(0, burst.Count);
            Assert.True(burst.TryAdd(default, new FrameSegment(p, 60), 2, isPrivate: true));
            Assert.False(burst.TryAdd(default, new FrameSegment(p, 60), 3, isPrivate: true));
            Assert.Equal(0, burst.Room);
        }
    }

    [Fact]
    public void DecisionsDefaultToUndecidedAndFloodLeavesOutTheIngress()
    {
        var bytes = Pattern(64);
        using var burst = new FrameBurst(4);
        burst.Reset(null, new PortMask(0b1111), 0);
        fixed (byte* p = bytes)
        {
            for (var i = 0; i < 4; i++)
            {
                burst.TryAdd(default, new FrameSegment(p, 64), (ulong)i, isPrivate: false);
            }
        }

        Assert.Equal(DropReason.Undecided, burst.DropReasonOf(0));
        burst.Forward(0, 3);
        burst.Send(1, PortMask.None);
        burst.Flood(2);
        burst.Drop(3, DropReason.OverMtu);
        Assert.Equal(PortMask.Of(3), burst.Destinations(0));
        Assert.Equal(DropReason.NoRoute, burst.DropReasonOf(1));
        Assert.Equal(new PortMask(0b1111), burst.Destinations(2));
        Assert.Equal(DropReason.OverMtu, burst.DropReasonOf(3));
        Assert.Throws<ArgumentOutOfRangeException>(() => burst.Length(4));
    }

    [Fact]
    public void PortMaskSetOperations()
    {
        var m = PortMask.Of(3).With(0).With(63);
        Assert.Equal(3, m.Count);
        Assert.True(m.Contains(63));
        Assert.False(m.Contains(64));
        Assert.Equal([0, 3, 63], [.. Enumerate(m)]);
        Assert.Equal(PortMask.Of(0) | PortMask.Of(63), m.Without(3));
        Assert.Equal(0, m.First);
        Assert.Equal(ulong.MaxValue, PortMask.FirstN(64).Bits);
        Assert.Equal("{0,3,63}", m.ToString());

        static IEnumerable<int> Enumerate(PortMask mask)
        {
            var list = new List<int>();
            foreach (var p in mask)
            {
                list.Add(p);
            }

            return list;
        }
    }

    [Fact]
    public void HeadersPassThroughAndMayBeChanged()
    {
        var bytes = Pattern(64);
        using var burst = new FrameBurst(1);
        fixed (byte* p = bytes)
        {
            burst.TryAdd(new VirtioNetHeader { Flags = VirtioNetHeader.FlagNeedsCsum, CsumStart = 34, CsumOffset = 16 }, new FrameSegment(p, 64), 0, isPrivate: true);
        }

        Assert.Equal(34, burst.Header(0).CsumStart);
        burst.Header(0).Flags = 0;
        Assert.Equal(0, burst.Header(0).Flags);
    }
}
