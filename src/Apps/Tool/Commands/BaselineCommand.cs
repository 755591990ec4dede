using System.CommandLine;
using Rings.Testing.Traffic;

namespace Rings.Tool.Commands;

/// <summary>
/// The options of the hidden <c>rings baseline-echo</c>, which <c>rings baseline</c> starts as its
/// peer; <see cref="ToArguments"/> writes the command line that <see cref="BaselineCommand.ParseEcho"/> reads back.
/// </summary>
/// <param name="Transport">AF_UNIX datagrams or UDP.</param>
/// <param name="Address">The measuring side's socket path (unix) or port (udp).</param>
internal sealed record BaselineEchoOptions(KernelBaseline.Transport Transport, string Address)
{
    /// <summary>The command line (after <c>rings baseline-echo</c>).</summary>
    public IEnumerable<string> ToArguments() => ["--transport", Cli.Text(Transport), "--address", Address];
}

/// <summary><c>rings baseline</c> and its hidden echo side.</summary>
internal static class BaselineCommand
{
    public static IEnumerable<Command> Create()
    {
        var transport = Cli.Choice("--transport", "unix (AF_UNIX datagrams) or udp (127.0.0.1).", KernelBaseline.Transport.Unix);
        var frameSize = new Option<int>("--frame-size") { Description = "Bytes per frame.", DefaultValueFactory = _ => 64 };
        var burst = new Option<int>("--burst") { Description = "Frames in flight (1 is a ping-pong).", DefaultValueFactory = _ => 32 };
        var seconds = new Option<double>("--seconds") { Description = "How long to run.", DefaultValueFactory = _ => 3 };
        var measure = new Command("baseline", "Exchange the same test frames between two processes through the kernel (AF_UNIX datagrams or UDP on 127.0.0.1), for comparison with the rings.")
        {
            transport, frameSize, burst, seconds,
        };
        measure.SetAction(r =>
        {
            var fs = r.GetValue(frameSize);
            var b = r.GetValue(burst);
            var s = r.GetValue(seconds);
            if (fs < TestFrame.MinSize || fs > 65000 || b < 1 || b > 4096 || !(s > 0))
            {
                Console.Error.WriteLine($"rings baseline: --frame-size must be {TestFrame.MinSize}..65000, --burst 1..4096, --seconds positive");
                return 2;
            }

            var t = Cli.Parse<KernelBaseline.Transport>(r.GetValue(transport)!);
            var f = KernelBaseline.Measure(t, fs, b, TimeSpan.FromSeconds(s), Environment.ProcessPath!);
            Console.WriteLine($"  {f.Transport}: {f.Received:N0} frames of {f.FrameSize} B in {f.Seconds:0.00} s, {f.Mpps:0.000} Mpps round trip, latency p50 {f.LatencyP50Us:0.0} us p99 {f.LatencyP99Us:0.0} us, corrupted {f.Corrupted}");
            return f.Corrupted == 0 ? 0 : 1;
        });

        var echo = DefineEcho().Runs(_ => null, o => KernelBaseline.Echo(o.Transport, o.Address));
        return [measure, echo];
    }

    /// <summary>Reads a <c>rings baseline-echo</c> command line (after the command name).</summary>
    /// <exception cref="ArgumentException">The arguments do not parse.</exception>
    public static BaselineEchoOptions ParseEcho(IReadOnlyList<string> args) => DefineEcho().Parse(args);

    private static CommandDefinition<BaselineEchoOptions> DefineEcho()
    {
        var address = new Option<string>("--address") { Description = "Socket path (unix) or port (udp).", Required = true };
        var transport = new Option<string>("--transport") { Required = true };
        transport.AcceptOnlyFromAmong(Enum.GetValues<KernelBaseline.Transport>().Select(Cli.Text).ToArray());
        var echo = new Command("baseline-echo", "The echo side of rings baseline (started by it).") { transport, address };
        echo.Hidden = true;
        return new(echo, r => new BaselineEchoOptions(Cli.Parse<KernelBaseline.Transport>(r.GetValue(transport)!), r.GetValue(address)!));
    }
}
