using Rings.Linux.Plumbing;
using Rings.Linux.VhostUser;
using Rings.Memory;

namespace Rings.Linux.Device;

/// <summary>
/// One region of a front-end's memory mapped into this process. Every <see cref="VhostMemoryMap"/>
/// built over it holds it; it is unmapped when the last of them lets go.
/// </summary>
public sealed class MappedRegion
{
    private int _holders;

    /// <summary>Wraps a mapping of one region (the region owns it from now on).</summary>
    /// <param name="description">The region as the front-end described it.</param>
    /// <param name="mapping">The mapping.</param>
    public MappedRegion(MemoryRegionDescription description, SharedMemory mapping)
    {
        Description = description;
        Mapping = mapping ?? throw new ArgumentNullException(nameof(mapping));
    }

    /// <summary>The region as the front-end described it.</summary>
    public MemoryRegionDescription Description { get; }

    /// <summary>The mapping.</summary>
    public SharedMemory Mapping { get; }

    internal void Hold() => Interlocked.Increment(ref _holders);

    internal void Release()
    {
        if (Interlocked.Decrement(ref _holders) == 0)
        {
            Mapping.Dispose();
        }
    }
}

/// <summary>
/// A back-end's view of the front-end's memory: every region mapped, and two translation tables
/// over the same mappings, one keyed by guest-physical address (descriptor addresses) and one by
/// the front-end's user address (ring addresses). Immutable; a change builds a new map, which may
/// share regions with the old one. The session owns one reference; a data path that may outlive
/// its stop handshake takes a <see cref="Lease"/>, so no region is unmapped under a thread that
/// still reads it.
/// </summary>
public sealed class VhostMemoryMap
{
    private int _references = 1;

    private VhostMemoryMap(IReadOnlyList<MappedRegion> regions, GuestMemory physical, GuestMemory user)
    {
        Regions = regions;
        Physical = physical;
        User = user;
    }

    /// <summary>The mapped regions.</summary>
    public IReadOnlyList<MappedRegion> Regions { get; }

    /// <summary>Translates guest-physical addresses (buffers in descriptors).</summary>
    public GuestMemory Physical { get; }

    /// <summary>Translates the front-end's user addresses (ring areas in SET_VRING_ADDR).</summary>
    public GuestMemory User { get; }

    /// <summary>
    /// Checks a set of region descriptions without touching memory: non-empty, no address range
    /// wrapping past 2^64, no overlap among guest-physical ranges nor among user ranges.
    /// </summary>
    /// <param name="regions">The regions.</param>
    /// <param name="maxRegions">Most regions allowed.</param>
    /// <returns>None when valid, else <see cref="VhostUserErrorCode.BadRegion"/> or <see cref="VhostUserErrorCode.TooManyRegions"/>.</returns>
    public static VhostUserError Validate(IReadOnlyList<MemoryRegionDescription> regions, int maxRegions)
    {
        ArgumentNullException.ThrowIfNull(regions);
        if (regions.Count == 0)
        {
            return BadRegion("the memory table is empty");
        }

        if (regions.Count > maxRegions)
        {
            return new VhostUserError(VhostUserErrorCode.TooManyRegions, $"{regions.Count} memory regions, at most {maxRegions} allowed");
        }

        for (var i = 0; i < regions.Count; i++)
        {
            var r = regions[i];
            if (r.Size == 0)
            {
                return BadRegion($"region {i} has size 0");
            }

            if (r.GuestPhysicalAddress + (r.Size - 1) < r.GuestPhysicalAddress)
            {
                return BadRegion($"region {i}: guest range 0x{r.GuestPhysicalAddress:x}+0x{r.Size:x} wraps the address space");
            }

            if (r.UserAddress + (r.Size - 1) < r.UserAddress)
            {
                return BadRegion($"region {i}: user range 0x{r.UserAddress:x}+0x{r.Size:x} wraps the address space");
            }

            if (r.MmapOffset + (r.Size - 1) < r.MmapOffset || r.MmapOffset > long.MaxValue)
            {
                return BadRegion($"region {i}: mmap offset 0x{r.MmapOffset:x}+0x{r.Size:x} is out of range");
            }

            for (var j = 0; j < i; j++)
            {
                var o = regions[j];
                if (Overlaps(r.GuestPhysicalAddress, r.Size, o.GuestPhysicalAddress, o.Size))
                {
                    return BadRegion($"regions {j} and {i} overlap in guest-physical space");
                }

                if (Overlaps(r.UserAddress, r.Size, o.UserAddress, o.Size))
                {
                    return BadRegion($"regions {j} and {i} overlap in user address space");
                }
            }
        }

        return VhostUserError.None;
    }

    /// <summary>
    /// The front-end's memory budget, checked before anything is mapped: the regions' sizes, and
    /// the inflight region's if it has one, must add up to at most <paramref name="maxBytes"/>.
    /// </summary>
    /// <param name="regions">Every region the front-end would have mapped (validated).</param>
    /// <param name="maxBytes">The budget.</param>
    /// <param name="inflightBytes">The size of the front-end's inflight region (GET_INFLIGHT_FD or
    /// SET_INFLIGHT_FD), 0 when it has none: memory of the process's for this front-end as well.</param>
    /// <returns>None, or <see cref="VhostUserErrorCode.BudgetExceeded"/>.</returns>
    public static VhostUserError CheckBudget(IReadOnlyList<MemoryRegionDescription> regions, ulong maxBytes, ulong inflightBytes = 0)
    {
        ArgumentNullException.ThrowIfNull(regions);
        var total = inflightBytes;
        foreach (var r in regions)
        {
            // Saturating: sizes near 2^64 must not wrap into a small total.
            total = r.Size > ulong.MaxValue - total ? ulong.MaxValue : total + r.Size;
        }

        if (total <= maxBytes)
        {
            return VhostUserError.None;
        }

        var inflight = inflightBytes == 0 ? "" : $" with an inflight region of {Kib(inflightBytes)} KiB";
        return new VhostUserError(VhostUserErrorCode.BudgetExceeded, $"{regions.Count} region(s){inflight}, {Mib(total)} MiB in all; this front-end may map at most {Mib(maxBytes)} MiB");
    }

    /// <summary>
    /// Unless unsealed memory is trusted, every region's file must be sealed against shrinking
    /// (<see cref="SharedMemory.IsShrinkSealed"/>): a front-end that truncated a mapped
    /// file would make the back-end's next access fault, and a fault kills the process.
    /// </summary>
    /// <param name="fds">The regions' files.</param>
    /// <param name="trustUnsealed">True to accept files that can shrink.</param>
    /// <returns>None, or <see cref="VhostUserErrorCode.UnsealedMemory"/>.</returns>
    public static VhostUserError CheckSealed(IReadOnlyList<FileDescriptor> fds, bool trustUnsealed)
    {
        ArgumentNullException.ThrowIfNull(fds);
        for (var i = 0; !trustUnsealed && i < fds.Count; i++)
        {
            if (!SharedMemory.IsShrinkSealed(fds[i]))
            {
                return new VhostUserError(
                    VhostUserErrorCode.UnsealedMemory,
                    $"region {i}: the file ({fds[i].KernelName() ?? "unknown"}) is not sealed against shrinking (F_SEAL_SHRINK); a front-end that cannot seal its memory must be trusted explicitly");
            }
        }

        return VhostUserError.None;
    }

    private static ulong Mib(ulong bytes) => bytes / (1 << 20);

    private static ulong Kib(ulong bytes) => (bytes + 1023) / 1024;

    /// <summary>
    /// Maps each region from its descriptor (index-aligned with <paramref name="regions"/>) and builds the map.
    /// Nothing stays mapped on failure.
    /// </summary>
    /// <param name="regions">Validated region descriptions.</param>
    /// <param name="fds">One memory file per region; the caller keeps (and closes) them.</param>
    /// <param name="map">The map on success.</param>
    /// <returns>None on success, else <see cref="VhostUserErrorCode.MapFailed"/> or why the regions do not form a map.</returns>
    public static VhostUserError TryMap(IReadOnlyList<MemoryRegionDescription> regions, IReadOnlyList<FileDescriptor> fds, out VhostMemoryMap? map)
    {
        ArgumentNullException.ThrowIfNull(regions);
        ArgumentNullException.ThrowIfNull(fds);
        map = null;
        if (regions.Count != fds.Count)
        {
            return new VhostUserError(
                regions.Count > fds.Count ? VhostUserErrorCode.MissingDescriptor : VhostUserErrorCode.UnexpectedDescriptor,
                $"{regions.Count} regions but {fds.Count} file descriptors");
        }

        var mapped = new List<MappedRegion>(regions.Count);
        for (var i = 0; i < regions.Count; i++)
        {
            var r = regions[i];
            try
            {
                mapped.Add(new MappedRegion(r, SharedMemory.Map(fds[i], r.MmapOffset, r.Size)));
            }
            catch (IOException e)
            {
                Discard(mapped);
                return new VhostUserError(VhostUserErrorCode.MapFailed, $"region {i} cannot be mapped: {e.Message}");
            }
        }

        var error = TryBuild(mapped, out map);
        if (error.IsError)
        {
            Discard(mapped);
        }

        return error;
    }

    /// <summary>Builds a map over mappings that already exist; on success the map holds each region until it is unmapped.</summary>
    /// <param name="regions">The mapped regions.</param>
    /// <param name="map">The map on success.</param>
    /// <returns>None on success, else <see cref="VhostUserErrorCode.BadRegion"/>.</returns>
    public static VhostUserError TryBuild(IReadOnlyList<MappedRegion> regions, out VhostMemoryMap? map)
    {
        ArgumentNullException.ThrowIfNull(regions);
        map = null;
        var physical = new GuestMemoryRegion[regions.Count];
        var user = new GuestMemoryRegion[regions.Count];
        for (var i = 0; i < regions.Count; i++)
        {
            var d = regions[i].Description;
            var host = regions[i].Mapping.HostAddress;
            physical[i] = new GuestMemoryRegion(d.GuestPhysicalAddress, d.Size, host);
            user[i] = new GuestMemoryRegion(d.UserAddress, d.Size, host);
        }

        try
        {
            map = new VhostMemoryMap(regions.ToArray(), new GuestMemory(physical), new GuestMemory(user));
            foreach (var r in regions)
            {
                r.Hold();
            }

            return VhostUserError.None;
        }
        catch (ArgumentException e)
        {
            return BadRegion(e.Message);
        }
    }

    /// <summary>
    /// Keeps every region of this map mapped until the lease is disposed, even past <see cref="Unmap"/>.
    /// A data path takes one for as long as its thread runs: if it cannot be stopped in time (a peer
    /// blocked it), the memory it may still read stays mapped instead of faulting under it.
    /// </summary>
    /// <returns>The lease; dispose it once no thread reads through this map any more.</returns>
    /// <exception cref="ObjectDisposedException">The map is already unmapped.</exception>
    public IDisposable Lease()
    {
        while (true)
        {
            var n = Volatile.Read(ref _references);
            ObjectDisposedException.ThrowIf(n == 0, this);
            if (Interlocked.CompareExchange(ref _references, n + 1, n) == n)
            {
                return new MapLease(this);
            }
        }
    }

    /// <summary>The owner lets go: every region no other map holds is unmapped once no lease holds this map. Call once.</summary>
    public void Unmap() => Release();

    private void Release()
    {
        if (Interlocked.Decrement(ref _references) == 0)
        {
            foreach (var r in Regions)
            {
                r.Release();
            }
        }
    }

    // Regions no map ever held.
    private static void Discard(IEnumerable<MappedRegion> regions)
    {
        foreach (var r in regions)
        {
            r.Mapping.Dispose();
        }
    }

    private sealed class MapLease(VhostMemoryMap map) : IDisposable
    {
        private VhostMemoryMap? _map = map;

        public void Dispose() => Interlocked.Exchange(ref _map, null)?.Release();
    }

    private static VhostUserError BadRegion(string detail) => new(VhostUserErrorCode.BadRegion, detail);

    private static bool Overlaps(ulong a, ulong aSize, ulong b, ulong bSize) =>
        a <= b ? b - a < aSize : a - b < bSize;
}
