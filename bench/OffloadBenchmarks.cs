using System.Buffers.Binary;
using System.Runtime.Versioning;
using BenchmarkDotNet.Attributes;
using Rings.Linux.Net;

namespace Rings.Benchmarks;

/// <summary>
/// The software offloads a switch does for a destination without them: cutting a 64 KB TCP/IPv4
/// GSO frame into MSS-sized frames (copy, headers, IPv4 and TCP checksums), and completing the
/// partial checksum of one MTU-sized frame.
/// </summary>
[MemoryDiagnoser]
[MedianColumn]
[SupportedOSPlatform("linux")]
public class OffloadBenchmarks
{
    private const int L3 = 14;
    private const int L4 = L3 + 20;
    private const int Headers = L4 + 20;

    private byte[] _gsoFrame = [];
    private VirtioNetHeader _gsoHeader;
    private byte[] _slots = [];
    private int[] _lengths = [];
    private byte[] _partial = [];

    /// <summary>gso_size of the GSO frame.</summary>
    [Params(1448, 8948)]
    public int Mss { get; set; }

    /// <summary>Builds the frames.</summary>
    [GlobalSetup]
    public void Setup()
    {
        _gsoFrame = Frame(65535 - 40);
        _gsoHeader = new VirtioNetHeader
        {
            Flags = VirtioNetHeader.FlagNeedsCsum,
            GsoType = VirtioNetGso.TcpV4,
            HeaderLength = Headers,
            GsoSize = (ushort)Mss,
            CsumStart = L4,
            CsumOffset = 16,
        };
        var count = (_gsoFrame.Length - Headers + Mss - 1) / Mss;
        _slots = new byte[count * (Headers + Mss)];
        _lengths = new int[count];
        _partial = Frame(1500 - 40);
    }

    /// <summary>Cuts the GSO frame into MSS-sized, fully checksummed frames.</summary>
    /// <returns>Frames written.</returns>
    [Benchmark]
    public int Segment()
    {
        var sink = new FrameSlots(_slots, Headers + Mss, _lengths);
        GsoSegmenter.Segment(_gsoFrame, _gsoHeader, ref sink);
        return sink.Count;
    }

    /// <summary>Completes the TCP checksum of a 1514-byte frame (the field is restored first).</summary>
    /// <returns>The status.</returns>
    [Benchmark]
    public OffloadStatus CompleteChecksum()
    {
        BinaryPrimitives.WriteUInt16BigEndian(_partial.AsSpan(L4 + 16), 0x1234);
        return ChecksumOffload.Complete(_partial, L4, 16);
    }

    // Ethernet, IPv4 (169.254.0.0/16), TCP without options, then payload bytes.
    private static byte[] Frame(int payload)
    {
        var f = new byte[Headers + payload];
        f[0] = 0x02;
        f[6] = 0x02;
        f[11] = 0x01;
        BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(12), 0x0800);
        f[L3] = 0x45;
        BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(L3 + 2), (ushort)(f.Length - L3));
        f[L3 + 8] = 64;
        f[L3 + 9] = 6;
        f[L3 + 12] = 169;
        f[L3 + 13] = 254;
        f[L3 + 15] = 1;
        f[L3 + 16] = 169;
        f[L3 + 17] = 254;
        f[L3 + 19] = 2;
        f[L4 + 12] = 0x50;
        f[L4 + 13] = 0x18;
        new Random(1).NextBytes(f.AsSpan(Headers));
        return f;
    }
}
