using System.Text.Json;
using System.Text.RegularExpressions;
using Rings.Linux.Driver;
using Rings.Linux.VhostUser;
using Rings.Tests.Hostile;
using Xunit.Abstractions;

namespace Rings.Tests.Apps;

/// <summary>
/// <c>rings switch --workers 2</c> with two-pair vhost-user ports: each worker serves one pair of
/// each port (receiving from its transmit queue, transmitting on its receive queue), both carry
/// traffic, nothing is lost or duplicated, and a pair disabled while the other runs costs the
/// running pair nothing.
/// </summary>
[Collection(ProcessCollection.Name)]
public class SpreadTests
{
    private const int SigTerm = 15;
    private readonly ITestOutputHelper _output;

    public SpreadTests(ITestOutputHelper output)
    {
        _output = output;
    }

    [Fact]
    public async Task TwoWorkersEachServeAPairOfBothTwoPairPortsAndLoseNothing()
    {
        var json = Path.Combine(Path.GetTempPath(), $"rings-test-{Guid.NewGuid():N}.json");
        var capture = Path.Combine(Path.GetTempPath(), $"rings-test-{Guid.NewGuid():N}.pcapng");
        using var sw = RingsSwitch.StartPorts(["vhost-user:{dir}/p0.sock,queues=2", "vhost-user:{dir}/p1.sock,queues=2"], "--workers", "2", "--wait", "adaptive", "--hold", "10000", "--json", json, "--capture", $"0={capture}");
        try
        {
            // The startup lines say which worker has which pair.
            Assert.Contains("2 worker(s)", sw.Output, StringComparison.Ordinal);
            Assert.Matches(new Regex(@"port 0: .*pair 0 on worker 0, pair 1 on worker 1"), sw.Output);
            Assert.Matches(new Regex(@"port 1: .*pair 0 on worker 0, pair 1 on worker 1"), sw.Output);

            // Each guest sends one flow per pair (its hash picks that pair); the other guest checks
            // every frame of every flow arrives once, intact, in order.
            var guestJson = sw.Sockets.Select(s => s + ".json").ToArray();
            // --start-delay: both guests attach all their pairs before either sends, so no early
            // frame of a flow lands on another pair while its own pair is still being set up.
            string[] guest = ["guest", "--queues", "2", "--frames", "200000", "--seconds", "60", "--drain", "20", "--wait", "adaptive", "--start-delay", "3"];
            var a = Task.Run(() => LoopbackProcessTests.Run([.. guest, "--socket", sw.Sockets[0], "--json", guestJson[0]]));
            var b = Task.Run(() => LoopbackProcessTests.Run([.. guest, "--socket", sw.Sockets[1], "--json", guestJson[1]]));
            foreach (var (exit, output, error) in await Task.WhenAll(a, b))
            {
                _output.WriteLine(output);
                Assert.True(exit == 0, $"guest exit {exit}\n{output}\n{error}\nswitch:\n{sw.Output}");
                Assert.Contains("MQ on (2 queue pair(s) of 2)", output, StringComparison.Ordinal);
                Assert.Matches(@"frames received\s+200,000\b", output);
                Assert.Matches(@"lost / dup / bad\s+0 / 0 / 0", output);
            }

            // The guests' per-pair counts: each pair sent and received its half.
            foreach (var file in guestJson)
            {
                var pairs = JsonDocument.Parse(File.ReadAllText(file)).RootElement.GetProperty("pairs").EnumerateArray().ToArray();
                Assert.Equal(2, pairs.Length);
                foreach (var pair in pairs)
                {
                    Assert.Equal(100_000, pair.GetProperty("frames_sent").GetInt64());
                    Assert.Equal(100_000, pair.GetProperty("frames_received").GetInt64());
                    Assert.Equal(0, pair.GetProperty("lost").GetInt64());
                    Assert.Equal(0, pair.GetProperty("corrupted").GetInt64());
                }

                File.Delete(file);
            }

            sw.Signal(SigTerm, TimeSpan.FromSeconds(5));
            Assert.Equal(0, sw.ExitCode);
            _output.WriteLine(sw.Output);

            // Both workers fed port 0's capture, each through its own ring: every frame the port
            // received or sent is in the file or counted as not captured.
            var line = Regex.Match(sw.Output, @"capture of port 0: ([\d,]+) frames to .*, ([\d,]+) not captured");
            Assert.True(line.Success, sw.Output);
            var written = long.Parse(line.Groups[1].Value.Replace(",", string.Empty, StringComparison.Ordinal), System.Globalization.CultureInfo.InvariantCulture);
            var missed = long.Parse(line.Groups[2].Value.Replace(",", string.Empty, StringComparison.Ordinal), System.Globalization.CultureInfo.InvariantCulture);
            Assert.Equal(400_000, written + missed);
            Assert.True(written > 0);

            // The switch's own counts, per worker: each worker received and transmitted the half of
            // each port's traffic that its pair carried, and the parts add up to the port's totals.
            var ports = JsonDocument.Parse(File.ReadAllText(json)).RootElement.GetProperty("ports").EnumerateArray().ToArray();
            Assert.Equal(2, ports.Length);
            foreach (var port in ports)
            {
                Assert.Equal([0, 1], port.GetProperty("pair_workers").EnumerateArray().Select(w => w.GetInt32()));
                Assert.Equal(200_000, port.GetProperty("rx_frames").GetInt64());
                Assert.Equal(200_000, port.GetProperty("tx_frames").GetInt64());
                Assert.Equal(0, port.GetProperty("dropped").GetInt64());
                var parts = port.GetProperty("by_worker").EnumerateArray().ToArray();
                Assert.Equal(2, parts.Length);
                foreach (var part in parts)
                {
                    Assert.Equal(100_000, part.GetProperty("rx_frames").GetInt64());
                    Assert.Equal(100_000, part.GetProperty("tx_frames").GetInt64());
                    Assert.Equal(0, part.GetProperty("dropped").GetInt64());
                }
            }
        }
        finally
        {
            File.Delete(json);
            File.Delete(capture);
        }
    }

    [Fact]
    public void APairDisabledWhileTheOtherRunsCostsTheRunningPairNothing()
    {
        const int Pairs = 2;
        const int Paused = 1;
        using var sw = RingsSwitch.StartPorts(["vhost-user:{dir}/p0.sock,queues=2", "vhost-user:{dir}/p1.sock"], "--processor", "reflect", "--workers", "2", "--wait", "adaptive", "--hold", "10000");
        Assert.Matches(new Regex(@"port 0: .*pair 0 on worker 0, pair 1 on worker 1"), sw.Output);
        var frontend = VhostUserFrontend.Connect(new VhostUserFrontendOptions { SocketPath = sw.Sockets[0], QueuePairs = Pairs, MemoryBytes = 32UL << 20 });
        try
        {
            Assert.NotEqual(VirtioFeatures.None, frontend.Features & VirtioFeatures.NetMultiqueue);
            using var traffic = new PairTraffic(frontend, Pairs);
            Assert.True(Wait(() => traffic.Received(0) > 5_000 && traffic.Received(Paused) > 5_000), "both pairs carry traffic");

            // SET_VRING_ENABLE 0 on the paused pair, its transmit queue first (nothing more is taken
            // from it), then its receive queue: its worker has no pair of the port left running.
            frontend.SetQueueEnabled((2 * Paused) + 1, false);
            frontend.SetQueueEnabled(2 * Paused, false);
            Thread.Sleep(200);
            var pausedAt = traffic.Received(Paused);
            var runningAt = traffic.Received(0);
            Thread.Sleep(300);
            Assert.Equal(pausedAt, traffic.Received(Paused));
            Assert.True(Wait(() => traffic.Received(0) > runningAt + 5_000), "the running pair kept forwarding");

            // Enabled again, receive queue first: what waited in its transmit ring goes, and it runs again.
            frontend.SetQueueEnabled(2 * Paused, true);
            frontend.SetQueueEnabled((2 * Paused) + 1, true);
            Assert.True(Wait(() => traffic.Received(Paused) > pausedAt + 5_000), "the pair forwards again once enabled");
            traffic.StopAndCheck(_output);
        }
        finally
        {
            frontend.Dispose();
        }

        sw.Signal(SigTerm, TimeSpan.FromSeconds(5));
        _output.WriteLine(sw.Output);
        Assert.Equal(0, sw.ExitCode);

        // Reflected on the port it came from, by the worker of its pair: nothing dropped.
        Assert.Matches(new Regex(@"^\s+0\s+down\s+([\d,]+)\s+\S+\s+\1\s+\S+\s+0\s", RegexOptions.Multiline), sw.Output);
    }

    private static bool Wait(Func<bool> condition) => Rings.Tests.VhostUser.TestDevice.Wait(condition, 60_000);
}
