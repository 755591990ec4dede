using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Rings.Linux.Plumbing;
using Rings.Tests.Apps;
using Rings.Tests.Linux;
using Rings.Tests.VhostUser;
using Xunit.Abstractions;

namespace Rings.Tests.Interop;

/// <summary>
/// Data-level interop with DPDK 22.11 testpmd as the real peer, each side against the built
/// <c>rings</c> tool: testpmd's virtio-user front-end generates frames that <c>rings host</c>
/// reflects, and <c>rings guest</c> sends numbered frames that testpmd's vhost back-end swaps
/// and sends back. The tests fail, not skip, when testpmd is missing (scripts/install-deps.sh).
/// </summary>
[Collection(ProcessCollection.Name)]
public class DpdkDataPathTests
{
    private const int SetupTimeout = 30_000;
    private readonly ITestOutputHelper _output;

    public DpdkDataPathTests(ITestOutputHelper output)
    {
        _output = output;
    }

    /// <summary>
    /// txonly never polls its receive queue, so testpmd alternates: txonly fills both rings (our
    /// host reflects until the receive ring is full, then holds the rest in the transmit ring, and
    /// testpmd counts what it could not queue as TX-dropped), then rxonly takes everything back.
    /// Every frame testpmd transmitted must come back, and be the ones our host forwarded.
    /// </summary>
    [Theory]
    [InlineData("split")]
    [InlineData("packed")]
    public void TestpmdTxonlyFramesAllComeBackThroughRingsHost(string ring)
    {
        const int Cycles = 16;
        var (rx, _, host) = ReflectThroughRingsHost(ring, "adaptive", testpmd =>
        {
            for (var i = 0; i < Cycles; i++)
            {
                Forward(testpmd, "txonly", 100);
                Forward(testpmd, "rxonly", 50);
            }
        });

        // Each cycle moves up to a receive ring and a transmit ring (2 x 256) of frames.
        Assert.True(rx.Packets >= 2048, $"only {rx.Packets} frames went round");
        Assert.True(rx.Packets <= Cycles * 512, $"{rx.Packets} frames is more than the rings hold over {Cycles} cycles");
        Assert.True(host.Sleeps > 0, "the host never waited for receive buffers (adaptive waits should sleep while testpmd's receive ring is full)");
    }

    /// <summary>flowgen receives and transmits in one loop: a steady round trip through our host.</summary>
    [Theory]
    [InlineData("split")]
    [InlineData("packed")]
    public void TestpmdFlowgenFramesAllComeBackThroughRingsHost(string ring)
    {
        var (rx, _, _) = ReflectThroughRingsHost(ring, "poll", FlowgenTenThousand);
        Assert.True(rx.Packets >= 10_000, $"only {rx.Packets} frames went round in a minute");
    }

    /// <summary>flowgen until 10,000 frames went round (about 2 ms on a quiet machine), however slow the machine, at most a minute.</summary>
    private static void FlowgenTenThousand(Testpmd testpmd)
    {
        testpmd.Send("set fwd flowgen");
        testpmd.Send("start");
        var clock = Stopwatch.StartNew();
        while (ShowPortStatistics(testpmd).Rx.Packets < 10_000 && clock.ElapsedMilliseconds < 60_000)
        {
            Thread.Sleep(100);
        }

        testpmd.Send("stop");
    }

    /// <summary>
    /// flowgen from testpmd's virtio-user on hugepages: files on hugetlbfs, or hugetlb memfds
    /// (<c>--in-memory</c>), both with <c>--single-file-segments</c> (which DPDK's virtio-user
    /// needs with hugepages), so the regions lie at offsets in one file; the host maps each in
    /// whole 2 MiB pages. Neither kind of file can be sealed, so the host trusts unsealed memory,
    /// as for testpmd without hugepages.
    /// </summary>
    [Theory]
    [InlineData("split", "hugetlbfs")]
    [InlineData("packed", "hugetlbfs")]
    [InlineData("split", "in-memory")]
    public void TestpmdOnHugepagesFlowgenFramesAllComeBackThroughRingsHost(string ring, string memory)
    {
        using var mount = HugePageMount.Create(128);
        var (rx, _, _) = ReflectThroughRingsHost(
            ring,
            "poll",
            testpmd =>
            {
                // testpmd's memory files are in the mount, or (--in-memory) nowhere in a file system.
                Assert.Equal(memory == "hugetlbfs", Directory.EnumerateFiles(mount.Directory).Any());
                FlowgenTenThousand(testpmd);
            },
            (vdev, extra) => Testpmd.StartWithHugepages(memory == "hugetlbfs" ? mount.Directory : null, singleFileSegments: true, vdev, "io", extra));
        Assert.True(rx.Packets >= 10_000, $"only {rx.Packets} frames went round in a minute");
    }

    /// <summary>
    /// Reconnect with DPDK as the listening front-end: testpmd's virtio-user is the server
    /// (<c>server=1</c>) and <c>rings host --connect</c> the client. While flowgen runs, the host is
    /// killed with SIGKILL and started again, twice: each new host takes the rings where they are
    /// (packed included, which QEMU cannot restore) and frames come back again. A dead host's
    /// frames in flight are not counted: DPDK's virtio-user keeps no inflight region.
    /// </summary>
    [Theory]
    [InlineData("split")]
    [InlineData("packed")]
    public void TestpmdAsTheServerKeepsForwardingWhenRingsHostIsKilledAndStartedAgain(string ring)
    {
        const int Hosts = 3;
        const long Enough = 10_000;
        var dir = Directory.CreateTempSubdirectory("rings-interop-");
        var socket = Path.Combine(dir.FullName, "vhost.sock");
        var packed = ring == "packed" ? 1 : 0;
        var hostOutput = new StringBuilder();
        Process? host = null;
        var testpmd = Testpmd.Start($"net_virtio_user0,path={socket},queues=1,queue_size=256,packed_vq={packed},server=1", "flowgen", "-i", "--total-num-mbufs=4096");
        try
        {
            Assert.True(TestDevice.Wait(() => File.Exists(socket), SetupTimeout), $"testpmd did not listen on {socket}");
            var moved = new long[Hosts];
            long before = 0;
            for (var h = 0; h < Hosts; h++)
            {
                hostOutput.Clear();
                host = StartRings(hostOutput, "host", "--connect", socket, "--mode", "reflect", "--wait", "poll", "--trust-unsealed");
                Assert.True(TestDevice.Wait(() => Text(hostOutput).Contains($"reflecting: ring {ring},", StringComparison.Ordinal), SetupTimeout), $"host {h + 1} never served testpmd's {ring} rings\n{Text(hostOutput)}");
                if (h == 0)
                {
                    before = ShowPortStatistics(testpmd).Rx.Packets;
                    testpmd.Send("start");
                }

                var after = before;
                var clock = Stopwatch.StartNew();
                while (after - before < Enough && clock.ElapsedMilliseconds < 15_000)
                {
                    Thread.Sleep(200);
                    after = ShowPortStatistics(testpmd).Rx.Packets;
                }

                moved[h] = after - before;
                _output.WriteLine($"host {h + 1}: testpmd received {moved[h]:N0} frames back within {clock.ElapsedMilliseconds} ms of the host serving");
                Assert.True(moved[h] >= Enough, $"host {h + 1}: only {moved[h]} frames came back\n{Text(hostOutput)}");

                host.Kill(); // SIGKILL: no goodbye on the socket
                Assert.True(host.WaitForExit(10_000), "the killed host did not exit");
                host.Dispose();
                host = null;

                // With no host nothing comes back: two readings agree, and the next host's frames
                // are counted from them (never from a reading taken while a host ran).
                Thread.Sleep(300);
                before = ShowPortStatistics(testpmd).Rx.Packets;
                Assert.Equal(before, ShowPortStatistics(testpmd).Rx.Packets);
            }

            testpmd.Send("stop");
            var (rx, _) = ShowPortStatistics(testpmd);
            Assert.Equal(0, rx.Errors);
        }
        finally
        {
            if (host is { HasExited: false })
            {
                host.Kill(entireProcessTree: true);
                host.WaitForExit(5_000);
            }

            host?.Dispose();
            testpmd.Dispose();
            _output.WriteLine("--- last rings host ---");
            _output.WriteLine(Text(hostOutput));
            Dump(testpmd);
            dir.Delete(true);
        }
    }

    /// <summary>
    /// <c>rings guest</c> against testpmd's vhost back-end in macswap mode: every frame comes back
    /// (MACs swapped) and checks out. DPDK's vhost drops what finds no receive buffer, so this
    /// also shows that the guest never has more frames out than receive buffers posted.
    /// </summary>
    [Theory]
    [InlineData("split", 64, "poll", "on", "off", 200_000)]
    [InlineData("split", 64, "block", "off", "off", 200_000)]
    [InlineData("split", 1514, "block", "on", "on", 100_000)]
    [InlineData("split", 9000, "adaptive", "on", "off", 20_000)]
    [InlineData("packed", 64, "poll", "on", "off", 200_000)]
    [InlineData("packed", 64, "block", "off", "on", 200_000)]
    [InlineData("packed", 9000, "adaptive", "on", "off", 20_000)]
    public void RingsGuestFramesAllComeBackFromTestpmdMacswap(string ring, int frameSize, string wait, string eventIdx, string inOrder, long frames) =>
        MacswapRoundTrip(ring, frameSize, wait, eventIdx, inOrder, frames, "off", vdev => Testpmd.Start(vdev, "macswap", "--total-num-mbufs=4096"));

    /// <summary>
    /// The same with hugepages on both sides: testpmd's vhost back-end in hugepages of the test's
    /// own hugetlbfs mount, <c>rings guest --hugepages on</c> (a sealed hugetlb memfd, which
    /// testpmd maps in 2 MiB pages).
    /// </summary>
    [Theory]
    [InlineData("split")]
    [InlineData("packed")]
    public void RingsGuestOnHugepagesFramesAllComeBackFromTestpmdMacswapOnHugepages(string ring)
    {
        using var mount = HugePageMount.Create(128 + 8);
        MacswapRoundTrip(ring, 64, "poll", "on", "off", 200_000, "on", vdev => Testpmd.StartWithHugepages(mount.Directory, false, vdev, "macswap", "--total-num-mbufs=4096"), "--memory", "8");
    }

    private void MacswapRoundTrip(string ring, int frameSize, string wait, string eventIdx, string inOrder, long frames, string hugePages, Func<string, Testpmd> start, params string[] guestArgs)
    {
        var dir = Directory.CreateTempSubdirectory("rings-interop-");
        var socket = Path.Combine(dir.FullName, "vhost.sock");
        var json = Path.Combine(dir.FullName, "guest.json");
        var testpmd = start($"net_vhost0,iface={socket},queues=1");
        try
        {
            // testpmd flushes its receive queue when the port starts: send only once it forwards.
            Assert.True(testpmd.WaitFor("binding succeeded", SetupTimeout), "testpmd did not create its socket");
            Assert.True(testpmd.WaitFor("Press enter to exit", SetupTimeout), "testpmd did not start forwarding");

            var (exit, output, error) = LoopbackProcessTests.Run(
                ["guest", "--socket", socket, "--frames", Invariant(frames), "--seconds", "45", "--frame-size", Invariant(frameSize),
                "--ring", ring, "--wait", wait, "--event-idx", eventIdx, "--in-order", inOrder, "--json", json, "--hugepages", hugePages, .. guestArgs]);
            _output.WriteLine(output);
            Assert.True(exit == 0, $"rings guest: exit {exit}\n{output}\n{error}");
            var f = JsonDocument.Parse(File.ReadAllText(json)).RootElement;
            Assert.Equal(frames, f.GetProperty("frames_sent").GetInt64());
            Assert.Equal(frames, f.GetProperty("frames_received").GetInt64());
            Assert.Equal(0, f.GetProperty("lost").GetInt64());
            Assert.Equal(0, f.GetProperty("duplicated").GetInt64());
            Assert.Equal(0, f.GetProperty("corrupted").GetInt64());
            Assert.Equal(0, f.GetProperty("drops").GetInt64());
            Assert.Equal(frames * frameSize, f.GetProperty("bytes_received").GetInt64());
            Assert.Equal(ring, f.GetProperty("ring").GetString());
            Assert.Equal(eventIdx == "on", f.GetProperty("event_idx").GetBoolean());
            Assert.Equal(inOrder == "on", f.GetProperty("in_order").GetBoolean());
            Assert.Equal(hugePages == "on" ? (long)SharedMemory.HugePageSize : Environment.SystemPageSize, f.GetProperty("page_size").GetInt64());

            // testpmd's own count: everything it took from our transmit queue went back, none dropped.
            testpmd.Stop();
            var forward = ForwardStatistics(testpmd.Output);
            Assert.Equal(frames, forward.RxPackets);
            Assert.Equal(frames, forward.TxPackets);
            Assert.Equal(0, forward.TxDropped);
        }
        finally
        {
            testpmd.Dispose();
            Dump(testpmd);
            dir.Delete(true);
        }
    }

    /// <summary>What testpmd's <c>show port stats</c> printed for port 0.</summary>
    private readonly record struct PortStatistics(long Packets, long Bytes, long Errors, long Missed);

    /// <summary>What <c>rings host --stats</c> wrote.</summary>
    private readonly record struct HostStatistics(long Frames, long Dropped, long Sleeps);

    /// <summary>
    /// Runs <c>rings host --mode reflect</c> with testpmd's net_virtio_user connected to it
    /// (interactive), lets <paramref name="generate"/> drive testpmd, then drains: rxonly until
    /// testpmd has received all it transmitted. Checks the counts agree on both sides.
    /// </summary>
    private (PortStatistics Rx, PortStatistics Tx, HostStatistics Host) ReflectThroughRingsHost(string ring, string wait, Action<Testpmd> generate, Func<string, string[], Testpmd>? start = null)
    {
        start ??= (vdev, extra) => Testpmd.Start(vdev, "io", extra);
        var dir = Directory.CreateTempSubdirectory("rings-interop-");
        var socket = Path.Combine(dir.FullName, "vhost.sock");
        var statsFile = Path.Combine(dir.FullName, "host.json");
        var hostOutput = new StringBuilder();
        // testpmd without hugepages cannot seal its memory: the host trusts it (docs/tenants.md).
        using var host = StartRings(hostOutput, "host", "--socket", socket, "--mode", "reflect", "--wait", wait, "--once", "--stats", statsFile, "--trust-unsealed");
        Testpmd? testpmd = null;
        try
        {
            Assert.True(TestDevice.Wait(() => File.Exists(socket) || host.HasExited, SetupTimeout) && !host.HasExited, $"rings host did not start\n{Text(hostOutput)}");
            var packed = ring == "packed" ? 1 : 0;
            testpmd = start($"net_virtio_user0,path={socket},queues=1,queue_size=256,packed_vq={packed},server=0", ["-i", "--total-num-mbufs=4096"]);
            Assert.True(TestDevice.Wait(() => Text(hostOutput).Contains("reflecting", StringComparison.Ordinal), SetupTimeout), $"rings host never started its data path\n{Text(hostOutput)}");
            Assert.Contains($"reflecting: ring {ring},", Text(hostOutput), StringComparison.Ordinal);

            generate(testpmd);

            // Drain: rxonly takes back every frame still in the rings.
            testpmd.Send("set fwd rxonly");
            testpmd.Send("start");
            var clock = Stopwatch.StartNew();
            var (rx, tx) = ShowPortStatistics(testpmd);
            while (rx.Packets != tx.Packets && clock.ElapsedMilliseconds < 15_000)
            {
                Thread.Sleep(100);
                (rx, tx) = ShowPortStatistics(testpmd);
            }

            testpmd.Send("stop");
            (rx, tx) = ShowPortStatistics(testpmd);
            testpmd.Stop();

            // --once: the host leaves when testpmd does, having written its figures.
            Assert.True(host.WaitForExit(15_000), $"rings host did not exit after testpmd left\n{Text(hostOutput)}");
            host.WaitForExit();
            Assert.True(host.ExitCode == 0, $"rings host: exit {host.ExitCode}\n{Text(hostOutput)}");
            var stats = JsonDocument.Parse(File.ReadAllText(statsFile)).RootElement;
            var forwarded = new HostStatistics(stats.GetProperty("frames").GetInt64(), stats.GetProperty("dropped").GetInt64(), stats.GetProperty("sleeps").GetInt64());
            _output.WriteLine($"testpmd rx {rx}, tx {tx}; rings host {forwarded}");

            Assert.True(stats.GetProperty("broken").ValueKind == JsonValueKind.Null, $"a ring broke: {stats.GetProperty("broken")}");
            Assert.Equal(0, forwarded.Dropped);
            Assert.Equal(0, rx.Errors);
            Assert.Equal(0, rx.Missed);
            Assert.Equal(0, tx.Errors);
            Assert.True(tx.Packets >= rx.Packets, $"testpmd received {rx.Packets} but sent only {tx.Packets}");

            // Every frame testpmd transmitted came back, exactly the ones our host forwarded.
            Assert.Equal(tx.Packets, rx.Packets);
            Assert.Equal(tx.Bytes, rx.Bytes);
            Assert.Equal(forwarded.Frames, rx.Packets);
            return (rx, tx, forwarded);
        }
        finally
        {
            testpmd?.Dispose();
            if (!host.HasExited)
            {
                host.Kill(entireProcessTree: true);
                host.WaitForExit(5_000);
            }

            _output.WriteLine("--- rings host ---");
            _output.WriteLine(Text(hostOutput));
            if (testpmd is not null)
            {
                Dump(testpmd);
            }

            dir.Delete(true);
        }
    }

    /// <summary>Forwards in <paramref name="mode"/> for about <paramref name="milliseconds"/>, then stops.</summary>
    private static void Forward(Testpmd testpmd, string mode, int milliseconds)
    {
        testpmd.Send($"set fwd {mode}");
        testpmd.Send("start");
        Thread.Sleep(milliseconds);
        testpmd.Send("stop");
    }

    /// <summary>Asks for <c>show port stats 0</c> and parses the block it prints.</summary>
    private static (PortStatistics Rx, PortStatistics Tx) ShowPortStatistics(Testpmd testpmd)
    {
        const string Header = "NIC statistics for port 0";
        var before = testpmd.Occurrences(Header);
        testpmd.Send("show port stats 0");
        string block = string.Empty;
        Assert.True(
            TestDevice.Wait(
                () =>
                {
                    if (testpmd.Occurrences(Header) <= before)
                    {
                        return false;
                    }

                    var output = testpmd.Output;
                    block = output[output.LastIndexOf(Header, StringComparison.Ordinal)..];
                    return block.Contains("Tx-bps", StringComparison.Ordinal);
                },
                SetupTimeout),
            "testpmd did not print its port statistics");

        var rx = Regex.Match(block, @"RX-packets:\s*(\d+)\s+RX-missed:\s*(\d+)\s+RX-bytes:\s*(\d+)\s+RX-errors:\s*(\d+)");
        var tx = Regex.Match(block, @"TX-packets:\s*(\d+)\s+TX-errors:\s*(\d+)\s+TX-bytes:\s*(\d+)");
        Assert.True(rx.Success && tx.Success, $"unexpected statistics block:\n{block}");
        return (
            new PortStatistics(Number(rx, 1), Number(rx, 3), Number(rx, 4), Number(rx, 2)),
            new PortStatistics(Number(tx, 1), Number(tx, 3), Number(tx, 2), 0));
    }

    /// <summary>The last "Forward statistics for port 0" block testpmd printed (when forwarding stopped).</summary>
    internal static (long RxPackets, long TxPackets, long TxDropped) ForwardStatistics(string output)
    {
        const string Header = "Forward statistics for port 0";
        var at = output.LastIndexOf(Header, StringComparison.Ordinal);
        Assert.True(at >= 0, "testpmd printed no forward statistics");
        var block = output[at..];
        var rx = Regex.Match(block, @"RX-packets:\s*(\d+)");
        var tx = Regex.Match(block, @"TX-packets:\s*(\d+)\s+TX-dropped:\s*(\d+)");
        Assert.True(rx.Success && tx.Success, $"unexpected forward statistics:\n{block}");
        return (Number(rx, 1), Number(tx, 1), Number(tx, 2));
    }

    private static long Number(Match m, int group) => long.Parse(m.Groups[group].Value, CultureInfo.InvariantCulture);

    private static string Invariant(long value) => value.ToString(CultureInfo.InvariantCulture);

    private static Process StartRings(StringBuilder output, params string[] args)
    {
        var info = new ProcessStartInfo(LoopbackProcessTests.RingsExecutable()) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args)
        {
            info.ArgumentList.Add(a);
        }

        var process = new Process { StartInfo = info };
        DataReceivedEventHandler append = (_, e) =>
        {
            if (e.Data is not null)
            {
                lock (output)
                {
                    output.AppendLine(e.Data);
                }
            }
        };
        process.OutputDataReceived += append;
        process.ErrorDataReceived += append;
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return process;
    }

    private static string Text(StringBuilder output)
    {
        lock (output)
        {
            return output.ToString();
        }
    }

    private void Dump(Testpmd testpmd)
    {
        _output.WriteLine($"--- testpmd (exit {testpmd.ExitCode}) ---");
        foreach (var line in testpmd.Output.Split('\n').TakeLast(80))
        {
            _output.WriteLine(line);
        }
    }
}
