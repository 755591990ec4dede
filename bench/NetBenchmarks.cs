using System.Runtime.Versioning;
using BenchmarkDotNet.Attributes;
using Rings.Linux.Driver;
using Rings.Linux.Net;
using Rings.Memory;
using Rings.Testing.Traffic;

namespace Rings.Benchmarks;

/// <summary>The per-frame helpers of the net path: checksum, header codec, test frames, slab.</summary>
[MemoryDiagnoser]
[SupportedOSPlatform("linux")]
public class NetBenchmarks
{
    private byte[] _frame = [];
    private NativeRegion? _region;
    private BufferSlab? _slab;

    /// <summary>Frame size in bytes.</summary>
    [Params(64, 1514, 9000)]
    public int FrameSize { get; set; }

    /// <summary>Allocates the frame and slab.</summary>
    [GlobalSetup]
    public void Setup()
    {
        _frame = new byte[FrameSize];
        TestFrame.Write(_frame, 1, 2);
        _region = new NativeRegion(1 << 20, 0x1000_0000);
        _slab = new BufferSlab(new GuestMemory(_region.Region), 0x1000_0000, 256, 2048);
    }

    /// <summary>Frees the slab memory.</summary>
    [GlobalCleanup]
    public void Cleanup() => _region?.Dispose();

    /// <summary>Internet checksum of the whole frame (vectorised).</summary>
    [Benchmark]
    public ushort Checksum() => InternetChecksum.Sum(_frame);

    /// <summary>Writes a test frame (fill and checksum).</summary>
    [Benchmark]
    public void WriteTestFrame() => TestFrame.Write(_frame, 7, 9);

    /// <summary>Verifies a test frame.</summary>
    [Benchmark]
    public bool VerifyTestFrame() => TestFrame.TryRead(_frame, out _, out _);

    /// <summary>Writes and reads a virtio_net_hdr_v1.</summary>
    [Benchmark]
    public ushort HeaderRoundTrip()
    {
        new VirtioNetHeader { NumBuffers = 3 }.TryWrite(_frame);
        VirtioNetHeader.TryRead(_frame, out var h);
        return h.NumBuffers;
    }

    /// <summary>Takes and returns a slab buffer and touches its span.</summary>
    [Benchmark]
    public int SlabTakeReturn()
    {
        _slab!.TryTake(out var i);
        var n = _slab.Span(i).Length;
        _slab.Return(i);
        return n;
    }
}
