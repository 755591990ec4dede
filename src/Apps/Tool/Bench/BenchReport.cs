using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using Rings.Linux.Net;
using Rings.Tool.Commands;

namespace Rings.Tool.Bench;

/// <summary>The machine a sweep ran on, as far as it matters for the figures.</summary>
internal sealed record BenchMachine(int Cores, string CpuModel, string Os, string Kernel, string Runtime, string LoadAverage)
{
    /// <summary>Whether the CPU says it runs under a hypervisor (the "hypervisor" flag).</summary>
    public bool Virtual { get; init; } = (ProcField("/proc/cpuinfo", "flags") ?? string.Empty).Split(' ').Contains("hypervisor");

    public static BenchMachine Read() => new(
        Environment.ProcessorCount,
        ProcField("/proc/cpuinfo", "model name") ?? RuntimeInformation.ProcessArchitecture.ToString(),
        OsRelease() ?? RuntimeInformation.OSDescription,
        ReadKernel(),
        RuntimeInformation.FrameworkDescription,
        LoadAverageNow());

    public static string LoadAverageNow()
    {
        try
        {
            return string.Join(' ', File.ReadAllText("/proc/loadavg").Split(' ').Take(3));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return "unknown";
        }
    }

    public string Describe() => $"{Cores} {(Virtual ? "virtual " : string.Empty)}cores ({CpuModel}), {Os}, {Runtime}";

    private static string? ProcField(string file, string key)
    {
        try
        {
            var line = File.ReadLines(file).FirstOrDefault(l => l.StartsWith(key, StringComparison.Ordinal));
            return line?[(line.IndexOf(':', StringComparison.Ordinal) + 1)..].Trim();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    private static string ReadKernel()
    {
        try
        {
            return $"{RuntimeInformation.RuntimeIdentifier} {File.ReadAllText("/proc/sys/kernel/osrelease").Trim()}";
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return RuntimeInformation.OSDescription;
        }
    }

    private static string? OsRelease()
    {
        try
        {
            var line = File.ReadLines("/etc/os-release").FirstOrDefault(l => l.StartsWith("PRETTY_NAME=", StringComparison.Ordinal));
            return line?["PRETTY_NAME=".Length..].Trim('"');
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }
}

/// <summary>Everything a sweep found, and its JSON, console and Markdown forms.</summary>
internal sealed class BenchReport
{
    public required string Preset { get; init; }

    public required BenchMachine Machine { get; init; }

    public required DateTimeOffset Started { get; init; }

    public required double Seconds { get; init; }

    public required int Repeats { get; init; }

    public required int ReferenceRepeats { get; init; }

    public required int QueueSize { get; init; }

    public required List<PointResult> Points { get; init; }

    public required List<BaselineResult> Baselines { get; init; }

    public double ElapsedSeconds { get; set; }

    public string LoadAverageEnd { get; set; } = string.Empty;

    /// <summary>Baseline descriptions short enough for a bar chart's axis.</summary>
    public static string ShortName(BaselineResult b) => b.Name switch
    {
        BenchCommand.UnixBurst => "AF_UNIX dgram",
        BenchCommand.Udp => "UDP 127.0.0.1",
        _ when b.Peer is { } p && b.IsDpdk => $"DPDK {p.Ring.Name}{(p.HugePages ? " 2M" : string.Empty)}",
        BenchCommand.UnixPingPong => "AF_UNIX ping-pong",
        _ => b.Name,
    };

    public bool Interrupted { get; set; }

    public List<string> Plots { get; } = [];

    /// <summary>The reference point: split, EVENT_IDX on, burst 32, busy-poll, saturation, 64 B.</summary>
    public PointResult? Reference => Points.FirstOrDefault(p => p.Point == BenchPoint.Base && p.HasData);

    /// <summary>
    /// Rings' rate over a baseline's, both at 64 B and burst 32: the baseline's peer point (same
    /// ring format and pages) or the reference point (NaN when either is missing).
    /// </summary>
    /// <remarks>
    /// Against DPDK the Rings figure is the steady rate (the median of per-second rates after the
    /// first second), because DPDK's is taken that way (per-second rates after a warm-up); against
    /// the kernel baselines, which count the whole run, it is the whole run's rate.
    /// </remarks>
    public double Ratio(BaselineResult b) =>
        PeerOf(b) is { } r && b.HasData && b.MedianMpps > 0 && b.Burst == r.Point.Burst && b.FrameSize == r.Point.FrameSize
            ? (b.IsDpdk ? r.SteadyMpps : r.Mpps) / b.MedianMpps
            : double.NaN;

    /// <summary>The measured Rings point a baseline is compared with.</summary>
    public PointResult? PeerOf(BaselineResult b) => b.Peer is { } peer ? Points.FirstOrDefault(p => p.Point == peer && p.HasData) : Reference;

    /// <summary>A line under each plot's title: short enough for the narrowest plot.</summary>
    public string Subtitle() => $"{Preset} sweep, {Machine.Cores} {(Machine.Virtual ? "virtual " : string.Empty)}cores, load {Machine.LoadAverage.Split(' ')[0]}, {Started:yyyy-MM-dd}";

    public void WriteJson(string path)
    {
        using var stream = File.Create(path);
        using var w = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping });
        w.WriteStartObject();
        w.WriteString("tool", "rings bench");
        w.WriteString("preset", Preset);
        w.WriteString("started", Started.ToString("o", CultureInfo.InvariantCulture));
        Number(w, "elapsed_s", ElapsedSeconds);
        w.WriteBoolean("interrupted", Interrupted);
        w.WriteStartObject("machine");
        w.WriteNumber("cores", Machine.Cores);
        w.WriteString("cpu_model", Machine.CpuModel);
        w.WriteString("os", Machine.Os);
        w.WriteString("kernel", Machine.Kernel);
        w.WriteBoolean("virtual_machine", Machine.Virtual);
        w.WriteString("runtime", Machine.Runtime);
        w.WriteString("runtime_version", Environment.Version.ToString());
        w.WriteString("load_average_start", Machine.LoadAverage);
        w.WriteString("load_average_end", LoadAverageEnd);
        w.WriteEndObject();
        w.WriteStartObject("settings");
        Number(w, "seconds_per_run", Seconds);
        w.WriteNumber("repeats", Repeats);
        w.WriteNumber("reference_repeats", ReferenceRepeats);
        w.WriteNumber("queue_size", QueueSize);
        w.WriteString("statistic", "median over repeats");
        w.WriteStartObject("base");
        WriteSettings(w, BenchPoint.Base);
        w.WriteEndObject();
        w.WriteEndObject();

        w.WriteStartArray("points");
        foreach (var p in Points)
        {
            w.WriteStartObject();
            w.WriteString("label", p.Point.Label());
            w.WriteStartArray("series");
            foreach (var s in p.Series)
            {
                w.WriteStringValue(s);
            }

            w.WriteEndArray();
            WriteSettings(w, p.Point);
            w.WriteNumber("repeats", p.Runs.Count);
            Number(w, "mpps", p.Mpps);
            Number(w, "mpps_tx", p.Median(r => r.MppsTx));
            Number(w, "gbps", p.Gbps);
            Number(w, "kicks_per_frame", p.KicksPerFrame);
            Number(w, "calls_per_frame", p.CallsPerFrame);
            Number(w, "mean_burst", p.MeanBurst);
            Number(w, "host_mean_burst", p.Median(r => r.HostMeanBurst));
            Number(w, "latency_p50_us", p.LatencyP50Us);
            Number(w, "latency_p99_us", p.LatencyP99Us);
            w.WriteNumber("lost", p.Lost);
            w.WriteNumber("corrupted", p.Corrupted);
            w.WriteStartArray("runs");
            foreach (var r in p.Runs)
            {
                w.WriteStartObject();
                Number(w, "mpps", r.Mpps);
                Number(w, "mpps_tx", r.MppsTx);
                Number(w, "gbps", r.Gbps);
                Number(w, "kicks_per_frame", r.KicksPerFrame);
                Number(w, "calls_per_frame", r.CallsPerFrame);
                Number(w, "mean_burst", r.MeanBurst);
                Number(w, "host_mean_burst", r.HostMeanBurst);
                Number(w, "latency_p50_us", r.LatencyP50Us);
                Number(w, "latency_p99_us", r.LatencyP99Us);
                w.WriteNumber("frames_sent", r.FramesSent);
                w.WriteNumber("frames_received", r.FramesReceived);
                w.WriteNumber("lost", r.Lost);
                w.WriteNumber("corrupted", r.Corrupted);
                w.WriteNumber("duplicated", r.Duplicated);
                w.WriteNumber("drops", r.Drops);
                w.WriteNumber("host_calls_sent", r.HostCallsSent);
                w.WriteNumber("host_calls_suppressed", r.HostCallsSuppressed);
                Number(w, "seconds", r.Seconds);
                w.WriteEndObject();
            }

            w.WriteEndArray();
            WriteErrors(w, p.Errors);
            w.WriteEndObject();
        }

        w.WriteEndArray();

        w.WriteStartArray("baselines");
        foreach (var b in Baselines)
        {
            w.WriteStartObject();
            w.WriteString("name", b.Name);
            w.WriteString("description", b.Description);
            w.WriteNumber("frame_size", b.FrameSize);
            w.WriteNumber("burst", b.Burst);
            if (b.Peer is { } peer)
            {
                w.WriteString("ring", peer.Ring.Name);
                w.WriteBoolean("hugepages", peer.HugePages);
                w.WriteBoolean("event_idx", peer.EventIdx);
                w.WriteBoolean("in_order", peer.InOrder);
            }

            w.WriteNumber("repeats", b.Mpps.Count);
            Number(w, "mpps", b.MedianMpps);
            Number(w, "latency_p50_us", BenchMath.Median(b.LatencyP50Us));
            Number(w, "latency_p99_us", BenchMath.Median(b.LatencyP99Us));
            Number(w, "rings_ratio", Ratio(b));
            if (!double.IsFinite(Ratio(b)) && b.HasData)
            {
                w.WriteString("rings_ratio_note", b.Burst == BenchPoint.Base.Burst ? "the Rings point it compares with was not measured" : "a latency reference (one frame in flight), not a rate comparison");
            }

            foreach (var (name, values) in new[] { ("mpps_runs", b.Mpps), ("latency_p50_us_runs", b.LatencyP50Us), ("latency_p99_us_runs", b.LatencyP99Us) })
            {
                w.WriteStartArray(name);
                foreach (var m in values)
                {
                    w.WriteNumberValue(m);
                }

                w.WriteEndArray();
            }

            if (b.Skipped is not null)
            {
                w.WriteString("skipped", b.Skipped);
            }

            WriteErrors(w, b.Errors);
            w.WriteEndObject();
        }

        w.WriteEndArray();
        w.WriteStartArray("plots");
        foreach (var plot in Plots)
        {
            w.WriteStringValue(plot);
        }

        w.WriteEndArray();
        w.WriteEndObject();
    }

    /// <summary>Reads a report back from the bench.json it wrote (to redraw its plots).</summary>
    public static BenchReport Read(string path)
    {
        var j = JsonDocument.Parse(File.ReadAllText(path)).RootElement;
        var m = j.GetProperty("machine");
        var settings = j.GetProperty("settings");
        var report = new BenchReport
        {
            Preset = j.GetProperty("preset").GetString()!,
            Machine = new BenchMachine(
                m.GetProperty("cores").GetInt32(),
                m.GetProperty("cpu_model").GetString()!,
                m.GetProperty("os").GetString()!,
                m.GetProperty("kernel").GetString()!,
                m.GetProperty("runtime").GetString()!,
                m.GetProperty("load_average_start").GetString()!)
            {
                Virtual = m.TryGetProperty("virtual_machine", out var v) && v.GetBoolean(),
            },
            Started = DateTimeOffset.Parse(j.GetProperty("started").GetString()!, CultureInfo.InvariantCulture),
            Seconds = settings.GetProperty("seconds_per_run").GetDouble(),
            Repeats = settings.GetProperty("repeats").GetInt32(),
            ReferenceRepeats = settings.GetProperty("reference_repeats").GetInt32(),
            QueueSize = settings.GetProperty("queue_size").GetInt32(),
            Points = [],
            Baselines = [],
            ElapsedSeconds = j.GetProperty("elapsed_s").GetDouble(),
            Interrupted = j.GetProperty("interrupted").GetBoolean(),
            LoadAverageEnd = m.GetProperty("load_average_end").GetString()!,
        };
        foreach (var p in j.GetProperty("points").EnumerateArray())
        {
            var point = new BenchPoint(
                RingFormat.Parse(p.GetProperty("ring").GetString()!),
                p.GetProperty("event_idx").GetBoolean(),
                p.GetProperty("in_order").GetBoolean(),
                p.GetProperty("burst").GetInt32(),
                Cli.Parse<WaitStrategy>(p.GetProperty("wait").GetString()!),
                p.GetProperty("rate").GetDouble(),
                p.GetProperty("frame_size").GetInt32(),
                p.TryGetProperty("hugepages", out var huge) && huge.GetBoolean());
            var result = new PointResult(point, p.GetProperty("series").EnumerateArray().Select(x => x.GetString()!).ToList());
            result.Runs.AddRange(p.GetProperty("runs").EnumerateArray().Select(LoopbackRun.FromJson));
            result.Errors.AddRange(Strings(p, "errors"));
            report.Points.Add(result);
        }

        foreach (var b in j.GetProperty("baselines").EnumerateArray())
        {
            var result = new BaselineResult(b.GetProperty("name").GetString()!, b.GetProperty("description").GetString()!, b.GetProperty("frame_size").GetInt32(), b.GetProperty("burst").GetInt32())
            {
                Skipped = b.TryGetProperty("skipped", out var skipped) ? skipped.GetString() : null,
                Peer = b.TryGetProperty("ring", out var ring)
                    ? BenchPoint.DpdkPeer(RingFormat.Parse(ring.GetString()!), b.TryGetProperty("hugepages", out var pages) && pages.GetBoolean()) with
                    {
                        // Files from before the peers had DPDK's features compared with the base point's.
                        EventIdx = !b.TryGetProperty("event_idx", out var eventIdx) || eventIdx.GetBoolean(),
                        InOrder = b.TryGetProperty("in_order", out var inOrder) && inOrder.GetBoolean(),
                    }
                    : null,
            };
            result.Mpps.AddRange(Numbers(b, "mpps_runs"));
            result.LatencyP50Us.AddRange(Numbers(b, "latency_p50_us_runs"));
            result.LatencyP99Us.AddRange(Numbers(b, "latency_p99_us_runs"));
            foreach (var (name, list) in new[] { ("latency_p50_us", result.LatencyP50Us), ("latency_p99_us", result.LatencyP99Us) })
            {
                // Files without the per-run figures still carry the median.
                if (list.Count == 0 && b.TryGetProperty(name, out var median) && median.ValueKind == JsonValueKind.Number)
                {
                    list.Add(median.GetDouble());
                }
            }

            result.Errors.AddRange(Strings(b, "errors"));
            report.Baselines.Add(result);
        }

        return report;

        static IEnumerable<double> Numbers(JsonElement e, string name) =>
            e.TryGetProperty(name, out var a) ? a.EnumerateArray().Select(x => x.GetDouble()).ToList() : [];

        static IEnumerable<string> Strings(JsonElement e, string name) =>
            e.TryGetProperty(name, out var a) ? a.EnumerateArray().Select(x => x.GetString() ?? string.Empty).ToList() : [];
    }

    /// <summary>The console table: every point, then the baselines with their ratios, then the goals.</summary>
    public void Print(TextWriter o)
    {
        o.WriteLine();
        o.WriteLine($"rings bench ({Preset}): {Points.Count(p => p.HasData)} points, {Runs()}, {Elapsed()}");
        o.WriteLine($"machine: {Machine.Describe()}; load average {Machine.LoadAverage} at the start, {LoadAverageEnd} at the end");
        o.WriteLine();
        o.WriteLine($"  {"point",-28} {"Mpps",8} {"Gbit/s",7} {"kicks/fr",9} {"calls/fr",9} {"burst",6} {"p50 us",8} {"p99 us",9} {"lost",5}");
        foreach (var p in Points)
        {
            if (!p.HasData)
            {
                o.WriteLine($"  {p.Point.Label(),-28} not measured{(p.Errors.Count > 0 ? ": " + p.Errors[^1] : string.Empty)}");
                continue;
            }

            o.WriteLine($"  {p.Point.Label(),-28} {p.Mpps,8:0.000} {p.Gbps,7:0.000} {p.KicksPerFrame,9:0.0000} {p.CallsPerFrame,9:0.0000} {p.MeanBurst,6:0.0} {p.LatencyP50Us,8:0.0} {p.LatencyP99Us,9:0.0} {p.Lost + p.Corrupted,5}");
        }

        o.WriteLine();
        var reference = Reference;
        o.WriteLine(reference is null
            ? "baselines (the reference point was not measured, so no ratios):"
            : $"baselines, against Rings at 64 B, burst 32, busy-poll (split ring, {reference.Mpps:0.000} Mpps; DPDK against Rings on the same ring format and pages, with its features: IN_ORDER on, EVENT_IDX off):");
        foreach (var b in Baselines)
        {
            if (!b.HasData)
            {
                o.WriteLine($"  {b.Description,-52} not measured: {b.Skipped ?? (b.Errors.Count > 0 ? b.Errors[^1] : "no figures")}");
                continue;
            }

            var ratio = Ratio(b);
            var latency = b.LatencyP50Us.Count > 0 ? $", p50 {BenchMath.Median(b.LatencyP50Us):0.0} us" : string.Empty;
            o.WriteLine($"  {b.Description,-52} {b.MedianMpps,8:0.000} Mpps{latency}{(double.IsFinite(ratio) ? $"   Rings is {ratio:0.00}x" : string.Empty)}");
        }

        o.WriteLine();
        o.WriteLine("goals (shown, not asserted):");
        foreach (var (goal, met, figure) in Goals())
        {
            o.WriteLine($"  [{(met is null ? "n/a" : met.Value ? "met" : "not met")}] {goal}: {figure}");
        }
    }

    /// <summary>The same as Markdown tables (for the README).</summary>
    public string Markdown()
    {
        var s = new StringBuilder();
        s.AppendLine(CultureInfo.InvariantCulture, $"`rings bench` ({Preset}), {Started:yyyy-MM-dd}: {Runs()}, {Elapsed()}.");
        s.AppendLine(CultureInfo.InvariantCulture, $"Machine: {Machine.Describe()}; load average {Machine.LoadAverage} at the start, {LoadAverageEnd} at the end.");
        s.AppendLine();
        s.AppendLine("| point | Mpps | Gbit/s | kicks/frame | calls/frame | mean burst | p50 µs | p99 µs |");
        s.AppendLine("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
        foreach (var p in Points.Where(p => p.HasData))
        {
            s.AppendLine(CultureInfo.InvariantCulture, $"| {p.Point.Label()} | {p.Mpps:0.000} | {p.Gbps:0.000} | {p.KicksPerFrame:0.0000} | {p.CallsPerFrame:0.0000} | {p.MeanBurst:0.0} | {p.LatencyP50Us:0.0} | {p.LatencyP99Us:0.0} |");
        }

        s.AppendLine();
        s.AppendLine("| baseline (64 B) | burst | Mpps | p50 µs | Rings (burst 32, poll) is | compared with |");
        s.AppendLine("| --- | ---: | ---: | ---: | ---: | --- |");
        foreach (var b in Baselines)
        {
            if (!b.HasData)
            {
                s.AppendLine(CultureInfo.InvariantCulture, $"| {b.Description} | {b.Burst} | not measured: {b.Skipped ?? (b.Errors.Count > 0 ? b.Errors[^1] : "no figures")} | | | |");
                continue;
            }

            var latency = b.LatencyP50Us.Count > 0 ? BenchMath.Median(b.LatencyP50Us).ToString("0.0", CultureInfo.InvariantCulture) : "n/a";
            var ratio = Ratio(b);
            s.AppendLine(CultureInfo.InvariantCulture, $"| {b.Description} | {b.Burst} | {b.MedianMpps:0.000} | {latency} | {(double.IsFinite(ratio) ? ratio.ToString("0.00", CultureInfo.InvariantCulture) + "×" : b.Burst == 1 ? "(latency reference)" : "n/a")} | {(double.IsFinite(ratio) ? PeerOf(b)!.Point.Label() : string.Empty)} |");
        }

        s.AppendLine();
        s.AppendLine("| goal | figure | |");
        s.AppendLine("| --- | --- | --- |");
        foreach (var (goal, met, figure) in Goals())
        {
            s.AppendLine(CultureInfo.InvariantCulture, $"| {goal} | {figure} | {(met is null ? "n/a" : met.Value ? "met" : "not met")} |");
        }

        return s.ToString();
    }

    /// <summary>Issue 7's goals, judged on this run's medians.</summary>
    public IEnumerable<(string Goal, bool? Met, string Figure)> Goals()
    {
        var reference = Reference;
        var unix = Baselines.FirstOrDefault(b => b.Name == BenchCommand.UnixBurst);
        var pingPong = Baselines.FirstOrDefault(b => b.Name == BenchCommand.UnixPingPong);
        if (unix is not null)
        {
            var r = Ratio(unix);
            yield return ("at least 20x AF_UNIX datagrams (64 B, burst 32, poll)", double.IsFinite(r) ? r >= 20 : null, double.IsFinite(r) ? $"{r:0.0}x" : "not measured");
        }

        // DPDK on the same ring format and pages: at least as fast on hugepages (where DPDK users
        // run it), 1.2x on 4 KiB pages.
        foreach (var dpdk in Baselines.Where(b => b.IsDpdk && b.Peer is not null))
        {
            var r = Ratio(dpdk);
            var (goal, pages) = dpdk.Peer!.HugePages ? (1.0, "2 MiB pages") : (1.2, "4 KiB pages");
            yield return ($"at least {goal:0.0}x DPDK's virtio-user/vhost round trip ({dpdk.Peer.Ring.Name}, {pages})", double.IsFinite(r) ? r >= goal : null, double.IsFinite(r) ? $"{r:0.00}x" : dpdk.Skipped ?? "not measured");
        }

        if (reference is not null)
        {
            var worst = Math.Max(reference.KicksPerFrame, reference.CallsPerFrame);
            yield return ("EVENT_IDX on at saturation: kicks and calls per frame under 0.01", worst < 0.01, $"kicks {reference.KicksPerFrame:0.0000}, calls {reference.CallsPerFrame:0.0000}");
        }

        var lowest = Points.Where(p => p.HasData && p.Series.Contains(BenchPlan.WaitLoad) && p.Point.Rate > 0).Select(p => p.Point.Rate).DefaultIfEmpty(0).Min();
        var block = Points.FirstOrDefault(p => p.HasData && p.Point == BenchPoint.Base with { Wait = WaitStrategy.Block, Rate = lowest });
        var adaptive = Points.FirstOrDefault(p => p.HasData && p.Point == BenchPoint.Base with { Wait = WaitStrategy.Adaptive, Rate = lowest });
        if (block is not null && pingPong is { HasData: true })
        {
            var pp = BenchMath.Median(pingPong.LatencyP50Us);
            yield return ($"block at {BenchPlan.RateText(lowest)} fps: p50 no worse than an AF_UNIX ping-pong", block.LatencyP50Us <= pp, $"{block.LatencyP50Us:0.0} us against {pp:0.0} us");
        }

        if (adaptive is not null)
        {
            yield return ($"adaptive at {BenchPlan.RateText(lowest)} fps: p50 under 10 us", adaptive.LatencyP50Us < 10, $"{adaptive.LatencyP50Us:0.0} us");
        }
    }

    private string Runs() =>
        $"medians of {Repeats} run(s) of {Seconds:0.##} s{(ReferenceRepeats != Repeats ? $" ({ReferenceRepeats} for the reference point and the baselines)" : string.Empty)}";

    private string Elapsed()
    {
        var t = TimeSpan.FromSeconds(Math.Round(ElapsedSeconds));
        return $"{(int)t.TotalMinutes}m{t.Seconds:00}s in all{(Interrupted ? ", interrupted" : string.Empty)}";
    }

    private static void WriteSettings(Utf8JsonWriter w, BenchPoint p)
    {
        w.WriteString("ring", p.Ring.Name);
        w.WriteBoolean("event_idx", p.EventIdx);
        w.WriteBoolean("in_order", p.InOrder);
        w.WriteNumber("burst", p.Burst);
        w.WriteString("wait", Cli.Text(p.Wait));
        w.WriteNumber("rate", p.Rate);
        w.WriteNumber("frame_size", p.FrameSize);
        w.WriteBoolean("hugepages", p.HugePages);
    }

    private static void WriteErrors(Utf8JsonWriter w, List<string> errors)
    {
        if (errors.Count == 0)
        {
            return;
        }

        w.WriteStartArray("errors");
        foreach (var e in errors)
        {
            w.WriteStringValue(e);
        }

        w.WriteEndArray();
    }

    private static void Number(Utf8JsonWriter w, string name, double value)
    {
        if (double.IsFinite(value))
        {
            w.WriteNumber(name, value);
        }
        else
        {
            w.WriteNull(name);
        }
    }
}
