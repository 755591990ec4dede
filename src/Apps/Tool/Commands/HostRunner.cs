using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text.Json;
using Rings.Linux.Device;
using Rings.Linux.Diagnostics;
using Rings.Linux.Net;
using Rings.Linux.Plumbing;
using Rings.Linux.VhostUser;
using Rings.Packed;
using Rings.Split;

namespace Rings.Tool.Commands;

/// <summary>
/// <c>rings host</c>: the vhost-user back-end with the vhost-net data path. Serves front-end after
/// front-end; for each queue pair of each, once its receive and transmit queues run and are
/// enabled, a worker thread of its own forwards every frame transmitted on the pair back into the
/// pair's receive queue (reflect). Pairs start and stop on their own (SET_VRING_ENABLE,
/// GET_VRING_BASE); workers share nothing on the data path. Patch mode wires pair 0 only.
/// <para>
/// No front-end can hold up another: the lock guards only the tables of queues and workers, and
/// workers are stopped and joined outside it, with a deadline. A worker stuck on a doorbell its
/// front-end blocked is reported to the session, which breaks the ring and closes that
/// connection; the worker keeps the front-end's memory mapped (a lease) until it ends.
/// </para>
/// </summary>
internal sealed class HostRunner
{
    private readonly HostOptions _o;
    private readonly TextWriter _output;
    private readonly object _gate = new();
    private readonly Dictionary<object, VhostQueue?[]> _sessionQueues = [];
    private readonly Dictionary<object, int> _sessionNumbers = [];
    private RingsMetrics? _metrics;
    private readonly List<Worker> _workers = [];
    private readonly Dictionary<object, SortedDictionary<int, PairFigures>> _figures = [];
    private IReadOnlyList<int> _cpus = [];
    private int _sessions;
    private int _nextSession;
    private bool _interrupted;
    private readonly ManualResetEventSlim _done = new();
    private int _stopTimeout = 2000;

    private HostRunner(HostOptions o, TextWriter output)
    {
        _o = o;
        _output = output;
    }

    /// <summary>One running data path (one direction) and what it forwarded.</summary>
    private sealed class Worker
    {
        public required int Pair { get; init; }
        public required object Source { get; init; }
        public required object Destination { get; init; }
        public required Thread Thread { get; init; }
        public required Action Stop { get; init; }
        public required IDisposable Loop { get; init; }
        public required EventFd[] Doorbells { get; init; }
        public required Func<(long Frames, long Dropped, long Sleeps)> Progress { get; init; }
        public required IDeviceRing Tx { get; init; }
        public required IDeviceRing Rx { get; init; }
        public required Stopwatch Clock { get; init; }
        public required long CallsAtStart { get; init; }
        public required long SuppressedAtStart { get; init; }
        public required long PacketsAtStart { get; init; }
        public required long BurstsAtStart { get; init; }
        public IDisposable? Watched { get; init; }
    }

    public static int Run(HostOptions o, TextWriter output, TextWriter error)
    {
        using var monitoring = Monitoring.Start("host", o.Metrics, output, error, o.Verbose && o.LogLevel > Microsoft.Extensions.Logging.LogLevel.Debug ? Microsoft.Extensions.Logging.LogLevel.Debug : o.LogLevel);
        if (monitoring is null)
        {
            return 3;
        }

        var runner = new HostRunner(o, output) { _metrics = monitoring.Metrics };
        SwitchCommand.TryParseCpus(o.Cpus, out runner._cpus, out _);
        var options = new VhostUserBackendOptions
        {
            MaxQueuePairs = o.Queues,
            SocketPath = o.Socket,
            Connect = o.Connect,
            MaxConnections = o.Mode == HostMode.Patch ? 2 : 8,
            AllowedUids = Cli.TryParseUids(o.AllowUid, out var uids) is null ? uids : null,
            MaxMemoryBytes = (ulong)o.MaxMemory << 20,
            TrustUnsealedMemory = o.TrustUnsealed,
            Logger = monitoring.Logger,
        };
        runner._stopTimeout = options.StopTimeoutMilliseconds;
        VhostUserBackend backend;
        try
        {
            backend = new VhostUserBackend(options);
            backend.QueueStarted += (session, e) => runner.OnStarted(session!, e.Queue);
            backend.QueueStopped += (session, e) => runner.OnStopped(session!, e);
            backend.QueueEnabledChanged += (session, e) => runner.OnEnabledChanged(session!, e.Queue);
            backend.SessionEnded += (session, reason) => runner.OnSessionEnded(session!, reason);
            backend.Start();
            monitoring.Metrics.AddBackend(o.Socket, () => backend);
        }
        catch (Exception e) when (e is IOException or ArgumentException or InvalidOperationException)
        {
            error.WriteLine($"rings host: cannot listen on {o.Socket}: {e.Message}");
            return 3;
        }

        using var signals = StopSignals.Install(s =>
        {
            if (s == PosixSignal.SIGINT)
            {
                runner.Interrupt();
            }
            else
            {
                runner._done.Set();
            }
        });

        // Said once the stop signals are ours: a caller that signals after this line gets the closing figures.
        output.WriteLine($"rings host: {(o.Connect ? "connecting to the front-end at" : "serving vhost-user on")} {o.Socket} (mode {Cli.Text(o.Mode)}, {o.Queues} queue pair(s){(o.Queues > 1 && o.Mode == HostMode.Patch ? ", patch wires pair 0 only" : string.Empty)}, wait {Cli.Text(o.Wait)}, burst {o.Burst})");

        // Live progress once a second while frames move.
        long lastFrames = 0;
        var lastTime = Stopwatch.GetTimestamp();
        while (!runner._done.Wait(1000))
        {
            if (o.Quiet)
            {
                continue;
            }

            long frames = 0;
            int workers;
            lock (runner._gate)
            {
                workers = runner._workers.Count;
                foreach (var w in runner._workers)
                {
                    frames += w.Progress().Frames;
                }
            }

            var now = Stopwatch.GetTimestamp();
            if (workers > 0 && frames != lastFrames)
            {
                var seconds = (now - lastTime) / (double)Stopwatch.Frequency;
                output.WriteLine($"rings host: {workers} data path(s), {Math.Max(0, frames - lastFrames) / seconds / 1e6:0.000} Mpps forwarded");
            }

            lastFrames = frames;
            lastTime = now;
        }

        backend.Dispose();
        List<Worker> rest;
        lock (runner._gate)
        {
            rest = runner.TakeWorkers(null, null);
        }

        runner.StopWorkers(rest, "stopping", runner._stopTimeout);

        output.WriteLine($"rings host: stopped after {runner._sessions} front-end(s)");
        return 0;
    }

    // Ctrl-C. With --once the guest beside us got it too and is draining its last frames: let it
    // finish and leave (up to 0.7 s, so the command still stops within a second) so nothing in
    // flight is lost. Otherwise, or on a second Ctrl-C, stop now.
    private void Interrupt()
    {
        lock (_gate)
        {
            if (!_o.Once || _interrupted || _sessionQueues.Count == 0)
            {
                _done.Set();
                return;
            }

            _interrupted = true;
        }

        _ = Task.Delay(700).ContinueWith(_ => _done.Set(), TaskScheduler.Default);
    }

    private void OnStarted(object session, VhostQueue queue)
    {
        lock (_gate)
        {
            if (!_sessionQueues.TryGetValue(session, out var queues))
            {
                queues = new VhostQueue?[2 * _o.Queues];
                _sessionQueues[session] = queues;
                _sessionNumbers[session] = _nextSession++;
            }

            if ((uint)queue.Index >= (uint)queues.Length)
            {
                return;
            }

            queues[queue.Index] = queue;
            StartPairIfReady(session, queues, queue.Index / 2);
        }
    }

    // A pair forwards once both its rings run and are enabled (vhost-user.rst, Ring states); a
    // pair the front-end never set up or keeps disabled simply has no worker. Caller holds _gate.
    private void StartPairIfReady(object session, VhostQueue?[] queues, int pair)
    {
        if (queues[2 * pair] is not { Enabled: true } rx || queues[(2 * pair) + 1] is not { Enabled: true } tx || _workers.Exists(w => w.Source == session && w.Pair == pair))
        {
            return;
        }

        if (_o.Mode == HostMode.Reflect)
        {
            StartWorker(session, tx, session, rx, pair);
            return;
        }

        if (pair > 0)
        {
            _output.WriteLine($"rings host: patch mode wires queue pair 0 only; pair {pair} of this front-end is not served");
            return;
        }

        // Patch: wire this front-end's pair 0 to another's whose pair 0 runs, both ways.
        foreach (var (other, theirs) in _sessionQueues)
        {
            if (other != session && theirs[0] is { Enabled: true } theirRx && theirs[1] is { Enabled: true } theirTx && !_workers.Exists(w => w.Source == other))
            {
                StartWorker(session, tx, other, theirRx, 0);
                StartWorker(other, theirTx, session, rx, 0);
                return;
            }
        }

        _output.WriteLine("rings host: front-end ready, waiting for a second one to patch it to");
    }

    private void OnStopped(object session, VhostQueueEventArgs e)
    {
        // GET_VRING_BASE: every data path using the ring must let go before the back-end answers.
        if (TakePair(session, e.Queue, forget: true) is { } stopping && StopWorkers(stopping, "queue stopped", e.StopTimeoutMilliseconds) is { } stuck)
        {
            e.ReportNotStopped(stuck);
        }
    }

    // SET_VRING_ENABLE: a disabled ring is neither read nor filled; its pair's worker stops (the
    // rings keep their positions, so nothing in flight is lost) and starts again once both rings
    // are enabled. The other pairs run on untouched.
    private void OnEnabledChanged(object session, VhostQueue queue)
    {
        if (queue.Enabled)
        {
            lock (_gate)
            {
                if (_sessionQueues.TryGetValue(session, out var queues) && (uint)queue.Index < (uint)queues.Length && queues[queue.Index] == queue)
                {
                    StartPairIfReady(session, queues, queue.Index / 2);
                }
            }

            return;
        }

        if (TakePair(session, queue, forget: false) is { } stopping)
        {
            StopWorkers(stopping, $"queue pair {queue.Index / 2} disabled", _stopTimeout);
        }
    }

    // Takes the workers of the queue's pair out of the table (in patch mode, every worker touching
    // the session: its pair 0 is wired both ways); with forget, the queue is forgotten too.
    private List<Worker>? TakePair(object session, VhostQueue queue, bool forget)
    {
        lock (_gate)
        {
            if (!_sessionQueues.TryGetValue(session, out var queues) || (uint)queue.Index >= (uint)queues.Length || queues[queue.Index] != queue)
            {
                return null;
            }

            if (forget)
            {
                queues[queue.Index] = null;
            }

            return TakeWorkers(session, _o.Mode == HostMode.Reflect ? queue.Index / 2 : null);
        }
    }

    private void OnSessionEnded(object session, VhostUserError reason)
    {
        List<Worker> stopping;
        lock (_gate)
        {
            stopping = TakeWorkers(session, null);
        }

        if (reason.IsError)
        {
            _output.WriteLine($"rings host: connection closed: {reason}");
        }

        StopWorkers(stopping, reason.IsError ? reason.ToString() : "front-end disconnected", _stopTimeout);
        lock (_gate)
        {
            _sessionQueues.Remove(session);
            _sessionNumbers.Remove(session);
            _figures.Remove(session);
            _sessions++;
            if (_o.Once && _sessionQueues.Count == 0)
            {
                _done.Set();
            }
        }
    }

    private void StartWorker(object source, VhostQueue tx, object destination, VhostQueue rx, int pair)
    {
        var mergeable = (rx.Features & VirtioFeatures.NetMergeRxBuffers) != 0;
        IDoorbell txKick = tx.Kick is null ? NullDoorbell.Instance : tx.Kick;
        IDoorbell txCall = tx.Call is null ? NullDoorbell.Instance : tx.Call;
        IDoorbell rxKick = rx.Kick is null ? NullDoorbell.Instance : rx.Kick;
        IDoorbell rxCall = rx.Call is null ? NullDoorbell.Instance : rx.Call;
        var wait = tx.Kick is null || rx.Kick is null ? WaitStrategy.Poll : _o.Wait;

        // After a restart: transmit buffers the previous host already delivered are completed, not sent again.
        var completed = InflightRecovery.Settle(tx.Ring, rx.Ring);
        if (completed > 0)
        {
            _output.WriteLine($"rings host: {completed} transmitted frame(s) in flight were delivered before the restart: completed, not sent again");
        }

        EventFd[] doorbells = [.. new[] { tx.Kick, tx.Call, rx.Kick, rx.Call }.OfType<EventFd>()];
        // The format is chosen once, here: struct type arguments give the worker's loop code of its
        // own per format, calling the sealed rings directly (GenericDispatchBenchmarks). The ring
        // classes themselves would share one instantiation (reference types); wrapping rings (inflight
        // tracking) and mixed pairs take the interface path.
        _workers.Add((tx.Ring, rx.Ring) switch
        {
            (SplitDeviceRing t, SplitDeviceRing r) => Create(new SplitDevice(t), new SplitDevice(r)),
            (PackedDeviceRing t, PackedDeviceRing r) => Create(new PackedDevice(t), new PackedDevice(r)),
            _ => Create(tx.Ring, rx.Ring),
        });
        _output.WriteLine($"rings host: {(source == destination ? "reflecting" : "patching")}: ring {tx.Format}, size {tx.Ring.Size}, features 0x{(ulong)tx.Features:x}, MRG_RXBUF {(mergeable ? "on" : "off")}, queue pair {pair}");

        Worker Create<TTx, TRx>(TTx t, TRx r)
            where TTx : IDeviceRing
            where TRx : IDeviceRing
        {
            var loop = new NetWorker<TTx, TRx>(t, txKick, txCall, r, rxKick, rxCall, _o.Burst, mergeable, wait);

            // The thread keeps both front-ends' memory mapped for as long as it runs, even past a
            // stop it missed (the session unmaps only when the last lease goes).
            var txMemory = tx.LeaseMemory();
            var rxMemory = rx.LeaseMemory();
            var cpu = _cpus.Count > 0 ? _cpus[pair % _cpus.Count] : -1;
            var thread = new Thread(() =>
            {
                try
                {
                    if (cpu >= 0)
                    {
                        Pin(cpu, pair);
                    }

                    loop.Run();

                    // The loop ends early only when a ring broke: tell that front-end at once (SET_VRING_ERR).
                    if (t.IsBroken)
                    {
                        tx.ReportBroken();
                    }

                    if (r.IsBroken)
                    {
                        rx.ReportBroken();
                    }
                }
                catch (Exception e)
                {
                    // A bug must not take the server down; the queue is reported and the next front-end served.
                    _output.WriteLine($"rings host: data path failed: {e.GetType().Name}: {e.Message}");
                }
                finally
                {
                    rxMemory.Dispose();
                    txMemory.Dispose();
                }
            })
            { Name = $"vhost-net worker {pair}", IsBackground = true };
            thread.Start();
            // Each ring tagged with the front-end it belongs to: its transmit queue is the source's, its receive queue the destination's.
            var watched = _metrics is { } m
                ? new Watch(
                    m.AddQueue(SessionName(source), () => [PortQueue.Of(PortQueue.Label("transmitq", pair), t)]),
                    m.AddQueue(SessionName(destination), () => [PortQueue.Of(PortQueue.Label("receiveq", pair), r)]))
                : null;
            return new Worker
            {
                Pair = pair,
                Watched = watched,
                Source = source,
                Destination = destination,
                Thread = thread,
                Stop = loop.Stop,
                Loop = loop,
                Doorbells = doorbells,
                Progress = () => (loop.Frames, loop.Dropped, loop.Sleeps),
                Tx = t,
                Rx = r,
                Clock = Stopwatch.StartNew(),

                // The rings' counters live as long as the rings; a worker started again on them reports only its own.
                CallsAtStart = r.Counters.NotificationsSent + t.Counters.NotificationsSent,
                SuppressedAtStart = r.Counters.NotificationsSuppressed + t.Counters.NotificationsSuppressed,
                PacketsAtStart = r.Counters.Packets,
                BurstsAtStart = r.Counters.Bursts,
            };
        }
    }

    // Takes every worker that touches the session (all of them when null), of one pair or of all,
    // out of the table. Caller holds _gate.
    private List<Worker> TakeWorkers(object? session, int? pair)
    {
        var taken = new List<Worker>();
        for (var i = _workers.Count - 1; i >= 0; i--)
        {
            var w = _workers[i];
            if ((session is null || w.Source == session || w.Destination == session) && (pair is null || w.Pair == pair))
            {
                _workers.RemoveAt(i);
                taken.Add(w);
            }
        }

        return taken;
    }

    // Stops and joins the workers (caller holds no lock), within the deadline. Half-way, a worker
    // still running is freed from a doorbell write its front-end made block (EventFd.Unblock).
    // Returns what did not stop, or null when everything did.
    private string? StopWorkers(List<Worker> workers, string why, int timeoutMilliseconds)
    {
        foreach (var w in workers)
        {
            w.Watched?.Dispose();
            w.Stop();
        }

        var deadline = Environment.TickCount64 + Math.Max(0, timeoutMilliseconds);
        string? stuck = null;
        foreach (var w in workers)
        {
            if (!Join(w.Thread, deadline - (timeoutMilliseconds / 2)))
            {
                foreach (var d in w.Doorbells)
                {
                    d.Unblock();
                }
            }

            if (!Join(w.Thread, deadline))
            {
                // Its lease keeps the memory mapped; its wake-up doorbell stays open for it.
                stuck ??= $"a worker did not stop within {timeoutMilliseconds} ms";
                _output.WriteLine($"rings host: {why}: a data path did not stop within {timeoutMilliseconds} ms; its queue is broken and its front-end disconnected");
                continue;
            }

            w.Loop.Dispose();
            Report(w, why);
        }

        return stuck;
    }

    // A CPU the kernel will not give (offline, outside this process's set) costs the pinning, not the pair.
    private void Pin(int cpu, int pair)
    {
        try
        {
            CpuAffinity.PinCurrentThread(cpu);
        }
        catch (IOException e)
        {
            _output.WriteLine($"rings host: queue pair {pair} runs unpinned: {e.Message}");
        }
    }

    private static bool Join(Thread thread, long deadline) =>
        thread.Join(TimeSpan.FromMilliseconds(Math.Max(0, deadline - Environment.TickCount64)));

    private void Report(Worker w, string why)
    {
        var (frames, dropped, sleeps) = w.Progress();
        var seconds = w.Clock.Elapsed.TotalSeconds;
        var rx = w.Rx.Counters;
        var tx = w.Tx.Counters;
        var calls = rx.NotificationsSent + tx.NotificationsSent - w.CallsAtStart;
        var suppressed = rx.NotificationsSuppressed + tx.NotificationsSuppressed - w.SuppressedAtStart;
        var perFrame = frames > 0 ? (double)calls / frames : 0;
        var packets = rx.Packets - w.PacketsAtStart;
        var bursts = rx.Bursts - w.BurstsAtStart;
        var broken = w.Tx.IsBroken || w.Rx.IsBroken ? $"tx {w.Tx.BrokenReason}, rx {w.Rx.BrokenReason}" : null;
        _output.WriteLine($"rings host: {why}: queue pair {w.Pair}: forwarded {frames:N0} frames in {seconds:0.0} s, dropped {dropped:N0}, calls per frame {perFrame:0.0000} (sent {calls:N0}, suppressed {suppressed:N0}), mean burst {MeanBurst(packets, bursts):0.0}, sleeps {sleeps:N0}{(broken is null ? string.Empty : $", broken: {broken}")}");

        // A pair's figures add up over the times its worker ran (it stops while the pair is disabled).
        PairFigures[] pairs;
        lock (_gate)
        {
            if (!_figures.TryGetValue(w.Source, out var session))
            {
                session = [];
                _figures[w.Source] = session;
            }

            if (!session.TryGetValue(w.Pair, out var f))
            {
                f = new PairFigures(w.Pair);
                session[w.Pair] = f;
            }

            f.Add(frames, dropped, sleeps, seconds, calls, suppressed, packets, bursts, broken);
            pairs = [.. session.Values];
        }

        if (_o.Stats is { } path)
        {
            WriteStats(path, pairs);
        }
    }

    // The session's figures so far, totals first (what a one-pair reader expects), then each pair.
    // Written by hand rather than serialized: this is on the way out after a signal, and the
    // reflection-based serializer's first use costs more than the rest of the exit.
    private static void WriteStats(string path, PairFigures[] pairs)
    {
        long frames = 0, dropped = 0, sleeps = 0, calls = 0, suppressed = 0;
        long packets = 0, bursts = 0;
        double seconds = 0;
        string? broken = null;
        foreach (var p in pairs)
        {
            frames += p.Frames;
            dropped += p.Dropped;
            sleeps += p.Sleeps;
            calls += p.CallsSent;
            suppressed += p.CallsSuppressed;
            seconds = Math.Max(seconds, p.Seconds);
            packets += p.Packets;
            bursts += p.Bursts;
            broken ??= p.Broken;
        }

        using var file = File.Create(path);
        using var json = new Utf8JsonWriter(file);
        json.WriteStartObject();
        json.WriteNumber("frames", frames);
        json.WriteNumber("dropped", dropped);
        json.WriteNumber("seconds", seconds);
        json.WriteNumber("calls_sent", calls);
        json.WriteNumber("calls_suppressed", suppressed);
        json.WriteNumber("calls_per_frame", frames > 0 ? (double)calls / frames : 0);
        json.WriteNumber("mean_burst", MeanBurst(packets, bursts));
        json.WriteNumber("sleeps", sleeps);
        if (broken is null)
        {
            json.WriteNull("broken");
        }
        else
        {
            json.WriteString("broken", broken);
        }

        json.WriteStartArray("pairs");
        foreach (var p in pairs)
        {
            json.WriteStartObject();
            json.WriteNumber("pair", p.Pair);
            json.WriteNumber("frames", p.Frames);
            json.WriteNumber("dropped", p.Dropped);
            json.WriteNumber("seconds", p.Seconds);
            json.WriteNumber("mean_burst", MeanBurst(p.Packets, p.Bursts));
            json.WriteEndObject();
        }

        json.WriteEndArray();
        json.WriteEndObject();
    }

    // Buffers per publish of the receive ring (QueueCounters.MeanBurst, over the runs counted).
    private static double MeanBurst(long packets, long bursts) => bursts > 0 ? (double)packets / bursts : 0;

    /// <summary>What one queue pair of one front-end forwarded, over every run of its worker.</summary>
    private sealed class PairFigures(int pair)
    {
        public int Pair { get; } = pair;
        public long Frames { get; private set; }
        public long Dropped { get; private set; }
        public long Sleeps { get; private set; }
        public long CallsSent { get; private set; }
        public long CallsSuppressed { get; private set; }
        public double Seconds { get; private set; }
        public long Packets { get; private set; }
        public long Bursts { get; private set; }
        public string? Broken { get; private set; }

        public void Add(long frames, long dropped, long sleeps, double seconds, long calls, long suppressed, long packets, long bursts, string? broken)
        {
            Frames += frames;
            Dropped += dropped;
            Sleeps += sleeps;
            Seconds += seconds;
            CallsSent += calls;
            CallsSuppressed += suppressed;
            Packets += packets;
            Bursts += bursts;
            Broken ??= broken;
        }
    }

    // Caller holds _gate.
    private string SessionName(object session) => $"{_o.Socket}#{(_sessionNumbers.TryGetValue(session, out var n) ? n : 0)}";

    private sealed class Watch(IDisposable transmit, IDisposable receive) : IDisposable
    {
        public void Dispose()
        {
            transmit.Dispose();
            receive.Dispose();
        }
    }

    private sealed class NullDoorbell : IDoorbell
    {
        public static readonly NullDoorbell Instance = new();

        public void Ring()
        {
        }

        public bool Wait(int timeoutMilliseconds)
        {
            Thread.Sleep(Math.Max(0, Math.Min(timeoutMilliseconds, 1)));
            return false;
        }
    }
}
