using Rings.Fuzz.Targets;
using Rings.Tests.Linux;

namespace Rings.Tests.Fuzz;

/// <summary>
/// Replays every seed (fuzz/corpus/TARGET) and every input a fuzzer once crashed on
/// (fuzz/regressions/TARGET) through the fuzz targets, uninstrumented: each must run to the end
/// without an exception or a violated property. They run alone: the vhost-user target checks that
/// every descriptor it handed over is closed, and an eventfd another test opens meanwhile can take
/// the same number and the same eventfd id (the kernel reuses both), which it would take for a leak.
/// </summary>
[Collection(FdCountCollection.Name)]
public sealed class FuzzReplayTests
{
    private static readonly string FuzzRoot = Path.Combine(FindRepositoryRoot(), "fuzz");

    [Fact]
    public void SplitChainInputsReplayClean() => Replay("split-chain");

    [Fact]
    public void PackedChainInputsReplayClean() => Replay("packed-chain");

    /// <summary>The chain targets' inputs again, the device popping with PopSingles (bit 4 of the behaviour byte).</summary>
    /// <param name="name">The target.</param>
    /// <param name="behaviourOffset">Where its input holds the behaviour byte.</param>
    [Theory]
    [InlineData("split-chain", 5)]
    [InlineData("packed-chain", 3)]
    public void ChainInputsReplayCleanWithPopsOfSingleSegments(string name, int behaviourOffset) =>
        Replay(name, input =>
        {
            if (input.Length > behaviourOffset)
            {
                input[behaviourOffset] |= (byte)DrainBehaviour.PopSingles;
            }
        });

    [Fact]
    public void SplitOpsInputsReplayClean() => Replay("split-ops");

    [Fact]
    public void NetReceiveInputsReplayClean() => Replay("net-rx");

    [Fact]
    public void VhostUserInputsReplayClean() => Replay("vhost-user");

    [Fact]
    public void ForwardInputsReplayClean() => Replay("forward");

    [Fact]
    public void EveryReadyTargetHasSeedsAndEveryInputFolderATarget()
    {
        foreach (var t in FuzzTargets.All)
        {
            Assert.True(t.Run is null || Inputs(t.Name, "corpus").Length > 0, $"{t.Name} has no seeds");
        }

        foreach (var kind in new[] { "corpus", "regressions" })
        {
            var dir = Path.Combine(FuzzRoot, kind);
            if (!Directory.Exists(dir))
            {
                continue;
            }

            foreach (var sub in Directory.GetDirectories(dir))
            {
                Assert.True(FuzzTargets.Find(Path.GetFileName(sub)) is { Run: not null }, $"{kind}/{Path.GetFileName(sub)} names no ready target");
            }
        }
    }

    private static void Replay(string name, Action<byte[]>? change = null)
    {
        var target = FuzzTargets.Find(name);
        Assert.NotNull(target?.Run);
        var seeds = Inputs(name, "corpus");
        Assert.NotEmpty(seeds);
        var failures = new List<string>();
        foreach (var file in seeds.Concat(Inputs(name, "regressions")))
        {
            try
            {
                var input = File.ReadAllBytes(file);
                change?.Invoke(input);
                target.Run(input);
            }
            catch (Exception e)
            {
                failures.Add($"{Path.GetRelativePath(FuzzRoot, file)}: {e.GetType().Name}: {e.Message}");
            }
        }

        Assert.True(failures.Count == 0, string.Join(Environment.NewLine, failures));
    }

    private static string[] Inputs(string target, string kind)
    {
        var dir = Path.Combine(FuzzRoot, kind, target);
        return Directory.Exists(dir) ? [.. Directory.GetFiles(dir).Order(StringComparer.Ordinal)] : [];
    }

    // The tests run from bin/...; the inputs live in the repository, next to Rings.sln.
    private static string FindRepositoryRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Rings.sln")))
            {
                return dir.FullName;
            }
        }

        throw new InvalidOperationException($"no Rings.sln above {AppContext.BaseDirectory}");
    }
}
