namespace Rings.Linux.Plumbing;

/// <summary>Pins threads to CPUs with sched_setaffinity(2).</summary>
public static unsafe class CpuAffinity
{
    /// <summary>CPUs a mask can name (the size of glibc's cpu_set_t).</summary>
    public const int MaxCpus = 1024;

    /// <summary>Restricts the calling thread to one CPU.</summary>
    /// <param name="cpu">The CPU number, 0 to <see cref="MaxCpus"/> - 1.</param>
    /// <exception cref="IOException">The kernel refused (for example a CPU that is offline or not allowed).</exception>
    public static void PinCurrentThread(int cpu)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(cpu);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(cpu, MaxCpus);
        var mask = stackalloc ulong[MaxCpus / 64];
        new Span<ulong>(mask, MaxCpus / 64).Clear();
        mask[cpu / 64] = 1UL << (cpu % 64);

        // pid 0 is the calling thread: affinity is per thread on Linux.
        if (LibC.SchedSetAffinity(0, MaxCpus / 8, mask) != 0)
        {
            throw LibC.Error($"sched_setaffinity(cpu {cpu})");
        }
    }

    /// <summary>The CPUs the calling thread may run on (sched_getaffinity(2)), in ascending order.</summary>
    /// <returns>The CPU numbers; empty when the kernel would not say.</returns>
    public static IReadOnlyList<int> AllowedCpus()
    {
        var mask = stackalloc ulong[MaxCpus / 64];
        if (LibC.SchedGetAffinity(0, MaxCpus / 8, mask) != 0)
        {
            return [];
        }

        var cpus = new List<int>();
        for (var cpu = 0; cpu < MaxCpus; cpu++)
        {
            if ((mask[cpu / 64] & (1UL << (cpu % 64))) != 0)
            {
                cpus.Add(cpu);
            }
        }

        return cpus;
    }
}
