using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;
using Rings.Tests.Apps;
using Rings.Tests.Hostile;
using Rings.Tests.VhostUser;
using Xunit.Abstractions;

namespace Rings.Tests.Interop;

/// <summary>
/// Multiqueue against DPDK 22.11 testpmd, four queue pairs each way: testpmd's virtio-user front-end
/// with <c>queues=4</c> on <c>rings host --queues 4</c>, and <c>rings guest --queues 4</c> on
/// testpmd's vhost back-end with <c>queues=4</c>. testpmd forwards queue N to queue N, so each pair
/// is a loop of its own; testpmd's per-queue counters and the host's per-pair counts say that
/// every pair carried traffic and nothing was lost. The tests fail, not skip, when testpmd is
/// missing (scripts/install-deps.sh).
/// </summary>
[Collection(ProcessCollection.Name)]
public class DpdkMultiqueueTests
{
    private const int Pairs = 4;
    private const int SetupTimeout = 30_000;
    private readonly ITestOutputHelper _output;

    public DpdkMultiqueueTests(ITestOutputHelper output)
    {
        _output = output;
    }

    /// <summary>
    /// io forwarding started with <c>tx_first</c>: testpmd sends one burst of 32 frames on each
    /// transmit queue, and from then on sends back out of queue N whatever arrives on queue N, so 32
    /// frames circle through each pair of our host for as long as it runs. When testpmd stops, each
    /// pair's 32 frames wait in its receive queue: testpmd received exactly 32 fewer than it sent
    /// on every queue, and our host forwarded exactly what testpmd sent on that pair.
    /// </summary>
    [Fact]
    public void TestpmdVirtioUserWithFourQueuesCirclesFramesThroughEveryPairOfRingsHost()
    {
        const int Burst = 32;
        var stats = Path.Combine(Path.GetTempPath(), $"rings-test-{Guid.NewGuid():N}.json");

        // testpmd without hugepages cannot seal its memory: the host trusts it (docs/tenants.md).
        using var host = RingsHost.Start("--queues", "4", "--wait", "adaptive", "--once", "--trust-unsealed", "--stats", stats);
        var testpmd = Testpmd.Start(
            $"net_virtio_user0,path={host.Socket},queues={Pairs},queue_size=256,packed_vq=0,server=0",
            "io",
            "-i",
            "--total-num-mbufs=8192",
            $"--rxq={Pairs}",
            $"--txq={Pairs}");
        try
        {
            for (var p = 0; p < Pairs; p++)
            {
                host.WaitForLine($"queue pair {p}", TimeSpan.FromMilliseconds(SetupTimeout));
            }

            testpmd.Send("start tx_first");

            // Until every pair has carried 10,000 frames (a few ms on a quiet machine), however slow the machine.
            var clock = System.Diagnostics.Stopwatch.StartNew();
            Dictionary<int, Stream>? streams = null;
            while (clock.ElapsedMilliseconds < 60_000)
            {
                Thread.Sleep(500);
                testpmd.Send("show fwd stats all");
                Thread.Sleep(200);
                streams = Streams(testpmd.Output);
                if (streams.Count == Pairs && streams.Values.All(s => s.Rx >= 10_000))
                {
                    break;
                }
            }

            var done = testpmd.Occurrences("Done.");
            testpmd.Send("stop");
            Assert.True(testpmd.WaitForCount("Done.", done + 1, SetupTimeout), "testpmd did not stop forwarding");
            streams = Streams(testpmd.Output);
            testpmd.Stop();

            Assert.True(TestDevice.Wait(() => host.HasExited, SetupTimeout), $"rings host did not leave with testpmd\n{host.Output}");
            Assert.True(host.ExitCode == 0, $"rings host: exit {host.ExitCode}\n{host.Output}");
            var h = JsonDocument.Parse(File.ReadAllText(stats)).RootElement;
            Assert.Equal(JsonValueKind.Null, h.GetProperty("broken").ValueKind);
            Assert.Equal(0, h.GetProperty("dropped").GetInt64());
            var forwarded = h.GetProperty("pairs").EnumerateArray().ToDictionary(p => p.GetProperty("pair").GetInt32(), p => p.GetProperty("frames").GetInt64());

            Assert.Equal(Pairs, streams.Count);
            for (var p = 0; p < Pairs; p++)
            {
                var s = streams[p];
                _output.WriteLine($"queue {p}: testpmd rx {s.Rx:N0}, tx {s.Tx:N0}, tx dropped {s.TxDropped}; rings host pair {p} forwarded {forwarded.GetValueOrDefault(p):N0}");
                Assert.True(s.Rx >= 10_000, $"queue {p} carried only {s.Rx} frames");
                Assert.Equal(0, s.TxDropped);
                Assert.Equal(s.Tx, forwarded[p]);
                Assert.Equal(s.Tx - Burst, s.Rx);
            }
        }
        finally
        {
            testpmd.Dispose();
            Dump(testpmd);
            _output.WriteLine("--- rings host ---");
            _output.WriteLine(host.Output);
            File.Delete(stats);
        }
    }

    /// <summary>
    /// <c>rings guest --queues 4</c> on testpmd's vhost back-end (macswap, queue N to queue N): each
    /// pair's flow comes back whole on its own pair, and testpmd counted the same on each queue.
    /// </summary>
    [Fact]
    public void RingsGuestWithFourQueuesGetsEveryFrameBackFromTestpmdVhost()
    {
        const long Frames = 200_000;
        var dir = Directory.CreateTempSubdirectory("rings-interop-");
        var socket = Path.Combine(dir.FullName, "vhost.sock");
        var json = Path.Combine(dir.FullName, "guest.json");
        var testpmd = Testpmd.Start($"net_vhost0,iface={socket},queues={Pairs}", "macswap", "--total-num-mbufs=8192", $"--rxq={Pairs}", $"--txq={Pairs}");
        try
        {
            // testpmd flushes its receive queues when the port starts: send only once it forwards.
            Assert.True(testpmd.WaitFor("binding succeeded", SetupTimeout), "testpmd did not create its socket");
            Assert.True(testpmd.WaitFor("Press enter to exit", SetupTimeout), "testpmd did not start forwarding");

            var (exit, output, error) = LoopbackProcessTests.Run(
                "guest", "--socket", socket, "--queues", "4", "--frames", Invariant(Frames), "--seconds", "60", "--wait", "adaptive", "--json", json);
            _output.WriteLine(output);
            Assert.True(exit == 0, $"rings guest: exit {exit}\n{output}\n{error}");
            var f = JsonDocument.Parse(File.ReadAllText(json)).RootElement;
            Assert.Equal(Frames, f.GetProperty("frames_received").GetInt64());
            Assert.Equal(0, f.GetProperty("lost").GetInt64());
            Assert.Equal(0, f.GetProperty("corrupted").GetInt64());
            var pairs = f.GetProperty("pairs").EnumerateArray().ToArray();
            Assert.Equal(Pairs, pairs.Length);
            Assert.All(pairs, p => Assert.Equal(Frames / Pairs, p.GetProperty("frames_received").GetInt64()));

            // testpmd's own per-queue counts: each queue took a pair's share from our transmit queue and sent it all back.
            testpmd.Stop();
            var streams = Streams(testpmd.Output);
            Assert.Equal(Pairs, streams.Count);
            Assert.All(streams.Values, s => Assert.Equal(new Stream(Frames / Pairs, Frames / Pairs, 0), s));
        }
        finally
        {
            testpmd.Dispose();
            Dump(testpmd);
            dir.Delete(true);
        }
    }

    /// <summary>
    /// The switch as a multiqueue front-end: <c>rings switch --workers 2</c> patches a two-pair
    /// vhost-user port (for <c>rings guest --queues 2</c>) to a <c>virtio-user:...,queues=2</c> port
    /// driving testpmd's vhost back-end with <c>queues=2</c> (macswap, queue N to queue N). Each
    /// worker drives one pair of each port; testpmd's per-queue counters show each of its queues
    /// carried one pair's flow, and the guest got every frame back once.
    /// </summary>
    [Fact]
    public void ATwoPairVirtioUserPortOfTheSwitchDrivesTestpmdVhostOnBothQueues()
    {
        const int Queues = 2;
        const long Frames = 100_000;
        var dir = Directory.CreateTempSubdirectory("rings-interop-");
        var socket = Path.Combine(dir.FullName, "vhost.sock");
        var json = Path.Combine(dir.FullName, "guest.json");
        var testpmd = Testpmd.Start($"net_vhost0,iface={socket},queues={Queues}", "macswap", "--total-num-mbufs=8192", $"--rxq={Queues}", $"--txq={Queues}");
        try
        {
            Assert.True(testpmd.WaitFor("binding succeeded", SetupTimeout), "testpmd did not create its socket");
            Assert.True(testpmd.WaitFor("Press enter to exit", SetupTimeout), "testpmd did not start forwarding");
            using var sw = RingsSwitch.StartPorts([$"virtio-user:{socket},queues={Queues}", $"vhost-user:{{dir}}/guest.sock,queues={Queues}"], "--processor", "patch", "--workers", "2", "--wait", "adaptive", "--hold", "10000");
            Assert.Matches(new Regex(@"port 0: virtio-user.*, 2 queue pairs of \d+\); pair 0 on worker 0, pair 1 on worker 1"), sw.Output);

            var (exit, output, error) = LoopbackProcessTests.Run(
                "guest", "--socket", sw.Sockets[0], "--queues", Invariant(Queues), "--frames", Invariant(Frames), "--seconds", "60", "--drain", "20", "--wait", "adaptive", "--json", json);
            _output.WriteLine(output);
            Assert.True(exit == 0, $"rings guest: exit {exit}\n{output}\n{error}\nswitch:\n{sw.Output}");
            var f = JsonDocument.Parse(File.ReadAllText(json)).RootElement;
            Assert.Equal(Frames, f.GetProperty("frames_received").GetInt64());
            Assert.Equal(0, f.GetProperty("lost").GetInt64());
            Assert.Equal(0, f.GetProperty("duplicated").GetInt64());
            Assert.Equal(0, f.GetProperty("corrupted").GetInt64());

            // testpmd's own per-queue counts: each queue got one pair's flow from the switch and sent it all back.
            testpmd.Stop();
            var streams = Streams(testpmd.Output);
            Assert.Equal(Queues, streams.Count);
            Assert.All(streams.Values, s => Assert.Equal(new Stream(Frames / Queues, Frames / Queues, 0), s));

            sw.Signal(15, TimeSpan.FromSeconds(5));
            _output.WriteLine(sw.Output);
            Assert.Equal(0, sw.ExitCode);
        }
        finally
        {
            testpmd.Dispose();
            Dump(testpmd);
            dir.Delete(true);
        }
    }

    /// <summary>One forwarding stream's counts, as testpmd printed them last.</summary>
    private readonly record struct Stream(long Rx, long Tx, long TxDropped);

    /// <summary>The last per-stream block testpmd printed for each queue of port 0.</summary>
    private static Dictionary<int, Stream> Streams(string output)
    {
        var streams = new Dictionary<int, Stream>();
        // A stream's header, then its counts; testpmd's other threads may print lines in between
        // (its vhost back-end logs the front-end leaving as the stats come out).
        foreach (Match m in Regex.Matches(output, @"Forward Stats for RX Port= 0/Queue=\s*(\d+) -> TX Port= 0/Queue=\s*\d+ -+[ \t]*\r?\n(?:(?![^\n]*(?:Forward Stats|RX-packets:))[^\n]*\n)*\s*RX-packets:\s*(\d+)\s+TX-packets:\s*(\d+)\s+TX-dropped:\s*(\d+)"))
        {
            streams[int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture)] = new Stream(Number(m, 2), Number(m, 3), Number(m, 4));
        }

        return streams;
    }

    private static long Number(Match m, int group) => long.Parse(m.Groups[group].Value, CultureInfo.InvariantCulture);

    private static string Invariant(long value) => value.ToString(CultureInfo.InvariantCulture);

    private void Dump(Testpmd testpmd)
    {
        _output.WriteLine($"--- testpmd (exit {testpmd.ExitCode}) ---");
        foreach (var line in testpmd.Output.Split('\n').TakeLast(60))
        {
            _output.WriteLine(line);
        }
    }
}
