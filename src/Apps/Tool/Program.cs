using System.CommandLine;
using System.CommandLine.Help;
using Rings.Tool.Bench;
using Rings.Tool.Commands;

namespace Rings.Tool;

internal static class Program
{
    private static int Main(string[] args)
    {
        // Before anything touches the console: the runtime reads SIGINT's disposition once, when
        // it first sets up signal handling, and never handles a signal that was ignored then. A
        // background job starts with SIGINT ignored; every command must stop on it all the same.
        Linux.Plumbing.ProcessSignals.StopIgnoringInterrupt();

        // A plain command named "rings" rather than RootCommand, whose name would be the
        // assembly's (Rings.Cli); help and version are added as RootCommand would.
        var root = new Command("rings", "Virtio rings over shared memory: moves frames between a virtio driver and a vhost device.")
        {
            new HelpOption(),
            new VersionOption(),
            LoopbackCommand.Create(),
            HostCommand.Create(),
            GuestCommand.Create(),
            SwitchCommand.Create(),
            BenchCommand.Create(),
        };
        foreach (var c in BaselineCommand.Create())
        {
            root.Subcommands.Add(c);
        }

        return root.Parse(args).Invoke();
    }
}
