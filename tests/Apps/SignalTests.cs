using Rings.Tests.Hostile;

namespace Rings.Tests.Apps;

/// <summary>
/// SIGINT and SIGTERM stop every long-running <c>rings</c> command within a second, with its
/// closing figures, however it was started: as a background job of a script (SIGINT inherited as
/// ignored) or as a plain child of a supervisor.
/// </summary>
[Collection(ProcessCollection.Name)]
public sealed class SignalTests
{
    private const int SigInt = 2;
    private const int SigTerm = 15;

    public static TheoryData<string, int, bool> Cases()
    {
        var data = new TheoryData<string, int, bool>();
        // The two-process loopback is three processes ending in turn (guest, then host, then the
        // parent that prints the host's figures): the second covers all three.
        foreach (var command in (string[])["host", "guest", "loopback", "loopback-in-process", "switch", "bench"])
        {
            data.Add(command, SigInt, true);
            data.Add(command, SigTerm, false);
        }

        data.Add("host", SigInt, false);
        data.Add("guest", SigInt, false);
        return data;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void EveryCommandStopsWithinASecondWithItsClosingFigures(string command, int signal, bool interruptIgnoredAtStart)
    {
        var dir = Directory.CreateTempSubdirectory("rings-signal-");
        RingsHost? host = null;
        try
        {
            (string[] Args, string Ready, string Closing, int Exit) setup = command switch
            {
                "host" => (["host", "--socket", Path.Combine(dir.FullName, "h.sock")], "serving vhost-user", "rings host: stopped after", 0),
                "guest" => (["guest", "--socket", (host = RingsHost.Start()).Socket, "--seconds", "60", "--rate", "200000"], " s  tx ", "lost / dup / bad", 0),
                "loopback" => (["loopback", "--seconds", "60", "--rate", "200000"], " s  tx ", "host mean burst", 0),
                "loopback-in-process" => (["loopback", "--in-process", "--seconds", "60"], " Mpps", "packets ", 0),
                "switch" => (["switch", "--port", $"vhost-user:{Path.Combine(dir.FullName, "s.sock")}", "--wait", "block"], "port 0:", "rings switch: ran", 0),
                "bench" => (["bench", "--quick", "--dpdk", "off", "--baselines", "off", "--out", Path.Combine(dir.FullName, "bench")], "warm-up", "interrupted: wrote", 130),
                _ => throw new ArgumentOutOfRangeException(nameof(command)),
            };
            var (args, ready, closing, exitCode) = setup;

            using var run = StartThroughShell(args, interruptIgnoredAtStart);
            run.WaitForLine(ready, TimeSpan.FromSeconds(60));
            if (command == "bench")
            {
                // The warm-up line is printed when that run ends: the next run is under way.
                Thread.Sleep(300);
            }

            var took = run.Signal(signal, TimeSpan.FromSeconds(10));
            var output = run.Output;
            Assert.True(took < TimeSpan.FromSeconds(1), $"{command} took {took.TotalMilliseconds:0} ms to exit after signal {signal}:\n{output}");
            Assert.True(run.ExitCode == exitCode, $"{command} exited with {run.ExitCode} after signal {signal}:\n{output}");
            Assert.Contains(closing, output, StringComparison.Ordinal);
        }
        finally
        {
            host?.Dispose();
            dir.Delete(recursive: true);
        }
    }

    /// <summary>A <c>rings</c> command started through <c>sh</c>, optionally as a script's background job would be: SIGINT ignored.</summary>
    private static CollectedProcess StartThroughShell(string[] args, bool interruptIgnored) =>
        // exec keeps the ignored disposition, as a shell does for a background job (POSIX).
        CollectedProcess.Start("/bin/sh", ["-c", interruptIgnored ? "trap '' INT; exec \"$0\" \"$@\"" : "exec \"$0\" \"$@\"", LoopbackProcessTests.RingsExecutable(), .. args]);
}
