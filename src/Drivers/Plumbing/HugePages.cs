namespace Rings.Linux.Plumbing;

/// <summary>
/// Whether shared memory a front-end creates comes from hugetlb (2 MiB pages reserved through
/// <c>/proc/sys/vm/nr_hugepages</c>) or from ordinary 4 KiB shmem pages. Huge pages cut the TLB
/// misses of a data path that walks rings and buffers spread over megabytes.
/// </summary>
public enum HugePages
{
    /// <summary>Always 4 KiB pages.</summary>
    Off,

    /// <summary>2 MiB pages when enough are reserved and free; otherwise 4 KiB pages, and <see cref="SharedMemory.HugePageFallback"/> says why.</summary>
    Auto,

    /// <summary>2 MiB pages or an error.</summary>
    On,
}
