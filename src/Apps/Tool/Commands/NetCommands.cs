using System.CommandLine;
using Rings.Linux.Net;
using Rings.Tool.Faults;

namespace Rings.Tool.Commands;

/// <summary>The options shared by <c>rings guest</c> and <c>rings loopback</c>, and the host/guest commands.</summary>
internal static class NetCommands
{
    public static WaitStrategy ParseWait(string? value) => value switch
    {
        "block" => WaitStrategy.Block,
        "adaptive" => WaitStrategy.Adaptive,
        _ => WaitStrategy.Poll,
    };

    public static Option<string> WaitOption(string @default) => new Option<string>("--wait")
    {
        Description = "How an idle side waits: poll (busy-poll), adaptive (spin, then sleep until notified) or block (sleep until notified).",
        DefaultValueFactory = _ => @default,
    }.AcceptOnly("poll", "adaptive", "block");

    private static Option<string> AcceptOnly(this Option<string> option, params string[] values)
    {
        option.AcceptOnlyFromAmong(values);
        return option;
    }

    /// <summary><c>--ring split|packed</c>, parsed into a <see cref="RingFormat"/> (its ToString gives the argument back).</summary>
    private static Option<RingFormat> RingOption()
    {
        var option = new Option<RingFormat>("--ring")
        {
            Description = "Ring format: split or packed.",
            DefaultValueFactory = _ => RingFormat.Split,
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

    /// <summary>The guest's traffic and feature options, reusable by the loopback command.</summary>
    internal sealed class GuestOptions
    {
        public Option<RingFormat> Ring { get; } = RingOption();
        public Option<string> EventIdx { get; } = new Option<string>("--event-idx") { Description = "Negotiate VIRTIO_F_EVENT_IDX (notification suppression by event index): on or off.", DefaultValueFactory = _ => "on" }.AcceptOnly("on", "off");
        public Option<string> InOrder { get; } = new Option<string>("--in-order") { Description = "Negotiate VIRTIO_F_IN_ORDER: on or off.", DefaultValueFactory = _ => "off" }.AcceptOnly("on", "off");
        public Option<string> Mergeable { get; } = new Option<string>("--mrg-rxbuf") { Description = "Negotiate VIRTIO_NET_F_MRG_RXBUF (frames spanning several receive buffers): on or off.", DefaultValueFactory = _ => "on" }.AcceptOnly("on", "off");
        public Option<string> Indirect { get; } = new Option<string>("--indirect") { Description = "Negotiate VIRTIO_F_INDIRECT_DESC: on or off.", DefaultValueFactory = _ => "on" }.AcceptOnly("on", "off");
        public Option<int> QueueSize { get; } = new("--queue-size") { Description = "Descriptors per ring (split: a power of two).", DefaultValueFactory = _ => 256 };
        public Option<int> Burst { get; } = new("--burst") { Description = "Most frames published per burst.", DefaultValueFactory = _ => 32 };
        public Option<int> FrameSize { get; } = new("--frame-size") { Description = "Bytes per Ethernet frame (without the 12-byte virtio-net header).", DefaultValueFactory = _ => 64 };
        public Option<double> Rate { get; } = new("--rate") { Description = "Frames per second to offer; 0 sends as fast as the rings allow.", DefaultValueFactory = _ => 0 };
        public Option<double> Seconds { get; } = new("--seconds") { Description = "How long to send.", DefaultValueFactory = _ => 5 };
        public Option<long> Frames { get; } = new("--frames") { Description = "Stop after this many frames (0: no limit).", DefaultValueFactory = _ => 0 };
        public Option<string> Wait { get; } = WaitOption("poll");
        public Option<string?> Json { get; } = new("--json") { Description = "Also write the figures to this JSON file." };
        public Option<int> Memory { get; } = new("--memory") { Description = "Shared memory to create, MiB.", DefaultValueFactory = _ => 64 };
        public Option<double> Drain { get; } = new("--drain") { Description = "Seconds to wait for frames still in flight after sending stops.", DefaultValueFactory = _ => 2 };
        public Option<int> Window { get; } = new("--window") { Description = "Most frames in flight; 0: as many as the posted receive buffers hold, so a back-end that drops when the receive queue is empty (as DPDK's does) loses none. -1: no limit.", DefaultValueFactory = _ => 0 };

        public void AddTo(Command c)
        {
            foreach (var o in new Option[] { Ring, EventIdx, InOrder, Mergeable, Indirect, QueueSize, Burst, FrameSize, Rate, Seconds, Frames, Wait, Json, Memory, Drain, Window })
            {
                c.Options.Add(o);
            }
        }

        public GuestRunner.Options Read(ParseResult r, string socket) => new(
            socket,
            r.GetValue(Ring),
            (r.GetValue(EventIdx) == "on" ? VirtioFeatures.EventIndex : VirtioFeatures.None)
                | (r.GetValue(InOrder) == "on" ? VirtioFeatures.InOrder : VirtioFeatures.None)
                | (r.GetValue(Mergeable) == "on" ? VirtioFeatures.NetMergeRxBuffers : VirtioFeatures.None)
                | (r.GetValue(Indirect) == "on" ? VirtioFeatures.IndirectDescriptors : VirtioFeatures.None),
            r.GetValue(QueueSize),
            r.GetValue(Burst),
            r.GetValue(FrameSize),
            r.GetValue(Rate),
            r.GetValue(Seconds),
            r.GetValue(Frames),
            ParseWait(r.GetValue(Wait)),
            r.GetValue(Json),
            r.GetValue(Memory),
            r.GetValue(Drain),
            r.GetValue(Window));

        /// <summary>The same settings as command-line arguments for a child <c>rings guest</c>.</summary>
        public IEnumerable<string> Forward(ParseResult r)
        {
            foreach (var o in new Option[] { Ring, EventIdx, InOrder, Mergeable, Indirect, QueueSize, Burst, FrameSize, Rate, Seconds, Frames, Wait, Memory, Drain, Window })
            {
                var value = r.GetResult(o)?.GetValueOrDefault<object>();
                if (value is not null)
                {
                    yield return o.Name;
                    yield return Convert.ToString(value, System.Globalization.CultureInfo.InvariantCulture)!;
                }
            }
        }
    }

    public static Command Guest()
    {
        var socket = new Option<string>("--socket") { Description = "Path of the vhost-user back-end's Unix socket.", Required = true };
        var g = new GuestOptions();

        // Test tooling, hidden from help: a guest that attacks the back-end (see HostileGuest).
        var misbehave = new Option<string?>("--misbehave") { Hidden = true };
        misbehave.AcceptOnlyFromAmong(HostileGuest.Kinds);
        var command = new Command("guest", "The guest side: create shared memory, connect to a vhost-user back-end as its virtio-net driver, send numbered test frames and verify every one that comes back.")
        {
            socket, misbehave,
        };
        g.AddTo(command);
        command.SetAction(r =>
        {
            var o = g.Read(r, r.GetValue(socket)!);
            if (o.Validate() is { } error)
            {
                Console.Error.WriteLine($"rings guest: {error}");
                return 2;
            }

            if (r.GetValue(misbehave) is { } kind)
            {
                return HostileGuest.Run(o, kind, Console.Out, Console.Error);
            }

            return GuestRunner.Run(o, Console.Out, Console.Error);
        });
        return command;
    }

    public static Command Host()
    {
        var socket = new Option<string>("--socket") { Description = "Path of the Unix socket to serve vhost-user on (created owner-only).", Required = true };
        var mode = new Option<string>("--mode") { Description = "reflect: every frame goes back to its sender; patch: two front-ends are wired to each other.", DefaultValueFactory = _ => "reflect" }.AcceptOnly("reflect", "patch");
        var wait = WaitOption("poll");
        var burst = new Option<int>("--burst") { Description = "Most frames forwarded per burst.", DefaultValueFactory = _ => 32 };
        var once = new Option<bool>("--once") { Description = "Exit after the first front-end leaves." };
        var stats = new Option<string?>("--stats") { Description = "Write each session's figures to this JSON file when it ends." };
        var verbose = new Option<bool>("--verbose") { Description = "Log the vhost-user conversation." };
        var quiet = new Option<bool>("--quiet") { Description = "No live progress; only each session's closing figures." };

        // Test tooling, hidden from help: a device that lies to its driver (see HostileDevice).
        var misbehave = new Option<string?>("--misbehave") { Hidden = true };
        misbehave.AcceptOnlyFromAmong(HostileDevice.Kinds);
        var command = new Command("host", "The host side: serve vhost-user on a Unix socket and run the vhost-net data path for each front-end that connects.")
        {
            socket, mode, wait, burst, once, stats, verbose, quiet, misbehave,
        };
        command.SetAction(r =>
        {
            var b = r.GetValue(burst);
            if (b < 1 || b > 4096)
            {
                Console.Error.WriteLine("rings host: --burst must be between 1 and 4096");
                return 2;
            }

            return HostRunner.Run(new HostRunner.Options(r.GetValue(socket)!, r.GetValue(mode)!, ParseWait(r.GetValue(wait)), b, r.GetValue(once), r.GetValue(stats), r.GetValue(verbose), r.GetValue(misbehave), r.GetValue(quiet)), Console.Out, Console.Error);
        });
        return command;
    }
}
