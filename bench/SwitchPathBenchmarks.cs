using System.Runtime.Versioning;
using BenchmarkDotNet.Attributes;
using Rings.Chains;
using Rings.Linux.Device;
using Rings.Linux.Net;
using Rings.Linux.Plumbing;
using Rings.Linux.Ports;
using Rings.Linux.Runtime;
using Rings.Linux.VhostUser;
using Rings.Testing.Traffic;

namespace Rings.Benchmarks;

/// <summary>
/// The host's work per frame between two guests, on one thread with warm caches: guest A's
/// transmit ring holds a burst, guest B's receive ring as many buffers, and the host moves the
/// burst from one to the other. <c>Patch</c> is what <c>rings host --mode patch</c> runs
/// (<see cref="NetForwarder"/>); <c>Switch</c> and <c>SwitchPatch</c> are one round of
/// <c>rings switch</c>'s worker over two vhost-user ports with the learning switch or the patch
/// processor. The guests' side (adding, publishing, taking used) is on the measured path in all
/// three and costs the same, so the differences are the host's. What it cannot show is the cost
/// of reading memory another CPU has just written, which two processes pay on every frame.
/// </summary>
[MemoryDiagnoser]
[SupportedOSPlatform("linux")]
public class SwitchPathBenchmarks
{
    private const int Size = 256;
    private const int SlotBytes = 2048;
    private const int FrameBytes = 64;
    private const ulong GuestBytes = 2 * Size * SlotBytes + 0x4000;

    private Guest? _a;
    private Guest? _b;
    private Pipeline? _pipeline;

    /// <summary>Frames per burst (also the operations per invocation, so figures are per frame).</summary>
    private const int Burst = 32;

    /// <summary>The host: patch (NetForwarder), switch (learning switch over vhost-user ports), switch-patch (the runtime with the patch processor).</summary>
    [Params("patch", "switch", "switch-patch")]
    public string Host { get; set; } = "patch";

    /// <summary>Builds both guests, the pipeline (for the switch) and runs one burst so everything is warm.</summary>
    [GlobalSetup]
    public void Setup()
    {
        var features = VirtioFeatures.Version1 | VirtioFeatures.EventIndex | VirtioFeatures.NetMergeRxBuffers;
        _a = new Guest(0, features);
        _b = new Guest(1, features);
        if (Host != "patch")
        {
            FrameProcessor processor = Host == "switch" ? new LearningSwitch() : new PatchProcessor();
            _pipeline = new Pipeline([_a.Port, _b.Port], processor, new PipelineOptions { Burst = Burst, HoldMilliseconds = 0 });
            if (processor is LearningSwitch s)
            {
                // The test frames' destination lives behind B, as a reply from it would have taught.
                s.Table.Learn(MacAddress.Read(TestFrame.DestinationMac), 1, Environment.TickCount64);
            }
        }

        Move();
    }

    /// <summary>Frees the guests.</summary>
    [GlobalCleanup]
    public void Cleanup()
    {
        _pipeline?.Dispose();
        _a?.Dispose();
        _b?.Dispose();
    }

    /// <summary>One burst from A's transmit ring into B's receive buffers, and both guests taking back what was used. Reported per frame.</summary>
    /// <returns>Frames B received.</returns>
    [Benchmark(OperationsPerInvoke = Burst)]
    public int Move()
    {
        var a = _a!;
        var b = _b!;
        a.SendBurst(Burst);
        b.PostBurst(Burst);
        if (_pipeline is { } p)
        {
            p.RunOnce();
        }
        else
        {
            NetForwarder.Forward(a.TxDevice, b.RxDevice, Burst, mergeable: true);
        }

        a.ReclaimTransmitted();
        var received = b.TakeReceived();
        if (received != Burst)
        {
            throw new InvalidOperationException($"{received} of {Burst} frames arrived");
        }

        return received;
    }

    /// <summary>One guest's memory, its driver rings (played here) and the device side (a port, or the rings alone for the patch path).</summary>
    private sealed class Guest : IDisposable
    {
        private const ulong TxSlots = 0x4000;
        private const ulong RxSlots = TxSlots + (Size * SlotBytes);
        private readonly VhostMemoryMap _map;
        private readonly ulong _base;
        private readonly IDriverRing _rx;
        private readonly IDriverRing _tx;
        private long _txSlot;
        private long _rxSlot;

        public Guest(int index, VirtioFeatures features)
        {
            var file = SharedMemory.Create(GuestBytes, "rings-bench-guest");
            _base = 0x1000_0000 * (ulong)(index + 1);
            var mapped = new MappedRegion(new MemoryRegionDescription(_base, GuestBytes, _base, 0), file);
            if (VhostMemoryMap.TryBuild([mapped], out var map).IsError || map is null)
            {
                file.Dispose();
                throw new InvalidOperationException("the guest's memory map was refused");
            }

            _map = map;
            var format = RingFormat.Split;
            var memory = map.Physical;
            var rxAreas = format.Layout(Size).At(_base);
            var txAreas = format.Layout(Size).At(_base + 0x2000);
            _rx = format.CreateDriver(memory, rxAreas, Size, features);
            _tx = format.CreateDriver(memory, txAreas, Size, features);
            RxDevice = format.CreateDevice(memory, memory, rxAreas, Size, features, new RingPosition(0));
            TxDevice = format.CreateDevice(memory, memory, txAreas, Size, features, new RingPosition(0));

            // Every transmit slot holds a test frame behind a zero header, written once.
            var frame = new byte[FrameBytes];
            for (var slot = 0; slot < Size; slot++)
            {
                TestFrame.Write(frame, (ulong)slot, 0);
                var bytes = file.Slice(TxSlots + ((ulong)slot * SlotBytes), VirtioNetHeader.Size + FrameBytes);
                bytes[..VirtioNetHeader.Size].Clear();
                frame.CopyTo(bytes[VirtioNetHeader.Size..]);
            }

            Port = new VhostUserPort(PortSpec.Parse($"vhost-user:bench-guest-{index}"));
            var session = new object();
            Port.OnQueueStarted(session, new VhostQueue(0, RxDevice, features, null, null, null, map, enabled: true));
            Port.OnQueueStarted(session, new VhostQueue(1, TxDevice, features, null, null, null, map, enabled: true));
        }

        public VhostUserPort Port { get; }

        public IDeviceRing RxDevice { get; }

        public IDeviceRing TxDevice { get; }

        public void SendBurst(int count)
        {
            for (var i = 0; i < count; i++)
            {
                // Every burst comes back before the next, so slots simply rotate.
                var slot = (ulong)(_txSlot++ % Size);
                if (!_tx.TryAdd(new BufferSegment(_base + TxSlots + (slot * SlotBytes), VirtioNetHeader.Size + FrameBytes), false, out _))
                {
                    throw new InvalidOperationException("transmit ring full");
                }
            }

            _tx.Publish();
        }

        public void PostBurst(int count)
        {
            for (var i = 0; i < count; i++)
            {
                var slot = (ulong)(_rxSlot++ % Size);
                if (!_rx.TryAdd(new BufferSegment(_base + RxSlots + (slot * SlotBytes), SlotBytes), true, out _))
                {
                    throw new InvalidOperationException("receive ring full");
                }
            }

            _rx.Publish();
        }

        public void ReclaimTransmitted()
        {
            while (_tx.TryTakeUsed(out _))
            {
            }
        }

        public int TakeReceived()
        {
            var n = 0;
            while (_rx.TryTakeUsed(out _))
            {
                n++;
            }

            return n;
        }

        public void Dispose()
        {
            Port.Dispose();
            _map.Unmap();
        }
    }
}
