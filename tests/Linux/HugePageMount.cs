using Rings.Linux.Plumbing;

namespace Rings.Tests.Linux;

/// <summary>
/// A hugetlbfs mount (2 MiB pages) of a test's own, for DPDK's memory files: mounted in a fresh
/// temporary directory, emptied and unmounted on dispose, so no memory file outlives the test.
/// The 2 MiB pages themselves must be reserved beforehand (scripts/test.sh reserves them as root):
/// when too few are, the test fails and says so.
/// </summary>
internal sealed class HugePageMount : IDisposable
{
    private HugePageMount(string directory)
    {
        Directory = directory;
    }

    /// <summary>The mount point.</summary>
    public string Directory { get; }

    /// <summary>Fails the test unless <paramref name="pages"/> 2 MiB hugepages are free to reserve.</summary>
    public static void RequireAvailable(long pages)
    {
        var available = SharedMemory.HugePagesAvailable();
        Assert.True(
            available >= pages,
            $"this test needs {pages} free 2 MiB hugepages, {available?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "unknown"} are (HugePages_Free less HugePages_Rsvd): "
            + "scripts/test.sh reserves them as root; by hand, echo 512 > /proc/sys/vm/nr_hugepages");
    }

    /// <summary>Mounts hugetlbfs (pagesize=2M) on a new temporary directory, after checking that <paramref name="pages"/> pages are free.</summary>
    public static HugePageMount Create(long pages)
    {
        RequireAvailable(pages);
        var directory = System.IO.Directory.CreateTempSubdirectory("rings-huge-").FullName;
        var mount = Command.Run("mount", ["-t", "hugetlbfs", "-o", "pagesize=2M", "nodev", directory], 30_000);
        if (mount.ExitCode != 0)
        {
            System.IO.Directory.Delete(directory);
            Assert.Fail($"cannot mount hugetlbfs on {directory} (the hugepage tests run as root, as scripts/test.sh does): {mount.Output}{mount.Error}");
        }

        return new HugePageMount(directory);
    }

    /// <summary>Removes what was left in the mount (freeing its pages), unmounts it and removes the directory.</summary>
    public void Dispose()
    {
        foreach (var file in System.IO.Directory.EnumerateFiles(Directory))
        {
            File.Delete(file);
        }

        // A process that still maps a file keeps the mount busy: detach it then (-l), its pages go when the process does.
        if (Command.Run("umount", [Directory], 30_000).ExitCode != 0)
        {
            Command.Run("umount", ["-l", Directory], 30_000);
        }

        System.IO.Directory.Delete(Directory);
    }
}
