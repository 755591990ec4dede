using Rings.Memory;

namespace Rings.Linux.Plumbing;

/// <summary>
/// A shared mapping of a memory file: the guest side creates one with <see cref="Create"/>
/// (memfd_create + ftruncate + mmap MAP_SHARED) and passes <see cref="Handle"/> to its peer; the
/// host side maps what it received with <see cref="Map"/>. Unmapped (and its descriptor closed,
/// when it owns one) on dispose.
/// </summary>
public sealed unsafe class SharedMemory : IDisposable
{
    private nint _mapping;       // start of the mmap, page-aligned
    private readonly nuint _mappingLength;
    private readonly nint _host; // first byte of the region (inside the mapping)

    private SharedMemory(nint mapping, nuint mappingLength, nint host, ulong length, FileDescriptor? handle, ulong pageBytes, string? hugePageFallback = null)
    {
        _mapping = mapping;
        _mappingLength = mappingLength;
        _host = host;
        Length = length;
        Handle = handle;
        PageBytes = pageBytes;
        HugePageFallback = hugePageFallback;
    }

    /// <summary>The page size the kernel maps in.</summary>
    public static int PageSize { get; } = Environment.SystemPageSize;

    /// <summary>The size of a huge page Rings' own memory files use (MFD_HUGE_2MB).</summary>
    public const ulong HugePageSize = 2UL << 20;

    /// <summary>Bytes in the region.</summary>
    public ulong Length { get; }

    /// <summary>The size of the pages behind this mapping: <see cref="PageSize"/>, or the hugetlb page size.</summary>
    public ulong PageBytes { get; }

    /// <summary>
    /// Why <see cref="HugePages.Auto"/> fell back to 4 KiB pages (one line), or null when it did not
    /// (or was not asked to try).
    /// </summary>
    public string? HugePageFallback { get; }

    /// <summary>The memory file, when this object created it (null for a mapping of a peer's file).</summary>
    public FileDescriptor? Handle { get; }

    /// <summary>True once disposed.</summary>
    public bool IsDisposed => _mapping == 0;

    /// <summary>Host address of the first byte in this process.</summary>
    public nint HostAddress
    {
        get
        {
            ObjectDisposedException.ThrowIf(IsDisposed, this);
            return _host;
        }
    }

    /// <summary>
    /// Creates a zeroed memory file of <paramref name="length"/> bytes and maps it shared. The file
    /// is sealed against shrinking and growing, so a peer that maps it can never be made to fault
    /// by a later ftruncate (hugetlb memory files take seals too, since Linux 4.16).
    /// </summary>
    /// <param name="length">Bytes; rounded up to a whole page (2 MiB with hugepages).</param>
    /// <param name="name">Name shown in /proc/PID/fd (for debugging only).</param>
    /// <param name="hugePages">Whether to take the memory from 2 MiB hugetlb pages.</param>
    /// <returns>The mapping, owning its file descriptor.</returns>
    /// <exception cref="PlatformNotSupportedException">Not Linux.</exception>
    /// <exception cref="IOException">The kernel refused; with <see cref="HugePages.On"/>, also when too few hugepages are free.</exception>
    public static SharedMemory Create(ulong length, string name = "rings", HugePages hugePages = HugePages.Off)
    {
        LinuxOnly.Check("shared memory (memfd)");
        ArgumentOutOfRangeException.ThrowIfZero(length);
        string? fallback = null;
        if (hugePages != HugePages.Off)
        {
            try
            {
                return CreateFile(length, name, HugePageSize, LibC.MFD_HUGETLB | LibC.MFD_HUGE_2MB, null);
            }
            catch (IOException e)
            {
                var why = WhyNoHugePages(length, e);
                if (hugePages == HugePages.On)
                {
                    throw new IOException($"hugepages on, but {why}", e);
                }

                fallback = $"hugepages: using 4 KiB pages ({why})";
            }
        }

        return CreateFile(length, name, (ulong)PageSize, 0, fallback);
    }

    private static SharedMemory CreateFile(ulong length, string name, ulong page, uint flags, string? fallback)
    {
        if (length > long.MaxValue - (page - 1))
        {
            throw new ArgumentOutOfRangeException(nameof(length), length, "too large");
        }

        var pages = RoundUp(length, page);
        var raw = LibC.MemfdCreate(name, LibC.MFD_CLOEXEC | LibC.MFD_ALLOW_SEALING | flags);
        if (raw < 0)
        {
            throw LibC.Error("memfd_create");
        }

        var fd = new FileDescriptor(raw);
        try
        {
            if (LibC.Ftruncate(fd, (long)pages) != 0)
            {
                throw LibC.Error("ftruncate");
            }

            if (LibC.Fcntl(fd, LibC.F_ADD_SEALS, LibC.F_SEAL_SHRINK | LibC.F_SEAL_GROW | LibC.F_SEAL_SEAL) != 0)
            {
                throw LibC.Error("fcntl(F_ADD_SEALS)");
            }

            // A hugetlb mapping reserves its pages here (ENOMEM when too few are free), so a
            // later first touch cannot fail for want of a page.
            var address = LibC.Mmap(0, (nuint)pages, LibC.PROT_READ | LibC.PROT_WRITE, LibC.MAP_SHARED, fd, 0);
            if (address == LibC.MAP_FAILED)
            {
                throw LibC.Error("mmap");
            }

            return new SharedMemory(address, (nuint)pages, address, pages, fd, page, fallback);
        }
        catch
        {
            fd.Dispose();
            throw;
        }
    }

    private static ulong RoundUp(ulong value, ulong page) => (value + page - 1) / page * page;

    // ENOMEM from a hugetlb mmap means the reservation is too small: say how many are free.
    private static string WhyNoHugePages(ulong length, IOException e)
    {
        var needed = RoundUp(length, HugePageSize) / HugePageSize;
        return e.HResult == LibC.ENOMEM
            ? $"{needed} hugepages of 2 MiB needed, {HugePagesAvailable()?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "an unknown number"} free (HugePages_Free less HugePages_Rsvd); reserve them in /proc/sys/vm/nr_hugepages"
            : $"2 MiB hugepages unavailable: {e.Message}";
    }

    /// <summary>
    /// Hugepages of the default size that a new mapping could still reserve: HugePages_Free less
    /// HugePages_Rsvd (pages other mappings reserved but have not touched yet), from /proc/meminfo;
    /// null when unknown.
    /// </summary>
    /// <returns>The count.</returns>
    public static long? HugePagesAvailable()
    {
        long? free = null, reserved = null;
        try
        {
            foreach (var line in File.ReadLines("/proc/meminfo"))
            {
                free ??= Field(line, "HugePages_Free:");
                reserved ??= Field(line, "HugePages_Rsvd:");
            }
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }

        return free is null ? null : Math.Max(0, free.Value - (reserved ?? 0));

        static long? Field(string line, string name) =>
            line.StartsWith(name, StringComparison.Ordinal)
            && long.TryParse(line.AsSpan(name.Length).Trim(), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var n)
                ? n
                : null;
    }

    /// <summary>
    /// Maps <paramref name="length"/> bytes of a peer's memory file starting at <paramref name="offset"/>.
    /// Refuses ranges that reach past the end of the file (touching them would raise SIGBUS).
    /// A hugetlb file (DPDK's hugepages, QEMU's memory-backend-file on hugetlbfs, a hugetlb memfd)
    /// is mapped in whole pages of its own size (<see cref="FilePageSize"/>, <see cref="MappingWindow"/>).
    /// The descriptor is not kept: the caller may close it once this returns.
    /// </summary>
    /// <param name="fd">The memory file.</param>
    /// <param name="offset">Offset of the region in the file (need not be page-aligned).</param>
    /// <param name="length">Bytes in the region.</param>
    /// <returns>The mapping.</returns>
    /// <exception cref="IOException">The file is too small, the region cannot be aligned to its pages, or the kernel refused the mapping.</exception>
    public static SharedMemory Map(FileDescriptor fd, ulong offset, ulong length)
    {
        LinuxOnly.Check("a shared memory mapping");
        ArgumentNullException.ThrowIfNull(fd);
        ArgumentOutOfRangeException.ThrowIfZero(length);
        var fileSize = FileSize(fd);
        if (offset > fileSize || length > fileSize - offset)
        {
            throw new IOException($"region [0x{offset:x}, +0x{length:x}) reaches past the end of a {fileSize}-byte file");
        }

        var page = FilePageSize(fd);
        if (MappingWindow.TryAlign(offset, length, page, out var window) is { } why)
        {
            throw new IOException(why);
        }

        // mmap of a writable hugetlb file past its end would grow the file: the window must lie
        // inside it (it does whenever the file is whole pages, as hugetlbfs requires).
        if (page > (ulong)PageSize && window.Offset + window.Length > fileSize)
        {
            throw new IOException($"region [0x{offset:x}, +0x{length:x}) rounded to {page}-byte pages reaches past the end of a {fileSize}-byte file");
        }

        var address = LibC.Mmap(0, (nuint)window.Length, LibC.PROT_READ | LibC.PROT_WRITE, LibC.MAP_SHARED, fd, (long)window.Offset);
        if (address == LibC.MAP_FAILED)
        {
            throw LibC.Error($"mmap of {window.Length} bytes at offset 0x{window.Offset:x} ({page}-byte pages)");
        }

        return new SharedMemory(address, (nuint)window.Length, address + (nint)window.Delta, length, null, page);
    }

    /// <summary>
    /// The size of the pages a memory file is mapped in: the hugetlb page size for a file on
    /// hugetlbfs or a hugetlb memfd (statfs f_bsize, f_type HUGETLBFS_MAGIC), else <see cref="PageSize"/>.
    /// </summary>
    /// <param name="fd">The file.</param>
    /// <returns>Bytes per page, a power of two.</returns>
    /// <exception cref="IOException">fstatfs failed, or reported a page size that is not a power of two.</exception>
    public static ulong FilePageSize(FileDescriptor fd)
    {
        ArgumentNullException.ThrowIfNull(fd);
        var buffer = stackalloc byte[LibC.StatfsBytes];
        if (LibC.Fstatfs(fd, buffer) != 0)
        {
            throw LibC.Error("fstatfs");
        }

        if (*(long*)(buffer + LibC.StatfsTypeOffset) != LibC.HUGETLBFS_MAGIC)
        {
            return (ulong)PageSize;
        }

        var page = *(ulong*)(buffer + LibC.StatfsBlockSizeOffset);
        if (page < (ulong)PageSize || (page & (page - 1)) != 0)
        {
            throw new IOException($"a hugetlb file reports pages of {page} bytes, not a power of two of at least {PageSize}");
        }

        return page;
    }

    /// <summary>
    /// Whether the file can never shrink (F_SEAL_SHRINK): then a mapping of it that fits now can
    /// never fault later, whatever the peer does. Files that cannot carry seals (hugetlbfs and
    /// other plain files) are not.
    /// </summary>
    /// <param name="fd">The memory file.</param>
    /// <returns>True when F_SEAL_SHRINK is set.</returns>
    public static bool IsShrinkSealed(FileDescriptor fd)
    {
        ArgumentNullException.ThrowIfNull(fd);
        var seals = LibC.Fcntl(fd, LibC.F_GET_SEALS, 0);
        return seals >= 0 && (seals & LibC.F_SEAL_SHRINK) != 0;
    }

    /// <summary>The size of the file behind <paramref name="fd"/> (statx, so the layout is the same on every architecture).</summary>
    /// <param name="fd">The file.</param>
    /// <returns>Its size in bytes.</returns>
    public static ulong FileSize(FileDescriptor fd)
    {
        ArgumentNullException.ThrowIfNull(fd);
        var buffer = stackalloc byte[LibC.StatxBytes];
        if (LibC.Statx(fd, string.Empty, LibC.AT_EMPTY_PATH, LibC.STATX_SIZE, buffer) != 0)
        {
            throw LibC.Error("statx");
        }

        return *(ulong*)(buffer + LibC.StatxSizeOffset);
    }

    /// <summary>This mapping as a memory-table region at <paramref name="address"/>.</summary>
    /// <param name="address">The address (guest-physical, or the peer's user address) the first byte has.</param>
    /// <returns>The region.</returns>
    public GuestMemoryRegion RegionAt(ulong address) => new(address, Length, HostAddress);

    /// <summary>The bytes at [offset, offset + length).</summary>
    /// <param name="offset">Offset from the start.</param>
    /// <param name="length">Number of bytes.</param>
    /// <returns>A span over shared memory.</returns>
    public Span<byte> Slice(ulong offset, int length)
    {
        ObjectDisposedException.ThrowIf(IsDisposed, this);
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        if (offset > Length || (ulong)length > Length - offset)
        {
            throw new ArgumentOutOfRangeException(nameof(offset), $"[{offset}, +{length}) is outside a region of {Length} bytes");
        }

        return new Span<byte>((byte*)_host + offset, length);
    }

    /// <summary>Unmaps the memory and closes the file descriptor this object owns.</summary>
    public void Dispose()
    {
        var mapping = _mapping;
        if (mapping != 0)
        {
            _mapping = 0;
            _ = LibC.Munmap(mapping, _mappingLength);
        }

        Handle?.Dispose();
        GC.SuppressFinalize(this);
    }

    /// <summary>Unmaps if the owner forgot to dispose.</summary>
    ~SharedMemory()
    {
        if (_mapping != 0)
        {
            _ = LibC.Munmap(_mapping, _mappingLength);
            _mapping = 0;
        }
    }
}
