using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.RegularExpressions;
using Rings.Linux.Driver;
using Rings.Linux.Net;
using Rings.Tests.Hostile;
using Rings.Tests.Linux;
using Rings.Tests.Ports;

namespace Rings.Tests.Apps;

/// <summary>
/// The runtime example (examples/MacCounter) between the kernel and a virtio-net driver: its TAP
/// device moved into a network namespace this test creates (169.254.0.0/16, IPv6 off), its
/// vhost-user socket driven by a <see cref="VirtioNetDriver"/> here. Frames each way are counted
/// per source address, and the EtherType it drops never reaches the kernel.
/// </summary>
[Collection(ProcessCollection.Name)]
public sealed class MacCounterExampleTests
{
    private const int Passed = 40;
    private const int Blocked = 25;
    private const int FromKernel = 20;
    private static readonly MacAddress Sender = MacAddress.Parse("02:00:00:00:00:01");
    private static readonly MacAddress IPv6Sender = MacAddress.Parse("02:00:00:00:00:02");

    [Fact]
    public void The_example_counts_traffic_per_source_address_and_drops_one_ethertype()
    {
        Privileges.RequireNetworkAdmin();
        KernelHosts.RequireTools("ip");
        var transcript = new StringBuilder();
        var dir = Directory.CreateTempSubdirectory("rings-maccounter-");
        CollectedProcess? example = null;
        try
        {
            using var hosts = new KernelHosts(transcript, 1);
            var host = hosts[0];
            var socket = Path.Combine(dir.FullName, "vm.sock");
            example = CollectedProcess.Start(ExampleTests.Executable("MacCounter"), [host.Device, socket, "86dd", "120"]);
            Wait(() => File.Exists(socket) && example.Output.Contains("MacCounter: ", StringComparison.Ordinal), () => $"the example did not start:\n{example.Output}");
            hosts.Attach(host);

            // The kernel's side: UDP to an address behind the vhost-user port, its MAC a static
            // neighbour, so the kernel sends exactly these frames and no ARP.
            var peer = IPAddress.Parse(host.Address.ToString()[..host.Address.ToString().LastIndexOf('.')] + ".200");
            host.Namespace.Ip("neigh", "add", peer.ToString(), "lladdr", Sender.ToString(), "dev", host.Device);
            var tapMac = MacAddress.Parse(Command.Run("ip", ["netns", "exec", host.Namespace.Name, "cat", $"/sys/class/net/{host.Device}/address"]).EnsureSuccess().Output.Trim());
            var kernelReceivedBefore = host.Statistic("rx_packets");

            using var net = VirtioNetDriver.Connect(new VhostUserFrontendOptions { SocketPath = socket });

            // The guest's side: frames the example lets through (a local experimental EtherType)
            // and IPv6 frames it drops.
            var frame = new byte[64];
            tapMac.WriteTo(frame);
            for (var i = 0; i < Passed + Blocked; i++)
            {
                var blocked = i >= Passed;
                (blocked ? IPv6Sender : Sender).WriteTo(frame.AsSpan(6));
                frame[12] = blocked ? (byte)0x86 : (byte)0x88;
                frame[13] = blocked ? (byte)0xDD : (byte)0xB5;
                Wait(() => net.TrySend(frame), () => "no transmit buffer came free");
                net.Flush();
            }

            Wait(() => host.Statistic("rx_packets") - kernelReceivedBefore >= Passed, () => $"the kernel did not get {Passed} frames:\n{example.Output}");

            host.Namespace.RunInside(() =>
            {
                using var udp = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
                for (var i = 0; i < FromKernel; i++)
                {
                    udp.SendTo(Encoding.ASCII.GetBytes($"datagram {i}"), new IPEndPoint(peer, 9));
                }

                return 0;
            });

            var fromKernel = 0;
            var received = new byte[2048];
            Wait(
                () =>
                {
                    while (net.TryReceive(received, out var length))
                    {
                        fromKernel += MacAddress.Read(received.AsSpan(6)) == tapMac && received[12] == 0x08 && received[13] == 0x00 && length >= 42 ? 1 : 0;
                    }

                    net.Flush();
                    return fromKernel >= FromKernel;
                },
                () => $"the driver got {fromKernel} of the kernel's {FromKernel} datagrams");

            // What reached the kernel, read while the device exists (it goes with the example).
            var kernelReceived = host.Statistic("rx_packets") - kernelReceivedBefore;

            // Stop the example; it prints its counts.
            example.Signal(15, TimeSpan.FromSeconds(10));
            var text = example.Output;
            Assert.True(example.ExitCode == 0, text);
            Assert.Contains($"dropped {Blocked} frame(s) of EtherType 0x86dd", text, StringComparison.Ordinal);
            Assert.Equal(Passed, FramesFrom(text, Sender));
            Assert.Equal(Blocked, FramesFrom(text, IPv6Sender));
            Assert.Equal(FromKernel, FramesFrom(text, tapMac));
            Assert.Equal(Passed, kernelReceived);
        }
        catch (Exception e) when (e is not Xunit.Sdk.XunitException)
        {
            throw new InvalidOperationException($"{e.Message}\nexample:\n{example?.Output}\ntranscript:\n{transcript}", e);
        }
        finally
        {
            example?.Dispose();
            dir.Delete(recursive: true);
        }
    }

    private static long FramesFrom(string output, MacAddress source)
    {
        var match = Regex.Match(output, $@"^{Regex.Escape(source.ToString())}\s+(\d+) frames", RegexOptions.Multiline);
        Assert.True(match.Success, $"no line for {source}:\n{output}");
        return long.Parse(match.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
    }

    /// <summary>Waits up to 20 s for <paramref name="done"/>; the failure message is made when it fails, so it shows the state then.</summary>
    private static void Wait(Func<bool> done, Func<string> failure)
    {
        var clock = Stopwatch.StartNew();
        while (!done())
        {
            if (clock.Elapsed > TimeSpan.FromSeconds(20))
            {
                Assert.Fail(failure());
            }

            Thread.Sleep(10);
        }
    }
}
