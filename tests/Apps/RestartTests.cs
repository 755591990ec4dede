using System.Diagnostics;
using System.Text.Json;
using Rings.Tests.Hostile;

namespace Rings.Tests.Apps;

/// <summary>
/// The real processes: <c>rings host</c> killed with SIGKILL two seconds after it serves the guest,
/// under load, and started again, while <c>rings guest</c> reconnects each time and resumes from
/// its own rings. The kills are paced by the guest's reconnects, so a slow machine (a host that
/// takes long to start) makes the run longer, not the host killed before it served anyone.
/// With the inflight region nothing is lost, duplicated or damaged, on either ring format; without
/// it nothing is damaged and what goes wrong per restart is bounded by the ring size.
/// </summary>
[Collection(ProcessCollection.Name)]
public class RestartTests
{
    private const int SigInt = 2;

    private const int QueueSize = 256;

    [Theory]
    [InlineData("split")]
    [InlineData("packed")]
    public void KillingTheHostEveryTwoSecondsUnderLoadLosesNothingWithTheInflightRegion(string ring)
    {
        // Run returns only after every kill was followed by the guest's reconnect line; the guest's
        // own count of reconnects says the same.
        var tracked = Run(ring, inflight: true, kills: 9);
        Assert.Equal(9, tracked.Reconnects);
        Assert.True(tracked.Sent > 10_000, $"{tracked.Sent} frames sent\n{tracked.Output}");
        Assert.Equal((0L, 0L, 0L), (tracked.Lost, tracked.Duplicated, tracked.Corrupted));
        Assert.Equal(tracked.Sent, tracked.Received);

        // Without it, nothing damaged, and at most a ring's worth per restart lost or sent twice.
        var untracked = Run(ring, inflight: false, kills: 5);
        Assert.Equal(5, untracked.Reconnects);
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
        CollectedProcess? guest = null;
        var done = 0;
        try
        {
            WaitForSocket(socket, host);
            guest = CollectedProcess.Start(
                LoopbackProcessTests.RingsExecutable(),
                [
                    "guest", "--socket", socket, "--ring", ring, "--inflight", inflight ? "on" : "off", "--reconnect", "10",
                    "--queue-size", QueueSize.ToString(System.Globalization.CultureInfo.InvariantCulture),
                    "--seconds", "600", "--drain", "5", "--json", json,
                ]);
            int Count(string prefix) => guest.LinesFrom(0).Count(l => l.StartsWith(prefix, StringComparison.Ordinal));

            // Each kill comes two seconds after the guest is served (connected, then reconnected).
            WaitUntil(() => Count("rings guest: connected") == 1, guest, "the guest did not connect");
            while (done < kills)
            {
                Thread.Sleep(2000);
                host.Dispose(); // SIGKILL
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
            guest.Signal(SigInt, TimeSpan.FromSeconds(60));
            var text = guest.Output;
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
            guest?.Dispose();
            host.Dispose();
            dir.Delete(true);
        }
    }

    private static void WaitUntil(Func<bool> condition, CollectedProcess guest, string what)
    {
        var clock = Stopwatch.StartNew();
        while (!condition())
        {
            if (guest.HasExited || clock.Elapsed > TimeSpan.FromSeconds(60))
            {
                Assert.Fail($"{what}{(guest.HasExited ? ": the guest exited" : " within 60 s")}:\n{guest.Output}");
            }

            Thread.Sleep(20);
        }
    }

    /// <summary>A host whose output is read (so it never blocks on a full pipe) on <paramref name="socket"/>, which outlives it.</summary>
    private static CollectedProcess StartHost(string socket) => CollectedProcess.Start(LoopbackProcessTests.RingsExecutable(), ["host", "--socket", socket, "--quiet"]);

    private static void WaitForSocket(string socket, CollectedProcess host)
    {
        var clock = Stopwatch.StartNew();
        while (!File.Exists(socket))
        {
            if (host.HasExited || clock.Elapsed > TimeSpan.FromSeconds(15))
            {
                Assert.Fail($"the host did not listen{(host.HasExited ? ": it exited" : " within 15 s")}:\n{host.Output}");
            }

            Thread.Sleep(20);
        }
    }
}

/// <summary>What one restart run counted.</summary>
internal sealed record RestartRun(int Kills, int Reconnects, long Sent, long Received, long Lost, long Duplicated, long Corrupted, string Output);
