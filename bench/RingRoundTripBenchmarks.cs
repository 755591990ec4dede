using BenchmarkDotNet.Attributes;
using Rings.Chains;
using Rings.Memory;
using Rings.Packed;
using Rings.Split;

namespace Rings.Benchmarks;

/// <summary>
/// One packet's full round trip in one thread, split and packed side by side: the driver adds a
/// one-segment buffer, publishes once per burst; the device pops it, returns it (one used entry per
/// buffer, or one per burst under IN_ORDER) and publishes once per burst; the driver takes it back.
/// Reported per packet; on a shared machine read the Min column. <see cref="Split"/> and
/// <see cref="Packed"/> make one ring call per packet; <see cref="SplitBurst"/> and
/// <see cref="PackedBurst"/> one burst call per step (TryAddBurst, PopBurst, PushUsedBurst, TakeUsed);
/// <see cref="SplitSingles"/> and <see cref="PackedSingles"/> the same with PopSingles in place of PopBurst.
/// </summary>
[MemoryDiagnoser]
[MinColumn]
[MedianColumn]
public class RingRoundTripBenchmarks
{
    private const int QueueSize = 256;
    private const int Packets = 1024;

    private NativeRegion? _region;
    private SplitDriverRing _splitDriver = null!;
    private SplitDeviceRing _splitDevice = null!;
    private PackedDriverRing _packedDriver = null!;
    private PackedDeviceRing _packedDevice = null!;
    private BufferSegment _segment;
    private BurstRoundTrip _bursts = null!;

    /// <summary>Buffers per publish.</summary>
    [Params(1, 8, 32, 256)]
    public int Burst { get; set; }

    /// <summary>Whether VIRTIO_F_IN_ORDER is negotiated (the device returns a burst with one used entry).</summary>
    [Params(false, true)]
    public bool InOrder { get; set; }

    /// <summary>Lays out both rings in one region.</summary>
    [GlobalSetup]
    public void Setup()
    {
        var split = RingFormat.Split.Layout(QueueSize);
        var packed = RingFormat.Packed.Layout(QueueSize);
        const ulong guest = 0x10_0000;
        _region = new NativeRegion((ulong)(split.TotalBytes + packed.TotalBytes + 4096), guest);
        var memory = new GuestMemory(_region.Region);
        var features = InOrder ? VirtioFeatures.InOrder : VirtioFeatures.None;
        _splitDriver = new SplitDriverRing(memory, split.At(guest), QueueSize, features);
        _splitDevice = new SplitDeviceRing(memory, split.At(guest), QueueSize, features);
        var packedBase = guest + (ulong)split.TotalBytes;
        _packedDriver = new PackedDriverRing(memory, packed.At(packedBase), QueueSize, features);
        _packedDevice = new PackedDeviceRing(memory, packed.At(packedBase), QueueSize, features);
        _segment = new BufferSegment(packedBase + (ulong)packed.TotalBytes, 64);

        _bursts = new BurstRoundTrip(_segment, Burst);

        // Every packet must really go round: check once before measuring.
        Split();
        Packed();
        Check(1);
        SplitBurst();
        PackedBurst();
        Check(2);
        SplitSingles();
        PackedSingles();
        Check(3);
    }

    private void Check(int rounds)
    {
        const int packets = Packets;
        if (_splitDriver.Counters.Packets != rounds * packets || _packedDriver.Counters.Packets != rounds * packets
            || _splitDevice.Counters.Packets != rounds * packets || _packedDevice.Counters.Packets != rounds * packets
            || _splitDriver.Outstanding != 0 || _packedDriver.Outstanding != 0
            || _splitDriver.IsBroken || _packedDriver.IsBroken || _splitDevice.IsBroken || _packedDevice.IsBroken)
        {
            throw new InvalidOperationException("a round trip lost packets");
        }
    }

    /// <summary>Frees the region.</summary>
    [GlobalCleanup]
    public void Cleanup() => _region?.Dispose();

    /// <summary>The split ring (virtio 1.2 section 2.7).</summary>
    /// <returns>A checksum of the ids taken back.</returns>
    [Benchmark(Baseline = true, OperationsPerInvoke = Packets)]
    public long Split()
    {
        var driver = _splitDriver;
        var device = _splitDevice;
        var segment = _segment;
        var burst = Burst;
        var inOrder = InOrder;
        long sum = 0;
        for (var done = 0; done < Packets; done += burst)
        {
            for (var i = 0; i < burst; i++)
            {
                driver.TryAdd(segment, false, out _);
            }

            driver.Publish();
            if (inOrder)
            {
                ChainToken last = default;
                for (var i = 0; i < burst; i++)
                {
                    device.TryPop(out var chain);
                    last = chain.Token;
                }

                device.PushUsedInOrderBatch(last, 0, burst);
            }
            else
            {
                for (var i = 0; i < burst; i++)
                {
                    device.TryPop(out var chain);
                    device.PushUsed(chain.Token, 0);
                }
            }

            device.PublishUsed();
            for (var i = 0; i < burst; i++)
            {
                driver.TryTakeUsed(out var used);
                sum += used.Id;
            }
        }

        return sum;
    }

    /// <summary>The packed ring (virtio 1.2 section 2.8).</summary>
    /// <returns>A checksum of the ids taken back.</returns>
    [Benchmark(OperationsPerInvoke = Packets)]
    public long Packed()
    {
        var driver = _packedDriver;
        var device = _packedDevice;
        var segment = _segment;
        var burst = Burst;
        var inOrder = InOrder;
        long sum = 0;
        for (var done = 0; done < Packets; done += burst)
        {
            for (var i = 0; i < burst; i++)
            {
                driver.TryAdd(segment, false, out _);
            }

            driver.Publish();
            if (inOrder)
            {
                ChainToken last = default;
                for (var i = 0; i < burst; i++)
                {
                    device.TryPop(out var chain);
                    last = chain.Token;
                }

                device.PushUsedInOrderBatch(last, 0, burst);
            }
            else
            {
                for (var i = 0; i < burst; i++)
                {
                    device.TryPop(out var chain);
                    device.PushUsed(chain.Token, 0);
                }
            }

            device.PublishUsed();
            for (var i = 0; i < burst; i++)
            {
                driver.TryTakeUsed(out var used);
                sum += used.Id;
            }
        }

        return sum;
    }

    /// <summary>The split ring with burst calls.</summary>
    /// <returns>A checksum of the ids taken back.</returns>
    [Benchmark(OperationsPerInvoke = Packets)]
    public long SplitBurst() => _bursts.Run<SplitDriverRing, SplitDeviceRing, BurstPops>(_splitDriver, _splitDevice, InOrder, Packets);

    /// <summary>The packed ring with burst calls.</summary>
    /// <returns>A checksum of the ids taken back.</returns>
    [Benchmark(OperationsPerInvoke = Packets)]
    public long PackedBurst() => _bursts.Run<PackedDriverRing, PackedDeviceRing, BurstPops>(_packedDriver, _packedDevice, InOrder, Packets);

    /// <summary>The split ring with burst calls, the device popping with PopSingles (segment and token per buffer).</summary>
    /// <returns>A checksum of the ids taken back.</returns>
    [Benchmark(OperationsPerInvoke = Packets)]
    public long SplitSingles() => _bursts.Run<SplitDriverRing, SplitDeviceRing, SinglePops>(_splitDriver, _splitDevice, InOrder, Packets);

    /// <summary>The packed ring with burst calls, the device popping with PopSingles.</summary>
    /// <returns>A checksum of the ids taken back.</returns>
    [Benchmark(OperationsPerInvoke = Packets)]
    public long PackedSingles() => _bursts.Run<PackedDriverRing, PackedDeviceRing, SinglePops>(_packedDriver, _packedDevice, InOrder, Packets);
}
