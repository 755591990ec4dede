using Rings.Chains;
using Rings.Tests.Conformance;
using V = Rings.Tests.Split.SplitRingView;

namespace Rings.Tests.Split;

/// <summary>
/// One test per named violation a split ring detects: the queue is marked broken with that
/// reason and counted once, it pops (or takes back) nothing more, a second queue in the same
/// memory keeps working, and a restore (device) or reset (driver) clears the break.
/// </summary>
public sealed class SplitViolationTests : IDisposable
{
    private const int Size = 8;
    private const ushort Start = 65535; // the first pop crosses the u16 wrap

    private readonly GuardedMemory _memory;
    private readonly SplitRingPair _pair;
    private readonly SplitRingPair _other;
    private readonly ulong _buffers;

    public SplitViolationTests()
    {
        _memory = new GuardedMemory(256 * 1024, protectGuards: true);
        // The device accepts indirect tables; this driver builds direct chains only (no indirect area).
        var features = VirtioFeatures.IndirectDescriptors;
        _pair = SplitFormat.CreateSplit(_memory, new RingSetup(Size, features, Start, 0));
        _other = SplitFormat.CreateSplit(_memory, new RingSetup(Size, features, 100, 4));
        _buffers = _memory.Allocate(64 * 1024);
    }

    private V View => _pair.View;

    private IDeviceRing Device => _pair.Device;

    private IDriverRing Driver => _pair.Driver;

    public void Dispose()
    {
        _memory.AssertGuardsIntact();
        _memory.Dispose();
    }

    /// <summary>A valid buffer address, 256 bytes apart per <paramref name="n"/>.</summary>
    private ulong Buf(int n) => _buffers + (ulong)(256 * n);

    /// <summary>A guest address for an indirect table written by hand.</summary>
    private ulong Table(int n) => _buffers + 32768 + (ulong)(1024 * n);

    /// <summary>Makes the chain at <paramref name="head"/> available, as a (misbehaving) driver would.</summary>
    private void Offer(params ushort[] heads)
    {
        var idx = View.AvailIdx;
        foreach (var h in heads)
        {
            View.SetAvailEntry(idx++, h);
        }

        View.AvailIdx = idx;
    }

    private void AssertDeviceBroken(BrokenReason reason)
    {
        Assert.False(Device.TryPop(out _));
        Assert.True(Device.IsBroken);
        Assert.Equal(reason, Device.BrokenReason);
        Assert.Equal(1, Device.Counters.BrokenCount);

        // Stays broken, counted once.
        Assert.False(Device.TryPop(out _));
        Assert.Equal(1, Device.Counters.BrokenCount);
        Assert.Equal(Start, Device.Position.AvailIndex);
        OtherQueueWorks();
    }

    /// <summary>A full round on the second queue in the same memory.</summary>
    private void OtherQueueWorks()
    {
        var d = _other.Driver;
        var v = _other.Device;
        Assert.True(d.TryAdd([new BufferSegment(Buf(200), 16)], [new BufferSegment(Buf(201), 32)], out var id));
        d.Publish();
        Assert.True(v.TryPop(out var chain));
        Assert.Equal(2, chain.Segments.Length);
        v.PushUsed(chain.Token, 5);
        v.PublishUsed();
        Assert.True(d.TryTakeUsed(out var used));
        Assert.Equal(new UsedElement(id, 5), used);
        Assert.False(d.IsBroken);
        Assert.False(v.IsBroken);
    }

    /// <summary>After the bad bytes are fixed, a restore clears the break and the chain pops.</summary>
    private void RestoreClears(Action fix, int expectedSegments)
    {
        fix();
        Device.Restore(Device.Position);
        Assert.False(Device.IsBroken);
        Assert.Equal(BrokenReason.None, Device.BrokenReason);
        Assert.True(Device.TryPop(out var chain));
        Assert.Equal(expectedSegments, chain.Segments.Length);
        Assert.Equal(1, Device.Counters.BrokenCount); // the history is kept
    }

    [Fact]
    public void Avail_index_more_than_the_queue_size_ahead()
    {
        View.AvailIdx = unchecked((ushort)(Start + Size + 1));
        AssertDeviceBroken(BrokenReason.AvailIndexTooFarAhead);
        RestoreClears(
            () =>
            {
                View.WriteDescriptor(0, Buf(0), 8, 0, 0);
                View.SetAvailEntry(Start, 0);
                View.AvailIdx = unchecked((ushort)(Start + 1));
            },
            1);
    }

    [Fact]
    public void Avail_index_exactly_the_queue_size_ahead_is_fine()
    {
        for (ushort i = 0; i < Size; i++)
        {
            View.WriteDescriptor(i, Buf(i), 8, 0, 0);
        }

        Offer(0, 1, 2, 3, 4, 5, 6, 7);
        for (var i = 0; i < Size; i++)
        {
            Assert.True(Device.TryPop(out var chain));
            Assert.Equal(i, chain.Token.Id);
        }

        Assert.False(Device.TryPop(out _));
        Assert.False(Device.IsBroken);
    }

    [Theory]
    [InlineData(Size)]
    [InlineData(0xFFFF)]
    public void Head_out_of_range(int head)
    {
        Offer((ushort)head);
        AssertDeviceBroken(BrokenReason.HeadOutOfRange);
        RestoreClears(
            () =>
            {
                View.WriteDescriptor(3, Buf(0), 8, 0, 0);
                View.SetAvailEntry(Start, 3);
            },
            1);
    }

    [Fact]
    public void A_broken_queue_pops_nothing_even_when_the_bad_entry_is_fixed()
    {
        // Two chains published at once; the first head is bad. Fixing the memory afterwards
        // must not revive the queue: only a restore does.
        View.WriteDescriptor(1, Buf(1), 8, 0, 0);
        Offer(Size, 1);
        Assert.False(Device.TryPop(out _));
        Assert.Equal(BrokenReason.HeadOutOfRange, Device.BrokenReason);
        View.SetAvailEntry(Start, 1);
        Assert.False(Device.TryPop(out _));
        Assert.True(Device.IsBroken);
        Device.Restore(Device.Position);
        Assert.True(Device.TryPop(out var chain));
        Assert.Equal(1, chain.Token.Id);
    }

    [Fact]
    public void Next_out_of_range()
    {
        View.WriteDescriptor(0, Buf(0), 8, V.Next, Size);
        Offer(0);
        AssertDeviceBroken(BrokenReason.NextOutOfRange);
        RestoreClears(
            () =>
            {
                View.WriteDescriptor(5, Buf(5), 8, 0, 0);
                View.WriteDescriptor(0, Buf(0), 8, V.Next, 5);
            },
            2);
    }

    [Fact]
    public void Next_out_of_range_inside_an_indirect_table()
    {
        V.WriteDescriptorAt(_memory, Table(0), Buf(0), 8, V.Next, 1);
        V.WriteDescriptorAt(_memory, Table(0) + 16, Buf(1), 8, V.Next, 2); // the table has 2 entries
        View.WriteDescriptor(0, Table(0), 32, V.Indirect, 0);
        Offer(0);
        AssertDeviceBroken(BrokenReason.NextOutOfRange);
        RestoreClears(() => V.WriteDescriptorAt(_memory, Table(0) + 16, Buf(1), 8, 0, 0), 2);
    }

    [Fact]
    public void Chain_longer_than_the_queue_through_an_indirect_table()
    {
        for (var i = 0; i <= Size; i++)
        {
            V.WriteDescriptorAt(_memory, Table(0) + (ulong)(16 * i), Buf(i), 8, i < Size ? V.Next : (ushort)0, (ushort)(i + 1));
        }

        View.WriteDescriptor(0, Table(0), 16 * (Size + 1), V.Indirect, 0);
        Offer(0);
        AssertDeviceBroken(BrokenReason.ChainTooLong);
        RestoreClears(
            () =>
            {
                V.WriteDescriptorAt(_memory, Table(0) + (16 * (Size - 1)), Buf(Size - 1), 8, 0, 0);
                View.WriteDescriptor(0, Table(0), 16 * Size, V.Indirect, 0);
            },
            Size);
    }

    [Fact]
    public void Chain_longer_than_the_queue_counting_direct_and_indirect_descriptors()
    {
        // Five direct descriptors, then an indirect table of four: nine segments in a queue of eight.
        for (ushort i = 0; i < 5; i++)
        {
            View.WriteDescriptor(i, Buf(i), 8, V.Next, (ushort)(i + 1));
        }

        for (var i = 0; i < 4; i++)
        {
            V.WriteDescriptorAt(_memory, Table(1) + (ulong)(16 * i), Buf(10 + i), 8, i < 3 ? V.Next : (ushort)0, (ushort)(i + 1));
        }

        View.WriteDescriptor(5, Table(1), 64, V.Indirect, 0);
        Offer(0);
        AssertDeviceBroken(BrokenReason.ChainTooLong);
        RestoreClears(
            () =>
            {
                V.WriteDescriptorAt(_memory, Table(1) + 32, Buf(12), 8, 0, 0);
                View.WriteDescriptor(5, Table(1), 48, V.Indirect, 0);
            },
            8);
    }

    [Fact]
    public void Chain_loop()
    {
        View.WriteDescriptor(0, Buf(0), 8, V.Next, 1);
        View.WriteDescriptor(1, Buf(1), 8, V.Next, 2);
        View.WriteDescriptor(2, Buf(2), 8, V.Next, 0);
        Offer(0);
        AssertDeviceBroken(BrokenReason.ChainLoop);
        RestoreClears(() => View.WriteDescriptor(2, Buf(2), 8, 0, 0), 3);
    }

    [Fact]
    public void Chain_loop_on_itself()
    {
        View.WriteDescriptor(4, Buf(0), 8, V.Next, 4);
        Offer(4);
        AssertDeviceBroken(BrokenReason.ChainLoop);
        RestoreClears(() => View.WriteDescriptor(4, Buf(0), 8, 0, 4), 1);
    }

    [Fact]
    public void Chain_loop_inside_an_indirect_table()
    {
        V.WriteDescriptorAt(_memory, Table(0), Buf(0), 8, V.Next, 1);
        V.WriteDescriptorAt(_memory, Table(0) + 16, Buf(1), 8, V.Next, 0);
        View.WriteDescriptor(0, Table(0), 32, V.Indirect, 0);
        Offer(0);
        AssertDeviceBroken(BrokenReason.ChainLoop);
        RestoreClears(() => V.WriteDescriptorAt(_memory, Table(0) + 16, Buf(1), 8, 0, 0), 2);
    }

    public static TheoryData<string> BadBuffers() => ["below", "past end", "straddles end", "overflows u64", "at u64 max", "longer than int"];

    private (ulong Address, uint Length) BadBuffer(string kind) => kind switch
    {
        "below" => (_memory.Base - 16, 8),
        "past end" => (_memory.Base + _memory.Length, 1),
        "straddles end" => (_memory.Base + _memory.Length - 8, 9),
        "overflows u64" => (ulong.MaxValue - 7, 16),
        "at u64 max" => (ulong.MaxValue, 1),
        _ => (_memory.Base, 0x8000_0000),
    };

    [Theory]
    [MemberData(nameof(BadBuffers))]
    public void Address_out_of_range(string kind)
    {
        var (address, length) = BadBuffer(kind);
        View.WriteDescriptor(0, Buf(0), 8, V.Next, 1);
        View.WriteDescriptor(1, address, length, V.Write, 0);
        Offer(0);
        AssertDeviceBroken(BrokenReason.AddressOutOfRange);
        RestoreClears(() => View.WriteDescriptor(1, _memory.Base + _memory.Length - 8, 8, V.Write, 0), 2);
    }

    [Theory]
    [MemberData(nameof(BadBuffers))]
    public void Address_out_of_range_inside_an_indirect_table(string kind)
    {
        var (address, length) = BadBuffer(kind);
        V.WriteDescriptorAt(_memory, Table(0), address, length, 0, 0);
        View.WriteDescriptor(0, Table(0), 16, V.Indirect, 0);
        Offer(0);
        AssertDeviceBroken(BrokenReason.AddressOutOfRange);
        RestoreClears(() => V.WriteDescriptorAt(_memory, Table(0), Buf(0), 8, 0, 0), 1);
    }

    [Fact]
    public void Indirect_table_address_out_of_range()
    {
        View.WriteDescriptor(0, ulong.MaxValue - 15, 32, V.Indirect, 0);
        Offer(0);
        AssertDeviceBroken(BrokenReason.AddressOutOfRange);
        RestoreClears(
            () =>
            {
                V.WriteDescriptorAt(_memory, Table(0), Buf(0), 8, 0, 0);
                View.WriteDescriptor(0, Table(0), 16, V.Indirect, 0);
            },
            1);
    }

    [Fact]
    public void Indirect_without_the_feature()
    {
        using var memory = new GuardedMemory(64 * 1024);
        var pair = SplitFormat.CreateSplit(memory, new RingSetup(Size, VirtioFeatures.None, Start, 0));
        var table = memory.Allocate(256, 16);
        var buffer = memory.Allocate(256);
        V.WriteDescriptorAt(memory, table, buffer, 8, 0, 0);
        pair.View.WriteDescriptor(0, table, 16, V.Indirect, 0);
        pair.View.SetAvailEntry(Start, 0);
        pair.View.AvailIdx = unchecked((ushort)(Start + 1));
        Assert.False(pair.Device.TryPop(out _));
        Assert.Equal(BrokenReason.IndirectNotNegotiated, pair.Device.BrokenReason);
        Assert.Equal(1, pair.Device.Counters.BrokenCount);
        OtherQueueWorks();
        pair.View.WriteDescriptor(0, buffer, 8, 0, 0);
        pair.Device.Restore(pair.Device.Position);
        Assert.True(pair.Device.TryPop(out _));
        memory.AssertGuardsIntact();
    }

    [Fact]
    public void Nested_indirect()
    {
        V.WriteDescriptorAt(_memory, Table(1), Buf(0), 8, 0, 0);
        V.WriteDescriptorAt(_memory, Table(0), Buf(1), 8, V.Next, 1);
        V.WriteDescriptorAt(_memory, Table(0) + 16, Table(1), 16, V.Indirect, 0);
        View.WriteDescriptor(0, Table(0), 32, V.Indirect, 0);
        Offer(0);
        AssertDeviceBroken(BrokenReason.NestedIndirect);
        RestoreClears(() => V.WriteDescriptorAt(_memory, Table(0) + 16, Buf(2), 8, 0, 0), 2);
    }

    [Fact]
    public void Indirect_with_next()
    {
        V.WriteDescriptorAt(_memory, Table(0), Buf(0), 8, 0, 0);
        View.WriteDescriptor(0, Table(0), 16, V.Indirect | V.Next, 1);
        View.WriteDescriptor(1, Buf(1), 8, 0, 0);
        Offer(0);
        AssertDeviceBroken(BrokenReason.IndirectWithNext);
        RestoreClears(() => View.WriteDescriptor(0, Table(0), 16, V.Indirect, 0), 1);
    }

    [Fact]
    public void The_write_flag_on_an_indirect_descriptor_is_ignored()
    {
        // 2.7.5.3.2: the device ignores VIRTQ_DESC_F_WRITE on the descriptor that refers to a table.
        V.WriteDescriptorAt(_memory, Table(0), Buf(0), 8, V.Next, 1);
        V.WriteDescriptorAt(_memory, Table(0) + 16, Buf(1), 24, V.Write, 0);
        View.WriteDescriptor(0, Table(0), 32, V.Indirect | V.Write, 0);
        Offer(0);
        Assert.True(Device.TryPop(out var chain));
        Assert.Equal(1, chain.ReadableCount);
        Assert.Equal(8UL, chain.ReadableBytes);
        Assert.Equal(24UL, chain.WritableBytes);
        Assert.Equal(new ChainToken(0, 1), chain.Token);
        Assert.False(Device.IsBroken);
    }

    [Theory]
    [InlineData(0u)]
    [InlineData(8u)]
    [InlineData(24u)]
    [InlineData(17u)]
    public void Indirect_table_length_not_a_whole_number_of_descriptors(uint length)
    {
        V.WriteDescriptorAt(_memory, Table(0), Buf(0), 8, V.Next, 1);
        V.WriteDescriptorAt(_memory, Table(0) + 16, Buf(1), 8, 0, 0);
        View.WriteDescriptor(0, Table(0), length, V.Indirect, 0);
        Offer(0);
        AssertDeviceBroken(BrokenReason.IndirectTableMisaligned);
        RestoreClears(() => View.WriteDescriptor(0, Table(0), 32, V.Indirect, 0), 2);
    }

    [Fact]
    public void Readable_after_writable()
    {
        View.WriteDescriptor(0, Buf(0), 8, V.Next, 1);
        View.WriteDescriptor(1, Buf(1), 8, V.Write | V.Next, 2);
        View.WriteDescriptor(2, Buf(2), 8, V.Next, 3);
        View.WriteDescriptor(3, Buf(3), 8, V.Write, 0);
        Offer(0);
        AssertDeviceBroken(BrokenReason.ReadableAfterWritable);
        RestoreClears(() => View.WriteDescriptor(2, Buf(2), 8, V.Write | V.Next, 3), 4);
    }

    [Fact]
    public void Readable_after_writable_inside_an_indirect_table()
    {
        V.WriteDescriptorAt(_memory, Table(0), Buf(0), 8, V.Write | V.Next, 1);
        V.WriteDescriptorAt(_memory, Table(0) + 16, Buf(1), 8, 0, 0);
        View.WriteDescriptor(0, Table(0), 32, V.Indirect, 0);
        Offer(0);
        AssertDeviceBroken(BrokenReason.ReadableAfterWritable);
        RestoreClears(() => V.WriteDescriptorAt(_memory, Table(0) + 16, Buf(1), 8, V.Write, 0), 2);
    }

    [Fact]
    public void Readable_in_an_indirect_table_after_a_writable_direct_descriptor()
    {
        V.WriteDescriptorAt(_memory, Table(0), Buf(1), 8, 0, 0);
        View.WriteDescriptor(0, Buf(0), 8, V.Write | V.Next, 1);
        View.WriteDescriptor(1, Table(0), 16, V.Indirect, 0);
        Offer(0);
        AssertDeviceBroken(BrokenReason.ReadableAfterWritable);
        RestoreClears(() => V.WriteDescriptorAt(_memory, Table(0), Buf(1), 8, V.Write, 0), 2);
    }

    [Fact]
    public void Second_break_after_a_restore_is_counted_again()
    {
        Offer(Size);
        Assert.False(Device.TryPop(out _));
        Device.Restore(Device.Position);
        Assert.False(Device.TryPop(out _));
        Assert.Equal(BrokenReason.HeadOutOfRange, Device.BrokenReason);
        Assert.Equal(2, Device.Counters.BrokenCount);
    }

    // Driver side: a device that breaks the rules of the used ring.

    /// <summary>Adds buffers 0..n-1 (8 readable bytes then 32 writable bytes each) and publishes them.</summary>
    private ushort[] DriverAdds(int n)
    {
        var ids = new ushort[n];
        for (var i = 0; i < n; i++)
        {
            Assert.True(Driver.TryAdd([new BufferSegment(Buf(2 * i), 8)], [new BufferSegment(Buf((2 * i) + 1), 32)], out ids[i]));
        }

        Driver.Publish();
        return ids;
    }

    private void AssertDriverBroken(BrokenReason reason, int outstanding)
    {
        Assert.False(Driver.TryTakeUsed(out _));
        Assert.True(Driver.IsBroken);
        Assert.Equal(reason, Driver.BrokenReason);
        Assert.Equal(1, Driver.Counters.BrokenCount);
        Assert.False(Driver.TryTakeUsed(out _));
        Assert.Equal(1, Driver.Counters.BrokenCount);
        Assert.Equal(outstanding, Driver.Outstanding);
        Assert.False(Driver.TryAdd(new BufferSegment(Buf(0), 8), false, out _));
        OtherQueueWorks();

        // A reset (the device reset that follows NEEDS_RESET) clears the break.
        Driver.Reset();
        Assert.False(Driver.IsBroken);
        Assert.Equal(0, Driver.Outstanding);
        Assert.Equal(Size, Driver.FreeDescriptors);
        Assert.True(Driver.TryAdd(new BufferSegment(Buf(0), 8), false, out _));
        Assert.Equal(1, Driver.Counters.BrokenCount);
    }

    [Fact]
    public void Used_index_further_ahead_than_the_buffers_outstanding()
    {
        DriverAdds(2);
        View.SetUsedEntry(Start, 0, 0);
        View.SetUsedEntry(unchecked((ushort)(Start + 1)), 2, 0);
        View.SetUsedEntry(unchecked((ushort)(Start + 2)), 4, 0);
        View.UsedIdx = unchecked((ushort)(Start + 3));
        AssertDriverBroken(BrokenReason.UsedIndexTooFarAhead, 2);
    }

    [Fact]
    public void Used_index_exactly_as_far_as_the_buffers_outstanding_is_fine()
    {
        var ids = DriverAdds(2);
        View.SetUsedEntry(Start, ids[1], 3);
        View.SetUsedEntry(unchecked((ushort)(Start + 1)), ids[0], 32);
        View.UsedIdx = unchecked((ushort)(Start + 2));
        Assert.True(Driver.TryTakeUsed(out var a));
        Assert.True(Driver.TryTakeUsed(out var b));
        Assert.Equal(new UsedElement(ids[1], 3), a);
        Assert.Equal(new UsedElement(ids[0], 32), b);
        Assert.False(Driver.TryTakeUsed(out _));
        Assert.False(Driver.IsBroken);
    }

    public static TheoryData<string> BadIds() => ["out of range", "huge", "free descriptor", "inside a chain", "taken twice"];

    [Theory]
    [MemberData(nameof(BadIds))]
    public void Used_id_not_outstanding(string kind)
    {
        var ids = DriverAdds(2); // two chains of two descriptors each
        var second = View.ReadDescriptor(ids[0]).Next;
        var used = Start;
        if (kind == "taken twice")
        {
            View.SetUsedEntry(used++, ids[0], 0);
        }

        uint bad = kind switch
        {
            "out of range" => Size,
            "huge" => 0x1_0000u + ids[0], // a u32 id whose low 16 bits name a real buffer
            "free descriptor" => Enumerable.Range(0, Size).Select(i => (uint)i).First(i => i != ids[0] && i != ids[1] && i != second && i != View.ReadDescriptor(ids[1]).Next),
            "inside a chain" => second,
            _ => ids[0],
        };
        View.SetUsedEntry(used++, bad, 0);
        View.UsedIdx = used;
        if (kind == "taken twice")
        {
            Assert.True(Driver.TryTakeUsed(out var first));
            Assert.Equal(ids[0], first.Id);
        }

        AssertDriverBroken(BrokenReason.UsedIdNotOutstanding, kind == "taken twice" ? 1 : 2);
    }

    [Fact]
    public void Used_length_larger_than_the_writable_part()
    {
        var ids = DriverAdds(1);
        View.SetUsedEntry(Start, ids[0], 33);
        View.UsedIdx = unchecked((ushort)(Start + 1));
        AssertDriverBroken(BrokenReason.UsedLengthTooLarge, 1);
    }

    [Fact]
    public void Used_length_on_a_buffer_with_nothing_writable()
    {
        Assert.True(Driver.TryAdd(new BufferSegment(Buf(0), 64), false, out var id));
        Driver.Publish();
        View.SetUsedEntry(Start, id, 1);
        View.UsedIdx = unchecked((ushort)(Start + 1));
        AssertDriverBroken(BrokenReason.UsedLengthTooLarge, 1);
    }

    [Fact]
    public void A_broken_driver_takes_nothing_even_when_the_bad_element_is_fixed()
    {
        var ids = DriverAdds(2);
        View.SetUsedEntry(Start, Size + 1, 0);
        View.SetUsedEntry(unchecked((ushort)(Start + 1)), ids[1], 0);
        View.UsedIdx = unchecked((ushort)(Start + 2));
        Assert.False(Driver.TryTakeUsed(out _));
        Assert.Equal(BrokenReason.UsedIdNotOutstanding, Driver.BrokenReason);
        View.SetUsedEntry(Start, ids[0], 0);
        Assert.False(Driver.TryTakeUsed(out _));
        Assert.True(Driver.IsBroken);
        Assert.Equal(2, Driver.Outstanding);
    }
}
