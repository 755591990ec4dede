using System.Text;
using System.Text.Json;
using Rings.Testing.Traffic;
using Rings.Tool.Bench;

namespace Rings.Tool.Commands;

/// <summary>Counters of one side's notification decisions.</summary>
internal readonly record struct NotificationFigures(long Sent, long Suppressed);

/// <summary>Everything a guest run reports: settings, traffic figures and ring counters.</summary>
internal sealed record RunReport
{
    public required string Ring { get; init; }
    public required bool EventIdx { get; init; }
    public required bool InOrder { get; init; }
    public required int FrameSize { get; init; }
    public required int Burst { get; init; }
    public required string Wait { get; init; }

    /// <summary>How much of each frame was written and checked: full or sample.</summary>
    public string Verify { get; init; } = "full";
    public required double Rate { get; init; }
    public required TrafficFigures Traffic { get; init; }
    public required NotificationFigures Kicks { get; init; }
    public NotificationFigures? Calls { get; init; }
    public long CallsReceived { get; init; }
    public required double MeanBurst { get; init; }
    public long Drops { get; init; }
    public long Gen0Collections { get; init; }
    public string? Broken { get; init; }
    public int Reconnects { get; init; }

    /// <summary>Each queue pair's own figures, by pair (one entry with one pair).</summary>
    public IReadOnlyList<TrafficFigures> Pairs { get; init; } = [];

    /// <summary>Bytes of the shared memory and of the pages behind it (4 KiB, or 2 MiB with hugepages).</summary>
    public ulong MemoryBytes { get; init; }

    /// <summary>The page size behind the shared memory.</summary>
    public ulong PageBytes { get; init; }

    /// <summary>
    /// The steady receive rate: the median of the per-second rates after the first second (which
    /// holds the start and the JIT's warm-up) and before sending stopped; null when the run was
    /// too short to have one. DPDK's figure is taken the same way (a median of per-second rates
    /// after a warm-up), so this is the one to set beside it.
    /// </summary>
    public double? SteadyMpps { get; init; }

    public double MppsTx => Traffic.Seconds > 0 ? Traffic.Sent / Traffic.Seconds / 1e6 : 0;
    public double MppsRx => Traffic.Seconds > 0 ? Traffic.Received / Traffic.Seconds / 1e6 : 0;
    public double Gbps => Traffic.Seconds > 0 ? Traffic.BytesReceived * 8 / Traffic.Seconds / 1e9 : 0;
    public double KicksPerFrame => Traffic.Sent > 0 ? (double)Kicks.Sent / Traffic.Sent : 0;
    public double CallsPerFrame => Traffic.Received > 0 ? (double)(Calls?.Sent ?? CallsReceived) / Traffic.Received : 0;

    public bool Clean => Traffic.Lost == 0 && Traffic.Corrupted == 0 && Traffic.Duplicated == 0 && Broken is null;

    /// <summary>The median of the per-second rates after the first whose second ended by <paramref name="sendSeconds"/> (0: no limit).</summary>
    /// <param name="perSecond">Each second's end (seconds since sending began) and receive rate.</param>
    /// <param name="sendSeconds">How long the run sent.</param>
    /// <returns>The median, or null when no such second was measured.</returns>
    public static double? Steady(IReadOnlyList<(double End, double Mpps)> perSecond, double sendSeconds)
    {
        var rates = new List<double>();
        for (var i = 1; i < perSecond.Count; i++)
        {
            // A little slack: the line of the last full second comes just after it ends.
            if (sendSeconds <= 0 || perSecond[i].End <= sendSeconds + 0.1)
            {
                rates.Add(perSecond[i].Mpps);
            }
        }

        return rates.Count == 0 ? null : BenchMath.Median(rates);
    }

    public void PrintTable(TextWriter o)
    {
        o.WriteLine();
        o.WriteLine($"  ring {Ring}, EVENT_IDX {(EventIdx ? "on" : "off")}, IN_ORDER {(InOrder ? "on" : "off")}, frame {FrameSize} B, burst {Burst}, wait {Wait}, verify {Verify}{(Rate > 0 ? $", rate {Rate:N0} fps" : string.Empty)}");
        o.WriteLine($"  frames sent         {Traffic.Sent,14:N0}   {MppsTx,8:0.000} Mpps");
        o.WriteLine($"  frames received     {Traffic.Received,14:N0}   {MppsRx,8:0.000} Mpps   {Gbps:0.000} Gbit/s");
        if (SteadyMpps is { } steady)
        {
            o.WriteLine($"  steady rate         {string.Empty,14}   {steady,8:0.000} Mpps   (median of the per-second rates after the first)");
        }

        o.WriteLine($"  lost / dup / bad    {Traffic.Lost,14:N0} / {Traffic.Duplicated:N0} / {Traffic.Corrupted:N0}");
        o.WriteLine($"  kicks per frame     {KicksPerFrame,14:0.0000}   (sent {Kicks.Sent:N0}, suppressed {Kicks.Suppressed:N0})");
        if (Calls is { } c)
        {
            o.WriteLine($"  calls per frame     {CallsPerFrame,14:0.0000}   (sent {c.Sent:N0}, suppressed {c.Suppressed:N0})");
        }
        else
        {
            o.WriteLine($"  calls per frame     {CallsPerFrame,14:0.0000}   (received {CallsReceived:N0})");
        }

        if (Pairs.Count > 1)
        {
            for (var p = 0; p < Pairs.Count; p++)
            {
                var f = Pairs[p];
                o.WriteLine($"  pair {p,-3} rx         {f.Received,14:N0}   {(f.Seconds > 0 ? f.Received / f.Seconds / 1e6 : 0),8:0.000} Mpps   lost {f.Lost:N0}, bad {f.Corrupted:N0}");
            }
        }

        o.WriteLine($"  mean burst          {MeanBurst,14:0.0}");
        o.WriteLine($"  drops               {Drops,14:N0}");
        o.WriteLine($"  latency p50 / p99   {Traffic.LatencyP50Microseconds,14:0.0} / {Traffic.LatencyP99Microseconds:0.0} us   ({Traffic.LatencySamples:N0} samples)");
        o.WriteLine($"  gen0 collections    {Gen0Collections,14:N0}");
        if (PageBytes > 0)
        {
            o.WriteLine($"  memory              {MemoryBytes >> 20,10:N0} MiB   in {PageText(PageBytes)} pages");
        }
        if (Reconnects > 0)
        {
            o.WriteLine($"  reconnects          {Reconnects,14:N0}");
        }

        if (Broken is not null)
        {
            o.WriteLine($"  broken              {Broken}");
        }
    }

    public string ToJson()
    {
        using var stream = new MemoryStream();
        using (var w = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            w.WriteString("ring", Ring);
            w.WriteBoolean("event_idx", EventIdx);
            w.WriteBoolean("in_order", InOrder);
            w.WriteNumber("frame_size", FrameSize);
            w.WriteNumber("burst", Burst);
            w.WriteString("wait", Wait);
            w.WriteString("verify", Verify);
            w.WriteNumber("rate", Rate);
            w.WriteNumber("seconds", Traffic.Seconds);
            w.WriteNumber("frames_sent", Traffic.Sent);
            w.WriteNumber("frames_received", Traffic.Received);
            w.WriteNumber("mpps", MppsRx);
            w.WriteNumber("mpps_tx", MppsTx);
            if (SteadyMpps is { } steady)
            {
                w.WriteNumber("steady_mpps", steady);
            }

            w.WriteNumber("gbps", Gbps);
            w.WriteNumber("kicks_per_frame", KicksPerFrame);
            w.WriteNumber("kicks_sent", Kicks.Sent);
            w.WriteNumber("kicks_suppressed", Kicks.Suppressed);
            w.WriteNumber("calls_per_frame", CallsPerFrame);
            if (Calls is { } c)
            {
                w.WriteNumber("calls_sent", c.Sent);
                w.WriteNumber("calls_suppressed", c.Suppressed);
            }

            w.WriteNumber("calls_received", CallsReceived);
            w.WriteNumber("mean_burst", MeanBurst);
            w.WriteNumber("drops", Drops);
            w.WriteNumber("lost", Traffic.Lost);
            w.WriteNumber("duplicated", Traffic.Duplicated);
            w.WriteNumber("corrupted", Traffic.Corrupted);
            w.WriteNumber("reconnects", Reconnects);
            w.WriteNumber("bytes_sent", Traffic.BytesSent);
            w.WriteNumber("bytes_received", Traffic.BytesReceived);
            w.WriteNumber("latency_p50_us", Traffic.LatencyP50Microseconds);
            w.WriteNumber("latency_p99_us", Traffic.LatencyP99Microseconds);
            w.WriteNumber("latency_samples", Traffic.LatencySamples);
            w.WriteNumber("gen0_collections", Gen0Collections);
            w.WriteNumber("memory_bytes", MemoryBytes);
            w.WriteNumber("page_size", PageBytes);
            w.WriteBoolean("hugepages", PageBytes > (ulong)Environment.SystemPageSize);
            if (Broken is not null)
            {
                w.WriteString("broken", Broken);
            }

            w.WriteNumber("queue_pairs", Math.Max(1, Pairs.Count));
            w.WriteStartArray("pairs");
            for (var p = 0; p < Pairs.Count; p++)
            {
                var f = Pairs[p];
                w.WriteStartObject();
                w.WriteNumber("pair", p);
                w.WriteNumber("frames_sent", f.Sent);
                w.WriteNumber("frames_received", f.Received);
                w.WriteNumber("lost", f.Lost);
                w.WriteNumber("corrupted", f.Corrupted);
                w.WriteNumber("mpps", f.Seconds > 0 ? f.Received / f.Seconds / 1e6 : 0);
                w.WriteEndObject();
            }

            w.WriteEndArray();
            w.WriteEndObject();
        }

        return Encoding.UTF8.GetString(stream.ToArray());
    }

    /// <summary>A page size as people write it: 4 KiB, 2 MiB, 1 GiB.</summary>
    public static string PageText(ulong bytes) =>
        bytes >= 1UL << 30 ? $"{bytes >> 30} GiB" : bytes >= 1UL << 20 ? $"{bytes >> 20} MiB" : $"{bytes >> 10} KiB";
}
