using System.Text.Json;
using System.Text.RegularExpressions;
using Rings.Linux.Ports;
using Rings.Linux.Runtime;
using Rings.Tests.Apps;
using Rings.Tests.Hostile;
using Xunit.Abstractions;

namespace Rings.Tests.Ports;

/// <summary>
/// The switch's <c>virtio-user:PATH,queues=N</c> port: it drives N queue pairs of a back-end, each
/// pair a lane of one worker, frames on the pair their flow hash picks; its options are checked
/// when read, and a back-end offering fewer pairs than asked is refused with both numbers.
/// </summary>
[Collection(ProcessCollection.Name)]
public class VirtioUserMultiqueueTests
{
    private const int SigTerm = 15;
    private readonly ITestOutputHelper _output;

    public VirtioUserMultiqueueTests(ITestOutputHelper output)
    {
        _output = output;
    }

    [Theory]
    [InlineData("queues=0", "queues must be an integer from 1 to 64, not '0'")]
    [InlineData("queues=65", "queues must be an integer from 1 to 64, not '65'")]
    [InlineData("queues=two", "queues must be an integer from 1 to 64, not 'two'")]
    [InlineData("queues=", "queues must be an integer from 1 to 64, not ''")]
    [InlineData("queues=2,reconnect=on", "reconnect=on works with one queue pair")]
    public void BadQueueOptionsAreRefusedWhenRead(string options, string message)
    {
        var e = Assert.Throws<ArgumentException>(() => PortKinds.Create($"virtio-user:/run/none.sock,{options}"));
        Assert.Contains(message, e.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("", 1)]
    [InlineData(",queues=1,reconnect=on", 1)]
    [InlineData(",queues=2", 2)]
    [InlineData(",queues=64,reconnect=off", 64)]
    public void EachQueuePairIsALane(string options, int pairs)
    {
        using var port = (VirtioUserPort)PortKinds.Create($"virtio-user:/run/none.sock{options}");
        Assert.Equal(pairs, port.QueuePairs);
        Assert.Equal(pairs, port.Lanes);
        Assert.Empty(port.Drivers);
    }

    [Fact]
    public void ABackEndOfferingFewerPairsThanAskedIsRefusedWithBothNumbers()
    {
        using var host = RingsHost.Start("--queues", "2", "--wait", "block");
        using var port = PortKinds.Create($"virtio-user:{host.Socket},queues=4");
        var e = Assert.Throws<IOException>(port.Open);
        Assert.Contains("2 queue pairs, 4 wanted", e.Message, StringComparison.Ordinal);
        Assert.Equal(LinkState.Down, port.Link);
    }

    /// <summary>
    /// <c>rings guest --queues 2</c> on a two-pair vhost-user port of the switch, patched to a
    /// two-pair virtio-user port driving <c>rings host --queues 2</c>, which sends every frame back
    /// on the pair it came on. With two workers each worker drives one pair of each port; with one
    /// it drives both and picks the pair by the flow hash. Every pair of the host carries its half,
    /// and the guest gets every frame back once, intact, in order.
    /// </summary>
    [Theory]
    [InlineData(2)]
    [InlineData(1)]
    public async Task BothPairsOfAVirtioUserPortCarryTheirFlowsAndLoseNothing(int workers)
    {
        const long Frames = 200_000;
        var stats = Path.Combine(Path.GetTempPath(), $"rings-test-{Guid.NewGuid():N}.json");
        var json = Path.Combine(Path.GetTempPath(), $"rings-test-{Guid.NewGuid():N}.json");
        var guestJson = Path.Combine(Path.GetTempPath(), $"rings-test-{Guid.NewGuid():N}.json");
        try
        {
            using var host = RingsHost.Start("--queues", "2", "--wait", "adaptive", "--once", "--stats", stats);
            using (var sw = RingsSwitch.StartPorts([$"virtio-user:{host.Socket},queues=2", "vhost-user:{dir}/p1.sock,queues=2"], "--processor", "patch", "--workers", Invariant(workers), "--wait", "adaptive", "--hold", "10000", "--json", json))
            {
                Assert.Contains("2 queue pairs of 2", sw.Output, StringComparison.Ordinal);
                if (workers == 2)
                {
                    Assert.Matches(new Regex(@"port 0: virtio-user.*pair 0 on worker 0, pair 1 on worker 1"), sw.Output);
                    Assert.Matches(new Regex(@"port 1: vhost-user.*pair 0 on worker 0, pair 1 on worker 1"), sw.Output);
                }

                var run = Task.Run(() => LoopbackProcessTests.Run(["guest", "--socket", sw.Sockets[0], "--queues", "2", "--frames", Invariant(Frames), "--seconds", "60", "--drain", "20", "--wait", "adaptive", "--json", guestJson]));
                var (exit, output, error) = await run;
                _output.WriteLine(output);
                Assert.True(exit == 0, $"guest exit {exit}\n{output}\n{error}\nswitch:\n{sw.Output}\nhost:\n{host.Output}");
                Assert.Matches(@"lost / dup / bad\s+0 / 0 / 0", output);

                // The guest's pairs: each sent its flow's half and got all of it back.
                var guestPairs = JsonDocument.Parse(File.ReadAllText(guestJson)).RootElement.GetProperty("pairs").EnumerateArray().ToArray();
                Assert.Equal(2, guestPairs.Length);
                foreach (var pair in guestPairs)
                {
                    Assert.Equal(Frames / 2, pair.GetProperty("frames_sent").GetInt64());
                    Assert.Equal(Frames / 2, pair.GetProperty("frames_received").GetInt64());
                    Assert.Equal(0, pair.GetProperty("lost").GetInt64());
                    Assert.Equal(0, pair.GetProperty("corrupted").GetInt64());
                }

                sw.Signal(SigTerm, TimeSpan.FromSeconds(5));
                _output.WriteLine(sw.Output);
                Assert.Equal(0, sw.ExitCode);
            }

            // The host's own per-pair counts (written when the switch's port left): the virtio-user
            // port put each flow on its own pair, and nothing else.
            Assert.True(Rings.Tests.VhostUser.TestDevice.Wait(() => host.HasExited, 30_000), $"the host did not leave with its front-end\n{host.Output}");
            _output.WriteLine(host.Output);
            var hostPairs = JsonDocument.Parse(File.ReadAllText(stats)).RootElement.GetProperty("pairs").EnumerateArray()
                .ToDictionary(p => p.GetProperty("pair").GetInt32(), p => p.GetProperty("frames").GetInt64());
            Assert.Equal(2, hostPairs.Count);
            Assert.Equal(Frames / 2, hostPairs[0]);
            Assert.Equal(Frames / 2, hostPairs[1]);

            // The switch's counts: both ports moved every frame both ways, nothing dropped; with two
            // workers each worker received and transmitted its pair's half on each port.
            var ports = JsonDocument.Parse(File.ReadAllText(json)).RootElement.GetProperty("ports").EnumerateArray().ToArray();
            Assert.Equal(2, ports.Length);
            foreach (var port in ports)
            {
                Assert.Equal(Frames, port.GetProperty("rx_frames").GetInt64());
                Assert.Equal(Frames, port.GetProperty("tx_frames").GetInt64());
                Assert.Equal(0, port.GetProperty("dropped").GetInt64());
                if (workers == 2)
                {
                    Assert.Equal([0, 1], port.GetProperty("pair_workers").EnumerateArray().Select(w => w.GetInt32()));
                    var parts = port.GetProperty("by_worker").EnumerateArray().ToArray();
                    Assert.Equal(2, parts.Length);
                    foreach (var part in parts)
                    {
                        Assert.Equal(Frames / 2, part.GetProperty("rx_frames").GetInt64());
                        Assert.Equal(Frames / 2, part.GetProperty("tx_frames").GetInt64());
                    }
                }
            }
        }
        finally
        {
            File.Delete(stats);
            File.Delete(json);
            File.Delete(guestJson);
        }
    }

    private static string Invariant(long value) => value.ToString(System.Globalization.CultureInfo.InvariantCulture);
}
