using System.Globalization;
using System.Text;
using System.Text.Json;
using Rings.Tests.Apps;
using Rings.Tests.Hostile;
using Rings.Tests.Interop;
using Rings.Tests.Linux;
using Rings.Tests.VhostUser;
using Xunit.Abstractions;

namespace Rings.Tests.Ports;

/// <summary>
/// DPDK 22.11 testpmd as a real peer of <c>rings switch</c>, in both roles: its
/// <c>net_virtio_user</c> front-end on a vhost-user port, and its <c>net_vhost</c> back-end behind
/// a virtio-user port. testpmd runs without hugepages, with a file prefix of its own, under a
/// time limit; the tests fail, not skip, when it is missing (scripts/install-deps.sh).
/// </summary>
[Collection(ProcessCollection.Name)]
public sealed class DpdkThroughSwitchTests(ITestOutputHelper output)
{
    private const int SigTerm = 15;
    private const int SetupTimeout = 30_000;

    /// <summary>
    /// testpmd (virtio-user front-end, macswap) on one vhost-user port and <c>rings guest</c> on
    /// another: every frame the guest sends comes back swapped through the learning switch. A
    /// third port, a TAP device in a namespace, sees the flooding of the first frames (the
    /// destination unknown yet) and, once both stations are learned, not one frame more.
    /// </summary>
    [Fact]
    public void TestpmdAndAGuestExchangeFramesAndLearnedUnicastIsNotFlooded()
    {
        Privileges.RequireNetworkAdmin();
        var transcript = new StringBuilder();
        Testpmd? testpmd = null;
        try
        {
            using var hosts = new KernelHosts(transcript, 1);
            var third = hosts[0];
            // testpmd without hugepages cannot seal its memory: its port trusts it (docs/tenants.md).
            using var sw = RingsSwitch.StartPorts(["vhost-user:{dir}/dpdk.sock,unsealed=trust", "vhost-user:{dir}/guest.sock", third.Port], "--wait", "adaptive", "--quiet");
            hosts.Attach(third);
            testpmd = Testpmd.Start($"net_virtio_user0,path={sw.Sockets[0]},queues=1,queue_size=256,server=0", "macswap", "--total-num-mbufs=4096");
            sw.WaitForLine("dpdk.sock,unsealed=trust: link up", TimeSpan.FromMilliseconds(SetupTimeout));
            Assert.True(testpmd.WaitFor("Press enter to exit", SetupTimeout), $"testpmd did not start forwarding\n{testpmd.Output}");

            // First exchange: the guest's first frames go to an unknown address and flood.
            var first = Guest(sw, 1_000);
            var flooded = third.Statistic("rx_packets");
            Assert.True(flooded > 0, "the third port never saw a flooded frame");

            // Both stations learned: a long exchange floods nothing more to the third port.
            var second = Guest(sw, 100_000);
            var later = third.Statistic("rx_packets");
            hosts.Note($"third port: {flooded} frames flooded during the first exchange ({first} frames), {later - flooded} during the second ({second} frames)");
            Assert.Equal(flooded, later);

            testpmd.Stop();
            var forward = DpdkDataPathTests.ForwardStatistics(testpmd.Output);
            hosts.Note($"testpmd forward statistics: rx {forward.RxPackets}, tx {forward.TxPackets}, tx dropped {forward.TxDropped}");
            Assert.Equal(first + second, forward.RxPackets);
            Assert.Equal(first + second, forward.TxPackets);
            Assert.Equal(0, forward.TxDropped);

            sw.Signal(SigTerm, TimeSpan.FromSeconds(5));
            hosts.Note(sw.Output);
            var table = KernelThroughSwitchTests.FinalTable(sw.Output);
            Assert.Equal((first + second, first + second), table[0]);
            Assert.Equal((first + second, first + second), table[1]);
            Assert.Equal(flooded, table[2].Tx);
        }
        finally
        {
            testpmd?.Dispose();
            output.WriteLine(transcript.ToString());
            if (testpmd is not null)
            {
                output.WriteLine("--- testpmd ---");
                output.WriteLine(testpmd.Output);
            }
        }
    }

    /// <summary>
    /// The switch as a front-end: a <c>virtio-user:</c> port drives testpmd's vhost back-end in
    /// macswap mode, and <c>rings guest</c> on a vhost-user port gets every one of its frames back
    /// through it; testpmd counts the same frames.
    /// </summary>
    [Theory]
    [InlineData("split")]
    [InlineData("packed")]
    public void AVirtioUserPortDrivesTestpmdVhostAndFramesGoRound(string ring)
    {
        const long Frames = 100_000;
        var dir = Directory.CreateTempSubdirectory("rings-virtio-user-");
        var socket = Path.Combine(dir.FullName, "vhost.sock");
        using var testpmd = Testpmd.Start($"net_vhost0,iface={socket},queues=1", "macswap", "--total-num-mbufs=4096");
        try
        {
            Assert.True(testpmd.WaitFor("Press enter to exit", SetupTimeout), $"testpmd did not start forwarding\n{testpmd.Output}");
            using var sw = RingsSwitch.StartPorts(["vhost-user:{dir}/guest.sock", $"virtio-user:{socket},ring={ring}"], "--wait", "adaptive", "--quiet");
            Assert.Contains($"virtio-user:{socket},ring={ring} (connected: {ring} ring of 256", sw.Output, StringComparison.Ordinal);
            var sent = Guest(sw, Frames);

            testpmd.Stop();
            var forward = DpdkDataPathTests.ForwardStatistics(testpmd.Output);
            output.WriteLine($"testpmd forward statistics: rx {forward.RxPackets}, tx {forward.TxPackets}, tx dropped {forward.TxDropped}");
            Assert.Equal(sent, forward.RxPackets);
            Assert.Equal(sent, forward.TxPackets);
            Assert.Equal(0, forward.TxDropped);

            // testpmd leaving is the port's link going down; the switch goes on and stops cleanly.
            sw.WaitForLine($"virtio-user:{socket},ring={ring}: link down (back-end disconnected)", TimeSpan.FromSeconds(5));
            sw.Signal(SigTerm, TimeSpan.FromSeconds(5));
            Assert.Equal(0, sw.ExitCode);
            output.WriteLine(sw.Output);
            var table = KernelThroughSwitchTests.FinalTable(sw.Output);
            Assert.Equal((Frames, Frames), table[0]);
            Assert.Equal((Frames, Frames), table[1]);
        }
        finally
        {
            testpmd.Dispose();
            output.WriteLine(testpmd.Output);
            dir.Delete(recursive: true);
        }
    }

    /// <summary>Runs <c>rings guest</c> on the switch's guest.sock until every frame came back intact; returns the frames.</summary>
    private long Guest(RingsSwitch sw, long frames)
    {
        var json = Path.Combine(sw.Directory.FullName, "guest.json");
        var socket = sw.Sockets.Single(s => s.EndsWith("guest.sock", StringComparison.Ordinal));
        var (exit, stdout, stderr, _) = RingsRun.Run(TimeSpan.FromSeconds(90), "guest", "--socket", socket, "--frames", frames.ToString(CultureInfo.InvariantCulture), "--seconds", "60", "--wait", "adaptive", "--json", json);
        output.WriteLine(stdout);
        Assert.True(exit == 0, $"rings guest: exit {exit}\n{stdout}\n{stderr}\nswitch:\n{sw.Output}");
        var f = JsonDocument.Parse(File.ReadAllText(json)).RootElement;
        Assert.Equal(frames, f.GetProperty("frames_sent").GetInt64());
        Assert.Equal(frames, f.GetProperty("frames_received").GetInt64());
        Assert.Equal(0, f.GetProperty("lost").GetInt64());
        Assert.Equal(0, f.GetProperty("corrupted").GetInt64());
        return frames;
    }
}
