using System.Diagnostics;
using Rings.Linux.Diagnostics;
using Rings.Linux.Ports;
using Rings.Linux.Runtime;

namespace Rings.Tests.Diagnostics;

/// <summary>
/// Captures read back by tshark: frame count, lengths, EtherTypes and directions compared with
/// what the test sent through a pipeline; the snap length; drops counted when the writer is behind.
/// </summary>
public class CaptureTests
{
    private static readonly ushort[] EtherTypes = [0x0800, 0x86dd, 0x0806, 0x88b5];

    /// <summary>tshark's fields for every packet of a file, one array per packet.</summary>
    internal static List<string[]> Tshark(string file, params string[] fields)
    {
        var info = new ProcessStartInfo("tshark") { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in new[] { "-r", file, "-T", "fields", "-E", "separator=," })
        {
            info.ArgumentList.Add(a);
        }

        foreach (var f in fields)
        {
            info.ArgumentList.Add("-e");
            info.ArgumentList.Add(f);
        }

        using var p = Process.Start(info)!;
        var output = p.StandardOutput.ReadToEndAsync();
        var error = p.StandardError.ReadToEndAsync();
        Assert.True(p.WaitForExit(60_000), "tshark did not finish");
        Assert.True(p.ExitCode == 0, $"tshark exit {p.ExitCode}: {error.Result}");
        return [.. output.Result.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => l.Split(','))];
    }

    private static byte[] Frame(int length, ushort etherType, byte source)
    {
        var f = new byte[length];
        f.AsSpan(0, 6).Fill(0xff);
        f[6] = 0x02;
        f[11] = source;
        f[12] = (byte)(etherType >> 8);
        f[13] = (byte)etherType;
        for (var i = 14; i < length; i++)
        {
            f[i] = (byte)i;
        }

        return f;
    }

    [Theory]
    [InlineData("pcapng")]
    [InlineData("pcap")]
    public void ACaptureHoldsEveryFrameEachWayWithItsLengthAndEtherType(string format)
    {
        var dir = Directory.CreateTempSubdirectory("rings-capture-");
        try
        {
            var file = Path.Combine(dir.FullName, $"p0.{format}");
            PortCounters counters;
            var sent = new List<(int Length, ushort EtherType, bool Outbound)>();
            using (var a = new InMemoryPort("a"))
            using (var b = new InMemoryPort("b"))
            {
                a.Open();
                b.Open();
                using var capture = PacketCapture.Create(file, a.Name);
                Assert.Equal(format == "pcap" ? CaptureFormat.Pcap : CaptureFormat.PcapNg, capture.Format);
                a.Capture = capture;
                using (var pipeline = new Pipeline([a, b], new LearningSwitch()))
                {
                    var random = new Random(7);
                    for (var i = 0; i < 300; i++)
                    {
                        // Broadcasts from both sides: port a receives some and sends the others.
                        var inbound = i % 3 != 0;
                        var length = random.Next(60, 1515);
                        var type = EtherTypes[i % EtherTypes.Length];
                        Assert.True((inbound ? a : b).TryInject(Frame(length, type, (byte)(inbound ? 1 : 2))));
                        sent.Add((length, type, !inbound));
                        pipeline.RunOnce();
                        var buffer = new byte[2048];
                        while (a.TryTake(buffer, out _, out _) || b.TryTake(buffer, out _, out _))
                        {
                        }
                    }
                }

                a.Capture = null;
                counters = a.Counters;
                capture.Dispose();
                Assert.Equal(300, capture.Captured);
                Assert.Equal(300, capture.Written);
                Assert.Equal(0, capture.Dropped);
            }

            Assert.Equal(200, counters.RxFrames);
            Assert.Equal(100, counters.TxFrames);
            var packets = Tshark(file, "frame.len", "frame.cap_len", "eth.type", "frame.packet_flags_direction");
            Assert.Equal(sent.Count, packets.Count);
            for (var i = 0; i < sent.Count; i++)
            {
                Assert.Equal(sent[i].Length.ToString(System.Globalization.CultureInfo.InvariantCulture), packets[i][0]);
                Assert.Equal(packets[i][0], packets[i][1]);
                Assert.Equal($"0x{sent[i].EtherType:x4}", packets[i][2]);
                if (format == "pcapng")
                {
                    // epb_flags direction: 1 inbound (received from the peer), 2 outbound.
                    Assert.Equal(sent[i].Outbound ? "0x00000002" : "0x00000001", packets[i][3]);
                }
            }
        }
        finally
        {
            dir.Delete(recursive: true);
        }
    }

    [Fact]
    public void TheSnapLengthCutsFramesAndKeepsTheirLengths()
    {
        var dir = Directory.CreateTempSubdirectory("rings-capture-");
        try
        {
            var file = Path.Combine(dir.FullName, "snap.pcapng");
            using (var capture = PacketCapture.Create(file, "snap", snapLength: 64))
            {
                foreach (var length in new[] { 60, 64, 65, 1514, 9000 })
                {
                    capture.Record(Frame(length, 0x86dd, 1), outbound: false);
                }
            }

            var packets = Tshark(file, "frame.len", "frame.cap_len", "eth.type");
            Assert.Equal(["60", "64", "65", "1514", "9000"], packets.Select(p => p[0]));
            Assert.Equal(["60", "64", "64", "64", "64"], packets.Select(p => p[1]));
            Assert.All(packets, p => Assert.Equal("0x86dd", p[2]));
        }
        finally
        {
            dir.Delete(recursive: true);
        }
    }

    [Fact]
    public void AFullBufferDropsAndCountsInsteadOfWaiting()
    {
        var dir = Directory.CreateTempSubdirectory("rings-capture-");
        try
        {
            var file = Path.Combine(dir.FullName, "full.pcapng");
            long captured;
            using (var capture = PacketCapture.CreateStopped(file, snapLength: 1514, bufferBytes: 1 << 14))
            {
                // 1000-byte frames take 1024 bytes of ring each: 16 fit in 16 KiB; the writer is not running.
                for (var i = 0; i < 40; i++)
                {
                    capture.Record(Frame(1000, 0x0800, 1), outbound: true);
                }

                Assert.Equal(16, capture.Captured);
                Assert.Equal(24, capture.Dropped);
                capture.StartWriter();
                var clock = Stopwatch.StartNew();
                while (capture.Written < 16 && clock.Elapsed < TimeSpan.FromSeconds(10))
                {
                    Thread.Sleep(5);
                }

                // Room again once written.
                capture.Record(Frame(200, 0x0806, 1), outbound: true);
                Assert.Equal(17, capture.Captured);
                captured = capture.Captured;
            }

            var packets = Tshark(file, "frame.len", "eth.type");
            Assert.Equal(captured, packets.Count);
            Assert.Equal(["200", "0x0806"], packets[^1]);
        }
        finally
        {
            dir.Delete(recursive: true);
        }
    }
}
