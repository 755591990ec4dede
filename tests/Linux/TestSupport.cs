using System.Runtime.Versioning;

// Rings.Linux is Linux-only; so are the tests that use it.
[assembly: SupportedOSPlatform("linux")]

namespace Rings.Tests.Linux;

/// <summary>Tests that count this process's open descriptors run alone, so no other test opens or closes any meanwhile.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class FdCountCollection
{
    public const string Name = "open file descriptor counts";
}

public static class FdCount
{
    /// <summary>Open descriptors of this process (/proc/self/fd).</summary>
    public static int Open() => Directory.GetFileSystemEntries("/proc/self/fd").Length;

    /// <summary>Open descriptors after letting finalizers run (a leak then is a real leak).</summary>
    public static int OpenAfterGc()
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        return Open();
    }
}

public static class TestPaths
{
    /// <summary>A fresh socket path (short enough for sun_path).</summary>
    public static string Socket() => Path.Combine(Path.GetTempPath(), $"rings-{Guid.NewGuid():N}"[..20] + ".sock");
}
