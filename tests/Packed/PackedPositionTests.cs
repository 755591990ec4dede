using Rings.Chains;

namespace Rings.Tests.Packed;

/// <summary>Saving and restoring a packed device's position (vhost-user GET/SET_VRING_BASE).</summary>
public class PackedPositionTests
{
    [Fact]
    public void Position_and_restore_round_trip_across_wraps_through_the_vhost_encoding()
    {
        const int size = 5;
        using var rig = new PackedRig(size);
        var random = new Random(5);
        var pending = new Queue<ushort>(); // made available, not yet popped
        var seen = 0;
        for (var step = 0; step < 200; step++)
        {
            while (rig.Driver.FreeDescriptors > 0 && random.Next(3) != 0)
            {
                Assert.True(rig.Driver.TryAdd(rig.Slot(step % 15), false, out var id));
                pending.Enqueue(id);
            }

            rig.Driver.Publish();
            var tokens = new List<ChainToken>();
            for (var n = random.Next(pending.Count + 1); n > 0; n--)
            {
                Assert.True(rig.Device.TryPop(out var chain));
                Assert.Equal(pending.Dequeue(), chain.Token.Id);
                tokens.Add(chain.Token);
            }

            tokens.Reverse();
            foreach (var t in tokens)
            {
                rig.Device.PushUsed(t, 0);
            }

            rig.Device.PublishUsed();
            while (rig.Driver.TryTakeUsed(out _))
            {
                seen++;
            }

            // Stop the backend and start a new one where the old one stood.
            var saved = rig.Device.Position;
            var wire = RingFormat.Packed.EncodeBase(saved);
            Assert.Equal(saved, RingFormat.Packed.DecodeBase(wire));
            rig.Device = rig.NewDevice();
            rig.Device.Restore(RingFormat.Packed.DecodeBase(wire));
            Assert.Equal(saved, rig.Device.Position);
        }

        Assert.True(seen > 10 * size, "the test went round the ring many times");
        Assert.False(rig.Device.IsBroken);
        Assert.False(rig.Driver.IsBroken);
    }

    [Fact]
    public void Restore_carries_the_descriptors_in_flight()
    {
        using var rig = new PackedRig(4);
        Assert.True(rig.Driver.TryAdd([rig.Slot(0), rig.Slot(1)], [], out _));
        Assert.True(rig.Driver.TryAdd(rig.Slot(2), false, out _));
        rig.Driver.Publish();
        Assert.True(rig.Device.TryPop(out _));
        Assert.True(rig.Device.TryPop(out _));
        Assert.Equal(new RingPosition(3, true, 0, true), rig.Device.Position);

        var device = rig.NewDevice();
        device.Restore(rig.Device.Position);
        Assert.Equal(3, device.DescriptorsInFlight);

        device.Restore(new RingPosition(1, false, 3, true));
        Assert.Equal(2, device.DescriptorsInFlight);
        device.Restore(new RingPosition(2, true, 2, false)); // a whole lap in flight
        Assert.Equal(4, device.DescriptorsInFlight);
    }

    [Fact]
    public void Restore_rejects_positions_the_ring_cannot_hold()
    {
        using var rig = new PackedRig(4);
        Assert.Throws<ArgumentOutOfRangeException>(() => rig.Device.Restore(new RingPosition(4, true, 0, true)));
        Assert.Throws<ArgumentOutOfRangeException>(() => rig.Device.Restore(new RingPosition(0, true, 4, true)));

        // Used ahead of avail in the same lap, or avail more than a lap ahead of used.
        Assert.Throws<ArgumentOutOfRangeException>(() => rig.Device.Restore(new RingPosition(1, true, 2, true)));
        Assert.Throws<ArgumentOutOfRangeException>(() => rig.Device.Restore(new RingPosition(2, false, 1, true)));
        Assert.Equal(new RingPosition(0, true, 0, true), rig.Device.Position);
    }

    [Fact]
    public void The_vhost_encoding_carries_wrap_counters_in_bits_15_and_31()
    {
        var p = new RingPosition(3, false, 2, true);
        Assert.Equal(3u | (2u << 16) | (1u << 31), RingFormat.Packed.EncodeBase(p));
        Assert.Equal((1u << 15) | 7u, RingFormat.Packed.EncodeBase(new RingPosition(7, true, 0, false)));
    }

    [Fact]
    public void Restore_clears_a_break()
    {
        using var rig = new PackedRig(4);
        rig.WriteDescriptor(0, 0, 16, 0, Pf.Avail);
        Assert.False(rig.Device.TryPop(out _));
        Assert.True(rig.Device.IsBroken);
        rig.Device.Restore(new RingPosition(1, true, 1, true));
        Assert.False(rig.Device.IsBroken);
        Assert.Equal(new RingPosition(1, true, 1, true), rig.Device.Position);
    }
}
