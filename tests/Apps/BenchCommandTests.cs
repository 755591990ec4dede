using System.Text.Json;

namespace Rings.Tests.Apps;

/// <summary><c>rings bench</c> on a tiny sweep: real loopback processes and kernel baselines, real files.</summary>
[Collection(ProcessCollection.Name)]
public class BenchCommandTests
{
    private static readonly byte[] PngSignature = [0x89, (byte)'P', (byte)'N', (byte)'G', 0x0D, 0x0A, 0x1A, 0x0A];

    [Fact]
    public void DpdkIsMeasuredBesideRingsOnBothRingFormats()
    {
        _ = Rings.Tests.VhostUser.Testpmd.Executable();
        var dir = Directory.CreateTempSubdirectory("rings-bench-test-");
        try
        {
            // The base point and its packed twin, then both formats with DPDK's features (IN_ORDER
            // on, EVENT_IDX off), each beside DPDK on the same format and pages.
            var (exit, output, error, _) = Hostile.RingsRun.Run(TimeSpan.FromMinutes(6), "bench", "--points", "4", "--seconds", "1", "--repeats", "1", "--dpdk", "auto", "--out", dir.FullName);
            Assert.True(exit == 0, $"exit {exit}\n{output}\n{error}");
            var json = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir.FullName, "bench.json"))).RootElement;
            var baselines = json.GetProperty("baselines").EnumerateArray().ToDictionary(b => b.GetProperty("name").GetString()!);
            foreach (var (name, ring) in new[] { ("dpdk_vhost_virtio_user", "split"), ("dpdk_vhost_virtio_user_packed", "packed") })
            {
                var b = baselines[name];
                Assert.Equal(ring, b.GetProperty("ring").GetString());
                Assert.False(b.GetProperty("hugepages").GetBoolean());
                Assert.Equal(3, b.GetProperty("repeats").GetInt32());
                Assert.True(b.GetProperty("mpps").GetDouble() > 0, b.ToString());
                Assert.True(b.GetProperty("rings_ratio").GetDouble() > 0, b.ToString());
            }

            // Each DPDK baseline names its Rings point, which has DPDK's features.
            foreach (var b in baselines.Values.Where(b => b.TryGetProperty("ring", out _)))
            {
                Assert.False(b.GetProperty("event_idx").GetBoolean(), b.ToString());
                Assert.True(b.GetProperty("in_order").GetBoolean(), b.ToString());
            }

            var peers = json.GetProperty("points").EnumerateArray().Where(p => p.GetProperty("series").EnumerateArray().Any(s => s.GetString() == "pages")).ToList();
            Assert.Equal(["split", "packed"], peers.Select(p => p.GetProperty("ring").GetString()));
            Assert.All(peers, p => Assert.True(p.GetProperty("in_order").GetBoolean() && !p.GetProperty("event_idx").GetBoolean(), p.ToString()));

            // No hugepage baseline without its Rings point (the sweep was cut to four points).
            Assert.DoesNotContain(baselines.Keys, n => n.EndsWith("_hugepages", StringComparison.Ordinal));
            Assert.Matches(@"at least 1\.2x DPDK's virtio-user/vhost round trip \(split, 4 KiB pages\)", File.ReadAllText(Path.Combine(dir.FullName, "summary.md")));
            Assert.Matches(@"DPDK virtio-user \+ vhost \(testpmd\), packed, 4 KiB pages\s+\d+\.\d+ Mpps\s+Rings is \d+\.\d+x", output);
        }
        finally
        {
            dir.Delete(recursive: true);
        }
    }

    [Fact]
    public void TinySweepWritesEveryPointBaselinesAndValidPlots()
    {
        var dir = Directory.CreateTempSubdirectory("rings-bench-test-");
        try
        {
            // About 12 s on a quiet machine; the limit only guards against a hang (a loaded
            // machine has taken over a minute).
            var (exit, output, error, _) = Hostile.RingsRun.Run(TimeSpan.FromMinutes(4), "bench", "--points", "4", "--seconds", "0.3", "--repeats", "1", "--dpdk", "off", "--out", dir.FullName);
            Assert.True(exit == 0, $"exit {exit}\n{output}\n{error}");

            var json = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir.FullName, "bench.json"))).RootElement;
            var machine = json.GetProperty("machine");
            Assert.Equal(Environment.ProcessorCount, machine.GetProperty("cores").GetInt32());
            Assert.False(string.IsNullOrEmpty(machine.GetProperty("runtime").GetString()));
            Assert.False(string.IsNullOrEmpty(machine.GetProperty("os").GetString()));

            // The first four points of the sweep: the base point and its packed twin, then both
            // formats with DPDK's features (the points DPDK is compared with), each measured.
            var points = json.GetProperty("points").EnumerateArray().ToList();
            Assert.Equal(4, points.Count);
            Assert.Equal(["split", "packed", "split", "packed"], points.Select(p => p.GetProperty("ring").GetString()));
            Assert.Equal([true, true, false, false], points.Select(p => p.GetProperty("event_idx").GetBoolean()));
            Assert.Equal([false, false, true, true], points.Select(p => p.GetProperty("in_order").GetBoolean()));
            // The reference point is measured three times beside the baselines, the others once.
            Assert.Equal([3, 1, 1, 1], points.Select(p => p.GetProperty("repeats").GetInt32()));
            foreach (var p in points)
            {
                Assert.Equal(32, p.GetProperty("burst").GetInt32());
                Assert.Equal(64, p.GetProperty("frame_size").GetInt32());
                Assert.Equal("poll", p.GetProperty("wait").GetString());
                Assert.True(p.GetProperty("mpps").GetDouble() > 0, p.ToString());
                Assert.True(p.GetProperty("gbps").GetDouble() > 0, p.ToString());
                Assert.Equal(0, p.GetProperty("lost").GetInt64());
                Assert.Equal(0, p.GetProperty("corrupted").GetInt64());
                var runs = p.GetProperty("runs").EnumerateArray().ToList();
                Assert.Equal(p.GetProperty("repeats").GetInt32(), runs.Count);
                foreach (var run in runs)
                {
                    Assert.True(run.GetProperty("frames_received").GetInt64() > 0, run.ToString());
                    Assert.Equal(run.GetProperty("frames_sent").GetInt64(), run.GetProperty("frames_received").GetInt64());
                }

                Assert.Contains(p.GetProperty("series").EnumerateArray(), s => s.GetString() is "burst_by_ring" or "pages");
            }

            // Kernel baselines measured and compared; DPDK switched off and said so.
            var baselines = json.GetProperty("baselines").EnumerateArray().ToDictionary(b => b.GetProperty("name").GetString()!);
            foreach (var name in new[] { "unix_dgram", "udp" })
            {
                Assert.Equal(3, baselines[name].GetProperty("repeats").GetInt32());
                Assert.True(baselines[name].GetProperty("mpps").GetDouble() > 0, baselines[name].ToString());
                Assert.True(baselines[name].GetProperty("rings_ratio").GetDouble() > 0, baselines[name].ToString());
            }

            Assert.True(baselines["unix_dgram_ping_pong"].GetProperty("latency_p50_us").GetDouble() > 0);
            Assert.Equal("--dpdk off", baselines["dpdk_vhost_virtio_user"].GetProperty("skipped").GetString());
            Assert.Contains("Rings is", output);

            var plots = json.GetProperty("plots").EnumerateArray().Select(p => p.GetString()!).ToList();
            Assert.Equal(["mpps-vs-burst.png", "notifications-vs-load.png", "latency-vs-load.png", "gbps-vs-frame-size.png", "rings-vs-baselines.png"], plots);
            foreach (var plot in plots)
            {
                var bytes = File.ReadAllBytes(Path.Combine(dir.FullName, plot));
                Assert.True(bytes.Length > 1000, $"{plot} is only {bytes.Length} bytes");
                Assert.Equal(PngSignature, bytes[..8]);

                // IHDR comes first: width and height, big-endian, as drawn.
                Assert.Equal("IHDR", System.Text.Encoding.ASCII.GetString(bytes, 12, 4));
                Assert.Equal(900, System.Buffers.Binary.BinaryPrimitives.ReadInt32BigEndian(bytes.AsSpan(16)));
                Assert.Equal(540, System.Buffers.Binary.BinaryPrimitives.ReadInt32BigEndian(bytes.AsSpan(20)));
                Assert.Equal("IEND", System.Text.Encoding.ASCII.GetString(bytes, bytes.Length - 8, 4));
            }

            var summary = File.ReadAllText(Path.Combine(dir.FullName, "summary.md"));
            Assert.Contains("| base |", summary);
            Assert.Contains("AF_UNIX datagrams", summary);

            // --replot draws the same plots and summary again from bench.json alone.
            foreach (var plot in plots)
            {
                File.Delete(Path.Combine(dir.FullName, plot));
            }

            File.Delete(Path.Combine(dir.FullName, "summary.md"));
            (exit, output, error) = LoopbackProcessTests.Run("bench", "--replot", "--out", dir.FullName);
            Assert.True(exit == 0, $"replot: exit {exit}\n{output}\n{error}");
            Assert.Equal(summary, File.ReadAllText(Path.Combine(dir.FullName, "summary.md")));
            foreach (var plot in plots)
            {
                Assert.Equal(PngSignature, File.ReadAllBytes(Path.Combine(dir.FullName, plot))[..8]);
            }
        }
        finally
        {
            dir.Delete(recursive: true);
        }
    }

    [Fact]
    public void BadSettingsGetAClearErrorAndNonZeroExit()
    {
        var (exit, _, error) = LoopbackProcessTests.Run("bench", "--seconds", "0", "--out", Path.GetTempPath());
        Assert.Equal(2, exit);
        Assert.Contains("--seconds", error);
    }
}
