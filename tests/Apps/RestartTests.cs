using System.Diagnostics;
using System.Text.Json;

namespace Rings.Tests.Apps;

/// <summary>
/// The real processes: <c>rings host</c> killed with SIGKILL every two seconds under load and
/// started again, while <c>rings guest</c> reconnects each time and resumes from its own rings.
/// With the inflight region nothing is lost, duplicated or damaged, on either ring format; without
/// it nothing is damaged and what goes wrong per restart is bounded by the ring size.
/// </summary>
public class RestartTests
{
    private const int QueueSize = 256;

    [Theory]
    [InlineData("split")]
    [InlineData("packed")]
    public void KillingTheHostEveryTwoSecondsUnderLoadLosesNothingWithTheInflightRegion(string ring)
    {
        var tracked = Run(ring, inflight: true, TimeSpan.FromSeconds(20));
        Assert.True(tracked.Kills >= 8, $"{tracked.Kills} kills");
        Assert.True(tracked.Reconnects >= tracked.Kills - 1, $"{tracked.Reconnects} reconnects after {tracked.Kills} kills\n{tracked.Output}");
        Assert.True(tracked.Sent > 10_000, $"{tracked.Sent} frames sent\n{tracked.Output}");
        Assert.Equal((0L, 0L, 0L), (tracked.Lost, tracked.Duplicated, tracked.Corrupted));
        Assert.Equal(tracked.Sent, tracked.Received);

        // Without it, nothing damaged, and at most a ring's worth per restart lost or sent twice.
        var untracked = Run(ring, inflight: false, TimeSpan.FromSeconds(12));
        Assert.True(untracked.Reconnects >= untracked.Kills - 1, $"{untracked.Reconnects} reconnects after {untracked.Kills} kills\n{untracked.Output}");
        Assert.Equal(0, untracked.Corrupted);
        Assert.InRange(untracked.Lost + untracked.Duplicated, 0, (long)QueueSize * untracked.Kills);
    }

    /// <summary>Runs a guest for <paramref name="duration"/> against hosts killed every two seconds; the figures it printed.</summary>
    internal static RestartRun Run(string ring, bool inflight, TimeSpan duration)
    {
        var dir = Directory.CreateTempSubdirectory("rings-restart-");
        var socket = Path.Combine(dir.FullName, "vhost.sock");
        var json = Path.Combine(dir.FullName, "guest.json");
        var host = StartHost(socket);
        Process? guest = null;
        var kills = 0;
        try
        {
            WaitForSocket(socket, host);
            guest = Start(
                "guest", "--socket", socket, "--ring", ring, "--inflight", inflight ? "on" : "off", "--reconnect", "10",
                "--queue-size", QueueSize.ToString(System.Globalization.CultureInfo.InvariantCulture),
                "--seconds", duration.TotalSeconds.ToString(System.Globalization.CultureInfo.InvariantCulture), "--drain", "5", "--json", json);
            // The kills start once the guest is set up (its first line says so).
            var first = guest.StandardOutput.ReadLineAsync().WaitAsync(TimeSpan.FromSeconds(30)).Result;
            Assert.Contains("connected", first, StringComparison.Ordinal);
            var output = guest.StandardOutput.ReadToEndAsync();
            var clock = Stopwatch.StartNew();
            while (clock.Elapsed < duration - TimeSpan.FromSeconds(1.5) && !guest.HasExited)
            {
                Thread.Sleep(2000);
                host.Kill();
                host.WaitForExit();
                host.Dispose();
                kills++;
                if (File.Exists(socket))
                {
                    File.Delete(socket);
                }

                host = StartHost(socket);
            }

            Assert.True(guest.WaitForExit(60_000), "the guest did not finish");
            var text = output.Result;
            Assert.True(guest.ExitCode == 0 || !inflight, $"guest exit {guest.ExitCode}:\n{text}");
            var f = JsonDocument.Parse(File.ReadAllText(json)).RootElement;
            return new RestartRun(
                kills,
                f.GetProperty("reconnects").GetInt32(),
                f.GetProperty("frames_sent").GetInt64(),
                f.GetProperty("frames_received").GetInt64(),
                f.GetProperty("lost").GetInt64(),
                f.GetProperty("duplicated").GetInt64(),
                f.GetProperty("corrupted").GetInt64(),
                text);
        }
        finally
        {
            if (guest is { HasExited: false })
            {
                guest.Kill();
            }

            guest?.Dispose();
            if (!host.HasExited)
            {
                host.Kill();
            }

            host.WaitForExit();
            host.Dispose();
            dir.Delete(true);
        }
    }

    private static Process StartHost(string socket) => Start("host", "--socket", socket, "--quiet");

    private static void WaitForSocket(string socket, Process host)
    {
        var clock = Stopwatch.StartNew();
        while (!File.Exists(socket))
        {
            Assert.False(host.HasExited, "the host exited");
            Assert.True(clock.Elapsed < TimeSpan.FromSeconds(15), "the host did not listen");
            Thread.Sleep(20);
        }
    }

    private static Process Start(params string[] args)
    {
        var info = new ProcessStartInfo(LoopbackProcessTests.RingsExecutable())
        {
            RedirectStandardOutput = true,
            RedirectStandardError = false,
        };
        foreach (var a in args)
        {
            info.ArgumentList.Add(a);
        }

        return Process.Start(info)!;
    }
}

/// <summary>What one restart run counted.</summary>
internal sealed record RestartRun(int Kills, int Reconnects, long Sent, long Received, long Lost, long Duplicated, long Corrupted, string Output);
