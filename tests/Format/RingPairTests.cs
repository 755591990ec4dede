using System.Buffers.Binary;
using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using Rings.Chains;

namespace Rings.Tests.Format;

/// <summary>
/// <see cref="RingPair"/>: both sides of a ring of either format in one region, ready in one call;
/// buffers in its buffer area travel from driver to device and back in order, with their bytes.
/// </summary>
public sealed class RingPairTests
{
    private const int Slot = 64;

    [Property(MaxTest = 60)]
    public Property Buffers_go_round_in_order_with_their_bytes_in_either_format() =>
        Prop.ForAll(
            (from format in Gen.Elements(RingFormat.Split, RingFormat.Packed)
             from size in format == RingFormat.Split ? Gen.Choose(0, 10).Select(k => 1 << k) : Gen.Choose(1, 700)
             from burst in Gen.Choose(1, size)
             from eventIdx in Gen.Elements(false, true)
             select (format, size, burst, eventIdx)).ToArbitrary(),
            c =>
            {
                using var pair = RingPair.Create(c.format, c.size, (ulong)(c.size * Slot), c.eventIdx ? VirtioFeatures.EventIndex : VirtioFeatures.None);
                Assert.Equal(c.format, pair.Format);
                Assert.Equal(c.size, pair.Driver.Size);
                Assert.Equal(c.size, pair.Device.Size);
                Assert.Equal(0UL, pair.BufferAddress % RingFormat.AreaAlignment);
                Assert.Equal(RingPair.BaseAddress + (ulong)c.format.Layout(c.size).TotalBytes, pair.BufferAddress);

                // Several laps of the ring (so the indices and, for packed rings, the wrap counters turn).
                var total = (c.size * 3) + 7;
                var slotOfId = new int[c.size];
                var free = new Stack<int>(Enumerable.Range(0, c.size));
                int sent = 0, popped = 0, back = 0;
                var chunk = new byte[Slot];
                while (back < total)
                {
                    var added = 0;
                    while (sent < total && added < c.burst && free.Count > 0)
                    {
                        var slot = free.Pop();
                        var address = pair.BufferAddress + (ulong)(slot * Slot);
                        BinaryPrimitives.WriteInt32LittleEndian(pair.Span(address, 4), sent);
                        Assert.True(pair.Driver.TryAdd(new BufferSegment(address, 4), deviceWritable: false, out var id));
                        slotOfId[id] = slot;
                        sent++;
                        added++;
                    }

                    pair.Driver.Publish();
                    while (pair.Device.TryPop(out var chain))
                    {
                        Assert.Equal(4UL, chain.ReadableBytes);
                        chain.CopyReadableTo(chunk);
                        Assert.Equal(popped++, BinaryPrimitives.ReadInt32LittleEndian(chunk));
                        pair.Device.PushUsed(chain.Token, 0);
                    }

                    pair.Device.PublishUsed();
                    while (pair.Driver.TryTakeUsed(out var used))
                    {
                        Assert.Equal(back++, BinaryPrimitives.ReadInt32LittleEndian(pair.Span(pair.BufferAddress + (ulong)(slotOfId[used.Id] * Slot), 4)));
                        free.Push(slotOfId[used.Id]);
                    }
                }

                Assert.Equal(total, popped);
                Assert.False(pair.Driver.IsBroken);
                Assert.False(pair.Device.IsBroken);
            });

    [Fact]
    public void The_size_rule_is_the_formats()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => RingPair.Create(RingFormat.Split, 100));
        Assert.Throws<ArgumentOutOfRangeException>(() => RingPair.Create(RingFormat.Packed, 0));
        using var packed = RingPair.Create(RingFormat.Packed, 100);
        Assert.Equal(100, packed.Size);
        Assert.Equal(0UL, packed.BufferBytes);
    }

    [Fact]
    public void The_buffer_area_is_zeroed_and_its_edges_are_checked()
    {
        using var pair = RingPair.Create(RingFormat.Split, 8, 4096);
        Assert.True(pair.Span(pair.BufferAddress, 4096).IndexOfAnyExcept((byte)0) < 0);
        Assert.Throws<ArgumentOutOfRangeException>(() => pair.Span(pair.BufferAddress + 4095, 2));
        Assert.Throws<ArgumentOutOfRangeException>(() => pair.Span(RingPair.BaseAddress - 1, 1));

        // A buffer outside the region is refused by the driver at once (DriverQueueTests has the rest).
        Assert.Throws<ArgumentOutOfRangeException>(() => pair.Driver.TryAdd(new BufferSegment(pair.BufferAddress + 4096, 64), deviceWritable: false, out _));
        Assert.Equal(8, pair.Driver.FreeDescriptors);
    }
}
