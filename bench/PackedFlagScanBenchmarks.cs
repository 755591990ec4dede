using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using BenchmarkDotNet.Attributes;
using Rings.Chains;
using Rings.Memory;
using Rings.Packed;

namespace Rings.Benchmarks;

/// <summary>
/// Is it worth checking a cache line of packed descriptors' flags at once? A ring of 256
/// descriptors made available by the real driver is scanned for how many are available from
/// position 0: one acquire read per descriptor (what the device's pop does) against 4 descriptors
/// (one 64-byte line) per step with Vector256 or Vector512. Reported per descriptor.
/// </summary>
[MemoryDiagnoser]
[MinColumn]
[MedianColumn]
public unsafe class PackedFlagScanBenchmarks
{
    private const int QueueSize = 256;
    private const ushort AvailUsed = 0x8080;
    private const ushort AvailBitsLap0 = 0x0080; // AVAIL set, USED clear: available with wrap counter 1

    private NativeRegion? _region;
    private byte* _ring;

    /// <summary>Fills the ring through the driver.</summary>
    [GlobalSetup]
    public void Setup()
    {
        var layout = RingFormat.Packed.Layout(QueueSize);
        _region = new NativeRegion((ulong)layout.TotalBytes + 4096, 0x1000);
        var memory = new GuestMemory(_region.Region);
        var driver = new PackedDriverRing(memory, layout.At(0x1000), QueueSize, VirtioFeatures.None);
        for (var i = 0; i < QueueSize; i++)
        {
            driver.TryAdd(new BufferSegment(0x1000 + (ulong)layout.TotalBytes, 64), false, out _);
        }

        driver.Publish();
        _ring = (byte*)_region.HostAddress;
        if (Scalar() != QueueSize || (Vector256.IsHardwareAccelerated && Vector256Lines() != QueueSize)
            || (Vector512.IsHardwareAccelerated && Vector512Lines() != QueueSize))
        {
            throw new InvalidOperationException("scans disagree");
        }
    }

    /// <summary>Frees the region.</summary>
    [GlobalCleanup]
    public void Cleanup() => _region?.Dispose();

    /// <summary>One acquire read and compare per descriptor.</summary>
    /// <returns>Descriptors available.</returns>
    [Benchmark(Baseline = true, OperationsPerInvoke = QueueSize)]
    public int Scalar()
    {
        var ring = _ring;
        var n = 0;
        while (n < QueueSize && (Volatile.Read(ref *(ushort*)(ring + (n * 16) + 14)) & AvailUsed) == AvailBitsLap0)
        {
            n++;
        }

        return n;
    }

    /// <summary>Two 32-byte loads per line of 4 descriptors; flags are ushort lanes 7 and 15 of each.</summary>
    /// <returns>Descriptors available.</returns>
    [Benchmark(OperationsPerInvoke = QueueSize)]
    public int Vector256Lines()
    {
        if (!Vector256.IsHardwareAccelerated)
        {
            return Scalar();
        }

        var mask = Vector256.Create((ushort)0, 0, 0, 0, 0, 0, 0, AvailUsed, 0, 0, 0, 0, 0, 0, 0, AvailUsed);
        var want = Vector256.Create((ushort)0, 0, 0, 0, 0, 0, 0, AvailBitsLap0, 0, 0, 0, 0, 0, 0, 0, AvailBitsLap0);
        var ring = _ring;
        var n = 0;
        while (n < QueueSize)
        {
            var lo = Vector256.Equals(Vector256.Load((ushort*)(ring + (n * 16))) & mask, want).ExtractMostSignificantBits();
            var hi = Vector256.Equals(Vector256.Load((ushort*)(ring + (n * 16) + 32)) & mask, want).ExtractMostSignificantBits();
            var bits = ((lo >> 7) & 1) | ((lo >> 14) & 2) | ((hi >> 5) & 4) | ((hi >> 12) & 8);
            if (bits != 0xF)
            {
                return n + BitCount(bits);
            }

            n += 4;
        }

        return n;
    }

    /// <summary>One 64-byte load per line of 4 descriptors; flags are ushort lanes 7, 15, 23 and 31.</summary>
    /// <returns>Descriptors available.</returns>
    [Benchmark(OperationsPerInvoke = QueueSize)]
    public int Vector512Lines()
    {
        if (!Vector512.IsHardwareAccelerated)
        {
            return Scalar();
        }

        var lane = Vector512.Create((ushort)0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1);
        var mask = lane * AvailUsed;
        var want = lane * AvailBitsLap0;
        var ring = _ring;
        var n = 0;
        while (n < QueueSize)
        {
            var m = Vector512.Equals(Vector512.Load((ushort*)(ring + (n * 16))) & mask, want).ExtractMostSignificantBits();
            var bits = (uint)(((m >> 7) & 1) | ((m >> 14) & 2) | ((m >> 21) & 4) | ((m >> 28) & 8));
            if (bits != 0xF)
            {
                return n + BitCount(bits);
            }

            n += 4;
        }

        return n;
    }

    /// <summary>Available descriptors at the start of a 4-bit line mask (trailing ones).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int BitCount(uint bits) => System.Numerics.BitOperations.TrailingZeroCount(~bits);
}
