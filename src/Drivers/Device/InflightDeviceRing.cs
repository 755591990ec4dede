using System.Runtime.CompilerServices;
using Rings.Chains;
using Rings.Memory;

namespace Rings.Linux.Device;

/// <summary>
/// A device ring that records in the shared inflight region every buffer it fetches before it is
/// used, and clears it once returned and published, following "Inflight I/O tracking" of
/// vhost-user.rst for the split and the packed layout. Made over a region a back-end used before
/// (its version is set), it first reads what was in flight when that back-end stopped, whatever the
/// reason (a kill included):
/// <list type="bullet">
/// <item>whether the last batch of used buffers had been published (<see cref="LastBatchPublished"/>);</item>
/// <item>the buffers still in flight, ordered by counter (<see cref="InflightAtStart"/>);</item>
/// <item>where the device resumes (<see cref="Resume"/>): at the used position, so those buffers
/// are fetched again first and in their order (Rings' devices return buffers in the order they
/// fetch them, so the ring holds them there; the packed ones reuse their recorded entries).</item>
/// </list>
/// The region is not written until <see cref="CommitRecovery"/> (or the first fetch or publish):
/// a data path that must settle another queue first (a transmit batch already delivered into a
/// receive queue, <see cref="InflightRecovery"/>) does so while a new kill still finds the same state.
/// Packed returns are written to the region at the publish (steps 3 to 6 of the specification),
/// so fetches and returns may interleave within a burst. The record that a published batch is no
/// longer in flight (the steps after the publish) is finished by <see cref="FinishPublish()"/>, or
/// by the next fetch, return or publish: a forwarder finishes a receive batch only after it
/// published the transmit batch that fed it, so a back-end killed between the two publishes leaves
/// the receive side saying so (<see cref="InflightRecovery"/>). Everything read from the region
/// or the ring is checked; a region that makes no sense is logged and tracking starts afresh (the
/// ring then resumes at the front-end's base).
/// </summary>
public sealed unsafe class InflightDeviceRing : IDeviceRing
{
    private readonly IDeviceRing _inner;
    private readonly InflightQueueMemory _region;
    private readonly Action<string>? _log;
    private readonly bool _packed;
    private readonly int _size;
    private readonly byte* _descriptors;  // packed: the descriptor ring, to record what is fetched
    private readonly ushort* _usedIdx;    // split: used.idx in ring memory
    private readonly ushort* _availRing;  // split: avail.ring, to check the record against
    private readonly ushort[] _batch;     // heads returned since the last publish (or published, not yet recorded)
    private int _batchCount;
    private bool _recordPending;          // the batch is published; its record in the region is not finished
    private RingPosition _publishedAt;    // packed: the used position the pending batch was published at
    private readonly PopRecord[] _pops;   // fetches since the last publish, for UndoPops
    private int _popCount;
    private readonly ushort[] _headOfId;  // packed: buffer id -> its head entry
    private readonly bool _inOrder;
    private InOrderQueue _order; // IN_ORDER: heads in fetch order, for batches (O(1) both ends)
    private ushort[] _resubmit = [];      // packed: head entries in flight at the start, by counter
    private int _resubmitted;
    private ulong _counter;
    private ushort _used;                 // split: used.idx as this device wrote it
    private bool _recovering;
    private ushort[] _clearAtCommit = [];
    private ushort _freeHeadAtCommit;

    /// <summary>Wraps <paramref name="inner"/> (already restored at the front-end's base) and reads the region.</summary>
    /// <param name="inner">The device ring.</param>
    /// <param name="region">The vring's queue region, of the ring's format.</param>
    /// <param name="ringMemory">Translates the ring areas.</param>
    /// <param name="areas">The ring areas.</param>
    /// <param name="features">Negotiated features (the format and IN_ORDER).</param>
    /// <param name="log">Receives a line when the region disagrees with the ring.</param>
    /// <exception cref="ArgumentException">The region is of the other format or smaller than the ring, or the areas are outside the memory.</exception>
    public InflightDeviceRing(IDeviceRing inner, InflightQueueMemory region, GuestMemory ringMemory, RingAreas areas, VirtioFeatures features, Action<string>? log = null)
    {
        ArgumentNullException.ThrowIfNull(inner);
        ArgumentNullException.ThrowIfNull(ringMemory);
        _inner = inner;
        _region = region;
        _log = log;
        _size = inner.Size;
        var format = RingFormat.Of(features);
        _packed = format == RingFormat.Packed;
        if (region.Format != format || _size > region.Entries)
        {
            throw new ArgumentException($"a {region.Format} inflight region of {region.Entries} cannot track a {format} ring of {_size}");
        }

        var layout = format.Layout(_size);
        if (_packed)
        {
            _descriptors = (byte*)Translate(ringMemory, areas.DescriptorArea, (ulong)layout.DescriptorAreaBytes);
        }
        else
        {
            _usedIdx = (ushort*)(Translate(ringMemory, areas.DeviceArea, (ulong)layout.DeviceAreaBytes) + 2);
            _availRing = (ushort*)(Translate(ringMemory, areas.DriverArea, (ulong)layout.DriverAreaBytes) + 4);
        }

        _batch = new ushort[_size];
        _pops = new PopRecord[_size];
        _headOfId = new ushort[_size];
        if ((features & VirtioFeatures.InOrder) != 0)
        {
            _inOrder = true;
            _order = new InOrderQueue(Math.Max(_size, _region.Entries), batchSizes: false);
        }

        Resume = inner.Position;
        _recovering = true;
        if (region.Version == 0 || region.DescNum != region.Entries || !(_packed ? RecoverPacked() : RecoverSplit()))
        {
            // Never used, not laid out by a back-end, or nonsense: track from the ring as it is.
            Fresh = true;
            InflightAtStart = 0;
            LastBatchPublished = false;
            _resubmit = [];
            Resume = inner.Position;
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
    public bool InOrder => _inner.InOrder;

    /// <inheritdoc/>
    public RingPosition Position => _inner.Position;

    /// <summary>
    /// Writes what recovery found into the region (the specification's reconnect steps) and starts
    /// tracking. Idempotent; the first fetch or publish does it too.
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
            StartFresh();
            return;
        }

        // Entries the recovery found finished (the published batch; packed: the free list).
        foreach (var i in _clearAtCommit)
        {
            _region.SetInflight(i, false);
        }

        if (_packed)
        {
            // Commit or roll back to the last finished batch, as RecoverPacked decided.
            _region.FreeHead = _region.OldFreeHead = _freeHeadAtCommit;
            _region.UsedIdx = _region.OldUsedIdx = Resume.UsedIndex;
            _region.UsedWrapCounter = _region.OldUsedWrapCounter = Resume.UsedWrapCounter;
        }
        else
        {
            _region.UsedIdx = Resume.AvailIndex;
        }

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

    /// <summary>Finishes the record of a published batch on <paramref name="ring"/> when it is an inflight-tracked ring.</summary>
    /// <typeparam name="TRing">The ring's type: for a struct type argument the check below folds away when compiled.</typeparam>
    /// <param name="ring">Any device ring.</param>
    public static void FinishPublish<TRing>(TRing ring)
        where TRing : IDeviceRing
    {
        if (ring is InflightDeviceRing tracked)
        {
            tracked.FinishPublish();
        }
    }

    /// <summary>
    /// Finishes the record of the last published batch: its buffers are no longer in flight (split:
    /// inflight cleared, used_idx recorded; packed: steps 7 and 8). Each store is a release, so none
    /// moves before the publish it follows.
    /// </summary>
    public void FinishPublish()
    {
        if (!_recordPending)
        {
            return;
        }

        _recordPending = false;
        for (var i = 0; i < _batchCount; i++)
        {
            _region.SetInflight(_batch[i], false);
        }

        if (_packed)
        {
            _region.OldFreeHead = _region.FreeHead;
            _region.OldUsedIdx = _publishedAt.UsedIndex;
            _region.OldUsedWrapCounter = _publishedAt.UsedWrapCounter;
        }
        else
        {
            _region.UsedIdx = _used;
        }

        _batchCount = 0;
    }

    /// <inheritdoc/>
    public bool TryPop(out DescriptorChain chain)
    {
        CommitRecovery();
        FinishPublish();
        var before = _inner.Position;
        if (!_inner.TryPop(out chain))
        {
            return false;
        }

        Record(before, chain.Token);
        return true;
    }

    /// <summary>
    /// Pops a burst from the wrapped ring with its own burst call, then records each buffer as
    /// <see cref="TryPop"/> does, before the caller can use any of them (buffers in flight at a
    /// restart, fetched again, are checked against their entries there, as single pops are).
    /// </summary>
    /// <param name="chains">Receives one record per buffer popped.</param>
    /// <param name="segments">Receives the buffers' segments.</param>
    /// <returns>Buffers popped.</returns>
    public int PopBurst(Span<PoppedChain> chains, Span<ChainSegment> segments)
    {
        CommitRecovery();
        FinishPublish();
        var popped = _inner.PopBurst(chains, segments);
        for (var i = 0; i < popped; i++)
        {
            ref readonly var chain = ref chains[i];
            Record(chain.Before, chain.Token);
        }

        return popped;
    }

    /// <summary>
    /// Pops one-segment buffers from the wrapped ring with its own call, then records each as
    /// <see cref="TryPop"/> does, before the caller can use any of them.
    /// </summary>
    /// <param name="segments">Receives each buffer's segment.</param>
    /// <param name="tokens">Receives each buffer's token.</param>
    /// <returns>Buffers popped.</returns>
    public int PopSingles(Span<ChainSegment> segments, Span<ChainToken> tokens)
    {
        CommitRecovery();
        FinishPublish();
        var start = _inner.Position;
        var popped = _inner.PopSingles(segments, tokens);
        for (var i = 0; i < popped; i++)
        {
            Record(After(start, i), tokens[i]);
        }

        return popped;
    }

    // The wrapped ring's position after 'descriptors' more pops of one descriptor each: split's
    // avail index runs free (2.7.6); packed's wraps at the size and flips its wrap counter (2.8.1).
    private RingPosition After(RingPosition start, int descriptors)
    {
        if (!_packed)
        {
            return start with { AvailIndex = (ushort)(start.AvailIndex + descriptors) };
        }

        var index = start.AvailIndex + descriptors;
        var size = _inner.Size;
        return index < size ? start with { AvailIndex = (ushort)index } : start with { AvailIndex = (ushort)(index - size), AvailWrapCounter = !start.AvailWrapCounter };
    }

    // The record of a buffer just fetched, before it is used (vhost-user "Inflight I/O tracking").
    private void Record(RingPosition before, ChainToken token)
    {
        ushort head;
        var reused = false;
        if (_packed)
        {
            head = RecordPacked(before, token, out reused);
        }
        else
        {
            // Fetched: counter, then inflight (split, "receiving available buffers"); both before the
            // buffer is used, and the release of the inflight byte keeps the counter before it.
            head = token.Id;
            _region.SetCounter(head, ++_counter);
            _region.SetInflight(head, true);
        }

        if (_inOrder)
        {
            _order.Enqueue(head);
        }
        if (_popCount < _pops.Length)
        {
            _pops[_popCount++] = new PopRecord(before, head, reused);
        }
    }

    /// <inheritdoc/>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void PushUsed(ChainToken token, uint written)
    {
        FinishPublish();
        _inner.PushUsed(token, written);
        Returned(token);
    }

    /// <summary>
    /// Returns a burst with the wrapped ring's own burst call, then records each buffer returned as
    /// <see cref="PushUsed"/> does (nothing is visible to the driver, or finished in the region,
    /// before the next <see cref="PublishUsed"/>).
    /// </summary>
    /// <param name="tokens">The popped buffers' tokens.</param>
    /// <param name="written">Bytes written into each buffer, one per token; empty when nothing was written to any.</param>
    public void PushUsedBurst(ReadOnlySpan<ChainToken> tokens, ReadOnlySpan<uint> written)
    {
        FinishPublish();
        _inner.PushUsedBurst(tokens, written);
        foreach (var token in tokens)
        {
            Returned(token);
        }
    }

    // A buffer returned by token: out of the IN_ORDER queue, then recorded by its head entry.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void Returned(ChainToken token)
    {
        if (_inOrder && _order.Count > 0)
        {
            _order.Dequeue();
        }

        Returned(_packed ? _headOfId[token.Id] : token.Id);
    }

    /// <inheritdoc/>
    public void PushUsedInOrderBatch(ChainToken last, uint written, int buffers)
    {
        FinishPublish();
        _inner.PushUsedInOrderBatch(last, written, buffers);
        for (var i = 0; i < buffers && _inOrder && _order.Count > 0; i++)
        {
            Returned(_order.Dequeue());
        }
    }

    /// <inheritdoc/>
    public void PublishUsed()
    {
        CommitRecovery();
        FinishPublish();
        if (_batchCount == 0)
        {
            _inner.PublishUsed();
            _popCount = 0;
            return;
        }

        if (_packed)
        {
            // 3-4: each returned list goes back to the head of the free list.
            for (var i = 0; i < _batchCount; i++)
            {
                var head = _batch[i];
                var last = _region.Last(head);
                if (last < _region.Entries)
                {
                    _region.SetNext(last, _region.FreeHead);
                    _region.FreeHead = head;
                }
            }

            // 5: the region's used position, then 6: the ring's flags (the publish).
            var p = _inner.Position;
            _region.UsedIdx = p.UsedIndex;
            _region.UsedWrapCounter = p.UsedWrapCounter;
            _publishedAt = p;
        }

        // Publish (split: used.idx; packed: the batch's first flags); the record follows in FinishPublish.
        _inner.PublishUsed();
        _recordPending = true;
        _popCount = 0;
    }

    /// <inheritdoc/>
    public void UndoNewestPops(int buffers)
    {
        // The pops since the last publish are logged with the position before each.
        ArgumentOutOfRangeException.ThrowIfNegative(buffers);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(buffers, _popCount);
        if (buffers > 0)
        {
            UndoPops(_pops[_popCount - buffers].Before);
        }
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
            var head = _pops[i].Head;
            if (_pops[i].Reused)
            {
                // A buffer fetched again after a restart keeps its entry: it is fetched once more.
                _resubmitted--;
            }
            else
            {
                _region.SetInflight(head, false);
                if (_packed)
                {
                    // Their entries were the free list's first: it starts at the oldest undone again.
                    _region.FreeHead = head;
                    _region.OldFreeHead = head;
                }
            }

            if (_inOrder && _order.Count > 0)
            {
                _order.RemoveNewest();
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

    private void Returned(ushort head)
    {
        if (!_packed)
        {
            // Split 1-3: link the head into the last batch's list; used.idx moves at the publish.
            _region.SetNext(head, _region.LastBatchHead);
            _region.LastBatchHead = head;
            _used++;
        }

        if (_batchCount < _batch.Length)
        {
            _batch[_batchCount++] = head;
        }
    }

    /// <summary>Packed, "receiving available buffers": each fetched descriptor goes into a free entry; the head entry holds the list.</summary>
    private ushort RecordPacked(RingPosition before, ChainToken token, out bool reused)
    {
        reused = false;
        if (_resubmitted < _resubmit.Length)
        {
            // Fetched again after a restart: the entry recorded then stands, if it is this buffer.
            var old = _resubmit[_resubmitted++];
            var last = _region.Last(old);
            if (last < _region.Entries && _region.Id(last) == token.Id)
            {
                _headOfId[token.Id] = old;
                reused = true;
                return old;
            }

            _log?.Invoke($"inflight: buffer {token.Id} fetched again, but entry {old} recorded another; recording it anew");
            _region.SetInflight(old, false);
        }

        var head = _region.OldFreeHead;
        var free = _region.FreeHead;
        if (head >= _region.Entries || free != head)
        {
            // Only a region scribbled on gets here: lay it out again rather than follow it.
            _log?.Invoke("inflight: the packed region's free list is damaged; tracking starts afresh");
            StartFresh();
            head = free = 0;
        }

        var position = (int)before.AvailIndex;
        if (token.DescriptorCount == 1)
        {
            // The usual buffer, one descriptor, into the free entry that also heads it: the loop's
            // stores below, with the entry's address worked out once (a quarter of a packed host's
            // time was here, most of it the accessors working the address out again per store).
            var d = _descriptors + (position * 16);
            free = _region.RecordSingle(head, ++_counter, *(ulong*)d, *(uint*)(d + 8), *(ushort*)(d + 12), *(ushort*)(d + 14));
        }
        else
        {
            _region.SetNum(head, 0);
            _region.SetCounter(head, ++_counter);
            _region.SetInflight(head, true);
            for (var k = 0; k < token.DescriptorCount && free < _region.Entries; k++)
            {
                // Recorded as the ring holds it: addr, len, id, flags (2.8.13).
                var d = _descriptors + (position * 16);
                _region.SetDescriptor(free, *(ulong*)d, *(uint*)(d + 8), *(ushort*)(d + 12), *(ushort*)(d + 14));
                _region.SetNum(head, (ushort)(_region.Num(head) + 1));
                _region.SetLast(head, free);
                free = _region.Next(free);
                position = position + 1 == _size ? 0 : position + 1;
            }
        }

        _region.FreeHead = free;
        _region.OldFreeHead = free;
        _headOfId[token.Id] = head;
        return head;
    }

    /// <summary>Lays the region out afresh for this ring as it stands now.</summary>
    private void StartFresh()
    {
        for (var i = 0; i < _region.Entries; i++)
        {
            _region.SetInflight(i, false);
        }

        _region.Initialize((ushort)_region.Entries);
        _resubmit = [];
        if (_packed)
        {
            var p = _inner.Position;
            _region.UsedIdx = _region.OldUsedIdx = p.UsedIndex;
            _region.UsedWrapCounter = _region.OldUsedWrapCounter = p.UsedWrapCounter;
        }
        else
        {
            _used = Volatile.Read(ref *_usedIdx);
            _region.LastBatchHead = 0;
            _region.UsedIdx = _used;
        }

        _region.Version = InflightRegion.Version;
    }

    /// <summary>Split, "when reconnecting": finish a half-recorded batch, then collect what is in flight by counter.</summary>
    private bool RecoverSplit()
    {
        // Acquire: the used ring as the previous device left it.
        var usedInRing = Volatile.Read(ref *_usedIdx);
        var recorded = _region.UsedIdx;
        var batch = (ushort)(usedInRing - recorded);
        var clear = new List<ushort>();
        var cleared = new bool[_size]; // membership of 'clear': one look-up per entry, not a scan of the list
        if (batch != 0)
        {
            if (batch > _size)
            {
                _log?.Invoke($"inflight: used.idx {usedInRing} is {batch} past the region's {recorded}; the region is not this ring's");
                return false;
            }

            // The batch was published: its list (from last_batch_head) is no longer in flight.
            var head = _region.LastBatchHead;
            for (var k = 0; k < batch; k++)
            {
                if (head >= _size)
                {
                    _log?.Invoke($"inflight: the last batch's list leaves the ring at entry {head}");
                    return false;
                }

                if (!cleared[head])
                {
                    cleared[head] = true;
                    clear.Add(head);
                }

                head = _region.Next(head);
            }

            LastBatchPublished = true;
        }

        var inflight = new List<(ulong Counter, ushort Head)>();
        for (var i = 0; i < _size; i++)
        {
            _counter = Math.Max(_counter, _region.Counter(i));
            if (_region.IsInflight(i) && !cleared[i])
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
                _log?.Invoke($"inflight: buffer {inflight[k].Head} was fetched {k + 1}th after used.idx {usedInRing}, but the ring holds {slot} there");
                break;
            }
        }

        _clearAtCommit = [.. clear];
        InflightAtStart = inflight.Count;
        Resume = new RingPosition(usedInRing);
        return true;
    }

    /// <summary>Packed, "when reconnecting": commit or roll back the half-recorded batch, free the free list's entries, collect what is in flight.</summary>
    private bool RecoverPacked()
    {
        var usedIdx = _region.UsedIdx;
        var usedWrap = _region.UsedWrapCounter;
        var oldUsedIdx = _region.OldUsedIdx;
        var oldWrap = _region.OldUsedWrapCounter;
        var freeHead = _region.FreeHead;
        var oldFreeHead = _region.OldFreeHead;
        if (usedIdx >= _size || oldUsedIdx >= _size || freeHead >= _region.Entries || oldFreeHead >= _region.Entries)
        {
            _log?.Invoke("inflight: a packed region's positions are outside the ring");
            return false;
        }

        if (usedIdx != oldUsedIdx || usedWrap != oldWrap)
        {
            // The descriptor at old_used_idx: still as the driver made it available (AVAIL = wrap,
            // USED = !wrap), or written used by the previous device, which then published (2.8.1)?
            var flags = Volatile.Read(ref *(ushort*)(_descriptors + (oldUsedIdx * 16) + 14));
            var available = oldWrap ? (ushort)0x0080 : (ushort)0x8000;
            if ((flags & 0x8080) != available)
            {
                LastBatchPublished = true;
                oldFreeHead = freeHead;
                oldUsedIdx = usedIdx;
                oldWrap = usedWrap;
            }
        }

        // Entries on the free list are not in flight, whatever their byte says.
        var free = new HashSet<ushort>();
        var e = oldFreeHead;
        for (var steps = 0; steps < _region.Entries && e < _region.Entries && free.Add(e); steps++)
        {
            e = _region.Next(e);
        }

        var inflight = new List<(ulong Counter, ushort Head)>();
        for (var i = 0; i < _region.Entries; i++)
        {
            _counter = Math.Max(_counter, _region.Counter(i));
            if (_region.IsInflight(i) && !free.Contains((ushort)i))
            {
                inflight.Add((_region.Counter(i), (ushort)i));
            }
        }

        inflight.Sort();
        if (inflight.Count > _size)
        {
            _log?.Invoke($"inflight: {inflight.Count} buffers in flight on a ring of {_size}");
            return false;
        }

        _clearAtCommit = [.. free.Where(f => _region.IsInflight(f))];
        _freeHeadAtCommit = oldFreeHead;
        _resubmit = [.. inflight.Select(x => x.Head)];
        InflightAtStart = inflight.Count;
        Resume = new RingPosition(oldUsedIdx, oldWrap, oldUsedIdx, oldWrap);
        return true;
    }

    private readonly record struct PopRecord(RingPosition Before, ushort Head, bool Reused);
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
    /// <typeparam name="TTx">The transmit ring's type (a struct one is never tracked, and is not boxed to find out).</typeparam>
    /// <typeparam name="TRx">The receive ring's type.</typeparam>
    /// <param name="transmit">The transmit queue's ring.</param>
    /// <param name="receive">The receive queue's ring, fed from <paramref name="transmit"/>.</param>
    /// <returns>Transmit buffers completed as already delivered.</returns>
    public static int Settle<TTx, TRx>(TTx transmit, TRx receive)
        where TTx : IDeviceRing
        where TRx : IDeviceRing
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
