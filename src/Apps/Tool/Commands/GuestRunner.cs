using System.Diagnostics;
using System.Runtime.InteropServices;
using Rings.Linux.Driver;
using Rings.Linux.Net;
using Rings.Testing.Traffic;

namespace Rings.Tool.Commands;

/// <summary>
/// <c>rings guest</c>: the guest side as a process. Owns the shared memory, connects to a vhost-user
/// back-end, negotiates, then sends numbered test frames and checks every one that comes back.
/// </summary>
internal static class GuestRunner
{
    /// <param name="Ring">The ring format to ask for.</param>
    /// <param name="Features">The optional features to ask for (VERSION_1, MAC and the format's bit are added).</param>
    public sealed record Options(
        string Socket,
        RingFormat Ring,
        VirtioFeatures Features,
        int QueueSize,
        int Burst,
        int FrameSize,
        double Rate,
        double Seconds,
        long Frames,
        WaitStrategy Wait,
        string? Json,
        int MemoryMiB,
        double DrainSeconds = 2,
        int Window = 0)
    {
        public string? Validate()
        {
            if (!Ring.IsValidSize(QueueSize))
            {
                return $"--queue-size must be {Ring.SizeRule} for {Ring} rings";
            }

            if (Burst < 1 || Burst > QueueSize)
            {
                return $"--burst must be between 1 and the queue size ({QueueSize})";
            }

            if (FrameSize < TestFrame.MinSize || FrameSize > 65535 - 12)
            {
                return $"--frame-size must be between {TestFrame.MinSize} and 65523";
            }

            if (Rate < 0 || !(Seconds > 0) || Seconds > 86400 || Frames < 0)
            {
                return "--rate must be 0 or more, --seconds between 0 and 86400, --frames 0 or more";
            }

            if (!(DrainSeconds >= 0) || DrainSeconds > 3600)
            {
                return "--drain must be between 0 and 3600 seconds";
            }

            if (Window < -1)
            {
                return "--window must be -1 (no limit), 0 (the receive buffers) or more";
            }

            if (MemoryMiB < 4 || MemoryMiB > 65536)
            {
                return "--memory must be between 4 and 65536 MiB";
            }

            return null;
        }
    }

    public static int Run(Options o, TextWriter output, TextWriter error)
    {
        var frontend = Connect(o, error);
        if (frontend is null)
        {
            return 3;
        }

        using (frontend)
        {
            if (CreateSlabs(frontend, o, error) is not { } slabs)
            {
                return 2;
            }

            var (txSlab, rxSlab, mergeable) = slabs;

            var rx = frontend.Queues[0];
            var tx = frontend.Queues[1];
            // By default never more frames out than the receive buffers can take back: a back-end
            // may drop what finds no receive buffer (DPDK's vhost does), ours waits instead.
            var buffersPerFrame = mergeable ? (VirtioNetHeader.Size + o.FrameSize + rxSlab.BufferSize - 1) / rxSlab.BufferSize : 1;
            var window = o.Window switch
            {
                -1 => 0,
                0 => Math.Max(1, o.QueueSize / buffersPerFrame),
                _ => o.Window,
            };
            var traffic = new TrafficOptions(o.FrameSize, o.Burst, o.Rate, TimeSpan.FromSeconds(o.Seconds), o.Wait, o.Frames, window);
            var f = frontend.Features;
            var negotiated = $"features 0x{(ulong)f:x}: ring {RingFormat.Of(f)}, EVENT_IDX {OnOff(f, VirtioFeatures.EventIndex)}, IN_ORDER {OnOff(f, VirtioFeatures.InOrder)}, MRG_RXBUF {OnOff(f, VirtioFeatures.NetMergeRxBuffers)}, INDIRECT_DESC {OnOff(f, VirtioFeatures.IndirectDescriptors)}";
            output.WriteLine($"rings guest: connected to {o.Socket}, {negotiated}");

            return (tx.Ring, rx.Ring) switch
            {
                (Rings.Split.SplitDriverRing t, Rings.Split.SplitDriverRing r) => Drive(frontend, t, r, tx, rx, txSlab, rxSlab, mergeable, traffic, o, output),
                (Rings.Packed.PackedDriverRing t, Rings.Packed.PackedDriverRing r) => Drive(frontend, t, r, tx, rx, txSlab, rxSlab, mergeable, traffic, o, output),
                (IDriverRing t, IDriverRing r) => Drive(frontend, t, r, tx, rx, txSlab, rxSlab, mergeable, traffic, o, output),
                _ => Fail(error, "the rings were not set up"),
            };
        }
    }

    /// <summary>Creates the memory and connects to the back-end with the options' features; null (after saying why) on failure.</summary>
    internal static VhostUserFrontend? Connect(Options o, TextWriter error)
    {
        try
        {
            return VhostUserFrontend.Connect(new VhostUserFrontendOptions
            {
                SocketPath = o.Socket,
                MemoryBytes = (ulong)o.MemoryMiB << 20,
                QueueSize = o.QueueSize,
                Features = VirtioFeatures.Version1 | VirtioFeatures.NetMac | o.Features | o.Ring.Feature,
            });
        }
        catch (Exception e) when (e is IOException or ArgumentException or InvalidOperationException or System.Net.Sockets.SocketException)
        {
            error.WriteLine($"rings guest: cannot set up with the back-end at {o.Socket}: {e.Message}");
            return null;
        }
    }

    /// <summary>Lays the transmit and receive buffers out after the rings; null (after saying why) when the memory is too small.</summary>
    internal static (BufferSlab Tx, BufferSlab Rx, bool Mergeable)? CreateSlabs(VhostUserFrontend frontend, Options o, TextWriter error)
    {
        var mergeable = (frontend.Features & VirtioFeatures.NetMergeRxBuffers) != 0;
        var txBuffer = Align(VirtioNetHeader.Size + o.FrameSize, 64);
        var rxBuffer = mergeable ? 2048 : Align(VirtioNetHeader.Size + Math.Max(o.FrameSize, 1514), 64);
        var needed = BufferSlab.BytesFor(o.QueueSize, txBuffer) + BufferSlab.BytesFor(o.QueueSize, rxBuffer);
        if (needed > frontend.BufferBytes)
        {
            error.WriteLine($"rings guest: buffers need {needed >> 20} MiB but only {frontend.BufferBytes >> 20} MiB are left after the rings; raise --memory");
            return null;
        }

        var txSlab = new BufferSlab(frontend.GuestMemory, frontend.BufferAddress, o.QueueSize, txBuffer);
        var rxSlab = new BufferSlab(frontend.GuestMemory, frontend.BufferAddress + BufferSlab.BytesFor(o.QueueSize, txBuffer), o.QueueSize, rxBuffer);
        return (txSlab, rxSlab, mergeable);
    }

    private static int Drive<TTx, TRx>(
        VhostUserFrontend frontend, TTx txRing, TRx rxRing, FrontendQueue tx, FrontendQueue rx, BufferSlab txSlab, BufferSlab rxSlab, bool mergeable, TrafficOptions traffic, Options o, TextWriter output)
        where TTx : IDriverRing
        where TRx : IDriverRing
    {
        var path = new NetDriverPath<TTx, TRx>(txRing, rxRing, txSlab, rxSlab, mergeable);
        var generator = new TrafficGenerator<TTx, TRx>(path, tx.Kick, rx.Kick, rx.Call, traffic);
        var peerGone = false;
        TrafficFigures? figures = null;
        var gcBefore = GC.CollectionCount(0);
        var thread = new Thread(() => figures = generator.Run(TimeSpan.FromSeconds(o.DrainSeconds), () =>
        {
            if (!frontend.IsConnected)
            {
                peerGone = true;
                return false;
            }

            return true;
        }))
        { Name = "guest traffic", IsBackground = true };

        // Ctrl-C: stop sending and let the frames in flight come back; a second one stops at once.
        using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, c =>
        {
            c.Cancel = true;
            generator.Stop();
        });
        using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c =>
        {
            c.Cancel = true;
            generator.Stop();
        });

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
            Wait = o.Wait.ToString().ToLowerInvariant(),
            Rate = o.Rate,
            Traffic = f,
            Kicks = new NotificationFigures(txRing.Counters.NotificationsSent + rxRing.Counters.NotificationsSent, txRing.Counters.NotificationsSuppressed + rxRing.Counters.NotificationsSuppressed),
            CallsReceived = f.Sleeps,
            MeanBurst = txRing.Counters.MeanBurst,
            Drops = path.ReceiveErrors,
            Gen0Collections = GC.CollectionCount(0) - gcBefore,
            Broken = broken,
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

    private static int Fail(TextWriter error, string message)
    {
        error.WriteLine($"rings guest: {message}");
        return 1;
    }

    private static string OnOff(VirtioFeatures negotiated, VirtioFeatures feature) => (negotiated & feature) != 0 ? "on" : "off";

    private static int Align(int value, int alignment) => (value + alignment - 1) / alignment * alignment;
}
