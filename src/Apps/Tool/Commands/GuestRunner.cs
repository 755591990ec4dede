using System.Diagnostics;
using System.Runtime.InteropServices;
using Rings.Linux.Diagnostics;
using Rings.Linux.Driver;
using Rings.Linux.Net;
using Rings.Linux.Plumbing;
using Rings.Linux.VhostUser;
using Rings.Testing.Traffic;

namespace Rings.Tool.Commands;

/// <summary>
/// <c>rings guest</c>: the guest side as a process. Owns the shared memory, connects to a vhost-user
/// back-end, negotiates, then sends numbered test frames and checks every one that comes back.
/// With several queue pairs, each pair has a driver, a traffic thread and a flow of its own: the
/// flow's hash picks that pair, as a receive-side-scaling device would steer it.
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

        VhostUserFrontend frontend;
        VirtioNetDriver[] pairs;
        try
        {
            frontend = VhostUserFrontend.Connect(FrontendOptions(o, monitoring.Logger));
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

        try
        {
            pairs = VirtioNetDriver.ForEachPair(frontend, o.FrameSize);
        }
        catch (ArgumentException e)
        {
            frontend.Dispose();
            error.WriteLine($"rings guest: {e.Message}; raise --memory");
            return 2;
        }

        using (frontend)
        using (monitoring.Metrics.AddQueue(o.Socket, () => [.. pairs.SelectMany(p => new[] { PortQueue.Of(PortQueue.Label("receiveq", p.Pair), p.Receive.Ring!), PortQueue.Of(PortQueue.Label("transmitq", p.Pair), p.Transmit.Ring!) })]))
        {
            try
            {
                var features = frontend.Features;
                if (o.GsoSize > 0 && (features & GsoFeatures) != GsoFeatures)
                {
                    error.WriteLine($"rings guest: --gso-size needs a back-end that offers CSUM and HOST_TSO4; {o.Socket} does not (a rings switch port needs offload=on)");
                    return 2;
                }

                var negotiated = $"features 0x{(ulong)features:x}: ring {RingFormat.Of(features)}, EVENT_IDX {OnOff(features, VirtioFeatures.EventIndex)}, IN_ORDER {OnOff(features, VirtioFeatures.InOrder)}, MRG_RXBUF {OnOff(features, VirtioFeatures.NetMergeRxBuffers)}, INDIRECT_DESC {OnOff(features, VirtioFeatures.IndirectDescriptors)}, MQ {OnOff(features, VirtioFeatures.NetMultiqueue)} ({pairs.Length} queue pair(s) of {frontend.BackendQueuePairs})";
                if (frontend.Memory.HugePageFallback is { } fallback)
                {
                    output.WriteLine($"rings guest: {fallback}");
                }

                output.WriteLine($"rings guest: connected to {o.Socket}, {negotiated}");
                return Drive(frontend, pairs, o, output);
            }
            finally
            {
                foreach (var p in pairs)
                {
                    p.Dispose();
                }
            }
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
            HugePages = o.HugePages,
            QueueSize = o.QueueSize,
            QueuePairs = o.Queues,
            Features = VirtioFeatures.Version1 | VirtioFeatures.NetMac | o.Features | o.Ring.Feature | (o.GsoSize > 0 ? GsoFeatures : 0),
            Logger = logger,
        };
        if (!o.Inflight)
        {
            options.ProtocolFeatures &= ~VhostUserProtocolFeatures.InflightShmfd;
        }

        return options;
    }

    private static int Drive(VhostUserFrontend frontend, VirtioNetDriver[] pairs, GuestOptions o, TextWriter output)
    {
        SwitchCommand.TryParseCpus(o.Cpus, out var cpus, out _);

        // By default never more frames out than the receive buffers can take back: a back-end
        // may drop what finds no receive buffer (DPDK's vhost does), ours waits instead.
        // --window means what TrafficOptions.Window means, so it passes through. With several
        // pairs, --frames is shared out among them.
        var generators = new TrafficGenerator[pairs.Length];
        for (var p = 0; p < pairs.Length; p++)
        {
            var frames = o.Frames == 0 ? 0 : (o.Frames / pairs.Length) + (p < o.Frames % pairs.Length ? 1 : 0);
            var flow = pairs.Length == 1 ? TestFrame.DefaultFlow : TestFrame.FlowFor(p, pairs.Length);
            var traffic = new TrafficOptions(o.FrameSize, o.Burst, o.Rate / pairs.Length, TimeSpan.FromSeconds(o.Seconds), o.Wait, frames, o.Window, flow, o.GsoSize, o.Verify);
            var net = pairs[p];
            generators[p] = TrafficGenerator.Create(net.Path, net.Transmit.Kick, net.Receive.Kick, net.Receive.Call, traffic);
        }

        var peerGone = false;
        var figures = new TrafficFigures?[pairs.Length];
        var gcBefore = GC.CollectionCount(0);
        var threads = new Thread[pairs.Length];
        for (var p = 0; p < pairs.Length; p++)
        {
            var pair = p;
            var cpu = cpus.Count > 0 ? cpus[pair % cpus.Count] : -1;

            // Runs on the traffic thread, which owns the pair's rings: a reconnect (one pair only) happens between its bursts.
            threads[p] = new Thread(() =>
            {
                if (cpu >= 0)
                {
                    // A CPU the kernel will not give costs the pinning, not the pair.
                    try
                    {
                        CpuAffinity.PinCurrentThread(cpu);
                    }
                    catch (IOException e)
                    {
                        output.WriteLine($"rings guest: queue pair {pair} runs unpinned: {e.Message}");
                    }
                }

                figures[pair] = generators[pair].Run(TimeSpan.FromSeconds(o.DrainSeconds), () =>
                {
                    if (frontend.IsConnected)
                    {
                        return true;
                    }

                    if (o.ReconnectSeconds > 0 && pairs.Length == 1 && Reconnect(pairs[0], o, output))
                    {
                        return true;
                    }

                    peerGone = true;
                    return false;
                });
            })
            { Name = $"guest traffic {pair}", IsBackground = true };
        }

        // Ctrl-C: stop sending and let the frames in flight come back; a second one stops at once.
        using var signals = StopSignals.Install(_ =>
        {
            foreach (var g in generators)
            {
                g.Stop();
            }
        });

        if (o.StartDelaySeconds > 0)
        {
            // Connected and set up; the first frame waits (a Ctrl-C meanwhile ends the wait: the
            // generators, told to stop, then send nothing).
            SpinWait.SpinUntil(() => generators.Any(g => g.StopRequested), TimeSpan.FromSeconds(o.StartDelaySeconds));
        }

        var clock = Stopwatch.StartNew();
        foreach (var t in threads)
        {
            t.Start();
        }

        long lastSent = 0, lastReceived = 0;
        var last = 0.0;
        var perSecond = new List<(double End, double Mpps)>();
        while (!threads.All(t => t.Join(threads.Length == 1 ? 1000 : 1000 / threads.Length)))
        {
            var now = clock.Elapsed.TotalSeconds;
            if (now - last < 0.95)
            {
                continue;
            }

            long sent = 0, received = 0, lost = 0, bad = 0;
            foreach (var g in generators)
            {
                sent += Volatile.Read(ref g.Sent);
                received += Volatile.Read(ref g.Received);
                lost += Volatile.Read(ref g.Lost);
                bad += Volatile.Read(ref g.Corrupted);
            }

            var rxMpps = (received - lastReceived) / (now - last) / 1e6;
            perSecond.Add((now, rxMpps));
            output.WriteLine($"  {now,6:0.0} s  tx {(sent - lastSent) / (now - last) / 1e6,8:0.000} Mpps  rx {rxMpps,8:0.000} Mpps  lost {lost:N0}  bad {bad:N0}");
            lastSent = sent;
            lastReceived = received;
            last = now;
        }

        if (frontend.Reconnects > 0)
        {
            output.WriteLine($"rings guest: reconnected {frontend.Reconnects} time(s){(frontend.HasInflightRegion ? ", inflight region handed back each time" : string.Empty)}");
        }

        var broken = string.Join("; ", pairs
            .Where(p => p.Transmit.Ring.IsBroken || p.Receive.Ring.IsBroken)
            .Select(p => $"{(pairs.Length > 1 ? $"pair {p.Pair}: " : string.Empty)}tx {p.Transmit.Ring.BrokenReason}, rx {p.Receive.Ring.BrokenReason} (device needs reset)"));
        long kicks = 0, suppressed = 0, packets = 0, bursts = 0, drops = 0;
        foreach (var p in pairs)
        {
            var tx = p.Transmit.Ring.Counters;
            var rx = p.Receive.Ring.Counters;
            kicks += tx.NotificationsSent + rx.NotificationsSent;
            suppressed += tx.NotificationsSuppressed + rx.NotificationsSuppressed;
            packets += tx.Packets;
            bursts += tx.Bursts;
            drops += p.ReceiveErrors;
        }

        var all = figures.Select(f => f!).ToArray();
        var f = all.Length == 1 ? all[0] : TrafficFigures.Combine(all);
        var report = new RunReport
        {
            Ring = RingFormat.Of(frontend.Features).Name,
            EventIdx = (frontend.Features & VirtioFeatures.EventIndex) != 0,
            InOrder = (frontend.Features & VirtioFeatures.InOrder) != 0,
            FrameSize = o.FrameSize,
            Burst = o.Burst,
            Wait = Cli.Text(o.Wait),
            Verify = Cli.Text(o.Verify),
            Rate = o.Rate,
            Traffic = f,
            Kicks = new NotificationFigures(kicks, suppressed),
            CallsReceived = f.Sleeps,
            MeanBurst = bursts > 0 ? (double)packets / bursts : 0,
            Drops = drops,
            Gen0Collections = GC.CollectionCount(0) - gcBefore,
            Broken = broken.Length > 0 ? broken : null,
            Reconnects = frontend.Reconnects,
            Pairs = all,
            SteadyMpps = RunReport.Steady(perSecond, o.Seconds),
            MemoryBytes = frontend.Memory.Length,
            PageBytes = frontend.Memory.PageBytes,
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
