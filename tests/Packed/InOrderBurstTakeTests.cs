using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using Rings.Chains;

namespace Rings.Tests.Packed;

/// <summary>
/// The driver's burst take under VIRTIO_F_IN_ORDER (virtio 1.2 sections 2.7.9 and 2.8.8), split
/// and packed, against a model: chains of one to three descriptors go out, the device returns
/// them in batches of random sizes (one used element per batch), and the driver takes them back
/// through spans of random sizes, mixed with single takes. Every buffer comes back once, oldest
/// first, the earlier buffers of a batch with their whole writable length and the last with what
/// the device wrote, and the split free list stays in ring order (2.7.5).
/// </summary>
public class InOrderBurstTakeTests
{
    private const int Size = 16;

    /// <summary>One seed per round of a ring test (here adds, batches and takes); at least one round.</summary>
    internal static readonly Arbitrary<int[]> Seeds = Gen.Choose(0, 1_000_000).ArrayOf().Where(a => a.Length > 0).ToArbitrary();

    [Property(MaxTest = 300)]
    public Property Split_burst_take_returns_every_batch_in_order_and_keeps_the_free_list_in_ring_order() =>
        Prop.ForAll(
            Seeds,
            seeds =>
            {
                using var rig = new SplitRig(Size, VirtioFeatures.InOrder);
                return Rounds(rig.Driver, rig.Device, (slot, length) => rig.Slot(slot, length), SplitRig.SlotBytes, ringOrderHeads: true, seeds);
            });

    [Property(MaxTest = 300)]
    public Property Packed_burst_take_returns_every_batch_in_order() =>
        Prop.ForAll(
            Seeds,
            seeds =>
            {
                using var rig = new PackedRig(Size, VirtioFeatures.InOrder);
                return Rounds(rig.Driver, rig.Device, (slot, length) => rig.Slot(slot, length), PackedRig.SlotBytes, ringOrderHeads: false, seeds);
            });

    private static Property Rounds(IDriverRing driver, IDeviceRing device, Func<int, uint, BufferSegment> slot, int slotBytes, bool ringOrderHeads, int[] seeds)
    {
        var expectedNextHead = 0;
        foreach (var seed in seeds)
        {
            var random = new Random(seed);

            // Out: chains until the table is full or the round says stop.
            var outstanding = new List<(ushort Id, uint Writable)>();
            var chains = random.Next(1, Size + 1);
            for (var c = 0; c < chains; c++)
            {
                var descriptors = random.Next(1, 4);
                if (descriptors > driver.FreeDescriptors)
                {
                    break;
                }

                var writable = new BufferSegment[descriptors];
                uint total = 0;
                for (var d = 0; d < descriptors; d++)
                {
                    writable[d] = slot(d, (uint)random.Next(1, slotBytes + 1));
                    total += writable[d].Length;
                }

                if (!driver.TryAdd([], writable, out var id))
                {
                    return false.Label("add refused with room");
                }

                // 2.7.5: split descriptors go out in ring order.
                if (ringOrderHeads && id != expectedNextHead)
                {
                    return false.Label($"head {id}, expected {expectedNextHead}");
                }

                expectedNextHead = (expectedNextHead + descriptors) % Size;
                outstanding.Add((id, total));
            }

            driver.Publish();
            var tokens = new List<ChainToken>();
            while (device.TryPop(out var chain))
            {
                tokens.Add(chain.Token);
            }

            if (tokens.Count != outstanding.Count)
            {
                return false.Label("device popped a different count");
            }

            // Back: batches of random sizes, one used element each.
            var expected = new List<UsedElement>();
            for (var at = 0; at < tokens.Count;)
            {
                var batch = random.Next(1, tokens.Count - at + 1);
                var last = outstanding[at + batch - 1];
                var written = (uint)random.Next(0, (int)last.Writable + 1);
                device.PushUsedInOrderBatch(tokens[at + batch - 1], written, batch);
                for (var i = at; i < at + batch - 1; i++)
                {
                    expected.Add(new UsedElement(outstanding[i].Id, outstanding[i].Writable));
                }

                expected.Add(new UsedElement(last.Id, written));
                at += batch;
            }

            device.PublishUsed();

            // Taken through spans of random sizes, sometimes one at a time.
            var taken = new List<UsedElement>();
            for (var guard = 0; guard < 4 * Size && taken.Count < expected.Count; guard++)
            {
                if (random.Next(4) == 0)
                {
                    if (driver.TryTakeUsed(out var one))
                    {
                        taken.Add(one);
                    }

                    continue;
                }

                var span = new UsedElement[random.Next(1, Size + 1)];
                var n = driver.TakeUsed(span);
                taken.AddRange(span.AsSpan(0, n).ToArray());
            }

            if (!taken.SequenceEqual(expected))
            {
                return false.Label($"taken [{string.Join(", ", taken)}], expected [{string.Join(", ", expected)}]");
            }

            if (driver.IsBroken || driver.Outstanding != 0 || driver.FreeDescriptors != Size || driver.TakeUsed(new UsedElement[4]) != 0)
            {
                return false.Label("driver state after the round");
            }
        }

        return true.ToProperty();
    }
}
