using System.Text.RegularExpressions;
using Rings.Linux.Ports;
using Rings.Linux.Runtime;
using Rings.Tool.Bench;
using Rings.Tool.Commands;
using Spectre.Console;

namespace Rings.Tests.Apps;

/// <summary>
/// What a terminal shows: the bench's live bar and the switch's per-port tables, drawn by
/// Spectre.Console into a console that records its output (as a terminal of 160 columns would get it).
/// </summary>
public sealed class TerminalDisplayTests
{
    [Fact]
    public void TheBenchProgressDrawsABarAndWritesEachFinishedRunAboveIt()
    {
        var (console, written) = Recording();
        using (var progress = new BenchProgress(TextWriter.Null, total: 10, console))
        {
            progress.Begin("split 64 B", 5);
            Thread.Sleep(250); // the live display redraws every 100 ms
            progress.End("split 64 B: 18.5 Mpps");
            progress.Begin("packed 64 B", 5);
            progress.End("packed 64 B: 18.4 Mpps");
        }

        var text = written.ToString();
        Assert.Contains("[ 50% ", text, StringComparison.Ordinal);
        Assert.Contains("split 64 B: 18.5 Mpps", text, StringComparison.Ordinal);
        Assert.Contains("[100% 0m00s left] packed 64 B: 18.4 Mpps", text, StringComparison.Ordinal);
        Assert.Contains("1 done", text, StringComparison.Ordinal); // the bar's description while the second run went
        Assert.Contains("\u001b[", text, StringComparison.Ordinal); // drawn in place, not as plain lines
    }

    [Fact]
    public void WithoutATerminalTheBenchWritesPlainLinesOnly()
    {
        var lines = new StringWriter();
        using (var progress = new BenchProgress(lines, total: 4))
        {
            progress.Begin("a", 2);
            progress.End("first");
            progress.Begin("b", 2);
            progress.End("second");
        }

        var written = lines.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(2, written.Length);
        Assert.Matches(@"^  \[ 50% \dm\d\ds left\] first$", written[0]);
        Assert.Matches(@"^  \[100% 0m00s left\] second$", written[1]);
        Assert.DoesNotContain("\u001b", lines.ToString(), StringComparison.Ordinal);
    }

    [Fact]
    public void TheSwitchTablesShowEveryPortsRatesAndClosingFigures()
    {
        using var a = new InMemoryPort("memory:a");
        using var b = new InMemoryPort("memory:b");
        Port[] ports = [a, b];
        var drops = new long[DropReasons.Count];
        drops[(int)DropReason.DestinationFull] = 7;
        PortCounterSnapshot[] before = [new(0, 0, 0, 0, new long[DropReasons.Count]), new(0, 0, 0, 0, new long[DropReasons.Count])];
        PortCounterSnapshot[] after = [new(2_000_000, 128_000_000, 1_000_000, 64_000_000, drops), new(1_000_000, 64_000_000, 2_000_000, 128_000_000, new long[DropReasons.Count])];

        var (console, written) = Recording();
        console.Write(SwitchTables.Rates(ports, before, after, seconds: 1, now: 3));
        var rates = written.ToString();
        (console, written) = Recording();
        console.Write(SwitchTables.Final(ports, after, [(LinkState.Up, "up"), (LinkState.Down, "down")], seconds: 2));
        var final = written.ToString();
        var options = RegexOptions.Multiline;

        // Each port's row: its own link state, rates over the second, drops and frames.
        Assert.Contains("rings switch: 3.0 s", rates, StringComparison.Ordinal);
        Assert.Matches(new Regex(@"^\s+0\s+down\s+2\.000\s+1\.000\s+7\s+2,000,000\s+1,000,000\s+memory:a\s*$", options), rates);
        Assert.Matches(new Regex(@"^\s+1\s+down\s+1\.000\s+2\.000\s+0\s+1,000,000\s+2,000,000\s+memory:b\s*$", options), rates);

        // The closing table: the link states it was given, rates over the whole run, drops by reason.
        Assert.Matches(new Regex(@"^\s+0\s+up\s+2,000,000\s+1\.000\s+1,000,000\s+0\.500\s+7\s+memory:a \(drops: destination-full 7\)\s*$", options), final);
        Assert.Matches(new Regex(@"^\s+1\s+down\s+1,000,000\s+0\.500\s+2,000,000\s+1\.000\s+0\s+memory:b\s*$", options), final);
    }

    private static (IAnsiConsole Console, StringWriter Written) Recording()
    {
        var written = new StringWriter();
        var console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Ansi = AnsiSupport.Yes,
            ColorSystem = ColorSystemSupport.NoColors,
            Interactive = InteractionSupport.Yes,
            Out = new AnsiConsoleOutput(written),
        });
        console.Profile.Width = 160;
        return (console, written);
    }
}
