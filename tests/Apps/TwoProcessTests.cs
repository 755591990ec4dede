using System.Diagnostics;
using System.Text.Json;

namespace Rings.Tests.Apps;

/// <summary>
/// The built <c>rings host</c> and <c>rings guest</c> as two real processes joined by vhost-user:
/// a million frames per case, every one accounted for.
/// </summary>
[Collection(ProcessCollection.Name)]
public class TwoProcessTests
{
    private static JsonElement Loopback(params string[] args)
    {
        var json = Path.Combine(Path.GetTempPath(), $"rings-test-{Guid.NewGuid():N}.json");
        try
        {
            var (exit, output, error) = LoopbackProcessTests.Run(["loopback", "--json", json, .. args]);
            Assert.True(exit == 0, $"exit {exit}\n{output}\n{error}");
            return JsonDocument.Parse(File.ReadAllText(json)).RootElement.Clone();
        }
        finally
        {
            File.Delete(json);
        }
    }

    [Fact]
    public void ATimedRunReportsItsSteadyRateBesideTheWholeRunsRate()
    {
        // Three seconds: the first (start, JIT warm-up) is left out of the steady rate, the
        // other two are its median.
        var f = Loopback("--seconds", "3");
        Assert.True(f.GetProperty("mpps").GetDouble() > 0, f.ToString());
        Assert.True(f.TryGetProperty("steady_mpps", out var steady), f.ToString());
        Assert.True(steady.GetDouble() > 0, f.ToString());
        Assert.Equal(0, f.GetProperty("lost").GetInt64());
    }

    [Theory]
    [InlineData("split", "poll", "on", 64)]
    [InlineData("split", "poll", "off", 64)]
    [InlineData("split", "block", "on", 64)]
    [InlineData("split", "block", "off", 64)]
    [InlineData("split", "block", "on", 1514)]
    [InlineData("split", "adaptive", "on", 9000)]
    [InlineData("packed", "poll", "on", 64)]
    [InlineData("packed", "poll", "off", 64)]
    [InlineData("packed", "block", "on", 64)]
    [InlineData("packed", "block", "off", 64)]
    [InlineData("packed", "block", "on", 1514)]
    [InlineData("packed", "adaptive", "on", 9000)]
    public void AMillionFramesComeBackIntact(string ring, string wait, string eventIdx, int frameSize)
    {
        const long frames = 1_000_000;
        var f = Loopback("--ring", ring, "--wait", wait, "--event-idx", eventIdx, "--frame-size", frameSize.ToString(System.Globalization.CultureInfo.InvariantCulture),
            "--frames", frames.ToString(System.Globalization.CultureInfo.InvariantCulture), "--seconds", "120");
        Assert.Equal(frames, f.GetProperty("frames_sent").GetInt64());
        Assert.Equal(frames, f.GetProperty("frames_received").GetInt64());
        Assert.Equal(0, f.GetProperty("lost").GetInt64());
        Assert.Equal(0, f.GetProperty("duplicated").GetInt64());
        Assert.Equal(0, f.GetProperty("corrupted").GetInt64());
        Assert.Equal(frames * frameSize, f.GetProperty("bytes_sent").GetInt64());
        Assert.Equal(frames * frameSize, f.GetProperty("bytes_received").GetInt64());
        Assert.Equal(ring, f.GetProperty("ring").GetString());
        Assert.Equal(eventIdx == "on", f.GetProperty("event_idx").GetBoolean());
        Assert.Equal(0, f.GetProperty("gen0_collections").GetInt64());
        Assert.True(f.TryGetProperty("host_calls_sent", out _), "the host's figures are missing");
        if (wait == "poll" && eventIdx == "on")
        {
            // Both sides busy-poll with EVENT_IDX: notifications all but vanish.
            Assert.True(f.GetProperty("kicks_per_frame").GetDouble() < 0.01, $"kicks per frame {f.GetProperty("kicks_per_frame").GetDouble()}");
            Assert.True(f.GetProperty("calls_per_frame").GetDouble() < 0.01, $"calls per frame {f.GetProperty("calls_per_frame").GetDouble()}");
        }
    }

    [Fact]
    public async Task GuestSaysSoAndExitsNonZeroWhenTheHostDies()
    {
        var dir = Directory.CreateTempSubdirectory("rings-test-");
        var socket = Path.Combine(dir.FullName, "vhost.sock");
        using var host = Start("host", "--socket", socket, "--wait", "block");
        try
        {
            WaitFor(() => File.Exists(socket));
            using var guest = Start("guest", "--socket", socket, "--seconds", "60", "--wait", "block", "--rate", "10000", "--hugepages", "off");
            var first = await guest.StandardOutput.ReadLineAsync().WaitAsync(TimeSpan.FromSeconds(15));
            Assert.Contains("connected", first, StringComparison.Ordinal);
            Thread.Sleep(500);
            host.Kill();
            var clock = Stopwatch.StartNew();
            Assert.True(guest.WaitForExit(5000), "the guest did not notice the host's death");
            Assert.True(clock.Elapsed < TimeSpan.FromSeconds(2.5), $"took {clock.Elapsed}");
            Assert.NotEqual(0, guest.ExitCode);
            Assert.Contains("went away", await guest.StandardOutput.ReadToEndAsync());
        }
        finally
        {
            if (!host.HasExited)
            {
                host.Kill();
            }

            dir.Delete(true);
        }
    }

    [Fact]
    public async Task HostSurvivesAGuestThatDiesAndServesTheNext()
    {
        var dir = Directory.CreateTempSubdirectory("rings-test-");
        var socket = Path.Combine(dir.FullName, "vhost.sock");
        using var host = Start("host", "--socket", socket, "--wait", "adaptive");
        try
        {
            WaitFor(() => File.Exists(socket));
            using (var doomed = Start("guest", "--socket", socket, "--seconds", "60", "--hugepages", "off"))
            {
                await doomed.StandardOutput.ReadLineAsync().WaitAsync(TimeSpan.FromSeconds(15));
                Thread.Sleep(300);
                doomed.Kill();
                doomed.WaitForExit();
            }

            var (exit, output, error) = LoopbackProcessTests.Run("guest", "--socket", socket, "--frames", "100000", "--seconds", "60");
            Assert.True(exit == 0, $"second guest: exit {exit}\n{output}\n{error}");
            Assert.False(host.HasExited, "the host died with its guest");
        }
        finally
        {
            host.Kill();
            host.WaitForExit();
            dir.Delete(true);
        }
    }

    private static Process Start(params string[] args)
    {
        var info = new ProcessStartInfo(LoopbackProcessTests.RingsExecutable()) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args)
        {
            info.ArgumentList.Add(a);
        }

        return Process.Start(info)!;
    }

    private static void WaitFor(Func<bool> condition)
    {
        var clock = Stopwatch.StartNew();
        while (!condition())
        {
            Assert.True(clock.Elapsed < TimeSpan.FromSeconds(15), "timed out");
            Thread.Sleep(20);
        }
    }
}

/// <summary>Tests that start busy processes run alone, not beside other tests.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class ProcessCollection
{
    /// <summary>The collection's name.</summary>
    public const string Name = "processes";
}

/// <summary><c>rings host --mode patch</c>: two guests wired to each other.</summary>
[Collection(ProcessCollection.Name)]
public class PatchModeTests
{
    [Fact]
    public async Task TwoGuestsReceiveEachOthersFramesIntact()
    {
        var dir = Directory.CreateTempSubdirectory("rings-test-");
        var socket = Path.Combine(dir.FullName, "vhost.sock");
        var info = new ProcessStartInfo(LoopbackProcessTests.RingsExecutable()) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in new[] { "host", "--socket", socket, "--mode", "patch", "--wait", "adaptive" })
        {
            info.ArgumentList.Add(a);
        }

        using var host = Process.Start(info)!;
        try
        {
            var clock = Stopwatch.StartNew();
            while (!File.Exists(socket))
            {
                Assert.True(clock.Elapsed < TimeSpan.FromSeconds(15), "the host did not start");
                await Task.Delay(20);
            }

            string[] args = ["guest", "--socket", socket, "--frames", "200000", "--seconds", "60", "--drain", "20", "--wait", "adaptive"];
            var a = Task.Run(() => LoopbackProcessTests.Run(args));
            var b = Task.Run(() => LoopbackProcessTests.Run(args));
            foreach (var (exit, output, error) in await Task.WhenAll(a, b))
            {
                Assert.True(exit == 0, $"exit {exit}\n{output}\n{error}");
                Assert.Matches(@"frames received\s+200,000\b", output);
                Assert.Matches(@"lost / dup / bad\s+0 / 0 / 0", output);
            }
        }
        finally
        {
            host.Kill();
            await host.WaitForExitAsync();
            dir.Delete(true);
        }
    }
}
