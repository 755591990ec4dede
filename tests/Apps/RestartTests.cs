using System.Diagnostics;
using System.Text.Json;

namespace Rings.Tests.Apps;

/// <summary>
/// The real processes: <c>rings host</c> killed with SIGKILL two seconds after it serves the guest,
/// under load, and started again, while <c>rings guest</c> reconnects each time and resumes from
/// its own rings. The kills are paced by the guest's reconnects, so a slow machine (a host that
/// takes long to start) makes the run longer, not the host killed before it served anyone.
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
        var tracked = Run(ring, inflight: true, kills: 9);
        Assert.Equal(9, tracked.Kills);
        Assert.Equal(tracked.Kills, tracked.Reconnects);
        Assert.True(tracked.Sent > 10_000, $"{tracked.Sent} frames sent\n{tracked.Output}");
        Assert.Equal((0L, 0L, 0L), (tracked.Lost, tracked.Duplicated, tracked.Corrupted));
        Assert.Equal(tracked.Sent, tracked.Received);

        // Without it, nothing damaged, and at most a ring's worth per restart lost or sent twice.
        var untracked = Run(ring, inflight: false, kills: 5);
        Assert.Equal(untracked.Kills, untracked.Reconnects);
        Assert.Equal(0, untracked.Corrupted);
        Assert.InRange(untracked.Lost + untracked.Duplicated, 0, (long)QueueSize * untracked.Kills);
    }

    /// <summary>Runs a guest against a host killed <paramref name="kills"/> times, two seconds after each time it served the guest; the figures the guest printed.</summary>
    internal static RestartRun Run(string ring, bool inflight, int kills)
    {
        var dir = Directory.CreateTempSubdirectory("rings-restart-");
        var socket = Path.Combine(dir.FullName, "vhost.sock");
        var json = Path.Combine(dir.FullName, "guest.json");
        var host = StartHost(socket);
        Process? guest = null;
        var done = 0;
        try
        {
            WaitForSocket(socket, host);
            guest = Start(
                "guest", "--socket", socket, "--ring", ring, "--inflight", inflight ? "on" : "off", "--reconnect", "10",
                "--queue-size", QueueSize.ToString(System.Globalization.CultureInfo.InvariantCulture),
                "--seconds", "600", "--drain", "5", "--json", json);
            var lines = new List<string>();
            var reader = Task.Run(() =>
            {
                while (guest.StandardOutput.ReadLine() is { } line)
                {
                    lock (lines)
                    {
                        lines.Add(line);
                    }
                }
            });
            int Count(string prefix)
            {
                lock (lines)
                {
                    return lines.Count(l => l.StartsWith(prefix, StringComparison.Ordinal));
                }
            }

            // Each kill comes two seconds after the guest is served (connected, then reconnected).
            WaitUntil(() => Count("rings guest: connected") == 1, guest, "the guest did not connect");
            while (done < kills)
            {
                Thread.Sleep(2000);
                host.Kill();
                host.WaitForExit();
                host.Dispose();
                done++;
                if (File.Exists(socket))
                {
                    File.Delete(socket);
                }

                host = StartHost(socket);
                WaitUntil(() => Count("rings guest: reconnected after") == done, guest, $"the guest did not reconnect after kill {done}");
            }

            // Under load for two more seconds, then Ctrl-C: the guest stops sending and drains.
            Thread.Sleep(2000);
            using (var interrupt = Process.Start("kill", ["-INT", guest.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)]))
            {
                interrupt.WaitForExit();
            }

            Assert.True(guest.WaitForExit(60_000), "the guest did not finish");
            reader.Wait();
            string text;
            lock (lines)
            {
                text = string.Join('\n', lines);
            }

            Assert.True(guest.ExitCode == 0 || !inflight, $"guest exit {guest.ExitCode}:\n{text}");
            var f = JsonDocument.Parse(File.ReadAllText(json)).RootElement;
            return new RestartRun(
                done,
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

    private static void WaitUntil(Func<bool> condition, Process guest, string what)
    {
        var clock = Stopwatch.StartNew();
        while (!condition())
        {
            Assert.False(guest.HasExited, $"{what}: the guest exited");
            Assert.True(clock.Elapsed < TimeSpan.FromSeconds(60), what);
            Thread.Sleep(20);
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
