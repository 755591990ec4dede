using Rings.Linux.Ports;
using Rings.Linux.Runtime;
using Spectre.Console;

namespace Rings.Tool.Commands;

/// <summary>The per-port tables of <c>rings switch</c> on a terminal (Spectre.Console).</summary>
internal static class SwitchTables
{
    /// <summary>Rates over the last interval, one row per port.</summary>
    public static Table Rates(IReadOnlyList<Port> ports, PortCounterSnapshot[] before, PortCounterSnapshot[] after, double seconds, double now)
    {
        var table = new Table { Border = TableBorder.Simple, Title = new TableTitle($"rings switch: {now:0.0} s") };
        table.AddColumn("port");
        table.AddColumn("link");
        table.AddColumn(new TableColumn("rx Mpps").RightAligned());
        table.AddColumn(new TableColumn("tx Mpps").RightAligned());
        table.AddColumn(new TableColumn("drops/s").RightAligned());
        table.AddColumn(new TableColumn("rx frames").RightAligned());
        table.AddColumn(new TableColumn("tx frames").RightAligned());
        table.AddColumn(new TableColumn("name").NoWrap());
        var span = Math.Max(seconds, 1e-9);
        for (var i = 0; i < ports.Count; i++)
        {
            table.AddRow(
                $"{i}",
                ports[i].Link == LinkState.Up ? "[green]up[/]" : "[red]down[/]",
                $"{(after[i].RxFrames - before[i].RxFrames) / span / 1e6:0.000}",
                $"{(after[i].TxFrames - before[i].TxFrames) / span / 1e6:0.000}",
                $"{(after[i].TotalDrops - before[i].TotalDrops) / span:N0}",
                $"{after[i].RxFrames:N0}",
                $"{after[i].TxFrames:N0}",
                Markup.Escape(ports[i].Name));
        }

        return table;
    }

    /// <summary>The closing figures, one row per port, with drops by reason and GSO frames segmented in software beside a port that had any.</summary>
    public static Table Final(IReadOnlyList<Port> ports, PortCounterSnapshot[] final, IReadOnlyList<(LinkState Link, string Status)> statuses, double seconds)
    {
        var table = new Table { Border = TableBorder.Simple };
        table.AddColumn("port");
        table.AddColumn("link");
        table.AddColumn(new TableColumn("rx frames").RightAligned());
        table.AddColumn(new TableColumn("rx Mpps").RightAligned());
        table.AddColumn(new TableColumn("tx frames").RightAligned());
        table.AddColumn(new TableColumn("tx Mpps").RightAligned());
        table.AddColumn(new TableColumn("dropped").RightAligned());
        table.AddColumn(new TableColumn("name").NoWrap());
        for (var i = 0; i < ports.Count; i++)
        {
            var c = final[i];
            var reasons = string.Join(", ", Enumerable.Range(1, DropReasons.Count - 1)
                .Where(r => c.DropsByReason[r] > 0)
                .Select(r => $"{DropReasons.Name((DropReason)r)} {c.DropsByReason[r]:N0}"));
            var notes = string.Join("; ", new[]
            {
                reasons.Length > 0 ? $"drops: {reasons}" : string.Empty,
                c.SoftwareSegmented > 0 ? $"segmented in software: {c.SoftwareSegmented:N0}" : string.Empty,
            }.Where(n => n.Length > 0));
            table.AddRow(
                $"{i}",
                statuses[i].Link == LinkState.Up ? "up" : "down",
                $"{c.RxFrames:N0}",
                $"{c.RxFrames / seconds / 1e6:0.000}",
                $"{c.TxFrames:N0}",
                $"{c.TxFrames / seconds / 1e6:0.000}",
                $"{c.TotalDrops:N0}",
                Markup.Escape(notes.Length > 0 ? $"{ports[i].Name} ({notes})" : ports[i].Name));
        }

        return table;
    }
}
