using System.Runtime.InteropServices;
using Rings.Memory;

namespace Rings.Fuzz.Targets;

/// <summary>
/// A piece of guest memory mapped between two inaccessible (PROT_NONE) pages, with the usable bytes
/// pushed against the upper guard page. Any read or write just past the end, or a page before the
/// start, faults at once instead of silently touching some neighbour's memory. Mapped once and
/// reused across fuzz inputs; never freed (one per target and size per process).
/// </summary>
public sealed unsafe class GuardedRegion
{
    private const int PageSize = 4096;

    /// <summary>Maps <paramref name="length"/> usable bytes for guest-physical address <paramref name="guestPhysicalAddress"/>.</summary>
    /// <param name="length">Usable bytes.</param>
    /// <param name="guestPhysicalAddress">Where the first usable byte sits in guest-physical space.</param>
    /// <param name="alignment">Alignment of the first usable byte (a power of two up to 4096); the slack goes before the guard page.</param>
    public GuardedRegion(int length, ulong guestPhysicalAddress, int alignment = 64)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(length, 1);
        var pages = (length + PageSize - 1) / PageSize * PageSize;
        var total = (nuint)(pages + (2 * PageSize));
        var map = Libc.Mmap(0, total, Libc.ProtNone, Libc.MapPrivate | Libc.MapAnonymous, -1, 0);
        if (map == -1)
        {
            throw new InvalidOperationException($"mmap of {total} bytes failed: errno {Marshal.GetLastPInvokeError()}");
        }

        if (Libc.Mprotect(map + PageSize, (nuint)pages, Libc.ProtRead | Libc.ProtWrite) != 0)
        {
            throw new InvalidOperationException($"mprotect failed: errno {Marshal.GetLastPInvokeError()}");
        }

        var offset = (pages - length) & ~(alignment - 1);
        HostAddress = map + PageSize + offset;
        Length = length;
        GuestPhysicalAddress = guestPhysicalAddress;
    }

    /// <summary>Host address of the first usable byte.</summary>
    public nint HostAddress { get; }

    /// <summary>Usable bytes.</summary>
    public int Length { get; }

    /// <summary>Guest-physical address of the first usable byte.</summary>
    public ulong GuestPhysicalAddress { get; }

    /// <summary>The usable bytes.</summary>
    public Span<byte> Bytes => new((void*)HostAddress, Length);

    /// <summary>This region as a memory-table entry.</summary>
    public GuestMemoryRegion Region => new(GuestPhysicalAddress, (ulong)Length, HostAddress);

    /// <summary>True when the host range [pointer, pointer + length) lies inside the usable bytes.</summary>
    /// <param name="pointer">First byte.</param>
    /// <param name="length">Bytes.</param>
    /// <returns>Whether the range is inside.</returns>
    public bool Contains(nint pointer, ulong length)
    {
        var offset = (ulong)pointer - (ulong)HostAddress;
        return (ulong)pointer >= (ulong)HostAddress && offset <= (ulong)Length && length <= (ulong)Length - offset;
    }

    /// <summary>Fills the usable bytes from <paramref name="source"/> and zeroes the rest.</summary>
    /// <param name="source">Bytes to copy (at most <see cref="Length"/> are used).</param>
    /// <returns>How many bytes of <paramref name="source"/> were used.</returns>
    public int Load(ReadOnlySpan<byte> source)
    {
        var n = Math.Min(source.Length, Length);
        source[..n].CopyTo(Bytes);
        Bytes[n..].Clear();
        return n;
    }
}

/// <summary>The few libc calls that make guard pages.</summary>
internal static partial class Libc
{
    public const int ProtNone = 0;
    public const int ProtRead = 1;
    public const int ProtWrite = 2;
    public const int MapPrivate = 0x02;
    public const int MapAnonymous = 0x20;

    [LibraryImport("libc", EntryPoint = "mmap", SetLastError = true)]
    public static partial nint Mmap(nint address, nuint length, int protection, int flags, int fd, nint offset);

    [LibraryImport("libc", EntryPoint = "mprotect", SetLastError = true)]
    public static partial int Mprotect(nint address, nuint length, int protection);
}
