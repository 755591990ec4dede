using System.Text.RegularExpressions;
using Rings.Tests.Hostile;

namespace Rings.Tests.Apps;

/// <summary>
/// The programs a newcomer reads first: both package READMEs open with the two examples, word
/// for word as they are built and run here (so they cannot drift), and name nothing the package
/// does not hold.
/// </summary>
[Collection(ProcessCollection.Name)]
public sealed partial class ExampleTests
{
    public static readonly string Root = Path.GetFullPath(Path.Combine(AppContext.BaseDirectory, "..", "..", "..", ".."));

    public static TheoryData<string> Readmes() => ["src/Rings/README.md", "src/Drivers/README.md"];

    /// <summary>The path of an example's built executable.</summary>
    public static string Executable(string example)
    {
        var config = AppContext.BaseDirectory.Contains("/Release/", StringComparison.Ordinal) ? "Release" : "Debug";
        var path = Path.Combine(Root, "examples", example, "bin", config, "net10.0", example);
        Assert.True(File.Exists(path), $"the example is not built at {path}; build Rings.sln first");
        return path;
    }

    [Theory]
    [MemberData(nameof(Readmes))]
    public void A_package_readme_opens_with_the_two_examples_as_they_are_built(string readme)
    {
        var text = File.ReadAllText(Path.Combine(Root, readme)).ReplaceLineEndings("\n");
        var blocks = CodeBlock().Matches(text).Select(m => m.Groups[1].Value).ToList();
        Assert.True(blocks.Count >= 2, $"{readme} has {blocks.Count} C# code blocks");
        Assert.Equal(Source("RingPair"), blocks[0]);
        Assert.Equal(Source("VirtioNet"), blocks[1]);

        // "Opens with": nothing but a title and a few lines of prose before them.
        var firstSection = text.IndexOf("\n## ", StringComparison.Ordinal);
        Assert.True(firstSection < 0 || text.IndexOf(blocks[1], StringComparison.Ordinal) < firstSection, $"{readme}: the examples come after the first section");
        Assert.True(text.IndexOf("```csharp", StringComparison.Ordinal) < 1200, $"{readme}: the first example starts too far down");
        foreach (var block in blocks.Take(2))
        {
            var lines = block.TrimEnd('\n').Split('\n').Length;
            Assert.InRange(lines, 10, 20);
        }
    }

    [Theory]
    [MemberData(nameof(Readmes))]
    public void A_package_readme_names_no_tool_script_or_folder_outside_the_package(string readme)
    {
        var text = File.ReadAllText(Path.Combine(Root, readme));
        foreach (var outside in (string[])["rings host", "rings guest", "rings switch", "rings loopback", "rings bench", "scripts/", "src/", "tests/", "docs/", "../", "Plumbing/", "VhostUser/", "Device/", "Driver/", "Runtime/", "Ports/", "Switching/", "Net/", "Offloads/"])
        {
            Assert.DoesNotContain(outside, text, StringComparison.Ordinal);
        }
    }

    [Fact]
    public void The_ring_pair_example_moves_a_million_packets()
    {
        var (exit, output) = Run(Executable("RingPair"), TimeSpan.FromSeconds(60));
        Assert.True(exit == 0, output);
        Assert.Equal("1,000,000 packets moved, sum of their numbers 499,999,500,000", output.Trim());
    }

    [Fact]
    public void The_virtio_net_example_gets_ten_thousand_frames_back_from_a_reflecting_host()
    {
        using var host = RingsHost.Start("--mode", "reflect");
        var (exit, output) = Run(Executable("VirtioNet"), TimeSpan.FromSeconds(60), host.Socket);
        Assert.True(exit == 0, $"{output}\n{host.Output}");
        Assert.Equal("10,000 frames sent, 10,000 came back, 10,000 intact and in order", output.Trim());
    }

    internal static string Source(string example) =>
        File.ReadAllText(Path.Combine(Root, "examples", example, "Program.cs")).ReplaceLineEndings("\n");

    /// <summary>Runs an example to its end; what it printed on both streams.</summary>
    internal static (int Exit, string Output) Run(string executable, TimeSpan limit, params string[] args)
    {
        var (exit, output, error, _) = RingsRun.Program(executable, limit, args);
        return (exit, output + error);
    }

    [GeneratedRegex("```csharp\n(.*?)```", RegexOptions.Singleline)]
    private static partial Regex CodeBlock();
}
