using System.CommandLine;
using Rings.Linux.Device;
using Rings.Linux.Net;
using Rings.Linux.Ports;

namespace Rings.Tool.Commands;

/// <summary>Where <c>rings host</c> sends the frames a front-end transmits.</summary>
internal enum HostMode
{
    /// <summary>Back into the same front-end's receive queue.</summary>
    Reflect,

    /// <summary>Into the receive queue of a second front-end, and its frames back (two at a time).</summary>
    Patch,
}

/// <summary>
/// Every option of <c>rings host</c>, typed; <see cref="ToArguments"/> writes the command line
/// that <see cref="HostCommand.Parse"/> reads back.
/// </summary>
/// <param name="Socket">Where to serve vhost-user (with <paramref name="Connect"/>, where the front-end listens).</param>
/// <param name="Mode">Reflect or patch.</param>
/// <param name="Wait">How an idle worker waits.</param>
/// <param name="Burst">Most frames per burst.</param>
/// <param name="Once">Exit after the first front-end leaves.</param>
/// <param name="Stats">Where to write each session's figures, if anywhere.</param>
/// <param name="Verbose">Log the vhost-user conversation.</param>
/// <param name="Quiet">No live progress.</param>
/// <param name="AllowUid">User ids whose front-ends are served, comma-separated, or null for any.</param>
/// <param name="Connect">Client mode: connect to a front-end that listens on <paramref name="Socket"/>, retrying every second.</param>
/// <param name="MaxMemory">Each front-end's memory budget, MiB.</param>
/// <param name="TrustUnsealed">Accept front-end memory not sealed against shrinking.</param>
/// <param name="Metrics">Where to serve Prometheus text (a loopback ADDRESS:PORT), or null.</param>
/// <param name="LogLevel">Least severe log events written (<c>--verbose</c> lowers it to debug).</param>
/// <param name="Queues">Queue pairs offered to each front-end (GET_QUEUE_NUM, VIRTIO_NET_F_MQ above 1), each served by a worker of its own.</param>
/// <param name="Cpus">CPUs to pin the pairs' workers to (pair N on the Nth, round robin), such as 2,3 or 0-3, or null.</param>
internal sealed record HostOptions(
    string Socket,
    HostMode Mode = HostMode.Reflect,
    WaitStrategy Wait = WaitStrategy.Poll,
    int Burst = 32,
    bool Once = false,
    string? Stats = null,
    bool Verbose = false,
    bool Quiet = false,
    string? AllowUid = null,
    bool Connect = false,
    int MaxMemory = (int)(VhostUserBackendOptions.DefaultMaxMemoryBytes >> 20),
    bool TrustUnsealed = false,
    string? Metrics = null,
    Microsoft.Extensions.Logging.LogLevel LogLevel = Microsoft.Extensions.Logging.LogLevel.Warning,
    int Queues = 1,
    string? Cpus = null)
{
    /// <summary>Most queue pairs a front-end may have (the session's limit).</summary>
    public const int MaxQueues = 128;

    /// <summary>What is wrong with the options, or null.</summary>
    public string? Validate() =>
        Socket.Length == 0 ? "give --socket PATH (serve) or --connect PATH (connect to a front-end that listens)"
        : Burst is < 1 or > 4096 ? "--burst must be between 1 and 4096"
        : Queues is < 1 or > MaxQueues ? $"--queues must be between 1 and {MaxQueues}"
        : !SwitchCommand.TryParseCpus(Cpus, out _, out var cpuError) ? cpuError
        : Connect && Mode == HostMode.Patch ? "--connect serves one front-end; --mode patch needs two (serve with --socket)"
        : MaxMemory is < 1 or > VhostUserPort.MaxMemoryMib ? $"--max-memory must be between 1 and {VhostUserPort.MaxMemoryMib} MiB"
        : Cli.TryParseUids(AllowUid, out _) ?? Monitoring.Validate(Metrics);

    /// <summary>The command line (after <c>rings host</c>) that parses back to these options.</summary>
    public IEnumerable<string> ToArguments() =>
    [
        Connect ? "--connect" : "--socket", Socket, "--mode", Cli.Text(Mode), "--wait", Cli.Text(Wait), "--burst", Cli.Number(Burst),
        .. Cli.Flag("--once", Once),
        .. Cli.Value("--stats", Stats),
        .. Cli.Flag("--verbose", Verbose),
        .. Cli.Flag("--quiet", Quiet),
        .. Cli.Value("--allow-uid", AllowUid),
        .. Cli.Value("--max-memory", MaxMemory != new HostOptions(Socket).MaxMemory ? Cli.Number(MaxMemory) : null),
        .. Cli.Flag("--trust-unsealed", TrustUnsealed),
        .. Cli.Value("--metrics", Metrics),
        .. Cli.Value("--log-level", LogLevel != Microsoft.Extensions.Logging.LogLevel.Warning ? Cli.Text(LogLevel) : null),
        .. Cli.Value("--queues", Queues != 1 ? Cli.Number(Queues) : null),
        .. Cli.Value("--cpus", Cpus),
    ];
}

/// <summary>The <c>rings host</c> command.</summary>
internal static class HostCommand
{
    public static Command Create() => Define().Runs(o => o.Validate(), o => HostRunner.Run(o, Console.Out, Console.Error));

    /// <summary>Reads a <c>rings host</c> command line (after the command name) into options.</summary>
    /// <exception cref="ArgumentException">The arguments do not parse.</exception>
    public static HostOptions Parse(IReadOnlyList<string> args) => Define().Parse(args);

    private static CommandDefinition<HostOptions> Define()
    {
        var defaults = new HostOptions(string.Empty);
        var socket = new Option<string?>("--socket") { Description = "Path of the Unix socket to serve vhost-user on (created owner-only)." };
        var connect = new Option<string?>("--connect") { Description = "Client mode: connect to a front-end that listens on this Unix socket (QEMU server=on, DPDK virtio-user server=1), retrying every second, and again after each disconnect." };
        var mode = Cli.Choice("--mode", "reflect: every frame goes back to its sender; patch: two front-ends are wired to each other.", defaults.Mode);
        var wait = Cli.Choice("--wait", GuestCommand.WaitDescription, defaults.Wait);
        var burst = new Option<int>("--burst") { Description = "Most frames forwarded per burst.", DefaultValueFactory = _ => defaults.Burst };
        var once = new Option<bool>("--once") { Description = "Exit after the first front-end leaves." };
        var stats = new Option<string?>("--stats") { Description = "Write each session's figures to this JSON file when it ends." };
        var verbose = new Option<bool>("--verbose") { Description = "Log the vhost-user conversation." };
        var quiet = new Option<bool>("--quiet") { Description = "No live progress; only each session's closing figures." };
        var allowUid = new Option<string?>("--allow-uid") { Description = Cli.AllowUidDescription };
        var maxMemory = new Option<int>("--max-memory") { Description = "Each front-end's memory budget in MiB (the regions it may have mapped at once, and its inflight region).", DefaultValueFactory = _ => defaults.MaxMemory };
        var trustUnsealed = new Option<bool>("--trust-unsealed") { Description = "Accept front-end memory that is not sealed against shrinking (DPDK without hugepages, hugetlbfs files), trusting every front-end not to truncate it: one that does crashes the host." };
        var metrics = Monitoring.MetricsOption();
        var logLevel = Monitoring.LogLevelOption(defaults.LogLevel);
        var queues = new Option<int>("--queues") { Description = $"Queue pairs offered to each front-end, 1 to {HostOptions.MaxQueues} (GET_QUEUE_NUM; above 1 VIRTIO_NET_F_MQ is offered too). Each pair the front-end runs and enables gets a worker thread of its own; pairs it leaves disabled cost nothing. Patch mode wires pair 0 only.", DefaultValueFactory = _ => defaults.Queues };
        var cpus = new Option<string?>("--cpus") { Description = "CPUs to pin the queue pairs' workers to, pair N on the Nth (round robin), such as 2,3 or 0-3." };
        var command = new Command("host", "The host side: serve vhost-user on a Unix socket (or, with --connect, connect to a front-end that listens) and run the vhost-net data path for each front-end. Offers the inflight region, so a restarted host completes exactly what was in flight.")
        {
            socket, connect, mode, wait, burst, once, stats, verbose, quiet, allowUid, maxMemory, trustUnsealed, metrics, logLevel, queues, cpus,
        };
        command.Validators.Add(r =>
        {
            if ((r.GetValue(socket) is null) == (r.GetValue(connect) is null))
            {
                r.AddError("give exactly one of --socket PATH (serve) and --connect PATH (connect to a front-end that listens)");
            }
        });
        return new(command, r => new HostOptions(
            r.GetValue(connect) ?? r.GetValue(socket) ?? string.Empty,
            Cli.Parse<HostMode>(r.GetValue(mode)!),
            Cli.Parse<WaitStrategy>(r.GetValue(wait)!),
            r.GetValue(burst),
            r.GetValue(once),
            r.GetValue(stats),
            r.GetValue(verbose),
            r.GetValue(quiet),
            r.GetValue(allowUid),
            r.GetValue(connect) is not null,
            r.GetValue(maxMemory),
            r.GetValue(trustUnsealed),
            r.GetValue(metrics),
            Cli.Parse<Microsoft.Extensions.Logging.LogLevel>(r.GetValue(logLevel)!),
            r.GetValue(queues),
            r.GetValue(cpus)));
    }
}
