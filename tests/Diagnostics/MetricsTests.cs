using System.Diagnostics.Metrics;
using System.Net;
using System.Net.Sockets;
using Rings.Linux.Diagnostics;
using Rings.Linux.Ports;
using Rings.Linux.Runtime;

namespace Rings.Tests.Diagnostics;

/// <summary>
/// The <c>Rings</c> meter read in process with a <see cref="MeterListener"/>, and the Prometheus
/// endpoint scraped over HTTP, against counts the test knows from the frames it sent.
/// </summary>
public class MetricsTests
{
    private static readonly byte[] Broadcast = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff];

    /// <summary>Two in-memory ports joined by the learning switch, frames sent from port 0, port names unique to the test.</summary>
    private sealed class Rig : IDisposable
    {
        public Rig()
        {
            var id = Guid.NewGuid().ToString("N")[..8];
            Ports = [new InMemoryPort($"m{id}-0"), new InMemoryPort($"m{id}-1")];
            foreach (var p in Ports)
            {
                p.Open();
            }

            Switch = new LearningSwitch();
            Pipeline = new Pipeline(Ports, Switch);
            Metrics = new RingsMetrics();
            Watched = Metrics.AddPipeline(Pipeline);
        }

        public InMemoryPort[] Ports { get; }

        public LearningSwitch Switch { get; }

        public Pipeline Pipeline { get; }

        public RingsMetrics Metrics { get; }

        public IDisposable Watched { get; }

        /// <summary>Injects <paramref name="count"/> frames of <paramref name="length"/> bytes at port 0, from station 1 to <paramref name="destination"/>, and runs the pipeline until idle.</summary>
        public void Send(int count, int length, byte[] destination, byte source = 1)
        {
            var frame = new byte[length];
            destination.CopyTo(frame, 0);
            frame[6] = 0x02;
            frame[11] = source;
            frame[12] = 0x88;
            frame[13] = 0xb5;
            for (var i = 0; i < count; i++)
            {
                Assert.True(Ports[0].TryInject(frame));
                if (i % 64 == 63)
                {
                    Drain();
                }
            }

            Drain();
            var buffer = new byte[2048];
            while (Ports[1].TryTake(buffer, out _, out _))
            {
            }
        }

        public void Drain()
        {
            for (var i = 0; i < 1000 && Pipeline.RunOnce() > 0; i++)
            {
            }
        }

        public void Dispose()
        {
            Watched.Dispose();
            Metrics.Dispose();
            Pipeline.Dispose();
            foreach (var p in Ports)
            {
                p.Dispose();
            }
        }
    }

    /// <summary>Every measurement the Rings instruments report in one poll: instrument name, tags, value.</summary>
    private static List<(string Name, Dictionary<string, string> Tags, double Value)> Poll()
    {
        var readings = new List<(string, Dictionary<string, string>, double)>();
        using var listener = new MeterListener
        {
            InstrumentPublished = (i, l) =>
            {
                if (i.Meter.Name == RingsMetrics.MeterName)
                {
                    l.EnableMeasurementEvents(i);
                }
            },
        };
        void Add(Instrument i, double v, ReadOnlySpan<KeyValuePair<string, object?>> tags)
        {
            var d = new Dictionary<string, string>();
            foreach (var t in tags)
            {
                d[t.Key] = t.Value?.ToString() ?? string.Empty;
            }

            lock (readings)
            {
                readings.Add((i.Name, d, v));
            }
        }

        listener.SetMeasurementEventCallback<long>((i, v, t, _) => Add(i, v, t));
        listener.SetMeasurementEventCallback<int>((i, v, t, _) => Add(i, v, t));
        listener.Start();
        listener.RecordObservableInstruments();
        return readings;
    }

    private static double Value(List<(string Name, Dictionary<string, string> Tags, double Value)> readings, string name, params (string Key, string Value)[] tags)
    {
        var matches = readings.Where(r => r.Name == name && tags.All(t => r.Tags.TryGetValue(t.Key, out var v) && v == t.Value)).ToList();
        Assert.True(matches.Count == 1, $"{name} {string.Join(',', tags)}: {matches.Count} readings");
        return matches[0].Value;
    }

    [Fact]
    public void PortCountersDropsLinkAndMacTableAreReadThroughTheMeter()
    {
        using var rig = new Rig();
        rig.Send(100, 128, Broadcast);        // flooded to port 1: rx 100 at 0, tx 100 at 1
        rig.Send(10, 60, [0x02, 0, 0, 0, 0, 1]); // to station 1, learned on port 0 itself: filtered
        var p0 = rig.Ports[0].Name;
        var p1 = rig.Ports[1].Name;
        var r = Poll();

        Assert.Equal(110, Value(r, "rings.port.frames", ("port", p0), ("direction", "rx")));
        Assert.Equal(100 * 128 + 10 * 60, Value(r, "rings.port.bytes", ("port", p0), ("direction", "rx")));
        Assert.Equal(100, Value(r, "rings.port.frames", ("port", p1), ("direction", "tx")));
        Assert.Equal(100 * 128, Value(r, "rings.port.bytes", ("port", p1), ("direction", "tx")));
        Assert.Equal(0, Value(r, "rings.port.frames", ("port", p1), ("direction", "rx")));
        Assert.Equal(10, Value(r, "rings.port.drops", ("port", p0), ("reason", "filtered")));
        Assert.Equal(0, Value(r, "rings.port.drops", ("port", p0), ("reason", "destination-full")));
        Assert.Equal(rig.Ports[0].Counters.RxBursts, Value(r, "rings.port.bursts", ("port", p0), ("direction", "rx")));
        Assert.Equal(1, Value(r, "rings.port.link", ("port", p0), ("kind", "memory")));
        Assert.Equal(1, Value(r, "rings.mac_table.entries", ("table", rig.Switch.Name)));
        Assert.Equal(1, Value(r, "rings.mac_table.events", ("table", rig.Switch.Name), ("event", "learned")));

        rig.Ports[1].SetLinkState(LinkState.Down);
        r = Poll();
        Assert.Equal(0, Value(r, "rings.port.link", ("port", p1)));
        Assert.Equal(rig.Ports[1].Counters.LinkChanges, Value(r, "rings.port.link_changes", ("port", p1)));
    }

    [Fact]
    public void AStoppedRegistrationIsNoLongerReported()
    {
        using var rig = new Rig();
        rig.Send(5, 64, Broadcast);
        var p0 = rig.Ports[0].Name;
        Assert.Contains(Poll(), x => x.Name == "rings.port.frames" && x.Tags["port"] == p0);
        rig.Watched.Dispose();
        Assert.DoesNotContain(Poll(), x => x.Tags.TryGetValue("port", out var p) && p == p0);
    }

    [Fact]
    public void QueueCountersAreReportedPerQueueWithBurstSizesAndNotifications()
    {
        using var pair = RingPair.Create(RingFormat.Split, 64, 64 * 256, VirtioFeatures.EventIndex);
        using var metrics = new RingsMetrics();
        var name = $"q{Guid.NewGuid():N}";
        using var watched = metrics.AddQueue(name, () => [PortQueue.Of("transmitq", pair.Driver), PortQueue.Of("transmitq-device", pair.Device)]);

        // Bursts of 1, then 5 (bucket 4-7), then 16 (bucket 16-31).
        var sent = 0;
        foreach (var burst in new[] { 1, 5, 16 })
        {
            for (var i = 0; i < burst; i++)
            {
                Assert.True(pair.Driver.TryAdd(new Chains.BufferSegment(pair.BufferAddress + (ulong)(i * 256), 100), deviceWritable: false, out _));
            }

            pair.Driver.Publish();
            sent += burst;
            while (pair.Device.TryPop(out var chain))
            {
                pair.Device.PushUsed(chain.Token, 0);
            }

            pair.Device.PublishUsed();
            while (pair.Driver.TryTakeUsed(out _))
            {
            }
        }

        var r = Poll();
        Assert.Equal(sent, Value(r, "rings.queue.chains", ("port", name), ("queue", "transmitq")));
        Assert.Equal(1, Value(r, "rings.queue.bursts", ("port", name), ("queue", "transmitq"), ("size", "1")));
        Assert.Equal(1, Value(r, "rings.queue.bursts", ("port", name), ("queue", "transmitq"), ("size", "4-7")));
        Assert.Equal(1, Value(r, "rings.queue.bursts", ("port", name), ("queue", "transmitq"), ("size", "16-31")));
        var d = pair.Driver.Counters;
        Assert.Equal(d.NotificationsSent, Value(r, "rings.queue.notifications", ("port", name), ("queue", "transmitq"), ("kind", "kick"), ("outcome", "sent")));
        Assert.Equal(d.NotificationsSuppressed, Value(r, "rings.queue.notifications", ("port", name), ("queue", "transmitq"), ("kind", "kick"), ("outcome", "suppressed")));
        Assert.Contains(r, x => x.Name == "rings.queue.notifications" && x.Tags["queue"] == "transmitq-device" && x.Tags["kind"] == "call");
        Assert.DoesNotContain(r, x => x.Name == "rings.queue.broken" && x.Tags["port"] == name);

        pair.Device.MarkBroken(BrokenReason.HeadOutOfRange);
        r = Poll();
        Assert.Equal(1, Value(r, "rings.queue.broken", ("port", name), ("queue", "transmitq-device"), ("reason", "HeadOutOfRange")));
        Assert.Equal(1, Value(r, "rings.queue.breaks", ("port", name), ("queue", "transmitq-device")));
    }

    [Fact]
    public async Task TheEndpointServesPrometheusTextOnLoopback()
    {
        using var rig = new Rig();
        rig.Send(42, 100, Broadcast);
        using var endpoint = PrometheusEndpoint.Start(new IPEndPoint(IPAddress.Loopback, FreePort()));
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(20) };
        var response = await http.GetAsync(endpoint.Url);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.StartsWith("text/plain", response.Content.Headers.ContentType?.ToString(), StringComparison.Ordinal);
        var text = await response.Content.ReadAsStringAsync();
        var p0 = rig.Ports[0].Name;
        Assert.Contains("# TYPE rings_port_frames_total counter\n", text, StringComparison.Ordinal);
        Assert.Contains("# HELP rings_port_frames_total Frames received", text, StringComparison.Ordinal);
        Assert.Contains($"rings_port_frames_total{{port=\"{p0}\",kind=\"memory\",direction=\"rx\"}} 42\n", text, StringComparison.Ordinal);
        Assert.Contains($"rings_port_bytes_total{{port=\"{p0}\",kind=\"memory\",direction=\"rx\"}} 4200\n", text, StringComparison.Ordinal);
        Assert.Contains("# TYPE rings_port_link gauge\n", text, StringComparison.Ordinal);
        Assert.Contains($"rings_port_link{{port=\"{p0}\",kind=\"memory\"}} 1\n", text, StringComparison.Ordinal);
        Assert.Contains("# TYPE rings_mac_table_entries gauge\n", text, StringComparison.Ordinal);

        // Every sample line is NAME{LABELS} VALUE, each metric announced by HELP and TYPE before its samples.
        var announced = new HashSet<string>();
        foreach (var line in text.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            if (line.StartsWith("# TYPE ", StringComparison.Ordinal))
            {
                announced.Add(line.Split(' ')[2]);
                continue;
            }

            if (line.StartsWith('#'))
            {
                continue;
            }

            Assert.Matches(@"^[a-zA-Z_][a-zA-Z0-9_]*(\{[a-zA-Z_][a-zA-Z0-9_]*=""(\\.|[^""\\])*""(,[a-zA-Z_][a-zA-Z0-9_]*=""(\\.|[^""\\])*"")*\})? -?[0-9.eE+]+$", line);
            Assert.Contains(line[..line.IndexOfAny(['{', ' '])], announced);
        }

        // The next scrape sees what moved since.
        rig.Send(8, 100, Broadcast);
        text = await http.GetStringAsync(endpoint.Url);
        Assert.Contains($"rings_port_frames_total{{port=\"{p0}\",kind=\"memory\",direction=\"rx\"}} 50\n", text, StringComparison.Ordinal);
        Assert.Equal(HttpStatusCode.NotFound, (await http.GetAsync(endpoint.Url.Replace("/metrics", "/other", StringComparison.Ordinal))).StatusCode);
        Assert.Equal(2, endpoint.Scrapes);
    }

    [Theory]
    [InlineData("127.0.0.1:9464", true)]
    [InlineData("[::1]:9464", true)]
    [InlineData("127.0.0.1", false)]
    [InlineData("0.0.0.0:9464", false)]
    [InlineData("169.254.1.1:9464", false)]
    [InlineData("localhost:9464", false)]
    [InlineData("127.0.0.1:0", false)]
    public void OnlyLoopbackAddressesWithAPortAreAccepted(string text, bool accepted)
    {
        Assert.Equal(accepted, PrometheusEndpoint.TryParse(text, out _, out var error));
        Assert.Equal(accepted, error is null);
        if (!accepted)
        {
            Assert.Throws<ArgumentException>(() => PrometheusEndpoint.Start(new IPEndPoint(IPAddress.Parse("169.254.1.1"), 9464)));
        }
    }

    [Fact]
    public void APortInUseIsAnIOException()
    {
        using var first = PrometheusEndpoint.Start(new IPEndPoint(IPAddress.Loopback, FreePort()));
        Assert.Throws<IOException>(() => PrometheusEndpoint.Start(first.Endpoint));
    }

    /// <summary>A loopback TCP port nobody listens on now.</summary>
    internal static int FreePort()
    {
        using var probe = new TcpListener(IPAddress.Loopback, 0);
        probe.Start();
        return ((IPEndPoint)probe.LocalEndpoint).Port;
    }
}
