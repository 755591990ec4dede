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

    private SharedMemory(nint mapping, nuint mappingLength, nint host, ulong length, FileDescriptor? handle)
    {
        _mapping = mapping;
        _mappingLength = mappingLength;
        _host = host;
        Length = length;
        Handle = handle;
    }

    /// <summary>The page size the kernel maps in.</summary>
    public static int PageSize { get; } = Environment.SystemPageSize;

    /// <summary>Bytes in the region.</summary>
    public ulong Length { get; }

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
    /// by a later ftruncate.
    /// </summary>
    /// <param name="length">Bytes; rounded up to a whole page.</param>
    /// <param name="name">Name shown in /proc/PID/fd (for debugging only).</param>
    /// <returns>The mapping, owning its file descriptor.</returns>
    /// <exception cref="PlatformNotSupportedException">Not Linux.</exception>
    public static SharedMemory Create(ulong length, string name = "rings")
    {
        LinuxOnly.Check("shared memory (memfd)");
        ArgumentOutOfRangeException.ThrowIfZero(length);
        var pages = (length + (ulong)PageSize - 1) / (ulong)PageSize * (ulong)PageSize;
        if (pages > long.MaxValue)
        {
            throw new ArgumentOutOfRangeException(nameof(length), length, "too large");
        }

        var raw = LibC.MemfdCreate(name, LibC.MFD_CLOEXEC | LibC.MFD_ALLOW_SEALING);
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

            var address = LibC.Mmap(0, (nuint)pages, LibC.PROT_READ | LibC.PROT_WRITE, LibC.MAP_SHARED, fd, 0);
            if (address == LibC.MAP_FAILED)
            {
                throw LibC.Error("mmap");
            }

            return new SharedMemory(address, (nuint)pages, address, pages, fd);
        }
        catch
        {
            fd.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Maps <paramref name="length"/> bytes of a peer's memory file starting at <paramref name="offset"/>.
    /// Refuses ranges that reach past the end of the file (touching them would raise SIGBUS).
    /// The descriptor is not kept: the caller may close it once this returns.
    /// </summary>
    /// <param name="fd">The memory file.</param>
    /// <param name="offset">Offset of the region in the file (need not be page-aligned).</param>
    /// <param name="length">Bytes in the region.</param>
    /// <returns>The mapping.</returns>
    /// <exception cref="IOException">The file is too small, or the kernel refused the mapping.</exception>
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

        var delta = offset % (ulong)PageSize;
        var mapOffset = offset - delta;
        var mapLength = length + delta;
        if (mapLength > nuint.MaxValue || mapOffset > long.MaxValue)
        {
            throw new IOException("region too large to map");
        }

        var address = LibC.Mmap(0, (nuint)mapLength, LibC.PROT_READ | LibC.PROT_WRITE, LibC.MAP_SHARED, fd, (long)mapOffset);
        if (address == LibC.MAP_FAILED)
        {
            throw LibC.Error("mmap");
        }

        return new SharedMemory(address, (nuint)mapLength, address + (nint)delta, length, null);
    }

    /// <summary>Whether a memory file is sealed against shrinking (a peer then cannot make us fault).</summary>
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
