using System.Runtime.CompilerServices;
using Rings.Chains;
using Rings.Memory;

namespace Rings.Linux.Device;

/// <summary>
/// A split device ring that records in the shared inflight region every buffer it fetches before
/// it is used, and clears it once returned, following "Inflight I/O tracking" of vhost-user.rst
/// (the split layout). Made over a region a back-end used before (its version is set), it first
/// reads what was in flight when that back-end stopped, whatever the reason (a kill included):
/// <list type="bullet">
/// <item>whether the last batch of used buffers had been published (<see cref="LastBatchPublished"/>);</item>
/// <item>the buffers still in flight, ordered by counter (<see cref="InflightAtStart"/>);</item>
/// <item>where the device resumes (<see cref="Resume"/>): at the used index, so those buffers are
/// fetched again first and in their order (Rings' devices return buffers in the order they fetch
/// them, so the ring holds them there), as the specification's resubmission asks.</item>
/// </list>
/// The region is not written until <see cref="CommitRecovery"/> (or the first fetch or publish):
/// a data path that must settle another queue first (a transmit batch already delivered into a
/// receive queue, <see cref="InflightRecovery"/>) does so while a new kill still finds the same state.
/// Everything read from the region or the ring is checked; a region that makes no sense is logged
/// and tracking starts afresh (the ring then resumes at the used index, losing nothing).
/// </summary>
public sealed unsafe class InflightDeviceRing : IDeviceRing
{
    private readonly IDeviceRing _inner;
    private readonly InflightQueueMemory _region;
    private readonly int _size;
    private readonly ushort* _usedIdx;    // used.idx in ring memory
    private readonly ushort* _availRing;  // avail.ring in ring memory, to check the record against
    private readonly ushort[] _batch;     // heads returned since the last publish
    private int _batchCount;
    private readonly PopRecord[] _pops;   // fetches since the last publish, for UndoPops
    private int _popCount;
    private readonly Queue<ushort>? _order; // IN_ORDER: heads in fetch order, for batches
    private ulong _counter;
    private ushort _used;                 // used.idx as this device wrote it
    private bool _recovering;
    private ushort[] _clearAtCommit = [];

    /// <summary>Wraps <paramref name="inner"/> (already restored at the front-end's base) and reads the region.</summary>
    /// <param name="inner">The split device ring.</param>
    /// <param name="region">The vring's queue region (split layout).</param>
    /// <param name="ringMemory">Translates the ring areas.</param>
    /// <param name="areas">The ring areas.</param>
    /// <param name="features">Negotiated features (IN_ORDER).</param>
    /// <param name="log">Receives a line when the region disagrees with the ring.</param>
    /// <exception cref="ArgumentException">The ring is packed, larger than the region, or its areas are outside the memory.</exception>
    public InflightDeviceRing(IDeviceRing inner, InflightQueueMemory region, GuestMemory ringMemory, RingAreas areas, VirtioFeatures features, Action<string>? log = null)
    {
        ArgumentNullException.ThrowIfNull(inner);
        ArgumentNullException.ThrowIfNull(ringMemory);
        _inner = inner;
        _region = region;
        _size = inner.Size;
        if (RingFormat.Of(features) != RingFormat.Split || region.Format != RingFormat.Split || _size > region.Entries)
        {
            throw new ArgumentException($"a {region.Format} inflight region of {region.Entries} cannot track a {RingFormat.Of(features)} ring of {_size}");
        }

        var layout = RingFormat.Split.Layout(_size);
        _usedIdx = (ushort*)(Translate(ringMemory, areas.DeviceArea, (ulong)layout.DeviceAreaBytes) + 2);
        _availRing = (ushort*)(Translate(ringMemory, areas.DriverArea, (ulong)layout.DriverAreaBytes) + 4);
        _batch = new ushort[_size];
        _pops = new PopRecord[_size];
        if ((features & VirtioFeatures.InOrder) != 0)
        {
            _order = new Queue<ushort>(_size);
        }

        Resume = inner.Position;
        _recovering = true;
        if (region.Version == 0 || region.DescNum != region.Entries || !Recover(log))
        {
            // Never used, not laid out by a back-end, or nonsense: track from the ring as it is.
            Fresh = true;
            InflightAtStart = 0;
            LastBatchPublished = false;
            return;
        }

        inner.Restore(Resume);
        _used = Resume.AvailIndex;
    }

    /// <summary>True when the region held no earlier state for this ring (or none that made sense).</summary>
    public bool Fresh { get; }

    /// <summary>Buffers in flight when the previous back-end stopped, fetched again first.</summary>
    public int InflightAtStart { get; private set; }

    /// <summary>True when the previous back-end had published its last batch of used buffers but not finished recording that.</summary>
    public bool LastBatchPublished { get; private set; }

    /// <summary>Where the ring resumed.</summary>
    public RingPosition Resume { get; private set; }

    /// <inheritdoc/>
    public int Size => _size;

    /// <inheritdoc/>
    public bool IsBroken => _inner.IsBroken;

    /// <inheritdoc/>
    public BrokenReason BrokenReason => _inner.BrokenReason;

    /// <inheritdoc/>
    public QueueCounters Counters => _inner.Counters;

    /// <inheritdoc/>
    public bool HasAvailable => _inner.HasAvailable;

    /// <inheritdoc/>
    public RingPosition Position => _inner.Position;

    /// <summary>
    /// Writes what recovery found into the region (the spec's reconnect steps) and starts tracking.
    /// Idempotent; the first fetch or publish does it too.
    /// </summary>
    public void CommitRecovery()
    {
        if (!_recovering)
        {
            return;
        }

        _recovering = false;
        if (Fresh)
        {
            for (var i = 0; i < _region.Entries; i++)
            {
                _region.SetInflight(i, false);
            }

            _region.Initialize((ushort)_region.Entries);
            _used = Volatile.Read(ref *_usedIdx);
            _region.LastBatchHead = 0;
            _region.UsedIdx = _used;
            _region.Version = InflightRegion.Version;
            return;
        }

        // The half-recorded batch was published: its heads are no longer in flight.
        foreach (var i in _clearAtCommit)
        {
            _region.SetInflight(i, false);
        }

        _region.UsedIdx = Resume.AvailIndex;
        _clearAtCommit = [];
    }

    /// <summary>
    /// Completes the buffers in flight at the start without processing them: fetched and returned
    /// used with nothing written. For a transmit queue whose batch the previous back-end had already
    /// delivered (<see cref="InflightRecovery"/>).
    /// </summary>
    /// <returns>Buffers completed.</returns>
    public int CompleteInflightAtStart()
    {
        var done = 0;
        while (done < InflightAtStart && TryPop(out var chain))
        {
            PushUsed(chain.Token, 0);
            done++;
        }

        PublishUsed();
        InflightAtStart = 0;
        return done;
    }

    /// <inheritdoc/>
    public bool TryPop(out DescriptorChain chain)
    {
        CommitRecovery();
        var before = _inner.Position;
        if (!_inner.TryPop(out chain))
        {
            return false;
        }

        // Fetched: counter, then inflight (split, "receiving available buffers"); both before the
        // buffer is used, and the release of the inflight byte keeps the counter before it.
        var head = chain.Token.Id;
        _region.SetCounter(head, ++_counter);
        _region.SetInflight(head, true);
        _order?.Enqueue(head);
        if (_popCount < _pops.Length)
        {
            _pops[_popCount++] = new PopRecord(before, head);
        }

        return true;
    }

    /// <inheritdoc/>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void PushUsed(ChainToken token, uint written)
    {
        _inner.PushUsed(token, written);
        if (_order is { Count: > 0 })
        {
            _order.Dequeue();
        }

        Returned(token.Id);
    }

    /// <inheritdoc/>
    public void PushUsedInOrderBatch(ChainToken last, uint written, int buffers, int descriptors)
    {
        _inner.PushUsedInOrderBatch(last, written, buffers, descriptors);
        for (var i = 0; i < buffers && _order is { Count: > 0 }; i++)
        {
            Returned(_order.Dequeue());
        }
    }

    /// <inheritdoc/>
    public void PublishUsed()
    {
        CommitRecovery();
        _inner.PublishUsed();
        if (_batchCount > 0)
        {
            // After the publish of used.idx: clear the batch, then record used.idx (split,
            // "supplying used buffers"). Each store is a release, so none moves before the publish.
            for (var i = 0; i < _batchCount; i++)
            {
                _region.SetInflight(_batch[i], false);
            }

            _region.UsedIdx = _used;
            _batchCount = 0;
        }

        _popCount = 0;
    }

    /// <inheritdoc/>
    public void UndoPops(RingPosition before)
    {
        _inner.UndoPops(before);

        // The fetches since 'before' are the newest logged: no longer in flight.
        var k = _popCount;
        while (k > 0)
        {
            k--;
            if (_pops[k].Before == before)
            {
                break;
            }
        }

        for (var i = _popCount - 1; i >= k; i--)
        {
            _region.SetInflight(_pops[i].Head, false);
            if (_order is { Count: > 0 })
            {
                RemoveNewest(_order);
            }
        }

        _popCount = k;
    }

    /// <inheritdoc/>
    public void MarkBroken(BrokenReason reason) => _inner.MarkBroken(reason);

    /// <inheritdoc/>
    public bool CallNeeded() => _inner.CallNeeded();

    /// <inheritdoc/>
    public bool EnableAvailNotifications() => _inner.EnableAvailNotifications();

    /// <inheritdoc/>
    public void DisableAvailNotifications() => _inner.DisableAvailNotifications();

    /// <inheritdoc/>
    public void Restore(RingPosition position) => _inner.Restore(position);

    private static nint Translate(GuestMemory memory, ulong address, ulong bytes) =>
        memory.TryTranslate(address, bytes, out var host) ? host : throw new ArgumentException($"ring area 0x{address:x} (+{bytes}) is outside the memory");

    private static void RemoveNewest(Queue<ushort> queue)
    {
        var keep = queue.Count - 1;
        for (var i = 0; i < keep; i++)
        {
            queue.Enqueue(queue.Dequeue());
        }

        queue.Dequeue();
    }

    private void Returned(ushort head)
    {
        // Steps 1-3: link the head into the last batch's list; used.idx moves at the publish.
        _region.SetNext(head, _region.LastBatchHead);
        _region.LastBatchHead = head;
        _used++;
        if (_batchCount < _batch.Length)
        {
            _batch[_batchCount++] = head;
        }
    }

    /// <summary>Split, "when reconnecting": finish a half-recorded batch, then collect what is in flight by counter.</summary>
    private bool Recover(Action<string>? log)
    {
        // Acquire: the used ring as the previous device left it.
        var usedInRing = Volatile.Read(ref *_usedIdx);
        var recorded = _region.UsedIdx;
        var batch = (ushort)(usedInRing - recorded);
        var clear = new List<ushort>();
        if (batch != 0)
        {
            if (batch > _size)
            {
                log?.Invoke($"inflight: used.idx {usedInRing} is {batch} past the region's {recorded}; the region is not this ring's");
                return false;
            }

            // The batch was published: its list (from last_batch_head) is no longer in flight.
            var head = _region.LastBatchHead;
            for (var k = 0; k < batch; k++)
            {
                if (head >= _size)
                {
                    log?.Invoke($"inflight: the last batch's list leaves the ring at entry {head}");
                    return false;
                }

                clear.Add(head);
                head = _region.Next(head);
            }

            LastBatchPublished = true;
        }

        var inflight = new List<(ulong Counter, ushort Head)>();
        for (var i = 0; i < _size; i++)
        {
            _counter = Math.Max(_counter, _region.Counter(i));
            if (_region.IsInflight(i) && !clear.Contains((ushort)i))
            {
                inflight.Add((_region.Counter(i), (ushort)i));
            }
        }

        inflight.Sort();

        // Resubmitted by position: the ring must hold them, in counter order, from used.idx on.
        var mask = _size - 1;
        for (var k = 0; k < inflight.Count; k++)
        {
            var slot = Volatile.Read(ref _availRing[(usedInRing + k) & mask]);
            if (slot != inflight[k].Head)
            {
                log?.Invoke($"inflight: buffer {inflight[k].Head} was fetched {k + 1}th after used.idx {usedInRing}, but the ring holds {slot} there; resuming at used.idx");
                break;
            }
        }

        _clearAtCommit = [.. clear];
        InflightAtStart = inflight.Count;
        Resume = new RingPosition(usedInRing);
        return true;
    }

    private readonly record struct PopRecord(RingPosition Before, ushort Head);
}

/// <summary>
/// Settles a queue pair after a back-end restart before its data path runs. When the receive
/// queue's last batch had been published, the transmit buffers still in flight were already
/// delivered (a forwarder publishes the receive batch, then the transmit batch): they are
/// completed, not sent again. Otherwise they are sent again, first and in order. Either way no
/// frame the driver handed over is lost or delivered twice.
/// </summary>
public static class InflightRecovery
{
    /// <summary>Settles <paramref name="transmit"/> against <paramref name="receive"/> (either may be untracked).</summary>
    /// <param name="transmit">The transmit queue's ring.</param>
    /// <param name="receive">The receive queue's ring, fed from <paramref name="transmit"/>.</param>
    /// <returns>Transmit buffers completed as already delivered.</returns>
    public static int Settle(IDeviceRing transmit, IDeviceRing receive)
    {
        var completed = 0;
        if (transmit is InflightDeviceRing tx)
        {
            tx.CommitRecovery();
            if (receive is InflightDeviceRing { LastBatchPublished: true } && tx.InflightAtStart > 0)
            {
                completed = tx.CompleteInflightAtStart();
            }
        }

        if (receive is InflightDeviceRing rx)
        {
            rx.CommitRecovery();
        }

        return completed;
    }
}
