using System.Buffers.Binary;
using Rings.Chains;

namespace Rings.Tests.Packed;

/// <summary>
/// Driver and device on two threads over one ring, as in real use: every buffer arrives once, in
/// order, with the bytes the driver wrote, and comes back with the bytes the device wrote.
/// </summary>
public class PackedConcurrentTests
{
    [Theory]
    [InlineData(255, VirtioFeatures.None)]
    [InlineData(7, VirtioFeatures.EventIndex | VirtioFeatures.IndirectDescriptors)]
    [InlineData(64, VirtioFeatures.InOrder)]
    public void Two_threads_move_every_buffer_once_in_order(int size, VirtioFeatures features)
    {
        const int packets = 50_000;
        using var rig = new PackedRig(size, features, indirectEntries: 2);
        var deadline = DateTime.UtcNow.AddSeconds(40);
        Exception? deviceError = null;
        var device = new Thread(() =>
        {
            try
            {
                RunDevice(rig, packets, deadline);
            }
            catch (Exception e)
            {
                deviceError = e;
            }
        });
        device.Start();

        var inOrder = (features & VirtioFeatures.InOrder) != 0;

        // The driver side: slot groups (3 slots each) per outstanding buffer, found by buffer id.
        var freeGroups = new Stack<int>(Enumerable.Range(0, size));
        var groupOf = new int[size];
        var sequenceOf = new long[size];
        long sent = 0, received = 0;
        while (received < packets && DateTime.UtcNow < deadline && deviceError is null)
        {
            var added = 0;
            while (sent < packets && rig.Driver.FreeDescriptors >= 2)
            {
                var group = freeGroups.Pop();
                var readSlot = group * PackedRig.SlotsPerId;
                BinaryPrimitives.WriteInt64LittleEndian(rig.SlotBytesOf(readSlot), sent);
                rig.SlotBytesOf(readSlot + 1).Clear();
                ushort id;
                if (sent % 3 == 0)
                {
                    Assert.True(rig.Driver.TryAdd(rig.Slot(readSlot, 16), false, out id));
                }
                else
                {
                    Assert.True(rig.Driver.TryAdd([rig.Slot(readSlot, 16)], [rig.Slot(readSlot + 1, 16)], out id));
                }

                groupOf[id] = group;
                sequenceOf[id] = sent;
                sent++;
                added++;
            }

            if (added > 0)
            {
                rig.Driver.Publish();
                rig.Driver.KickNeeded();
            }

            var took = false;
            while (rig.Driver.TryTakeUsed(out var used))
            {
                took = true;
                var group = groupOf[used.Id];
                if (sequenceOf[used.Id] % 3 != 0)
                {
                    Assert.Equal(~sequenceOf[used.Id], BinaryPrimitives.ReadInt64LittleEndian(rig.SlotBytesOf((group * PackedRig.SlotsPerId) + 1)));
                    // Under IN_ORDER the buffers before a batch's last count as written whole.
                    Assert.True(used.Length == 8 || (inOrder && used.Length == 16), $"length {used.Length}");
                }

                freeGroups.Push(group);
                received++;
            }

            Assert.False(rig.Driver.IsBroken, rig.Driver.BrokenReason.ToString());
            if (!took && added == 0)
            {
                Thread.Yield();
            }
        }

        device.Join();
        Assert.Null(deviceError);
        Assert.Equal(packets, received);
        Assert.Equal(0, rig.Driver.Outstanding);
        Assert.Equal(packets, rig.Device.Counters.Packets);
    }

    private static void RunDevice(PackedRig rig, int packets, DateTime deadline)
    {
        var inOrder = (rig.Features & VirtioFeatures.InOrder) != 0;
        long expected = 0;
        var pending = new List<ChainToken>();
        var written = new List<uint>();
        while (expected < packets && DateTime.UtcNow < deadline)
        {
            var popped = false;
            while (rig.Device.TryPop(out var chain))
            {
                popped = true;
                var seq = BinaryPrimitives.ReadInt64LittleEndian(chain.Segments[0].Span);
                if (seq != expected)
                {
                    throw new InvalidOperationException($"popped {seq}, expected {expected}");
                }

                if (chain.WritableBytes >= 8)
                {
                    BinaryPrimitives.WriteInt64LittleEndian(chain.Writable[0].Span, ~seq);
                }

                expected++;
                pending.Add(chain.Token);
                written.Add(chain.WritableBytes >= 8 ? 8u : 0u);
            }

            if (rig.Device.IsBroken)
            {
                throw new InvalidOperationException($"device broke: {rig.Device.BrokenReason}");
            }

            if (pending.Count > 0)
            {
                if (inOrder)
                {
                    // One used descriptor for everything popped.
                    rig.Device.PushUsedInOrderBatch(pending[^1], written[^1], pending.Count);
                }
                else
                {
                    // Each pair returned swapped: out of order, but all of them.
                    for (var i = 0; i < pending.Count; i += 2)
                    {
                        if (i + 1 < pending.Count)
                        {
                            rig.Device.PushUsed(pending[i + 1], written[i + 1]);
                        }

                        rig.Device.PushUsed(pending[i], written[i]);
                    }
                }

                pending.Clear();
                written.Clear();
                rig.Device.PublishUsed();
                rig.Device.CallNeeded();
            }

            if (!popped)
            {
                Thread.Yield();
            }
        }
    }
}
