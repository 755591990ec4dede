using System.CommandLine;
using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text.Json;
using Rings.Linux.Net;
using Rings.Linux.Plumbing;

namespace Rings.Tool.Commands;

/// <summary>
/// Every option of <c>rings loopback</c>, typed; <see cref="ToArguments"/> writes the command line
/// that <see cref="LoopbackCommand.Parse"/> reads back.
/// </summary>
/// <param name="Guest">The guest's settings (its socket empty: the loopback makes one); its JSON file is the loopback's.</param>
/// <param name="HostWait">The host's wait strategy, when it differs from the guest's.</param>
/// <param name="InProcess">One split ring between two threads of this process instead of two processes.</param>
/// <param name="HostCpus">CPUs to pin the host's queue-pair workers to, or null.</param>
/// <param name="Pin">
/// When neither side is given CPUs and at least two are allowed: the guest's traffic threads on the
/// first half of the allowed CPUs, the host's workers on the other half, so the two pollers never
/// share a core and neither is moved mid-run. Off by default: on a quiet two-CPU machine it gained
/// nothing measurable, and with other work on the machine a pinned poller cannot move away from it.
/// </param>
internal sealed record LoopbackOptions(GuestOptions Guest, WaitStrategy? HostWait = null, bool InProcess = false, string? HostCpus = null, bool Pin = false)
{
    /// <summary>The options <c>rings loopback</c> runs with when given none.</summary>
    public static LoopbackOptions Defaults { get; } = new(new GuestOptions(string.Empty, Seconds: 3));

    /// <summary>The command line (after <c>rings loopback</c>) that parses back to these options.</summary>
    public IEnumerable<string> ToArguments()
    {
        if (HostWait is { } wait)
        {
            yield return "--host-wait";
            yield return Cli.Text(wait);
        }

        if (InProcess)
        {
            yield return "--in-process";
        }

        if (HostCpus is not null)
        {
            yield return "--host-cpus";
            yield return HostCpus;
        }

        if (Pin)
        {
            yield return "--pin";
            yield return "auto";
        }

        foreach (var a in (Guest with { Socket = string.Empty }).ToArguments())
        {
            yield return a;
        }
    }
}

/// <summary>
/// <c>rings loopback</c>: the demo. Starts <c>rings host</c> and <c>rings guest</c> as two processes
/// joined by vhost-user over a private socket, relays their output and adds the host's figures.
/// <c>--in-process</c> runs the first form instead: one split ring between two threads.
/// </summary>
internal static partial class LoopbackCommand
{
    public static Command Create() => Define().Runs(Validate, Run);

    private static string? Validate(LoopbackOptions o) =>
        o.InProcess ? ValidateInProcess(o)
        : !SwitchCommand.TryParseCpus(o.HostCpus, out _, out var error, "--host-cpus") ? error
        : o.Guest.Validate();

    // The in-process form runs one split ring in this process's own memory: what it cannot honour
    // is refused, not ignored (--hugepages auto, the default, falls back to 4 KiB pages as it may).
    private static string? ValidateInProcess(LoopbackOptions o) =>
        o.Guest.Queues > 1 ? "--in-process runs one ring pair; --queues needs the two processes"
        : o.Guest.Ring != RingFormat.Split ? "--in-process runs one split ring; --ring packed needs the two processes"
        : o.Guest.HugePages == HugePages.On ? "--in-process runs in this process's own 4 KiB pages; --hugepages on needs the two processes"
        : InProcessOptions(o).Validate();

    /// <summary>
    /// The CPUs each side is pinned to: as given, or, with <see cref="LoopbackOptions.Pin"/> and
    /// none given, the allowed CPUs split in two halves (guest first). Null for a side left to the scheduler.
    /// </summary>
    internal static (string? Guest, string? Host) CpusFor(LoopbackOptions o, IReadOnlyList<int> allowed)
    {
        if (o.Guest.Cpus is not null || o.HostCpus is not null || !o.Pin || allowed.Count < 2)
        {
            return (o.Guest.Cpus, o.HostCpus);
        }

        var half = allowed.Count / 2;
        return (string.Join(',', allowed.Take(half)), string.Join(',', allowed.Skip(half)));
    }

    /// <summary>Reads a <c>rings loopback</c> command line (after the command name) into options.</summary>
    /// <exception cref="ArgumentException">The arguments do not parse.</exception>
    public static LoopbackOptions Parse(IReadOnlyList<string> args) => Define().Parse(args);

    private static int Run(LoopbackOptions o) => o.InProcess ? InProcessLoopback.Run(InProcessOptions(o), Console.Out, o.Guest.Metrics) : RunTwoProcesses(o);

    private static InProcessLoopback.Options InProcessOptions(LoopbackOptions o)
    {
        var g = o.Guest;
        return new InProcessLoopback.Options(g.Seconds, g.QueueSize, g.Burst, g.FrameSize, g.Features, g.Wait);
    }

    private static CommandDefinition<LoopbackOptions> Define()
    {
        var g = new GuestCommand();
        var hostWait = new Option<string?>("--host-wait") { Description = "The host's wait strategy, when it should differ from --wait." };
        hostWait.AcceptOnlyFromAmong(Enum.GetValues<WaitStrategy>().Select(Cli.Text).ToArray());
        var inProcess = new Option<bool>("--in-process") { Description = "Run a driver thread and a device thread over one split ring in this process instead of two processes (4 KiB pages, one ring: --ring packed, --hugepages on and --queues are refused)." };
        var hostCpus = new Option<string?>("--host-cpus") { Description = "CPUs to pin the host's queue-pair workers to, pair N on the Nth (round robin), such as 1 or 2-3 (--cpus pins the guest's)." };
        var pin = new Option<string>("--pin")
        {
            Description = "auto: when neither --cpus nor --host-cpus is given and at least two CPUs are allowed, pin the guest's threads to the first half of them and the host's workers to the other half, so the two pollers never share a core; off: leave both to the scheduler (the default: pinning gained nothing measurable on a quiet machine, and costs much when other work shares the CPUs).",
            DefaultValueFactory = _ => "off",
        };
        pin.AcceptOnlyFromAmong("auto", "off");
        var command = new Command("loopback", "Run the two-process loopback: a rings host (vhost-user back-end, reflecting every frame) and a rings guest (virtio-net driver sending test frames), and print their figures. The host runs once and never restarts, so the guest does not ask for an inflight region.")
        {
            hostWait, inProcess, hostCpus, pin,
        };
        g.AddTo(command);
        g.Seconds.DefaultValueFactory = _ => LoopbackOptions.Defaults.Guest.Seconds;
        return new(command, r => new LoopbackOptions(
            g.Read(r, string.Empty),
            r.GetValue(hostWait) is { } w ? Cli.Parse<WaitStrategy>(w) : null,
            r.GetValue(inProcess),
            r.GetValue(hostCpus),
            r.GetValue(pin) == "auto"));
    }

    private static int RunTwoProcesses(LoopbackOptions o)
    {
        var json = o.Guest.Json;
        var self = Environment.ProcessPath ?? throw new InvalidOperationException("cannot find this executable");
        var dir = Directory.CreateTempSubdirectory("rings-loopback-");
        var socket = Path.Combine(dir.FullName, "vhost.sock");
        var hostStats = Path.Combine(dir.FullName, "host.json");
        var guestJson = Path.Combine(dir.FullName, "guest.json");
        Process? host = null, guest = null;
        var cancelled = false;

        // Children started from a terminal get its Ctrl-C too; from a script or a supervisor only
        // this process gets the signal. Either way the guest is told to stop sending: it drains
        // what is in flight, reports and leaves, and the host (--once) follows it.
        using var signals = StopSignals.Install(_ =>
        {
            cancelled = true;
            SignalChild(guest);
        });
        try
        {
            Console.WriteLine($"rings loopback: starting rings host and rings guest joined by vhost-user at {socket}");
            var (guestCpus, hostCpus) = CpusFor(o, CpuAffinity.AllowedCpus());
            if (guestCpus is not null && hostCpus is not null && o.Guest.Cpus is null && o.HostCpus is null)
            {
                Console.WriteLine($"rings loopback: guest pinned to CPU {guestCpus}, host to CPU {hostCpus} (--pin auto)");
            }

            var hostOptions = new HostOptions(socket, HostMode.Reflect, o.HostWait ?? o.Guest.Wait, o.Guest.Burst, Once: true, Stats: hostStats, Quiet: true, Metrics: o.Guest.Metrics, LogLevel: o.Guest.LogLevel, Queues: o.Guest.Queues, Cpus: hostCpus);
            host = Start(self, ["host", .. hostOptions.ToArguments()]);
            var ready = Stopwatch.StartNew();
            while (!File.Exists(socket))
            {
                if (host.HasExited || ready.Elapsed > TimeSpan.FromSeconds(15))
                {
                    Console.Error.WriteLine("rings loopback: the host did not start");
                    return 3;
                }

                Thread.Sleep(10);
            }

            // The host runs once (--once) and never restarts: an inflight region would record every
            // buffer for a recovery that cannot happen, so the guest does not ask for one.
            guest = Start(self, ["guest", .. (o.Guest with { Socket = socket, Json = guestJson, Metrics = null, Cpus = guestCpus, Inflight = false }).ToArguments()]);
            guest.WaitForExit();
            var guestExit = guest.ExitCode;

            // The host exits by itself once the guest has gone (--once); give it a moment.
            if (!host.WaitForExit(5000))
            {
                SignalChild(host);
                if (!host.WaitForExit(2000))
                {
                    host.Kill();
                }
            }

            if (File.Exists(hostStats))
            {
                var h = JsonDocument.Parse(File.ReadAllText(hostStats)).RootElement;
                var frames = h.GetProperty("frames").GetInt64();
                Console.WriteLine($"  host calls per frame {h.GetProperty("calls_per_frame").GetDouble(),10:0.0000}   (sent {h.GetProperty("calls_sent").GetInt64():N0}, suppressed {h.GetProperty("calls_suppressed").GetInt64():N0})");
                Console.WriteLine($"  host mean burst      {h.GetProperty("mean_burst").GetDouble(),10:0.0}   (forwarded {frames:N0}, dropped {h.GetProperty("dropped").GetInt64():N0})");
                if (json is not null && File.Exists(guestJson))
                {
                    var merged = JsonSerializer.Deserialize<Dictionary<string, JsonElement>>(File.ReadAllText(guestJson))!;
                    merged["host_calls_sent"] = h.GetProperty("calls_sent");
                    merged["host_calls_suppressed"] = h.GetProperty("calls_suppressed");
                    merged["host_mean_burst"] = h.GetProperty("mean_burst");
                    merged["calls_per_frame"] = h.GetProperty("calls_per_frame");
                    merged["host_pairs"] = h.GetProperty("pairs");
                    File.WriteAllText(json, JsonSerializer.Serialize(merged, new JsonSerializerOptions { WriteIndented = true }));
                }
            }
            else if (json is not null && File.Exists(guestJson))
            {
                File.Copy(guestJson, json, overwrite: true);
            }

            return cancelled && guestExit == 0 ? 0 : guestExit;
        }
        finally
        {
            foreach (var p in new[] { guest, host })
            {
                if (p is { HasExited: false })
                {
                    p.Kill(entireProcessTree: true);
                }

                p?.Dispose();
            }

            dir.Delete(recursive: true);
        }
    }

    private static Process Start(string self, string[] args)
    {
        var info = new ProcessStartInfo(self) { UseShellExecute = false };
        foreach (var a in args)
        {
            info.ArgumentList.Add(a);
        }

        return Process.Start(info) ?? throw new InvalidOperationException($"could not start {self} {args[0]}");
    }

    private static void SignalChild(Process? p)
    {
        if (p is { HasExited: false })
        {
            _ = Kill(p.Id, 15);
        }
    }

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static partial int Kill(int pid, int signal);
}
