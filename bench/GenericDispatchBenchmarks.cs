using System.Runtime.Versioning;
using BenchmarkDotNet.Attributes;
using Rings.Linux.Device;
using Rings.Linux.Driver;
using Rings.Memory;
using Rings.Packed;
using Rings.Split;

namespace Rings.Benchmarks;

/// <summary>
/// Does naming the concrete ring classes as the type arguments of the generic data path buy
/// anything over the interfaces? The guest's <see cref="NetDriverPath{TTx, TRx}"/> and the host's
/// <see cref="NetForwarder.Forward{TTx, TRx}"/> run one thread's reflect loop (send a burst,
/// forward it back, receive it, reclaim) once with <c>IDriverRing</c>/<c>IDeviceRing</c> type
/// arguments, once with the sealed ring classes and once with the ring structs
/// (<see cref="SplitDevice"/>, <see cref="PackedDriver"/> and their kind). The ring classes are
/// reference types, so .NET shares one instantiation between the first two; the structs get code
/// of their own, with the ring calls direct. Reported per frame.
/// </summary>
[MemoryDiagnoser]
[MinColumn]
[MedianColumn]
[SupportedOSPlatform("linux")]
public class GenericDispatchBenchmarks
{
    private const int QueueSize = 256;
    private const int Burst = 32;
    private const int Frames = 1024;
    private const int BufferBytes = 2048;
    private const ulong Guest = 0x100_0000;

    private readonly byte[] _frame = new byte[64];
    private NativeRegion? _region;
    private Loop _interfaces = null!;
    private Loop _classes = null!;
    private Loop _structs = null!;

    /// <summary>The ring format.</summary>
    [Params("split", "packed")]
    public string Ring { get; set; } = "split";

    /// <summary>Lays out two independent loops (rings and buffers) in one region.</summary>
    [GlobalSetup]
    public void Setup()
    {
        var format = RingFormat.Parse(Ring);
        var layout = format.Layout(QueueSize);
        var ringBytes = (ulong)layout.TotalBytes;
        var slabBytes = BufferSlab.BytesFor(QueueSize, BufferBytes);
        var loopBytes = (2 * ringBytes) + (2 * slabBytes);
        _region = new NativeRegion(3 * loopBytes, Guest);
        var memory = new GuestMemory(_region.Region);
        _interfaces = new Loop(format, memory, Guest, ringBytes, slabBytes);
        _classes = new Loop(format, memory, Guest + loopBytes, ringBytes, slabBytes);
        _structs = new Loop(format, memory, Guest + (2 * loopBytes), ringBytes, slabBytes);

        // Every frame must really come back: check once before measuring.
        if (Interfaces() != Frames * _frame.Length || Classes() != Frames * _frame.Length || Structs() != Frames * _frame.Length)
        {
            throw new InvalidOperationException("the loop lost frames");
        }
    }

    /// <summary>Frees the region.</summary>
    [GlobalCleanup]
    public void Cleanup() => _region?.Dispose();

    /// <summary>Interface type arguments, as a caller holding <c>IDriverRing</c>/<c>IDeviceRing</c> gets.</summary>
    /// <returns>Bytes received.</returns>
    [Benchmark(Baseline = true, OperationsPerInvoke = Frames)]
    public long Interfaces()
    {
        var l = _interfaces;
        return Run<IDriverRing, IDriverRing, IDeviceRing, IDeviceRing>(l.InterfacePath, l.TxDevice, l.RxDevice, _frame);
    }

    /// <summary>The sealed ring classes as type arguments, as a type switch over the rings picks.</summary>
    /// <returns>Bytes received.</returns>
    [Benchmark(OperationsPerInvoke = Frames)]
    public long Classes()
    {
        var l = _classes;
        return l.SplitPath is { } split
            ? Run(split, (SplitDeviceRing)l.TxDevice, (SplitDeviceRing)l.RxDevice, _frame)
            : Run(l.PackedPath!, (PackedDeviceRing)l.TxDevice, (PackedDeviceRing)l.RxDevice, _frame);
    }

    /// <summary>The ring structs as type arguments, as the host's worker picks once at setup.</summary>
    /// <returns>Bytes received.</returns>
    [Benchmark(OperationsPerInvoke = Frames)]
    public long Structs()
    {
        var l = _structs;
        return l.SplitStructPath is { } split
            ? Run(split, new SplitDevice((SplitDeviceRing)l.TxDevice), new SplitDevice((SplitDeviceRing)l.RxDevice), _frame)
            : Run(l.PackedStructPath!, new PackedDevice((PackedDeviceRing)l.TxDevice), new PackedDevice((PackedDeviceRing)l.RxDevice), _frame);
    }

    private static long Run<TTxDriver, TRxDriver, TTxDevice, TRxDevice>(NetDriverPath<TTxDriver, TRxDriver> path, TTxDevice tx, TRxDevice rx, byte[] frame)
        where TTxDriver : IDriverRing
        where TRxDriver : IDriverRing
        where TTxDevice : IDeviceRing
        where TRxDevice : IDeviceRing
    {
        long received = 0;
        for (var done = 0; done < Frames; done += Burst)
        {
            path.RefillReceive();
            for (var i = 0; i < Burst; i++)
            {
                path.TrySend(frame);
            }

            path.FlushTransmit();
            NetForwarder.Forward(tx, rx, Burst, mergeable: false);
            rx.CallNeeded();
            tx.CallNeeded();
            while (path.TryReceiveInPlace(out var f))
            {
                received += f.Data.Length;
                path.Release(f);
            }

            path.ReclaimTransmit();
        }

        return received;
    }

    /// <summary>One guest and host pair of queues with their buffers, and the driver path typed both ways.</summary>
    private sealed class Loop
    {
        public Loop(RingFormat format, GuestMemory memory, ulong at, ulong ringBytes, ulong slabBytes)
        {
            var txAreas = format.Layout(QueueSize).At(at);
            var rxAreas = format.Layout(QueueSize).At(at + ringBytes);
            var txDriver = format.CreateDriver(memory, txAreas, QueueSize, VirtioFeatures.None);
            var rxDriver = format.CreateDriver(memory, rxAreas, QueueSize, VirtioFeatures.None);
            TxDevice = format.CreateDevice(memory, memory, txAreas, QueueSize, VirtioFeatures.None, new RingPosition(0));
            RxDevice = format.CreateDevice(memory, memory, rxAreas, QueueSize, VirtioFeatures.None, new RingPosition(0));
            var txSlab = new BufferSlab(memory, at + (2 * ringBytes), QueueSize, BufferBytes);
            var rxSlab = new BufferSlab(memory, at + (2 * ringBytes) + slabBytes, QueueSize, BufferBytes);
            InterfacePath = new NetDriverPath<IDriverRing, IDriverRing>(txDriver, rxDriver, txSlab, rxSlab, mergeable: false);
            if (txDriver is SplitDriverRing splitTx && rxDriver is SplitDriverRing splitRx)
            {
                SplitPath = new NetDriverPath<SplitDriverRing, SplitDriverRing>(splitTx, splitRx, txSlab, rxSlab, mergeable: false);
                SplitStructPath = new NetDriverPath<SplitDriver, SplitDriver>(new SplitDriver(splitTx), new SplitDriver(splitRx), txSlab, rxSlab, mergeable: false);
            }
            else
            {
                PackedPath = new NetDriverPath<PackedDriverRing, PackedDriverRing>((PackedDriverRing)txDriver, (PackedDriverRing)rxDriver, txSlab, rxSlab, mergeable: false);
                PackedStructPath = new NetDriverPath<PackedDriver, PackedDriver>(new PackedDriver((PackedDriverRing)txDriver), new PackedDriver((PackedDriverRing)rxDriver), txSlab, rxSlab, mergeable: false);
            }

            TxDevice.DisableAvailNotifications();
            RxDevice.DisableAvailNotifications();
            txDriver.DisableUsedNotifications();
            rxDriver.DisableUsedNotifications();
        }

        public IDeviceRing TxDevice { get; }

        public IDeviceRing RxDevice { get; }

        public NetDriverPath<IDriverRing, IDriverRing> InterfacePath { get; }

        public NetDriverPath<SplitDriverRing, SplitDriverRing>? SplitPath { get; }

        public NetDriverPath<PackedDriverRing, PackedDriverRing>? PackedPath { get; }

        public NetDriverPath<SplitDriver, SplitDriver>? SplitStructPath { get; }

        public NetDriverPath<PackedDriver, PackedDriver>? PackedStructPath { get; }
    }
}
