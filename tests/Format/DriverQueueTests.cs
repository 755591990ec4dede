using System.Buffers.Binary;
using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using Rings.Chains;

namespace Rings.Tests.Format;

/// <summary>
/// <see cref="DriverQueue{TToken}"/>: every buffer comes back with the token it was added with,
/// whatever order the device uses them in; and a driver's buffer outside its own memory is refused
/// when it is added, with a clear error, before the device could see it.
/// </summary>
public sealed class DriverQueueTests
{
    private const int Slot = 16;

    [Property(MaxTest = 80)]
    public Property Every_buffer_comes_back_with_its_token_in_any_completion_order() =>
        Prop.ForAll(
            (from format in Gen.Elements(RingFormat.Split, RingFormat.Packed)
             from size in format == RingFormat.Split ? Gen.Choose(0, 8).Select(k => 1 << k) : Gen.Choose(1, 300)
             from rounds in Gen.Choose(1, 12)
             from seed in Gen.Choose(0, int.MaxValue)
             select (format, size, rounds, seed)).ToArbitrary(),
            c =>
            {
                using var pair = RingPair.Create(c.format, c.size, (ulong)(c.size * Slot));
                var queue = new DriverQueue<string>(pair.Driver);
                var random = new Random(c.seed);
                var free = new Stack<int>(Enumerable.Range(0, c.size));
                var outstanding = new Dictionary<string, (int Slot, bool Writable)>();
                var popped = new List<(ChainToken Token, uint Written)>();
                var next = 0;
                for (var round = 0; round < c.rounds; round++)
                {
                    // The driver adds some buffers, each writing its token's number into the buffer.
                    for (var n = random.Next(free.Count + 1); n > 0; n--)
                    {
                        var slot = free.Pop();
                        var address = pair.BufferAddress + (ulong)(slot * Slot);
                        var token = $"buffer {next}";
                        BinaryPrimitives.WriteInt32LittleEndian(pair.Span(address, 4), next++);
                        var writable = random.Next(2) == 0;
                        Assert.True(queue.TryAdd(new BufferSegment(address, Slot), writable, token));
                        outstanding.Add(token, (slot, writable));
                    }

                    queue.Publish();

                    // The device pops them all and returns a random selection in a random order,
                    // writing into writable buffers as many bytes as the number says.
                    while (pair.Device.TryPop(out var chain))
                    {
                        var number = BinaryPrimitives.ReadInt32LittleEndian(chain.Segments[0].Span);
                        popped.Add((chain.Token, chain.WritableBytes > 0 ? (uint)(number % Slot) : 0));
                    }

                    var back = random.Next(popped.Count + 1);
                    for (var i = 0; i < back; i++)
                    {
                        var k = random.Next(popped.Count);
                        pair.Device.PushUsed(popped[k].Token, popped[k].Written);
                        popped.RemoveAt(k);
                    }

                    pair.Device.PublishUsed();
                    while (queue.TryTakeUsed(out var token, out var length))
                    {
                        Assert.True(outstanding.Remove(token, out var added), $"{token} came back twice or was never added");
                        var number = BinaryPrimitives.ReadInt32LittleEndian(pair.Span(pair.BufferAddress + (ulong)(added.Slot * Slot), 4));
                        Assert.Equal($"buffer {number}", token);

                        // Exactly what the device said it wrote: the number's share of a writable buffer, 0 for a readable one.
                        Assert.Equal(added.Writable ? (uint)(number % Slot) : 0u, length);
                        free.Push(added.Slot);
                    }

                    Assert.Equal(outstanding.Count, pair.Driver.Outstanding);
                }

                Assert.False(pair.Driver.IsBroken);
                Assert.False(pair.Device.IsBroken);
            });

    public static TheoryData<string> Formats() => ["split", "packed"];

    [Theory]
    [MemberData(nameof(Formats))]
    public void A_buffer_outside_the_drivers_memory_is_refused_when_added(string name)
    {
        var format = RingFormat.Parse(name);
        using var pair = RingPair.Create(format, 8, 4096, VirtioFeatures.None);
        var end = pair.BufferAddress + 4096;
        BufferSegment[] outside =
        [
            new(end, 64),                          // just past the region
            new(end - 32, 64),                     // straddling its end
            new(RingPair.BaseAddress - 64, 64),    // before it
            new(0x10, 1),                          // nowhere near
        ];
        foreach (var segment in outside)
        {
            var e = Assert.Throws<ArgumentOutOfRangeException>(() => pair.Driver.TryAdd(segment, deviceWritable: false, out _));
            Assert.Contains($"0x{segment.Address:x}+{segment.Length} is outside the driver's memory", e.Message, StringComparison.Ordinal);
            Assert.Throws<ArgumentOutOfRangeException>(() => pair.Driver.TryAdd([new BufferSegment(pair.BufferAddress, 8)], [segment], out _));
            Assert.Throws<ArgumentOutOfRangeException>(() => new DriverQueue<int>(pair.Driver).TryAdd(segment, deviceWritable: true, 7));
        }

        // Nothing was added, the ring is healthy, and a buffer inside still goes round.
        Assert.Equal(8, pair.Driver.FreeDescriptors);
        Assert.False(pair.Driver.IsBroken);
        Assert.True(pair.Driver.TryAdd(new BufferSegment(end - 64, 64), deviceWritable: false, out _));
        pair.Driver.Publish();
        Assert.True(pair.Device.TryPop(out var chain));
        Assert.Equal(64UL, chain.ReadableBytes);
        Assert.False(pair.Device.IsBroken);
    }
}
