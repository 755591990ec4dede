using System.Buffers.Binary;
using Rings.Chains;

namespace Rings.Tests.Packed;

/// <summary>VIRTIO_F_IN_ORDER batches (virtio 1.2 sections 2.7.9 and 2.8.8) on both formats.</summary>
public class InOrderTests
{
    private const VirtioFeatures InOrder = VirtioFeatures.InOrder | VirtioFeatures.IndirectDescriptors;

    [Fact]
    public void Packed_batch_is_one_used_descriptor_and_the_driver_reclaims_it_all()
    {
        using var rig = new PackedRig(8, InOrder, indirectEntries: 2);
        Assert.True(rig.Driver.TryAdd(rig.Slot(0, 60), false, out var a));                               // 1 descriptor
        Assert.True(rig.Driver.TryAdd([], [rig.Slot(1, 10), rig.Slot(2, 20), rig.Slot(3, 30)], out var b)); // 3 descriptors
        Assert.True(rig.Driver.TryAdd([rig.Slot(4, 4)], [rig.Slot(5, 40)], out var c));                  // indirect: 1
        Assert.True(rig.Driver.TryAdd(rig.Slot(6, 50), true, out var d));                                // 1
        rig.Driver.Publish();
        var tokens = new List<ChainToken>();
        while (rig.Device.TryPop(out var chain))
        {
            tokens.Add(chain.Token);
        }

        Assert.Equal([1, 3, 1, 1], tokens.Select(t => (int)t.DescriptorCount));
        rig.Device.PushUsedInOrderBatch(tokens[3], 33, 4);
        rig.Device.PublishUsed();

        // One used descriptor over the batch's first, naming its last buffer; the rest untouched.
        Assert.Equal(Pf.Avail | Pf.Used | Pf.Write, rig.FlagsAt(0));
        Assert.Equal(d, rig.IdAt(0));
        Assert.Equal(33u, rig.LengthAt(0));
        Assert.Equal(Pf.Avail | Pf.Write | Pf.Next, rig.FlagsAt(1));
        Assert.Equal(new RingPosition(6, true, 6, true), rig.Device.Position);

        var used = new List<UsedElement>();
        while (rig.Driver.TryTakeUsed(out var u))
        {
            used.Add(u);
        }

        // Earlier buffers come back used completely: their whole writable length (0 for transmit).
        Assert.Equal([new UsedElement(a, 0), new UsedElement(b, 60), new UsedElement(c, 40), new UsedElement(d, 33)], used);
        Assert.Equal(8, rig.Driver.FreeDescriptors);
        Assert.Equal(rig.Device.Position, rig.Driver.Position);

        // The next batch's used descriptor lands over its own first descriptor, across the ring end.
        Assert.True(rig.Driver.TryAdd([rig.Slot(0), rig.Slot(1), rig.Slot(2)], [], out var e));
        Assert.True(rig.Driver.TryAdd(rig.Slot(3), false, out var f));
        rig.Driver.Publish();
        Assert.True(rig.Device.TryPop(out _));
        Assert.True(rig.Device.TryPop(out var cf));
        rig.Device.PushUsedInOrderBatch(cf.Token, 0, 2);
        rig.Device.PublishUsed();
        Assert.Equal(f, rig.IdAt(6));
        Assert.Equal(Pf.UsedBits(true), rig.FlagsAt(6));
        Assert.True(rig.Driver.TryTakeUsed(out var ue));
        Assert.Equal(e, ue.Id);

        // Mid-batch the driver knows more is waiting without looking at the ring.
        Assert.True(rig.Driver.EnableUsedNotifications());
        Assert.True(rig.Driver.TryTakeUsed(out var uf));
        Assert.Equal(new UsedElement(f, 0), uf);
        Assert.False(rig.Driver.EnableUsedNotifications());
        Assert.Equal(new RingPosition(2, false, 2, false), rig.Driver.Position);
        Assert.Equal(rig.Device.Position, rig.Driver.Position);
    }

    [Fact]
    public void Packed_burst_take_with_every_buffer_back_reads_no_further_descriptor()
    {
        // With none outstanding no descriptor is the device's to have written; a single take reads
        // none, and a burst take, having taken every buffer one used descriptor each, must not
        // either: here the next descriptor is made to look used, naming a buffer never made available.
        using var rig = new PackedRig(4, InOrder);
        Assert.True(rig.Driver.TryAdd(rig.Slot(0, 8), true, out var a));
        Assert.True(rig.Driver.TryAdd(rig.Slot(1, 8), true, out var b));
        rig.Driver.Publish();
        Assert.True(rig.Device.TryPop(out var ca));
        Assert.True(rig.Device.TryPop(out var cb));
        rig.Device.PushUsed(ca.Token, 5);
        rig.Device.PushUsed(cb.Token, 6);
        rig.Device.PublishUsed();
        rig.WriteDescriptor(2, 0, 0, 3, Pf.UsedBits(true));

        var used = new UsedElement[4];
        Assert.Equal(2, rig.Driver.TakeUsed(used));
        Assert.Equal([new UsedElement(a, 5), new UsedElement(b, 6)], used[..2]);
        Assert.False(rig.Driver.IsBroken, rig.Driver.BrokenReason.ToString());
        Assert.False(rig.Driver.TryTakeUsed(out _));
        Assert.False(rig.Driver.IsBroken);
    }

    [Fact]
    public void Packed_driver_also_takes_one_used_descriptor_per_buffer()
    {
        using var rig = new PackedRig(3, InOrder);
        for (var round = 0; round < 10; round++)
        {
            Assert.True(rig.Driver.TryAdd(rig.Slot(0, 8), true, out var a));
            Assert.True(rig.Driver.TryAdd(rig.Slot(1, 8), true, out var b));
            rig.Driver.Publish();
            Assert.True(rig.Device.TryPop(out var ca));
            var ta = ca.Token;
            Assert.True(rig.Device.TryPop(out var cb));
            rig.Device.PushUsed(ta, 1);
            rig.Device.PushUsed(cb.Token, 2);
            rig.Device.PublishUsed();
            Assert.True(rig.Driver.TryTakeUsed(out var ua));
            Assert.True(rig.Driver.TryTakeUsed(out var ub));
            Assert.Equal(new UsedElement(a, 1), ua);
            Assert.Equal(new UsedElement(b, 2), ub);
        }
    }

    [Fact]
    public void Split_batch_is_one_used_element_and_the_driver_reclaims_it_all()
    {
        using var rig = new SplitRig(8, VirtioFeatures.InOrder);
        Assert.True(rig.Driver.TryAdd(rig.Slot(0, 60), false, out var a));
        Assert.True(rig.Driver.TryAdd([], [rig.Slot(1, 10), rig.Slot(2, 20)], out var b));
        Assert.True(rig.Driver.TryAdd(rig.Slot(3, 50), true, out var c));
        rig.Driver.Publish();

        // 2.7.5: under IN_ORDER descriptors go out in ring order.
        Assert.Equal([0, 1, 3], new[] { a, b, c }.Select(x => (int)x));
        var tokens = new List<ChainToken>();
        while (rig.Device.TryPop(out var chain))
        {
            tokens.Add(chain.Token);
        }

        rig.Device.PushUsedInOrderBatch(tokens[2], 44, 3);
        rig.Device.PublishUsed();

        // One used element at offset 0, used.idx moved by 3.
        var usedRing = rig.Region.Slice((ulong)rig.Layout.DeviceAreaOffset, rig.Layout.DeviceAreaBytes);
        Assert.Equal(3, BinaryPrimitives.ReadUInt16LittleEndian(usedRing[2..]));
        Assert.Equal(c, BinaryPrimitives.ReadUInt32LittleEndian(usedRing[4..]));
        Assert.Equal(44u, BinaryPrimitives.ReadUInt32LittleEndian(usedRing[8..]));

        var used = new List<UsedElement>();
        while (rig.Driver.TryTakeUsed(out var u))
        {
            used.Add(u);
        }

        Assert.Equal([new UsedElement(a, 0), new UsedElement(b, 30), new UsedElement(c, 44)], used);
        Assert.Equal(8, rig.Driver.FreeDescriptors);

        // The free list stays in ring order: the next list starts at descriptor 4 and wraps 7 -> 0.
        Assert.True(rig.Driver.TryAdd(rig.Slot(4), false, out var d));
        Assert.True(rig.Driver.TryAdd([rig.Slot(5), rig.Slot(6), rig.Slot(7)], [], out var e));
        Assert.True(rig.Driver.TryAdd([rig.Slot(8), rig.Slot(9)], [], out var f));
        Assert.Equal([4, 5, 0], new[] { d, e, f }.Select(x => (int)x));
        var table = rig.Region.Slice(0, 8 * 16);
        Assert.Equal(6, BinaryPrimitives.ReadUInt16LittleEndian(table[((5 * 16) + 14)..]));
        Assert.Equal(7, BinaryPrimitives.ReadUInt16LittleEndian(table[((6 * 16) + 14)..]));
        Assert.Equal(1, BinaryPrimitives.ReadUInt16LittleEndian(table[((0 * 16) + 14)..]));
        rig.Driver.Publish();

        // Next batch: the used element goes to offset 3, the batch's first avail entry.
        tokens.Clear();
        while (rig.Device.TryPop(out var chain))
        {
            tokens.Add(chain.Token);
        }

        rig.Device.PushUsedInOrderBatch(tokens[1], 0, 2);
        rig.Device.PushUsed(tokens[2], 0);
        rig.Device.PublishUsed();
        Assert.Equal(e, BinaryPrimitives.ReadUInt32LittleEndian(usedRing[(4 + (3 * 8))..]));
        Assert.Equal(f, BinaryPrimitives.ReadUInt32LittleEndian(usedRing[(4 + (5 * 8))..]));
        Assert.True(rig.Driver.TryTakeUsed(out var ud));
        Assert.True(rig.Driver.EnableUsedNotifications()); // mid-batch
        Assert.True(rig.Driver.TryTakeUsed(out var ue));
        Assert.True(rig.Driver.TryTakeUsed(out var uf));
        Assert.Equal([d, e, f], new[] { ud.Id, ue.Id, uf.Id });
        Assert.False(rig.Driver.TryTakeUsed(out _));
        Assert.False(rig.Driver.IsBroken);
    }

    [Fact]
    public void Split_batch_larger_than_the_used_index_moved_breaks_the_driver()
    {
        using var rig = new SplitRig(8, VirtioFeatures.InOrder);
        for (var i = 0; i < 3; i++)
        {
            Assert.True(rig.Driver.TryAdd(rig.Slot(i), false, out _));
        }

        rig.Driver.Publish();
        var tokens = new List<ChainToken>();
        while (rig.Device.TryPop(out var chain))
        {
            tokens.Add(chain.Token);
        }

        // A hostile device names the third buffer but moves used.idx by one.
        rig.Device.PushUsed(tokens[2], 0);
        rig.Device.PublishUsed();
        Assert.False(rig.Driver.TryTakeUsed(out _));
        Assert.Equal(BrokenReason.UsedBatchTooLarge, rig.Driver.BrokenReason);
        Assert.Equal(3, rig.Driver.Outstanding);
    }

    [Fact]
    public void Batches_need_in_order_and_buffers_in_flight()
    {
        using var split = new SplitRig(4, VirtioFeatures.None);
        Assert.Throws<InvalidOperationException>(() => split.Device.PushUsedInOrderBatch(new ChainToken(0, 1), 0, 1));
        using var packed = new PackedRig(4);
        Assert.Throws<InvalidOperationException>(() => packed.Device.PushUsedInOrderBatch(new ChainToken(0, 1), 0, 1));

        using var rig = new PackedRig(4, VirtioFeatures.InOrder);
        Assert.True(rig.Driver.TryAdd(rig.Slot(0), false, out _));
        Assert.True(rig.Driver.TryAdd(rig.Slot(1), false, out _));
        rig.Driver.Publish();
        Assert.True(rig.Device.TryPop(out var c0));
        var t0 = c0.Token;
        Assert.True(rig.Device.TryPop(out var c1));
        var t1 = c1.Token;
        Assert.Throws<ArgumentOutOfRangeException>(() => rig.Device.PushUsedInOrderBatch(t1, 0, 3));
        Assert.Throws<ArgumentOutOfRangeException>(() => rig.Device.PushUsedInOrderBatch(t1, 0, 0));
        Assert.Throws<ArgumentException>(() => rig.Device.PushUsedInOrderBatch(t0, 0, 2));
        rig.Device.PushUsedInOrderBatch(t1, 0, 2);
        rig.Device.PublishUsed();
        Assert.True(rig.Driver.TryTakeUsed(out _));
        Assert.True(rig.Driver.TryTakeUsed(out _));
        Assert.Equal(0, rig.Device.DescriptorsInFlight);
    }

    [Fact]
    public void Packed_batches_skip_the_descriptors_the_device_popped_also_after_undone_pops()
    {
        // No indirect tables: each chain takes a descriptor per segment.
        using var rig = new PackedRig(8, VirtioFeatures.InOrder);
        Assert.True(rig.Driver.TryAdd([rig.Slot(0), rig.Slot(1)], [], out var a));               // 2 descriptors
        Assert.True(rig.Driver.TryAdd(rig.Slot(2), false, out var b));                           // 1
        Assert.True(rig.Driver.TryAdd([rig.Slot(3), rig.Slot(4), rig.Slot(5)], [], out var c));  // 3
        rig.Driver.Publish();
        Assert.True(rig.Device.TryPop(out var ca));
        var ta = ca.Token;
        var beforeB = rig.Device.Position;
        Assert.True(rig.Device.TryPop(out _));
        Assert.True(rig.Device.TryPop(out _));

        // b and c go back and are popped again: the device's count of their descriptors must
        // follow its pops, not what it popped first.
        rig.Device.UndoPops(beforeB);
        Assert.Equal(2, rig.Device.DescriptorsInFlight);
        Assert.True(rig.Device.TryPop(out var cb));
        var tb = cb.Token;
        Assert.True(rig.Device.TryPop(out var cc));
        var tc = cc.Token;
        Assert.Equal([2, 1, 3], new[] { ta, tb, tc }.Select(t => (int)t.DescriptorCount));

        rig.Device.PushUsedInOrderBatch(ta, 0, 1);
        Assert.Equal(new RingPosition(6, true, 2, true), rig.Device.Position);
        rig.Device.PushUsedInOrderBatch(tc, 0, 2);
        Assert.Equal(new RingPosition(6, true, 6, true), rig.Device.Position);
        Assert.Equal(0, rig.Device.DescriptorsInFlight);
        rig.Device.PublishUsed();

        var used = new List<UsedElement>();
        while (rig.Driver.TryTakeUsed(out var u))
        {
            used.Add(u);
        }

        Assert.Equal([a, b, c], used.Select(u => u.Id));
        Assert.Equal(8, rig.Driver.FreeDescriptors);
        Assert.Equal(rig.Device.Position, rig.Driver.Position);
    }

    [Fact]
    public void Packed_device_refuses_to_undo_a_pop_it_already_returned()
    {
        // The pop log holds ids; a buffer's descriptor count lives in its record only while it is
        // in flight. Undoing a pop that was returned would step the avail position by a count
        // that is gone: it is refused, and the ring stays as it was.
        using var rig = new PackedRig(8);
        Assert.True(rig.Driver.TryAdd([rig.Slot(0), rig.Slot(1)], [], out _));   // 2 descriptors
        Assert.True(rig.Driver.TryAdd(rig.Slot(2), false, out _));               // 1
        rig.Driver.Publish();
        Assert.True(rig.Device.TryPop(out _));
        Assert.True(rig.Device.TryPop(out var newest));
        rig.Device.PushUsed(newest.Token, 0);
        var position = rig.Device.Position;

        Assert.Throws<InvalidOperationException>(() => rig.Device.UndoNewestPops(1));
        Assert.Equal(position, rig.Device.Position);
        Assert.Equal(2, rig.Device.DescriptorsInFlight);

        // Two pops back reach the returned one first, though the older is still in flight.
        Assert.Throws<InvalidOperationException>(() => rig.Device.UndoNewestPops(2));
        Assert.Equal(position, rig.Device.Position);
    }

    [Fact]
    public void Split_in_order_laps_against_the_ring_order()
    {
        using var rig = new SplitRig(4, VirtioFeatures.InOrder);
        var random = new Random(7);
        var expectedHead = 0;
        for (var round = 0; round < 2000; round++)
        {
            var ids = new List<ushort>();
            var descriptorCount = 0;
            while (true)
            {
                var n = random.Next(1, 3);
                if (n > rig.Driver.FreeDescriptors)
                {
                    break;
                }

                Assert.True(rig.Driver.TryAdd(n == 1 ? [rig.Slot(0)] : [rig.Slot(0), rig.Slot(1)], [], out var id));

                // Ring order: every buffer starts where the previous one ended.
                Assert.Equal(expectedHead, id);
                expectedHead = (expectedHead + n) % 4;
                descriptorCount += n;
                ids.Add(id);
            }

            rig.Driver.Publish();
            var tokens = new List<ChainToken>();
            while (rig.Device.TryPop(out var chain))
            {
                tokens.Add(chain.Token);
            }

            Assert.Equal(ids, tokens.Select(t => t.Id));
            var batch = random.Next(1, tokens.Count + 1);
            rig.Device.PushUsedInOrderBatch(tokens[batch - 1], 0, batch);
            for (var i = batch; i < tokens.Count; i++)
            {
                rig.Device.PushUsed(tokens[i], 0);
            }

            rig.Device.PublishUsed();
            var back = new List<ushort>();
            while (rig.Driver.TryTakeUsed(out var u))
            {
                back.Add(u.Id);
            }

            Assert.Equal(ids, back);
        }

        Assert.False(rig.Driver.IsBroken);
    }
}
