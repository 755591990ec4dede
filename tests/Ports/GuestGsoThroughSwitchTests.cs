using System.Diagnostics;
using System.Text.RegularExpressions;
using Rings.Linux.Driver;
using Rings.Tests.Apps;
using Rings.Tests.Hostile;
using Rings.Tests.Net.Offloads;
using Xunit.Abstractions;

namespace Rings.Tests.Ports;

/// <summary>
/// Two virtio-net drivers on the vhost-user ports of a <c>rings switch</c>: one negotiated CSUM
/// and HOST_TSO4 with its <c>offload=on</c> port and sends 64 KiB-class TCP/IPv4 GSO frames
/// (partial checksum, gso_type TCPV4, 5.1.6.2); the other took no GUEST_TSO4, so the switch cuts
/// every frame into MSS-sized segments for it, each checked field by field and reassembled.
/// </summary>
[Collection(ProcessCollection.Name)]
public sealed class GuestGsoThroughSwitchTests(ITestOutputHelper output)
{
    private const int Frames = 40;
    private const int Mss = 1448;

    [Fact]
    public void GsoFramesFromAGuestArriveSegmentedAtAGuestWithoutGuestTso()
    {
        using var sw = RingsSwitch.StartPorts(["vhost-user:{dir}/sender.sock,offload=on", "vhost-user:{dir}/receiver.sock,offload=on"], "--wait", "block", "--quiet");
        try
        {
            using var receiver = VirtioNetDriver.Connect(new VhostUserFrontendOptions { SocketPath = sw.Sockets[1] });
            var senderOptions = new VhostUserFrontendOptions { SocketPath = sw.Sockets[0] };
            senderOptions.Features |= VirtioFeatures.NetCsum | VirtioFeatures.NetHostTso4;
            using var sender = VirtioNetDriver.Connect(senderOptions, 65_523);
            Assert.Equal(VirtioFeatures.NetCsum | VirtioFeatures.NetHostTso4, sender.Frontend.Features & (VirtioFeatures.NetCsum | VirtioFeatures.NetHostTso4));
            Assert.Equal(VirtioFeatures.None, receiver.Frontend.Features & (VirtioFeatures.NetGuestCsum | VirtioFeatures.NetGuestTso4));

            var random = new Random(12);
            var frames = Enumerable.Range(0, Frames)
                .Select(i => GsoFrames.Build(new GsoSpec(
                    Vlan: false, Ipv6: false, Transport: Transport.Tcp, Ipv4OptionWords: 0, TcpOptionWords: 3, PayloadLength: random.Next(1, 65_000),
                    GsoSize: Mss, IpId: (ushort)(i * 1000), DontFragment: true, Sequence: (uint)random.Next(), TcpFlags: GsoFrames.TcpPsh, Ecn: false,
                    PayloadSeed: i, HeaderLengthHint: 0, Flow: 1)))
                .ToArray();
            var expected = frames.Sum(f => f.ExpectedSegments);
            var received = new List<byte[]>();
            var buffer = new byte[65_600];
            var clock = Stopwatch.StartNew();
            var next = 0;
            var awaited = 0;
            while (received.Count < expected)
            {
                Assert.True(clock.Elapsed < TimeSpan.FromSeconds(30), $"{received.Count} of {expected} segments after {next} of {Frames} frames\n{sw.Output}");
                // One frame at a time: its segments (up to 45) fit the receiver's ring of 256
                // buffers, so none is dropped for want of room while this thread is elsewhere.
                if (next < Frames && received.Count == awaited && sender.TryLeaseTransmit(out var lease))
                {
                    awaited += frames[next].ExpectedSegments;
                    frames[next].Bytes.CopyTo(lease.Frame);
                    Assert.True(sender.Submit(lease, frames[next].Bytes.Length, frames[next].Header));
                    next++;
                }

                sender.Flush();
                while (receiver.TryReceive(buffer, out var length))
                {
                    Assert.InRange(length, 1, buffer.Length);
                    received.Add(buffer.AsSpan(0, length).ToArray());
                }

                receiver.Flush();
                if (received.Count < awaited)
                {
                    receiver.WaitForReceive(10);
                }
            }

            // In order: each frame's segments, then the next frame's.
            var at = 0;
            foreach (var frame in frames)
            {
                SegmentChecker.Check(frame, received.GetRange(at, frame.ExpectedSegments));
                at += frame.ExpectedSegments;
            }

            sw.Signal(15, TimeSpan.FromSeconds(5));
            output.WriteLine(sw.Output);
            Assert.Equal(0, sw.ExitCode);
            Assert.Matches(new Regex($@"receiver\.sock,offload=on\r?\n\s+segmented in software: {Frames} GSO frames"), sw.Output);
            var table = KernelThroughSwitchTests.FinalTable(sw.Output);
            Assert.Equal(Frames, table[0].Rx);
            Assert.Equal(expected, table[1].Tx);
        }
        finally
        {
            output.WriteLine(sw.Output);
        }
    }
}
