using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text.Json;
using Rings.Drivers.Net;
using Rings.Drivers.VhostUser;
using Rings.Split;

namespace Rings.Apps.Commands;

/// <summary>
/// <c>rings host</c>: the vhost-user back-end with the vhost-net data path. Serves front-end after
/// front-end; for each, once its receive and transmit queues run, a worker thread forwards every
/// transmitted frame back into its receive queue (reflect).
/// </summary>
internal sealed class HostRunner
{
    private readonly Options _o;
    private readonly TextWriter _output;
    private readonly object _gate = new();
    private readonly VhostQueue?[] _queues = new VhostQueue?[2];
    private Worker? _worker;
    private int _sessions;
    private readonly ManualResetEventSlim _done = new();

    private HostRunner(Options o, TextWriter output)
    {
        _o = o;
        _output = output;
    }

    public sealed record Options(string Socket, string Mode, WaitStrategy Wait, int Burst, bool Once, string? Stats, bool Verbose);

    /// <summary>One running data path and what it forwarded.</summary>
    private sealed class Worker
    {
        public required Thread Thread { get; init; }
        public required Action Stop { get; init; }
        public required Func<(long Frames, long Dropped, long Sleeps)> Progress { get; init; }
        public required IDeviceRing Tx { get; init; }
        public required IDeviceRing Rx { get; init; }
        public required Stopwatch Clock { get; init; }
    }

    public static int Run(Options o, TextWriter output, TextWriter error)
    {
        if (o.Mode != "reflect")
        {
            error.WriteLine("rings host: --mode patch needs two front-ends at once, which this back-end does not serve yet");
            return 2;
        }

        var runner = new HostRunner(o, output);
        var options = new VhostUserBackendOptions
        {
            SocketPath = o.Socket,
            Log = o.Verbose ? line => output.WriteLine(line) : null,
        };
        VhostUserBackend backend;
        try
        {
            backend = new VhostUserBackend(options);
            backend.QueueStarted += (_, e) => runner.OnStarted(e.Queue);
            backend.QueueStopped += (_, e) => runner.OnStopped(e.Queue);
            backend.SessionEnded += (_, reason) => runner.OnSessionEnded(reason);
            backend.Start();
        }
        catch (Exception e) when (e is IOException or ArgumentException or InvalidOperationException)
        {
            error.WriteLine($"rings host: cannot listen on {o.Socket}: {e.Message}");
            return 3;
        }

        output.WriteLine($"rings host: serving vhost-user on {o.Socket} (mode {o.Mode}, wait {o.Wait.ToString().ToLowerInvariant()}, burst {o.Burst})");
        using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, c =>
        {
            c.Cancel = true;
            runner._done.Set();
        });
        using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c =>
        {
            c.Cancel = true;
            runner._done.Set();
        });
        runner._done.Wait();
        backend.Dispose();
        runner.StopWorker("stopping");
        output.WriteLine($"rings host: stopped after {runner._sessions} front-end(s)");
        return 0;
    }

    private void OnStarted(VhostQueue queue)
    {
        lock (_gate)
        {
            if (queue.Index > 1)
            {
                _output.WriteLine($"rings host: ignoring queue {queue.Index} (one queue pair is served)");
                return;
            }

            _queues[queue.Index] = queue;
            if (_queues[0] is { } rx && _queues[1] is { } tx && _worker is null)
            {
                StartWorker(tx, rx);
            }
        }
    }

    private void OnStopped(VhostQueue queue)
    {
        lock (_gate)
        {
            // GET_VRING_BASE: the data path must let go of the ring before the back-end answers.
            if (queue.Index <= 1 && _queues[queue.Index] == queue)
            {
                StopWorker("queue stopped");
                _queues[queue.Index] = null;
            }
        }
    }

    private void OnSessionEnded(string? reason)
    {
        lock (_gate)
        {
            StopWorker(reason ?? "front-end disconnected");
            _queues[0] = _queues[1] = null;
            _sessions++;
            if (_o.Once)
            {
                _done.Set();
            }
        }
    }

    private void StartWorker(VhostQueue tx, VhostQueue rx)
    {
        var mergeable = (rx.Features & FeatureBits.NetMergeRxBuffers) != 0;
        IDoorbell txKick = tx.Kick is null ? NullDoorbell.Instance : tx.Kick;
        IDoorbell txCall = tx.Call is null ? NullDoorbell.Instance : tx.Call;
        IDoorbell rxKick = rx.Kick is null ? NullDoorbell.Instance : rx.Kick;
        IDoorbell rxCall = rx.Call is null ? NullDoorbell.Instance : rx.Call;
        var wait = tx.Kick is null || rx.Kick is null ? WaitStrategy.Poll : _o.Wait;
        _worker = (tx.Ring, rx.Ring) switch
        {
            (SplitDeviceRing t, SplitDeviceRing r) => Create(t, r),
            _ => Create(tx.Ring, rx.Ring),
        };
        _output.WriteLine($"rings host: front-end ready: ring {(tx.IsPacked ? "packed" : "split")}, size {tx.Ring.Size}, features 0x{tx.Features:x}, MRG_RXBUF {(mergeable ? "on" : "off")}");

        Worker Create<TTx, TRx>(TTx t, TRx r)
            where TTx : IDeviceRing
            where TRx : IDeviceRing
        {
            var loop = new NetWorker<TTx, TRx>(t, txKick, txCall, r, rxKick, rxCall, _o.Burst, mergeable, wait);
            var thread = new Thread(() =>
            {
                try
                {
                    loop.Run();
                }
                catch (Exception e)
                {
                    // A bug must not take the server down; the queue is reported and the next front-end served.
                    _output.WriteLine($"rings host: data path failed: {e.GetType().Name}: {e.Message}");
                }
            })
            { Name = "vhost-net worker", IsBackground = true };
            thread.Start();
            return new Worker
            {
                Thread = thread,
                Stop = loop.Stop,
                Progress = () => (loop.Frames, loop.Dropped, loop.Sleeps),
                Tx = t,
                Rx = r,
                Clock = Stopwatch.StartNew(),
            };
        }
    }

    private void StopWorker(string why)
    {
        if (_worker is not { } w)
        {
            return;
        }

        _worker = null;
        w.Stop();
        w.Thread.Join();
        var (frames, dropped, sleeps) = w.Progress();
        var seconds = w.Clock.Elapsed.TotalSeconds;
        var rx = w.Rx.Counters;
        var tx = w.Tx.Counters;
        var calls = rx.NotificationsSent + tx.NotificationsSent;
        var suppressed = rx.NotificationsSuppressed + tx.NotificationsSuppressed;
        var perFrame = frames > 0 ? (double)calls / frames : 0;
        var broken = w.Tx.IsBroken || w.Rx.IsBroken ? $"tx {tx.BrokenReason}, rx {rx.BrokenReason}" : null;
        _output.WriteLine($"rings host: {why}: forwarded {frames:N0} frames in {seconds:0.0} s, dropped {dropped:N0}, calls per frame {perFrame:0.0000} (sent {calls:N0}, suppressed {suppressed:N0}), mean burst {rx.MeanBurst:0.0}, sleeps {sleeps:N0}{(broken is null ? string.Empty : $", broken: {broken}")}");
        if (_o.Stats is { } path)
        {
            var stats = new Dictionary<string, object?>
            {
                ["frames"] = frames,
                ["dropped"] = dropped,
                ["seconds"] = seconds,
                ["calls_sent"] = calls,
                ["calls_suppressed"] = suppressed,
                ["calls_per_frame"] = perFrame,
                ["mean_burst"] = rx.MeanBurst,
                ["sleeps"] = sleeps,
                ["broken"] = broken,
            };
            File.WriteAllText(path, JsonSerializer.Serialize(stats));
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
