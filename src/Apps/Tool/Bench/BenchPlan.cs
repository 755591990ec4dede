using System.Globalization;
using Rings.Linux.Net;
using Rings.Tool.Commands;

namespace Rings.Tool.Bench;

/// <summary>One setting of the two-process loopback that <c>rings bench</c> measures.</summary>
/// <param name="Ring">The ring format.</param>
/// <param name="EventIdx">Whether VIRTIO_F_EVENT_IDX is negotiated.</param>
/// <param name="InOrder">Whether VIRTIO_F_IN_ORDER is negotiated.</param>
/// <param name="Burst">Most frames per publish, on both sides.</param>
/// <param name="Wait">How both sides wait when idle.</param>
/// <param name="Rate">Offered frames per second; 0 for saturation.</param>
/// <param name="FrameSize">Bytes per Ethernet frame.</param>
/// <param name="HugePages">Whether the guest's shared memory comes from 2 MiB hugepages (else 4 KiB pages).</param>
internal sealed record BenchPoint(RingFormat Ring, bool EventIdx, bool InOrder, int Burst, WaitStrategy Wait, double Rate, int FrameSize, bool HugePages = false)
{
    /// <summary>The base point everything varies around: split, EVENT_IDX on, IN_ORDER off, burst 32, busy-poll, saturation, 64 B.</summary>
    public static BenchPoint Base { get; } = new(RingFormat.Split, EventIdx: true, InOrder: false, Burst: 32, WaitStrategy.Poll, Rate: 0, FrameSize: 64);

    /// <summary>
    /// The point measured beside DPDK's testpmd pair on <paramref name="ring"/> and pages: the base
    /// point with the features that pair negotiates (IN_ORDER on, EVENT_IDX off), so both sides of
    /// the ratio run the same protocol.
    /// </summary>
    /// <param name="ring">The ring format.</param>
    /// <param name="hugePages">Whether on 2 MiB hugepages.</param>
    public static BenchPoint DpdkPeer(RingFormat ring, bool hugePages) => Base with { Ring = ring, EventIdx = false, InOrder = true, HugePages = hugePages };

    /// <summary>The <c>rings loopback</c> run that measures this point.</summary>
    /// <param name="seconds">How long to send.</param>
    /// <param name="queueSize">Descriptors per ring.</param>
    /// <param name="json">Where the loopback writes its figures.</param>
    public LoopbackOptions ToLoopback(double seconds, int queueSize, string json) => new(new GuestOptions(
        string.Empty,
        Ring: Ring,
        Features: (GuestOptions.DefaultFeatures & ~(VirtioFeatures.EventIndex | VirtioFeatures.InOrder))
            | (EventIdx ? VirtioFeatures.EventIndex : VirtioFeatures.None)
            | (InOrder ? VirtioFeatures.InOrder : VirtioFeatures.None),
        QueueSize: queueSize,
        Burst: Burst,
        FrameSize: FrameSize,
        Rate: Rate,
        Seconds: seconds,
        Wait: Wait,
        Json: json,
        HugePages: HugePages ? Linux.Plumbing.HugePages.On : Linux.Plumbing.HugePages.Off,
        DrainSeconds: 1,

        // Every frame's sequence is still checked; the guest builds and checks only each frame's
        // head, as the packet generators of the baselines do, so the figure is the rings'.
        Verify: Testing.Traffic.Verification.Sample));

    /// <summary>A short label: only what differs from the base point.</summary>
    public string Label()
    {
        var parts = new List<string>();
        if (Ring != Base.Ring)
        {
            parts.Add(Ring.Name);
        }

        if (EventIdx != Base.EventIdx)
        {
            parts.Add(EventIdx ? "EVENT_IDX on" : "EVENT_IDX off");
        }

        if (InOrder != Base.InOrder)
        {
            parts.Add(InOrder ? "IN_ORDER on" : "IN_ORDER off");
        }

        if (Burst != Base.Burst)
        {
            parts.Add($"burst {Burst}");
        }

        if (Wait != Base.Wait)
        {
            parts.Add(Cli.Text(Wait));
        }

        if (Rate != Base.Rate)
        {
            parts.Add($"{BenchPlan.RateText(Rate)} fps");
        }

        if (FrameSize != Base.FrameSize)
        {
            parts.Add($"{FrameSize} B");
        }

        if (HugePages != Base.HugePages)
        {
            parts.Add("hugepages");
        }

        return parts.Count == 0 ? "base" : string.Join(", ", parts);
    }
}

/// <summary>
/// The points of a sweep. Each series varies one setting around <see cref="BenchPoint.Base"/>
/// (two for the plots that compare curves); a point shared by several series is measured once.
/// </summary>
internal sealed class BenchPlan
{
    /// <summary>Series names, as written to the JSON file.</summary>
    public const string RingBurst = "burst_by_ring";
    public const string EventIdxLoad = "notifications_by_load";
    public const string WaitLoad = "latency_by_load";
    public const string FrameSizes = "frame_size";
    public const string InOrderSeries = "in_order";
    public const string EventIdxSeries = "event_idx";
    public const string PagesSeries = "pages";

    private readonly List<BenchPoint> _points = [];
    private readonly Dictionary<BenchPoint, List<string>> _series = [];

    public IReadOnlyList<BenchPoint> Points => _points;

    public IReadOnlyList<string> SeriesOf(BenchPoint p) => _series[p];

    /// <summary>The full sweep, or the quick one (fewer bursts and rates).</summary>
    /// <param name="quick">Fewer bursts and rates.</param>
    /// <param name="hugePages">Also measure both formats on 2 MiB hugepages (when enough are free).</param>
    public static BenchPlan Create(bool quick, bool hugePages = false)
    {
        int[] bursts = quick ? [1, 8, 32, 128] : [1, 4, 8, 16, 32, 64, 128, 256];
        double[] rates = quick ? [10_000, 100_000, 1_000_000, 0] : [10_000, 100_000, 500_000, 1_000_000, 2_000_000, 0];
        var b = BenchPoint.Base;
        var plan = new BenchPlan();

        // The reference point and its packed twin first, so a truncated sweep still compares them.
        plan.Add(b, RingBurst, EventIdxSeries, InOrderSeries, FrameSizes, WaitLoad);
        plan.Add(b with { Ring = RingFormat.Packed }, RingBurst);

        // Both formats on 4 KiB and then 2 MiB pages, each beside DPDK on the same pages and
        // with its features.
        foreach (var ring in RingFormat.All)
        {
            plan.Add(BenchPoint.DpdkPeer(ring, hugePages: false), PagesSeries);
        }

        if (hugePages)
        {
            foreach (var ring in RingFormat.All)
            {
                plan.Add(BenchPoint.DpdkPeer(ring, hugePages: true), PagesSeries);
            }
        }

        foreach (var ring in RingFormat.All)
        {
            foreach (var burst in bursts)
            {
                plan.Add(b with { Ring = ring, Burst = burst }, RingBurst);
            }
        }

        plan.Add(b with { EventIdx = false }, EventIdxSeries);
        plan.Add(b with { InOrder = true }, InOrderSeries);
        foreach (var size in new[] { 256, 1514 })
        {
            plan.Add(b with { FrameSize = size }, FrameSizes);
        }

        // Latency against offered load per wait strategy (EVENT_IDX on).
        foreach (var wait in Enum.GetValues<WaitStrategy>())
        {
            foreach (var rate in rates)
            {
                plan.Add(b with { Wait = wait, Rate = rate }, WaitLoad);
            }
        }

        // Kicks and calls against offered load, EVENT_IDX on and off. Busy-polling sides never ask
        // to be notified, so both settings show almost none there; the sides that sleep when idle
        // (block) are where suppression has work to do.
        foreach (var eventIdx in new[] { true, false })
        {
            foreach (var rate in rates)
            {
                plan.Add(b with { Wait = WaitStrategy.Block, EventIdx = eventIdx, Rate = rate }, EventIdxLoad);
            }
        }

        return plan;
    }

    /// <summary>Keeps only the first <paramref name="count"/> points.</summary>
    public void Truncate(int count)
    {
        while (_points.Count > count)
        {
            _series.Remove(_points[^1]);
            _points.RemoveAt(_points.Count - 1);
        }
    }

    /// <summary>Frames per second as 10k, 1M or max.</summary>
    public static string RateText(double rate) => rate switch
    {
        <= 0 => "max",
        >= 1_000_000 => (rate / 1e6).ToString("0.##", CultureInfo.InvariantCulture) + "M",
        >= 1_000 => (rate / 1e3).ToString("0.##", CultureInfo.InvariantCulture) + "k",
        _ => rate.ToString("0", CultureInfo.InvariantCulture),
    };

    private void Add(BenchPoint p, params string[] series)
    {
        if (!_series.TryGetValue(p, out var list))
        {
            list = [];
            _series[p] = list;
            _points.Add(p);
        }

        foreach (var s in series)
        {
            if (!list.Contains(s))
            {
                list.Add(s);
            }
        }
    }
}
