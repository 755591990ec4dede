using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Rings.Chains;
using Rings.Memory;

namespace Rings.Split;

/// <summary>
/// The device (host) side of a split virtqueue (virtio 1.2 section 2.7). All ring memory is
/// treated as written by an enemy: every index is range-checked, every descriptor field is read
/// once, every buffer is translated through the memory table, and a violation marks the queue
/// broken with a reason instead of throwing.
/// </summary>
public sealed unsafe class SplitDeviceRing : IDeviceRing
{
    private readonly GuestMemory _memory;
    private readonly SplitRingMemory _ring;
    private readonly ushort _size;
    private readonly ushort _mask;
    private readonly bool _eventIndex;
    private readonly bool _indirectAllowed;
    private readonly bool _inOrder;
    private readonly ChainSegment[] _segments;
    private readonly uint[] _visited;   // loop detection: stamp per descriptor, no clearing per pop
    private readonly ulong[] _popBytes; // per avail slot: readable bytes of the chain popped from it, taken back off the counter by an undo
    private uint _stamp;

    private ushort _lastAvail;        // next avail slot to read
    private ushort _cachedAvailIndex; // avail.idx as last read: one read of the driver's line per burst
    private ushort _usedIndex;        // next used slot to write
    private ushort _publishedUsed;    // used.idx as last published
    private ushort _lastCallUsed;     // used.idx at the last call decision (EVENT_IDX "old")
    private bool _kicksDisabled;
    private BrokenReason _broken;

    /// <summary>Creates the device side over a ring the driver laid out in <paramref name="memory"/>.</summary>
    /// <param name="memory">The memory table: ring parts and every buffer address are translated through it.</param>
    /// <param name="areas">Guest-physical addresses of the descriptor table, avail ring and used ring.</param>
    /// <param name="size">Queue size, a power of two from 1 to 32768.</param>
    /// <param name="features">Negotiated features; the ring uses INDIRECT_DESC, EVENT_IDX and IN_ORDER.</param>
    /// <exception cref="ArgumentException">A part is misaligned or outside the memory table, or the size is not a split queue size.</exception>
    public SplitDeviceRing(GuestMemory memory, RingAreas areas, int size, VirtioFeatures features)
        : this(memory, memory, areas, size, features)
    {
    }

    /// <summary>
    /// Creates the device side when ring addresses and buffer addresses are translated differently
    /// (vhost-user gives ring addresses in the frontend's virtual addresses, buffers in guest-physical ones).
    /// </summary>
    /// <param name="ringMemory">Table that translates the ring part addresses.</param>
    /// <param name="bufferMemory">Table that translates descriptor addresses.</param>
    /// <param name="areas">Addresses of the descriptor table, avail ring and used ring, in <paramref name="ringMemory"/>'s space.</param>
    /// <param name="size">Queue size, a power of two from 1 to 32768.</param>
    /// <param name="features">Negotiated features; the ring uses INDIRECT_DESC, EVENT_IDX and IN_ORDER.</param>
    /// <exception cref="ArgumentException">A part is misaligned or outside the memory table, or the size is not a split queue size.</exception>
    public SplitDeviceRing(GuestMemory ringMemory, GuestMemory bufferMemory, RingAreas areas, int size, VirtioFeatures features)
    {
        ArgumentNullException.ThrowIfNull(bufferMemory);
        _ring = new SplitRingMemory(ringMemory, areas, RingFormat.Split.Layout(size));
        _memory = bufferMemory;
        _size = (ushort)size;
        _mask = (ushort)(size - 1);
        Features = features;
        _eventIndex = (features & VirtioFeatures.EventIndex) != 0;
        _indirectAllowed = (features & VirtioFeatures.IndirectDescriptors) != 0;
        _inOrder = (features & VirtioFeatures.InOrder) != 0;
        _segments = new ChainSegment[size];
        _visited = new uint[size];
        _popBytes = new ulong[size];
        Counters = new QueueCounters();
        Restore(new RingPosition(0));
    }

    /// <summary>The negotiated features the ring was made with.</summary>
    public VirtioFeatures Features { get; }

    /// <inheritdoc/>
    public int Size => _size;

    /// <inheritdoc/>
    public bool IsBroken => _broken != BrokenReason.None;

    /// <inheritdoc/>
    public BrokenReason BrokenReason => _broken;

    /// <inheritdoc/>
    public QueueCounters Counters { get; }

    /// <inheritdoc/>
    public RingPosition Position => new(_lastAvail);

    /// <inheritdoc/>
    public bool InOrder => _inOrder;

    /// <inheritdoc/>
    public bool HasAvailable => !IsBroken && (_lastAvail != _cachedAvailIndex || Volatile.Read(ref _ring.Avail->Idx) != _lastAvail);

    /// <inheritdoc/>
    public void UndoNewestPops(int buffers)
    {
        // Each pop took one avail entry, whatever its chain's length (2.7.6): the position before
        // the oldest of them is that many entries back.
        ArgumentOutOfRangeException.ThrowIfNegative(buffers);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(buffers, (int)_size);
        UndoPops(new RingPosition((ushort)(_lastAvail - buffers)));
    }

    /// <inheritdoc/>
    public void UndoPops(RingPosition before)
    {
        var undone = (ushort)(_lastAvail - before.AvailIndex);
        if (undone > _size)
        {
            throw new ArgumentException("the position is not one read before the pops being undone", nameof(before));
        }

        // The cached avail index is still valid: the driver cannot take buffers back. The undone
        // pops' readable bytes were counted; they are popped (and counted) again.
        ulong bytes = 0;
        for (var slot = before.AvailIndex; slot != _lastAvail; slot++)
        {
            bytes += _popBytes[slot & _mask];
        }

        Counters.Bytes -= (long)bytes;
        _lastAvail = before.AvailIndex;
    }

    /// <inheritdoc/>
    public void MarkBroken(BrokenReason reason) => Break(reason);

    /// <inheritdoc/>
    public bool TryPop(out DescriptorChain chain)
    {
        chain = default;

        // Checked before the cached index: a break can leave entries cached (e.g. a bad head
        // among several published), and a broken queue must pop nothing until restored.
        if (IsBroken)
        {
            return false;
        }

        if (_lastAvail == _cachedAvailIndex)
        {
            // Acquire: avail.ring entries and descriptors are read only after this index.
            var index = Volatile.Read(ref _ring.Avail->Idx);
            if (index == _lastAvail)
            {
                return false;
            }

            // 2.7.13: the driver can never be more than a ring ahead of the device.
            if ((ushort)(index - _lastAvail) > _size)
            {
                return Break(BrokenReason.AvailIndexTooFarAhead);
            }

            _cachedAvailIndex = index;
        }

        // Read once: the driver may rewrite the entry, and the check below must cover what is walked.
        var head = _ring.AvailRing[_lastAvail & _mask];
        if (head >= _size)
        {
            return Break(BrokenReason.HeadOutOfRange);
        }

        var reason = Walk(head, out var count, out var readable, out var readBytes, out var writeBytes, out var descriptors);
        if (reason != BrokenReason.None)
        {
            return Break(reason);
        }

        _popBytes[_lastAvail & _mask] = readBytes;
        _lastAvail++;
        Counters.Bytes += (long)readBytes;
        chain = new DescriptorChain(new ReadOnlySpan<ChainSegment>(_segments, 0, count), readable, readBytes, writeBytes, new ChainToken(head, descriptors));
        return true;
    }

    /// <inheritdoc/>
    [MethodImpl(MethodImplOptions.NoInlining)]
    public int PopBurst(Span<PoppedChain> chains, Span<ChainSegment> segments) =>
        Pop<PoppedChain, PoppedChainRecords>(chains, segments);

    /// <inheritdoc/>
    [MethodImpl(MethodImplOptions.NoInlining)]
    public int PopSingles(Span<ChainSegment> segments, Span<ChainToken> tokens) =>
        Pop<ChainToken, TokenRecords>(tokens[..Math.Min(tokens.Length, segments.Length)], segments);

    // PopBurst and PopSingles: one loop, specialized for the record each writes per buffer, and
    // inlined into each. They stay out of line themselves, as the one method before them was (too
    // large to inline): once a small forwarder, a caller's JIT would inline them and the loop with
    // them, and a round trip's registers ran short (packed 1.02 to 1.04 the time).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private int Pop<TRecord, TRecords>(Span<TRecord> chains, Span<ChainSegment> segments)
        where TRecord : struct
        where TRecords : struct, IPopRecords<TRecord>
    {
        // A broken queue pops nothing until restored; a break below ends the call.
        if (IsBroken || chains.IsEmpty)
        {
            return 0;
        }

        var lastAvail = _lastAvail;
        var ready = (ushort)(_cachedAvailIndex - lastAvail);
        var refreshed = false;
        var popped = 0;
        var used = 0;
        long bytes = 0;
        while (popped < chains.Length)
        {
            if (ready == 0)
            {
                // The cached index is used up (the entries it covered are popped first, as single
                // pops would, so a burst breaks where they would). Acquire, at most once per
                // call: avail.ring entries and descriptors are read only after the index that
                // covers them (2.7.13).
                if (refreshed)
                {
                    break;
                }

                refreshed = true;
                var index = Volatile.Read(ref _ring.Avail->Idx);
                var fresh = (ushort)(index - lastAvail);
                if (fresh == 0)
                {
                    break;
                }

                // 2.7.13: the driver can never be more than a ring ahead of the device.
                if (fresh > _size)
                {
                    Break(BrokenReason.AvailIndexTooFarAhead);
                    break;
                }

                _cachedAvailIndex = index;
                ready = fresh;
            }

            // One direct descriptor per entry, the common case, in a run whose bounds (entries
            // covered by the index, the caller's spans) are known before it starts.
            var room = Math.Min((int)ready, Math.Min(chains.Length - popped, segments.Length - used));
            if (room == 0)
            {
                break;
            }

            var run = PopDirectRun<TRecord, TRecords>(lastAvail, chains.Slice(popped, room), segments[used..], used, out var runBytes, out var reason, out var head);
            popped += run;
            used += run;
            lastAvail += (ushort)run;
            ready -= (ushort)run;
            bytes += runBytes;
            if (reason != BrokenReason.None)
            {
                Break(reason);
                break;
            }

            if (run == room)
            {
                continue;
            }

            // The run stopped at a chain, an indirect table or a buffer outside the memory table's
            // largest region: the general walk (which reads the descriptor again, once, and
            // translates against the whole table), from the head the run read (never fetched twice).
            var taken = PopWalked<TRecord, TRecords>(head, lastAvail, ref chains[popped], segments[used..], used);
            if (taken == 0)
            {
                break;
            }

            used += taken;
            popped++;
            lastAvail++;
            ready--;
        }

        _lastAvail = lastAvail;
        Counters.Bytes += bytes;
        return popped;
    }

    /// <summary>
    /// PopBurst's common case, apart so its loop has the registers to itself: pops the entries
    /// from <paramref name="lastAvail"/> on whose heads are single direct descriptors, at most
    /// <paramref name="chains"/>' length (entries the caller knows are published, and room in
    /// its spans), with TryPop's checks.
    /// </summary>
    /// <param name="lastAvail">The avail slot of the first entry.</param>
    /// <param name="chains">Where the chains go, one per entry; its length is the run's bound.</param>
    /// <param name="segments">Where the segments go, one per entry; at least as long as <paramref name="chains"/>.</param>
    /// <param name="firstSegment">Where <paramref name="segments"/> begins in the caller's span.</param>
    /// <param name="bytes">The readable bytes popped.</param>
    /// <param name="reason">Why the queue breaks at the entry the run stopped at, or None.</param>
    /// <param name="head">The head the run stopped at (read once), when it stopped before its
    /// bound at a chain, an indirect table or a buffer outside the memory table's largest region.</param>
    /// <returns>The entries popped.</returns>
    /// <remarks>Kept out of line: inlined into a large caller (a benchmark's whole round trip)
    /// the JIT's inlining budget ran out inside this loop and left the chain's constructor a call
    /// per entry.</remarks>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private int PopDirectRun<TRecord, TRecords>(ushort lastAvail, Span<TRecord> chains, Span<ChainSegment> segments, int firstSegment, out long bytes, out BrokenReason reason, out ushort head)
        where TRecord : struct
        where TRecords : struct, IPopRecords<TRecord>
    {
        // The caller's spans by reference, checked once here so the loop carries no lengths (each
        // span would otherwise hold two registers and a bounds check per store).
        if (segments.Length < chains.Length)
        {
            throw new ArgumentException("a run's segments must be at least as many as its chains", nameof(segments));
        }

        ref var chain = ref MemoryMarshal.GetReference(chains);
        ref var segment = ref MemoryMarshal.GetReference(segments);
        ref var chainsEnd = ref Unsafe.Add(ref chain, chains.Length);
        var availRing = _ring.AvailRing;
        var descriptors = _ring.Descriptors;
        var memory = _memory;
        var mask = _mask;
        ref var popBytes = ref MemoryMarshal.GetArrayDataReference(_popBytes); // as long as the ring: slot & mask is inside
        var stop = BrokenReason.None;
        ushort stopHead = 0;
        long read = 0;
        // The loop carries as few values as it can, so none of them lives on the stack: the
        // outputs walk by reference to the chains' end (no count, no index scaled for each), the
        // avail slot and the segment number step beside them (the run's length is their
        // distance from where they began), and a head is in range when it is at most the mask
        // (the size is a power of two).
        var slot = (int)lastAvail;
        var segmentNumber = firstSegment;
        for (; Unsafe.IsAddressLessThan(ref chain, ref chainsEnd); chain = ref Unsafe.Add(ref chain, 1), segment = ref Unsafe.Add(ref segment, 1), slot++, segmentNumber++)
        {
            // Read once: the driver may rewrite the entry, and the check below must cover what is
            // walked. Ordered after the caller's acquire of avail.idx, as is the descriptor.
            var h = availRing[slot & mask];
            if (h > mask)
            {
                stop = BrokenReason.HeadOutOfRange;
                break;
            }

            // The descriptor read once into a local, checked as Walk checks it.
            var d = descriptors[h];
            if ((d.Flags & (SplitFlags.DescNext | SplitFlags.DescIndirect)) != 0)
            {
                stopHead = h;
                break;
            }

            if (d.Len > int.MaxValue)
            {
                stop = BrokenReason.AddressOutOfRange;
                break;
            }

            // The largest region only: a buffer elsewhere (or nowhere) ends the run here, and the
            // caller's general walk translates it against the whole table (and breaks the queue
            // when it lies outside).
            if (!memory.TryTranslateCommon(d.Addr, d.Len, out var host))
            {
                stopHead = h;
                break;
            }

            var writable = (d.Flags & SplitFlags.DescWrite) != 0;
            var readBytes = writable ? 0UL : d.Len;
            segment = new ChainSegment(host, d.Len, writable);
            chain = TRecords.Direct(new ChainToken(h, 1), segmentNumber, d.Len, writable, new RingPosition((ushort)slot));
            Unsafe.Add(ref popBytes, slot & mask) = readBytes;
            read += (long)readBytes;
        }

        bytes = read;
        reason = stop;
        head = stopHead;
        return segmentNumber - firstSegment;
    }

    /// <summary>
    /// PopBurst's general case, apart so the burst loop keeps a small frame: walks the chain at
    /// <paramref name="head"/> and, when it is valid and fits, copies its segments to the start of
    /// <paramref name="free"/> (the caller's segments not yet used), numbering them from where
    /// that span begins in the caller's.
    /// </summary>
    /// <returns>The segments taken; 0 when the chain broke the queue, does not fit, or (for a pop of
    /// single segments) has more than one: then it stays available. Counts come back as a value,
    /// not through refs: a local whose address is taken lives in memory for the whole burst loop.</returns>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private int PopWalked<TRecord, TRecords>(ushort head, ushort lastAvail, ref TRecord chain, Span<ChainSegment> free, int firstSegment)
        where TRecord : struct
        where TRecords : struct, IPopRecords<TRecord>
    {
        var reason = Walk(head, out var count, out var readable, out var readBytes, out var writeBytes, out var walked);
        if (reason != BrokenReason.None)
        {
            Break(reason);
            return 0;
        }

        if (count > free.Length || (TRecords.SingleSegmentOnly && count != 1))
        {
            return 0;
        }

        _segments.AsSpan(0, count).CopyTo(free);
        chain = TRecords.Walked(new ChainToken(head, walked), firstSegment, count, readable, readBytes, writeBytes, new RingPosition(lastAvail));
        _popBytes[lastAvail & _mask] = readBytes;
        Counters.Bytes += (long)readBytes;
        return count;
    }

    /// <inheritdoc/>
    public void PushUsedBurst(ReadOnlySpan<ChainToken> tokens, ReadOnlySpan<uint> written)
    {
        ChainToken.CheckWritten(tokens, written);
        var usedRing = _ring.UsedRing;
        var index = _usedIndex;
        long bytes = 0;
        for (var i = 0; i < tokens.Length; i++)
        {
            var w = written.IsEmpty ? 0 : written[i];

            // Plain stores: published by the release store of used.idx in PublishUsed (2.7.8).
            usedRing[index & _mask] = new VirtqUsedElem(tokens[i].Id, w);
            index++;
            bytes += w;
        }

        _usedIndex = index;
        Counters.Packets += tokens.Length;
        Counters.Bytes += bytes;
    }

    /// <inheritdoc/>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void PushUsed(ChainToken token, uint written)
    {
        // Plain store: published by the release store of used.idx in PublishUsed.
        _ring.UsedRing[_usedIndex & _mask] = new VirtqUsedElem(token.Id, written);
        _usedIndex++;
        Counters.Packets++;
        Counters.Bytes += written;
    }

    /// <inheritdoc/>
    public void PushUsedInOrderBatch(ChainToken last, uint written, int buffers)
    {
        if (!_inOrder)
        {
            throw new InvalidOperationException("a batch needs VIRTIO_F_IN_ORDER");
        }

        ArgumentOutOfRangeException.ThrowIfLessThan(buffers, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(buffers, _size);

        // 2.7.9: one used element, at the offset of the batch's first avail entry, names the
        // batch's last buffer; used.idx then moves by the whole batch.
        _ring.UsedRing[_usedIndex & _mask] = new VirtqUsedElem(last.Id, written);
        _usedIndex += (ushort)buffers;
        Counters.Packets += buffers;
        Counters.Bytes += written;
    }

    /// <inheritdoc/>
    public void PublishUsed()
    {
        var pending = (ushort)(_usedIndex - _publishedUsed);
        if (pending == 0)
        {
            return;
        }

        // Release: used elements become visible no later than the index that covers them (2.7.8).
        Volatile.Write(ref _ring.Used->Idx, _usedIndex);
        _publishedUsed = _usedIndex;
        Counters.RecordBurst(pending);
    }

    /// <inheritdoc/>
    public bool CallNeeded()
    {
        var newIndex = _publishedUsed;
        var oldIndex = _lastCallUsed;
        if (newIndex == oldIndex)
        {
            return false;
        }

        _lastCallUsed = newIndex;

        // Store-load: used.idx must be visible before we read used_event/flags (2.7.7.2),
        // or the driver may re-check before our publish while we read its stale request.
        Interlocked.MemoryBarrier();
        bool call = _eventIndex
            ? EventIndex.NeedsNotification(Volatile.Read(ref *_ring.UsedEvent), newIndex, oldIndex)
            : (Volatile.Read(ref _ring.Avail->Flags) & SplitFlags.AvailNoInterrupt) == 0;
        Counters.RecordNotification(call);
        return call;
    }

    /// <inheritdoc/>
    public bool EnableAvailNotifications()
    {
        _kicksDisabled = false;
        if (_eventIndex)
        {
            // 2.7.10: ask for a kick once the driver publishes past what we have read.
            Volatile.Write(ref *_ring.AvailEvent, _lastAvail);
        }
        else
        {
            Volatile.Write(ref _ring.Used->Flags, 0);
        }

        // Store-load: the request must be visible before we re-read avail.idx, or the driver may
        // publish, read our stale request, skip the kick, and we sleep on a non-empty ring.
        Interlocked.MemoryBarrier();
        return Volatile.Read(ref _ring.Avail->Idx) != _lastAvail;
    }

    /// <inheritdoc/>
    public void DisableAvailNotifications()
    {
        if (_kicksDisabled)
        {
            return;
        }

        _kicksDisabled = true;
        if (!_eventIndex)
        {
            Volatile.Write(ref _ring.Used->Flags, SplitFlags.UsedNoNotify);
        }

        // Under EVENT_IDX nothing is written: avail_event stays behind the driver, so its next
        // publishes do not cross it and it does not kick.
    }

    /// <inheritdoc/>
    public void Restore(RingPosition position)
    {
        _lastAvail = _cachedAvailIndex = position.AvailIndex;

        // The used index lives in ring memory (vhost-user passes only the avail position).
        _usedIndex = _publishedUsed = _lastCallUsed = Volatile.Read(ref _ring.Used->Idx);
        _kicksDisabled = false;
        _broken = BrokenReason.None;
    }

    private BrokenReason Walk(ushort head, out int count, out int readable, out ulong readBytes, out ulong writeBytes, out ushort descriptors)
    {
        count = 0;
        readable = 0;
        readBytes = 0;
        writeBytes = 0;
        descriptors = 0;
        var stamp = NextStamp();
        var total = 0; // descriptors seen, direct and indirect: never more than the queue size
        var seenWritable = false;
        var index = head;
        while (true)
        {
            if (_visited[index] == stamp)
            {
                return BrokenReason.ChainLoop;
            }

            _visited[index] = stamp;
            descriptors++;
            // The descriptor read once into a local (ordered after the acquire of avail.idx): the
            // driver may rewrite it, and every check and use below is of this one copy.
            var d = _ring.Descriptors[index];
            var flags = d.Flags;
            if ((flags & SplitFlags.DescIndirect) != 0)
            {
                if (!_indirectAllowed)
                {
                    return BrokenReason.IndirectNotNegotiated;
                }

                if ((flags & SplitFlags.DescNext) != 0)
                {
                    return BrokenReason.IndirectWithNext;
                }

                return WalkIndirect(d.Addr, d.Len, ref total, ref count, ref readable, ref readBytes, ref writeBytes, ref seenWritable);
            }

            if (++total > _size)
            {
                return BrokenReason.ChainTooLong;
            }

            var r = AddSegment(d.Addr, d.Len, (flags & SplitFlags.DescWrite) != 0, ref count, ref readable, ref readBytes, ref writeBytes, ref seenWritable);
            if (r != BrokenReason.None)
            {
                return r;
            }

            if ((flags & SplitFlags.DescNext) == 0)
            {
                return BrokenReason.None;
            }

            if (d.Next >= _size)
            {
                return BrokenReason.NextOutOfRange;
            }

            index = d.Next;
        }
    }

    private BrokenReason WalkIndirect(ulong tableAddress, uint tableLength, ref int total, ref int count, ref int readable, ref ulong readBytes, ref ulong writeBytes, ref bool seenWritable)
    {
        // 2.7.5.3: the table is a whole number of 16-byte descriptors.
        if (tableLength == 0 || (tableLength & 15) != 0)
        {
            return BrokenReason.IndirectTableMisaligned;
        }

        var entries = tableLength / RingLayout.DescriptorBytes;
        if (entries + (uint)total > _size)
        {
            return BrokenReason.ChainTooLong;
        }

        if (!_memory.TryTranslate(tableAddress, tableLength, out var host))
        {
            return BrokenReason.AddressOutOfRange;
        }

        var table = (VirtqDesc*)host;
        uint index = 0;
        for (uint steps = 0; ; steps++)
        {
            // A table of n entries walked more than n times has looped.
            if (steps == entries)
            {
                return BrokenReason.ChainLoop;
            }

            // Read once into a local, as in Walk.
            var d = table[index];
            var flags = d.Flags;
            if ((flags & SplitFlags.DescIndirect) != 0)
            {
                return BrokenReason.NestedIndirect;
            }

            total++;
            var r = AddSegment(d.Addr, d.Len, (flags & SplitFlags.DescWrite) != 0, ref count, ref readable, ref readBytes, ref writeBytes, ref seenWritable);
            if (r != BrokenReason.None)
            {
                return r;
            }

            if ((flags & SplitFlags.DescNext) == 0)
            {
                return BrokenReason.None;
            }

            if (d.Next >= entries)
            {
                return BrokenReason.NextOutOfRange;
            }

            index = d.Next;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private BrokenReason AddSegment(ulong address, uint length, bool writable, ref int count, ref int readable, ref ulong readBytes, ref ulong writeBytes, ref bool seenWritable) =>
        ChainValidation.AddSegment(_memory, _segments, address, length, writable, ref count, ref readable, ref readBytes, ref writeBytes, ref seenWritable);

    private uint NextStamp()
    {
        if (++_stamp == 0)
        {
            Array.Clear(_visited);
            _stamp = 1;
        }

        return _stamp;
    }

    private bool Break(BrokenReason reason) => Counters.Break(ref _broken, reason);
}
