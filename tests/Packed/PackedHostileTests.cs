using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using Rings.Chains;

namespace Rings.Tests.Packed;

/// <summary>
/// A hostile peer on either side: every rule broken gives its own reason, nothing throws, nothing
/// is read or written outside the memory table, and the loops always end.
/// </summary>
public class PackedHostileTests
{
    private const VirtioFeatures All = VirtioFeatures.IndirectDescriptors | VirtioFeatures.EventIndex;

    [Fact]
    public void Address_outside_the_memory_table()
    {
        using var rig = new PackedRig(4, All);
        rig.WriteDescriptor(0, 0x1000, 16, 0, Pf.Avail);
        AssertDeviceBreaks(rig, BrokenReason.AddressOutOfRange);
    }

    [Fact]
    public void Buffer_overflowing_the_end_of_the_memory_table()
    {
        using var rig = new PackedRig(4, All);
        var end = PackedRig.GuestBase + rig.Region.Length;
        rig.WriteDescriptor(0, end - 8, 9, 0, Pf.Avail);
        AssertDeviceBreaks(rig, BrokenReason.AddressOutOfRange);
    }

    [Fact]
    public void Address_range_that_wraps_the_address_space()
    {
        using var rig = new PackedRig(4, All);
        rig.WriteDescriptor(0, ulong.MaxValue - 4, 64, 0, Pf.Avail);
        AssertDeviceBreaks(rig, BrokenReason.AddressOutOfRange);
    }

    [Fact]
    public void Indirect_table_outside_the_memory_table()
    {
        using var rig = new PackedRig(4, All);
        rig.WriteDescriptor(0, 0x10, 32, 0, Pf.Avail | Pf.Indirect);
        AssertDeviceBreaks(rig, BrokenReason.AddressOutOfRange);
    }

    [Fact]
    public void Indirect_without_the_feature()
    {
        using var rig = new PackedRig(4, VirtioFeatures.None);
        WriteTable(rig, 0, (rig.SlotAddress(0), 16, 0));
        rig.WriteDescriptor(0, rig.IndirectAddress, 16, 0, Pf.Avail | Pf.Indirect);
        AssertDeviceBreaks(rig, BrokenReason.IndirectNotNegotiated);
    }

    [Fact]
    public void Nested_indirect_table()
    {
        using var rig = new PackedRig(4, All);
        WriteTable(rig, 0, (rig.SlotAddress(0), 16, 0), (rig.IndirectAddress, 16, Pf.Indirect));
        rig.WriteDescriptor(0, rig.IndirectAddress, 32, 0, Pf.Avail | Pf.Indirect);
        AssertDeviceBreaks(rig, BrokenReason.NestedIndirect);
    }

    [Fact]
    public void Indirect_with_next()
    {
        using var rig = new PackedRig(4, All);
        WriteTable(rig, 0, (rig.SlotAddress(0), 16, 0));
        rig.WriteDescriptor(0, rig.IndirectAddress, 16, 0, Pf.Avail | Pf.Indirect | Pf.Next);
        rig.WriteDescriptor(1, rig.SlotAddress(1), 16, 0, Pf.Avail);
        AssertDeviceBreaks(rig, BrokenReason.IndirectWithNext);
    }

    [Fact]
    public void Indirect_inside_a_next_list()
    {
        using var rig = new PackedRig(4, All);
        WriteTable(rig, 0, (rig.SlotAddress(0), 16, 0));
        rig.WriteDescriptor(0, rig.SlotAddress(1), 16, 0, Pf.Avail | Pf.Next);
        rig.WriteDescriptor(1, rig.IndirectAddress, 16, 0, Pf.Avail | Pf.Indirect);
        AssertDeviceBreaks(rig, BrokenReason.IndirectWithNext);
    }

    [Theory]
    [InlineData(0u)]
    [InlineData(17u)]
    [InlineData(8u)]
    public void Indirect_table_of_a_length_not_a_multiple_of_16(uint length)
    {
        using var rig = new PackedRig(4, All);
        rig.WriteDescriptor(0, rig.IndirectAddress, length, 0, Pf.Avail | Pf.Indirect);
        AssertDeviceBreaks(rig, BrokenReason.IndirectTableMisaligned);
    }

    [Fact]
    public void Readable_after_writable_in_a_list()
    {
        using var rig = new PackedRig(4, All);
        rig.WriteDescriptor(0, rig.SlotAddress(0), 16, 0, Pf.Avail | Pf.Write | Pf.Next);
        rig.WriteDescriptor(1, rig.SlotAddress(1), 16, 0, Pf.Avail);
        AssertDeviceBreaks(rig, BrokenReason.ReadableAfterWritable);
    }

    [Fact]
    public void Readable_after_writable_in_a_table()
    {
        using var rig = new PackedRig(4, All);
        WriteTable(rig, 0, (rig.SlotAddress(0), 16, Pf.Write), (rig.SlotAddress(1), 16, 0));
        rig.WriteDescriptor(0, rig.IndirectAddress, 32, 0, Pf.Avail | Pf.Indirect);
        AssertDeviceBreaks(rig, BrokenReason.ReadableAfterWritable);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(5)]
    public void List_longer_than_the_queue(int size)
    {
        // Every descriptor available and chained: the walk comes round to the head again.
        using var rig = new PackedRig(size, All);
        for (var i = 0; i < size; i++)
        {
            rig.WriteDescriptor(i, rig.SlotAddress(i), 16, 0, Pf.Avail | Pf.Next);
        }

        AssertDeviceBreaks(rig, BrokenReason.ChainTooLong);
    }

    [Fact]
    public void Indirect_table_longer_than_the_queue()
    {
        using var rig = new PackedRig(4, All);
        var entries = new (ulong, uint, ushort)[5];
        Array.Fill(entries, (rig.SlotAddress(0), 16u, (ushort)0));
        WriteTable(rig, 0, entries);
        rig.WriteDescriptor(0, rig.IndirectAddress, 80, 0, Pf.Avail | Pf.Indirect);
        AssertDeviceBreaks(rig, BrokenReason.ChainTooLong);
    }

    [Fact]
    public void Buffer_id_not_below_the_queue_size()
    {
        using var rig = new PackedRig(4, All);
        rig.WriteDescriptor(0, rig.SlotAddress(0), 16, 4, Pf.Avail);
        AssertDeviceBreaks(rig, BrokenReason.BufferIdInvalid);
    }

    [Fact]
    public void Buffer_id_already_in_flight()
    {
        using var rig = new PackedRig(4, All);
        rig.WriteDescriptor(1, rig.SlotAddress(1), 16, 2, Pf.Avail);
        rig.WriteDescriptor(0, rig.SlotAddress(0), 16, 2, Pf.Avail);
        Assert.True(rig.Device.TryPop(out var first));
        Assert.Equal(2, first.Token.Id);
        AssertDeviceBreaks(rig, BrokenReason.BufferIdInvalid);
    }

    [Fact]
    public void A_list_whose_id_is_in_flight_breaks_a_pop_of_single_segments_as_it_breaks_a_pop()
    {
        // PopSingles leaves a list of several segments available, but not one that breaks the
        // queue: its id is checked as TryPop checks it (2.8.6), and the queue breaks there.
        using var rig = SingleThenList(listId: 2);
        var segments = new ChainSegment[4];
        var tokens = new ChainToken[4];
        Assert.Equal(1, rig.Device.PopSingles(segments, tokens));
        Assert.Equal(new ChainToken(2, 1), tokens[0]);
        Assert.True(rig.Device.IsBroken);
        Assert.Equal(BrokenReason.BufferIdInvalid, rig.Device.BrokenReason);
        Assert.Equal(0, rig.Device.PopSingles(segments, tokens));
    }

    [Fact]
    public void A_valid_list_stays_available_to_a_pop_of_single_segments()
    {
        using var rig = SingleThenList(listId: 3);
        var segments = new ChainSegment[4];
        var tokens = new ChainToken[4];
        Assert.Equal(1, rig.Device.PopSingles(segments, tokens));
        Assert.Equal(0, rig.Device.PopSingles(segments, tokens));
        Assert.False(rig.Device.IsBroken);
        Assert.True(rig.Device.TryPop(out var list));
        Assert.Equal(new ChainToken(3, 2), list.Token);
        Assert.Equal(2, list.Segments.Length);
    }

    // A buffer of one descriptor (id 2), then a list of two with id listId, made available.
    private static PackedRig SingleThenList(ushort listId)
    {
        var rig = new PackedRig(4, All);
        rig.WriteDescriptor(1, rig.SlotAddress(1), 16, 9, Pf.Avail | Pf.Next);
        rig.WriteDescriptor(2, rig.SlotAddress(2), 16, listId, Pf.Avail);
        rig.WriteDescriptor(0, rig.SlotAddress(0), 16, 2, Pf.Avail);
        return rig;
    }

    [Fact]
    public void Buffer_id_in_flight_is_reusable_once_returned()
    {
        using var rig = new PackedRig(4, All);
        rig.WriteDescriptor(0, rig.SlotAddress(0), 16, 2, Pf.Avail);
        Assert.True(rig.Device.TryPop(out var first));
        rig.Device.PushUsed(first.Token, 0);
        rig.WriteDescriptor(1, rig.SlotAddress(1), 16, 2, Pf.Avail);
        Assert.True(rig.Device.TryPop(out var second));
        Assert.Equal(2, second.Token.Id);
    }

    [Fact]
    public void List_running_into_a_descriptor_not_made_available()
    {
        using var rig = new PackedRig(4, All);
        rig.WriteDescriptor(0, rig.SlotAddress(0), 16, 0, Pf.Avail | Pf.Next);
        rig.WriteDescriptor(1, rig.SlotAddress(1), 16, 0, Pf.Used); // next lap's bits
        AssertDeviceBreaks(rig, BrokenReason.DescriptorNotAvailable);
    }

    [Fact]
    public void Driver_overwriting_descriptors_still_in_flight()
    {
        using var rig = new PackedRig(4, All);
        for (var i = 0; i < 4; i++)
        {
            Assert.True(rig.Driver.TryAdd(rig.Slot(i), false, out _));
        }

        rig.Driver.Publish();
        for (var i = 0; i < 3; i++)
        {
            Assert.True(rig.Device.TryPop(out var c));
            Assert.Equal(i, c.Token.Id);
        }

        Assert.True(rig.Device.TryPop(out var last));
        rig.Device.PushUsed(last.Token, 0);

        // One descriptor is free again, but the driver makes two available for the second lap:
        // positions 0 and 1 are still the device's.
        rig.WriteDescriptor(0, rig.SlotAddress(0), 16, 3, Pf.Used | Pf.Next);
        rig.WriteDescriptor(1, rig.SlotAddress(1), 16, 3, Pf.Used);
        AssertDeviceBreaks(rig, BrokenReason.RingOverrun);
    }

    [Fact]
    public void Single_descriptor_when_the_device_holds_the_whole_ring()
    {
        using var rig = new PackedRig(2, All);
        Assert.True(rig.Driver.TryAdd(rig.Slot(0), false, out _));
        Assert.True(rig.Driver.TryAdd(rig.Slot(1), false, out _));
        rig.Driver.Publish();
        Assert.True(rig.Device.TryPop(out _));
        Assert.True(rig.Device.TryPop(out _));
        rig.WriteDescriptor(0, rig.SlotAddress(0), 16, 1, Pf.Used);
        AssertDeviceBreaks(rig, BrokenReason.RingOverrun);
    }

    [Fact]
    public void Used_id_not_below_the_queue_size()
    {
        using var rig = new PackedRig(4, All);
        Assert.True(rig.Driver.TryAdd(rig.Slot(0), true, out _));
        rig.Driver.Publish();
        rig.WriteDescriptor(0, 0, 0, 4, Pf.Avail | Pf.Used);
        AssertDriverBreaks(rig, BrokenReason.UsedIdNotOutstanding);
    }

    [Fact]
    public void Used_id_not_outstanding()
    {
        using var rig = new PackedRig(4, All);
        Assert.True(rig.Driver.TryAdd(rig.Slot(0), true, out var id));
        rig.Driver.Publish();
        rig.WriteDescriptor(0, 0, 0, (ushort)(id + 1), Pf.Avail | Pf.Used);
        AssertDriverBreaks(rig, BrokenReason.UsedIdNotOutstanding);
    }

    [Fact]
    public void Used_id_returned_twice()
    {
        using var rig = new PackedRig(4, All);
        Assert.True(rig.Driver.TryAdd(rig.Slot(0), true, out var a));
        Assert.True(rig.Driver.TryAdd(rig.Slot(1), true, out _));
        rig.Driver.Publish();
        rig.WriteDescriptor(0, 0, 0, a, Pf.Avail | Pf.Used);
        rig.WriteDescriptor(1, 0, 0, a, Pf.Avail | Pf.Used);
        Assert.True(rig.Driver.TryTakeUsed(out var u));
        Assert.Equal(a, u.Id);
        AssertDriverBreaks(rig, BrokenReason.UsedIdNotOutstanding);
    }

    [Fact]
    public void Used_length_beyond_the_writable_length()
    {
        using var rig = new PackedRig(4, All);
        Assert.True(rig.Driver.TryAdd(rig.Slot(0, 100), true, out var id));
        rig.Driver.Publish();
        rig.WriteDescriptor(0, 0, 101, id, Pf.Avail | Pf.Used | Pf.Write);
        AssertDriverBreaks(rig, BrokenReason.UsedLengthTooLarge);
    }

    [Fact]
    public void Used_length_without_write_is_ignored()
    {
        // 2.8.4: len is reserved when WRITE is clear; a device-readable buffer comes back as 0 bytes.
        using var rig = new PackedRig(4, All);
        Assert.True(rig.Driver.TryAdd(rig.Slot(0, 100), false, out var id));
        rig.Driver.Publish();
        rig.WriteDescriptor(0, 0, 0xFFFF_FFFF, id, Pf.Avail | Pf.Used);
        Assert.True(rig.Driver.TryTakeUsed(out var u));
        Assert.Equal(new UsedElement(id, 0), u);
        Assert.False(rig.Driver.IsBroken);
    }

    [Fact]
    public void A_used_flag_with_nothing_outstanding_is_not_read()
    {
        using var rig = new PackedRig(4, All);
        rig.WriteDescriptor(0, 0, 0, 0, Pf.Avail | Pf.Used);
        Assert.False(rig.Driver.TryTakeUsed(out _));
        Assert.False(rig.Driver.IsBroken);
    }

    /// <summary>
    /// Random bytes in the whole descriptor ring, the event structures and the indirect area,
    /// many of them shaped like plausible descriptors: the device never throws, never yields a
    /// segment outside the region, and stops.
    /// </summary>
    [Property(MaxTest = 300)]
    public Property Hostile_ring_bytes_never_escape_the_device() =>
        Prop.ForAll(
            Gen.Elements(1, 2, 3, 8, 64, 255).SelectMany(size => ArbMap.Default.GeneratorFor<int>().Select(seed => (size, seed))).ToArbitrary(),
            t =>
            {
                var (size, seed) = t;
                var random = new Random(seed);
                var features = (VirtioFeatures)random.Next(8);
                using var rig = new PackedRig(size, features);
                Scribble(rig, random);
                var steps = 0;
                var tokens = new List<ChainToken>();
                for (var round = 0; round < 4; round++)
                {
                    while (steps++ < (4 * size) + 16)
                    {
                        if (!rig.Device.TryPop(out var chain))
                        {
                            break;
                        }

                        foreach (var s in chain.Segments)
                        {
                            Assert.True(rig.Inside(s));
                        }

                        Assert.True(chain.Token.DescriptorCount >= 1 && chain.Token.DescriptorCount <= size);
                        Assert.True(chain.Token.Id < size);
                        tokens.Add(chain.Token);
                    }

                    // Return some, in a random order, and scribble again.
                    Shuffle(tokens, random);
                    var n = random.Next(tokens.Count + 1);
                    for (var i = 0; i < n; i++)
                    {
                        if ((rig.Features & VirtioFeatures.InOrder) != 0)
                        {
                            break;
                        }

                        rig.Device.PushUsed(tokens[i], (uint)random.Next(64));
                    }

                    tokens.RemoveRange(0, (rig.Features & VirtioFeatures.InOrder) != 0 ? 0 : n);
                    rig.Device.PublishUsed();
                    rig.Device.CallNeeded();
                    rig.Device.EnableAvailNotifications();
                    Scribble(rig, random);
                }

                Assert.True(rig.Device.DescriptorsInFlight <= size);
                return true;
            });

    /// <summary>
    /// A hostile device writes random used descriptors over buffers a legal driver made available:
    /// the driver hands back only outstanding ids, each once, with lengths within their writable
    /// part, never throws, and stops.
    /// </summary>
    [Property(MaxTest = 300)]
    public Property Hostile_used_descriptors_never_fool_the_driver() =>
        Prop.ForAll(
            Gen.Elements(1, 2, 3, 8, 64, 255).SelectMany(size => ArbMap.Default.GeneratorFor<int>().Select(seed => (size, seed))).ToArbitrary(),
            t =>
            {
                var (size, seed) = t;
                var random = new Random(seed);
                var features = (VirtioFeatures)random.Next(8);
                using var rig = new PackedRig(size, features);
                var writable = new Dictionary<ushort, uint>();
                for (var round = 0; round < 6 && !rig.Driver.IsBroken; round++)
                {
                    while (rig.Driver.FreeDescriptors > 0)
                    {
                        var length = (uint)random.Next(1, PackedRig.SlotBytes);
                        var rx = random.Next(2) == 0;
                        Assert.True(rig.Driver.TryAdd(rig.Slot(writable.Count % (size * 3), length), rx, out var id));
                        Assert.True(writable.TryAdd(id, rx ? length : 0));
                    }

                    rig.Driver.Publish();
                    var position = rig.Driver.Position;
                    for (var i = 0; i < size; i++)
                    {
                        var at = (position.UsedIndex + random.Next(size)) % size;
                        var wrap = random.Next(4) != 0 ? position.UsedWrapCounter : random.Next(2) == 0;
                        var flags = (ushort)(Pf.UsedBits(wrap) | (random.Next(2) == 0 ? Pf.Write : 0) | random.Next(8));
                        var id = (ushort)(random.Next(4) != 0 ? random.Next(size) : random.Next(65536));
                        rig.WriteDescriptor(at, (ulong)random.NextInt64(), (uint)random.Next(2 * PackedRig.SlotBytes), id, flags);
                    }

                    for (var i = 0; i < (2 * size) + 4; i++)
                    {
                        if (!rig.Driver.TryTakeUsed(out var used))
                        {
                            break;
                        }

                        Assert.True(writable.Remove(used.Id, out var max), $"id {used.Id} was not outstanding");
                        Assert.True(used.Length <= max);
                    }

                    Assert.Equal(writable.Count, rig.Driver.Outstanding);
                }

                return true;
            });

    private static void AssertDeviceBreaks(PackedRig rig, BrokenReason reason)
    {
        Assert.False(rig.Device.TryPop(out _));
        Assert.True(rig.Device.IsBroken);
        Assert.Equal(reason, rig.Device.BrokenReason);
        Assert.Equal(1, rig.Device.Counters.BrokenCount);

        // Broken stays broken, quietly, until restored.
        Assert.False(rig.Device.TryPop(out _));
        Assert.Equal(1, rig.Device.Counters.BrokenCount);
        rig.Device.Restore(rig.Device.Position);
        Assert.False(rig.Device.IsBroken);
    }

    private static void AssertDriverBreaks(PackedRig rig, BrokenReason reason)
    {
        var outstanding = rig.Driver.Outstanding;
        Assert.False(rig.Driver.TryTakeUsed(out _));
        Assert.True(rig.Driver.IsBroken);
        Assert.Equal(reason, rig.Driver.BrokenReason);
        Assert.False(rig.Driver.TryTakeUsed(out _));
        Assert.False(rig.Driver.TryAdd(rig.Slot(0), false, out _));
        Assert.Equal(outstanding, rig.Driver.Outstanding);
        Assert.Equal(1, rig.Driver.Counters.BrokenCount);
    }

    private static void WriteTable(PackedRig rig, int table, params (ulong Address, uint Length, ushort Flags)[] entries)
    {
        var bytes = rig.At(rig.IndirectAddress + ((ulong)table * 64), entries.Length * 16);
        for (var i = 0; i < entries.Length; i++)
        {
            PackedRig.WriteEntry(bytes.Slice(i * 16, 16), entries[i].Address, entries[i].Length, 0, entries[i].Flags);
        }
    }

    private static void Scribble(PackedRig rig, Random random)
    {
        random.NextBytes(rig.Ring);
        random.NextBytes(rig.DriverEvent);
        random.NextBytes(rig.DeviceEvent);
        var indirect = rig.At(rig.IndirectAddress, (int)(rig.BuffersAddress - rig.IndirectAddress));
        random.NextBytes(indirect);

        // Make a good share look plausible: addresses inside or just around the region, small
        // lengths, the flags the device looks for.
        ushort[] masks = [0, Pf.Next, Pf.Write, Pf.Indirect, Pf.Next | Pf.Write, Pf.Indirect | Pf.Next];
        void Plausible(Span<byte> d)
        {
            var address = PackedRig.GuestBase + (ulong)random.NextInt64(-64, (long)rig.Region.Length + 64);
            var length = (uint)(random.Next(3) == 0 ? random.Next(-8, 8) * 16 : random.Next(0, 300));
            var flags = (ushort)(masks[random.Next(masks.Length)] | (random.Next(2) == 0 ? Pf.Avail : Pf.Used) | (random.Next(3) == 0 ? Pf.Avail | Pf.Used : 0));
            var id = (ushort)(random.Next(4) != 0 ? random.Next(rig.Size) : random.Next(65536));
            PackedRig.WriteEntry(d, address, length, id, flags);
        }

        for (var i = 0; i < rig.Size; i++)
        {
            if (random.Next(3) != 0)
            {
                Plausible(rig.Descriptor(i));
            }
        }

        for (var i = 0; i + 16 <= indirect.Length; i += 16)
        {
            if (random.Next(2) != 0)
            {
                Plausible(indirect.Slice(i, 16));
            }
        }

        // Tables often point into the indirect area itself.
        for (var i = 0; i < rig.Size; i++)
        {
            if (random.Next(4) == 0)
            {
                var offset = (ulong)random.Next(Math.Max(1, indirect.Length / 16)) * 16;
                PackedRig.WriteEntry(rig.Descriptor(i), rig.IndirectAddress + offset, (uint)(random.Next(0, 6) * 16), (ushort)random.Next(rig.Size), (ushort)(Pf.Indirect | Pf.Avail));
            }
        }
    }

    private static void Shuffle<T>(List<T> list, Random random)
    {
        for (var i = list.Count - 1; i > 0; i--)
        {
            var j = random.Next(i + 1);
            (list[i], list[j]) = (list[j], list[i]);
        }
    }
}
