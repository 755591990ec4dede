using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;

namespace Rings.Tests.Split;

/// <summary>The vhost-user vring base (GET/SET_VRING_BASE num) encoding of a ring position.</summary>
public sealed class RingPositionTests
{
    [Property(MaxTest = 1000)]
    public Property Split_position_is_the_avail_index() =>
        Prop.ForAll(Gen.Choose(0, 65535).ToArbitrary(), v =>
        {
            var p = new RingPosition((ushort)v);
            Assert.Equal((uint)v, p.ToVhostBase(packed: false));
            Assert.Equal(p, RingPosition.FromVhostBase(p.ToVhostBase(false), false));
        });

    [Property(MaxTest = 1000)]
    public Property Packed_position_round_trips() =>
        Prop.ForAll(
            (from avail in Gen.Choose(0, 0x7FFF)
             from availWrap in Gen.Elements(false, true)
             from used in Gen.Choose(0, 0x7FFF)
             from usedWrap in Gen.Elements(false, true)
             select new RingPosition((ushort)avail, availWrap, (ushort)used, usedWrap)).ToArbitrary(),
            p => Assert.Equal(p, RingPosition.FromVhostBase(p.ToVhostBase(packed: true), packed: true)));

    [Property(MaxTest = 1000)]
    public Property Every_packed_base_value_decodes_and_encodes_back() =>
        Prop.ForAll(
            Gen.Choose(int.MinValue, int.MaxValue).Select(v => (uint)v).ToArbitrary(),
            v => Assert.Equal(v, RingPosition.FromVhostBase(v, packed: true).ToVhostBase(packed: true)));

    [Fact]
    public void Packed_bit_positions()
    {
        // Bits 0-14 avail position, 15 avail wrap counter, 16-30 used position, 31 used wrap counter.
        Assert.Equal(0x0007_8005u, new RingPosition(5, true, 7, false).ToVhostBase(true));
        Assert.Equal(0x8007_0005u, new RingPosition(5, false, 7, true).ToVhostBase(true));
        Assert.Equal(0xFFFF_FFFFu, new RingPosition(0x7FFF, true, 0x7FFF, true).ToVhostBase(true));
        Assert.Equal(new RingPosition(0x1234, false, 0x0123, true), RingPosition.FromVhostBase(0x8123_1234, true));
        Assert.Equal(0x8000_8000u, new RingPosition(0).ToVhostBase(true)); // a fresh packed ring: wrap counters 1
    }

    [Fact]
    public void Split_base_ignores_the_upper_bits_and_a_device_restores_to_it()
    {
        Assert.Equal(new RingPosition(0xBEEF), RingPosition.FromVhostBase(0x1234_BEEF, false));
        using var memory = new Conformance.GuardedMemory(64 * 1024);
        var pair = SplitFormat.CreateSplit(memory, new Conformance.RingSetup(8, RingFeatures.None, 65534, 0));
        Assert.True(pair.Driver.TryAdd(new Chains.BufferSegment(memory.Base + 60000, 4), false, out _));
        Assert.True(pair.Driver.TryAdd(new Chains.BufferSegment(memory.Base + 60000, 4), false, out _));
        pair.Driver.Publish();
        Assert.True(pair.Device.TryPop(out _));
        var saved = pair.Device.Position.ToVhostBase(false);
        Assert.Equal(65535u, saved);

        // A new device (a backend restart) picks up from the saved base and pops the second buffer.
        var device = new Rings.Split.SplitDeviceRing(memory.Memory, pair.Addresses, 8, RingFeatures.None);
        device.Restore(RingPosition.FromVhostBase(saved, false));
        Assert.True(device.TryPop(out var chain));
        Assert.Equal(1, chain.Token.Id);
        Assert.False(device.TryPop(out _));
    }
}
