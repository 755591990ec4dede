using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using Rings.Tool.Commands;

namespace Rings.Tool.Bench;

/// <summary>The figures of one <c>rings loopback</c> run, as its JSON file gave them.</summary>
internal sealed record LoopbackRun(
    double Mpps,
    double MppsTx,
    double Gbps,
    double KicksPerFrame,
    double CallsPerFrame,
    double MeanBurst,
    double HostMeanBurst,
    double LatencyP50Us,
    double LatencyP99Us,
    long FramesSent,
    long FramesReceived,
    long Lost,
    long Duplicated,
    long Corrupted,
    long Drops,
    long HostCallsSent,
    long HostCallsSuppressed,
    double Seconds,
    double SteadyMpps)
{
    public static LoopbackRun FromJson(JsonElement j)
    {
        double D(string name) => j.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number ? v.GetDouble() : 0;
        long L(string name) => j.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number ? v.GetInt64() : 0;
        return new LoopbackRun(
            D("mpps"),
            D("mpps_tx"),
            D("gbps"),
            D("kicks_per_frame"),
            D("calls_per_frame"),
            D("mean_burst"),
            D("host_mean_burst"),
            D("latency_p50_us"),
            D("latency_p99_us"),
            L("frames_sent"),
            L("frames_received"),
            L("lost"),
            L("duplicated"),
            L("corrupted"),
            L("drops"),
            L("host_calls_sent"),
            L("host_calls_suppressed"),
            D("seconds"),
            D("steady_mpps") > 0 ? D("steady_mpps") : D("mpps"));
    }
}

/// <summary>A point and what its repeats measured; the figures reported are medians over the repeats.</summary>
internal sealed class PointResult(BenchPoint point, IReadOnlyList<string> series)
{
    public BenchPoint Point { get; } = point;

    public IReadOnlyList<string> Series { get; } = series;

    public List<LoopbackRun> Runs { get; } = [];

    public List<string> Errors { get; } = [];

    public bool HasData => Runs.Count > 0;

    public double Median(Func<LoopbackRun, double> metric) => BenchMath.Median(Runs.Select(metric));

    public double Mpps => Median(r => r.Mpps);

    /// <summary>The median of the runs' steady rates (per-second rates after the first), as DPDK's figure is taken.</summary>
    public double SteadyMpps => Median(r => r.SteadyMpps);

    public double Gbps => Median(r => r.Gbps);

    public double KicksPerFrame => Median(r => r.KicksPerFrame);

    public double CallsPerFrame => Median(r => r.CallsPerFrame);

    public double LatencyP50Us => Median(r => r.LatencyP50Us);

    public double LatencyP99Us => Median(r => r.LatencyP99Us);

    public double MeanBurst => Median(r => r.MeanBurst);

    public long Lost => Runs.Sum(r => r.Lost);

    public long Corrupted => Runs.Sum(r => r.Corrupted + r.Duplicated);
}

/// <summary>What a baseline's repeats measured (kernel sockets or DPDK).</summary>
internal sealed class BaselineResult(string name, string description, int frameSize, int burst)
{
    public string Name { get; } = name;

    public string Description { get; } = description;

    public int FrameSize { get; } = frameSize;

    public int Burst { get; } = burst;

    /// <summary>The Rings point this baseline is compared with; null for the reference point.</summary>
    public BenchPoint? Peer { get; init; }

    /// <summary>True for DPDK's round trip (its figure is a median of per-second rates after a warm-up).</summary>
    public bool IsDpdk => Name.StartsWith(BenchCommand.Dpdk, StringComparison.Ordinal);

    public List<double> Mpps { get; } = [];

    public List<double> LatencyP50Us { get; } = [];

    public List<double> LatencyP99Us { get; } = [];

    public List<string> Errors { get; } = [];

    /// <summary>Why it was not measured at all (for example: dpdk-testpmd is not installed).</summary>
    public string? Skipped { get; set; }

    public bool HasData => Mpps.Count > 0;

    public double MedianMpps => BenchMath.Median(Mpps);
}

internal static class BenchMath
{
    public static double Median(IEnumerable<double> values)
    {
        var v = values.Where(double.IsFinite).Order().ToArray();
        if (v.Length == 0)
        {
            return double.NaN;
        }

        return v.Length % 2 == 1 ? v[v.Length / 2] : (v[(v.Length / 2) - 1] + v[v.Length / 2]) / 2;
    }
}

/// <summary>Runs the measurements as child processes of this executable, output captured.</summary>
internal static class BenchRuns
{
    /// <summary>Runs <c>rings loopback</c> once at <paramref name="point"/>.</summary>
    public static (LoopbackRun? Run, string? Error) Loopback(string self, BenchPoint point, double seconds, int queueSize)
    {
        var json = Path.Combine(Path.GetTempPath(), $"rings-bench-{Environment.ProcessId}-{Guid.NewGuid():N}.json");
        try
        {
            string[] args = ["loopback", .. point.ToLoopback(seconds, queueSize, json).ToArguments()];
            var (exit, output) = RunChild(self, args, TimeSpan.FromSeconds(seconds + 40));
            if (!File.Exists(json))
            {
                return (null, $"rings loopback exited {exit} without figures: {Tail(output)}");
            }

            var run = LoopbackRun.FromJson(JsonDocument.Parse(File.ReadAllText(json)).RootElement);
            return (run, exit == 0 ? null : $"rings loopback exited {exit} (lost {run.Lost}, corrupted {run.Corrupted}, duplicated {run.Duplicated})");
        }
        catch (Exception e) when (e is IOException or JsonException or InvalidOperationException or System.ComponentModel.Win32Exception)
        {
            return (null, e.Message);
        }
        finally
        {
            File.Delete(json);
        }
    }

    /// <summary>Measures a kernel socket pair with <see cref="KernelBaseline"/>.</summary>
    public static void Kernel(BaselineResult into, KernelBaseline.Transport transport, double seconds, string self)
    {
        try
        {
            var f = KernelBaseline.Measure(transport, into.FrameSize, into.Burst, TimeSpan.FromSeconds(seconds), self);
            if (f.Received == 0)
            {
                into.Errors.Add("no frames came back");
                return;
            }

            into.Mpps.Add(f.Mpps);
            into.LatencyP50Us.Add(f.LatencyP50Us);
            into.LatencyP99Us.Add(f.LatencyP99Us);
        }
        catch (Exception e) when (e is IOException or System.Net.Sockets.SocketException or InvalidOperationException or System.ComponentModel.Win32Exception)
        {
            into.Errors.Add(e.Message);
        }
    }

    /// <summary>Runs a child process to the end (or kills it after <paramref name="timeout"/>), returning its exit code and output.</summary>
    public static (int Exit, string Output) RunChild(string file, IEnumerable<string> args, TimeSpan timeout)
    {
        var info = new ProcessStartInfo(file)
        {
            UseShellExecute = false,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
        };
        foreach (var a in args)
        {
            info.ArgumentList.Add(a);
        }

        var output = new StringBuilder();
        using var p = new Process { StartInfo = info };
        p.OutputDataReceived += (_, e) => Append(output, e.Data);
        p.ErrorDataReceived += (_, e) => Append(output, e.Data);
        p.Start();
        BenchInterrupt.Track(p);
        try
        {
            p.BeginOutputReadLine();
            p.BeginErrorReadLine();
            // Waits in slices so an interrupt is seen: the child got SIGTERM then, and one still
            // starting (its handlers not yet installed) or stopping slowly is killed, with its own
            // children, after a moment: its run is not counted, and the sweep stops at once.
            var clock = Stopwatch.StartNew();
            var interruptedAt = TimeSpan.MinValue;
            while (!p.WaitForExit(50))
            {
                if (clock.Elapsed >= timeout)
                {
                    p.Kill(entireProcessTree: true);
                    p.WaitForExit();
                    return (-1, $"killed after {timeout.TotalSeconds:0} s; " + Snapshot(output));
                }

                if (BenchInterrupt.Requested)
                {
                    if (interruptedAt == TimeSpan.MinValue)
                    {
                        interruptedAt = clock.Elapsed;
                    }
                    else if (clock.Elapsed - interruptedAt > TimeSpan.FromMilliseconds(300))
                    {
                        p.Kill(entireProcessTree: true);
                        break;
                    }
                }
            }

            p.WaitForExit(); // flushes the redirected output
            return (p.ExitCode, Snapshot(output));
        }
        finally
        {
            BenchInterrupt.Untrack(p);
        }
    }

    public static string Tail(string output, int lines = 6) =>
        string.Join(" | ", output.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).TakeLast(lines));

    private static void Append(StringBuilder b, string? line)
    {
        if (line is null)
        {
            return;
        }

        lock (b)
        {
            b.AppendLine(line);
        }
    }

    private static string Snapshot(StringBuilder b)
    {
        lock (b)
        {
            return b.ToString();
        }
    }
}
