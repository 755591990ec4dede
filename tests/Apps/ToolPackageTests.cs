using System.Diagnostics;
using System.IO.Compression;

namespace Rings.Tests.Apps;

/// <summary>
/// The packages: <c>Rings.Tool</c> installs as a .NET tool (from a local folder, into a temporary
/// tool path, with no other package source) and its <c>rings</c> runs; the library packages carry
/// their XML documentation and READMEs.
/// </summary>
[Collection(ProcessCollection.Name)]
public class ToolPackageTests
{
    private static (int Exit, string Output) Dotnet(string workingDirectory, params string[] args)
    {
        var info = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = workingDirectory };
        foreach (var a in args)
        {
            info.ArgumentList.Add(a);
        }

        info.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        info.Environment["DOTNET_NOLOGO"] = "1";
        using var p = Process.Start(info)!;
        var output = p.StandardOutput.ReadToEndAsync();
        var error = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(600_000))
        {
            p.Kill(entireProcessTree: true);
            Assert.Fail($"dotnet {string.Join(' ', args)} did not finish within 10 minutes");
        }

        return (p.ExitCode, output.Result + error.Result);
    }

    /// <summary>The repository's root and the configuration the tests were built in.</summary>
    private static (string Root, string Configuration) Repository()
    {
        var tool = LoopbackProcessTests.RingsExecutable();
        var configuration = Path.GetFileName(Path.GetDirectoryName(Path.GetDirectoryName(tool)))!;
        var root = Path.GetDirectoryName(tool);
        while (root is not null && !File.Exists(Path.Combine(root, "Rings.sln")))
        {
            root = Path.GetDirectoryName(root);
        }

        Assert.NotNull(root);
        return (root, configuration);
    }

    [Fact]
    public void TheToolPackageInstallsIntoAToolPathAndRuns()
    {
        var (root, configuration) = Repository();
        var work = Directory.CreateTempSubdirectory("rings-tool-");
        try
        {
            var feed = Path.Combine(work.FullName, "feed");
            var (exit, output) = Dotnet(root, "pack", "src/Apps/Tool/Rings.Tool.csproj", "-c", configuration, "--no-build", "-o", feed, "-nologo");
            Assert.True(exit == 0, output);
            var package = Assert.Single(Directory.GetFiles(feed, "Rings.Tool.*.nupkg"));
            var version = Path.GetFileNameWithoutExtension(package)["Rings.Tool.".Length..];

            // Only the local folder as a source: nothing comes from anywhere else.
            var config = Path.Combine(work.FullName, "nuget.config");
            File.WriteAllText(config, $"""
                <?xml version="1.0" encoding="utf-8"?>
                <configuration>
                  <packageSources>
                    <clear />
                    <add key="local" value="{feed}" />
                  </packageSources>
                </configuration>
                """);
            var tools = Path.Combine(work.FullName, "tools");
            (exit, output) = Dotnet(work.FullName, "tool", "install", "--tool-path", tools, "--configfile", config, "--version", version, "Rings.Tool");
            Assert.True(exit == 0, output);
            Assert.Contains("successfully installed", output, StringComparison.Ordinal);

            var rings = Path.Combine(tools, "rings");
            var (versionExit, versionOutput, versionError, _) = RingsRunAt(rings, "--version");
            Assert.True(versionExit == 0, versionError);
            Assert.StartsWith(version, versionOutput.Trim(), StringComparison.Ordinal);

            var (helpExit, helpOutput, _, _) = RingsRunAt(rings, "switch", "--help");
            Assert.Equal(0, helpExit);
            Assert.Contains("--capture", helpOutput, StringComparison.Ordinal);

            // The installed command runs the two-process loopback (it starts itself as host and guest).
            var (loopExit, loopOutput, loopError, _) = RingsRunAt(rings, "loopback", "--seconds", "1", "--rate", "10000");
            Assert.True(loopExit == 0, $"{loopOutput}\n{loopError}");
            Assert.Matches(@"lost / dup / bad\s+0 / 0 / 0", loopOutput);

            using var zip = ZipFile.OpenRead(package);
            Assert.Contains(zip.Entries, e => e.FullName == "README.md");
            Assert.Contains(zip.Entries, e => e.FullName == "tools/net10.0/any/Rings.Cli.dll");

            // The tool ships the test traffic it sends, never fault injection or benchmarks.
            Assert.DoesNotContain(zip.Entries, e => e.Name.StartsWith("Rings.Testing.Faults", StringComparison.Ordinal) || e.Name.StartsWith("Rings.TestPeer", StringComparison.Ordinal) || e.Name.StartsWith("Rings.Benchmarks", StringComparison.Ordinal));
        }
        finally
        {
            work.Delete(recursive: true);
        }
    }

    [Theory]
    [InlineData("src/Rings/Rings.csproj", "Rings", "Rings.xml")]
    [InlineData("src/Drivers/Rings.Linux.csproj", "Rings.Linux", "Rings.Linux.xml")]
    public void LibraryPackagesKeepTheirDocumentationAndReadme(string project, string id, string xml)
    {
        var (root, configuration) = Repository();
        var work = Directory.CreateTempSubdirectory("rings-pack-");
        try
        {
            var (exit, output) = Dotnet(root, "pack", project, "-c", configuration, "--no-build", "-o", work.FullName, "-nologo");
            Assert.True(exit == 0, output);
            var package = Assert.Single(Directory.GetFiles(work.FullName, $"{id}.*.nupkg"), f => !f.Contains(".symbols.", StringComparison.Ordinal));
            using var zip = ZipFile.OpenRead(package);
            Assert.Contains(zip.Entries, e => e.FullName == "README.md");
            Assert.Contains(zip.Entries, e => e.FullName == $"lib/net10.0/{xml}");
            Assert.Contains(zip.Entries, e => e.FullName == $"lib/net10.0/{id}.dll");
        }
        finally
        {
            work.Delete(recursive: true);
        }
    }

    private static (int Exit, string Out, string Err, TimeSpan Elapsed) RingsRunAt(string executable, params string[] args)
    {
        var info = new ProcessStartInfo(executable) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args)
        {
            info.ArgumentList.Add(a);
        }

        var clock = Stopwatch.StartNew();
        using var p = Process.Start(info)!;
        var output = p.StandardOutput.ReadToEndAsync();
        var error = p.StandardError.ReadToEndAsync();
        Assert.True(p.WaitForExit(120_000), $"{executable} {string.Join(' ', args)} did not finish");
        return (p.ExitCode, output.Result, error.Result, clock.Elapsed);
    }
}
