namespace Rings.Linux.Plumbing;

/// <summary>
/// What to pass to mmap to see the bytes [offset, offset + length) of a file whose pages are
/// <c>pageSize</c> bytes: mmap takes only page-aligned offsets (a hugetlb file also only whole
/// huge pages, and munmap of a hugetlb mapping only its aligned length), so the window starts at
/// the offset aligned down, spans the length rounded up to whole pages, and the region's first
/// byte lies <see cref="Delta"/> bytes into it.
/// </summary>
/// <param name="Offset">The page-aligned file offset to map from.</param>
/// <param name="Length">Bytes to map (and later unmap): whole pages.</param>
/// <param name="Delta">Where the region starts inside the mapping.</param>
public readonly record struct MappingWindow(ulong Offset, ulong Length, ulong Delta)
{
    /// <summary>
    /// Aligns a region to <paramref name="pageSize"/>. Every value may come from a hostile peer:
    /// each sum is checked before it is formed, so nothing wraps into a small window.
    /// </summary>
    /// <param name="offset">The region's offset in the file.</param>
    /// <param name="length">The region's length.</param>
    /// <param name="pageSize">The file's page size (a power of two).</param>
    /// <param name="window">The window, when the region can be mapped.</param>
    /// <returns>Null on success, else why the region cannot be mapped.</returns>
    public static string? TryAlign(ulong offset, ulong length, ulong pageSize, out MappingWindow window)
    {
        window = default;
        if (pageSize == 0 || (pageSize & (pageSize - 1)) != 0)
        {
            return $"page size {pageSize} is not a power of two";
        }

        if (length == 0)
        {
            return "the region is empty";
        }

        var delta = offset & (pageSize - 1);
        if (length > ulong.MaxValue - delta || length + delta > ulong.MaxValue - (pageSize - 1))
        {
            return $"region [0x{offset:x}, +0x{length:x}) does not fit in the address space once aligned to {pageSize}-byte pages";
        }

        var mapLength = (length + delta + pageSize - 1) & ~(pageSize - 1);
        var mapOffset = offset - delta;

        // mmap's offset is an off_t, its length a size_t; both kept within long so no cast wraps.
        if (mapOffset > long.MaxValue || mapLength > long.MaxValue || mapLength > nuint.MaxValue)
        {
            return $"region [0x{offset:x}, +0x{length:x}) is too large to map";
        }

        window = new MappingWindow(mapOffset, mapLength, delta);
        return null;
    }
}
