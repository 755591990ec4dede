using FsCheck.Xunit;
using Rings.Chains;

namespace Rings.Tests.Format;

/// <summary>
/// <see cref="RingPosition"/>, <see cref="ChainToken"/> and <see cref="PoppedChain"/> keep their
/// parts packed in whole words: every part reads back as given, <c>with</c> changes one part and no
/// other, and two values are equal exactly when all their parts are.
/// </summary>
public sealed class PackedRecordTests
{
    [Property(MaxTest = 1000)]
    public void A_position_keeps_its_four_parts(ushort avail, bool availWrap, ushort used, bool usedWrap, ushort other, bool flip)
    {
        var p = new RingPosition(avail, availWrap, used, usedWrap);
        Assert.Equal((avail, availWrap, used, usedWrap), (p.AvailIndex, p.AvailWrapCounter, p.UsedIndex, p.UsedWrapCounter));
        var (a, aw, u, uw) = p;
        Assert.Equal((avail, availWrap, used, usedWrap), (a, aw, u, uw));

        Assert.Equal(new RingPosition(other, availWrap, used, usedWrap), p with { AvailIndex = other });
        Assert.Equal(new RingPosition(avail, availWrap ^ flip, used, usedWrap), p with { AvailWrapCounter = availWrap ^ flip });
        Assert.Equal(new RingPosition(avail, availWrap, other, usedWrap), p with { UsedIndex = other });
        Assert.Equal(new RingPosition(avail, availWrap, used, usedWrap ^ flip), p with { UsedWrapCounter = usedWrap ^ flip });
        Assert.Equal(avail == other, p.Equals(new RingPosition(other, availWrap, used, usedWrap)));
        Assert.Equal(!flip, p == new RingPosition(avail, availWrap, used, usedWrap ^ flip));
    }

    [Property(MaxTest = 1000)]
    public void A_token_keeps_its_two_parts(ushort id, ushort count, ushort other)
    {
        var t = new ChainToken(id, count);
        Assert.Equal((id, count), (t.Id, t.DescriptorCount));
        var (i, c) = t;
        Assert.Equal((id, count), (i, c));
        Assert.Equal(new ChainToken(other, count), t with { Id = other });
        Assert.Equal(new ChainToken(id, other), t with { DescriptorCount = other });
        Assert.Equal(count == other, t == new ChainToken(id, other));
    }

    [Property(MaxTest = 1000)]
    public void A_popped_chain_keeps_its_seven_parts(ushort id, ushort count, int first, int segments, int readable, ulong readBytes, ulong writeBytes, ushort avail, bool wrap, int other)
    {
        var token = new ChainToken(id, count);
        var before = new RingPosition(avail, wrap, (ushort)~avail, !wrap);
        var chain = new PoppedChain(token, first, segments, readable, readBytes, writeBytes, before);
        Assert.Equal((token, first, segments, readable, readBytes, writeBytes, before), (chain.Token, chain.FirstSegment, chain.SegmentCount, chain.ReadableCount, chain.ReadableBytes, chain.WritableBytes, chain.Before));
        var (t, f, s, r, rb, wb, b) = chain;
        Assert.Equal((token, first, segments, readable, readBytes, writeBytes, before), (t, f, s, r, rb, wb, b));

        Assert.Equal(new PoppedChain(new ChainToken((ushort)other, count), first, segments, readable, readBytes, writeBytes, before), chain with { Token = new ChainToken((ushort)other, count) });
        Assert.Equal(new PoppedChain(token, other, segments, readable, readBytes, writeBytes, before), chain with { FirstSegment = other });
        Assert.Equal(new PoppedChain(token, first, other, readable, readBytes, writeBytes, before), chain with { SegmentCount = other });
        Assert.Equal(new PoppedChain(token, first, segments, other, readBytes, writeBytes, before), chain with { ReadableCount = other });
        Assert.Equal(first == other, chain == new PoppedChain(token, other, segments, readable, readBytes, writeBytes, before));
        Assert.Equal(readable == other, chain == new PoppedChain(token, first, segments, other, readBytes, writeBytes, before));
    }
}
