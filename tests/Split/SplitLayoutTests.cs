using System.Buffers.Binary;
using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using Rings.Chains;
using Rings.Split;
using Rings.Tests.Conformance;

namespace Rings.Tests.Split;

/// <summary>
/// The split ring's byte layout (virtio 1.2 section 2.7): part sizes from the spec's formulas,
/// each part 64-byte aligned, and the fields the rings write found at the spec's offsets.
/// </summary>
public sealed class SplitLayoutTests
{
    private static int Align64(int v) => (v + 63) / 64 * 64;

    public static TheoryData<int> AllSizes()
    {
        var data = new TheoryData<int>();
        for (var n = 1; n <= 32768; n *= 2)
        {
            data.Add(n);
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(AllSizes))]
    public void Sizes_and_offsets_follow_the_spec_formulas(int n)
    {
        var layout = RingFormat.Split.Layout(n);
        Assert.Equal(n, layout.Size);

        // 2.7.5: struct virtq_desc { le64 addr; le32 len; le16 flags; le16 next; } desc[N]
        Assert.Equal(0, layout.DescriptorAreaOffset);
        Assert.Equal(16 * n, layout.DescriptorAreaBytes);

        // 2.7.6: struct virtq_avail { le16 flags; le16 idx; le16 ring[N]; le16 used_event; }
        Assert.Equal(2 + 2 + (2 * n) + 2, layout.DriverAreaBytes);

        // 2.7.8: struct virtq_used { le16 flags; le16 idx; struct { le32 id; le32 len; } ring[N]; le16 avail_event; }
        Assert.Equal(2 + 2 + (8 * n) + 2, layout.DeviceAreaBytes);

        Assert.Equal(Align64(16 * n), layout.DriverAreaOffset);
        Assert.Equal(Align64(layout.DriverAreaOffset + layout.DriverAreaBytes), layout.DeviceAreaOffset);
        Assert.Equal(Align64(layout.DeviceAreaOffset + layout.DeviceAreaBytes), layout.TotalBytes);
        Assert.Equal(0, layout.DriverAreaOffset % 64);
        Assert.Equal(0, layout.DeviceAreaOffset % 64);
        Assert.Equal(0, layout.TotalBytes % 64);

        var at = layout.At(0x1_0000_0040);
        Assert.Equal(new RingAreas(0x1_0000_0040, 0x1_0000_0040 + (ulong)layout.DriverAreaOffset, 0x1_0000_0040 + (ulong)layout.DeviceAreaOffset), at);
    }

    [Theory]
    [InlineData(1, 64, 128, 192)]
    [InlineData(4, 64, 128, 192)]
    [InlineData(8, 128, 192, 320)]
    [InlineData(256, 4096, 4672, 6784)]
    [InlineData(1024, 16384, 18496, 26752)]
    [InlineData(32768, 524288, 589888, 852096)]
    public void Offsets_worked_by_hand(int n, int availOffset, int usedOffset, int total)
    {
        var layout = RingFormat.Split.Layout(n);
        Assert.Equal(availOffset, layout.DriverAreaOffset);
        Assert.Equal(usedOffset, layout.DeviceAreaOffset);
        Assert.Equal(total, layout.TotalBytes);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(-1)]
    [InlineData(3)]
    [InlineData(6)]
    [InlineData(100)]
    [InlineData(32767)]
    [InlineData(32769)]
    [InlineData(65536)]
    [InlineData(int.MaxValue)]
    [InlineData(int.MinValue)]
    public void Invalid_sizes_are_rejected(int n)
    {
        Assert.False(RingFormat.Split.IsValidSize(n));
        Assert.Throws<ArgumentOutOfRangeException>(() => RingFormat.Split.Layout(n));
    }

    [Property(MaxTest = 2000)]
    public Property Valid_sizes_are_the_powers_of_two_up_to_32768() =>
        Prop.ForAll(
            Gen.Frequency((3, Gen.Choose(-10, 70000)), (1, Gen.Choose(int.MinValue, int.MaxValue))).ToArbitrary(),
            n => RingFormat.Split.IsValidSize(n) == (n is >= 1 and <= 32768 && System.Numerics.BitOperations.PopCount((uint)n) == 1));

    [Fact]
    public void Indirect_area_size()
    {
        Assert.Equal(16UL * 4 * 256, new IndirectArea(0x1000, 4).BytesFor(256));
        Assert.Equal(16UL * 32768 * 32768, new IndirectArea(0, 32768).BytesFor(32768)); // no int overflow
    }

    /// <summary>
    /// Drives both sides through a round (direct chain, indirect chain, used elements, event
    /// indices and flags) and reads every field back at the spec's byte offsets. The alignment
    /// padding between and after the parts is filled with a canary that must stay untouched.
    /// </summary>
    [Theory]
    [InlineData(1, false, (ushort)0)]
    [InlineData(4, true, (ushort)65534)]
    [InlineData(8, true, (ushort)65535)]
    [InlineData(16, false, (ushort)7)]
    public void Fields_sit_at_the_spec_offsets(int n, bool eventIdx, ushort start)
    {
        using var memory = new GuardedMemory(256 * 1024);
        var features = (eventIdx ? VirtioFeatures.EventIndex : VirtioFeatures.None) | VirtioFeatures.IndirectDescriptors;
        var pair = SplitFormat.CreateSplit(memory, new RingSetup(n, features, start, n >= 2 ? 2 : 0));
        var layout = pair.Layout;
        var a = pair.Addresses;
        var buffers = memory.Allocate(4096);

        // Canary in the padding after each part (within the ring's TotalBytes).
        (ulong At, int Length)[] pads =
        [
            (a.DescriptorArea + (ulong)layout.DescriptorAreaBytes, layout.DriverAreaOffset - layout.DescriptorAreaBytes),
            (a.DriverArea + (ulong)layout.DriverAreaBytes, layout.DeviceAreaOffset - layout.DriverAreaOffset - layout.DriverAreaBytes),
            (a.DeviceArea + (ulong)layout.DeviceAreaBytes, layout.TotalBytes - layout.DeviceAreaOffset - layout.DeviceAreaBytes),
        ];
        foreach (var (at, length) in pads)
        {
            memory.Bytes(at, length).Fill(0x99);
        }

        ushort U16(ulong at) => BinaryPrimitives.ReadUInt16LittleEndian(memory.Bytes(at, 2));
        uint U32(ulong at) => BinaryPrimitives.ReadUInt32LittleEndian(memory.Bytes(at, 4));
        ulong U64(ulong at) => BinaryPrimitives.ReadUInt64LittleEndian(memory.Bytes(at, 8));
        ulong Desc(int i) => a.DescriptorArea + (ulong)(16 * i);

        // A direct buffer: one readable segment (or, for n = 1, one writable).
        Assert.True(pair.Driver.TryAdd(new BufferSegment(buffers + 0x100, 0x33), n == 1, out var id1));
        Assert.Equal(buffers + 0x100, U64(Desc(id1)));
        Assert.Equal(0x33u, U32(Desc(id1) + 8));
        Assert.Equal(n == 1 ? 2 : 0, U16(Desc(id1) + 12));

        ushort id2 = 0;
        if (n >= 2)
        {
            // Two segments go into an indirect table: desc = {table, 32, INDIRECT}; the table chains with NEXT.
            Assert.True(pair.Driver.TryAdd([new BufferSegment(buffers + 0x200, 0x10)], [new BufferSegment(buffers + 0x300, 0x20)], out id2));
            var table = U64(Desc(id2));
            Assert.Equal(32u, U32(Desc(id2) + 8));
            Assert.Equal(4, U16(Desc(id2) + 12));
            Assert.Equal(buffers + 0x200, U64(table));
            Assert.Equal(0x10u, U32(table + 8));
            Assert.Equal(1, U16(table + 12));    // NEXT
            Assert.Equal(1, U16(table + 14));    // next = 1, relative to the table
            Assert.Equal(buffers + 0x300, U64(table + 16));
            Assert.Equal(0x20u, U32(table + 24));
            Assert.Equal(2, U16(table + 28));    // WRITE
        }

        // Nothing visible before the publish; then avail.idx at +2 and ring[i] at +4 + 2 * (i mod N).
        Assert.Equal(start, U16(a.DriverArea + 2));
        pair.Driver.Publish();
        var count = n >= 2 ? 2 : 1;
        Assert.Equal((ushort)(start + count), U16(a.DriverArea + 2));
        Assert.Equal(id1, U16(a.DriverArea + 4 + (ulong)(2 * (start % n))));
        if (n >= 2)
        {
            Assert.Equal(id2, U16(a.DriverArea + 4 + (ulong)(2 * ((ushort)(start + 1) % n))));
        }

        // The device returns them: used.ring[i] = {le32 id, le32 len} at +4 + 8 * (i mod N), used.idx at +2.
        var tokens = new List<ChainToken>();
        while (pair.Device.TryPop(out var chain))
        {
            tokens.Add(chain.Token);
        }

        Assert.Equal(count, tokens.Count);
        tokens.Reverse(); // out of order
        uint Written(int i) => n >= 2 && tokens[i].Id == id1 ? 0 : (uint)(0x10 + i); // id1 has nothing writable then
        for (var i = 0; i < tokens.Count; i++)
        {
            pair.Device.PushUsed(tokens[i], Written(i));
        }

        Assert.Equal(start, U16(a.DeviceArea + 2));
        pair.Device.PublishUsed();
        Assert.Equal((ushort)(start + count), U16(a.DeviceArea + 2));
        for (var i = 0; i < count; i++)
        {
            var slot = a.DeviceArea + 4 + (ulong)(8 * ((ushort)(start + i) % n));
            Assert.Equal(tokens[i].Id, U32(slot));
            Assert.Equal(Written(i), U32(slot + 4));
        }

        // Event suppression fields: used_event after avail.ring[N], avail_event after used.ring[N];
        // flags at offset 0 of each part.
        var usedEvent = a.DriverArea + 4 + (ulong)(2 * n);
        var availEvent = a.DeviceArea + 4 + (ulong)(8 * n);
        pair.Device.DisableAvailNotifications();
        pair.Driver.DisableUsedNotifications();
        if (eventIdx)
        {
            Assert.False(pair.Device.EnableAvailNotifications());
            Assert.Equal((ushort)(start + count), U16(availEvent));
            Assert.True(pair.Driver.EnableUsedNotifications());
            Assert.Equal(start, U16(usedEvent));
            Assert.Equal(0, U16(a.DeviceArea));
            Assert.Equal(0, U16(a.DriverArea));
        }
        else
        {
            Assert.Equal(1, U16(a.DeviceArea));   // VRING_USED_F_NO_NOTIFY
            Assert.Equal(1, U16(a.DriverArea));  // VRING_AVAIL_F_NO_INTERRUPT
            pair.Device.EnableAvailNotifications();
            pair.Driver.EnableUsedNotifications();
            Assert.Equal(0, U16(a.DeviceArea));
            Assert.Equal(0, U16(a.DriverArea));
        }

        for (var i = 0; i < count; i++)
        {
            Assert.True(pair.Driver.TryTakeUsed(out var used));
            Assert.Equal(new UsedElement(tokens[i].Id, Written(i)), used);
        }

        foreach (var (at, length) in pads)
        {
            Assert.True(memory.Bytes(at, length).IndexOfAnyExcept((byte)0x99) < 0, "a side wrote into the alignment padding");
        }

        memory.AssertGuardsIntact();
    }
}
