using System.Globalization;
using System.Text.RegularExpressions;
using Rings.Tests.Hostile;

namespace Rings.Tests.Apps;

/// <summary>
/// The two-build comparison (bench/Alternate, behind scripts/compare-rings.sh) runs both builds'
/// round trips and reports them; bad options get a clear error. (It measures; nothing here is timed.)
/// </summary>
[Collection(ProcessCollection.Name)]
public sealed partial class AlternateTests
{
    private static string Tool()
    {
        var config = AppContext.BaseDirectory.Contains("/Release/", StringComparison.Ordinal) ? "Release" : "Debug";
        var path = Path.Combine(ExampleTests.Root, "bench", "Alternate", "bin", config, "net10.0", "Rings.Alternate.dll");
        Assert.True(File.Exists(path), $"the comparison tool is not built at {path}; build Rings.sln first");
        return path;
    }

    [Theory]
    [InlineData("split", "on")]
    [InlineData("packed", "off")]
    public void The_same_build_against_itself_runs_both_and_reports_a_ratio(string ring, string inOrder)
    {
        var tool = Tool();
        var builds = Path.GetDirectoryName(tool)!;
        var (exit, output, error, _) = RingsRun.Program("dotnet", TimeSpan.FromSeconds(60),
            tool, "--old", builds, "--new", builds, "--ring", ring, "--in-order", inOrder, "--burst", "8", "--seconds", "0.3", "--warmup", "0.2", "--turn-ms", "5");
        Assert.True(exit == 0, $"exit {exit}: {output}{error}");
        var match = Report().Match(output);
        Assert.True(match.Success, $"no report line in: {output}");
        Assert.Equal(ring, match.Groups["ring"].Value);
        Assert.Equal(inOrder, match.Groups["order"].Value);
        foreach (var name in (string[])["old", "new", "ratio"])
        {
            var value = double.Parse(match.Groups[name].Value, CultureInfo.InvariantCulture);
            Assert.True(value > 0 && double.IsFinite(value), $"{name} = {value}");
        }

        Assert.True(int.Parse(match.Groups["pairs"].Value, CultureInfo.InvariantCulture) >= 2);
    }

    [Theory]
    [InlineData("--ring", "ring3")]
    [InlineData("--burst", "33")]
    [InlineData("--old", "/nonexistent-rings-build")]
    public void A_bad_option_is_refused_with_its_reason(string option, string value)
    {
        var tool = Tool();
        var builds = Path.GetDirectoryName(tool)!;
        var args = new List<string> { tool, "--old", builds, "--new", builds, option, value };
        var (exit, _, error, _) = RingsRun.Program("dotnet", TimeSpan.FromSeconds(60), [.. args]);
        Assert.Equal(2, exit);
        Assert.Contains(option == "--old" ? "no Rings.dll" : option, error, StringComparison.Ordinal);
    }

    [GeneratedRegex(@"^(?<ring>split|packed) in-order (?<order>on|off) burst 8: old (?<old>[0-9.]+) ns \(min [0-9.]+\), new (?<new>[0-9.]+) ns \(min [0-9.]+\), new/old (?<ratio>[0-9.]+) \[quartiles [0-9.]+ [0-9.]+\], (?<pairs>[0-9]+) pairs$", RegexOptions.Multiline)]
    private static partial Regex Report();
}
