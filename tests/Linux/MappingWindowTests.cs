using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using Rings.Linux.Plumbing;

namespace Rings.Tests.Linux;

/// <summary>
/// The window a region is mapped through: aligned to the file's pages (4 KiB, or a hugetlb file's
/// 2 MiB or 1 GiB), over every value a hostile front-end may put in a memory table.
/// </summary>
public class MappingWindowTests
{
    private const ulong Huge = 2UL << 20;

    [Fact]
    public void AnUnalignedRegionIsMappedFromTheAlignedDownOffsetInWholePages()
    {
        Assert.Null(MappingWindow.TryAlign((3UL << 20) + 12, 100, Huge, out var w));
        Assert.Equal(new MappingWindow(2UL << 20, Huge, (1UL << 20) + 12), w);

        // A region crossing a page boundary takes both pages.
        Assert.Null(MappingWindow.TryAlign(Huge - 1, 2, Huge, out w));
        Assert.Equal(new MappingWindow(0, 2 * Huge, Huge - 1), w);

        // Aligned already: nothing moves.
        Assert.Null(MappingWindow.TryAlign(4 * Huge, 8 * Huge, Huge, out w));
        Assert.Equal(new MappingWindow(4 * Huge, 8 * Huge, 0), w);
    }

    [Theory]
    [InlineData(ulong.MaxValue, 1UL, 4096UL)]                   // the last byte: its page ends past 2^64
    [InlineData(ulong.MaxValue - 4095, 4096UL, 2097152UL)]      // offset near the end
    [InlineData(4096UL, ulong.MaxValue, 4096UL)]                // length overflows once the delta is added
    [InlineData(0UL, ulong.MaxValue - 100, 2097152UL)]          // rounding up to the page overflows
    [InlineData(1UL << 63, 4096UL, 4096UL)]                     // offset beyond off_t
    [InlineData(0UL, (1UL << 63) + 1, 4096UL)]                  // length beyond what mmap takes
    public void HostileOffsetsAndLengthsAreRefusedWithAReason(ulong offset, ulong length, ulong page)
    {
        var why = MappingWindow.TryAlign(offset, length, page, out var w);
        Assert.NotNull(why);
        Assert.Contains($"0x{offset:x}", why, StringComparison.Ordinal);
        Assert.Equal(default, w);
    }

    [Theory]
    [InlineData(0UL)]
    [InlineData(3000UL)]
    [InlineData(4097UL)]
    [InlineData((2UL << 20) + 4096)]
    public void APageSizeThatIsNotAPowerOfTwoIsRefused(ulong page)
    {
        Assert.Equal($"page size {page} is not a power of two", MappingWindow.TryAlign(4096, 4096, page, out _));
    }

    [Fact]
    public void AnEmptyRegionIsRefused() => Assert.Equal("the region is empty", MappingWindow.TryAlign(0, 0, 4096, out _));

    /// <summary>Every window covers exactly the region, starts and ends on a page boundary and wastes less than a page at each end.</summary>
    [Property(MaxTest = 500)]
    public Property AWindowCoversTheRegionInWholePagesOrIsRefused() =>
        Prop.ForAll(
            (from offset in Gen.OneOf(ArbMap.Default.GeneratorFor<ulong>(), Gen.Choose(0, int.MaxValue).Select(i => (ulong)i), Gen.Choose(0, 4096).Select(i => ulong.MaxValue - (ulong)i))
             from length in Gen.OneOf(ArbMap.Default.GeneratorFor<ulong>(), Gen.Choose(1, int.MaxValue).Select(i => (ulong)i))
             from shift in Gen.Choose(12, 30)
             select (offset, length, page: 1UL << shift)).ToArbitrary(),
            t =>
            {
                var why = MappingWindow.TryAlign(t.offset, t.length, t.page, out var w);
                var fits = t.length > 0
                    && (System.Numerics.BigInteger)(t.offset % t.page) + t.length + t.page - 1 <= ulong.MaxValue
                    && t.offset - (t.offset % t.page) <= long.MaxValue;
                if (why is not null)
                {
                    // Refused only when the window could not be formed or passed to mmap.
                    return !fits || RoundUp(t.offset % t.page + t.length, t.page) > long.MaxValue;
                }

                return fits
                    && w.Offset % t.page == 0 && w.Length % t.page == 0
                    && w.Offset + w.Delta == t.offset
                    && w.Delta < t.page
                    && w.Delta + t.length <= w.Length
                    && w.Length - (w.Delta + t.length) < t.page;
            });

    private static System.Numerics.BigInteger RoundUp(System.Numerics.BigInteger value, ulong page) => (value + page - 1) / page * page;
}
