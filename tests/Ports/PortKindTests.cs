using System.Buffers.Binary;
using System.Diagnostics;
using System.Net;
using System.Text;
using Rings.Linux.Net;
using Rings.Linux.Ports;
using Rings.Linux.Runtime;
using Rings.Tests.Linux;
using Xunit.Abstractions;

namespace Rings.Tests.Ports;

/// <summary>
/// The tap and virtio-user port kinds in this process, in pipelines with in-memory ports: the
/// kernel through a TAP port (a namespace of the test's own, removed afterwards), and a
/// virtio-user port driving a vhost-user port of another pipeline.
/// </summary>
[Collection(FdCountCollection.Name)]
public sealed class PortKindTests(ITestOutputHelper output)
{
    /// <summary>
    /// The kernel pings a peer that lives in an in-memory port behind a TAP port: the echo requests
    /// arrive complete (no offloads asked of the kernel), the replies go back through the TAP
    /// port, all 20 of them, with nothing allocated per frame. A UDP frame with a partial
    /// checksum (NEEDS_CSUM) passes to the kernel as it is, which completes it. Then the device is
    /// deleted: the port goes down, the pipeline goes on, frames for it are counted link-down.
    /// </summary>
    [Fact]
    public void TheKernelPingsThroughATapPortWhichGoesDownWhenItsDeviceIsDeleted()
    {
        Privileges.RequireNetworkAdmin();
        var transcript = new StringBuilder();
        try
        {
            using var ns = new NetworkNamespace(transcript);
            ns.Exec("sh", "-c", "echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6").EnsureSuccess();
            var name = $"rp{Guid.NewGuid():N}"[..12];
            var subnet = Random.Shared.Next(1, 255);
            var kernelIp = IPAddress.Parse($"169.254.{subnet}.1");
            var peer = new LinkLocalPeer(MacAddress.FromUInt64(0x0252_0000_0000UL | (uint)Random.Shared.Next()), IPAddress.Parse($"169.254.{subnet}.2"));

            using var tap = (TapPort)PortKinds.Create($"tap:{name}");
            using var memory = new InMemoryPort("peer", slots: 64);
            using var pipeline = new Pipeline([tap, memory], new PatchProcessor(), new PipelineOptions { HoldMilliseconds = 0 });
            tap.Open();
            memory.Open();
            Assert.True(tap.Created);
            Assert.Equal(LinkState.Up, tap.Link);
            Assert.Equal(1500, tap.Mtu);
            Assert.NotNull(tap.Mac);
            // offload=off (the default) both ways: the switch hands the kernel complete frames only.
            Assert.Equal(PortOffloads.None, tap.Offloads);

            ns.Log(Command.Run("ip", ["link", "set", name, "netns", ns.Name])).EnsureSuccess();
            ns.Ip("addr", "add", $"{kernelIp}/24", "dev", name);
            ns.Ip("link", "set", name, "up");

            pipeline.RunOnce();
            using var pinger = ns.Start("ping", "-c", "20", "-i", "0.05", "-W", "2", "-w", "30", $"169.254.{subnet}.2");
            var frame = new byte[2048];
            var reply = new byte[2048];
            long allocated = 0;
            var requests = 0;
            var clock = Stopwatch.StartNew();
            while (!pinger.HasExited && clock.Elapsed < TimeSpan.FromSeconds(30))
            {
                // Counted once the path is warm (the first frames each way have been through it).
                var before = GC.GetAllocatedBytesForCurrentThread();
                var work = pipeline.RunOnce();
                allocated += requests > 2 ? GC.GetAllocatedBytesForCurrentThread() - before : 0;
                while (memory.TryTake(frame, out var length, out var header))
                {
                    // No offloads were asked of the kernel: every frame arrives complete.
                    Assert.Equal(0, header.Flags & VirtioNetHeader.FlagNeedsCsum);
                    Assert.Equal(VirtioNetHeader.GsoNone, header.GsoType);
                    var answer = peer.Answer(frame.AsSpan(0, length), reply);
                    if (answer > 0)
                    {
                        requests++;
                        Assert.True(memory.TryInject(reply.AsSpan(0, answer)));
                    }
                }

                if (work == 0)
                {
                    Thread.Sleep(1);
                }
            }

            var result = ns.Log(Command.Finish(pinger, 5000));
            Assert.Contains("20 packets transmitted, 20 received, 0% packet loss", result.Output);
            Assert.Equal(20, peer.EchoReplies);
            Assert.True(tap.Counters.RxFrames >= 21 && tap.Counters.TxFrames >= 21, $"rx {tap.Counters.RxFrames}, tx {tap.Counters.TxFrames}");
            Assert.Equal(0, allocated);

            // A partial checksum goes to the kernel as it is (the TAP device takes NEEDS_CSUM): valid there.
            var before2 = UdpNoPorts(ns);
            var udp = new byte[256];
            var udpLength = peer.BuildUdp(udp, MacAddress.Read(tap.Mac!.GetAddressBytes()), kernelIp, 9, "partial"u8, partialChecksum: true);
            Assert.True(memory.TryInject(udp.AsSpan(0, udpLength), new VirtioNetHeader { Flags = VirtioNetHeader.FlagNeedsCsum, CsumStart = 34, CsumOffset = 6 }));
            pipeline.RunOnce();
            Assert.True(WaitFor(() => UdpNoPorts(ns) == before2 + 1), "the kernel did not take the datagram as valid");

            // Deleted under the port: down (raised on another thread), and the pipeline goes on.
            ns.Ip("link", "del", name);
            clock.Restart();
            while (tap.Link == LinkState.Up && clock.Elapsed < TimeSpan.FromSeconds(5))
            {
                pipeline.RunOnce();
                Thread.Sleep(5);
            }

            Assert.Equal(LinkState.Down, tap.Link);
            Assert.True(tap.Deleted);
            Assert.Contains("deleted", tap.Status, StringComparison.Ordinal);
            var down = tap.Counters.Drops(DropReason.LinkDown);
            Assert.True(memory.TryInject(udp.AsSpan(0, udpLength)));
            pipeline.RunOnce();
            Assert.Equal(down + 1, tap.Counters.Drops(DropReason.LinkDown));
            Span<Rings.Linux.Plumbing.FileDescriptor> fds = new Rings.Linux.Plumbing.FileDescriptor[2];
            Assert.Equal(0, tap.GetWakeupDescriptors(fds));
        }
        finally
        {
            output.WriteLine(transcript.ToString());
        }
    }

    /// <summary>
    /// A TAP port attaches to an existing persistent device and leaves it there when it closes; the
    /// device it creates itself goes away with it.
    /// </summary>
    [Fact]
    public void ATapPortRemovesOnlyTheDeviceItCreated()
    {
        Privileges.RequireNetworkAdmin();
        var persistent = $"rp{Guid.NewGuid():N}"[..12];
        var fresh = $"rp{Guid.NewGuid():N}"[..12];
        Command.Run("ip", ["tuntap", "add", persistent, "mode", "tap"]).EnsureSuccess();
        try
        {
            using (var attached = (TapPort)PortKinds.Create($"tap:{persistent},mtu=1400"))
            using (var created = (TapPort)PortKinds.Create($"tap:{fresh}"))
            {
                attached.Open();
                created.Open();
                Assert.False(attached.Created);
                Assert.True(created.Created);
                Assert.Equal(1400, attached.Mtu);
                Assert.Contains("mtu 1400", Command.Run("ip", ["link", "show", persistent]).Output);
                Assert.Equal(0, Command.Run("ip", ["link", "show", fresh]).ExitCode);
                Assert.Throws<InvalidOperationException>(created.Open);
            }

            Assert.Equal(0, Command.Run("ip", ["link", "show", persistent]).ExitCode);
            Assert.NotEqual(0, Command.Run("ip", ["link", "show", fresh]).ExitCode);
        }
        finally
        {
            Command.Run("ip", ["link", "del", persistent]);
        }
    }

    /// <summary>
    /// A virtio-user port (driver side, this process's memory) against a vhost-user port of
    /// another pipeline: frames of many sizes go both ways, every one intact and in order; the
    /// back-end closing is the virtio-user port's link going down; and a virtio-user port with
    /// no back-end fails to open with a clear error, leaving no descriptor behind.
    /// </summary>
    [Theory]
    [InlineData("split", "off")]
    [InlineData("packed", "off")]
    [InlineData("split", "on")]
    public void AVirtioUserPortDrivesAVhostUserPortBothWays(string ring, string hugePages)
    {
        if (hugePages == "on")
        {
            HugePageMount.RequireAvailable(32); // the port's 64 MiB
        }

        var socket = TestPaths.Socket();
        var fdsBefore = FdCount.Snapshot();
        using (var device = PortKinds.Create($"vhost-user:{socket}"))
        using (var deviceSide = new InMemoryPort("device side", slots: 512))
        using (var driver = (VirtioUserPort)PortKinds.Create($"virtio-user:{socket},ring={ring},queue-size=128,hugepages={hugePages}"))
        using (var driverSide = new InMemoryPort("driver side", slots: 512))
        {
            using var back = new Pipeline([device, deviceSide], new PatchProcessor(), new PipelineOptions { Wait = WaitStrategy.Block });
            using var front = new Pipeline([driver, driverSide], new PatchProcessor(), new PipelineOptions { Wait = WaitStrategy.Adaptive });
            back.Start();
            front.Start();
            device.Open();
            deviceSide.Open();
            driver.Open();
            driverSide.Open();
            Assert.True(WaitFor(() => device.Link == LinkState.Up), "the vhost-user port never saw the front-end");
            Assert.Equal(LinkState.Up, driver.Link);
            Assert.Contains($"{ring} ring of 128", driver.Status, StringComparison.Ordinal);
            Assert.Contains($"memory in {(hugePages == "on" ? 2048 : 4)} KiB pages", driver.Status, StringComparison.Ordinal);

            Exchange(driverSide, deviceSide, 3000);
            Exchange(deviceSide, driverSide, 3000);
            Assert.Equal(0, driver.Counters.TotalDrops);
            Assert.Equal(6000, driver.Counters.RxFrames + driver.Counters.TxFrames);

            // Too long for the port's MTU: dropped and counted there.
            Assert.True(driverSide.TryInject(new byte[driver.MaxFrameLength + 1]));
            Assert.True(WaitFor(() => driver.Counters.Drops(DropReason.OverMtu) == 1));

            device.Dispose();
            Assert.True(WaitFor(() => driver.Link == LinkState.Down), "the back-end left but the link stayed up");
            Assert.Contains("went away", driver.Status, StringComparison.Ordinal);
            back.Stop();
            front.Stop();
        }

        using (var lonely = PortKinds.Create($"virtio-user:{socket}"))
        {
            var e = Assert.Throws<IOException>(lonely.Open);
            Assert.Contains("cannot set up with a vhost-user back-end", e.Message, StringComparison.Ordinal);
            Assert.Equal(LinkState.Down, lonely.Link);
        }

        Assert.False(File.Exists(socket));
        Assert.Empty(FdCount.OpenedSince(fdsBefore));
    }

    /// <summary>
    /// <c>offload=on</c> on both sides of a vhost-user connection: the virtio-user port acks CSUM
    /// and HOST_TSO4/6 (what the device takes) and no GUEST_* feature, so it hands its back-end a
    /// TCP/IPv4 GSO frame as it is, and the back-end's switch, whose other port took no
    /// segmentation, cuts it into checked MSS-sized segments.
    /// </summary>
    [Fact]
    public void AVirtioUserPortWithOffloadsHandsAGsoFrameToItsBackEndWhichSegmentsItForAPortWithout()
    {
        var socket = TestPaths.Socket();
        using var device = (VhostUserPort)PortKinds.Create($"vhost-user:{socket},offload=on");
        using var deviceSide = new InMemoryPort("device side", slots: 512);
        using var driver = (VirtioUserPort)PortKinds.Create($"virtio-user:{socket},offload=on");
        using var driverSide = new InMemoryPort("driver side", slots: 8, slotBytes: FrameBurst.MaxFrameLength) { AcceptedOffloads = PortOffloads.Checksum | PortOffloads.Tso4 };
        using var back = new Pipeline([device, deviceSide], new PatchProcessor(), new PipelineOptions { Wait = WaitStrategy.Block });
        using var front = new Pipeline([driver, driverSide], new PatchProcessor(), new PipelineOptions { Wait = WaitStrategy.Adaptive });
        back.Start();
        front.Start();
        device.Open();
        deviceSide.Open();
        driver.Open();
        driverSide.Open();
        Assert.True(WaitFor(() => device.Link == LinkState.Up), "the vhost-user port never saw the front-end");
        Assert.Equal(PortOffloads.Checksum | PortOffloads.Tso4 | PortOffloads.Tso6 | PortOffloads.Ecn | PortOffloads.Uso, driver.Offloads);
        Assert.Equal(PortOffloads.None, device.Offloads);

        var gso = Rings.Tests.Net.Offloads.GsoFrames.Build(new Rings.Tests.Net.Offloads.GsoSpec(
            Vlan: false, Ipv6: false, Transport: Rings.Tests.Net.Offloads.Transport.Tcp, Ipv4OptionWords: 0, TcpOptionWords: 3, PayloadLength: 60_000,
            GsoSize: 1448, IpId: 1, DontFragment: true, Sequence: 4_000_000_000, TcpFlags: 0x08, Ecn: false, PayloadSeed: 5, HeaderLengthHint: 0, Flow: 1));
        Assert.True(driverSide.TryInject(gso.Bytes, gso.Header));
        var segments = new List<byte[]>();
        var got = new byte[2048];
        Assert.True(
            WaitFor(() =>
            {
                while (deviceSide.TryTake(got, out var n, out _))
                {
                    segments.Add(got.AsSpan(0, n).ToArray());
                }

                return segments.Count >= gso.ExpectedSegments;
            }),
            $"{segments.Count} of {gso.ExpectedSegments} segments arrived");
        Rings.Tests.Net.Offloads.SegmentChecker.Check(gso, segments);
        Assert.Equal(1, driver.Counters.TxFrames);
        Assert.Equal(0, driver.Counters.SoftwareSegmented);
        Assert.Equal(1, deviceSide.Counters.SoftwareSegmented);
        back.Stop();
        front.Stop();
    }

    /// <summary>
    /// The back-end behind a virtio-user port goes away and a new one comes up on the same socket:
    /// the port goes down, connects again by itself, resumes from its own rings and comes up, and
    /// frames pass both ways again.
    /// </summary>
    [Theory]
    [InlineData("split")]
    [InlineData("packed")]
    public void AVirtioUserPortReconnectsWhenItsBackEndComesBack(string ring)
    {
        var socket = TestPaths.Socket();
        using var driver = (VirtioUserPort)PortKinds.Create($"virtio-user:{socket},ring={ring},queue-size=64");
        using var driverSide = new InMemoryPort("driver side", slots: 512);
        using var front = new Pipeline([driver, driverSide], new PatchProcessor(), new PipelineOptions { Wait = WaitStrategy.Adaptive });
        front.Start();
        var device = PortKinds.Create($"vhost-user:{socket}");
        using var deviceSide = new InMemoryPort("device side", slots: 512);
        var back = new Pipeline([device, deviceSide], new PatchProcessor(), new PipelineOptions { Wait = WaitStrategy.Block });
        try
        {
            back.Start();
            device.Open();
            deviceSide.Open();
            driver.Open();
            driverSide.Open();
            Assert.True(WaitFor(() => device.Link == LinkState.Up), "the vhost-user port never saw the front-end");
            Exchange(driverSide, deviceSide, 500);

            back.Stop();
            back.Dispose();
            device.Dispose();
            Assert.True(WaitFor(() => driver.Link == LinkState.Down), "the back-end left but the link stayed up");

            device = PortKinds.Create($"vhost-user:{socket}");
            using var deviceSide2 = new InMemoryPort("device side again", slots: 512);
            back = new Pipeline([device, deviceSide2], new PatchProcessor(), new PipelineOptions { Wait = WaitStrategy.Block });
            back.Start();
            device.Open();
            deviceSide2.Open();
            Assert.True(WaitFor(() => driver.Link == LinkState.Up && device.Link == LinkState.Up), $"the port did not come back: {driver.Status}");
            Assert.Contains("connected again (1 reconnect(s)), inflight region handed back", driver.Status, StringComparison.Ordinal);
            Exchange(driverSide, deviceSide2, 500);
            Exchange(deviceSide2, driverSide, 500);
            Assert.Equal(0, driver.Counters.TotalDrops);
        }
        finally
        {
            front.Stop();
            back.Stop();
            back.Dispose();
            device.Dispose();
        }
    }

    /// <summary>
    /// A vhost-user-client port connects to a front-end that listens (as QEMU with server=on does),
    /// retrying until it is there; frames pass both ways once it attached.
    /// </summary>
    [Fact]
    public void AVhostUserClientPortConnectsToAFrontEndThatListens()
    {
        var socket = TestPaths.Socket();
        using var device = (VhostUserClientPort)PortKinds.Create($"vhost-user-client:{socket}");
        Assert.True(device.Connect);
        Assert.Contains("vhost-user-client", PortKinds.Names);
        using var deviceSide = new InMemoryPort("device side", slots: 512);
        using var back = new Pipeline([device, deviceSide], new PatchProcessor(), new PipelineOptions { Wait = WaitStrategy.Block });
        back.Start();
        device.Open();
        deviceSide.Open();
        Assert.Equal("connecting to a front-end", device.Status);

        using var listener = Rings.Linux.Plumbing.UnixSocket.Listen(socket);
        using var connection = listener.Accept(5000) ?? throw new TimeoutException("the port did not connect");
        using var channel = new Rings.Linux.VhostUser.VhostUserChannel(connection);
        using var net = new Rings.Linux.Driver.VirtioNetDriver(Rings.Linux.Driver.VhostUserFrontend.Connect(channel, new Rings.Linux.Driver.VhostUserFrontendOptions { QueueSize = 64 }));
        Assert.True(WaitFor(() => device.Link == LinkState.Up), "the port never attached");

        var frame = new byte[1514];
        var length = Fill(frame, 7);
        Assert.True(net.TrySend(frame.AsSpan(0, length)));
        net.Flush();
        var got = new byte[2048];
        Assert.True(WaitFor(() => deviceSide.TryTake(got, out var n, out _) && n == length), "the frame did not arrive");
        Assert.True(deviceSide.TryInject(frame.AsSpan(0, length)));
        var back2 = 0;
        Assert.True(WaitFor(() => net.TryReceive(got, out back2)), "the frame did not come back");
        Assert.Equal(length, back2);
        back.Stop();
    }

    /// <summary>Sends <paramref name="count"/> numbered frames of varying sizes in at <paramref name="from"/> and takes them at <paramref name="to"/>, intact and in order.</summary>
    private static void Exchange(InMemoryPort from, InMemoryPort to, int count)
    {
        var frame = new byte[1514];
        var received = new byte[2048];
        var next = 0;
        var sent = 0;
        var clock = Stopwatch.StartNew();
        while (next < count)
        {
            Assert.True(clock.Elapsed < TimeSpan.FromSeconds(30), $"{next} of {count} frames arrived ({sent} sent)");
            while (sent < count && sent - next < 200)
            {
                var length = Fill(frame, sent);
                if (!from.TryInject(frame.AsSpan(0, length)))
                {
                    break;
                }

                sent++;
            }

            while (to.TryTake(received, out var length, out _))
            {
                var expected = Fill(frame, next);
                Assert.Equal(expected, length);
                Assert.True(frame.AsSpan(0, expected).SequenceEqual(received.AsSpan(0, length)), $"frame {next} differs");
                next++;
            }

            Thread.Sleep(0);
        }
    }

    private static int Fill(byte[] frame, int sequence)
    {
        var length = 60 + (sequence * 37 % 1455);
        MacAddress.FromUInt64(0x0252_0000_0002UL).WriteTo(frame);
        MacAddress.FromUInt64(0x0252_0000_0001UL).WriteTo(frame.AsSpan(6));
        BinaryPrimitives.WriteUInt16BigEndian(frame.AsSpan(12), 0x88B5);
        BinaryPrimitives.WriteInt32LittleEndian(frame.AsSpan(14), sequence);
        for (var i = 18; i < length; i++)
        {
            frame[i] = (byte)(sequence + i);
        }

        return length;
    }

    private static long UdpNoPorts(NetworkNamespace ns)
    {
        var lines = Command.Run("ip", ["netns", "exec", ns.Name, "cat", "/proc/net/snmp"]).EnsureSuccess().Output
            .Split('\n').Where(l => l.StartsWith("Udp:", StringComparison.Ordinal)).ToArray();
        var names = lines[0].Split(' ', StringSplitOptions.RemoveEmptyEntries);
        var values = lines[1].Split(' ', StringSplitOptions.RemoveEmptyEntries);
        return long.Parse(values[Array.IndexOf(names, "NoPorts")], System.Globalization.CultureInfo.InvariantCulture);
    }

    private static bool WaitFor(Func<bool> condition)
    {
        var clock = Stopwatch.StartNew();
        while (clock.Elapsed < TimeSpan.FromSeconds(10))
        {
            if (condition())
            {
                return true;
            }

            Thread.Sleep(10);
        }

        return false;
    }
}
