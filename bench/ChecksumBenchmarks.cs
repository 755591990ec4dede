using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Versioning;
using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;
using Rings.Linux.Net;

namespace Rings.Benchmarks;

/// <summary>
/// The Internet checksum: the word-by-word scalar reference (baseline), an 8-bytes-a-step scalar
/// for context, each vector width on its own, and the dispatching <see cref="InternetChecksum.Sum"/>.
/// The data starts on a 64-byte boundary, or one byte past it (every vector load then splits
/// cache lines). The Bytes/ns column is Length over the median.
/// </summary>
[MemoryDiagnoser]
[MedianColumn]
[Config(typeof(Columns))]
[SupportedOSPlatform("linux")]
public class ChecksumBenchmarks
{
    private byte[] _buffer = [];
    private int _start;

    /// <summary>Bytes summed.</summary>
    [Params(64, 1500, 65536)]
    public int Length { get; set; }

    /// <summary>Bytes past a 64-byte boundary where the data starts.</summary>
    [Params(0, 1)]
    public int Misalignment { get; set; }

    /// <summary>Fills a pinned buffer with random bytes.</summary>
    [GlobalSetup]
    public unsafe void Setup()
    {
        _buffer = GC.AllocateUninitializedArray<byte>(Length + 192, pinned: true);
        new Random(42).NextBytes(_buffer);
        var address = (nuint)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(_buffer));
        _start = (int)((64 - (address % 64)) % 64) + Misalignment;
    }

    /// <summary>The RFC 1071 definition, one big-endian word per step.</summary>
    [Benchmark(Baseline = true)]
    public ushort Scalar() => InternetChecksum.SumScalar(Data);

    /// <summary>A scalar loop a good C compiler would give: 8 bytes per step, carries deferred.</summary>
    [Benchmark]
    public ushort Scalar64()
    {
        var data = Data;
        ulong sum = 0;
        var i = 0;
        for (; i + 8 <= data.Length; i += 8)
        {
            var x = Unsafe.ReadUnaligned<ulong>(ref Unsafe.AsRef(in data[i]));
            sum += (uint)x + (x >> 32);
        }

        for (; i < data.Length; i++)
        {
            sum += (i & 1) == 0 ? data[i] : (ulong)data[i] << 8;
        }

        while (sum >> 16 != 0)
        {
            sum = (sum & 0xFFFF) + (sum >> 16);
        }

        return (ushort)((sum >> 8) | ((sum & 0xFF) << 8));
    }

    /// <summary>128-bit vectors only.</summary>
    [Benchmark]
    public ushort Vector128() => InternetChecksum.SumWith(Data, 128);

    /// <summary>256-bit vectors, then 128.</summary>
    [Benchmark]
    public ushort Vector256() => InternetChecksum.SumWith(Data, 256);

    /// <summary>512-bit vectors, then 256 and 128.</summary>
    [Benchmark]
    public ushort Vector512() => InternetChecksum.SumWith(Data, 512);

    /// <summary>The public entry point: the widest accelerated width, chosen when the JIT compiles it.</summary>
    [Benchmark]
    public ushort Sum() => InternetChecksum.Sum(Data);

    private ReadOnlySpan<byte> Data => _buffer.AsSpan(_start, Length);

    /// <summary>Adds the Bytes/ns column.</summary>
    private sealed class Columns : ManualConfig
    {
        public Columns() => AddColumn(new BytesPerNanosecond());
    }

    /// <summary>Length divided by the median time.</summary>
    private sealed class BytesPerNanosecond : IColumn
    {
        public string Id => nameof(BytesPerNanosecond);

        public string ColumnName => "Bytes/ns";

        public bool AlwaysShow => true;

        public ColumnCategory Category => ColumnCategory.Custom;

        public int PriorityInCategory => 0;

        public bool IsNumeric => true;

        public UnitType UnitType => UnitType.Dimensionless;

        public string Legend => "Bytes summed per nanosecond (Length / Median)";

        public string GetValue(Summary summary, BenchmarkCase benchmarkCase)
        {
            var stats = summary[benchmarkCase]?.ResultStatistics;
            var length = benchmarkCase.Parameters["Length"] is int l ? l : 0;
            return stats is null || stats.Median <= 0 ? "-" : (length / stats.Median).ToString("0.00");
        }

        public string GetValue(Summary summary, BenchmarkCase benchmarkCase, SummaryStyle style) => GetValue(summary, benchmarkCase);

        public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;

        public bool IsAvailable(Summary summary) => true;
    }
}
