using System.Diagnostics;
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
        var (exit, output) = Run("mount", "-t", "hugetlbfs", "-o", "pagesize=2M", "nodev", directory);
        if (exit != 0)
        {
            System.IO.Directory.Delete(directory);
            Assert.Fail($"cannot mount hugetlbfs on {directory} (the hugepage tests run as root, as scripts/test.sh does): {output}");
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
        if (Run("umount", Directory).Exit != 0)
        {
            Run("umount", "-l", Directory);
        }

        System.IO.Directory.Delete(Directory);
    }

    private static (int Exit, string Output) Run(string command, params string[] args)
    {
        var info = new ProcessStartInfo(command) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args)
        {
            info.ArgumentList.Add(a);
        }

        using var process = Process.Start(info)!;
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEnd();
        Assert.True(process.WaitForExit(30_000), $"{command} did not finish");
        return (process.ExitCode, output.Result + error);
    }
}
