using System.Globalization;
using System.Text.Json;
using Rings.Tests.Apps;
using Xunit.Abstractions;

namespace Rings.Tests.Hostile;

/// <summary>
/// The mirror: <c>rings guest</c> against a host that turns hostile (the test peer's <c>host --misbehave</c>)
/// after a thousand honest frames. The guest never crashes or hangs: it reports its rings broken
/// with the reason, or counts the bad frames, and exits non-zero within bounded time.
/// </summary>
[Collection(ProcessCollection.Name)]
public class HostileHostTests
{
    private readonly ITestOutputHelper _output;

    public HostileHostTests(ITestOutputHelper output)
    {
        _output = output;
    }

    [Theory]
    [InlineData("lie-id")]
    [InlineData("lie-length")]
    [InlineData("scribble")]
    [InlineData("mergeable")]
    public void GuestSurvivesAHostileHost(string kind)
    {
        using var host = RingsHost.StartHostile(kind);
        try
        {
            foreach (var ring in new[] { "split", "packed" })
            {
                var from = host.LineCount;
                var f = RunGuest(host, ring, out var exit, out var output);

                // The host says how its queue ended once the guest has gone: a scribbling host can
                // break its own queue (random bytes over a packed descriptor the driver made
                // available, which it then pops), and stop taking frames before the guest reads
                // any of its damage. The guest then survives a stalled queue, with nothing to see.
                var stopped = host.WaitForLines(from, l => l.Contains("queue stopped", StringComparison.Ordinal), 1, TimeSpan.FromSeconds(10));
                var hostBrokeItself = kind == "scribble" && stopped.Any(l => l.Contains("queue stopped", StringComparison.Ordinal) && l.Contains("broken:", StringComparison.Ordinal));

                // 1: the run was not clean.
                Assert.True(exit == 1 || (exit == 0 && hostBrokeItself), output);
                var broken = f.TryGetProperty("broken", out var b) ? b.GetString() : null;
                var lost = f.GetProperty("lost").GetInt64();
                var corrupted = f.GetProperty("corrupted").GetInt64();
                var drops = f.GetProperty("drops").GetInt64();
                _output.WriteLine($"{kind} ({ring}): received {f.GetProperty("frames_received").GetInt64():N0} of {f.GetProperty("frames_sent").GetInt64():N0}, lost {lost:N0}, bad {corrupted:N0}, drops {drops:N0}, broken: {broken ?? "no"}");
                switch (kind)
                {
                    case "lie-id":
                        Assert.Contains("UsedIdNotOutstanding", broken, StringComparison.Ordinal);
                        Assert.Contains("broken", output, StringComparison.Ordinal);
                        break;
                    case "lie-length":
                        Assert.Contains("UsedLengthTooLarge", broken, StringComparison.Ordinal);
                        Assert.Contains("broken", output, StringComparison.Ordinal);
                        break;
                    case "scribble":
                        Assert.True(broken is not null || lost + corrupted > 0 || hostBrokeItself, output);
                        break;
                    default:
                        // Bad num_buffers: frames discarded (counted as drops) or merged wrongly (bad).
                        Assert.True(drops > 0 && corrupted > 0 && lost > 0, output);
                        break;
                }

                Assert.False(host.HasExited, "the hostile host itself died");
            }
        }
        finally
        {
            _output.WriteLine(host.Output);
        }
    }

    [Fact]
    public void MisbehaveLivesInTheTestPeerNotInTheTool()
    {
        // The product has no fault injection: not in help, and refused when typed.
        foreach (var command in new[] { "host", "guest" })
        {
            var (exit, output, _, _) = RingsRun.Run(TimeSpan.FromSeconds(30), command, "--help");
            Assert.Equal(0, exit);
            Assert.DoesNotContain("misbehave", output, StringComparison.Ordinal);
            (exit, _, var error, _) = RingsRun.Run(TimeSpan.FromSeconds(30), command, "--socket", "/nonexistent", "--misbehave", "scribble");
            Assert.NotEqual(0, exit);
            Assert.Contains("--misbehave", error, StringComparison.Ordinal);
        }

        var (rootExit, rootOutput, _, _) = RingsRun.Run(TimeSpan.FromSeconds(30), "--help");
        Assert.Equal(0, rootExit);
        Assert.DoesNotContain("misbehave", rootOutput, StringComparison.Ordinal);

        // The test peer checks its kinds: a device's lie is not a guest's attack, and loops need split rings.
        var (badExit, _, badError, _) = RingsRun.Peer(TimeSpan.FromSeconds(30), "guest", "--socket", "/nonexistent", "--misbehave", "lie-id");
        Assert.NotEqual(0, badExit);
        Assert.Contains("lie-id", badError, StringComparison.Ordinal);
        (badExit, _, badError, _) = RingsRun.Peer(TimeSpan.FromSeconds(30), "guest", "--socket", "/nonexistent", "--misbehave", "loop", "--ring", "packed");
        Assert.Equal(2, badExit);
        Assert.Contains("split ring", badError, StringComparison.Ordinal);
    }

    private static JsonElement RunGuest(RingsHost host, string ring, out int exitCode, out string output)
    {
        var json = Path.Combine(Path.GetTempPath(), $"rings-hostile-{Guid.NewGuid():N}.json");
        try
        {
            // Sending stops after 3 s at most and the drain after 1 s more: the run is bounded even
            // when the device stops returning buffers.
            var (exit, stdout, stderr, elapsed) = RingsRun.Run(TimeSpan.FromSeconds(20), "guest", "--socket", host.Socket, "--ring", ring,
                "--frames", "200000", "--seconds", "3", "--drain", "1", "--wait", "adaptive", "--json", json);
            output = $"exit {exit} after {elapsed.TotalSeconds.ToString("0.0", CultureInfo.InvariantCulture)} s\n{stdout}\n{stderr}";
            exitCode = exit;

            // 0 or 1 (the caller says which it expects); a crash would be a signal's code (134 for
            // an unhandled exception).
            Assert.True(exit is 0 or 1, output);
            Assert.DoesNotContain("Unhandled", stderr, StringComparison.Ordinal);
            Assert.True(File.Exists(json), output);
            return JsonDocument.Parse(File.ReadAllText(json)).RootElement.Clone();
        }
        finally
        {
            File.Delete(json);
        }
    }
}
