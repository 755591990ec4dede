using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using Rings.Chains;

namespace Rings.Tests.Packed;

/// <summary>
/// A device restart on the packed ring (a vhost-user back-end that went away and came back): the
/// driver rewrites every descriptor from the device's resume position to the last one it published
/// from its own record of what it made, whatever the ring holds there now. Buffers go out through
/// single adds and burst adds (writable or not, in runs that cross the ring's end), the device pops
/// some, returns some of those and holds the rest; then the ring's descriptors past the resume point
/// are overwritten with garbage (their flags kept, so the device's position reads the same) and
/// must come back byte for byte as they were published.
/// </summary>
public class PackedRestartTests
{
    private const int Size = 16;

    [Property(MaxTest = 200)]
    public Property Restart_rewrites_every_descriptor_the_device_has_not_returned_as_it_was_published(bool inOrder) =>
        Prop.ForAll(
            InOrderBurstTakeTests.Seeds,
            seeds =>
            {
                using var rig = new PackedRig(Size, inOrder ? VirtioFeatures.InOrder : VirtioFeatures.None);
                var published = new byte[Size][];
                long made = 0;      // descriptors made available, all time
                long returned = 0;  // descriptors the device returned, all time
                var held = new Queue<ChainToken>();
                var segments = new BufferSegment[Size];
                var ids = new ushort[Size];
                foreach (var seed in seeds)
                {
                    var random = new Random(seed);
                    var adds = random.Next(rig.Driver.FreeDescriptors + 1);
                    var added = 0;
                    while (added < adds)
                    {
                        var writable = random.Next(2) == 0;
                        if (random.Next(2) == 0)
                        {
                            var n = random.Next(1, adds - added + 1);
                            for (var i = 0; i < n; i++)
                            {
                                segments[i] = rig.Slot(random.Next(Size * PackedRig.SlotsPerId), (uint)random.Next(1, PackedRig.SlotBytes + 1));
                            }

                            Assert.Equal(n, rig.Driver.TryAddBurst(segments.AsSpan(0, n), writable, ids));
                            added += n;
                        }
                        else
                        {
                            Assert.True(rig.Driver.TryAdd(rig.Slot(random.Next(Size * PackedRig.SlotsPerId), (uint)random.Next(1, PackedRig.SlotBytes + 1)), writable, out _));
                            added++;
                        }
                    }

                    rig.Driver.Publish();
                    for (var k = 0; k < added; k++, made++)
                    {
                        var position = (int)(made % Size);
                        published[position] = rig.Descriptor(position).ToArray();
                    }

                    // The device pops some, returns the oldest of what it holds, keeps the rest.
                    for (var pops = random.Next(added + 1); pops > 0 && rig.Device.TryPop(out var chain); pops--)
                    {
                        held.Enqueue(chain.Token);
                    }

                    for (var r = random.Next(held.Count + 1); r > 0; r--, returned++)
                    {
                        rig.Device.PushUsed(held.Dequeue(), 0);
                    }

                    rig.Device.PublishUsed();
                    for (var t = random.Next(Size + 1); t > 0 && rig.Driver.TryTakeUsed(out _); t--)
                    {
                    }
                }

                // Garbage over every descriptor past the resume point, flags kept.
                var outstanding = (int)(made - returned);
                for (var k = 0; k < outstanding; k++)
                {
                    var position = (int)((returned + k) % Size);
                    var flags = rig.FlagsAt(position);
                    PackedRig.WriteEntry(rig.Descriptor(position), 0xDEAD_BEEF_0000_0000UL + (ulong)k, 0xFFFF_FFFF, 0xFFFF, flags);
                }

                var resume = rig.Driver.PrepareDeviceRestart();
                Assert.Equal((ushort)(returned % Size), resume.AvailIndex);
                for (var k = 0; k < outstanding; k++)
                {
                    var position = (int)((returned + k) % Size);
                    Assert.Equal(published[position], rig.Descriptor(position).ToArray());
                }

                return true;
            });
}
