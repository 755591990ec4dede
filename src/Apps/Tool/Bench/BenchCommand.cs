using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using Rings.Tool.Commands;
using Spectre.Console;

namespace Rings.Tool.Bench;

/// <summary>
/// <c>rings bench</c>: a sweep over the two-process loopback (<c>rings loopback</c> as a child
/// process per run) that varies one setting at a time around a base point, with the kernel's
/// socket paths and DPDK's vhost-user pair measured in the same run so the ratios hold on a noisy
/// machine. Writes bench.json, summary.md and PNG plots.
/// </summary>
internal static class BenchCommand
{
    /// <summary>Baseline names, as written to the JSON file.</summary>
    public const string UnixBurst = "unix_dgram";
    public const string Udp = "udp";
    public const string UnixPingPong = "unix_dgram_ping_pong";
    public const string Dpdk = "dpdk_vhost_virtio_user";

    private const int QueueSize = 256;

    /// <summary>What a sweep is asked to do.</summary>
    internal sealed record Settings(bool Quick, string Out, double Seconds, int Repeats, bool Dpdk, bool Baselines, int Points);

    public static Command Create()
    {
        var quick = new Option<bool>("--quick") { Description = "A short sweep (fewer points, one run each, 1 s runs) that finishes in about two minutes." };
        var output = new Option<string>("--out") { Description = "Directory for bench.json, summary.md and the PNG plots.", DefaultValueFactory = _ => "bench-results" };
        var seconds = new Option<double?>("--seconds") { Description = "Seconds per run (default 3, or 1 with --quick)." };
        var repeats = new Option<int?>("--repeats") { Description = "Runs per point; the report gives the median (default 3, or 1 with --quick)." };
        var dpdk = new Option<string>("--dpdk") { Description = "Measure DPDK's virtio-user/vhost pair with dpdk-testpmd: auto (when installed) or off.", DefaultValueFactory = _ => "auto" };
        dpdk.AcceptOnlyFromAmong("auto", "off");
        var baselines = new Option<string>("--baselines") { Description = "Measure the kernel socket and DPDK baselines: on or off.", DefaultValueFactory = _ => "on" };
        baselines.AcceptOnlyFromAmong("on", "off");
        var replot = new Option<bool>("--replot") { Description = "Measure nothing: redraw the plots and summary.md from the bench.json in --out." };
        var points = new Option<int>("--points") { Description = "Measure only the first N points of the sweep (for tests).", Hidden = true };
        var command = new Command("bench", "Sweep the two-process loopback one setting at a time (ring format, EVENT_IDX, IN_ORDER, burst, wait strategy, offered load, frame size) beside kernel socket and DPDK baselines; write JSON and PNG plots.")
        {
            quick, output, seconds, repeats, dpdk, baselines, replot, points,
        };
        command.SetAction(r =>
        {
            if (r.GetValue(replot))
            {
                return Replot(r.GetValue(output)!, Console.Out, Console.Error);
            }

            var q = r.GetValue(quick);
            var s = new Settings(
                q,
                r.GetValue(output)!,
                r.GetValue(seconds) ?? (q ? 1 : 3),
                r.GetValue(repeats) ?? (q ? 1 : 3),
                r.GetValue(dpdk) == "auto",
                r.GetValue(baselines) == "on",
                r.GetValue(points));
            if (!(s.Seconds >= 0.1) || s.Seconds > 3600 || s.Repeats < 1 || s.Repeats > 100 || s.Points < 0)
            {
                Console.Error.WriteLine("rings bench: --seconds must be between 0.1 and 3600, --repeats between 1 and 100");
                return 2;
            }

            return Run(s, Console.Out, Console.Error);
        });
        return command;
    }

    public static int Run(Settings s, TextWriter o, TextWriter error)
    {
        var self = Environment.ProcessPath ?? throw new InvalidOperationException("cannot find this executable");
        try
        {
            Directory.CreateDirectory(s.Out);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            error.WriteLine($"rings bench: cannot create {s.Out}: {e.Message}");
            return 2;
        }

        // Hugepage points (Rings and DPDK, both formats) when enough 2 MiB pages are free; the
        // sweep never reserves them itself (that is the machine owner's call).
        var testpmd = s.Dpdk && s.Baselines ? BenchDpdk.Executable() : null;
        var freeHugePages = Linux.Plumbing.SharedMemory.HugePagesAvailable() ?? 0;
        string? hugeWhyNot = null;
        using var hugeDirectory = testpmd is null ? null : BenchDpdk.PrepareHugePages(out hugeWhyNot);
        var plan = BenchPlan.Create(s.Quick, hugePages: freeHugePages >= BenchDpdk.HugePagesNeeded);
        if (s.Points > 0)
        {
            plan.Truncate(s.Points);
        }

        var report = new BenchReport
        {
            Preset = s.Quick ? "quick" : "full",
            Machine = BenchMachine.Read(),
            Started = DateTimeOffset.Now,
            Seconds = s.Seconds,
            Repeats = s.Repeats,
            ReferenceRepeats = ReferenceRounds(s),
            QueueSize = QueueSize,
            Points = plan.Points.Select(p => new PointResult(p, plan.SeriesOf(p))).ToList(),
            Baselines = [],
        };

        // SIGINT or SIGTERM: the run in progress is cut short and not counted; what was measured
        // before is written out (the plots are left for --replot, to stop within a second).
        using var signals = StopSignals.Install(_ => BenchInterrupt.Request());
        static bool cancelled() => BenchInterrupt.Requested;

        var tasks = Schedule(s, self, report, cancelled, testpmd, hugeDirectory?.Path, hugeWhyNot);
        if (freeHugePages < BenchDpdk.HugePagesNeeded)
        {
            o.WriteLine($"rings bench: 4 KiB pages only: {BenchDpdk.HugePagesNeeded} free 2 MiB hugepages are needed for the hugepage points, {freeHugePages} are free (echo 512 > /proc/sys/vm/nr_hugepages)");
        }

        o.WriteLine($"rings bench ({report.Preset}): {report.Points.Count} points x {s.Repeats} run(s) of {s.Seconds:0.##} s, {report.Baselines.Count(b => b.Skipped is null)} baselines and the reference point x {ReferenceRounds(s)}; machine: {report.Machine.Describe()}, load {report.Machine.LoadAverage}");
        foreach (var b in report.Baselines.Where(b => b.Skipped is not null))
        {
            o.WriteLine($"  {b.Description}: skipped, {b.Skipped}");
        }

        // The files exist from the start, and are rewritten after every run: a sweep cut short
        // keeps what it measured, and the closing write is already warm when a signal comes.
        report.WriteJson(Path.Combine(s.Out, "bench.json"));
        File.WriteAllText(Path.Combine(s.Out, "summary.md"), report.Markdown());
        // The runs go on a thread of their own, so a signal is answered at once: the run in
        // progress is told to stop and not waited for (it is not counted), and what was measured
        // before is written out. Results enter the report under its lock, and only while not interrupted.
        var clock = Stopwatch.StartNew();
        using var progress = new BenchProgress(o, tasks.Sum(t => t.Cost));
        var runs = new Thread(() =>
        {
            foreach (var task in tasks)
            {
                if (cancelled())
                {
                    break;
                }

                progress.Begin(task.Label, task.Cost);
                var line = task.Run();
                lock (report)
                {
                    if (cancelled())
                    {
                        break;
                    }

                    progress.End(line);
                    report.WriteJson(Path.Combine(s.Out, "bench.json"));
                }
            }
        })
        { Name = "bench runs", IsBackground = true };
        runs.Start();
        while (!runs.Join(50) && !cancelled())
        {
        }

        // From here the report is final: the runs thread, should it still be in a run, waits on
        // the lock until the process ends and never adds to it.
        Monitor.Enter(report);
        report.ElapsedSeconds = clock.Elapsed.TotalSeconds;
        report.Interrupted = cancelled();
        report.LoadAverageEnd = BenchMachine.LoadAverageNow();
        var exit = 0;
        try
        {
            if (!report.Interrupted)
            {
                report.Plots.AddRange(BenchPlots.WriteAll(s.Out, report.Points, report.Baselines, report.Subtitle()));
            }
        }
        catch (Exception e) when (e is IOException or DllNotFoundException or TypeInitializationException or InvalidOperationException or ArgumentException)
        {
            error.WriteLine($"rings bench: the plots could not be drawn: {e.Message}");
            exit = 1;
        }

        report.WriteJson(Path.Combine(s.Out, "bench.json"));
        File.WriteAllText(Path.Combine(s.Out, "summary.md"), report.Markdown());
        report.Print(o);
        o.WriteLine();
        o.WriteLine(report.Interrupted
            ? $"interrupted: wrote {Path.Combine(s.Out, "bench.json")} and {Path.Combine(s.Out, "summary.md")}; draw the plots with rings bench --replot --out {s.Out}"
            : $"wrote {Path.Combine(s.Out, "bench.json")}, {Path.Combine(s.Out, "summary.md")} and {report.Plots.Count} plots in {s.Out}");
        if (report.Points.Sum(p => p.Lost + p.Corrupted) is var bad && bad > 0)
        {
            error.WriteLine($"rings bench: {bad} frames were lost, duplicated or corrupted; see the errors in bench.json");
        }

        if (!report.Points.Any(p => p.HasData))
        {
            error.WriteLine("rings bench: nothing was measured");
            exit = 1;
        }

        return report.Interrupted ? 130 : exit;
    }

    /// <summary>Redraws the plots and summary.md of an earlier sweep from its bench.json.</summary>
    public static int Replot(string dir, TextWriter o, TextWriter error)
    {
        var json = Path.Combine(dir, "bench.json");
        BenchReport report;
        try
        {
            report = BenchReport.Read(json);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or System.Text.Json.JsonException or KeyNotFoundException or InvalidOperationException or FormatException)
        {
            error.WriteLine($"rings bench: cannot read {json}: {e.Message}");
            return 2;
        }

        var plots = BenchPlots.WriteAll(dir, report.Points, report.Baselines, report.Subtitle());
        report.Plots.AddRange(plots);
        File.WriteAllText(Path.Combine(dir, "summary.md"), report.Markdown());
        report.Print(o);
        o.WriteLine();
        o.WriteLine($"redrew {plots.Count} plots and summary.md in {dir} from {json}");
        return 0;
    }

    /// <summary>Rounds for the reference point and the baselines: at least three when there are baselines.</summary>
    internal static int ReferenceRounds(Settings s) => s.Baselines ? Math.Max(3, s.Repeats) : s.Repeats;

    /// <summary>A unit of work with its expected cost in seconds; it returns a line for the log.</summary>
    private sealed record BenchTask(string Label, double Cost, Func<string> Run);

    /// <summary>
    /// A discarded warm-up run, then the repeats round-robin: each round measures the reference
    /// point, then the baselines beside it, then every other point, so slow drifts in the
    /// machine's load spread over all points instead of landing on a few. Rounds past
    /// <see cref="Settings.Repeats"/> measure only the reference point and the baselines.
    /// </summary>
    private static List<BenchTask> Schedule(Settings s, string self, BenchReport report, Func<bool> cancelled, string? testpmd, string? hugeDirectory, string? hugeWhyNot)
    {
        var loopbackCost = s.Seconds + 1.0;
        var tasks = new List<BenchTask>
        {
            new("warm-up", loopbackCost, () =>
            {
                var (run, err) = BenchRuns.Loopback(self, BenchPoint.Base, s.Seconds, QueueSize);
                return run is null ? $"warm-up: {err}" : $"warm-up: {run.Mpps:0.000} Mpps (not counted)";
            }),
        };

        if (s.Baselines)
        {
            report.Baselines.Add(new BaselineResult(UnixBurst, "AF_UNIX datagrams", 64, 32));
            report.Baselines.Add(new BaselineResult(Udp, "UDP on 127.0.0.1", 64, 32));

            // DPDK on each ring format and page size that a Rings point of the sweep measures too.
            foreach (var peer in report.Points.Where(p => p.Series.Contains(BenchPlan.PagesSeries)).Select(p => p.Point))
            {
                report.Baselines.Add(new BaselineResult(
                    Dpdk + (peer.Ring == RingFormat.Packed ? "_packed" : string.Empty) + (peer.HugePages ? "_hugepages" : string.Empty),
                    $"DPDK virtio-user + vhost (testpmd), {peer.Ring.Name}, {(peer.HugePages ? "2 MiB" : "4 KiB")} pages",
                    64,
                    32)
                {
                    Peer = peer,
                    Skipped = testpmd is null ? (s.Dpdk ? "dpdk-testpmd is not installed (scripts/install-deps.sh installs it)" : "--dpdk off")
                        : peer.HugePages && hugeDirectory is null ? hugeWhyNot ?? "no hugetlbfs directory"
                        : null,
                });
            }

            report.Baselines.Add(new BaselineResult(UnixPingPong, "AF_UNIX datagram ping-pong", 64, 1));
        }

        // The ratios are the headline, so the reference point and the baselines beside it get at
        // least three rounds even when the other points get one.
        var dpdkSeconds = Math.Max(2, Math.Round(s.Seconds));
        var rounds = ReferenceRounds(s);
        var reference = report.Points.FirstOrDefault(p => p.Point == BenchPoint.Base);
        for (var round = 1; round <= rounds; round++)
        {
            var referenceTag = rounds > 1 ? $" (run {round}/{rounds})" : string.Empty;
            var tag = s.Repeats > 1 ? $" (run {round}/{s.Repeats})" : string.Empty;
            if (reference is not null)
            {
                tasks.Add(PointTask(reference, referenceTag));
            }

            foreach (var b in report.Baselines.Where(b => b.Skipped is null))
            {
                tasks.Add(b.Name.StartsWith(Dpdk, StringComparison.Ordinal)
                    ? new BenchTask(b.Description + referenceTag, dpdkSeconds + 5, () => DpdkRun(b))
                    : new BenchTask(b.Description + referenceTag, s.Seconds + 0.4, () => KernelRun(b)));
            }

            if (round <= s.Repeats)
            {
                tasks.AddRange(report.Points.Where(p => p != reference).Select(p => PointTask(p, tag)));
            }
        }

        BenchTask PointTask(PointResult p, string tag) => new(p.Point.Label() + tag, loopbackCost, () =>
        {
            var (run, err) = BenchRuns.Loopback(self, p.Point, s.Seconds, QueueSize);
            lock (report)
            {
                if (cancelled())
                {
                    return $"{p.Point.Label()}: interrupted, not counted";
                }

                if (err is not null)
                {
                    p.Errors.Add(err);
                }

                if (run is null)
                {
                    return $"{p.Point.Label()}: failed: {err}";
                }

                p.Runs.Add(run);
            }

            return $"{p.Point.Label()}: {run.Mpps:0.000} Mpps, {run.Gbps:0.00} Gbit/s, kicks {run.KicksPerFrame:0.0000}/frame, calls {run.CallsPerFrame:0.0000}/frame, p50 {run.LatencyP50Us:0.0} us, p99 {run.LatencyP99Us:0.0} us{(err is null ? string.Empty : " (" + err + ")")}";
        });

        string DpdkRun(BaselineResult b)
        {
            var (mpps, err) = BenchDpdk.Measure(testpmd!, b.Peer!.Ring, b.Peer.HugePages ? hugeDirectory : null, b.FrameSize, b.Burst, QueueSize, 1, dpdkSeconds);
            lock (report)
            {
                if (cancelled())
                {
                    return $"{b.Description}: interrupted, not counted";
                }

                if (err is not null)
                {
                    b.Errors.Add(err);
                    return $"{b.Description}: failed: {err}";
                }

                b.Mpps.Add(mpps);
            }

            return $"{b.Description}: {mpps:0.000} Mpps";
        }

        string KernelRun(BaselineResult b)
        {
            // Measured under the report's lock (it writes into b); an interrupt ends it at once.
            lock (report)
            {
                return KernelRunLocked(b);
            }
        }

        string KernelRunLocked(BaselineResult b)
        {
            var before = b.Mpps.Count;
            BenchRuns.Kernel(b, b.Name == Udp ? KernelBaseline.Transport.Udp : KernelBaseline.Transport.Unix, s.Seconds, self);
            if (cancelled() && b.Mpps.Count > before)
            {
                b.Mpps.RemoveAt(before);
                b.LatencyP50Us.RemoveAt(before);
                b.LatencyP99Us.RemoveAt(before);
                return $"{b.Description}: interrupted, not counted";
            }

            return b.Mpps.Count == before
                ? $"{b.Description}: failed: {(b.Errors.Count > 0 ? b.Errors[^1] : "no figures")}"
                : $"{b.Description}: {b.Mpps[^1]:0.000} Mpps, p50 {b.LatencyP50Us[^1]:0.0} us";
        }

        return tasks;
    }
}

/// <summary>
/// The sweep's progress: each finished run as a line with the share done and the time left;
/// on a terminal also a live bar (Spectre.Console) naming the run under way, redrawn below the
/// lines. Plain lines only when the output is not a terminal.
/// </summary>
internal sealed class BenchProgress : IDisposable
{
    private readonly TextWriter _o;
    private readonly IAnsiConsole? _console;
    private readonly double _total;
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private readonly Stopwatch _task = new();
    private readonly object _gate = new();
    private readonly TaskCompletionSource _finished = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly Task? _display;
    private ProgressTask? _bar;
    private double _done;
    private double _doneElapsed;
    private double _cost;
    private int _count;

    /// <param name="o">Where the lines go.</param>
    /// <param name="total">The planned cost of the whole sweep (seconds).</param>
    /// <param name="console">The console for the live bar; by default the terminal, if <paramref name="o"/> is one.</param>
    public BenchProgress(TextWriter o, double total, IAnsiConsole? console = null)
    {
        _o = o;
        _total = total;
        _console = console ?? Terminal.For(o);
        if (_console is not null)
        {
            using var ready = new ManualResetEventSlim();
            _display = _console.Progress()
                .AutoClear(true)
                .Columns(new ProgressBarColumn(), new PercentageColumn(), new TaskDescriptionColumn { Alignment = Justify.Left })
                .StartAsync(async context =>
                {
                    _bar = context.AddTask("starting", maxValue: Math.Max(total, 1e-9));
                    ready.Set();
                    await _finished.Task.ConfigureAwait(false);
                });
            ready.Wait();
        }
    }

    public void Begin(string label, double cost)
    {
        lock (_gate)
        {
            _cost = cost;
            _task.Restart();
            if (_bar is { } bar)
            {
                bar.Description = Markup.Escape($"{_count} done, {Left()} left  {(label.Length > 40 ? label[..40] : label)}");
            }
        }
    }

    public void End(string line)
    {
        lock (_gate)
        {
            _done += _cost;
            _doneElapsed = _clock.Elapsed.TotalSeconds;
            _count++;
            _cost = 0;
            var text = $"  [{Percent(),3:0}% {Left()} left] {line}";
            if (_console is { } console)
            {
                // Through the console, so the live bar is drawn again below the line.
                _bar!.Value = Math.Min(_done, _total);
                console.WriteLine(text);
            }
            else
            {
                _o.WriteLine(text);
            }
        }
    }

    public void Dispose()
    {
        if (_display is not null)
        {
            _finished.TrySetResult();
            _display.Wait();
        }
    }

    private double Percent() => _total > 0 ? 100 * Math.Min(1, _done / _total) : 100;

    /// <summary>The planned seconds left, scaled by how the finished work compared with its plan.</summary>
    private string Left()
    {
        var inTask = Math.Min(_cost, _task.Elapsed.TotalSeconds);
        var pace = _done > 0 ? Math.Clamp(_doneElapsed / _done, 0.5, 3) : 1;
        var left = Math.Max(0, (_total - _done - inTask) * pace);
        var t = TimeSpan.FromSeconds(Math.Round(left));
        return $"{(int)t.TotalMinutes}m{t.Seconds:00}s";
    }
}
