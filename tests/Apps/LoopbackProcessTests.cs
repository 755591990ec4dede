using Rings.Tests.Hostile;
using Rings.Tool.Commands;

namespace Rings.Tests.Apps;

/// <summary>Runs the built <c>rings</c> tool as a real process.</summary>
[Collection(ProcessCollection.Name)]
public class LoopbackProcessTests
{
    internal static string RingsExecutable()
    {
        // The tool is built beside the tests by the solution build; find it relative to the test assembly.
        var testDir = AppContext.BaseDirectory;
        var config = testDir.Contains("/Release/", StringComparison.Ordinal) ? "Release" : "Debug";
        var root = Path.GetFullPath(Path.Combine(testDir, "..", "..", "..", ".."));
        var path = Path.Combine(root, "src", "Apps", "Tool", "bin", config, "net10.0", "rings");
        Assert.True(File.Exists(path), $"the rings tool is not built at {path}; build Rings.sln first");
        return path;
    }

    /// <summary>Runs the tool to its end within 60 s.</summary>
    internal static (int Exit, string Out, string Err) Run(params string[] args)
    {
        var (exit, output, error, _) = RingsRun.Run(TimeSpan.FromSeconds(60), args);
        return (exit, output, error);
    }

    [Theory]
    [InlineData("poll", "on")]
    [InlineData("block", "on")]
    [InlineData("block", "off")]
    public void InProcessLoopbackMovesPacketsInOrderAndReportsFigures(string wait, string eventIdx)
    {
        var (exit, output, error) = Run("loopback", "--in-process", "--seconds", "0.5", "--wait", wait, "--event-idx", eventIdx);
        Assert.True(exit == 0, $"exit {exit}\n{output}\n{error}");
        Assert.Contains("kicks per packet", output);
        Assert.Contains("calls per packet", output);
        Assert.Contains("mean burst", output);
        var packetsLine = output.Split('\n').Single(l => l.TrimStart().StartsWith("packets", StringComparison.Ordinal));
        var packets = long.Parse(packetsLine.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1].Replace(",", string.Empty, StringComparison.Ordinal), System.Globalization.CultureInfo.InvariantCulture);
        Assert.True(packets > 1000, output);
        Assert.Matches(@"out of sequence\s+0\b", output);
    }

    [Fact]
    public void WithPinAutoTheLoopbackPinsGuestAndHostToSeparateCpus()
    {
        var allowed = Rings.Linux.Plumbing.CpuAffinity.AllowedCpus();
        Assert.NotEmpty(allowed);
        var (exit, output, error) = Run("loopback", "--frames", "20000", "--seconds", "30", "--hugepages", "off", "--pin", "auto");
        Assert.True(exit == 0, $"exit {exit}\n{output}\n{error}");
        var (guest, host) = LoopbackCommand.CpusFor(LoopbackOptions.Defaults with { Pin = true }, allowed);
        if (allowed.Count >= 2)
        {
            Assert.Contains($"guest pinned to CPU {guest}, host to CPU {host}", output);
        }
        else
        {
            Assert.DoesNotContain("pinned", output);
        }

        // Pinning that the kernel refused would say "unpinned".
        Assert.DoesNotContain("unpinned", output + error);
        Assert.Matches(@"frames received\s+20,000", output);

        // Off by default.
        (exit, output, error) = Run("loopback", "--frames", "20000", "--seconds", "30", "--hugepages", "off");
        Assert.True(exit == 0, $"exit {exit}\n{output}\n{error}");
        Assert.DoesNotContain("pinned", output);
    }

    [Fact]
    public void PinningSplitsTheAllowedCpusInHalvesOnlyWhenNoSideWasGivenCpus()
    {
        var defaults = LoopbackOptions.Defaults with { Pin = true };
        Assert.Equal(((string?)null, (string?)null), LoopbackCommand.CpusFor(LoopbackOptions.Defaults, [0, 1]));
        Assert.Equal(("0", "1"), LoopbackCommand.CpusFor(defaults, [0, 1]));
        Assert.Equal(("2,5", "6,7"), LoopbackCommand.CpusFor(defaults, [2, 5, 6, 7]));
        Assert.Equal(("0", "1,2"), LoopbackCommand.CpusFor(defaults, [0, 1, 2]));
        Assert.Equal(((string?)null, (string?)null), LoopbackCommand.CpusFor(defaults, [3]));
        Assert.Equal(((string?)null, (string?)null), LoopbackCommand.CpusFor(defaults with { Pin = false }, [0, 1]));
        Assert.Equal(("1", (string?)null), LoopbackCommand.CpusFor(defaults with { Guest = defaults.Guest with { Cpus = "1" } }, [0, 1]));
        Assert.Equal(((string?)null, "0"), LoopbackCommand.CpusFor(defaults with { HostCpus = "0" }, [0, 1]));
    }

    [Fact]
    public void BadOptionGetsAClearErrorAndNonZeroExit()
    {
        var (exit, _, error) = Run("loopback", "--queue-size", "100");
        Assert.Equal(2, exit);
        Assert.Contains("power of two", error);
        (exit, _, error) = Run("loopback", "--in-process", "--queue-size", "100");
        Assert.Equal(2, exit);
        Assert.Contains("power of two", error);
        (exit, _, error) = Run("loopback", "--in-process", "--ring", "packed");
        Assert.Equal(2, exit);
        Assert.Contains("--in-process runs one split ring", error);
        (exit, _, error) = Run("loopback", "--in-process", "--hugepages", "on");
        Assert.Equal(2, exit);
        Assert.Contains("--hugepages on needs the two processes", error);
        (exit, _, error) = Run("loopback", "--host-cpus", "0-x");
        Assert.Equal(2, exit);
        Assert.Contains("--host-cpus '0-x'", error);
    }

    [Fact]
    public void HelpListsTheCommands()
    {
        var (exit, output, _) = Run("--help");
        Assert.Equal(0, exit);
        Assert.Contains("loopback", output);
        Assert.Contains("host", output);
        Assert.Contains("guest", output);
    }
}
