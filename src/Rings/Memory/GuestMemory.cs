using System.Runtime.CompilerServices;

namespace Rings.Memory;

/// <summary>
/// The memory table: the set of regions a device may touch on behalf of a driver.
/// Every guest address read from a ring goes through <see cref="TryTranslate"/> (or, in the
/// pop runs, <see cref="TryTranslateCommon"/>, its test of the largest region alone); neither
/// ever yields a pointer outside a region, whatever the input.
/// </summary>
public sealed class GuestMemory
{
    /// <summary>Most regions a table may hold (vhost-user's classic limit).</summary>
    public const int MaxRegions = 509;

    private readonly GuestMemoryRegion[] _regions;

    // The largest region, apart from the table, so the common translation is one range test on
    // fields of this object: no loop, no array bounds, no index. Most buffers of a guest lie in
    // its largest region (a QEMU guest's memory above 4 GiB, a DPDK process's one hugepage
    // file); any other address takes the search. Length 0 (an empty table) matches nothing.
    private readonly ulong _commonGuest;
    private readonly ulong _commonLength;
    private readonly nint _commonHost;

    /// <summary>Creates a memory table over the given regions.</summary>
    /// <param name="regions">Non-overlapping regions; each must have a non-zero length and a non-null host address.</param>
    /// <exception cref="ArgumentException">Regions overlap, wrap around the address space, are empty or too many.</exception>
    public GuestMemory(ReadOnlySpan<GuestMemoryRegion> regions)
    {
        if (regions.Length > MaxRegions)
        {
            throw new ArgumentException($"at most {MaxRegions} regions, got {regions.Length}", nameof(regions));
        }

        var sorted = regions.ToArray();
        Array.Sort(sorted, static (a, b) => a.GuestPhysicalAddress.CompareTo(b.GuestPhysicalAddress));
        for (var i = 0; i < sorted.Length; i++)
        {
            var r = sorted[i];
            if (r.Length == 0)
            {
                throw new ArgumentException($"region {i} at 0x{r.GuestPhysicalAddress:x} has zero length", nameof(regions));
            }

            if (r.HostAddress == 0)
            {
                throw new ArgumentException($"region {i} at 0x{r.GuestPhysicalAddress:x} has no host mapping", nameof(regions));
            }

            if (r.GuestPhysicalAddress + r.Length < r.GuestPhysicalAddress && r.GuestPhysicalAddress + r.Length != 0)
            {
                throw new ArgumentException($"region {i} at 0x{r.GuestPhysicalAddress:x} wraps the address space", nameof(regions));
            }

            if (i > 0)
            {
                var p = sorted[i - 1];
                if (r.GuestPhysicalAddress - p.GuestPhysicalAddress < p.Length)
                {
                    throw new ArgumentException(
                        $"regions at 0x{p.GuestPhysicalAddress:x} and 0x{r.GuestPhysicalAddress:x} overlap", nameof(regions));
                }
            }
        }

        _regions = sorted;
        foreach (var r in sorted)
        {
            if (r.Length > _commonLength)
            {
                (_commonGuest, _commonLength, _commonHost) = (r.GuestPhysicalAddress, r.Length, r.HostAddress);
            }
        }
    }

    /// <summary>Creates a memory table of one region.</summary>
    /// <param name="region">The only region.</param>
    public GuestMemory(GuestMemoryRegion region)
        : this([region])
    {
    }

    /// <summary>The regions, sorted by guest-physical address.</summary>
    public ReadOnlySpan<GuestMemoryRegion> Regions => _regions;

    /// <summary>
    /// Translates the guest range [address, address + length) to a host address when it lies
    /// wholly inside one region. Never throws; hostile input simply fails.
    /// </summary>
    /// <param name="address">Guest-physical address of the first byte.</param>
    /// <param name="length">Number of bytes.</param>
    /// <param name="host">Host address of the first byte when the range fits.</param>
    /// <returns>True when the whole range lies inside one region.</returns>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool TryTranslate(ulong address, ulong length, out nint host) =>
        TryTranslateCommon(address, length, out host) || TrySearch(address, length, out host);

    /// <summary>
    /// <see cref="TryTranslate"/> for the largest region alone: one range test, no search and no
    /// call, for a hot loop that stops at a miss and leaves the descriptor to a general path (a
    /// call in the loop, even one never taken, costs the loop its registers). False means only
    /// "not in the largest region", not "outside the table".
    /// </summary>
    /// <param name="address">Guest-physical address of the first byte.</param>
    /// <param name="length">Number of bytes.</param>
    /// <param name="host">Host address of the first byte when the range fits.</param>
    /// <returns>True when the whole range lies inside the largest region.</returns>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool TryTranslateCommon(ulong address, ulong length, out nint host)
    {
        // Unsigned: an address below the region wraps to an offset of at least its length (the
        // region ends at or below 2^64), so one compare covers both sides. An empty range at the
        // region's very end fails here and is left to the search.
        var offset = address - _commonGuest;
        if (offset < _commonLength && length <= _commonLength - offset)
        {
            host = (nint)((ulong)_commonHost + offset);
            return true;
        }

        host = 0;
        return false;
    }

    // Apart, so each inlined translation carries one range test and a call, not the loop.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private bool TrySearch(ulong address, ulong length, out nint host)
    {
        var regions = _regions;
        for (var i = 0; i < regions.Length; i++)
        {
            ref readonly var r = ref regions[i];
            if (r.TryGetOffset(address, length, out var offset))
            {
                host = (nint)((ulong)r.HostAddress + offset);
                return true;
            }
        }

        host = 0;
        return false;
    }

    /// <summary>
    /// A span over the guest range [address, address + length) when it lies wholly inside one
    /// region and is at most <see cref="int.MaxValue"/> bytes long.
    /// </summary>
    /// <param name="address">Guest-physical address of the first byte.</param>
    /// <param name="length">Number of bytes.</param>
    /// <param name="span">The bytes, when the range fits; empty otherwise.</param>
    /// <returns>True when the range fits.</returns>
    public unsafe bool TryGetSpan(ulong address, uint length, out Span<byte> span)
    {
        if (length > int.MaxValue || !TryTranslate(address, length, out var host))
        {
            span = default;
            return false;
        }

        span = new Span<byte>((void*)host, (int)length);
        return true;
    }
}
