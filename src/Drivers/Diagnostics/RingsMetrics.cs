using System.Diagnostics.Metrics;
using System.Reflection;
using Rings.Linux.Device;
using Rings.Linux.Ports;
using Rings.Linux.Runtime;
using Rings.Linux.Switching;

namespace Rings.Linux.Diagnostics;

/// <summary>
/// The <c>Rings</c> meter (<see cref="System.Diagnostics.Metrics"/>): observable instruments that
/// read the counters the data path keeps anyway (<see cref="PortCounters"/>,
/// <see cref="QueueCounters"/>, the MAC table's, the vhost-user back-end's). Nothing is recorded
/// per frame: a listener (<c>dotnet-counters</c>, <see cref="PrometheusEndpoint"/>, an
/// OpenTelemetry SDK) polls the instruments, and each poll reads the counters once.
/// <para>
/// Register what to watch with <see cref="AddPipeline"/>, <see cref="AddPort"/>,
/// <see cref="AddQueue"/>, <see cref="AddBackend"/> or <see cref="AddMacTable"/>; each returns a
/// registration whose disposal stops the reading. Every measurement is tagged with <c>port</c>
/// (the port's name) and, for queues, <c>queue</c>.
/// </para>
/// </summary>
public sealed class RingsMetrics : IDisposable
{
    /// <summary>The meter's name, as given to <c>dotnet-counters monitor --counters Rings</c>.</summary>
    public const string MeterName = "Rings";

    private static readonly string[] BurstSizes = MakeBurstSizes();

    private readonly object _gate = new();
    private readonly List<Port> _ports = [];
    private readonly List<QueueSource> _queues = [];
    private readonly List<(string Name, Func<VhostUserBackend?> Backend)> _backends = [];
    private readonly List<(string Name, MacTable Table)> _tables = [];
    private readonly List<Pipeline> _pipelines = [];

    /// <summary>Creates the meter and its instruments (nothing is watched until something is added).</summary>
    public RingsMetrics()
    {
        var version = typeof(RingsMetrics).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion;
        Meter = new Meter(MeterName, version);

        Meter.CreateObservableCounter("rings.port.frames", () => ForPorts(static (p, c, m) =>
        {
            m.Add(new(c.RxFrames, Tags(p, "direction", "rx")));
            m.Add(new(c.TxFrames, Tags(p, "direction", "tx")));
        }), "{frame}", "Frames received from (rx) and handed to (tx) each port's peer.");
        Meter.CreateObservableCounter("rings.port.bytes", () => ForPorts(static (p, c, m) =>
        {
            m.Add(new(c.RxBytes, Tags(p, "direction", "rx")));
            m.Add(new(c.TxBytes, Tags(p, "direction", "tx")));
        }), "By", "Ethernet bytes received and transmitted by each port (no virtio-net headers).");
        Meter.CreateObservableCounter("rings.port.bursts", () => ForPorts(static (p, c, m) =>
        {
            m.Add(new(c.RxBursts, Tags(p, "direction", "rx")));
            m.Add(new(c.TxBursts, Tags(p, "direction", "tx")));
        }), "{burst}", "Receive and transmit calls that moved at least one frame; frames / bursts is the mean burst.");
        Meter.CreateObservableCounter("rings.port.drops", () => ForPorts(static (p, c, m) =>
        {
            for (var r = 1; r < DropReasons.Count; r++)
            {
                m.Add(new(c.Drops((DropReason)r), Tags(p, "reason", DropReasons.Name((DropReason)r))));
            }
        }), "{frame}", "Frames dropped, by reason, on the port that counts them.");
        Meter.CreateObservableGauge("rings.port.link", () => ForPorts(static (p, _, m) => m.Add(new(p.Link == LinkState.Up ? 1 : 0, Tags(p)))), null, "1 while the port's link is up, 0 while down.");
        Meter.CreateObservableCounter("rings.port.link_changes", () => ForPorts(static (p, c, m) => m.Add(new(Volatile.Read(ref c.LinkChanges), Tags(p)))), "{change}", "Times each port's link went up or down.");

        Meter.CreateObservableCounter("rings.queue.chains", () => ForQueues(static (q, m) => m.Add(new(q.Queue.Counters.Packets, q.Tags))), "{chain}", "Descriptor chains (frames) through each virtqueue.");
        Meter.CreateObservableCounter("rings.queue.bytes", () => ForQueues(static (q, m) => m.Add(new(q.Queue.Counters.Bytes, q.Tags))), "By", "Payload bytes through each virtqueue.");
        Meter.CreateObservableCounter("rings.queue.bursts", () => ForQueues(static (q, m) =>
        {
            var histogram = q.Queue.Counters.BurstHistogram;
            for (var b = 0; b < histogram.Length; b++)
            {
                if (histogram[b] != 0)
                {
                    m.Add(new(histogram[b], With(q.Tags, "size", BurstSizes[b])));
                }
            }
        }), "{burst}", "Publishes of each virtqueue's index, by burst size (chains per publish, in power-of-two ranges).");
        Meter.CreateObservableCounter("rings.queue.notifications", () => ForQueues(static (q, m) =>
        {
            var kind = q.Queue.IsDevice ? "call" : "kick";
            m.Add(new(q.Queue.Counters.NotificationsSent, With(With(q.Tags, "kind", kind), "outcome", "sent")));
            m.Add(new(q.Queue.Counters.NotificationsSuppressed, With(With(q.Tags, "kind", kind), "outcome", "suppressed")));
        }), "{notification}", "Notification decisions of each virtqueue side: calls (device) or kicks (driver), sent or suppressed because the peer did not want one.");
        Meter.CreateObservableCounter("rings.queue.drops", () => ForQueues(static (q, m) => m.Add(new(q.Queue.Counters.Drops, q.Tags))), "{frame}", "Frames dropped for want of a buffer in each virtqueue.");
        Meter.CreateObservableCounter("rings.queue.breaks", () => ForQueues(static (q, m) => m.Add(new(q.Queue.Counters.BrokenCount, q.Tags))), "{break}", "Times each virtqueue was marked broken by a peer's violation.");
        Meter.CreateObservableGauge("rings.queue.broken", () => ForQueues(static (q, m) =>
        {
            if (q.Queue.Broken != BrokenReason.None)
            {
                m.Add(new(1, With(q.Tags, "reason", q.Queue.Broken.ToString())));
            }
        }), "{queue}", "1 for each virtqueue that is broken now, tagged with the reason (absent while healthy).");

        Meter.CreateObservableCounter("rings.connections", () => ForBackends(static (name, b, m) => m.Add(new(b.Connections, Tags(name)))), "{connection}", "vhost-user front-ends accepted.");
        Meter.CreateObservableUpDownCounter("rings.connections.active", () => ForBackends(static (name, b, m) => m.Add(new(b.Connections - b.SessionsEnded, Tags(name)))), "{connection}", "vhost-user front-ends connected now.");
        Meter.CreateObservableCounter("rings.connections.refused", () => ForBackends(static (name, b, m) => m.Add(new(b.Refused, Tags(name)))), "{connection}", "vhost-user front-ends closed at once because the back-end served its limit.");
        Meter.CreateObservableCounter("rings.connections.errors", () => ForBackends(static (name, b, m) => m.Add(new(b.Errors, Tags(name)))), "{error}", "vhost-user messages refused and connections broken.");

        Meter.CreateObservableUpDownCounter("rings.mac_table.entries", () => ForTables(static (name, t, m) => m.Add(new(t.Count, TableTags(name)))), "{entry}", "Stations in the learning switch's MAC table.");
        Meter.CreateObservableCounter("rings.mac_table.events", () => ForTables(static (name, t, m) =>
        {
            var c = t.Counters;
            m.Add(new(c.Learned, Tags("table", name, "event", "learned")));
            m.Add(new(c.Moved, Tags("table", name, "event", "moved")));
            m.Add(new(c.Refused, Tags("table", name, "event", "refused")));
            m.Add(new(c.InvalidSources, Tags("table", name, "event", "invalid-source")));
            m.Add(new(c.Aged, Tags("table", name, "event", "aged")));
            m.Add(new(c.Flushed, Tags("table", name, "event", "flushed")));
        }), "{event}", "MAC table changes: learned, moved, refused (table full), invalid sources, aged out, flushed on link down.");

        Meter.CreateObservableCounter("rings.worker.rounds", () => ForPipelines(static p => p.Rounds), "{round}", "Polling rounds of all workers.");
        Meter.CreateObservableCounter("rings.worker.sleeps", () => ForPipelines(static p => p.Sleeps), "{sleep}", "Times a worker slept waiting for work.");
        Meter.CreateObservableCounter("rings.worker.errors", () => ForPipelines(static p => p.Errors), "{error}", "Exceptions caught on the data path.");
    }

    /// <summary>The meter.</summary>
    public Meter Meter { get; }

    /// <summary>Watches a pipeline: its ports (and their queues and connections), its workers, and the MAC table when the processor is a <see cref="LearningSwitch"/>.</summary>
    /// <param name="pipeline">The pipeline.</param>
    /// <returns>Dispose to stop watching.</returns>
    public IDisposable AddPipeline(Pipeline pipeline)
    {
        ArgumentNullException.ThrowIfNull(pipeline);
        var parts = new List<IDisposable>();
        foreach (var p in pipeline.Ports)
        {
            parts.Add(AddPort(p));
        }

        if (pipeline.Processor is LearningSwitch s)
        {
            parts.Add(AddMacTable(s.Name, s.Table));
        }

        parts.Add(Register(_pipelines, pipeline));
        return new Registration(() => parts.ForEach(r => r.Dispose()));
    }

    /// <summary>Watches a port: its counters, its queues (<see cref="Port.Queues"/>) and, for a vhost-user port, its connections.</summary>
    /// <param name="port">The port.</param>
    /// <returns>Dispose to stop watching.</returns>
    public IDisposable AddPort(Port port)
    {
        ArgumentNullException.ThrowIfNull(port);
        var parts = new List<IDisposable> { Register(_ports, port) };
        if (port is VhostUserPort v)
        {
            parts.Add(AddBackend(port.Name, () => v.Backend));
        }

        return new Registration(() => parts.ForEach(r => r.Dispose()));
    }

    /// <summary>Watches the queues <paramref name="queues"/> returns (read at each poll), tagged with <paramref name="port"/>.</summary>
    /// <param name="port">The name to tag them with.</param>
    /// <param name="queues">Returns the queues as they are now (none while detached).</param>
    /// <returns>Dispose to stop watching.</returns>
    public IDisposable AddQueue(string port, Func<IEnumerable<PortQueue>> queues)
    {
        ArgumentException.ThrowIfNullOrEmpty(port);
        ArgumentNullException.ThrowIfNull(queues);
        return Register(_queues, new QueueSource(port, queues));
    }

    /// <summary>Watches a vhost-user back-end's connections, tagged with <paramref name="name"/>.</summary>
    /// <param name="name">The name to tag it with (its socket, a port's name).</param>
    /// <param name="backend">Returns the back-end (null while there is none).</param>
    /// <returns>Dispose to stop watching.</returns>
    public IDisposable AddBackend(string name, Func<VhostUserBackend?> backend)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        ArgumentNullException.ThrowIfNull(backend);
        return Register(_backends, (name, backend));
    }

    /// <summary>Watches a MAC table, tagged <c>table</c> = <paramref name="name"/>.</summary>
    /// <param name="name">The name to tag it with.</param>
    /// <param name="table">The table.</param>
    /// <returns>Dispose to stop watching.</returns>
    public IDisposable AddMacTable(string name, MacTable table)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        ArgumentNullException.ThrowIfNull(table);
        return Register(_tables, (name, table));
    }

    /// <summary>Disposes the meter: its instruments stop reporting.</summary>
    public void Dispose() => Meter.Dispose();

    private IDisposable Register<T>(List<T> list, T item)
    {
        lock (_gate)
        {
            list.Add(item);
        }

        return new Registration(() =>
        {
            lock (_gate)
            {
                list.Remove(item);
            }
        });
    }

    private T[] Copy<T>(List<T> list)
    {
        lock (_gate)
        {
            return [.. list];
        }
    }

    private List<Measurement<long>> ForPorts(Action<Port, PortCounters, List<Measurement<long>>> read)
    {
        var m = new List<Measurement<long>>();
        foreach (var p in Copy(_ports))
        {
            read(p, p.Counters, m);
        }

        return m;
    }

    private List<Measurement<long>> ForQueues(Action<(PortQueue Queue, KeyValuePair<string, object?>[] Tags), List<Measurement<long>>> read)
    {
        var m = new List<Measurement<long>>();
        foreach (var p in Copy(_ports))
        {
            foreach (var q in p.Queues)
            {
                read((q, Tags(p.Name, "queue", q.Name)), m);
            }
        }

        foreach (var s in Copy(_queues))
        {
            foreach (var q in s.Queues())
            {
                read((q, Tags(s.Port, "queue", q.Name)), m);
            }
        }

        return m;
    }

    private List<Measurement<long>> ForBackends(Action<string, VhostUserBackend, List<Measurement<long>>> read)
    {
        var m = new List<Measurement<long>>();
        foreach (var (name, backend) in Copy(_backends))
        {
            if (backend() is { } b)
            {
                read(name, b, m);
            }
        }

        return m;
    }

    private List<Measurement<long>> ForTables(Action<string, MacTable, List<Measurement<long>>> read)
    {
        var m = new List<Measurement<long>>();
        foreach (var (name, table) in Copy(_tables))
        {
            read(name, table, m);
        }

        return m;
    }

    // One measurement over all pipelines, none when there are none (rings host has workers of its own).
    private List<Measurement<long>> ForPipelines(Func<Pipeline, long> read)
    {
        var pipelines = Copy(_pipelines);
        if (pipelines.Length == 0)
        {
            return [];
        }

        long sum = 0;
        foreach (var p in pipelines)
        {
            sum += read(p);
        }

        return [new(sum)];
    }

    private static KeyValuePair<string, object?>[] Tags(Port port) => [new("port", port.Name), new("kind", port.Kind)];

    private static KeyValuePair<string, object?>[] Tags(Port port, string key, string value) => [new("port", port.Name), new("kind", port.Kind), new(key, value)];

    private static KeyValuePair<string, object?>[] Tags(string port) => [new("port", port)];

    private static KeyValuePair<string, object?>[] Tags(string port, string key, string value) => [new("port", port), new(key, value)];

    private static KeyValuePair<string, object?>[] Tags(string key1, string value1, string key2, string value2) => [new(key1, value1), new(key2, value2)];

    private static KeyValuePair<string, object?>[] TableTags(string table) => [new("table", table)];

    private static KeyValuePair<string, object?>[] With(KeyValuePair<string, object?>[] tags, string key, string value) => [.. tags, new(key, value)];

    private static string[] MakeBurstSizes()
    {
        var sizes = new string[QueueCounters.BurstBuckets];
        for (var b = 0; b < sizes.Length; b++)
        {
            var low = 1L << b;
            sizes[b] = b == 0 ? "1" : b == sizes.Length - 1 ? $"{low}+" : $"{low}-{(low << 1) - 1}";
        }

        return sizes;
    }

    private sealed record QueueSource(string Port, Func<IEnumerable<PortQueue>> Queues);

    private sealed class Registration(Action undo) : IDisposable
    {
        private Action? _undo = undo;

        public void Dispose() => Interlocked.Exchange(ref _undo, null)?.Invoke();
    }
}
