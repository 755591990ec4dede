using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.RegularExpressions;
using Rings.Linux.Plumbing;

namespace Rings.Tool.Bench;

/// <summary>
/// DPDK's own vhost-user round trip, measured the way <c>rings loopback</c> is: two dpdk-testpmd
/// processes joined by a vhost-user socket, a <c>net_vhost</c> back-end swapping MAC addresses and
/// sending every frame back (macswap), and a <c>net_virtio_user</c> front-end generating frames as
/// fast as it can (flowgen) and counting what returns. Both busy-poll on their own CPU, without
/// PCI devices, on 4 KiB pages (<c>--no-huge</c>) or on 2 MiB hugepages from a hugetlbfs mount
/// (<c>--single-file-segments</c>, which virtio-user needs to share its memory). The rate is the
/// front-end's per-second Rx-pps, median over the seconds after a warm-up.
/// </summary>
internal static partial class BenchDpdk
{
    private static readonly Regex RxPps = RxPpsRegex();

    /// <summary>Where dpdk-testpmd is, or null when it is not installed.</summary>
    public static string? Executable()
    {
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? string.Empty).Split(':', StringSplitOptions.RemoveEmptyEntries))
        {
            var candidate = Path.Combine(dir, "dpdk-testpmd");
            if (File.Exists(candidate))
            {
                return candidate;
            }
        }

        return File.Exists("/usr/bin/dpdk-testpmd") ? "/usr/bin/dpdk-testpmd" : null;
    }

    /// <summary>
    /// One round-trip measurement; returns the median Mpps or an error. Gives up (and stops both
    /// processes) after the time it should take plus 30 seconds.
    /// </summary>
    /// <param name="testpmd">The dpdk-testpmd executable.</param>
    /// <param name="ring">The ring format the front-end negotiates (packed_vq).</param>
    /// <param name="hugeDirectory">A hugetlbfs mount for 2 MiB pages, or null for 4 KiB pages.</param>
    /// <param name="frameSize">Bytes per Ethernet frame.</param>
    /// <param name="burst">Frames per burst, both sides.</param>
    /// <param name="queueSize">Descriptors per ring.</param>
    /// <param name="warmupSeconds">Seconds not counted.</param>
    /// <param name="seconds">Seconds measured.</param>
    public static (double Mpps, string? Error) Measure(string testpmd, RingFormat ring, string? hugeDirectory, int frameSize, int burst, int queueSize, double warmupSeconds, double seconds)
    {
        var cpus = CpuAffinity.AllowedCpus();
        if (cpus.Count < 2)
        {
            return (double.NaN, "needs two CPUs, one per busy-polling testpmd");
        }

        var dir = Directory.CreateTempSubdirectory("rings-bench-dpdk-");
        var socket = Path.Combine(dir.FullName, "vhost.sock");
        var tag = $"rbd{Environment.ProcessId}{Random.Shared.Next(1000):000}";
        var warmup = (int)Math.Ceiling(warmupSeconds);
        var samples = Math.Max(1, (int)Math.Round(seconds));
        var limit = warmup + samples + 30;
        string[] memory = hugeDirectory is null ? ["--no-huge", "-m", "256"] : ["--huge-dir", hugeDirectory, "--single-file-segments", "-m", "256"];
        string[] common = [.. memory, "--no-pci", "-l", $"{cpus[0]},{cpus[1]}"];
        string[] app =
        [
            "--nb-cores=1", "--rxq=1", "--txq=1", $"--burst={burst}", "--total-num-mbufs=8192",
            $"--rxd={queueSize}", $"--txd={queueSize}",
        ];
        Testpmd? vhost = null, virtio = null;
        try
        {
            // The back-end forwards on the second CPU; its statistics every minute keep it running
            // without reading standard input until it is interrupted.
            vhost = Testpmd.Start(testpmd, limit, [.. common, $"--main-lcore={cpus[0]}", $"--file-prefix={tag}h", "--vdev", $"net_vhost0,iface={socket},queues=1", "--", .. app, "--forward-mode=macswap", "--stats-period=60"]);
            var clock = Stopwatch.StartNew();
            while (!File.Exists(socket))
            {
                if (vhost.HasExited || clock.Elapsed > TimeSpan.FromSeconds(20))
                {
                    return (double.NaN, "the net_vhost testpmd did not start: " + BenchRuns.Tail(vhost.Output));
                }

                Thread.Sleep(20);
            }

            // The front-end generates on the first CPU and prints its port statistics every second.
            // testpmd counts the 4-byte Ethernet FCS in its packet length.
            virtio = Testpmd.Start(testpmd, limit, [.. common, $"--main-lcore={cpus[1]}", $"--file-prefix={tag}v", "--vdev", $"net_virtio_user0,path={socket},queues=1,queue_size={queueSize},packed_vq={(ring == RingFormat.Packed ? 1 : 0)}", "--", .. app, "--forward-mode=flowgen", $"--txpkts={frameSize + 4}", "--stats-period=1"]);

            // The first figure covers no whole interval, then come the warm-up seconds.
            var wanted = 1 + warmup + samples;
            clock.Restart();
            while (RxPps.Count(virtio.Output) < wanted)
            {
                if (virtio.HasExited || vhost.HasExited || clock.Elapsed > TimeSpan.FromSeconds(limit - 5))
                {
                    return (double.NaN, "testpmd stopped before it had measured: " + BenchRuns.Tail(virtio.Output));
                }

                Thread.Sleep(100);
            }

            var rates = RxPps.Matches(virtio.Output).Skip(1 + warmup).Take(samples)
                .Select(m => double.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture) / 1e6).ToList();
            var median = BenchMath.Median(rates);
            return median > 0 ? (median, null) : (double.NaN, "no frames came back: " + BenchRuns.Tail(virtio.Output));
        }
        finally
        {
            virtio?.Dispose();
            vhost?.Dispose();
            foreach (var suffix in new[] { "h", "v" })
            {
                DeleteRuntimeDirectory(tag + suffix);
            }

            DeleteHugePageFiles(hugeDirectory, tag);

            dir.Delete(recursive: true);
        }
    }

    /// <summary>
    /// Where testpmd can take 2 MiB pages: a hugetlbfs mount of that size, or one mounted for the
    /// sweep (as root), with enough free pages for two testpmds; or null and why not.
    /// </summary>
    public static HugeDirectory? PrepareHugePages(out string? whyNot)
    {
        whyNot = null;
        if (SharedMemory.HugePagesAvailable() is not { } free || free < HugePagesNeeded)
        {
            whyNot = $"needs {HugePagesNeeded} free 2 MiB hugepages ({SharedMemory.HugePagesAvailable()?.ToString(CultureInfo.InvariantCulture) ?? "unknown"} free): echo 512 > /proc/sys/vm/nr_hugepages";
            return null;
        }

        try
        {
            foreach (var line in File.ReadLines("/proc/mounts"))
            {
                var f = line.Split(' ');
                if (f.Length >= 4 && f[2] == "hugetlbfs" && (f[3].Contains("pagesize=2M", StringComparison.Ordinal) || !f[3].Contains("pagesize=", StringComparison.Ordinal)))
                {
                    return new HugeDirectory(f[1], mounted: false);
                }
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
        }

        if (Geteuid() != 0)
        {
            whyNot = "no hugetlbfs mount of 2 MiB pages (as root: mount -t hugetlbfs -o pagesize=2M nodev /dev/hugepages)";
            return null;
        }

        var dir = Directory.CreateTempSubdirectory("rings-bench-huge-").FullName;
        var (exit, output) = BenchRuns.RunChild("mount", ["-t", "hugetlbfs", "-o", "pagesize=2M", "nodev", dir], TimeSpan.FromSeconds(10));
        if (exit != 0)
        {
            Directory.Delete(dir);
            whyNot = "cannot mount hugetlbfs: " + output.Trim();
            return null;
        }

        return new HugeDirectory(dir, mounted: true);
    }

    /// <summary>Free 2 MiB pages a hugepage run needs: two testpmds of 256 MiB (and Rings' guest needs fewer).</summary>
    public const int HugePagesNeeded = 256;

    private static void DeleteHugePageFiles(string? directory, string tag)
    {
        if (directory is null)
        {
            return;
        }

        try
        {
            foreach (var file in Directory.EnumerateFiles(directory, tag + "*"))
            {
                File.Delete(file);
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
        }
    }

    private static void DeleteRuntimeDirectory(string prefix)
    {
        var root = Geteuid() == 0
            ? "/var/run/dpdk"
            : Path.Combine(Environment.GetEnvironmentVariable("XDG_RUNTIME_DIR") ?? "/tmp", "dpdk");
        try
        {
            var path = Path.Combine(root, prefix);
            if (Directory.Exists(path))
            {
                Directory.Delete(path, recursive: true);
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
        }
    }

    [GeneratedRegex(@"Rx-pps:\s*(\d+)")]
    private static partial Regex RxPpsRegex();

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static partial int Kill(int pid, int signal);

    [LibraryImport("libc", EntryPoint = "geteuid")]
    private static partial uint Geteuid();

    /// <summary>One testpmd under <c>timeout</c> (so it cannot outlive a crashed bench), output line-buffered and captured.</summary>
    private sealed class Testpmd : IDisposable
    {
        private readonly Process _process;
        private readonly StringBuilder _output = new();

        private Testpmd(Process process) => _process = process;

        public bool HasExited => _process.HasExited;

        public string Output
        {
            get
            {
                lock (_output)
                {
                    return _output.ToString();
                }
            }
        }

        public static Testpmd Start(string testpmd, int limitSeconds, string[] args)
        {
            var info = new ProcessStartInfo("timeout")
            {
                UseShellExecute = false,
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                RedirectStandardInput = true,
            };
            foreach (var a in (string[])["--kill-after=5", limitSeconds.ToString(CultureInfo.InvariantCulture), "stdbuf", "-oL", testpmd, .. args])
            {
                info.ArgumentList.Add(a);
            }

            var p = new Process { StartInfo = info };
            var t = new Testpmd(p);
            p.OutputDataReceived += (_, e) => t.Append(e.Data);
            p.ErrorDataReceived += (_, e) => t.Append(e.Data);
            p.Start();
            BenchInterrupt.Track(p);
            p.BeginOutputReadLine();
            p.BeginErrorReadLine();
            return t;
        }

        /// <summary>Interrupts testpmd (timeout passes SIGINT on), waits, and kills what is left.</summary>
        public void Dispose()
        {
            BenchInterrupt.Untrack(_process);
            if (!_process.HasExited)
            {
                _ = Kill(_process.Id, 2);
                if (!_process.WaitForExit(10_000))
                {
                    _process.Kill(entireProcessTree: true);
                }
            }

            _process.WaitForExit();
            _process.Dispose();
        }

        private void Append(string? line)
        {
            if (line is null)
            {
                return;
            }

            lock (_output)
            {
                _output.AppendLine(line);
            }
        }
    }

    /// <summary>A hugetlbfs directory for testpmd's memory files; unmounted on dispose when the sweep mounted it.</summary>
    internal sealed class HugeDirectory(string path, bool mounted) : IDisposable
    {
        public string Path { get; } = path;

        public void Dispose()
        {
            if (mounted)
            {
                _ = BenchRuns.RunChild("umount", [Path], TimeSpan.FromSeconds(10));
                try
                {
                    Directory.Delete(Path);
                }
                catch (IOException)
                {
                }
            }
        }
    }
}
