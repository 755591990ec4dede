using BenchmarkDotNet.Attributes;
using Rings.Chains;

namespace Rings.Benchmarks;

/// <summary>
/// A caller's token on every buffer: one packet's round trip through a split ring of 256 (burst 32)
/// with the id-to-slot table a caller keeps by hand (baseline) against <see cref="DriverQueue{TToken}"/>
/// carrying a value token and a reference token. All three must allocate nothing per packet.
/// </summary>
[MemoryDiagnoser]
[MinColumn]
[MedianColumn]
public class DriverQueueBenchmarks
{
    private const int QueueSize = 256;
    private const int Burst = 32;
    private const int Packets = 1024;
    private const int Slot = 64;

    private RingPair _byHand = null!;
    private RingPair _valueRing = null!;
    private RingPair _referenceRing = null!;
    private DriverQueue<int> _value = null!;
    private DriverQueue<object> _reference = null!;
    private readonly int[] _slotOfId = new int[QueueSize];
    private readonly object[] _objects = new object[QueueSize];

    /// <summary>Makes the three ring pairs.</summary>
    [GlobalSetup]
    public void Setup()
    {
        _byHand = RingPair.Create(RingFormat.Split, QueueSize, QueueSize * Slot);
        _valueRing = RingPair.Create(RingFormat.Split, QueueSize, QueueSize * Slot);
        _referenceRing = RingPair.Create(RingFormat.Split, QueueSize, QueueSize * Slot);
        _value = new DriverQueue<int>(_valueRing.Driver);
        _reference = new DriverQueue<object>(_referenceRing.Driver);
        for (var i = 0; i < QueueSize; i++)
        {
            _objects[i] = new object();
        }

        // Every packet must go round and every token come back: check once before measuring.
        if (ByHand() != Expected() || ValueToken() != Expected() || ReferenceToken() != Packets)
        {
            throw new InvalidOperationException("a round trip lost a packet or a token");
        }
    }

    /// <summary>Frees the memory.</summary>
    [GlobalCleanup]
    public void Cleanup()
    {
        _byHand.Dispose();
        _valueRing.Dispose();
        _referenceRing.Dispose();
    }

    /// <summary>The caller keeps an id-to-slot table itself.</summary>
    /// <returns>The sum of the slots taken back.</returns>
    [Benchmark(Baseline = true, OperationsPerInvoke = Packets)]
    public long ByHand()
    {
        var pair = _byHand;
        long sum = 0;
        for (var done = 0; done < Packets; done += Burst)
        {
            for (var slot = 0; slot < Burst; slot++)
            {
                pair.Driver.TryAdd(new BufferSegment(pair.BufferAddress + (ulong)(slot * Slot), Slot), deviceWritable: false, out var id);
                _slotOfId[id] = slot;
            }

            Device(pair);
            while (pair.Driver.TryTakeUsed(out var used))
            {
                sum += _slotOfId[used.Id];
            }
        }

        return sum;
    }

    /// <summary><see cref="DriverQueue{TToken}"/> with the slot number as its token.</summary>
    /// <returns>The sum of the tokens taken back.</returns>
    [Benchmark(OperationsPerInvoke = Packets)]
    public long ValueToken()
    {
        var pair = _valueRing;
        var queue = _value;
        long sum = 0;
        for (var done = 0; done < Packets; done += Burst)
        {
            for (var slot = 0; slot < Burst; slot++)
            {
                queue.TryAdd(new BufferSegment(pair.BufferAddress + (ulong)(slot * Slot), Slot), deviceWritable: false, slot);
            }

            Device(pair);
            while (queue.TryTakeUsed(out var slot, out _))
            {
                sum += slot;
            }
        }

        return sum;
    }

    /// <summary><see cref="DriverQueue{TToken}"/> with an object as its token.</summary>
    /// <returns>How many tokens came back.</returns>
    [Benchmark(OperationsPerInvoke = Packets)]
    public long ReferenceToken()
    {
        var pair = _referenceRing;
        var queue = _reference;
        long count = 0;
        for (var done = 0; done < Packets; done += Burst)
        {
            for (var slot = 0; slot < Burst; slot++)
            {
                queue.TryAdd(new BufferSegment(pair.BufferAddress + (ulong)(slot * Slot), Slot), deviceWritable: false, _objects[slot]);
            }

            Device(pair);
            while (queue.TryTakeUsed(out var token, out _))
            {
                count += token is null ? 0 : 1;
            }
        }

        return count;
    }

    private static long Expected() => Packets / Burst * (Burst * (Burst - 1) / 2);

    private static void Device(RingPair pair)
    {
        pair.Driver.Publish();
        while (pair.Device.TryPop(out var chain))
        {
            pair.Device.PushUsed(chain.Token, 0);
        }

        pair.Device.PublishUsed();
    }
}
