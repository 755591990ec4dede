using System.Diagnostics;
using System.Runtime.InteropServices;
using Rings.Linux.Diagnostics;
using Rings.Linux.Driver;
using Rings.Linux.Net;
using Rings.Linux.VhostUser;
using Rings.Testing.Traffic;

namespace Rings.Tool.Commands;

/// <summary>
/// <c>rings guest</c>: the guest side as a process. Owns the shared memory, connects to a vhost-user
/// back-end, negotiates, then sends numbered test frames and checks every one that comes back.
/// </summary>
internal static class GuestRunner
{
    public static int Run(GuestOptions o, TextWriter output, TextWriter error)
    {
        using var monitoring = Monitoring.Start("guest", o.Metrics, output, error, o.LogLevel);
        if (monitoring is null)
        {
            return 3;
        }

        VirtioNetDriver net;
        try
        {
            net = VirtioNetDriver.Connect(FrontendOptions(o, monitoring.Logger), o.FrameSize);
        }
        catch (ArgumentException e)
        {
            error.WriteLine($"rings guest: {e.Message}; raise --memory");
            return 2;
        }
        catch (Exception e) when (e is IOException or InvalidOperationException or System.Net.Sockets.SocketException)
        {
            error.WriteLine($"rings guest: cannot set up with the back-end at {o.Socket}: {e.Message}");
            return 3;
        }

        using (net)
        using (monitoring.Metrics.AddQueue(o.Socket, () => [PortQueue.Of("receiveq", net.Receive.Ring!), PortQueue.Of("transmitq", net.Transmit.Ring!)]))
        {
            // By default never more frames out than the receive buffers can take back: a back-end
            // may drop what finds no receive buffer (DPDK's vhost does), ours waits instead.
            // --window means what TrafficOptions.Window means, so it passes through.
            var traffic = new TrafficOptions(o.FrameSize, o.Burst, o.Rate, TimeSpan.FromSeconds(o.Seconds), o.Wait, o.Frames, o.Window, o.GsoSize);
            var features = net.Frontend.Features;
            if (o.GsoSize > 0 && (features & GsoFeatures) != GsoFeatures)
            {
                error.WriteLine($"rings guest: --gso-size needs a back-end that offers CSUM and HOST_TSO4; {o.Socket} does not (a rings switch port needs offload=on)");
                return 2;
            }

            var negotiated = $"features 0x{(ulong)features:x}: ring {RingFormat.Of(features)}, EVENT_IDX {OnOff(features, VirtioFeatures.EventIndex)}, IN_ORDER {OnOff(features, VirtioFeatures.InOrder)}, MRG_RXBUF {OnOff(features, VirtioFeatures.NetMergeRxBuffers)}, INDIRECT_DESC {OnOff(features, VirtioFeatures.IndirectDescriptors)}";
            output.WriteLine($"rings guest: connected to {o.Socket}, {negotiated}");
            return Drive(net, traffic, o, output);
        }
    }

    // What sending GSO frames takes of the device (5.1.6.2): partial checksums and TSO over IPv4.
    private const VirtioFeatures GsoFeatures = VirtioFeatures.NetCsum | VirtioFeatures.NetHostTso4;

    /// <summary>What the front-end asks for: the options' features, VERSION_1, MAC and the ring format's bit (and CSUM and HOST_TSO4 with --gso-size).</summary>
    private static VhostUserFrontendOptions FrontendOptions(GuestOptions o, Microsoft.Extensions.Logging.ILogger logger)
    {
        var options = new VhostUserFrontendOptions
        {
            SocketPath = o.Socket,
            MemoryBytes = (ulong)o.MemoryMiB << 20,
            QueueSize = o.QueueSize,
            Features = VirtioFeatures.Version1 | VirtioFeatures.NetMac | o.Features | o.Ring.Feature | (o.GsoSize > 0 ? GsoFeatures : 0),
            Logger = logger,
        };
        if (!o.Inflight)
        {
            options.ProtocolFeatures &= ~VhostUserProtocolFeatures.InflightShmfd;
        }

        return options;
    }

    private static int Drive(VirtioNetDriver net, TrafficOptions traffic, GuestOptions o, TextWriter output)
    {
        var frontend = net.Frontend;
        var txRing = net.Transmit.Ring!;
        var rxRing = net.Receive.Ring!;
        var generator = new TrafficGenerator<IDriverRing, IDriverRing>(net.Path, net.Transmit.Kick, net.Receive.Kick, net.Receive.Call, traffic);
        var peerGone = false;
        TrafficFigures? figures = null;
        var gcBefore = GC.CollectionCount(0);
        // Runs on the traffic thread, which owns the rings: a reconnect happens between its bursts.
        var thread = new Thread(() => figures = generator.Run(TimeSpan.FromSeconds(o.DrainSeconds), () =>
        {
            if (frontend.IsConnected)
            {
                return true;
            }

            if (o.ReconnectSeconds > 0 && Reconnect(net, o, output))
            {
                return true;
            }

            peerGone = true;
            return false;
        }))
        { Name = "guest traffic", IsBackground = true };

        // Ctrl-C: stop sending and let the frames in flight come back; a second one stops at once.
        using var signals = StopSignals.Install(_ => generator.Stop());

        var clock = Stopwatch.StartNew();
        thread.Start();
        long lastSent = 0, lastReceived = 0;
        var last = 0.0;
        while (!thread.Join(1000))
        {
            var now = clock.Elapsed.TotalSeconds;
            var sent = Volatile.Read(ref generator.Sent);
            var received = Volatile.Read(ref generator.Received);
            output.WriteLine($"  {now,6:0.0} s  tx {(sent - lastSent) / (now - last) / 1e6,8:0.000} Mpps  rx {(received - lastReceived) / (now - last) / 1e6,8:0.000} Mpps  lost {Volatile.Read(ref generator.Lost):N0}  bad {Volatile.Read(ref generator.Corrupted):N0}");
            lastSent = sent;
            lastReceived = received;
            last = now;
        }

        var f = figures!;
        if (frontend.Reconnects > 0)
        {
            output.WriteLine($"rings guest: reconnected {frontend.Reconnects} time(s){(frontend.HasInflightRegion ? ", inflight region handed back each time" : string.Empty)}");
        }

        string? broken = null;
        if (txRing.IsBroken || rxRing.IsBroken)
        {
            broken = $"tx {txRing.BrokenReason}, rx {rxRing.BrokenReason} (device needs reset)";
        }

        var report = new RunReport
        {
            Ring = RingFormat.Of(frontend.Features).Name,
            EventIdx = (frontend.Features & VirtioFeatures.EventIndex) != 0,
            InOrder = (frontend.Features & VirtioFeatures.InOrder) != 0,
            FrameSize = o.FrameSize,
            Burst = o.Burst,
            Wait = Cli.Text(o.Wait),
            Rate = o.Rate,
            Traffic = f,
            Kicks = new NotificationFigures(txRing.Counters.NotificationsSent + rxRing.Counters.NotificationsSent, txRing.Counters.NotificationsSuppressed + rxRing.Counters.NotificationsSuppressed),
            CallsReceived = f.Sleeps,
            MeanBurst = txRing.Counters.MeanBurst,
            Drops = net.ReceiveErrors,
            Gen0Collections = GC.CollectionCount(0) - gcBefore,
            Broken = broken,
            Reconnects = frontend.Reconnects,
        };
        report.PrintTable(output);
        if (o.Json is not null)
        {
            File.WriteAllText(o.Json, report.ToJson());
        }

        if (peerGone)
        {
            output.WriteLine("rings guest: the back-end went away");
            return 4;
        }

        return report.Clean ? 0 : 1;
    }

    /// <summary>Tries to reconnect every 100 ms until the back-end answers or the time runs out; kicks both queues once it does.</summary>
    private static bool Reconnect(VirtioNetDriver net, GuestOptions o, TextWriter output)
    {
        output.WriteLine($"rings guest: the back-end went away; reconnecting for up to {o.ReconnectSeconds:0.#} s");
        var clock = Stopwatch.StartNew();
        string? last = null;
        while (clock.Elapsed.TotalSeconds < o.ReconnectSeconds)
        {
            try
            {
                net.Frontend.Reconnect();

                // A back-end that sleeps until kicked learns at once that buffers wait.
                net.Transmit.Kick.Signal();
                net.Receive.Kick.Signal();
                output.WriteLine($"rings guest: reconnected after {clock.Elapsed.TotalMilliseconds:0} ms");
                return true;
            }
            catch (VhostUserException e)
            {
                last = e.Message;
                Thread.Sleep(100);
            }
        }

        output.WriteLine($"rings guest: no back-end within {o.ReconnectSeconds:0.#} s ({last})");
        return false;
    }

    private static string OnOff(VirtioFeatures negotiated, VirtioFeatures feature) => Cli.OnOff((negotiated & feature) != 0);
}
