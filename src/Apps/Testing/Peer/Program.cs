using System.CommandLine;
using System.Runtime.InteropServices;
using Rings.Linux.Net;
using Rings.Testing.Faults;

namespace Rings.TestPeer;

/// <summary>
/// <c>Rings.TestPeer</c>: the hostile peers as processes, for tests. <c>guest</c> is a front-end that
/// attacks a back-end (<see cref="HostileGuest"/>); <c>host</c> is a back-end that lies to its
/// front-ends (<see cref="HostileHost"/>).
/// </summary>
internal static class Program
{
    private static int Main(string[] args)
    {
        var root = new RootCommand("Hostile vhost-user peers for tests: a front-end that attacks its back-end, a back-end that lies to its front-ends.")
        {
            Guest(),
            Host(),
        };
        return root.Parse(args).Invoke();
    }

    private static Command Guest()
    {
        var socket = new Option<string>("--socket") { Description = "The back-end's socket.", Required = true };
        var kind = new Option<string>("--misbehave") { Description = "What to do to the back-end.", Required = true };
        kind.AcceptOnlyFromAmong(HostileGuest.Kinds);
        var ring = new Option<string>("--ring") { Description = "Ring format.", DefaultValueFactory = _ => RingFormat.Split.Name };
        ring.AcceptOnlyFromAmong(RingFormat.All.Select(f => f.Name).ToArray());
        var wait = new Option<string>("--wait") { Description = "How the traffic beside the attack waits when idle.", DefaultValueFactory = _ => "poll" };
        wait.AcceptOnlyFromAmong("poll", "adaptive", "block");
        var queueSize = new Option<int>("--queue-size") { Description = "Descriptors per ring.", DefaultValueFactory = _ => 256 };
        var frameSize = new Option<int>("--frame-size") { Description = "Bytes per test frame.", DefaultValueFactory = _ => 64 };
        var command = new Command("guest", "A front-end that sets up, then attacks the back-end; exit 0 when the back-end held.")
        {
            socket, kind, ring, wait, queueSize, frameSize,
        };
        command.SetAction(r => HostileGuest.Run(
            new HostileGuestOptions(
                r.GetValue(socket)!,
                r.GetValue(kind)!,
                RingFormat.Parse(r.GetValue(ring)!),
                Enum.Parse<WaitStrategy>(r.GetValue(wait)!, ignoreCase: true),
                r.GetValue(queueSize),
                r.GetValue(frameSize)),
            Console.Out,
            Console.Error));
        return command;
    }

    private static Command Host()
    {
        var socket = new Option<string>("--socket") { Description = "Where to serve vhost-user.", Required = true };
        var kind = new Option<string>("--misbehave") { Description = "How to lie to the front-ends.", Required = true };
        kind.AcceptOnlyFromAmong(HostileDevice.Kinds);
        var burst = new Option<int>("--burst") { Description = "Most frames per round.", DefaultValueFactory = _ => 32 };
        var command = new Command("host", "A back-end that reflects frames honestly for a while, then lies to each front-end; runs until SIGINT or SIGTERM.")
        {
            socket, kind, burst,
        };
        command.SetAction(r =>
        {
            using var done = new ManualResetEventSlim();
            using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, Stop);
            using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, Stop);
            using (var host = new HostileHost(r.GetValue(socket)!, r.GetValue(kind)!, r.GetValue(burst), Console.Out))
            {
                host.Start();
                Console.WriteLine($"hostile host: serving vhost-user on {r.GetValue(socket)}, misbehaving: {r.GetValue(kind)}");
                done.Wait();
            }

            return 0;

            void Stop(PosixSignalContext c)
            {
                c.Cancel = true;
                done.Set();
            }
        });
        return command;
    }
}
