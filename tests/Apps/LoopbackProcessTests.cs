using Rings.Tests.Hostile;

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
    public void BadOptionGetsAClearErrorAndNonZeroExit()
    {
        var (exit, _, error) = Run("loopback", "--queue-size", "100");
        Assert.Equal(2, exit);
        Assert.Contains("power of two", error);
        (exit, _, error) = Run("loopback", "--in-process", "--queue-size", "100");
        Assert.Equal(2, exit);
        Assert.Contains("power of two", error);
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
