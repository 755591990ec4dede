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
    /// <summary>Open descriptors of this process (/proc/self/fd), counted as they are.</summary>
    public static int Open() => Directory.GetFileSystemEntries("/proc/self/fd").Length;

    /// <summary>
    /// The baseline, before the code under test: every open descriptor and what it is, taken after
    /// the finalizers of whatever earlier code dropped have run (so none closes in the middle).
    /// </summary>
    public static Dictionary<int, string> Snapshot()
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        return List();
    }

    /// <summary>
    /// Descriptors open now that were not in <paramref name="before"/>, counted as they are: no
    /// collection and no finalizer runs first, so a descriptor leaked by dropping its handle
    /// undisposed is found (a finalizer would have closed it and hidden the leak). Descriptors
    /// other code closed meanwhile do not matter.
    /// </summary>
    public static List<string> OpenedSince(IReadOnlyDictionary<int, string> before)
    {
        ArgumentNullException.ThrowIfNull(before);
        return [.. List().Where(e => !before.TryGetValue(e.Key, out var target) || target != e.Value).Select(e => $"fd {e.Key}: {e.Value}")];
    }

    private static Dictionary<int, string> List()
    {
        var list = new Dictionary<int, string>();
        foreach (var entry in Directory.GetFileSystemEntries("/proc/self/fd"))
        {
            try
            {
                // Null when the descriptor closed while listing (the listing's own, for one).
                if (new FileInfo(entry).LinkTarget is { } target)
                {
                    list[int.Parse(Path.GetFileName(entry), System.Globalization.CultureInfo.InvariantCulture)] = target;
                }
            }
            catch (IOException)
            {
                // Closed while listing.
            }
        }

        return list;
    }
}

public static class TestPaths
{
    /// <summary>A fresh socket path (short enough for sun_path).</summary>
    public static string Socket() => Path.Combine(Path.GetTempPath(), $"rings-{Guid.NewGuid():N}"[..20] + ".sock");
}
