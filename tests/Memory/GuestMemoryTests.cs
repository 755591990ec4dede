using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using Rings.Chains;
using Rings.Memory;

namespace Rings.Tests.Memory;

/// <summary>
/// The memory table: translation is exact and overflow-safe for any (address, length), lookup
/// works across several regions, and bad tables are refused.
/// </summary>
public sealed class GuestMemoryTests
{
    private const ulong Max = ulong.MaxValue;

    /// <summary>A table of regions with fake host addresses (translation never dereferences them).</summary>
    public sealed record Table(GuestMemoryRegion[] Regions)
    {
        /// <inheritdoc/>
        public override string ToString() => string.Join(", ", Regions.Select(r => $"[0x{r.GuestPhysicalAddress:x}+0x{r.Length:x}]"));
    }

    private static readonly Gen<ulong> AnyU64 =
        from hi in Gen.Choose(int.MinValue, int.MaxValue)
        from lo in Gen.Choose(int.MinValue, int.MaxValue)
        select ((ulong)(uint)hi << 32) | (uint)lo;

    /// <summary>Non-overlapping regions, some adjacent, some near the top of the address space.</summary>
    private static Gen<Table> Tables =>
        from count in Gen.Choose(1, 5)
        from first in Gen.Frequency((3, Gen.Choose(0, 1 << 20).Select(v => (ulong)v)), (1, AnyU64.Select(v => v >> 1)))
        from gaps in Gen.ArrayOf(Gen.Frequency((2, Gen.Constant(0UL)), (2, Gen.Choose(1, 4096).Select(v => (ulong)v)), (1, AnyU64.Select(v => v >> 8))), count)
        from lengths in Gen.ArrayOf(Gen.Frequency((4, Gen.Choose(1, 1 << 16).Select(v => (ulong)v)), (1, AnyU64.Select(v => (v >> 6) + 1))), count)
        from topLast in Gen.Elements(false, true)
        select Build(first, gaps, lengths, topLast);

    private static Table Build(ulong first, ulong[] gaps, ulong[] lengths, bool topLast)
    {
        var regions = new List<GuestMemoryRegion>();
        UInt128 next = first;
        for (var i = 0; i < lengths.Length; i++)
        {
            var start = next + gaps[i];
            var length = lengths[i];
            if (topLast && i == lengths.Length - 1)
            {
                // The last region ends exactly at 2^64.
                start = (UInt128)Max + 1 - length;
                if (start < next)
                {
                    break;
                }
            }

            if (start + length > (UInt128)Max + 1)
            {
                break;
            }

            regions.Add(new GuestMemoryRegion((ulong)start, length, (nint)(0x1000_0000L * (i + 1))));
            next = start + length;
        }

        if (regions.Count == 0)
        {
            regions.Add(new GuestMemoryRegion(first, 4096, 0x1000_0000));
        }

        // Hand them over unsorted: the table sorts.
        regions.Reverse();
        return new Table([.. regions]);
    }

    /// <summary>Queries near region edges and anywhere.</summary>
    private static Gen<(ulong Address, ulong Length)> Queries(Table t) =>
        from r in Gen.Elements(t.Regions)
        from mode in Gen.Choose(0, 5)
        from d in Gen.Choose(-3, 3)
        from small in Gen.Choose(0, 64)
        from any in AnyU64
        from any2 in AnyU64
        select mode switch
        {
            0 => (r.GuestPhysicalAddress + (ulong)d, (ulong)small),                            // near the start
            1 => (r.GuestPhysicalAddress + r.Length - (ulong)small, (ulong)(small + d)),       // ending near the end
            2 => (r.GuestPhysicalAddress, r.Length + (ulong)d),                                // the whole region, give or take
            3 => (r.GuestPhysicalAddress + (any % r.Length), Max - (ulong)small),              // a huge length
            4 => (Max - (ulong)small, (ulong)(small + d)),                                     // near the top
            _ => (any, any2 >> (small % 64)),
        };

    /// <summary>The reference answer, in 128-bit arithmetic.</summary>
    private static IEnumerable<nint> Expected(Table t, ulong address, ulong length) =>
        t.Regions
            .Where(r => address >= r.GuestPhysicalAddress && (UInt128)address + length <= (UInt128)r.GuestPhysicalAddress + r.Length)
            .Select(r => (nint)((ulong)r.HostAddress + (address - r.GuestPhysicalAddress)));

    [Property(MaxTest = 3000)]
    public Property Translation_agrees_with_128_bit_arithmetic()
    {
        var gen = from t in Tables from q in Queries(t) select (Table: t, q.Address, q.Length);
        return Prop.ForAll(gen.ToArbitrary(), c =>
        {
            var memory = new GuestMemory(c.Table.Regions);
            var expected = Expected(c.Table, c.Address, c.Length).ToArray();
            var ok = memory.TryTranslate(c.Address, c.Length, out var host);
            Assert.Equal(expected.Length > 0, ok);
            if (ok)
            {
                Assert.Contains(host, expected);
            }
            else
            {
                Assert.Equal(0, host);
            }

            // The hot loops' test of the largest region alone (the lowest such by address on a
            // tie): true exactly for a range that starts inside that region and fits in it, with
            // the same host address as the full translation.
            var largest = c.Table.Regions.OrderBy(r => r.GuestPhysicalAddress).MaxBy(r => r.Length);
            var offset = c.Address - largest.GuestPhysicalAddress;
            var inLargest = offset < largest.Length && c.Length <= largest.Length - offset;
            Assert.Equal(inLargest, memory.TryTranslateCommon(c.Address, c.Length, out var common));
            Assert.Equal(inLargest ? host : 0, common);
        });
    }

    /// <summary>
    /// The burst check (every segment inside the table before any is added) takes a burst that
    /// lies in one region with one translation of the range it spans: it must pass and refuse
    /// exactly the bursts a check of each segment would, wherever the segments lie (several
    /// regions, gaps, ends at 2^64), and name the first segment outside.
    /// </summary>
    [Property(MaxTest = 3000)]
    public Property Burst_check_agrees_with_a_check_of_each_segment()
    {
        var gen =
            from t in Tables
            from n in Gen.Choose(1, 8)
            from qs in Gen.ArrayOf(Queries(t), n)
            select (Table: t, Segments: qs.Select(q => new BufferSegment(q.Address, (uint)Math.Min(q.Length, uint.MaxValue))).ToArray());
        return Prop.ForAll(gen.ToArbitrary(), c =>
        {
            var memory = new GuestMemory(c.Table.Regions);
            var firstOutside = Array.FindIndex(c.Segments, s => !Expected(c.Table, s.Address, s.Length).Any());
            var ids = new ushort[c.Segments.Length];
            if (firstOutside < 0)
            {
                BufferSegment.CheckBurst(memory, c.Segments, ids);
            }
            else
            {
                var e = Assert.Throws<ArgumentOutOfRangeException>(() => BufferSegment.CheckBurst(memory, c.Segments, ids));
                Assert.Contains($"buffer 0x{c.Segments[firstOutside].Address:x}+{c.Segments[firstOutside].Length} ", e.Message, StringComparison.Ordinal);
            }
        }).Label("a burst check");
    }

    [Theory]
    [InlineData(Max, 1UL, true)]
    [InlineData(Max, 0UL, true)]
    [InlineData(Max, 2UL, false)]
    [InlineData(Max - 4095, 4096UL, true)]
    [InlineData(Max - 4095, 4097UL, false)]
    [InlineData(Max - 4096, 1UL, false)]
    [InlineData(Max - 4095, Max, false)]
    [InlineData(Max - 100, 0x8000_0000_0000_0000UL, false)]
    [InlineData(0UL, Max, false)]
    [InlineData(0UL, 0UL, false)]
    public void Translation_at_the_top_of_the_address_space(ulong address, ulong length, bool fits)
    {
        // One region covering the last page: it ends exactly at 2^64, so address + length wraps.
        var memory = new GuestMemory(new GuestMemoryRegion(Max - 4095, 4096, 0x7000_0000));
        Assert.Equal(fits, memory.TryTranslate(address, length, out var host));
        Assert.Equal(fits ? (nint)(0x7000_0000 + (long)(address - (Max - 4095))) : 0, host);
    }

    [Theory]
    [InlineData(0x1000UL, Max)]
    [InlineData(0x1000UL, Max - 0xFFF)]
    [InlineData(0x1000UL, Max - 0x1000)]
    [InlineData(0x1FFFUL, Max)]
    [InlineData(0x1800UL, 0x8000_0000_0000_0000UL)]
    public void Huge_lengths_never_wrap_into_a_fit(ulong address, ulong length)
    {
        var memory = new GuestMemory(new GuestMemoryRegion(0x1000, 0x1000, 0x7000_0000));
        Assert.False(memory.TryTranslate(address, length, out _));
        Assert.False(memory.TryGetSpan(address, uint.MaxValue, out var span));
        Assert.True(span.IsEmpty);
    }

    [Fact]
    public void Lookup_across_several_regions()
    {
        using var a = new NativeRegion(4096, 0x10_0000);
        using var b = new NativeRegion(8192, 0x10_1000); // adjacent to a
        using var c = new NativeRegion(4096, 0x80_0000);
        var memory = new GuestMemory([c.Region, a.Region, b.Region]);
        Assert.Equal([0x10_0000UL, 0x10_1000UL, 0x80_0000UL], memory.Regions.ToArray().Select(r => r.GuestPhysicalAddress));

        a.Slice(10, 1)[0] = 0xA1;
        b.Slice(20, 1)[0] = 0xB2;
        c.Slice(4095, 1)[0] = 0xC3;
        Assert.True(memory.TryGetSpan(0x10_000A, 1, out var sa));
        Assert.True(memory.TryGetSpan(0x10_1014, 1, out var sb));
        Assert.True(memory.TryGetSpan(0x80_0FFF, 1, out var sc));
        Assert.Equal(0xA1, sa[0]);
        Assert.Equal(0xB2, sb[0]);
        Assert.Equal(0xC3, sc[0]);

        // A range across the a|b boundary is not inside one region, adjacent or not.
        Assert.False(memory.TryTranslate(0x10_0FFF, 2, out _));
        Assert.True(memory.TryTranslate(0x10_0FFF, 1, out _));
        Assert.True(memory.TryTranslate(0x10_1000, 8192, out var hb));
        Assert.Equal(b.HostAddress, hb);

        // Gaps and edges.
        Assert.False(memory.TryTranslate(0x10_3000, 1, out _));
        Assert.False(memory.TryTranslate(0x7F_FFFF, 2, out _));
        Assert.False(memory.TryTranslate(0x80_1000, 1, out _));
        Assert.False(memory.TryTranslate(0x0F_FFFF, 1, out _));
        Assert.True(memory.TryGetSpan(0x80_0000, 4096, out var whole));
        Assert.Equal(4096, whole.Length);
        Assert.False(memory.TryGetSpan(0x80_0000, 4097, out _));
    }

    public static TheoryData<string, GuestMemoryRegion[]> BadTables() => new()
    {
        { "same base", [new(0x1000, 0x1000, 1), new(0x1000, 0x10, 2)] },
        { "partial overlap", [new(0x1000, 0x1000, 1), new(0x1FFF, 0x1000, 2)] },
        { "contained", [new(0x1000, 0x10000, 1), new(0x2000, 0x10, 2)] },
        { "contained, given in reverse", [new(0x2000, 0x10, 2), new(0x1000, 0x10000, 1)] },
        { "overlap among three", [new(0x10000, 0x100, 1), new(0x1000, 0x1000, 2), new(0x1800, 0x100, 3)] },
        { "overlap at the top", [new(Max - 0xFFF, 0x1000, 1), new(Max, 1, 2)] },
        { "zero length", [new(0x1000, 0, 1)] },
        { "no host mapping", [new(0x1000, 0x1000, 0)] },
        { "wraps the address space", [new(Max - 0xFFF, 0x1001, 1)] },
        { "wraps far", [new(2, Max, 1)] },
    };

    [Theory]
    [MemberData(nameof(BadTables))]
    public void Bad_tables_are_refused(string why, GuestMemoryRegion[] regions)
    {
        Assert.NotNull(why);
        Assert.Throws<ArgumentException>(() => new GuestMemory(regions));
    }

    [Fact]
    public void Too_many_regions_are_refused_and_the_limit_is_accepted()
    {
        GuestMemoryRegion Region(int i) => new((ulong)i * 0x2000, 0x1000, 1 + i);
        Assert.Equal(GuestMemory.MaxRegions, new GuestMemory(Enumerable.Range(0, GuestMemory.MaxRegions).Select(Region).ToArray()).Regions.Length);
        Assert.Throws<ArgumentException>(() => new GuestMemory(Enumerable.Range(0, GuestMemory.MaxRegions + 1).Select(Region).ToArray()));
    }

    [Fact]
    public void Adjacent_regions_and_a_region_ending_at_the_top_are_accepted()
    {
        // Four regions tiling the whole 64-bit space, the last ending exactly at 2^64.
        var memory = new GuestMemory([new(0, 0x1000, 1), new(0x1000, 0x1000, 2), new(Max - 0xFFF, 0x1000, 3), new(0x2000, Max - 0xFFF - 0x2000, 4)]);
        Assert.Equal(4, memory.Regions.Length);
        Assert.True(memory.TryTranslate(0x1FFF, 1, out var h2));
        Assert.Equal(2 + 0xFFF, h2);
        Assert.True(memory.TryTranslate(Max - 0x1000, 1, out var h4));
        Assert.Equal(unchecked((nint)(4 + (Max - 0x1000 - 0x2000))), h4);
        Assert.True(memory.TryTranslate(Max, 1, out var h3));
        Assert.Equal(3 + 0xFFF, h3);
    }

    [Fact]
    public void Spans_are_the_region_bytes()
    {
        using var region = new NativeRegion(8192, 0x4000_0000);
        var memory = new GuestMemory(region.Region);
        Assert.True(memory.TryGetSpan(0x4000_0100, 16, out var span));
        span.Fill(0x5A);
        Assert.True(region.Slice(0x100, 16).SequenceEqual(span));
        Assert.Equal(0, region.Slice(0xFF, 1)[0]);
        Assert.Equal(0, region.Slice(0x110, 1)[0]);
        Assert.False(memory.TryGetSpan(0x4000_1F00, 0x101, out _));
        Assert.False(memory.TryGetSpan(0x4000_0000, 0x8000_0000, out _));
        Assert.Throws<ArgumentOutOfRangeException>(() => region.Slice(8190, 3));
        Assert.Throws<ArgumentOutOfRangeException>(() => region.Slice(Max, 1));
    }
}
