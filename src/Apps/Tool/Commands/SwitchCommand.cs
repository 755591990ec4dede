using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text.Json;
using Rings.Linux.Net;
using Rings.Linux.Ports;
using Rings.Linux.Runtime;
using Spectre.Console;

namespace Rings.Tool.Commands;

/// <summary>What joins the ports of <c>rings switch</c>.</summary>
internal enum SwitchProcessor
{
    /// <summary>The L2 learning switch.</summary>
    Switch,

    /// <summary>Two ports wired to each other.</summary>
    Patch,

    /// <summary>Every frame back out of the port it came in on.</summary>
    Reflect,
}

/// <summary>
/// Every option of <c>rings switch</c>, typed; <see cref="ToArguments"/> writes the command line
/// that <see cref="SwitchCommand.Parse"/> reads back.
/// </summary>
/// <param name="Ports">The port specifications, KIND:TARGET.</param>
/// <param name="Processor">What joins them.</param>
/// <param name="Workers">Worker threads.</param>
/// <param name="Cpus">CPUs to pin the workers to (such as <c>2,3</c> or <c>0-3</c>), or null.</param>
/// <param name="Wait">How an idle worker waits.</param>
/// <param name="Burst">Most frames taken from a port at once.</param>
/// <param name="Hold">Milliseconds frames with no ready destination stay with their source.</param>
/// <param name="Seconds">How long to run; 0 until stopped.</param>
/// <param name="Json">Where to write the final figures, if anywhere.</param>
/// <param name="Verbose">Log every port's control-plane events.</param>
/// <param name="Quiet">No per-second lines.</param>
/// <param name="AllowUid">User ids whose front-ends every vhost-user port serves, comma-separated, or null for any.</param>
/// <param name="Metrics">Where to serve Prometheus text (a loopback ADDRESS:PORT), or null.</param>
/// <param name="Captures">Captures, PORT=FILE (a port's index or specification, a pcapng or .pcap file), or null.</param>
/// <param name="Snaplen">Most bytes kept of each captured frame.</param>
/// <param name="LogLevel">Least severe log events written (<c>--verbose</c> lowers it to debug).</param>
internal sealed record SwitchOptions(
    IReadOnlyList<string> Ports,
    SwitchProcessor Processor = SwitchProcessor.Switch,
    int Workers = 1,
    string? Cpus = null,
    WaitStrategy Wait = WaitStrategy.Poll,
    int Burst = 32,
    int Hold = 100,
    double Seconds = 0,
    string? Json = null,
    bool Verbose = false,
    bool Quiet = false,
    string? AllowUid = null,
    string? Metrics = null,
    IReadOnlyList<string>? Captures = null,
    int Snaplen = Linux.Diagnostics.PacketCapture.DefaultSnapLength,
    Microsoft.Extensions.Logging.LogLevel LogLevel = Microsoft.Extensions.Logging.LogLevel.Information)
{
    /// <summary>What is wrong with the options, or null.</summary>
    public string? Validate()
    {
        if (Cli.TryParseUids(AllowUid, out _) is { } uidError)
        {
            return uidError;
        }

        if (Ports.Count == 0)
        {
            return "give at least one --port";
        }

        if (Ports.Count > PortMask.MaxPorts)
        {
            return $"at most {PortMask.MaxPorts} ports";
        }

        var duplicate = Ports.GroupBy(p => p, StringComparer.Ordinal).FirstOrDefault(g => g.Count() > 1);
        if (duplicate is not null)
        {
            return $"port '{duplicate.Key}' is given twice";
        }

        if (Processor == SwitchProcessor.Patch && Ports.Count != 2)
        {
            return $"--processor patch joins exactly two ports, not {Ports.Count}";
        }

        if (Workers is < 1 or > 64)
        {
            return "--workers must be between 1 and 64";
        }

        if (!SwitchCommand.TryParseCpus(Cpus, out _, out var cpuError))
        {
            return cpuError;
        }

        if (Burst is < 1 or > FrameBurst.MaxCapacity)
        {
            return $"--burst must be between 1 and {FrameBurst.MaxCapacity}";
        }

        if (Hold is < 0 or > 60_000)
        {
            return "--hold must be between 0 and 60000 milliseconds";
        }

        if (!(Seconds >= 0) || Seconds > 31_536_000)
        {
            return "--seconds must be 0 (until stopped) or a positive number of seconds";
        }

        if (Snaplen is < FrameBurst.MinFrameLength or > FrameBurst.MaxFrameLength)
        {
            return $"--snaplen must be between {FrameBurst.MinFrameLength} and {FrameBurst.MaxFrameLength}";
        }

        if (CaptureProblem() is { } capture)
        {
            return capture;
        }

        return Monitoring.Validate(Metrics);
    }

    /// <summary>The captures asked for, each as the index of its port and its file.</summary>
    public IReadOnlyList<(int Port, string File)> CaptureFiles()
    {
        var list = new List<(int, string)>();
        foreach (var c in Captures ?? [])
        {
            // A specification may hold '=' (mtu=9000), and so may a file name: a port's whole
            // specification first, then an index.
            var spec = Ports.Select((p, i) => (p, i)).Where(x => c.StartsWith(x.p + "=", StringComparison.Ordinal)).OrderByDescending(x => x.p.Length).FirstOrDefault();
            var at = c.IndexOf('=', StringComparison.Ordinal);
            if (spec.p is not null)
            {
                list.Add((spec.i, c[(spec.p.Length + 1)..]));
            }
            else if (at > 0 && int.TryParse(c[..at], NumberStyles.None, CultureInfo.InvariantCulture, out var n))
            {
                list.Add((n, c[(at + 1)..]));
            }
            else
            {
                list.Add((-1, string.Empty));
            }
        }

        return list;
    }

    private string? CaptureProblem()
    {
        var files = CaptureFiles();
        for (var i = 0; i < files.Count; i++)
        {
            if (files[i].Port < 0 || files[i].Port >= Ports.Count || files[i].File.Length == 0)
            {
                return $"--capture '{Captures![i]}': expected PORT=FILE, PORT a port's index (0 to {Ports.Count - 1}) or its specification";
            }
        }

        if (files.GroupBy(f => f.Port).FirstOrDefault(g => g.Count() > 1) is { } twice)
        {
            return $"--capture: port {twice.Key} is captured twice";
        }

        return null;
    }

    /// <summary>The command line (after <c>rings switch</c>) that parses back to these options.</summary>
    public IEnumerable<string> ToArguments() =>
    [
        .. Ports.SelectMany(p => (string[])["--port", p]),
        "--processor", Cli.Text(Processor), "--workers", Cli.Number(Workers), "--wait", Cli.Text(Wait), "--burst", Cli.Number(Burst), "--hold", Cli.Number(Hold), "--seconds", Cli.Number(Seconds),
        .. Cli.Value("--cpus", Cpus),
        .. Cli.Value("--json", Json),
        .. Cli.Flag("--verbose", Verbose),
        .. Cli.Flag("--quiet", Quiet),
        .. Cli.Value("--allow-uid", AllowUid),
        .. Cli.Value("--metrics", Metrics),
        .. (Captures ?? []).SelectMany(c => (string[])["--capture", c]),
        .. Cli.Value("--snaplen", Snaplen != Linux.Diagnostics.PacketCapture.DefaultSnapLength ? Cli.Number(Snaplen) : null),
        .. Cli.Value("--log-level", LogLevel != Microsoft.Extensions.Logging.LogLevel.Information ? Cli.Text(LogLevel) : null),
    ];
}

/// <summary>
/// <c>rings switch</c>: ports of any kind joined by a processor (the learning switch by default),
/// run by workers until Ctrl-C, SIGTERM or <c>--seconds</c>. Prints per-port rates and drops once
/// a second and a final table; removes what it created (sockets, devices) on the way out.
/// </summary>
internal static class SwitchCommand
{
    public static Command Create() => Define().Runs(o => o.Validate(), o => Run(o, Console.Out, Console.Error));

    /// <summary>Reads a <c>rings switch</c> command line (after the command name) into options.</summary>
    /// <exception cref="ArgumentException">The arguments do not parse.</exception>
    public static SwitchOptions Parse(IReadOnlyList<string> args) => Define().Parse(args);

    private static CommandDefinition<SwitchOptions> Define()
    {
        var defaults = new SwitchOptions([]);
        var port = new Option<string[]>("--port")
        {
            Description = $"A port, KIND:TARGET (repeat for each): {string.Join(", ", PortKinds.All.Select(k => $"{k.Name}:{k.Target}"))}.",
            Required = true,
        };
        var processor = Cli.Choice("--processor", "What joins the ports: switch (L2 learning switch), patch (two ports wired to each other) or reflect (every frame back to its port).", defaults.Processor);
        var workers = new Option<int>("--workers") { Description = "Worker threads. The ports' queue pairs (one for a port without queues=) are dealt to them in turn, so a multiqueue port is served by several workers at once, each on its own pairs; the startup lines say which worker has which pair.", DefaultValueFactory = _ => defaults.Workers };
        var cpus = new Option<string?>("--cpus") { Description = "CPUs to pin the workers to, in order, such as 2,3 or 0-3." };
        var wait = Cli.Choice("--wait", GuestCommand.WaitDescription, defaults.Wait);
        var burst = new Option<int>("--burst") { Description = $"Most frames taken from a port at once (1 to {FrameBurst.MaxCapacity}).", DefaultValueFactory = _ => defaults.Burst };
        var hold = new Option<int>("--hold") { Description = "Milliseconds a guest's frames may wait in its own ring while no destination is ready for them (full, or not attached), before they are dropped; 0 drops at once.", DefaultValueFactory = _ => defaults.Hold };
        var seconds = new Option<double>("--seconds") { Description = "Stop after this long; 0 runs until Ctrl-C or SIGTERM.", DefaultValueFactory = _ => defaults.Seconds };
        var json = new Option<string?>("--json") { Description = "Also write the final figures to this JSON file." };
        var verbose = new Option<bool>("--verbose") { Description = "Log every port's control-plane events (--log-level debug)." };
        var quiet = new Option<bool>("--quiet") { Description = "No per-second lines; only events and the final table." };
        var allowUid = new Option<string?>("--allow-uid") { Description = Cli.AllowUidDescription + " Applies to every vhost-user port." };
        var metrics = Monitoring.MetricsOption();
        var capture = new Option<string[]>("--capture") { Description = "Write the frames a port receives and sends to a file, PORT=FILE (repeat for each port): PORT is the port's index or specification; FILE is pcapng (pcap when it ends in .pcap), readable by tshark and Wireshark." };
        var logLevel = Monitoring.LogLevelOption(defaults.LogLevel);
        var snaplen = new Option<int>("--snaplen") { Description = "Most bytes kept of each captured frame.", DefaultValueFactory = _ => defaults.Snaplen };
        var command = new Command("switch", "Join ports (vhost-user sockets for VMs and rings guests, and other kinds) with a learning switch, a patch or a reflector, and run until stopped.")
        {
            port, processor, workers, cpus, wait, burst, hold, seconds, json, verbose, quiet, allowUid, metrics, capture, snaplen, logLevel,
        };
        return new(command, r => new SwitchOptions(
            r.GetValue(port) ?? [],
            Cli.Parse<SwitchProcessor>(r.GetValue(processor)!),
            r.GetValue(workers),
            r.GetValue(cpus),
            Cli.Parse<WaitStrategy>(r.GetValue(wait)!),
            r.GetValue(burst),
            r.GetValue(hold),
            r.GetValue(seconds),
            r.GetValue(json),
            r.GetValue(verbose),
            r.GetValue(quiet),
            r.GetValue(allowUid),
            r.GetValue(metrics),
            r.GetValue(capture) is { Length: > 0 } c ? c : null,
            r.GetValue(snaplen),
            Cli.Parse<Microsoft.Extensions.Logging.LogLevel>(r.GetValue(logLevel)!)));
    }

    public static int Run(SwitchOptions o, TextWriter output, TextWriter error)
    {
        if (o.Validate() is { } problem)
        {
            error.WriteLine($"rings switch: {problem}");
            return 2;
        }

        TryParseCpus(o.Cpus, out var cpus, out _);

        // Signals first: a Ctrl-C while ports open must still remove what they created.
        using var done = new ManualResetEventSlim();
        using var signals = StopSignals.Install(_ => done.Set());

        using var monitoring = Monitoring.Start("switch", o.Metrics, output, error, o.Verbose && o.LogLevel > Microsoft.Extensions.Logging.LogLevel.Debug ? Microsoft.Extensions.Logging.LogLevel.Debug : o.LogLevel);
        if (monitoring is null)
        {
            return 3;
        }

        // Make every port first (specification errors), then open them (sockets, devices): a
        // failure undoes what was opened, so nothing is left behind.
        var ports = new List<Port>();
        try
        {
            Cli.TryParseUids(o.AllowUid, out var uids);
            foreach (var spec in o.Ports)
            {
                var port = PortKinds.Create(spec);
                if (port is VhostUserPort vhostUser)
                {
                    vhostUser.AllowedUids = uids;
                }

                ports.Add(port);
            }
        }
        catch (ArgumentException e)
        {
            error.WriteLine($"rings switch: {e.Message}");
            DisposeAll(ports);
            return 2;
        }

        foreach (var p in ports)
        {
            p.Logger = monitoring.Logger;
        }

        FrameProcessor processor = o.Processor switch
        {
            SwitchProcessor.Patch => new PatchProcessor(),
            SwitchProcessor.Reflect => new ReflectProcessor(),
            _ => new LearningSwitch(),
        };

        Pipeline pipeline;
        try
        {
            pipeline = new Pipeline(ports, processor, new PipelineOptions
            {
                Workers = o.Workers,
                Cpus = cpus,
                Wait = o.Wait,
                Burst = o.Burst,
                HoldMilliseconds = o.Hold,
                Logger = monitoring.Logger,
            });
            pipeline.Start();
        }
        catch (ArgumentException e)
        {
            error.WriteLine($"rings switch: {e.Message}");
            DisposeAll(ports);
            return 2;
        }

        using var watched = monitoring.Metrics.AddPipeline(pipeline);
        var captures = new List<Linux.Diagnostics.PacketCapture>();
        try
        {
            foreach (var (index, file) in o.CaptureFiles())
            {
                var capture = Linux.Diagnostics.PacketCapture.Create(file, ports[index].Name, o.Snaplen);
                captures.Add(capture);
                ports[index].Capture = capture;
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            error.WriteLine($"rings switch: cannot capture: {e.Message}");
            pipeline.Stop();
            captures.ForEach(c => c.Dispose());
            DisposeAll(ports);
            return 3;
        }

        var opened = 0;
        try
        {
            for (; opened < ports.Count; opened++)
            {
                ports[opened].Open();
            }
        }
        catch (Exception e) when (e is IOException or ArgumentException or InvalidOperationException or UnauthorizedAccessException)
        {
            error.WriteLine($"rings switch: {e.Message}");
            pipeline.Stop();
            captures.ForEach(c => c.Dispose());
            DisposeAll(ports);
            return 3;
        }

        output.WriteLine($"rings switch: {ports.Count} port(s), {processor.Name}, {pipeline.WorkerCount} worker(s){(cpus.Count > 0 ? $" on CPUs {string.Join(',', cpus)}" : string.Empty)}, wait {o.Wait.ToString().ToLowerInvariant()}, burst {o.Burst}");
        foreach (var p in ports)
        {
            output.WriteLine($"  port {p.Index}: {p.Name} ({p.Status}); {LaneAssignment.Describe(p.LaneWorkers)}");
        }

        var clock = Stopwatch.StartNew();
        var deadline = o.Seconds > 0 ? TimeSpan.FromSeconds(o.Seconds) : TimeSpan.MaxValue;

        // Once a second until the deadline or a stop signal: what moved since the last look.
        void Watch(Action<double, double, PortCounterSnapshot[], PortCounterSnapshot[]> report)
        {
            var last = Snapshot(ports);
            var lastTime = 0.0;
            while (true)
            {
                var remaining = deadline - clock.Elapsed;
                if (remaining <= TimeSpan.Zero || done.Wait(remaining < TimeSpan.FromSeconds(1) ? remaining : TimeSpan.FromSeconds(1)))
                {
                    return;
                }

                var now = clock.Elapsed.TotalSeconds;
                var current = Snapshot(ports);
                if (Moved(last, current))
                {
                    report(now, now - lastTime, last, current);
                }

                last = current;
                lastTime = now;
            }
        }

        var console = o.Quiet ? null : Terminal.For(output);
        if (console is not null)
        {
            // A terminal: one live per-port table, redrawn in place each second.
            var first = Snapshot(ports);
            console.Live(SwitchTables.Rates(ports, first, first, 1, 0)).Start(live => Watch((now, seconds, before, after) =>
            {
                live.UpdateTarget(SwitchTables.Rates(ports, before, after, seconds, now));
                live.Refresh();
            }));
        }
        else
        {
            Watch((now, seconds, before, after) =>
            {
                if (!o.Quiet)
                {
                    output.WriteLine(RateLine(now, seconds, before, after));
                }
            });
        }

        var elapsed = clock.Elapsed.TotalSeconds;
        if (signals.Received is { } signal)
        {
            output.WriteLine($"rings switch: {StopSignals.Name(signal)}: stopping");
        }

        pipeline.Stop();
        var final = Snapshot(ports);
        var statuses = ports.Select(p => (p.Link, p.Status)).ToList();
        DisposeAll(ports);
        if (console is not null)
        {
            console.WriteLine();
            console.WriteLine(RanLine(elapsed, pipeline));
            console.Write(SwitchTables.Final(ports, final, statuses, elapsed));
        }
        else
        {
            PrintTable(output, ports, final, statuses, elapsed, pipeline);
        }

        foreach (var p in ports)
        {
            if (p.Capture is { } c)
            {
                p.Capture = null;
                c.Dispose();
                output.WriteLine($"  capture of port {p.Index}: {c.Written:N0} frames to {c.Path}, {c.Dropped:N0} not captured (writer behind)");
            }
        }

        if (o.Json is { } path)
        {
            File.WriteAllText(path, ToJson(ports, final, elapsed, processor, pipeline));
        }

        return 0;
    }

    internal static bool TryParseCpus(string? text, out IReadOnlyList<int> cpus, out string? error, string option = "--cpus")
    {
        cpus = [];
        error = null;
        if (string.IsNullOrWhiteSpace(text))
        {
            return true;
        }

        var list = new List<int>();
        foreach (var part in text.Split(','))
        {
            var range = part.Split('-');
            if (range.Length is < 1 or > 2
                || !int.TryParse(range[0], NumberStyles.None, CultureInfo.InvariantCulture, out var first)
                || !int.TryParse(range[^1], NumberStyles.None, CultureInfo.InvariantCulture, out var end)
                || end < first || end >= Linux.Plumbing.CpuAffinity.MaxCpus)
            {
                error = $"{option} '{text}': expected CPU numbers and ranges such as 0,2-3";
                return false;
            }

            for (var c = first; c <= end; c++)
            {
                list.Add(c);
            }
        }

        if (list.Distinct().Count() != list.Count)
        {
            error = $"{option} '{text}' names a CPU twice";
            return false;
        }

        if (list.Any(c => c >= Environment.ProcessorCount))
        {
            error = $"{option} '{text}': this machine has CPUs 0 to {Environment.ProcessorCount - 1}";
            return false;
        }

        cpus = list;
        return true;
    }

    private static void DisposeAll(List<Port> ports)
    {
        foreach (var p in ports)
        {
            try
            {
                p.Dispose();
            }
            catch (Exception e) when (e is IOException or InvalidOperationException)
            {
                Console.Error.WriteLine($"rings switch: closing {p.Name}: {e.Message}");
            }
        }
    }

    private static PortCounterSnapshot[] Snapshot(List<Port> ports) => [.. ports.Select(p => p.Counters.Snapshot())];

    private static bool Moved(PortCounterSnapshot[] before, PortCounterSnapshot[] after)
    {
        for (var i = 0; i < before.Length; i++)
        {
            if (before[i].RxFrames != after[i].RxFrames || before[i].TxFrames != after[i].TxFrames || before[i].TotalDrops != after[i].TotalDrops)
            {
                return true;
            }
        }

        return false;
    }

    private static string RateLine(double now, double seconds, PortCounterSnapshot[] before, PortCounterSnapshot[] after)
    {
        var line = new System.Text.StringBuilder();
        line.Append(CultureInfo.InvariantCulture, $"  {now,6:0.0} s");
        for (var i = 0; i < before.Length; i++)
        {
            var rx = (after[i].RxFrames - before[i].RxFrames) / seconds / 1e6;
            var tx = (after[i].TxFrames - before[i].TxFrames) / seconds / 1e6;
            var drops = after[i].TotalDrops - before[i].TotalDrops;
            line.Append(CultureInfo.InvariantCulture, $"  port {i}: rx {rx,7:0.000} tx {tx,7:0.000} Mpps drops {drops:N0}");
        }

        return line.ToString();
    }

    private static string RanLine(double seconds, Pipeline pipeline) =>
        $"rings switch: ran {seconds:0.0} s; {pipeline.Rounds:N0} rounds, {pipeline.Sleeps:N0} sleeps{(pipeline.Errors > 0 ? $", {pipeline.Errors:N0} data-path errors" : string.Empty)}";

    private static void PrintTable(TextWriter output, List<Port> ports, PortCounterSnapshot[] final, List<(LinkState Link, string Status)> statuses, double seconds, Pipeline pipeline)
    {
        output.WriteLine();
        output.WriteLine(RanLine(seconds, pipeline));
        output.WriteLine($"  {"port",-4} {"link",-4} {"rx frames",14} {"rx Mpps",8} {"tx frames",14} {"tx Mpps",8} {"dropped",12}  name");
        for (var i = 0; i < ports.Count; i++)
        {
            var c = final[i];
            output.WriteLine($"  {i,-4} {(statuses[i].Link == LinkState.Up ? "up" : "down"),-4} {c.RxFrames,14:N0} {c.RxFrames / seconds / 1e6,8:0.000} {c.TxFrames,14:N0} {c.TxFrames / seconds / 1e6,8:0.000} {c.TotalDrops,12:N0}  {ports[i].Name}");
            var reasons = Enumerable.Range(1, DropReasons.Count - 1)
                .Where(r => c.DropsByReason[r] > 0)
                .Select(r => $"{DropReasons.Name((DropReason)r)} {c.DropsByReason[r]:N0}")
                .ToList();
            if (reasons.Count > 0)
            {
                output.WriteLine($"       drops: {string.Join(", ", reasons)}");
            }

            if (c.SoftwareSegmented > 0)
            {
                output.WriteLine($"       segmented in software: {c.SoftwareSegmented:N0} GSO frames");
            }
        }
    }

    private static string ToJson(List<Port> ports, PortCounterSnapshot[] final, double seconds, FrameProcessor processor, Pipeline pipeline)
    {
        var list = new List<Dictionary<string, object?>>();
        for (var i = 0; i < ports.Count; i++)
        {
            var c = final[i];
            var drops = new Dictionary<string, long>();
            for (var r = 1; r < DropReasons.Count; r++)
            {
                drops[DropReasons.Name((DropReason)r)] = c.DropsByReason[r];
            }

            list.Add(new Dictionary<string, object?>
            {
                ["index"] = i,
                ["name"] = ports[i].Name,
                ["kind"] = ports[i].Kind,
                ["rx_frames"] = c.RxFrames,
                ["rx_bytes"] = c.RxBytes,
                ["tx_frames"] = c.TxFrames,
                ["tx_bytes"] = c.TxBytes,
                ["dropped"] = c.TotalDrops,
                ["drops"] = drops,
                ["software_segmented"] = c.SoftwareSegmented,
                ["pair_workers"] = ports[i].LaneWorkers.ToArray(),
                ["by_worker"] = ports[i].Counters.Parts.Select((part, w) => new Dictionary<string, object?>
                {
                    ["worker"] = ports[i].Counters.Parts.Count == 1 ? ports[i].LaneWorkers[0] : w,
                    ["rx_frames"] = Volatile.Read(ref part.RxFrames),
                    ["tx_frames"] = Volatile.Read(ref part.TxFrames),
                    ["dropped"] = Enumerable.Range(1, DropReasons.Count - 1).Sum(r => part.Drops((DropReason)r)),
                }).ToArray(),
            });
        }

        return JsonSerializer.Serialize(new Dictionary<string, object?>
        {
            ["processor"] = processor.Name,
            ["workers"] = pipeline.WorkerCount,
            ["seconds"] = seconds,
            ["rounds"] = pipeline.Rounds,
            ["sleeps"] = pipeline.Sleeps,
            ["errors"] = pipeline.Errors,
            ["ports"] = list,
        });
    }
}
