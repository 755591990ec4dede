using Rings.Linux.Device;
using Rings.Linux.Driver;
using Rings.Linux.VhostUser;
using Rings.Tests.Linux;
using Xunit.Abstractions;

namespace Rings.Tests.VhostUser;

[CollectionDefinition(Name)]
public sealed class DpdkCollection
{
    public const string Name = "DPDK testpmd peers (one at a time)";
}

/// <summary>
/// Interop with a real peer: DPDK testpmd (Debian dpdk-dev) as the vhost-user front-end
/// (net_virtio_user) against our back-end, and as the back-end (net_vhost) against our front-end.
/// testpmd forwards in io mode, so a frame sent to its port comes back out of it. testpmd without
/// hugepages cannot seal its memory, so the back-end trusts unsealed memory (docs/tenants.md).
/// </summary>
[Collection(DpdkCollection.Name)]
public class DpdkInteropTests
{
    private const int SetupTimeout = 60_000;
    private readonly ITestOutputHelper _output;

    public DpdkInteropTests(ITestOutputHelper output)
    {
        _output = output;
    }

    [Fact]
    public void DpdkVirtioUserSetsUpSplitRingsOnOurBackendAndFramesGoRound()
    {
        var path = TestPaths.Socket();
        var log = new List<string>();
        using var backend = new VhostUserBackend(new VhostUserBackendOptions { SocketPath = path, Logger = Collect(log), TrustUnsealedMemory = true });
        var device = new TestDevice(backend);
        VhostUserSession? session = null;
        backend.Start();
        using var testpmd = Testpmd.Start($"net_virtio_user0,path={path},queues=1,packed_vq=0,server=0,mac=02:00:00:00:00:01");
        try
        {
            Assert.True(device.WaitForQueues(2, SetupTimeout), "both rings started and enabled");
            var rx = device.Queue(0)!;
            var tx = device.Queue(1)!;
            Assert.Equal(RingFormat.Split, rx.Format);
            Assert.NotEqual(VirtioFeatures.None, rx.Features & VirtioFeatures.Version1);
            Assert.Equal(VirtioFeatures.None, rx.Features & VirtioFeatures.RingPacked);
            Assert.NotNull(tx.Kick);
            _ = session;

            // testpmd flushes its receive ring when the port starts: inject only once it forwards.
            Assert.True(testpmd.WaitFor("Press enter to exit", SetupTimeout), "testpmd started forwarding");

            // Inject frames into testpmd's receive ring; io forwarding sends them back on its transmit ring.
            const int Frames = 32;
            var sent = 0;
            var received = new List<byte[]>();
            var deadline = Environment.TickCount64 + SetupTimeout;
            while (received.Count < Frames && Environment.TickCount64 < deadline)
            {
                if (sent < Frames && device.TryInject(0, TestFrames.Make(sent)))
                {
                    sent++;
                }

                if (device.TryTake(1, out var packet))
                {
                    received.Add(packet[12..]);
                }
                else if (sent == Frames)
                {
                    Thread.Sleep(1);
                }
            }

            Assert.True(Frames == received.Count, $"sent {sent}, received {received.Count}; rx ring {Describe(rx)}; tx ring {Describe(tx)}");
            Assert.Equal(Enumerable.Range(0, Frames), received.Select(f => TestFrames.Sequence(f)).Order());
            Assert.All(received, f => Assert.Equal(TestFrames.Make(TestFrames.Sequence(f)), f));
        }
        finally
        {
            testpmd.Stop();
            Dump(testpmd, log);
        }

        Assert.True(TestDevice.Wait(() => backend.SessionsEnded == 1, 10_000));
        Assert.Equal(device.StartEvents, device.StopEvents);
        Assert.Equal(0, backend.Errors);
    }

    [Fact]
    public void DpdkVirtioUserSetsUpPackedRingsOnOurBackend()
    {
        var path = TestPaths.Socket();
        var log = new List<string>();
        var setups = new List<DeviceRingSetup>();
        using var backend = new VhostUserBackend(new VhostUserBackendOptions
        {
            SocketPath = path,
            Logger = Collect(log),
            TrustUnsealedMemory = true,

            RingFactory = (in DeviceRingSetup s) =>
            {
                lock (setups)
                {
                    setups.Add(s);
                }

                return RingFormat.DeviceFactory(s);
            },
        });
        var device = new TestDevice(backend);
        backend.Start();
        using var testpmd = Testpmd.Start($"net_virtio_user0,path={path},queues=1,packed_vq=1,server=0,mac=02:00:00:00:00:01");
        try
        {
            Assert.True(device.WaitForQueues(2, SetupTimeout), "both rings started and enabled");
            Assert.Equal(RingFormat.Packed, device.Queue(0)!.Format);
            Assert.Equal(RingFormat.Packed, device.Queue(1)!.Format);
            Assert.NotEqual(VirtioFeatures.None, device.Queue(1)!.Features & VirtioFeatures.RingPacked);
            lock (setups)
            {
                Assert.All(setups, s =>
                {
                    // A fresh packed ring: both positions 0, both wrap counters 1 (virtio 1.2 section 2.8.1).
                    Assert.Equal(new RingPosition(0, true, 0, true), s.Position);
                    Assert.True(s.Size > 0);
                });
            }
        }
        finally
        {
            testpmd.Stop();
            Dump(testpmd, log);
        }

        Assert.True(TestDevice.Wait(() => backend.SessionsEnded == 1, 10_000));
        Assert.Equal(0, backend.Errors);
    }

    [Fact]
    public void OurFrontendSetsUpSplitRingsOnDpdkVhostAndFramesGoRoundAcrossARestart()
    {
        var path = TestPaths.Socket();
        var log = new List<string>();
        using var testpmd = Testpmd.Start($"net_vhost0,iface={path},queues=1");
        try
        {
            Assert.True(testpmd.WaitFor("binding succeeded", SetupTimeout), "testpmd created its socket");
            using var frontend = VhostUserFrontend.Connect(new VhostUserFrontendOptions
            {
                SocketPath = path,
                MemoryBytes = 8 << 20,
                QueueSize = 256,
                Logger = Collect(log),
            });
            Assert.True(testpmd.WaitFor("virtio is now ready for processing", SetupTimeout), "testpmd saw the device ready");
            Assert.True(testpmd.WaitFor("Press enter to exit", SetupTimeout), "testpmd started forwarding");
            Assert.NotEqual(VirtioFeatures.None, frontend.Features & VirtioFeatures.Version1);
            Assert.Equal(VirtioFeatures.None, frontend.Features & VirtioFeatures.RingPacked);
            log.Add($"negotiated features 0x{(ulong)frontend.Features:x}, protocol 0x{(ulong)frontend.ProtocolFeatures:x}");

            var driver = new TestDriver(frontend);
            driver.PostReceiveBuffers(0, 64);
            LoopbackTests.Exchange(driver, 0, 40);

            // Stop the device's rings (testpmd reports where each stopped) and restart them from there.
            var positions = frontend.StopQueues();
            Assert.Equal(40, positions[0].AvailIndex);
            Assert.Equal(40, positions[1].AvailIndex);
            frontend.StartQueues();
            Assert.True(testpmd.WaitForCount("Vhost device 0 created", 2, SetupTimeout), "testpmd saw the device ready again");
            LoopbackTests.Exchange(driver, 40, 40);
        }
        finally
        {
            testpmd.Stop();
            Dump(testpmd, log);
        }
    }

    [Fact]
    public void OurFrontendSetsUpPackedRingsOnDpdkVhost()
    {
        var path = TestPaths.Socket();
        var log = new List<string>();
        using var testpmd = Testpmd.Start($"net_vhost0,iface={path},queues=1");
        try
        {
            Assert.True(testpmd.WaitFor("binding succeeded", SetupTimeout), "testpmd created its socket");

            using var frontend = VhostUserFrontend.Connect(new VhostUserFrontendOptions
            {
                SocketPath = path,
                MemoryBytes = 8 << 20,
                QueueSize = 256,
                Features = new VhostUserFrontendOptions().Features | VirtioFeatures.RingPacked,
                Logger = Collect(log),
            });
            Assert.NotEqual(VirtioFeatures.None, frontend.Features & VirtioFeatures.RingPacked);
            Assert.True(testpmd.WaitFor("virtio is now ready for processing", SetupTimeout), "testpmd saw the device ready");

            // A packed base carries the wrap counter: testpmd reports avail position 0, wrap counter 1.
            var position = frontend.StopQueue(1);
            Assert.Equal(new RingPosition(0, true, 0, true), position);
            frontend.StartQueue(1);
        }
        finally
        {
            testpmd.Stop();
            Dump(testpmd, log);
        }
    }

    private static string Describe(VhostQueue q) =>
        $"#{q.Index} size {q.Ring.Size} position {q.Ring.Position} packets {q.Ring.Counters.Packets} broken {q.Ring.BrokenReason} enabled {q.Enabled}";

    private static Diagnostics.ListLogger Collect(List<string> log) => new(log);

    private void Dump(Testpmd testpmd, List<string> log)
    {
        lock (log)
        {
            foreach (var line in log)
            {
                _output.WriteLine(line);
            }
        }

        _output.WriteLine($"--- testpmd (exit {testpmd.ExitCode}) ---");
        foreach (var line in testpmd.Output.Split('\n').Where(l => !l.Contains("statistics", StringComparison.Ordinal)).TakeLast(150))
        {
            _output.WriteLine(line);
        }
    }
}
