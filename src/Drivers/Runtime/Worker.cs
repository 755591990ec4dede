using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Rings.Linux.Net;
using Rings.Linux.Plumbing;
using Rings.Linux.Ports;

namespace Rings.Linux.Runtime;

/// <summary>
/// One data-path thread of a <see cref="Pipeline"/>: polls the ports it owns, runs the processor
/// on each burst, transmits to each destination once per burst (frames grouped by destination),
/// releases the source, and hands frames for ports of other workers over a
/// <see cref="Handoff"/>. Waits when idle by its <see cref="WaitStrategy"/>, a blocking worker on
/// all its ports' descriptors at once.
/// <para>
/// A port whose lanes (queue pairs) are dealt to several workers is received from by each of
/// them on its own lanes, and transmitted to by each on its own lanes: no lock, no shared ring
/// index. A worker that has no running lane of a destination port (its pairs are not enabled, or
/// it owns none) hands the frames to the port's home worker (the owner of lane 0) over the
/// single-producer single-consumer <see cref="Handoff"/>, as for a port it does not serve at all.
/// </para>
/// <para>
/// Quiescent state: <see cref="_epoch"/> is odd while the worker is inside a round (touching port
/// state) and even between rounds. A control thread that unpublished port state waits until an
/// odd value it saw has moved on (<see cref="WaitQuiescent"/>). The worker sleeps inside a round,
/// so the descriptors it polls stay valid; a control thread wakes it to get it out.
/// </para>
/// </summary>
internal sealed class Worker : IPortOwner, IDisposable
{
    private readonly Pipeline _pipeline;
    private readonly FrameProcessor _processor;
    private readonly Port[] _ports;
    private readonly Port[] _owned;
    private readonly FrameBurst[] _bursts;
    private readonly Handoff?[] _outbound;
    private readonly Handoff?[] _inbound;
    private readonly FrameBurst _handoffBurst;
    private readonly SoftwareSegmentation _segmentation = new();
    private readonly byte[] _group = new byte[FrameBurst.MaxCapacity];
    private readonly ulong[] _refusedFull = new ulong[FrameBurst.MaxCapacity];
    private readonly ulong[] _refusedDown = new ulong[FrameBurst.MaxCapacity];
    private readonly int[] _handoffFull = new int[PortMask.MaxPorts];
    private bool _undelivered;
    private readonly long[] _holdingSince;
    private readonly ulong[] _heldFor;
    private readonly long _holdMilliseconds;
    private int _holding;
    private long _heldBytes;
    private readonly FileDescriptor[] _fds = new FileDescriptor[Poll.MaxDescriptors];
    private readonly bool[] _ready = new bool[Poll.MaxDescriptors];
    private readonly EventFd _wake;
    private readonly Epoch _epoch = new();
    private readonly WaitStrategy _wait;
    private readonly int _cpu;
    private readonly int _sleepTimeout;
    private Worker[] _workers = [];
    private readonly ulong _visiting;
    private ulong _local;
    private volatile bool _stop;
    private Thread? _thread;
    private long _rounds;
    private long _sleeps;
    private long _errors;

    public Worker(Pipeline pipeline, int index, Port[] owned, PortMask home, int burst, WaitStrategy wait, int cpu, int sleepTimeoutMilliseconds, int workers, int handoffBytes, int holdMilliseconds)
    {
        _holdMilliseconds = holdMilliseconds;
        _holdingSince = new long[owned.Length];
        _heldFor = new ulong[owned.Length];
        _pipeline = pipeline;
        _processor = pipeline.Processor;
        _ports = [.. pipeline.Ports];
        Index = index;
        _owned = owned;
        _wait = wait;
        _cpu = cpu;
        _sleepTimeout = sleepTimeoutMilliseconds;
        _bursts = new FrameBurst[owned.Length];
        ulong mask = 0;
        for (var k = 0; k < owned.Length; k++)
        {
            _bursts[k] = new FrameBurst(burst);
            mask |= 1UL << owned[k].Index;
        }

        HomeMask = home;
        _visiting = mask & ~home.Bits;
        _local = home.Bits;
        _handoffBurst = new FrameBurst(burst);
        _outbound = new Handoff?[workers];
        _inbound = new Handoff?[workers];
        if (workers > 1)
        {
            for (var w = 0; w < workers; w++)
            {
                if (w != index)
                {
                    _outbound[w] = new Handoff(handoffBytes);
                }
            }
        }

        _wake = EventFd.Create();
    }

    /// <summary>The worker's index in its pipeline.</summary>
    public int Index { get; }

    /// <summary>The ports whose lane 0 this worker owns (all of a port it serves alone): frames for them from other workers come here.</summary>
    public PortMask HomeMask { get; }

    /// <summary>Polling rounds so far.</summary>
    public long Rounds => Volatile.Read(ref _rounds);

    /// <summary>Times the worker went to sleep.</summary>
    public long Sleeps => Volatile.Read(ref _sleeps);

    /// <summary>Exceptions caught in the loop (a processor or port bug); the worker went on.</summary>
    public long Errors => Volatile.Read(ref _errors);

    /// <summary>Wires the handoffs between workers (each worker reads what the others write for it).</summary>
    public void Connect(Worker[] workers)
    {
        _workers = workers;
        foreach (var w in workers)
        {
            if (w != this)
            {
                _inbound[w.Index] = w._outbound[Index];
            }
        }
    }

    public void Start()
    {
        _thread = new Thread(Run) { IsBackground = true, Name = $"rings worker {Index}" };
        _thread.Start();
    }

    /// <summary>Asks the thread to stop and joins it within the deadline.</summary>
    /// <param name="timeoutMilliseconds">The deadline.</param>
    /// <returns>False when the thread is still running (it is stuck; nothing it uses may be freed).</returns>
    public bool Stop(int timeoutMilliseconds)
    {
        _stop = true;
        Wake();
        return _thread?.Join(TimeSpan.FromMilliseconds(timeoutMilliseconds)) ?? true;
    }

    /// <summary>One round on the calling thread (a pipeline driven without threads).</summary>
    /// <returns>Frames taken.</returns>
    public int RunRound()
    {
        Enter();
        try
        {
            return Round();
        }
        finally
        {
            Leave();
            _rounds++;
        }
    }

    /// <inheritdoc/>
    public bool WaitQuiescent(int timeoutMilliseconds)
    {
        var thread = _thread;
        if (thread is null || !thread.IsAlive || Environment.CurrentManagedThreadId == thread.ManagedThreadId)
        {
            return true;
        }

        // Acquire, after the full fence of Port.WaitForDataPath: an even value means outside a
        // round, and the next round will read the state the caller just published.
        var seen = Volatile.Read(ref _epoch.Value);
        if ((seen & 1) == 0)
        {
            return true;
        }

        Wake();
        var deadline = Environment.TickCount64 + timeoutMilliseconds;
        var spin = default(SpinWait);
        while (Volatile.Read(ref _epoch.Value) == seen)
        {
            if (!thread.IsAlive)
            {
                return true;
            }

            if (Environment.TickCount64 > deadline)
            {
                return false;
            }

            spin.SpinOnce(sleep1Threshold: 64);
        }

        return true;
    }

    /// <inheritdoc/>
    public void Wake() => _wake.Signal();

    public void Dispose()
    {
        foreach (var b in _bursts)
        {
            b.Dispose();
        }

        _handoffBurst.Dispose();
        _segmentation.Dispose();
        foreach (var h in _outbound)
        {
            h?.Dispose();
        }

        _wake.Dispose();
    }

    private void Run()
    {
        if (_cpu >= 0)
        {
            try
            {
                CpuAffinity.PinCurrentThread(_cpu);
            }
            catch (IOException e)
            {
                Diagnostics.RingsLog.WorkerNotPinned(_pipeline.Logger, Index, _cpu, e.Message);
            }
        }

        var idle = new IdlePolicy(_wait);
        while (!_stop)
        {
            Enter();
            var work = 0;
            try
            {
                work = Round();
            }
            catch (Exception e)
            {
                Fault(e);
            }

            Leave();
            _rounds++;
            if (work > 0)
            {
                idle.Worked();
                continue;
            }

            if (!idle.IdleShouldSleep())
            {
                continue;
            }

            Enter();
            try
            {
                Sleep();
            }
            catch (Exception e)
            {
                Fault(e);
            }

            Leave();
        }
    }

    // Store-load: the odd value must be visible before this round reads any port's published
    // state (the control thread's mirror image is its unpublish, a full fence, then this read).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void Enter() => Interlocked.Increment(ref _epoch.Value);

    // Release: everything the round did with port state happens before the even value is seen.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void Leave() => Volatile.Write(ref _epoch.Value, _epoch.Value + 1);

    private int Round()
    {
        var work = 0;
        _holding = 0;
        var now = Environment.TickCount64;
        var flood = _pipeline.UpPorts;
        _local = LocalPorts();
        for (var k = 0; k < _owned.Length; k++)
        {
            var port = _owned[k];
            var burst = _bursts[k];
            if (_holdingSince[k] != 0 && now - _holdingSince[k] < _holdMilliseconds && !AnyMayHaveRoom(_heldFor[k]))
            {
                // What this port holds is still for full destinations only: taking, refusing and
                // giving it back again would burn the CPU that the destinations' peers need to post
                // buffers. The hold time still counts; once it is over the frames are taken and dropped.
                _holding++;
                continue;
            }

            burst.Reset(port, flood, now, Index);
            _heldBytes = 0;
            var taken = port.Receive(burst);
            if (taken == 0)
            {
                _holdingSince[k] = 0;
                continue;
            }

            try
            {
                if (burst.Count > 0)
                {
                    _processor.Process(burst);
                    Route(burst, port);
                    if (_undelivered && _holdMilliseconds > 0 && port.CanReturn)
                    {
                        Hold(burst, k, now);
                    }
                    else
                    {
                        _holdingSince[k] = 0;
                    }

                    CountUndelivered(burst, port);
                }
            }
            finally
            {
                // Captured as received, once: held frames are left for the round that takes them.
                if (port.Capture is { } capture && burst.Count > 0)
                {
                    capture.RecordReceived(burst, burst.Returned == 0 ? burst.Count : burst.FrameOfTake(burst.Taken - burst.Returned));
                }

                // Even when the processor failed: the peer gets its buffers back.
                port.Release(burst);
            }

            var consumed = burst.Taken - burst.Returned;
            work += consumed;
            port.Counters.For(Index).Received(consumed, burst.Bytes - _heldBytes);
            if (consumed == 0)
            {
                // Everything waits for room: not work, or an adaptive worker would spin on it.
                _holding++;
            }
        }

        for (var w = 0; w < _inbound.Length; w++)
        {
            if (_inbound[w] is { } handoff && handoff.HasRecords)
            {
                _handoffBurst.Reset(null, flood, now, Index);
                work += handoff.Read(_handoffBurst);
                Route(_handoffBurst, null);
                CountUndelivered(_handoffBurst, null);
                handoff.Release();
            }
        }

        _processor.Poll(Index, now);
        return work;
    }

    /// <summary>
    /// The ports this worker transmits to itself this round: its home ports, and the ports of which
    /// it owns a lane that runs now (a queue pair the front-end enabled). Frames for the others go
    /// to their home workers.
    /// </summary>
    private ulong LocalPorts()
    {
        var local = HomeMask.Bits;
        var visiting = _visiting;
        while (visiting != 0)
        {
            var p = System.Numerics.BitOperations.TrailingZeroCount(visiting);
            visiting &= visiting - 1;
            if (_ports[p].TransmitsFrom(Index))
            {
                local |= 1UL << p;
            }
        }

        return local;
    }

    /// <summary>Delivers every decided frame: to local ports grouped by destination, to other workers' ports through handoffs.</summary>
    private void Route(FrameBurst burst, Port? ingress)
    {
        var count = burst.Count;
        var valid = _pipeline.AllPorts.Bits;
        _undelivered = false;
        ulong union = 0;
        var offloads = false;
        for (var i = 0; i < count; i++)
        {
            _refusedFull[i] = 0;
            _refusedDown[i] = 0;
            var d = burst.Destinations(i).Bits & valid;
            if (d == 0)
            {
                _undelivered = true;
                continue;
            }

            union |= d;
            offloads |= SoftwareOffloads.AsksForOffload(burst.Header(i));
        }

        var local = union & _local;
        while (local != 0)
        {
            var p = System.Numerics.BitOperations.TrailingZeroCount(local);
            local &= local - 1;
            SendTo(_ports[p], burst, valid, offloads);
        }

        var remote = union & ~_local;
        if (remote != 0)
        {
            HandOff(burst, remote, valid);
        }
    }

    /// <summary>
    /// Counts every frame that went nowhere or was refused somewhere, except the ones held (they
    /// are not dropped): reasons of the processor's on the ingress port, full or down on each
    /// destination that refused.
    /// </summary>
    private void CountUndelivered(FrameBurst burst, Port? ingress)
    {
        if (!_undelivered)
        {
            return;
        }

        var valid = _pipeline.AllPorts.Bits;
        var counted = burst.Count - burst.Returned;
        for (var i = 0; i < counted; i++)
        {
            if ((burst.Destinations(i).Bits & valid) == 0)
            {
                var reason = burst.DropReasonOf(i);
                ingress?.Counters.For(Index).Count(reason == DropReason.None ? DropReason.NoRoute : reason);
                continue;
            }

            foreach (var p in new PortMask(_refusedFull[i]))
            {
                _ports[p].Counters.For(Index).Count(DropReason.DestinationFull);
            }

            foreach (var p in new PortMask(_refusedDown[i]))
            {
                _ports[p].Counters.For(Index).Count(DropReason.LinkDown);
            }
        }
    }

    /// <summary>
    /// Frames at the end of the burst that could go nowhere for want of a ready destination (every
    /// destination full or down, all of them this worker's; or a flood with no other port up)
    /// stay with the source: returned, received again next round, instead of dropped. A guest
    /// late to post receive buffers, or a peer not attached yet, costs no frame. The hold lasts
    /// while the source makes no progress, at most the hold time; no other port ever waits, since
    /// only a suffix of such frames is held and the source's frames for others go on.
    /// </summary>
    private void Hold(FrameBurst burst, int k, long now)
    {
        var valid = _pipeline.AllPorts.Bits;
        var returned = 0;
        ulong heldFor = 0;
        for (var t = burst.Taken - 1; t >= 0; t--)
        {
            var i = burst.FrameOfTake(t);
            if (i < 0)
            {
                break;
            }

            var d = burst.Destinations(i).Bits & valid;
            var waits = d == 0
                ? burst.DropReasonOf(i) == DropReason.LinkDown
                : (d & ~_local) == 0 && (_refusedFull[i] | _refusedDown[i]) == d;
            if (!waits)
            {
                break;
            }

            // A frame waiting for a link to come up (d == 0) has no port to ask for room: never skipped.
            heldFor = d == 0 || heldFor == ulong.MaxValue ? ulong.MaxValue : heldFor | d;
            returned++;
        }

        _heldFor[k] = heldFor;

        if (returned == 0)
        {
            _holdingSince[k] = 0;
            return;
        }

        if (_holdingSince[k] == 0 || returned < burst.Taken)
        {
            // The hold time counts rounds without progress: a destination that takes anything
            // is slow, not stuck.
            _holdingSince[k] = now;
        }
        else if (now - _holdingSince[k] >= _holdMilliseconds)
        {
            // Held long enough: these are dropped (and counted), the next ones held afresh.
            _holdingSince[k] = 0;
            return;
        }

        for (var t = burst.Taken - returned; t < burst.Taken; t++)
        {
            _heldBytes += burst.Length(burst.FrameOfTake(t));
        }

        burst.Returned = returned;
    }

    /// <summary>True when any port of <paramref name="ports"/> may take a frame now (<see cref="Port.MayHaveRoom"/>); all of them are this worker's.</summary>
    private bool AnyMayHaveRoom(ulong ports)
    {
        if (ports == ulong.MaxValue)
        {
            return true;
        }

        while (ports != 0)
        {
            var p = System.Numerics.BitOperations.TrailingZeroCount(ports);
            ports &= ports - 1;
            if (_ports[p].MayHaveRoomFor(Index))
            {
                return true;
            }
        }

        return false;
    }

    private void SendTo(Port port, FrameBurst burst, ulong valid, bool offloads)
    {
        var bit = 1UL << port.Index;
        var count = burst.Count;
        if (port.Link == LinkState.Down)
        {
            for (var i = 0; i < count; i++)
            {
                if ((burst.Destinations(i).Bits & bit) != 0)
                {
                    _refusedDown[i] |= bit;
                    _undelivered = true;
                }
            }

            return;
        }

        var m = 0;
        for (var i = 0; i < count; i++)
        {
            if ((burst.Destinations(i).Bits & valid & bit) == 0)
            {
                continue;
            }

            if (offloads && SoftwareOffloads.AsksForOffload(burst.Header(i)) && !SoftwareOffloads.Accepts(port.Offloads, burst.Header(i)))
            {
                if (burst.Header(i).GsoType != VirtioNetHeader.GsoNone)
                {
                    // The frames before it go first, so the destination sees the source's order.
                    TransmitGroup(port, burst, m);
                    m = 0;
                    SendSegmented(port, burst, i, bit);
                    continue;
                }

                if (!SoftwareOffloads.TryComplete(burst, i))
                {
                    port.Counters.For(Index).Count(DropReason.OffloadUnsupported);
                    continue;
                }
            }

            _group[m++] = (byte)i;
        }

        TransmitGroup(port, burst, m);
        port.Flush(Index);
    }

    /// <summary>Transmits the first <paramref name="m"/> frames of <see cref="_group"/>; what the port did not take is marked refused.</summary>
    private void TransmitGroup(Port port, FrameBurst burst, int m)
    {
        if (m == 0)
        {
            return;
        }

        var sent = port.Transmit(burst, _group.AsSpan(0, m));
        if (sent > 0 && port.Capture is { } capture)
        {
            capture.RecordTransmitted(burst, _group.AsSpan(0, sent));
        }

        if (sent < m)
        {
            // Never waited for: a full destination drops (counted later) or holds, other ports go on.
            _undelivered = true;
            var bit = 1UL << port.Index;
            for (var g = sent; g < m; g++)
            {
                _refusedFull[_group[g]] |= bit;
            }
        }
    }

    /// <summary>
    /// A GSO frame for a port that did not negotiate its segmentation offload: cut into complete
    /// frames of gso_size payload each (5.1.6.2), which the port transmits in order. A frame the
    /// segmenter refuses (malformed headers, more segments than the scratch holds) is dropped as
    /// <see cref="DropReason.OffloadUnsupported"/>. When the port takes none of the segments the
    /// frame counts as refused, like any frame for a full destination (held or dropped later);
    /// when it takes some, the rest are dropped as <see cref="DropReason.DestinationFull"/>, since
    /// the frame cannot be given back half sent.
    /// </summary>
    private void SendSegmented(Port port, FrameBurst burst, int frame, ulong bit)
    {
        if (_segmentation.Cut(burst, frame) != OffloadStatus.Ok)
        {
            port.Counters.For(Index).Count(DropReason.OffloadUnsupported);
            return;
        }

        var segments = _segmentation.Segments;
        var count = segments.Count;
        var order = _segmentation.Order(count);
        var sent = port.Transmit(segments, order);
        if (sent > 0 && port.Capture is { } capture)
        {
            capture.RecordTransmitted(segments, order[..sent]);
        }

        if (sent == 0)
        {
            _undelivered = true;
            _refusedFull[frame] |= bit;
            return;
        }

        var part = port.Counters.For(Index);
        part.SoftwareSegmented++;
        if (sent < count)
        {
            part.Count(DropReason.DestinationFull, count - sent);
        }
    }

    private void HandOff(FrameBurst burst, ulong remote, ulong valid)
    {
        ulong refused = 0;
        for (var w = 0; w < _workers.Length; w++)
        {
            var theirs = remote & _workers[w].HomeMask.Bits;
            if (theirs == 0 || _outbound[w] is not { } handoff)
            {
                continue;
            }

            for (var i = 0; i < burst.Count; i++)
            {
                var d = burst.Destinations(i).Bits & valid & theirs;
                if (d != 0 && !handoff.TryWrite(burst, i, new PortMask(d)))
                {
                    refused |= d;
                    foreach (var p in new PortMask(d))
                    {
                        _handoffFull[p]++;
                    }
                }
            }

            handoff.Publish();

            // Store-load: the records are published before the consumer's wish to be woken is read.
            Interlocked.MemoryBarrier();
            if (handoff.ConsumerWantsWakeup)
            {
                _workers[w].Wake();
            }
        }

        // Their ports' counters belong to their workers: counted atomically, once per port per burst.
        foreach (var p in new PortMask(refused))
        {
            _ports[p].Counters.CountShared(DropReason.DestinationFull, _handoffFull[p]);
            _handoffFull[p] = 0;
        }
    }

    private void Sleep()
    {
        // Ask every source for a wake-up, fence, re-check (each EnableWakeups does so): sleep only
        // if all are still empty. Every lost wake-up lives here.
        var pending = false;
        for (var k = 0; k < _owned.Length; k++)
        {
            // A port holding frames for a full destination has work we know of: no kick will
            // come for it, so it is retried after a short sleep instead.
            if (_holdingSince[k] == 0)
            {
                pending |= _owned[k].EnableWakeups(Index);
            }
        }

        foreach (var handoff in _inbound)
        {
            pending |= handoff?.EnableWakeup() ?? false;
        }

        var n = 0;
        if (!pending && !_stop)
        {
            _fds[n++] = _wake.Handle;
            for (var k = 0; k < _owned.Length; k++)
            {
                if (_holdingSince[k] == 0)
                {
                    n += _owned[k].GetWakeupDescriptors(_fds.AsSpan(n), Index);
                }
            }

            _sleeps++;
            Poll.WaitReadable(_fds.AsSpan(0, n), _holding > 0 ? 1 : _sleepTimeout, _ready);
        }

        foreach (var port in _owned)
        {
            port.DisableWakeups(Index);
        }

        foreach (var handoff in _inbound)
        {
            handoff?.DisableWakeup();
        }

        _wake.TryConsume(out _);
        Array.Clear(_fds, 0, n);
    }

    private void Fault(Exception e)
    {
        // A bug in a processor or a port must not end the data path; said once in a while, counted always.
        if (Interlocked.Increment(ref _errors) is var count && (count & (count - 1)) == 0)
        {
            Diagnostics.RingsLog.WorkerFault(_pipeline.Logger, Index, e.GetType().Name, e.Message, count);
        }
    }

    /// <summary>The round marker on its own cache lines: control threads poll it.</summary>
    [StructLayout(LayoutKind.Explicit, Size = 256)]
    private sealed class Epoch
    {
        [FieldOffset(128)]
        public long Value;
    }
}
