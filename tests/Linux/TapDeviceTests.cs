using System.Buffers.Binary;
using System.Diagnostics;
using System.Net;
using System.Runtime.InteropServices;
using System.Text;
using Rings.Linux.Net;
using Rings.Linux.Plumbing;
using Xunit.Abstractions;

namespace Rings.Tests.Linux;

/// <summary>
/// TAP devices against the real kernel, each test in a network namespace of its own (addresses
/// from 169.254.0.0/16, locally administered MACs), removed afterwards even on failure. They need
/// root and fail, never skip, without it.
/// </summary>
public sealed partial class TapDeviceTests(ITestOutputHelper output)
{
    private static readonly byte[] NoOffloads = new byte[TapDevice.HeaderSize];

    /// <summary>
    /// A TAP device created here, moved into a namespace (the descriptor stays valid), answers the
    /// kernel's ARP and ICMP echo from this test: <c>ping -c 5</c> inside the namespace gets all
    /// five replies, received in bursts and transmitted in bursts.
    /// </summary>
    [Fact]
    public void KernelPingsAPeerAnsweringBehindTheTap()
    {
        InNamespace(ns =>
        {
            var (kernelIp, peerIp) = Addresses();
            var kernelMac = RandomLocalMac();
            var peer = new LinkLocalPeer(RandomLocalMac(), peerIp);
            using var tap = TapDevice.Open(DeviceName());
            Assert.True(tap.Created);
            Assert.True(tap.InterfaceIndex > 0);
            Assert.Equal(TapLinkState.Down, tap.LinkState);
            tap.SetMacAddress(kernelMac);
            ns.Note($"opened {tap}, index {tap.InterfaceIndex}, MAC {tap.GetMacAddress()}");

            ns.Log(Command.Run("ip", ["link", "set", tap.Name, "netns", ns.Name])).EnsureSuccess();
            ns.Ip("addr", "add", $"{kernelIp}/24", "dev", tap.Name);
            ns.Ip("link", "set", tap.Name, "up");
            ns.Ip("addr", "show", "dev", tap.Name);

            // Configured by name in this namespace, the device is gone from here; through the
            // descriptor it is still reachable.
            var moved = Assert.Throws<TapException>(() => tap.GetMtu());
            Assert.Equal(TapError.NotInThisNamespace, moved.Error);
            Assert.Equal(kernelMac, tap.GetMacAddress());

            using var ping = ns.Start("ping", "-c", "5", "-i", "0.2", "-W", "2", "-w", "20", peerIp.ToString());
            var received = new TapBurst(32, 2048);
            var replies = new TapBurst(32, 2048);
            var reply = new byte[2048];
            var clock = Stopwatch.StartNew();
            while (!ping.HasExited && clock.Elapsed < TimeSpan.FromSeconds(30))
            {
                Poll.WaitReadable(tap.Handle, 50);
                var n = tap.ReceiveBurst(received);
                replies.Count = 0;
                for (var i = 0; i < n; i++)
                {
                    // No offloads asked for: the kernel hands over complete frames.
                    Assert.True(VirtioNetHeader.TryRead(received.Header(i), out var header));
                    Assert.Equal(VirtioNetHeader.GsoNone, header.GsoType);
                    Assert.Equal(0, header.Flags & VirtioNetHeader.FlagNeedsCsum);
                    var length = peer.Answer(received.Frame(i), reply);
                    if (length > 0)
                    {
                        Assert.True(replies.Add(NoOffloads, reply.AsSpan(0, length)));
                    }
                }

                if (replies.Count > 0)
                {
                    Assert.Equal(replies.Count, tap.TransmitBurst(replies));
                }
            }

            var result = ns.Log(Command.Finish(ping, 5000));
            Assert.Equal(0, result.ExitCode);
            Assert.Contains("5 packets transmitted, 5 received, 0% packet loss", result.Output);
            Assert.Equal(5, peer.EchoReplies);
            Assert.True(peer.ArpReplies >= 1);
            Assert.Equal(TapLinkState.Up, tap.LinkState);
            var counters = tap.Counters;
            Assert.Equal(peer.EchoReplies + peer.ArpReplies, counters.TransmittedFrames);
            Assert.True(counters.ReceivedFrames >= 6, counters.ToString());
            ns.Note($"peer {peer.Mac} at {peerIp}: {peer.ArpReplies} ARP replies, {peer.EchoReplies} echo replies; {counters}");
        });
    }

    /// <summary>
    /// The link's state comes back from the data path: a frame into a down interface is refused
    /// (LinkDown), one into an up interface passes, and a device deleted under the descriptor
    /// (ip link del) reads as Deleted everywhere, with clear errors from configuration and no crash.
    /// The data path allocates nothing per frame.
    /// </summary>
    [Fact]
    public void LinkDownAndDeletionSurfaceAsStatesNotCrashes()
    {
        InNamespace(ns =>
        {
            using var tap = TapDevice.Open(DeviceName());
            ns.Log(Command.Run("ip", ["link", "set", tap.Name, "netns", ns.Name])).EnsureSuccess();

            // An experimental EtherType to the broadcast address: the kernel takes it and drops it.
            var frame = new byte[TapDevice.HeaderSize + 60];
            MacAddress.Broadcast.WriteTo(frame.AsSpan(TapDevice.HeaderSize));
            RandomLocalMac().WriteTo(frame.AsSpan(TapDevice.HeaderSize + 6));
            BinaryPrimitives.WriteUInt16BigEndian(frame.AsSpan(TapDevice.HeaderSize + 12), 0x88B5);

            Assert.Equal(TapStatus.LinkDown, tap.Transmit(frame));
            Assert.Equal(TapLinkState.Down, tap.LinkState);
            ns.Ip("link", "set", tap.Name, "up");
            Assert.Equal(TapStatus.Done, tap.Transmit(frame.AsSpan(0, TapDevice.HeaderSize), frame.AsSpan(TapDevice.HeaderSize)));
            Assert.Equal(TapLinkState.Up, tap.LinkState);
            Assert.Equal(TapStatus.WouldBlock, tap.Receive(new byte[2048], out _));

            // Bursts both ways with nothing allocated.
            var burst = new TapBurst(32, 256);
            for (var i = 0; i < burst.Capacity; i++)
            {
                Assert.True(burst.Add(frame.AsSpan(0, TapDevice.HeaderSize), frame.AsSpan(TapDevice.HeaderSize)));
            }

            var inbound = new TapBurst(32, 2048);
            Assert.Equal(32, tap.TransmitBurst(burst));
            Assert.Equal(0, tap.ReceiveBurst(inbound));
            var (sent, read) = (0, 0);
            var before = GC.GetAllocatedBytesForCurrentThread();
            for (var round = 0; round < 100; round++)
            {
                sent += tap.TransmitBurst(burst);
                read += tap.ReceiveBurst(inbound);
            }

            var allocated = GC.GetAllocatedBytesForCurrentThread() - before;
            Assert.Equal((3200, 0, 0L), (sent, read, allocated));

            ns.Ip("link", "set", tap.Name, "down");
            Assert.Equal(TapStatus.LinkDown, tap.Transmit(frame));
            Assert.Equal(0, tap.TransmitBurst(burst));
            Assert.Equal(TapLinkState.Down, tap.LinkState);
            Assert.Equal(3, tap.Counters.LinkDownErrors);
            ns.Ip("link", "set", tap.Name, "up");
            Assert.Equal(TapStatus.Done, tap.Transmit(frame));
            Assert.Equal(TapLinkState.Up, tap.LinkState);

            ns.Ip("link", "del", tap.Name);
            Assert.Equal(TapStatus.Deleted, tap.Receive(new byte[2048], out _));
            Assert.Equal(TapLinkState.Deleted, tap.LinkState);
            Assert.Equal(TapStatus.Deleted, tap.Transmit(frame));
            Assert.Equal(0, tap.ReceiveBurst(inbound));
            Assert.Equal(0, tap.TransmitBurst(burst));
            Assert.Equal(TapLinkState.Deleted, tap.RefreshLinkState());

            // poll reports the dead descriptor (POLLERR) instead of sleeping on it.
            Assert.True(Poll.WaitReadable(tap.Handle, 1000));
            Assert.Equal(TapError.Deleted, Assert.Throws<TapException>(() => tap.SetOffloads(TapOffloads.Checksum)).Error);
            Assert.Equal(TapError.Deleted, Assert.Throws<TapException>(() => tap.GetMtu()).Error);
            ns.Note($"after deletion: {tap}, {tap.Counters}");
        });
    }

    /// <summary>
    /// MAC, MTU and link up/down through the device, checked against what ip reports; a device
    /// created here goes away on dispose, an existing persistent one is attached to and stays.
    /// </summary>
    [Fact]
    public void ConfiguresTheDeviceAndRemovesOnlyWhatItCreated()
    {
        InNamespace(ns =>
        {
            var name = DeviceName();
            var mac = RandomLocalMac();
            ns.RunInside(() =>
            {
                using var tap = TapDevice.Open(name);
                Assert.True(tap.Created);
                tap.SetMacAddress(mac);
                Assert.Equal(mac, tap.GetMacAddress());
                Assert.Equal(1500, tap.GetMtu());
                tap.SetMtu(1400);
                Assert.Equal(1400, tap.GetMtu());
                Assert.Equal(TapError.Refused, Assert.Throws<TapException>(() => tap.SetMtu(10)).Error);
                tap.SetLinkUp(true);
                Assert.Equal(TapLinkState.Up, tap.RefreshLinkState());
                var shown = ns.Ip("link", "show", name).Output;
                Assert.Contains("mtu 1400", shown);
                Assert.Contains(",UP", shown);
                Assert.Contains($"link/ether {mac}", shown);
                tap.SetLinkUp(false);
                Assert.Equal(TapLinkState.Down, tap.RefreshLinkState());
                Assert.DoesNotContain(",UP", ns.Ip("link", "show", name).Output);

                tap.SetOffloads(TapOffloads.Checksum | TapOffloads.Tso4 | TapOffloads.Tso6);
                Assert.Equal(TapOffloads.Checksum | TapOffloads.Tso4 | TapOffloads.Tso6, tap.Offloads);
                Assert.Throws<ArgumentException>(() => tap.SetOffloads(TapOffloads.Tso4));

                // A single-queue TAP device has one user.
                Assert.Equal(TapError.Busy, Assert.Throws<TapException>(() => TapDevice.Open(name)).Error);

                // With no name the kernel picks one.
                using var unnamed = TapDevice.Open(string.Empty);
                Assert.StartsWith("tap", unnamed.Name);
                Assert.True(unnamed.Created);
                return 0;
            });
            Assert.NotEqual(0, ns.Log(Command.Run("ip", ["-n", ns.Name, "link", "show", name])).ExitCode);

            // A persistent device made beforehand is attached to, and stays.
            var persistent = DeviceName();
            ns.Ip("tuntap", "add", persistent, "mode", "tap");
            ns.RunInside(() =>
            {
                using (var tap = TapDevice.Open(persistent))
                {
                    Assert.False(tap.Created);
                    Assert.Equal(persistent, tap.Name);
                    Assert.Equal(TapError.AlreadyExists, Assert.Throws<TapException>(() => TapDevice.Open(persistent, TapOpenMode.Create)).Error);
                }

                using (var again = TapDevice.Open(persistent, TapOpenMode.Attach))
                {
                    Assert.False(again.Created);
                }

                return 0;
            });
            ns.Ip("link", "show", persistent);
        });
    }

    /// <summary>Every way opening can fail gives a TapException that names the cause, before anything is created.</summary>
    [Fact]
    public void OpeningFailuresSayWhatIsWrong()
    {
        InNamespace(ns =>
        {
            var tun = DeviceName();
            var veth = DeviceName();
            ns.Ip("tuntap", "add", tun, "mode", "tun");
            ns.Ip("link", "add", veth, "type", "veth", "peer", "name", DeviceName());
            var errors = ns.RunInside(() =>
            {
                var found = new List<TapException>
                {
                    Assert.Throws<TapException>(() => TapDevice.Open("rings-name-too-long")),
                    Assert.Throws<TapException>(() => TapDevice.Open("a/b")),
                    Assert.Throws<TapException>(() => TapDevice.Open(string.Empty, TapOpenMode.Attach)),
                    Assert.Throws<TapException>(() => TapDevice.Open(tun)),
                    Assert.Throws<TapException>(() => TapDevice.Open(veth)),
                    Assert.Throws<TapException>(() => TapDevice.Open(DeviceName(), TapOpenMode.Attach)),
                    Assert.Throws<TapException>(() => TapDevice.Open(DeviceName(), cloneDevice: "/dev/net/rings-no-such-device")),
                };

                // Without CAP_NET_ADMIN (dropped from this thread only) creation is refused.
                DropNetAdminFromThisThread();
                found.Add(Assert.Throws<TapException>(() => TapDevice.Open(DeviceName())));
                return found;
            });

            foreach (var e in errors)
            {
                ns.Note($"{e.Error}: {e.Message}");
            }

            Assert.Equal(
                [TapError.InvalidName, TapError.InvalidName, TapError.InvalidName, TapError.WrongDeviceType, TapError.WrongDeviceType, TapError.NotFound, TapError.CloneDeviceMissing, TapError.PermissionDenied],
                errors.Select(e => e.Error));
            Assert.Contains("at most 15", errors[0].Message);
            Assert.Contains("not a TAP device", errors[3].Message);
            Assert.Contains("modprobe tun", errors[6].Message);
            Assert.Contains("CAP_NET_ADMIN", errors[7].Message);

            // Nothing was created by the failures.
            var links = ns.Ip("-o", "link", "show").Output;
            Assert.Equal(4, links.Split('\n', StringSplitOptions.RemoveEmptyEntries).Length);
        });
    }

    /// <summary>
    /// The virtio-net header passes through both ways. With the checksum offload on, the kernel's
    /// UDP arrives with NEEDS_CSUM and a partial checksum that completes to a valid one; without
    /// it, complete. Towards the kernel, a frame with NEEDS_CSUM and only the pseudo-header sum is
    /// accepted as valid (counted as NoPorts), the same frame without the flag is a checksum error.
    /// A frame too large for the buffer is dropped and counted.
    /// </summary>
    [Fact]
    public void TheVirtioNetHeaderAndChecksumOffloadPassThrough()
    {
        InNamespace(ns =>
        {
            var (kernelIp, peerIp) = Addresses();
            var kernelMac = RandomLocalMac();
            var peer = new LinkLocalPeer(RandomLocalMac(), peerIp);
            using var tap = TapDevice.Open(DeviceName());
            tap.SetMacAddress(kernelMac);
            ns.Log(Command.Run("ip", ["link", "set", tap.Name, "netns", ns.Name])).EnsureSuccess();
            ns.Ip("addr", "add", $"{kernelIp}/24", "dev", tap.Name);
            ns.Ip("neigh", "add", peerIp.ToString(), "lladdr", peer.Mac.ToString(), "dev", tap.Name, "nud", "permanent");
            ns.Ip("link", "set", tap.Name, "up");

            // From the kernel, with the checksum offload: partial checksum, completed here.
            tap.SetOffloads(TapOffloads.Checksum);
            // (Ethernet 14 bytes, IPv4 20, then UDP with its checksum at 6.)
            var (header, datagram) = ReceiveUdp(ns, tap, peerIp, 100);
            Assert.Equal(VirtioNetHeader.FlagNeedsCsum, header.Flags & VirtioNetHeader.FlagNeedsCsum);
            Assert.Equal(14 + 20, header.CsumStart);
            Assert.Equal(6, header.CsumOffset);
            Assert.Equal(LinkLocalPeer.PseudoHeaderSum(datagram[14..]), BinaryPrimitives.ReadUInt16BigEndian(datagram.AsSpan(40)));
            var completed = InternetChecksum.Compute(datagram[header.CsumStart..]);
            BinaryPrimitives.WriteUInt16BigEndian(datagram.AsSpan(header.CsumStart + header.CsumOffset), completed);
            Assert.Equal(0xFFFF, InternetChecksum.Sum(datagram[34..], LinkLocalPeer.PseudoHeaderSum(datagram[14..])));

            // Without it: complete.
            tap.SetOffloads(TapOffloads.None);
            (header, datagram) = ReceiveUdp(ns, tap, peerIp, 100);
            Assert.Equal(0, header.Flags & VirtioNetHeader.FlagNeedsCsum);
            Assert.Equal(0xFFFF, InternetChecksum.Sum(datagram[34..], LinkLocalPeer.PseudoHeaderSum(datagram[14..])));

            // Too large for the buffer: dropped and counted, never truncated silently.
            SendUdp(ns, peerIp, 600);
            var small = new byte[TapDevice.HeaderSize + 200];
            Assert.True(WaitFor(() => tap.Receive(small, out _) == TapStatus.Dropped));
            Assert.Equal(1, tap.Counters.ReceiveDropped);

            // Towards the kernel.
            var frame = new byte[256];
            var headerBytes = new byte[TapDevice.HeaderSize];
            var before = UdpCounters(ns);
            var length = peer.BuildUdp(frame, kernelMac, kernelIp, 9, "partial"u8, partialChecksum: true);
            new VirtioNetHeader { Flags = VirtioNetHeader.FlagNeedsCsum, CsumStart = 34, CsumOffset = 6 }.TryWrite(headerBytes);
            Assert.Equal(TapStatus.Done, tap.Transmit(headerBytes, frame.AsSpan(0, length)));
            Assert.True(WaitFor(() => UdpCounters(ns).NoPorts == before.NoPorts + 1));

            Assert.Equal(TapStatus.Done, tap.Transmit(NoOffloads, frame.AsSpan(0, length)));
            Assert.True(WaitFor(() => UdpCounters(ns).CsumErrors == before.CsumErrors + 1));

            length = peer.BuildUdp(frame, kernelMac, kernelIp, 9, "complete"u8, partialChecksum: false);
            Assert.Equal(TapStatus.Done, tap.Transmit(NoOffloads, frame.AsSpan(0, length)));
            Assert.True(WaitFor(() => UdpCounters(ns).NoPorts == before.NoPorts + 2));
            Assert.Equal(before.CsumErrors + 1, UdpCounters(ns).CsumErrors);
            ns.Exec("cat", "/proc/net/snmp");
        });
    }

    /// <summary>Runs a test in a namespace of its own (without IPv6, so the kernel sends nothing unasked), printing its transcript even when it fails.</summary>
    private void InNamespace(Action<NetworkNamespace> test)
    {
        Privileges.RequireNetworkAdmin();
        var transcript = new StringBuilder();
        try
        {
            using var ns = new NetworkNamespace(transcript);
            ns.Exec("sh", "-c", "[ ! -d /proc/sys/net/ipv6 ] || { echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6 && echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6; }").EnsureSuccess();
            test(ns);
        }
        finally
        {
            output.WriteLine(transcript.ToString());
        }
    }

    private static (VirtioNetHeader Header, byte[] Frame) ReceiveUdp(NetworkNamespace ns, TapDevice tap, IPAddress peerIp, int size)
    {
        SendUdp(ns, peerIp, size);
        var header = new byte[TapDevice.HeaderSize];
        var frame = new byte[2048];
        var clock = Stopwatch.StartNew();
        while (clock.Elapsed < TimeSpan.FromSeconds(10))
        {
            Poll.WaitReadable(tap.Handle, 50);
            if (tap.Receive(header, frame, out var length) == TapStatus.Done
                && length >= 42 && BinaryPrimitives.ReadUInt16BigEndian(frame.AsSpan(12)) == 0x0800 && frame[23] == 17)
            {
                Assert.True(VirtioNetHeader.TryRead(header, out var parsed));
                Assert.Equal(14 + 20 + 8 + size, length);
                return (parsed, frame[..length]);
            }
        }

        throw new TimeoutException("no UDP datagram came out of the TAP device");
    }

    /// <summary>Sends a UDP datagram of <paramref name="size"/> bytes from inside the namespace to the peer (bash's /dev/udp).</summary>
    private static void SendUdp(NetworkNamespace ns, IPAddress peerIp, int size) =>
        ns.Exec("bash", "-c", $"printf '%0{size}d' 0 > /dev/udp/{peerIp}/7777").EnsureSuccess();

    private static (long NoPorts, long CsumErrors) UdpCounters(NetworkNamespace ns)
    {
        var lines = Command.Run("ip", ["netns", "exec", ns.Name, "cat", "/proc/net/snmp"]).EnsureSuccess().Output
            .Split('\n').Where(l => l.StartsWith("Udp:", StringComparison.Ordinal)).ToArray();
        var names = lines[0].Split(' ', StringSplitOptions.RemoveEmptyEntries);
        var values = lines[1].Split(' ', StringSplitOptions.RemoveEmptyEntries);
        return (long.Parse(values[Array.IndexOf(names, "NoPorts")]), long.Parse(values[Array.IndexOf(names, "InCsumErrors")]));
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

            Thread.Sleep(20);
        }

        return false;
    }

    private static string DeviceName() => $"rt{Guid.NewGuid():N}"[..12];

    /// <summary>The kernel's side (.1) and the test's peer (.2) on a random link-local /24.</summary>
    private static (IPAddress Kernel, IPAddress Peer) Addresses()
    {
        var subnet = Random.Shared.Next(1, 255);
        return (IPAddress.Parse($"169.254.{subnet}.1"), IPAddress.Parse($"169.254.{subnet}.2"));
    }

    private static MacAddress RandomLocalMac() =>
        MacAddress.FromUInt64(0x0252_0000_0000UL | (ulong)Random.Shared.NextInt64(1, 1L << 32));

    /// <summary>Clears CAP_NET_ADMIN from the effective set of the calling thread only (capabilities are per thread in Linux).</summary>
    private static unsafe void DropNetAdminFromThisThread()
    {
        var header = new CapHeader { Version = 0x20080522 };
        var data = stackalloc CapData[2];
        Assert.Equal(0, CapGet(&header, data));
        data[0].Effective &= ~(1u << 12);
        Assert.Equal(0, CapSet(&header, data));
    }

    [LibraryImport("libc", EntryPoint = "capget", SetLastError = true)]
    private static unsafe partial int CapGet(CapHeader* header, CapData* data);

    [LibraryImport("libc", EntryPoint = "capset", SetLastError = true)]
    private static unsafe partial int CapSet(CapHeader* header, CapData* data);

    [StructLayout(LayoutKind.Sequential)]
    private struct CapHeader
    {
        public uint Version;
        public int Pid;
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct CapData
    {
        public uint Effective;
        public uint Permitted;
        public uint Inheritable;
    }
}
