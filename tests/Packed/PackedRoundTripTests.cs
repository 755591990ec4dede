using Rings.Chains;

namespace Rings.Tests.Packed;

public class PackedRoundTripTests
{
    [Fact]
    public void A_transmit_buffer_goes_round_with_its_bytes_and_flags_per_spec()
    {
        using var rig = new PackedRig(4);
        "hello"u8.CopyTo(rig.SlotBytesOf(0));
        Assert.True(rig.Driver.TryAdd(rig.Slot(0, 5), false, out var id));
        Assert.Equal(0, id);

        // Not visible before Publish: the head's flags are held back.
        Assert.False(rig.Device.TryPop(out _));
        Assert.Equal(0, rig.FlagsAt(0));
        rig.Driver.Publish();
        Assert.Equal(Pf.Avail, rig.FlagsAt(0));
        Assert.Equal(id, rig.IdAt(0));

        Assert.True(rig.Device.TryPop(out var chain));
        Assert.Equal(1, chain.Segments.Length);
        Assert.Equal(5ul, chain.ReadableBytes);
        Assert.Equal(0ul, chain.WritableBytes);
        Assert.Equal(new ChainToken(id, 1), chain.Token);
        var copy = new byte[5];
        chain.CopyReadableTo(copy);
        Assert.Equal("hello"u8.ToArray(), copy);
        Assert.False(rig.Device.TryPop(out _));

        rig.Device.PushUsed(chain.Token, 0);
        Assert.False(rig.Driver.TryTakeUsed(out _));
        rig.Device.PublishUsed();
        Assert.Equal(Pf.Avail | Pf.Used, rig.FlagsAt(0));

        Assert.True(rig.Driver.TryTakeUsed(out var used));
        Assert.Equal(new UsedElement(id, 0), used);
        Assert.False(rig.Driver.TryTakeUsed(out _));
        Assert.Equal(0, rig.Driver.Outstanding);
        Assert.Equal(4, rig.Driver.FreeDescriptors);
        Assert.Equal(1, rig.Driver.Counters.Packets);
        Assert.Equal(1, rig.Device.Counters.Packets);
        Assert.Equal(5, rig.Device.Counters.Bytes);
    }

    [Fact]
    public void A_receive_buffer_comes_back_with_the_bytes_the_device_wrote()
    {
        using var rig = new PackedRig(4);
        Assert.True(rig.Driver.TryAdd(rig.Slot(1, 64), true, out var id));
        rig.Driver.Publish();
        Assert.True(rig.Device.TryPop(out var chain));
        Assert.Equal(0, chain.ReadableCount);
        Assert.Equal(64ul, chain.WritableBytes);
        Assert.Equal(3, chain.CopyToWritable("abc"u8));
        rig.Device.PushUsed(chain.Token, 3);
        rig.Device.PublishUsed();

        // 2.8.3: WRITE in a used descriptor says the device wrote something.
        Assert.Equal(Pf.Avail | Pf.Used | Pf.Write, rig.FlagsAt(0));
        Assert.True(rig.Driver.TryTakeUsed(out var used));
        Assert.Equal(new UsedElement(id, 3), used);
        Assert.Equal("abc"u8.ToArray(), rig.SlotBytesOf(1)[..3].ToArray());
    }

    [Fact]
    public void A_chain_crossing_the_ring_end_flips_the_wrap_bits_midway()
    {
        using var rig = new PackedRig(5);

        // Move both sides to position 3 first.
        for (var i = 0; i < 3; i++)
        {
            Assert.True(rig.Driver.TryAdd(rig.Slot(i), false, out _));
        }

        rig.Driver.Publish();
        for (var i = 0; i < 3; i++)
        {
            Assert.True(rig.Device.TryPop(out var c));
            rig.Device.PushUsed(c.Token, 0);
        }

        rig.Device.PublishUsed();
        while (rig.Driver.TryTakeUsed(out _))
        {
        }

        // A 4-descriptor list at positions 3, 4, 0, 1: the last two carry the next lap's bits.
        Assert.True(rig.Driver.TryAdd([rig.Slot(3, 10), rig.Slot(4, 20)], [rig.Slot(5, 30), rig.Slot(6, 40)], out var id));
        rig.Driver.Publish();
        Assert.Equal(Pf.Avail | Pf.Next, rig.FlagsAt(3));
        Assert.Equal(Pf.Avail | Pf.Next, rig.FlagsAt(4));
        Assert.Equal(Pf.Used | Pf.Next | Pf.Write, rig.FlagsAt(0));
        Assert.Equal(Pf.Used | Pf.Write, rig.FlagsAt(1));
        Assert.Equal(id, rig.IdAt(1));

        Assert.True(rig.Device.TryPop(out var chain));
        Assert.Equal(4, chain.Segments.Length);
        Assert.Equal(2, chain.ReadableCount);
        Assert.Equal(30ul, chain.ReadableBytes);
        Assert.Equal(70ul, chain.WritableBytes);
        Assert.Equal(new ChainToken(id, 4), chain.Token);
        Assert.Equal(new RingPosition(2, false, 3, true), rig.Device.Position);

        rig.Device.PushUsed(chain.Token, 50);
        rig.Device.PublishUsed();
        Assert.True(rig.Driver.TryTakeUsed(out var used));
        Assert.Equal(new UsedElement(id, 50), used);
        Assert.Equal(new RingPosition(2, false, 2, false), rig.Device.Position);
        Assert.Equal(rig.Device.Position, rig.Driver.Position);
        Assert.Equal(5, rig.Driver.FreeDescriptors);
    }

    [Fact]
    public void An_indirect_table_takes_one_ring_descriptor()
    {
        using var rig = new PackedRig(4, VirtioFeatures.IndirectDescriptors, indirectEntries: 4);
        Assert.True(rig.Driver.TryAdd([rig.Slot(0, 12), rig.Slot(1, 100)], [rig.Slot(2, 64)], out var id));
        Assert.Equal(3, rig.Driver.FreeDescriptors);
        rig.Driver.Publish();
        Assert.Equal(Pf.Avail | Pf.Indirect, rig.FlagsAt(0));
        Assert.Equal(48u, rig.LengthAt(0));

        Assert.True(rig.Device.TryPop(out var chain));
        Assert.Equal(3, chain.Segments.Length);
        Assert.Equal(112ul, chain.ReadableBytes);
        Assert.Equal(64ul, chain.WritableBytes);
        Assert.Equal(new ChainToken(id, 1), chain.Token);
        rig.Device.PushUsed(chain.Token, 64);
        rig.Device.PublishUsed();
        Assert.True(rig.Driver.TryTakeUsed(out var used));
        Assert.Equal(new UsedElement(id, 64), used);
        Assert.Equal(4, rig.Driver.FreeDescriptors);
    }

    [Fact]
    public void A_burst_becomes_visible_at_once_when_its_first_head_is_published()
    {
        using var rig = new PackedRig(8);
        for (var i = 0; i < 3; i++)
        {
            Assert.True(rig.Driver.TryAdd(rig.Slot(i), false, out _));
        }

        // Later heads are already written; the first is held back, so the device sees nothing.
        Assert.Equal(0, rig.FlagsAt(0));
        Assert.Equal(Pf.Avail, rig.FlagsAt(1));
        Assert.False(rig.Device.TryPop(out _));
        Assert.False(rig.Device.EnableAvailNotifications());

        rig.Driver.Publish();
        Assert.Equal(1, rig.Driver.Counters.Bursts);
        for (var i = 0; i < 3; i++)
        {
            Assert.True(rig.Device.TryPop(out var c));
            rig.Device.PushUsed(c.Token, 0);
        }

        // Same on the way back.
        Assert.Equal(Pf.Avail, rig.FlagsAt(0));
        Assert.Equal(Pf.Avail | Pf.Used, rig.FlagsAt(1));
        Assert.False(rig.Driver.TryTakeUsed(out _));
        rig.Device.PublishUsed();
        Assert.Equal(1, rig.Device.Counters.Bursts);
        for (var i = 0; i < 3; i++)
        {
            Assert.True(rig.Driver.TryTakeUsed(out _));
        }
    }

    [Fact]
    public void A_device_that_completes_out_of_order_returns_every_buffer_once()
    {
        using var rig = new PackedRig(6);

        // Lists of 2, 1 and 3 descriptors fill the ring.
        Assert.True(rig.Driver.TryAdd([rig.Slot(0), rig.Slot(1)], [], out var a));
        Assert.True(rig.Driver.TryAdd(rig.Slot(3), true, out var b));
        Assert.True(rig.Driver.TryAdd([rig.Slot(6)], [rig.Slot(7), rig.Slot(8)], out var c));
        Assert.Equal(0, rig.Driver.FreeDescriptors);
        Assert.False(rig.Driver.TryAdd(rig.Slot(9), false, out _));
        rig.Driver.Publish();

        var tokens = new ChainToken[3];
        for (var i = 0; i < 3; i++)
        {
            Assert.True(rig.Device.TryPop(out var chain));
            tokens[i] = chain.Token;
        }

        Assert.Equal(6, rig.Device.DescriptorsInFlight);

        // Complete c, then a: the used descriptors land at positions 0 and 3 (c's 3 descriptors skipped).
        rig.Device.PushUsed(tokens[2], 7);
        rig.Device.PushUsed(tokens[0], 0);
        rig.Device.PublishUsed();
        Assert.Equal(c, rig.IdAt(0));
        Assert.Equal(a, rig.IdAt(3));

        Assert.True(rig.Driver.TryTakeUsed(out var u1));
        Assert.Equal(new UsedElement(c, 7), u1);
        Assert.Equal(3, rig.Driver.FreeDescriptors);
        Assert.True(rig.Driver.TryTakeUsed(out var u2));
        Assert.Equal(new UsedElement(a, 0), u2);
        Assert.False(rig.Driver.TryTakeUsed(out _));
        Assert.Equal(1, rig.Driver.Outstanding);

        // The freed ids are reused while b is still out; ids stay unique.
        Assert.True(rig.Driver.TryAdd(rig.Slot(12), false, out var d));
        Assert.True(rig.Driver.TryAdd(rig.Slot(13), false, out var e));
        Assert.Equal(3, new HashSet<ushort> { b, d, e }.Count);
        rig.Driver.Publish();
        Assert.True(rig.Device.TryPop(out var cd));
        Assert.Equal(d, cd.Token.Id);
        var td = cd.Token;
        Assert.True(rig.Device.TryPop(out var ce));
        var te = ce.Token;

        rig.Device.PushUsed(te, 0);
        rig.Device.PushUsed(tokens[1], 11);
        rig.Device.PushUsed(td, 0);
        rig.Device.PublishUsed();
        Assert.True(rig.Driver.TryTakeUsed(out var x));
        Assert.Equal(e, x.Id);
        Assert.True(rig.Driver.TryTakeUsed(out var y));
        Assert.Equal(new UsedElement(b, 11), y);
        Assert.True(rig.Driver.TryTakeUsed(out var z));
        Assert.Equal(d, z.Id);
        Assert.Equal(6, rig.Driver.FreeDescriptors);
        Assert.False(rig.Driver.IsBroken);
        Assert.False(rig.Device.IsBroken);
        Assert.Equal(rig.Device.Position, rig.Driver.Position);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    [InlineData(7)]
    [InlineData(256)]
    public void A_full_ring_advances_by_exactly_its_size(int size)
    {
        using var rig = new PackedRig(size);
        for (var lap = 0; lap < 3; lap++)
        {
            for (var i = 0; i < size; i++)
            {
                Assert.True(rig.Driver.TryAdd(rig.Slot(i), false, out _));
            }

            Assert.False(rig.Driver.TryAdd(rig.Slot(0), false, out _));
            rig.Driver.Publish();
            var tokens = new List<ChainToken>();
            while (rig.Device.TryPop(out var chain))
            {
                tokens.Add(chain.Token);
            }

            Assert.Equal(size, tokens.Count);
            Assert.Equal(size, rig.Device.DescriptorsInFlight);

            // Popped a whole lap: the avail wrap counter flipped, position back at 0.
            var wrap = lap % 2 == 1;
            Assert.Equal(new RingPosition(0, wrap, 0, lap % 2 == 0), rig.Device.Position);
            foreach (var t in tokens)
            {
                rig.Device.PushUsed(t, 0);
            }

            rig.Device.PublishUsed();
            Assert.Equal(new RingPosition(0, wrap, 0, wrap), rig.Device.Position);
            var taken = 0;
            while (rig.Driver.TryTakeUsed(out _))
            {
                taken++;
            }

            Assert.Equal(size, taken);
            Assert.Equal(rig.Device.Position, rig.Driver.Position);
            Assert.Equal(size, rig.Driver.FreeDescriptors);
        }
    }

    [Fact]
    public void A_full_ring_of_mixed_lists_advances_by_exactly_its_size()
    {
        using var rig = new PackedRig(10);
        Assert.True(rig.Driver.TryAdd([rig.Slot(0), rig.Slot(1), rig.Slot(2)], [], out _));
        Assert.True(rig.Driver.TryAdd(rig.Slot(3), false, out _));
        Assert.True(rig.Driver.TryAdd([rig.Slot(6)], [rig.Slot(7), rig.Slot(8)], out _));
        Assert.False(rig.Driver.TryAdd([rig.Slot(9), rig.Slot(10), rig.Slot(11), rig.Slot(12)], [], out _));
        Assert.True(rig.Driver.TryAdd([rig.Slot(9)], [rig.Slot(10), rig.Slot(11)], out _));
        Assert.Equal(0, rig.Driver.FreeDescriptors);
        rig.Driver.Publish();
        var tokens = new List<ChainToken>();
        while (rig.Device.TryPop(out var chain))
        {
            tokens.Add(chain.Token);
        }

        Assert.Equal([3, 1, 3, 3], tokens.Select(t => (int)t.DescriptorCount));
        Assert.Equal(new RingPosition(0, false, 0, true), rig.Device.Position);
        tokens.Reverse();
        foreach (var t in tokens)
        {
            rig.Device.PushUsed(t, 0);
        }

        rig.Device.PublishUsed();
        var ids = new List<ushort>();
        while (rig.Driver.TryTakeUsed(out var u))
        {
            ids.Add(u.Id);
        }

        Assert.Equal(tokens.Select(t => t.Id), ids);
        Assert.Equal(new RingPosition(0, false, 0, false), rig.Device.Position);
        Assert.Equal(rig.Device.Position, rig.Driver.Position);
    }

    [Fact]
    public void Reset_returns_the_driver_to_a_fresh_ring()
    {
        using var rig = new PackedRig(3);
        Assert.True(rig.Driver.TryAdd(rig.Slot(0), false, out _));
        Assert.True(rig.Driver.TryAdd(rig.Slot(1), false, out _));
        rig.Driver.Publish();
        rig.Driver.Reset();
        Assert.Equal(3, rig.Driver.FreeDescriptors);
        Assert.Equal(0, rig.Driver.Outstanding);
        Assert.Equal(new RingPosition(0, true, 0, true), rig.Driver.Position);
        Assert.All(rig.Ring.ToArray(), b => Assert.Equal(0, b));
        Assert.True(rig.Driver.TryAdd(rig.Slot(0), false, out var id));
        Assert.Equal(0, id);
    }
}
