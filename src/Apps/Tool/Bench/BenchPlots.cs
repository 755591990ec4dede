using System.Globalization;
using Rings.Linux.Net;
using Rings.Tool.Commands;
using ScottPlot;

namespace Rings.Tool.Bench;

/// <summary>
/// The sweep's PNG plots, drawn with ScottPlot (SkiaSharp underneath, no display needed). Log
/// axes are drawn as log10 of the values with the ticks labelled in plain units.
/// </summary>
internal static class BenchPlots
{
    private const int Width = 900;
    private const int Height = 540;

    /// <summary>Smallest per-frame notification figure drawn; zero is drawn here on the log axis.</summary>
    private const double NotificationFloor = 1e-5;

    /// <summary>Writes every plot into <paramref name="dir"/> and returns the file names.</summary>
    public static List<string> WriteAll(string dir, IReadOnlyList<PointResult> points, IReadOnlyList<BaselineResult> baselines, string subtitle)
    {
        var files = new List<string>();
        void Save(Plot plot, string name)
        {
            plot.SavePng(Path.Combine(dir, name), Width, Height);
            files.Add(name);
        }

        Save(MppsByBurst(points, subtitle), "mpps-vs-burst.png");
        Save(NotificationsByLoad(points, subtitle), "notifications-vs-load.png");
        Save(LatencyByLoad(points, baselines, subtitle), "latency-vs-load.png");
        Save(GbpsByFrameSize(points, subtitle), "gbps-vs-frame-size.png");
        Save(Baselines(points, baselines, subtitle), "rings-vs-baselines.png");
        return files;
    }

    private static Plot MppsByBurst(IReadOnlyList<PointResult> points, string subtitle)
    {
        var plot = New("Round trip rate against burst size", subtitle, "burst size (frames per publish)", "round trip, million frames per second");
        var bursts = new SortedSet<int>();
        var top = 0.0;
        var index = 0;
        foreach (var ring in RingFormat.All)
        {
            var series = points.Where(p => p.HasData && p.Series.Contains(BenchPlan.RingBurst) && p.Point.Ring == ring).OrderBy(p => p.Point.Burst).ToList();
            if (series.Count == 0)
            {
                continue;
            }

            bursts.UnionWith(series.Select(p => p.Point.Burst));
            top = Math.Max(top, series.Max(p => p.Mpps));
            var line = plot.Add.Scatter(series.Select(p => Math.Log2(p.Point.Burst)).ToArray(), series.Select(p => p.Mpps).ToArray());
            Style(line, index++, $"{ring} ring");
        }

        if (bursts.Count > 0)
        {
            plot.Axes.Bottom.SetTicks(bursts.Select(b => Math.Log2(b)).ToArray(), bursts.Select(b => b.ToString(CultureInfo.InvariantCulture)).ToArray());
            plot.Axes.SetLimitsY(0, Math.Max(0.1, top * 1.15));
        }

        return Finish(plot, index, Alignment.LowerRight);
    }

    private static Plot NotificationsByLoad(IReadOnlyList<PointResult> points, string subtitle)
    {
        var plot = New("Notifications per frame against offered load (blocking waits)", subtitle, "offered load, frames per second", "notifications per frame (log; 1e-5 means none)");
        var selected = points.Where(p => p.HasData && p.Series.Contains(BenchPlan.EventIdxLoad)).ToList();
        var ladder = LoadLadder(plot, selected);
        var index = 0;
        foreach (var eventIdx in new[] { true, false })
        {
            var series = selected.Where(p => p.Point.EventIdx == eventIdx).OrderBy(p => ladder[p.Point.Rate]).ToList();
            if (series.Count == 0)
            {
                continue;
            }

            var xs = series.Select(p => ladder[p.Point.Rate]).ToArray();
            var kicks = plot.Add.Scatter(xs, series.Select(p => Math.Log10(Math.Max(NotificationFloor, p.KicksPerFrame))).ToArray());
            Style(kicks, index, $"kicks, EVENT_IDX {(eventIdx ? "on" : "off")}");
            var calls = plot.Add.Scatter(xs, series.Select(p => Math.Log10(Math.Max(NotificationFloor, p.CallsPerFrame))).ToArray());
            Style(calls, index, $"calls, EVENT_IDX {(eventIdx ? "on" : "off")}");
            calls.LinePattern = LinePattern.Dashed;
            calls.MarkerShape = MarkerShape.OpenSquare;
            index++;
        }

        LogAxis(plot.Axes.Left, v => v.ToString("0.#####", CultureInfo.InvariantCulture));
        plot.Axes.SetLimitsY(Math.Log10(NotificationFloor) - 0.3, 0.5);
        return Finish(plot, index, Edge.Right);
    }

    private static Plot LatencyByLoad(IReadOnlyList<PointResult> points, IReadOnlyList<BaselineResult> baselines, string subtitle)
    {
        var plot = New("Round-trip latency against offered load, per wait strategy", subtitle, "offered load, frames per second", "round-trip latency, microseconds (log)");
        var selected = points.Where(p => p.HasData && p.Series.Contains(BenchPlan.WaitLoad) && p.LatencyP50Us > 0).ToList();
        var ladder = LoadLadder(plot, selected);
        var index = 0;
        foreach (var wait in Enum.GetValues<WaitStrategy>())
        {
            var series = selected.Where(p => p.Point.Wait == wait).OrderBy(p => ladder[p.Point.Rate]).ToList();
            if (series.Count == 0)
            {
                continue;
            }

            var xs = series.Select(p => ladder[p.Point.Rate]).ToArray();
            var p50 = plot.Add.Scatter(xs, series.Select(p => Math.Log10(p.LatencyP50Us)).ToArray());
            Style(p50, index, $"{Cli.Text(wait)} p50");
            var p99 = plot.Add.Scatter(xs, series.Select(p => Math.Log10(Math.Max(p.LatencyP99Us, p.LatencyP50Us))).ToArray());
            Style(p99, index, $"{Cli.Text(wait)} p99");
            p99.LinePattern = LinePattern.Dashed;
            p99.MarkerShape = MarkerShape.OpenSquare;
            index++;
        }

        if (baselines.FirstOrDefault(b => b.Name == BenchCommand.UnixPingPong && b.HasData) is { } pingPong && BenchMath.Median(pingPong.LatencyP50Us) is var ppLatency && ppLatency > 0)
        {
            var line = plot.Add.HorizontalLine(Math.Log10(ppLatency));
            line.LinePattern = LinePattern.Dotted;
            line.Color = Colors.Gray;
            line.LegendText = $"AF_UNIX ping-pong p50 ({ppLatency:0.0} us)";
            index++;
        }

        LogAxis(plot.Axes.Left, v => v.ToString("0.##", CultureInfo.InvariantCulture));
        return Finish(plot, index, Edge.Right);
    }

    /// <summary>
    /// The offered loads as evenly spaced positions, lowest first and saturation ("max") last,
    /// with the bottom axis labelled; returns each rate's position.
    /// </summary>
    private static Dictionary<double, double> LoadLadder(Plot plot, IEnumerable<PointResult> points)
    {
        var rates = points.Select(p => p.Point.Rate).Distinct().OrderBy(r => r <= 0 ? double.MaxValue : r).ToList();
        var positions = rates.Select((r, i) => (r, (double)i)).ToDictionary(x => x.r, x => x.Item2);
        if (rates.Count > 0)
        {
            plot.Axes.Bottom.SetTicks(rates.Select(r => positions[r]).ToArray(), rates.Select(r => BenchPlan.RateText(r)).ToArray());
            plot.Axes.SetLimitsX(-0.3, rates.Count - 0.7);
        }

        return positions;
    }

    private static Plot GbpsByFrameSize(IReadOnlyList<PointResult> points, string subtitle)
    {
        var plot = New("Throughput against frame size", subtitle, "frame size, bytes", "round trip, Gbit/s of frames returned");
        var series = points.Where(p => p.HasData && p.Series.Contains(BenchPlan.FrameSizes)).OrderBy(p => p.Point.FrameSize).ToList();
        for (var i = 0; i < series.Count; i++)
        {
            var p = series[i];
            var bar = plot.Add.Bar(new Bar
            {
                Position = i,
                Value = p.Gbps,
                FillColor = Palette(0),
                Label = $"{p.Gbps:0.00} Gbit/s, {p.Mpps:0.000} Mpps",
            });
            _ = bar;
        }

        if (series.Count > 0)
        {
            plot.Axes.Bottom.SetTicks(Enumerable.Range(0, series.Count).Select(i => (double)i).ToArray(), series.Select(p => $"{p.Point.FrameSize} B").ToArray());
            plot.Axes.SetLimitsY(0, Math.Max(0.1, series.Max(p => p.Gbps) * 1.2));
        }

        return Finish(plot, 0, Alignment.UpperLeft);
    }

    private static Plot Baselines(IReadOnlyList<PointResult> points, IReadOnlyList<BaselineResult> baselines, string subtitle)
    {
        var plot = New("Rings against the alternatives: 64 B frames, burst 32", subtitle, string.Empty, "round trip, million frames per second");
        var bars = new List<(string Label, double Mpps, int Colour)>();
        foreach (var ring in RingFormat.All)
        {
            if (points.FirstOrDefault(p => p.HasData && p.Point == BenchPoint.Base with { Ring = ring }) is { } r)
            {
                bars.Add(($"Rings {ring}, poll", r.Mpps, 0));
            }
        }

        var reference = points.FirstOrDefault(p => p.HasData && p.Point == BenchPoint.Base);
        foreach (var b in baselines.Where(b => b.HasData && b.Burst == BenchPoint.Base.Burst))
        {
            var ratio = reference is not null && b.MedianMpps > 0 ? reference.Mpps / b.MedianMpps : double.NaN;
            bars.Add(($"{BenchReport.ShortName(b)}{(double.IsFinite(ratio) ? $"\n(Rings split {ratio:0.0}x)" : string.Empty)}", b.MedianMpps, 1));
        }

        var top = bars.Count > 0 ? bars.Max(b => b.Mpps) : 1;
        for (var i = 0; i < bars.Count; i++)
        {
            plot.Add.Bar(new Bar
            {
                Position = i,
                Value = bars[i].Mpps,
                FillColor = Palette(bars[i].Colour),
                Label = bars[i].Mpps.ToString(bars[i].Mpps < 0.1 ? "0.0000" : "0.000", CultureInfo.InvariantCulture),
            });
        }

        if (bars.Count > 0)
        {
            plot.Axes.Bottom.SetTicks(Enumerable.Range(0, bars.Count).Select(i => (double)i).ToArray(), bars.Select(b => b.Label).ToArray());
            plot.Axes.SetLimitsY(0, Math.Max(0.1, top * 1.2));
        }

        return Finish(plot, 0, Alignment.UpperRight);
    }

    private static Plot New(string title, string subtitle, string x, string y)
    {
        var plot = new Plot();
        plot.Title(title + "\n" + subtitle, 14);
        plot.XLabel(x, 13);
        plot.YLabel(y, 13);
        return plot;
    }

    private static Plot Finish(Plot plot, int legendEntries, Alignment legend)
    {
        if (plot.GetPlottables().Any())
        {
            if (legendEntries > 0)
            {
                plot.ShowLegend(legend);
            }
        }
        else
        {
            NoData(plot);
        }

        return plot;
    }

    private static Plot Finish(Plot plot, int legendEntries, Edge legend)
    {
        if (plot.GetPlottables().Any())
        {
            if (legendEntries > 0)
            {
                plot.ShowLegend(legend);
            }
        }
        else
        {
            NoData(plot);
        }

        return plot;
    }

    private static void NoData(Plot plot)
    {
        plot.Add.Text("not measured in this run", 0, 0);
        plot.Axes.SetLimits(-1, 1, -1, 1);
    }

    private static void Style(ScottPlot.Plottables.Scatter line, int index, string legend)
    {
        line.Color = Palette(index);
        line.LineWidth = 2;
        line.MarkerSize = 8;
        line.LegendText = legend;
    }

    private static Color Palette(int index) => new ScottPlot.Palettes.Category10().GetColor(index);

    /// <summary>An axis whose data are log10 of the values: a tick per decade, labelled in plain units.</summary>
    private static void LogAxis(IAxis axis, Func<double, string> format)
    {
        axis.TickGenerator = new ScottPlot.TickGenerators.NumericAutomatic
        {
            MinorTickGenerator = new ScottPlot.TickGenerators.LogMinorTickGenerator(),
            IntegerTicksOnly = true,
            LabelFormatter = v => format(Math.Pow(10, v)),
        };
    }

}
