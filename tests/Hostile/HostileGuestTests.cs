using System.Globalization;
using System.Text.Json;
using Rings.Tests.Apps;
using Xunit.Abstractions;

namespace Rings.Tests.Hostile;

/// <summary>
/// <c>rings host</c> serving a well-behaved guest while hostile guests (the test peer's <c>guest --misbehave</c>)
/// scribble over their rings, loop chains, point outside their memory, flood kicks, disconnect
/// mid-burst and send malformed messages: the good guest loses nothing, each hostile queue is
/// reported broken with its reason, the host serves on, and its descriptors, threads, mappings
/// and memory stay flat over dozens of hostile sessions.
/// </summary>
[Collection(ProcessCollection.Name)]
public class HostileGuestTests
{
    private const long GoodFrames = 300_000;

    // Each kind, and what the host must report for its session (null: just survive it).
    private static readonly (string Kind, string Ring, string? Expect)[] Attacks =
    [
        ("scribble", "split", "broken: "),
        ("scribble", "packed", "broken: "),
        ("loop", "split", "broken: tx ChainLoop"),
        ("outside", "split", "broken: tx AddressOutOfRange"),
        ("outside", "packed", "broken: tx AddressOutOfRange"),
        ("flood", "split", null),
        ("disconnect", "split", null),
        ("malformed", "split", "connection closed: SetFeatures (2): PayloadTooLarge: a 1048576-byte payload"),
    ];

    private readonly ITestOutputHelper _output;

    public HostileGuestTests(ITestOutputHelper output)
    {
        _output = output;
    }

    [Fact]
    public async Task HostServesAGoodGuestThroughHostileOnesAndStaysFlat()
    {
        using var host = RingsHost.Start("--wait", "adaptive");
        var json = Path.Combine(Path.GetTempPath(), $"rings-hostile-{Guid.NewGuid():N}.json");
        System.Diagnostics.Process? good = null;
        try
        {
            // Warm up: a short good session and one hostile session of each kind, then measure the idle host.
            RunGood(host, 10_000, json);
            var reasons = new List<string>();
            Round(host, reasons);
            var idle = host.Resources();
            _output.WriteLine($"idle after warm-up: {idle}");

            // A good guest sends its 300,000 frames at a steady rate while hostile guests come and go beside it.
            good = RingsRun.Start("guest", "--socket", host.Socket, "--frames", GoodFrames.ToString(CultureInfo.InvariantCulture), "--rate", "15000",
                "--seconds", "120", "--drain", "10", "--wait", "adaptive", "--json", json);
            var goodOut = good.StandardOutput.ReadToEndAsync();
            var goodErr = good.StandardError.ReadToEndAsync();
            var sessions = Attacks.Length;
            var rssSamples = new List<long> { idle.RssKiB };
            for (var round = 0; round < 2; round++)
            {
                Round(host, reasons);
                sessions += Attacks.Length;
                var r = host.Resources();
                rssSamples.Add(r.RssKiB);
                _output.WriteLine($"after {sessions} hostile sessions: {r}");
            }

            sessions += AllAtOnce(host, reasons);
            _output.WriteLine($"after {sessions} hostile sessions (the last {Attacks.Length - 2} at once): {host.Resources()}");

            Assert.True(good.WaitForExit(60_000), "the good guest did not finish");
            await good.WaitForExitAsync();
            Assert.True(good.ExitCode == 0, $"good guest: exit {good.ExitCode}\n{await goodOut}\n{await goodErr}");
            AssertClean(json, GoodFrames, "the good guest beside the hostile ones");

            // The host still serves a new good guest at full speed.
            RunGood(host, GoodFrames, json);
            Assert.False(host.HasExited, "the host died");

            // Every session has ended: the host holds what it held when idle before.
            host.WaitForLines(0, l => l.Contains("forwarded", StringComparison.Ordinal), sessions + 3, TimeSpan.FromSeconds(10));
            var end = host.Resources();
            rssSamples.Add(end.RssKiB);
            _output.WriteLine($"idle after {sessions} hostile sessions and 3 good ones: {end}");
            _output.WriteLine($"VmRSS samples (MiB): {string.Join(", ", rssSamples.Select(k => (k / 1024.0).ToString("0.0", CultureInfo.InvariantCulture)))}");
            _output.WriteLine($"reasons seen: {string.Join("; ", reasons.Distinct())}");
            Assert.Equal(idle.Fds, end.Fds);
            Assert.Equal(0, end.GuestMappings);
            Assert.True(end.Threads <= idle.Threads + 2, $"threads grew from {idle.Threads} to {end.Threads}");
            Assert.True(end.RssKiB <= idle.RssKiB + (16 * 1024), $"VmRSS grew from {idle.RssKiB} KiB to {end.RssKiB} KiB");
        }
        finally
        {
            if (good is { HasExited: false })
            {
                good.Kill();
                good.WaitForExit();
            }

            good?.Dispose();
            File.Delete(json);
            _output.WriteLine(host.Output);
        }
    }

    private static void RunGood(RingsHost host, long frames, string json)
    {
        var (exit, output, error, _) = RingsRun.Run(TimeSpan.FromSeconds(60), "guest", "--socket", host.Socket, "--frames", frames.ToString(CultureInfo.InvariantCulture),
            "--seconds", "60", "--drain", "10", "--wait", "adaptive", "--json", json);
        Assert.True(exit == 0, $"good guest: exit {exit}\n{output}\n{error}");
        AssertClean(json, frames, "a good guest");
    }

    private static void AssertClean(string json, long frames, string who)
    {
        var f = JsonDocument.Parse(File.ReadAllText(json)).RootElement;
        Assert.True(f.GetProperty("frames_received").GetInt64() == frames, $"{who}: {f}");
        Assert.True(f.GetProperty("lost").GetInt64() == 0, $"{who}: {f}");
        Assert.True(f.GetProperty("corrupted").GetInt64() == 0, $"{who}: {f}");
        Assert.True(f.GetProperty("duplicated").GetInt64() == 0, $"{who}: {f}");
    }

    // One hostile session of each kind, one after another; the host must report each as expected.
    private static void Round(RingsHost host, List<string> reasons)
    {
        foreach (var (kind, ring, expect) in Attacks)
        {
            var mark = host.LineCount;
            var (exit, output, error, _) = RingsRun.Peer(TimeSpan.FromSeconds(30), "guest", "--socket", host.Socket, "--misbehave", kind, "--ring", ring, "--wait", "adaptive");
            Assert.True(exit == 0, $"hostile guest {kind} ({ring}): exit {exit}\n{output}\n{error}");
            // The session's own line: the expected report, or else its end (not the good guest's).
            var lines = host.WaitForLines(mark, expect is null ? EndOfHostileSession : l => l.Contains(expect, StringComparison.Ordinal), 1, TimeSpan.FromSeconds(10));

            reasons.AddRange(lines.Select(Reason).OfType<string>().Select(r => $"{kind} {ring}: {r}"));
            Assert.False(host.HasExited, $"the host died on {kind}");
        }
    }

    // The kinds without a packed twin, all at once beside the good guest (the host serves eight front-ends at a time).
    private static int AllAtOnce(RingsHost host, List<string> reasons)
    {
        var attacks = Attacks.Where(a => a.Ring == "split").ToArray();
        var mark = host.LineCount;
        var runs = attacks.Select(a => Task.Run(() => RingsRun.Peer(TimeSpan.FromSeconds(30), "guest", "--socket", host.Socket, "--misbehave", a.Kind, "--wait", "adaptive"))).ToArray();
        Task.WaitAll(runs);
        for (var i = 0; i < attacks.Length; i++)
        {
            var (exit, output, error, _) = runs[i].Result;
            Assert.True(exit == 0, $"hostile guest {attacks[i].Kind} (at once): exit {exit}\n{output}\n{error}");
        }

        var lines = host.WaitForLines(mark, EndOfHostileSession, attacks.Length, TimeSpan.FromSeconds(10));
        foreach (var expect in attacks.Select(a => a.Expect).OfType<string>().Where(e => e != "broken: "))
        {
            Assert.True(lines.Any(l => l.Contains(expect, StringComparison.Ordinal)), $"at once: the host did not report \"{expect}\":\n{string.Join('\n', lines)}");
        }

        reasons.AddRange(lines.Select(Reason).OfType<string>().Select(r => $"at once: {r}"));
        Assert.False(host.HasExited, "the host died");
        return attacks.Length;
    }

    private static bool EndOfHostileSession(string line) =>
        line.Contains("forwarded", StringComparison.Ordinal) && !line.Contains($"forwarded {GoodFrames:N0} frames", StringComparison.Ordinal);

    private static string? Reason(string line)
    {
        var broken = line.IndexOf("broken: ", StringComparison.Ordinal);
        if (broken >= 0)
        {
            return line[(broken + "broken: ".Length)..];
        }

        const string Closed = "connection closed: ";
        var closed = line.IndexOf(Closed, StringComparison.Ordinal);
        return closed >= 0 ? line[(closed + Closed.Length)..] : null;
    }
}
