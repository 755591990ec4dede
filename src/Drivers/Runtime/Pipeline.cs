using Rings.Linux.Net;
using Rings.Linux.Ports;

namespace Rings.Linux.Runtime;

/// <summary>How a <see cref="Pipeline"/> runs.</summary>
public sealed class PipelineOptions
{
    /// <summary>Worker threads (at most one per lane; the lanes of the ports, their queue pairs, are dealt to workers in turn: <see cref="LaneAssignment"/>).</summary>
    public int Workers { get; set; } = 1;

    /// <summary>CPUs to pin workers to (worker k to <c>Cpus[k % Count]</c>); null or empty for no pinning.</summary>
    public IReadOnlyList<int>? Cpus { get; set; }

    /// <summary>How an idle worker waits.</summary>
    public WaitStrategy Wait { get; set; } = WaitStrategy.Poll;

    /// <summary>Most frames taken from a port per burst, 1 to <see cref="FrameBurst.MaxCapacity"/>.</summary>
    public int Burst { get; set; } = 32;

    /// <summary>Longest single sleep of a blocking worker, so a stop or a dead peer is noticed.</summary>
    public int SleepTimeoutMilliseconds { get; set; } = 100;

    /// <summary>
    /// How long frames that no destination had room for may stay with a source that can keep them
    /// (a vhost-user guest's transmit ring), retried every round, before they are dropped; 0 drops
    /// them at once. The time counts only while nothing of the source's gets through (a slow
    /// destination is waited for, a stuck one is not). Only frames every destination refused are
    /// held, at the end of a burst, so no other port waits longer than this.
    /// </summary>
    public int HoldMilliseconds { get; set; } = 100;

    /// <summary>Bytes of each worker-to-worker handoff ring (a power of two).</summary>
    public int HandoffBytes { get; set; } = 1 << 20;

    /// <summary>Where link changes and worker faults are logged (<see cref="Diagnostics.RingsEvents"/>); nothing by default.</summary>
    public Microsoft.Extensions.Logging.ILogger Logger { get; set; } = Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance;
}

/// <summary>
/// Ports, one processor and the workers that join them. <see cref="Start"/> numbers the ports
/// (their <see cref="Port.Index"/>), deals their lanes (<see cref="Port.Lanes"/>, queue pairs) to
/// workers (<see cref="LaneAssignment"/>) and starts the threads; link changes
/// update the flood set and reach the processor. The pipeline neither opens nor closes ports:
/// open them before or after <see cref="Start"/>, dispose them after <see cref="Stop"/>.
/// </summary>
public sealed class Pipeline : IDisposable
{
    private readonly PipelineOptions _options;
    private readonly object _gate = new();
    private Worker[] _workers = [];
    private int[][] _assignment = [];
    private ulong _up;
    private bool _prepared;
    private bool _running;
    private bool _stopped;

    /// <summary>Creates a pipeline (not yet running).</summary>
    /// <param name="ports">The ports, 1 to 64, each in no other pipeline.</param>
    /// <param name="processor">What decides each frame.</param>
    /// <param name="options">How to run; defaults when null.</param>
    public Pipeline(IReadOnlyList<Port> ports, FrameProcessor processor, PipelineOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(ports);
        ArgumentNullException.ThrowIfNull(processor);
        _options = options ?? new PipelineOptions();
        if (ports.Count is < 1 or > PortMask.MaxPorts)
        {
            throw new ArgumentException($"a pipeline has 1 to {PortMask.MaxPorts} ports, not {ports.Count}", nameof(ports));
        }

        if (ports.Distinct().Count() != ports.Count || ports.Any(p => p.Index >= 0))
        {
            throw new ArgumentException("each port may be in one pipeline, once", nameof(ports));
        }

        if (_options.Burst is < 1 or > FrameBurst.MaxCapacity)
        {
            throw new ArgumentException($"burst must be 1 to {FrameBurst.MaxCapacity}", nameof(options));
        }

        if (_options.HoldMilliseconds < 0)
        {
            throw new ArgumentException("the hold time is 0 or more milliseconds", nameof(options));
        }

        if (_options.Workers < 1)
        {
            throw new ArgumentException("at least one worker", nameof(options));
        }

        Ports = ports;
        Processor = processor;
        AllPorts = PortMask.FirstN(ports.Count);
    }

    /// <summary>The ports, by index.</summary>
    public IReadOnlyList<Port> Ports { get; }

    /// <summary>The processor.</summary>
    public FrameProcessor Processor { get; }

    /// <summary>Every port of the pipeline.</summary>
    public PortMask AllPorts { get; }

    /// <summary>The ports whose link is up (the flood set before the ingress port is removed).</summary>
    public PortMask UpPorts => new(Volatile.Read(ref _up));

    /// <summary>Workers running (fewer than asked when there are fewer lanes).</summary>
    public int WorkerCount => _workers.Length;

    /// <summary>The worker of each lane of each port (<c>Assignment[port][lane]</c>), once started or run; empty before.</summary>
    public IReadOnlyList<IReadOnlyList<int>> Assignment => _assignment;

    /// <summary>Polling rounds over all workers.</summary>
    public long Rounds => _workers.Sum(w => w.Rounds);

    /// <summary>Sleeps over all workers.</summary>
    public long Sleeps => _workers.Sum(w => w.Sleeps);

    /// <summary>Exceptions caught on the data path (processor or port bugs) over all workers.</summary>
    public long Errors => _workers.Sum(w => w.Errors);

    /// <summary>Numbers the ports, attaches the processor and starts the worker threads.</summary>
    public void Start()
    {
        lock (_gate)
        {
            if (_running)
            {
                throw new InvalidOperationException("the pipeline is running already");
            }

            Prepare();
            _running = true;
            foreach (var w in _workers)
            {
                w.Start();
            }
        }
    }

    /// <summary>
    /// Runs one polling round of every worker on the calling thread, without starting threads:
    /// for an application that drives the pipeline from its own loop, and for tests. Not while
    /// <see cref="Start"/>ed.
    /// </summary>
    /// <returns>Frames taken from ports and handoffs in the round.</returns>
    public int RunOnce()
    {
        lock (_gate)
        {
            if (_running)
            {
                throw new InvalidOperationException("the pipeline runs its own threads");
            }

            Prepare();
            var work = 0;
            foreach (var w in _workers)
            {
                work += w.RunRound();
            }

            return work;
        }
    }

    /// <summary>Stops and joins the workers; the ports stay open (dispose them afterwards).</summary>
    public void Stop()
    {
        lock (_gate)
        {
            if (!_prepared || _stopped)
            {
                return;
            }

            _stopped = true;
            var stopped = new bool[_workers.Length];
            for (var i = 0; i < _workers.Length; i++)
            {
                stopped[i] = _workers[i].Stop(Port.DefaultQuiesceMilliseconds);
                if (!stopped[i])
                {
                    Diagnostics.RingsLog.NotStopped(Logger, $"worker {i} did not stop within {Port.DefaultQuiesceMilliseconds} ms; its buffers stay allocated");
                }
            }

            foreach (var p in Ports)
            {
                p.LinkChanged -= OnLinkChanged;
                p.Owners = null;
            }

            for (var i = 0; i < _workers.Length; i++)
            {
                if (stopped[i])
                {
                    _workers[i].Dispose();
                }
            }

            _running = false;
        }
    }

    /// <summary>Stops the workers.</summary>
    public void Dispose() => Stop();

    internal Microsoft.Extensions.Logging.ILogger Logger => _options.Logger;

    // Caller holds _gate. Once: numbers the ports, attaches the processor, makes the workers.
    private void Prepare()
    {
        if (_stopped)
        {
            throw new InvalidOperationException("the pipeline was stopped");
        }

        if (_prepared)
        {
            return;
        }

        _prepared = true;
        for (var i = 0; i < Ports.Count; i++)
        {
            Ports[i].Index = i;
        }

        var lanes = Ports.Select(p => Math.Max(1, p.Lanes)).ToArray();
        var count = LaneAssignment.WorkerCount(lanes, _options.Workers);
        _assignment = LaneAssignment.Deal(lanes, _options.Workers);
        Processor.Attach(Ports, count);
        var owned = new List<Port>[count];
        var home = new ulong[count];
        for (var w = 0; w < count; w++)
        {
            owned[w] = [];
        }

        for (var i = 0; i < Ports.Count; i++)
        {
            home[_assignment[i][0]] |= 1UL << i;
            foreach (var w in _assignment[i].Distinct())
            {
                owned[w].Add(Ports[i]);
            }
        }

        var cpus = _options.Cpus is { Count: > 0 } c ? c : null;
        // Published whole: a worker that fails to build (bad options, or no descriptor left for its
        // wake-up) leaves none for Stop to find half made, and the ones built before it give back
        // their buffers and descriptors here. The pipeline cannot be prepared again.
        var made = new Worker[count];
        try
        {
            for (var w = 0; w < count; w++)
            {
                made[w] = new Worker(this, w, [.. owned[w]], new PortMask(home[w]), _options.Burst, _options.Wait, cpus?[w % cpus.Count] ?? -1, _options.SleepTimeoutMilliseconds, count, _options.HandoffBytes, _options.HoldMilliseconds);
            }
        }
        catch
        {
            foreach (var w in made)
            {
                w?.Dispose();
            }

            _stopped = true;
            throw;
        }

        _workers = made;
        foreach (var w in _workers)
        {
            w.Connect(_workers);
        }

        for (var i = 0; i < Ports.Count; i++)
        {
            var port = Ports[i];
            var serving = _assignment[i].Distinct().ToArray();
            if (serving.Length > 1)
            {
                // Several workers serve the port: each counts in a part of its own.
                port.Counters.Spread(count);
            }

            port.AssignLanes([.. _assignment[i]], count);
            port.Owners = [.. serving.Select(w => (IPortOwner)_workers[w])];
        }

        foreach (var p in Ports)
        {
            p.LinkChanged += OnLinkChanged;
            if (p.Link == LinkState.Up)
            {
                SetUp(p.Index, true);
            }
        }
    }

    private void OnLinkChanged(object? sender, LinkChangedEventArgs e)
    {
        if (sender is not Port port || port.Index < 0)
        {
            return;
        }

        SetUp(port.Index, e.State == LinkState.Up);
        if (e.State == LinkState.Up)
        {
            Diagnostics.RingsLog.PortUp(Logger, port.Name, e.Reason);
        }
        else
        {
            Diagnostics.RingsLog.PortDown(Logger, port.Name, e.Reason);
        }

        try
        {
            Processor.OnLinkChanged(port, e.State);
        }
        catch (Exception ex)
        {
            Diagnostics.RingsLog.HandlerFailed(Logger, $"{Processor.Name}: link change of {port.Name}", ex.Message);
        }
    }

    private void SetUp(int index, bool up)
    {
        if (up)
        {
            Interlocked.Or(ref _up, 1UL << index);
        }
        else
        {
            Interlocked.And(ref _up, ~(1UL << index));
        }
    }
}
