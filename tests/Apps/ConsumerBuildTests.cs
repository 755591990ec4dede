using System.Diagnostics;

namespace Rings.Tests.Apps;

/// <summary>
/// A consumer builds clean: the packages as <c>dotnet pack</c> makes them, in a local folder feed
/// (no project references, nothing of this repository's build settings), referenced by projects
/// with warnings as errors, nullable on and no suppression, each compiling one example as its
/// program. Every build must succeed with 0 warnings and nothing declared by the consumer.
/// </summary>
[Collection(ProcessCollection.Name)]
public sealed class ConsumerBuildTests
{
    [Fact]
    public void The_examples_build_against_the_packed_packages_with_no_warnings()
    {
        var work = Directory.CreateTempSubdirectory("rings-consumer-");
        try
        {
            var config = AppContext.BaseDirectory.Contains("/Release/", StringComparison.Ordinal) ? "Release" : "Debug";
            var feed = Path.Combine(work.FullName, "feed");
            foreach (var project in (string[])["src/Rings/Rings.csproj", "src/Drivers/Rings.Linux.csproj"])
            {
                var (exit, output) = Dotnet(work.FullName, "pack", Path.Combine(ExampleTests.Root, project), "-c", config, "--no-build", "-o", feed, "-nologo");
                Assert.True(exit == 0, $"dotnet pack {project} failed:\n{output}");
            }

            Assert.Equal(["Rings.0.1.0.nupkg", "Rings.Linux.0.1.0.nupkg"], Directory.GetFiles(feed).Select(Path.GetFileName).Order(StringComparer.Ordinal));
            // The packages' own dependencies (Microsoft.Extensions.Logging.Abstractions) come from the
            // folder this test project restored them into, so the consumer builds offline.
            var restored = Environment.GetEnvironmentVariable("NUGET_PACKAGES") is { Length: > 0 } p ? p : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
            File.WriteAllText(Path.Combine(work.FullName, "NuGet.config"), $"""
                <?xml version="1.0" encoding="utf-8"?>
                <configuration>
                  <packageSources>
                    <clear />
                    <add key="local" value="{feed}" />
                    <add key="restored" value="{restored}" />
                  </packageSources>
                </configuration>
                """);

            foreach (var (example, package) in (ReadOnlySpan<(string, string)>)[("RingPair", "Rings"), ("VirtioNet", "Rings.Linux"), ("MacCounter", "Rings.Linux")])
            {
                var dir = Directory.CreateDirectory(Path.Combine(work.FullName, example));
                foreach (var source in Directory.GetFiles(Path.Combine(ExampleTests.Root, "examples", example), "*.cs"))
                {
                    File.Copy(source, Path.Combine(dir.FullName, Path.GetFileName(source)));
                }

                // A fresh package folder: a package of the same version from an earlier build never stands in.
                File.WriteAllText(Path.Combine(dir.FullName, $"{example}.Consumer.csproj"), $"""
                    <Project Sdk="Microsoft.NET.Sdk">
                      <PropertyGroup>
                        <OutputType>Exe</OutputType>
                        <TargetFramework>net10.0</TargetFramework>
                        <Nullable>enable</Nullable>
                        <ImplicitUsings>enable</ImplicitUsings>
                        <TreatWarningsAsErrors>true</TreatWarningsAsErrors>
                        <RestorePackagesPath>{Path.Combine(work.FullName, "packages")}</RestorePackagesPath>
                      </PropertyGroup>
                      <ItemGroup>
                        <PackageReference Include="{package}" Version="0.1.0" />
                      </ItemGroup>
                    </Project>
                    """);
                var (exit, output) = Dotnet(dir.FullName, "build", "-c", "Release", "-tl:off", "-nologo");
                Assert.True(exit == 0, $"the {example} consumer did not build:\n{output}");
                Assert.Contains("0 Warning(s)", output, StringComparison.Ordinal);
                Assert.DoesNotContain("warning", output.Replace("0 Warning(s)", string.Empty, StringComparison.Ordinal), StringComparison.OrdinalIgnoreCase);
            }
        }
        finally
        {
            work.Delete(recursive: true);
        }
    }

    private static (int Exit, string Output) Dotnet(string directory, params string[] args)
    {
        var info = new ProcessStartInfo("dotnet") { WorkingDirectory = directory, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args)
        {
            info.ArgumentList.Add(a);
        }

        // Outside the repository's build: none of its Directory.Build.props or central versions apply.
        info.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        info.Environment["DOTNET_NOLOGO"] = "1";
        using var p = Process.Start(info)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(TimeSpan.FromMinutes(10)))
        {
            p.Kill(entireProcessTree: true);
            Assert.Fail($"dotnet {string.Join(' ', args)} did not finish within 10 minutes");
        }

        p.WaitForExit();
        return (p.ExitCode, stdout.Result + stderr.Result);
    }
}
