using System.CommandLine;
using Rings.Linux.Net;
using Rings.Linux.Plumbing;
using Rings.Testing.Traffic;

namespace Rings.Tool.Commands;

/// <summary>
/// Every option of <c>rings guest</c>, typed. The defaults here are the command's defaults;
/// <see cref="ToArguments"/> writes the command line that <see cref="GuestCommand.Parse"/> reads back.
/// </summary>
/// <param name="Socket">The back-end's socket (empty in <c>rings loopback</c>, which makes its own).</param>
/// <param name="Ring">The ring format to ask for.</param>
/// <param name="Features">
/// The optional features to ask for, of <see cref="Switchable"/> (each has its <c>on</c>/<c>off</c>
/// option); VERSION_1, MAC and the ring format's bit are added when connecting.
/// </param>
/// <param name="QueueSize">Descriptors per ring.</param>
/// <param name="Burst">Most frames per burst.</param>
/// <param name="FrameSize">Bytes per frame, without the virtio-net header.</param>
/// <param name="Rate">Frames per second offered; 0 for as fast as possible.</param>
/// <param name="Seconds">How long to send.</param>
/// <param name="Frames">Stop after this many frames; 0 for no limit.</param>
/// <param name="Wait">How an idle side waits.</param>
/// <param name="Json">Where to write the figures, if anywhere.</param>
/// <param name="MemoryMiB">Shared memory to create.</param>
/// <param name="HugePages">Whether the shared memory comes from 2 MiB hugepages: auto (when reserved), on or off.</param>
/// <param name="DrainSeconds">How long to wait for frames in flight after sending stops.</param>
/// <param name="Window">Most frames in flight: 0 the receive buffers' worth, -1 no limit.</param>
/// <param name="ReconnectSeconds">How long to keep reconnecting after the back-end went away (0: exit at once).</param>
/// <param name="Inflight">Ask for the back-end's inflight region (INFLIGHT_SHMFD), so a restart completes what was in flight exactly once.</param>
/// <param name="Metrics">Where to serve Prometheus text (a loopback ADDRESS:PORT), or null; in <c>rings loopback</c>, the host's.</param>
/// <param name="LogLevel">Least severe log events written.</param>
/// <param name="Queues">Queue pairs to set up, each with a traffic thread of its own sending a flow that hashes to it.</param>
/// <param name="Cpus">CPUs to pin the pairs' traffic threads to (pair N on the Nth, round robin), or null.</param>
/// <param name="StartDelaySeconds">Seconds to wait after connecting before sending.</param>
/// <param name="Verify">How much of every frame is written and checked: all of it, or its head and one whole frame in 64.</param>
/// <param name="GsoSize">0 to send test frames; otherwise send TCP/IPv4 GSO frames of <c>FrameSize</c> bytes with this MSS (partial checksum, gso_type TCPV4), asking for CSUM and HOST_TSO4.</param>
internal sealed record GuestOptions(
    string Socket,
    RingFormat Ring = default,
    VirtioFeatures Features = GuestOptions.DefaultFeatures,
    int QueueSize = 256,
    int Burst = 32,
    int FrameSize = 64,
    double Rate = 0,
    double Seconds = 5,
    long Frames = 0,
    WaitStrategy Wait = WaitStrategy.Poll,
    string? Json = null,
    int MemoryMiB = 64,
    HugePages HugePages = HugePages.Auto,
    double DrainSeconds = 2,
    int Window = 0,
    double ReconnectSeconds = 0,
    bool Inflight = true,
    string? Metrics = null,
    Microsoft.Extensions.Logging.LogLevel LogLevel = Microsoft.Extensions.Logging.LogLevel.Warning,
    int Queues = 1,
    string? Cpus = null,
    int GsoSize = 0,
    double StartDelaySeconds = 0,
    Verification Verify = Verification.Full)
{
    /// <summary>The features asked for unless switched off: EVENT_IDX, MRG_RXBUF and INDIRECT_DESC.</summary>
    public const VirtioFeatures DefaultFeatures = VirtioFeatures.EventIndex | VirtioFeatures.NetMergeRxBuffers | VirtioFeatures.IndirectDescriptors;

    /// <summary>The features the command line switches on and off, each with its option.</summary>
    public static IReadOnlyList<(string Option, VirtioFeatures Feature)> Switchable { get; } =
    [
        ("--event-idx", VirtioFeatures.EventIndex),
        ("--in-order", VirtioFeatures.InOrder),
        ("--mrg-rxbuf", VirtioFeatures.NetMergeRxBuffers),
        ("--indirect", VirtioFeatures.IndirectDescriptors),
    ];

    /// <summary>Whether <paramref name="feature"/> is asked for.</summary>
    public bool Has(VirtioFeatures feature) => (Features & feature) == feature;

    /// <summary>What is wrong with the options, or null.</summary>
    public string? Validate()
    {
        if (!Ring.IsValidSize(QueueSize))
        {
            return $"--queue-size must be {Ring.SizeRule} for {Ring} rings";
        }

        if ((Features & ~Switchable.Aggregate(VirtioFeatures.None, (all, s) => all | s.Feature)) != 0)
        {
            return $"features 0x{(ulong)Features:x} include some that no option switches (only EVENT_IDX, IN_ORDER, MRG_RXBUF and INDIRECT_DESC are)";
        }

        if (Burst < 1 || Burst > QueueSize)
        {
            return $"--burst must be between 1 and the queue size ({QueueSize})";
        }

        if (FrameSize < TestFrame.MinSize || FrameSize > 65535 - 12)
        {
            return $"--frame-size must be between {TestFrame.MinSize} and 65523";
        }

        if (Rate < 0 || !(Seconds > 0) || Seconds > 86400 || Frames < 0)
        {
            return "--rate must be 0 or more, --seconds between 0 and 86400, --frames 0 or more";
        }

        if (!(DrainSeconds >= 0) || DrainSeconds > 3600)
        {
            return "--drain must be between 0 and 3600 seconds";
        }

        if (!(StartDelaySeconds >= 0) || StartDelaySeconds > 3600)
        {
            return "--start-delay must be between 0 and 3600 seconds";
        }

        if (GsoSize < 0 || GsoSize > ushort.MaxValue || (GsoSize > 0 && FrameSize < TestFrame.TcpHeadersSize + 16))
        {
            return $"--gso-size must be between 0 (off) and 65535, and with it --frame-size at least {TestFrame.TcpHeadersSize + 16} (Ethernet, IPv4 and TCP headers and 16 bytes)";
        }

        if (GsoSize > 0 && Queues > 1)
        {
            return "--gso-size sends one TCP flow, which hashes to one queue pair: use it with --queues 1";
        }

        if (Window < -1)
        {
            return "--window must be -1 (no limit), 0 (the receive buffers) or more";
        }

        if (MemoryMiB < 4 || MemoryMiB > 65536)
        {
            return "--memory must be between 4 and 65536 MiB";
        }

        if (!(ReconnectSeconds >= 0) || ReconnectSeconds > 86400)
        {
            return "--reconnect must be between 0 and 86400 seconds";
        }

        if (Queues is < 1 or > HostOptions.MaxQueues)
        {
            return $"--queues must be between 1 and {HostOptions.MaxQueues}";
        }

        if (Queues > 1 && ReconnectSeconds > 0)
        {
            return "--reconnect works with one queue pair (--queues 1)";
        }

        if (!SwitchCommand.TryParseCpus(Cpus, out _, out var cpuError))
        {
            return cpuError;
        }

        return Monitoring.Validate(Metrics);
    }

    /// <summary>The command line (after <c>rings guest</c>) that parses back to these options; every value written out.</summary>
    public IEnumerable<string> ToArguments()
    {
        if (Socket.Length > 0)
        {
            yield return "--socket";
            yield return Socket;
        }

        yield return "--ring";
        yield return Ring.Name;
        foreach (var (option, feature) in Switchable)
        {
            yield return option;
            yield return Cli.OnOff(Has(feature));
        }

        string[] settings =
        [
            "--queue-size", Cli.Number(QueueSize),
            "--burst", Cli.Number(Burst),
            "--frame-size", Cli.Number(FrameSize),
            "--rate", Cli.Number(Rate),
            "--seconds", Cli.Number(Seconds),
            "--frames", Cli.Number(Frames),
            "--wait", Cli.Text(Wait),
            "--memory", Cli.Number(MemoryMiB),
            "--hugepages", Cli.Text(HugePages),
            "--drain", Cli.Number(DrainSeconds),
            "--window", Cli.Number(Window),
            "--verify", Cli.Text(Verify),
        ];
        foreach (var a in settings)
        {
            yield return a;
        }

        if (Json is not null)
        {
            yield return "--json";
            yield return Json;
        }

        if (Queues != 1)
        {
            yield return "--queues";
            yield return Cli.Number(Queues);
        }

        if (Cpus is not null)
        {
            yield return "--cpus";
            yield return Cpus;
        }

        // Options of rings guest only: written when not the default, so rings loopback reads the rest.
        if (ReconnectSeconds != 0)
        {
            yield return "--reconnect";
            yield return Cli.Number(ReconnectSeconds);
        }

        if (GsoSize != 0)
        {
            yield return "--gso-size";
            yield return Cli.Number(GsoSize);
        }

        if (StartDelaySeconds != 0)
        {
            yield return "--start-delay";
            yield return Cli.Number(StartDelaySeconds);
        }

        if (!Inflight)
        {
            yield return "--inflight";
            yield return Cli.OnOff(Inflight);
        }

        if (Metrics is not null)
        {
            yield return "--metrics";
            yield return Metrics;
        }

        if (LogLevel != Microsoft.Extensions.Logging.LogLevel.Warning)
        {
            yield return "--log-level";
            yield return Cli.Text(LogLevel);
        }
    }
}

/// <summary>The options of <c>rings guest</c>; <c>rings loopback</c> takes the same ones but <c>--socket</c>.</summary>
internal sealed class GuestCommand
{
    private static readonly GuestOptions Defaults = new(string.Empty);

    public Option<RingFormat> Ring { get; } = RingOption();
    public Option<string> EventIdx { get; } = FeatureSwitch(VirtioFeatures.EventIndex, "Negotiate VIRTIO_F_EVENT_IDX (notification suppression by event index): on or off.");
    public Option<string> InOrder { get; } = FeatureSwitch(VirtioFeatures.InOrder, "Negotiate VIRTIO_F_IN_ORDER: on or off.");
    public Option<string> Mergeable { get; } = FeatureSwitch(VirtioFeatures.NetMergeRxBuffers, "Negotiate VIRTIO_NET_F_MRG_RXBUF (frames spanning several receive buffers): on or off.");
    public Option<string> Indirect { get; } = FeatureSwitch(VirtioFeatures.IndirectDescriptors, "Negotiate VIRTIO_F_INDIRECT_DESC: on or off.");
    public Option<int> QueueSize { get; } = new("--queue-size") { Description = "Descriptors per ring (split: a power of two).", DefaultValueFactory = _ => Defaults.QueueSize };
    public Option<int> Burst { get; } = new("--burst") { Description = "Most frames published per burst.", DefaultValueFactory = _ => Defaults.Burst };
    public Option<int> FrameSize { get; } = new("--frame-size") { Description = "Bytes per Ethernet frame (without the 12-byte virtio-net header).", DefaultValueFactory = _ => Defaults.FrameSize };
    public Option<double> Rate { get; } = new("--rate") { Description = "Frames per second to offer; 0 sends as fast as the rings allow.", DefaultValueFactory = _ => Defaults.Rate };
    public Option<double> Seconds { get; } = new("--seconds") { Description = "How long to send.", DefaultValueFactory = _ => Defaults.Seconds };
    public Option<long> Frames { get; } = new("--frames") { Description = "Stop after this many frames (0: no limit).", DefaultValueFactory = _ => Defaults.Frames };
    public Option<string> Wait { get; } = Cli.Choice("--wait", WaitDescription, Defaults.Wait);
    public Option<string?> Json { get; } = new("--json") { Description = "Also write the figures to this JSON file." };
    public Option<int> Memory { get; } = new("--memory") { Description = "Shared memory to create, MiB.", DefaultValueFactory = _ => Defaults.MemoryMiB };
    public Option<string> HugePages { get; } = Cli.Choice("--hugepages", HugePagesDescription, Defaults.HugePages);
    public Option<double> Drain { get; } = new("--drain") { Description = "Seconds to wait for frames still in flight after sending stops.", DefaultValueFactory = _ => Defaults.DrainSeconds };
    public Option<string?> Metrics { get; } = Monitoring.MetricsOption();
    public Option<string> LogLevel { get; } = Monitoring.LogLevelOption(Defaults.LogLevel);
    public Option<int> Queues { get; } = new("--queues") { Description = $"Queue pairs to set up, 1 to {HostOptions.MaxQueues} (the device must offer VIRTIO_NET_F_MQ and as many pairs). Each pair gets a traffic thread sending a flow whose hash (Toeplitz, the RSS default table) picks that pair.", DefaultValueFactory = _ => Defaults.Queues };
    public Option<string?> Cpus { get; } = new("--cpus") { Description = "CPUs to pin the queue pairs' traffic threads to, pair N on the Nth (round robin), such as 0,1 or 0-3." };
    public Option<string> Verify { get; } = Cli.Choice("--verify", VerifyDescription, Defaults.Verify);
    public Option<int> Window { get; } = new("--window") { Description = "Most frames in flight; 0: as many as the posted receive buffers hold, so a back-end that drops when the receive queue is empty (as DPDK's does) loses none. -1: no limit.", DefaultValueFactory = _ => Defaults.Window };

    /// <summary>What <c>--verify</c> means.</summary>
    public const string VerifyDescription = "How much of each frame the guest writes and checks: full (every byte of every frame: fill and checksum; what the tests use) or sample (every frame's sequence number, EtherType and length, so loss, duplicates and reordering are still counted on every frame, but the fill and checksum of only one frame in 64; the guest then touches only the head of each frame, as a packet generator does, which is what rings bench measures with).";

    /// <summary>What <c>--hugepages</c> means.</summary>
    public const string HugePagesDescription = "Take the shared memory from 2 MiB hugepages (rounded up to whole pages): auto uses them when enough are reserved (/proc/sys/vm/nr_hugepages) and says so in one line when it falls back to 4 KiB pages; on fails when too few are free; off never uses them.";

    /// <summary>What <c>--wait</c> means, in every command that has it.</summary>
    public const string WaitDescription = "How an idle side waits: poll (busy-poll), adaptive (spin, then sleep until notified) or block (sleep until notified).";

    /// <summary>The <c>rings guest</c> command.</summary>
    public static Command Create() => Define().Runs(o => o.Validate(), o => GuestRunner.Run(o, Console.Out, Console.Error));

    /// <summary>Reads a <c>rings guest</c> command line (after the command name) into options.</summary>
    /// <exception cref="ArgumentException">The arguments do not parse.</exception>
    public static GuestOptions Parse(IReadOnlyList<string> args) => Define().Parse(args);

    public void AddTo(Command c)
    {
        foreach (var o in new Option[] { Ring, EventIdx, InOrder, Mergeable, Indirect, QueueSize, Burst, FrameSize, Rate, Seconds, Frames, Wait, Json, Memory, HugePages, Drain, Window, Verify, Queues, Cpus, Metrics, LogLevel })
        {
            c.Options.Add(o);
        }
    }

    public GuestOptions Read(ParseResult r, string socket) => new(
        socket,
        r.GetValue(Ring),
        On(r, EventIdx) | On(r, InOrder) | On(r, Mergeable) | On(r, Indirect),
        r.GetValue(QueueSize),
        r.GetValue(Burst),
        r.GetValue(FrameSize),
        r.GetValue(Rate),
        r.GetValue(Seconds),
        r.GetValue(Frames),
        Cli.Parse<WaitStrategy>(r.GetValue(Wait)!),
        r.GetValue(Json),
        r.GetValue(Memory),
        Cli.Parse<HugePages>(r.GetValue(HugePages)!),
        r.GetValue(Drain),
        r.GetValue(Window),
        Metrics: r.GetValue(Metrics),
        LogLevel: Cli.Parse<Microsoft.Extensions.Logging.LogLevel>(r.GetValue(LogLevel)!),
        Queues: r.GetValue(Queues),
        Cpus: r.GetValue(Cpus),
        Verify: Cli.Parse<Verification>(r.GetValue(Verify)!));

    private static CommandDefinition<GuestOptions> Define()
    {
        var socket = new Option<string>("--socket") { Description = "Path of the vhost-user back-end's Unix socket.", Required = true };
        var reconnect = new Option<double>("--reconnect") { Description = "When the back-end goes away, reconnect (every 100 ms, for up to this many seconds each time) and resume from the rings in the guest's memory instead of exiting; 0 exits at once.", DefaultValueFactory = _ => Defaults.ReconnectSeconds };
        var inflight = Cli.Switch("--inflight", "Ask for the back-end's inflight region (VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD) and hand it back after a restart, so the back-end completes exactly what was in flight: on or off.", Defaults.Inflight);
        var gso = new Option<int>("--gso-size") { Description = "Send TCP/IPv4 GSO frames of --frame-size bytes (up to 65523) to be cut into segments of this MSS (partial checksum, gso_type TCPV4, 169.254.250.1:40000 to 169.254.250.2:5001) instead of test frames; needs a back-end that offers CSUM and HOST_TSO4 (a rings switch port with offload=on). 0: off. What comes back is not checked as test frames.", DefaultValueFactory = _ => Defaults.GsoSize };
        var startDelay = new Option<double>("--start-delay") { Description = "Seconds to wait after connecting before sending: a guest on one port of a rings switch can let the guest on the other port attach all its queue pairs first, so no frame of a flow arrives on another pair while the flow's own pair is still being set up.", DefaultValueFactory = _ => Defaults.StartDelaySeconds };
        var g = new GuestCommand();
        var command = new Command("guest", "The guest side: create shared memory, connect to a vhost-user back-end as its virtio-net driver, send numbered test frames and verify every one that comes back.")
        {
            socket, reconnect, inflight, gso, startDelay,
        };
        g.AddTo(command);
        return new(command, r => g.Read(r, r.GetValue(socket)!) with { ReconnectSeconds = r.GetValue(reconnect), Inflight = r.GetValue(inflight) == "on", GsoSize = r.GetValue(gso), StartDelaySeconds = r.GetValue(startDelay) });
    }

    // The feature an on/off option stands for, when it is on.
    private static VirtioFeatures On(ParseResult r, Option<string> option) =>
        r.GetValue(option) == "on" ? GuestOptions.Switchable.Single(s => s.Option == option.Name).Feature : VirtioFeatures.None;

    private static Option<string> FeatureSwitch(VirtioFeatures feature, string description) =>
        Cli.Switch(GuestOptions.Switchable.Single(s => s.Feature == feature).Option, description, Defaults.Has(feature));

    /// <summary><c>--ring split|packed</c>, parsed into a <see cref="RingFormat"/> (its name gives the argument back).</summary>
    private static Option<RingFormat> RingOption()
    {
        var option = new Option<RingFormat>("--ring")
        {
            Description = "Ring format: split or packed.",
            DefaultValueFactory = _ => Defaults.Ring,
            CustomParser = r =>
            {
                var token = r.Tokens.Count == 1 ? r.Tokens[0].Value : string.Empty;
                if (RingFormat.TryParse(token, out var format))
                {
                    return format;
                }

                r.AddError($"--ring must be one of: {string.Join(", ", RingFormat.All)} (got '{token}')");
                return default;
            },
        };
        option.CompletionSources.Add(RingFormat.All.Select(f => f.Name).ToArray());
        return option;
    }
}
