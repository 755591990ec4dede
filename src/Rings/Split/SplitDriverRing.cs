using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics.X86;
using Rings.Chains;
using Rings.Memory;

namespace Rings.Split;

/// <summary>
/// The driver (guest) side of a split virtqueue (virtio 1.2 section 2.7). Keeps its own shadow of
/// everything it wrote (free list, chain lengths, buffer lengths) so a device scribbling on the
/// descriptor table can never steer it; checks every used element it takes back.
/// </summary>
public sealed unsafe class SplitDriverRing : IDriverRing
{
    private const ushort NoDescriptor = 0xFFFF;

    private readonly SplitRingMemory _ring;
    private readonly VirtqDesc* _indirect;
    private readonly ulong _indirectAddress;
    private readonly int _indirectEntries;
    private readonly ushort _size;
    private readonly ushort _mask;
    private readonly bool _eventIndex;
    private readonly bool _useIndirect;
    private readonly bool _inOrder;

    // Shadow state, never read back from shared memory.
    private readonly ushort[] _nextFree;
    private readonly ushort[] _chainLength;   // descriptors a head holds; 0 = not outstanding
    private readonly uint[] _writableLength;  // device-writable bytes of a head's buffer
    private readonly ushort[] _runIds;        // scratch: the heads of the burst being added
    private ushort _freeHead;
    private ushort _freeTail;                 // IN_ORDER: freed chains go to the tail, keeping ring order
    private InOrderQueue _order;              // IN_ORDER: heads in the order they were made available
    private int _batchLeft;                   // IN_ORDER: buffers of the current batch not yet handed back
    private uint _batchLastLength;            // IN_ORDER: length the device wrote for the batch's last buffer
    private int _freeCount;
    private int _outstanding;

    private ushort _availIndex;       // next avail slot to fill
    private ushort _publishedAvail;   // avail.idx as last published
    private ushort _lastKickAvail;    // avail.idx at the last kick decision (EVENT_IDX "old")
    private ushort _lastUsed;         // next used element to take
    private ushort _cachedUsedIndex;  // used.idx as last read: one read of the device's line per burst
    private bool _callsDisabled;
    private BrokenReason _broken;
    private readonly GuestMemory _memory;   // the driver's own memory table: buffers are checked against it at add time

    /// <summary>Creates the driver side over ring memory already laid out in <paramref name="memory"/>.</summary>
    /// <param name="memory">The memory table holding the ring (and the indirect area, if any).</param>
    /// <param name="areas">Guest-physical addresses of the descriptor table, avail ring and used ring.</param>
    /// <param name="size">Queue size, a power of two from 1 to 32768.</param>
    /// <param name="features">Negotiated features; the ring uses INDIRECT_DESC, EVENT_IDX and IN_ORDER.</param>
    /// <param name="indirect">Where indirect tables live; needed for <see cref="VirtioFeatures.IndirectDescriptors"/> to be used.</param>
    /// <exception cref="ArgumentException">A part is misaligned or outside the memory table, or the size is not a split queue size.</exception>
    public SplitDriverRing(GuestMemory memory, RingAreas areas, int size, VirtioFeatures features, IndirectArea? indirect = null)
    {
        _ring = new SplitRingMemory(memory, areas, RingFormat.Split.Layout(size));
        _memory = memory;
        _size = (ushort)size;
        _mask = (ushort)(size - 1);
        Features = features;
        _eventIndex = (features & VirtioFeatures.EventIndex) != 0;
        _inOrder = (features & VirtioFeatures.InOrder) != 0;
        var table = IndirectArea.Map(indirect, memory, size, features);
        if (table != 0)
        {
            _indirect = (VirtqDesc*)table;
            _indirectAddress = indirect!.Value.Address;
            _indirectEntries = indirect.Value.EntriesPerTable;
            _useIndirect = true;
        }

        _nextFree = new ushort[size + 1];   // one spare link past the last descriptor (TakeBatchRun)
        _chainLength = new ushort[size];
        _writableLength = new uint[size];
        _runIds = new ushort[size];
        if (_inOrder)
        {
            _order = new InOrderQueue(size);
        }

        Counters = new QueueCounters();
        Reset();
    }

    /// <summary>The negotiated features the ring was made with.</summary>
    public VirtioFeatures Features { get; }

    /// <inheritdoc/>
    public RingPosition PrepareDeviceRestart() => DevicePosition;

    /// <inheritdoc/>
    public RingPosition DevicePosition
    {
        get
        {
            // Acquire, as for taking used elements (2.7.8); a used index further ahead than what is
            // outstanding is a lie, and the driver's own count stands instead.
            var used = Volatile.Read(ref _ring.Used->Idx);
            return new RingPosition((ushort)(used - _lastUsed) <= _outstanding ? used : _lastUsed);
        }
    }

    /// <inheritdoc/>
    public int Size => _size;

    /// <inheritdoc/>
    public int FreeDescriptors => _freeCount;

    /// <inheritdoc/>
    public int Outstanding => _outstanding;

    /// <inheritdoc/>
    public bool IsBroken => _broken != BrokenReason.None;

    /// <inheritdoc/>
    public BrokenReason BrokenReason => _broken;

    /// <inheritdoc/>
    public QueueCounters Counters { get; }

    /// <inheritdoc/>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool TryAdd(BufferSegment segment, bool deviceWritable, out ushort id)
    {
        BufferSegment.CheckInside(_memory, segment);
        if (_freeCount == 0 || IsBroken)
        {
            id = 0;
            return false;
        }

        var head = _freeHead;
        _freeHead = _nextFree[head];
        _freeCount--;
        // Plain stores: published by the release store of avail.idx in Publish.
        StoreIfChanged(_ring.Descriptors + head, segment.Address, segment.Length, deviceWritable ? SplitFlags.DescWrite : (ushort)0);
        _chainLength[head] = 1;
        _writableLength[head] = deviceWritable ? segment.Length : 0;
        Expose(head, deviceWritable ? 0 : segment.Length);
        id = head;
        return true;
    }

    /// <inheritdoc/>
    public bool TryAdd(ReadOnlySpan<BufferSegment> readable, ReadOnlySpan<BufferSegment> writable, out ushort id)
    {
        var total = BufferSegment.CheckBuffer(_memory, readable, writable);

        id = 0;
        if (IsBroken)
        {
            return false;
        }

        if (total == 1)
        {
            return readable.Length == 1 ? TryAdd(readable[0], false, out id) : TryAdd(writable[0], true, out id);
        }

        BufferSegment.Totals(readable, writable, out var readBytes, out var writeBytes);

        if (_useIndirect && total <= _indirectEntries)
        {
            if (_freeCount == 0)
            {
                return false;
            }

            var head = _freeHead;
            _freeHead = _nextFree[head];
            _freeCount--;

            // 2.7.5.3.1: the table is a chain of its own, indices relative to the table.
            var table = _indirect + ((ulong)head * (ulong)_indirectEntries);
            for (var i = 0; i < total; i++)
            {
                var w = i >= readable.Length;
                var s = w ? writable[i - readable.Length] : readable[i];
                var flags = (ushort)((w ? SplitFlags.DescWrite : 0) | (i + 1 < total ? SplitFlags.DescNext : 0));
                table[i] = new VirtqDesc(s.Address, s.Length, flags, (ushort)(i + 1 < total ? i + 1 : 0));
            }

            var tableAddress = _indirectAddress + ((ulong)head * (ulong)_indirectEntries * RingLayout.DescriptorBytes);
            _ring.Descriptors[head] = new VirtqDesc(tableAddress, (uint)(total * RingLayout.DescriptorBytes), SplitFlags.DescIndirect, 0);
            _chainLength[head] = 1;
            _writableLength[head] = writeBytes;
            Expose(head, readBytes);
            id = head;
            return true;
        }

        if (total > _freeCount)
        {
            return false;
        }

        var first = _freeHead;
        var current = first;
        for (var i = 0; i < total; i++)
        {
            var w = i >= readable.Length;
            var s = w ? writable[i - readable.Length] : readable[i];
            var next = _nextFree[current];
            var last = i + 1 == total;
            var flags = (ushort)((w ? SplitFlags.DescWrite : 0) | (last ? 0 : SplitFlags.DescNext));
            _ring.Descriptors[current] = new VirtqDesc(s.Address, s.Length, flags, last ? (ushort)0 : next);
            if (last)
            {
                _freeHead = next;
            }
            else
            {
                current = next;
            }
        }

        _freeCount -= total;
        _chainLength[first] = (ushort)total;
        _writableLength[first] = writeBytes;
        Expose(first, readBytes);
        id = first;
        return true;
    }

    /// <inheritdoc/>
    public int TryAddBurst(ReadOnlySpan<BufferSegment> buffers, bool deviceWritable, Span<ushort> ids)
    {
        BufferSegment.CheckBurst(_memory, buffers, ids);

        if (IsBroken)
        {
            return 0;
        }

        // At most the buffers, and (CheckBurst) the ids.
        var n = Math.Min(buffers.Length, _freeCount);
        var run = _runIds.AsSpan(0, n);
        var readBytes = AddRun(buffers[..n], run, deviceWritable);
        run.CopyTo(ids);
        if (_inOrder)
        {
            // After the loop, from the driver's own copy of the heads (never the caller's span):
            // the sequence numbers in a loop of their own keep the add loop's values in registers.
            _order.AppendRun(run);
        }

        _freeCount -= n;
        _outstanding += n;
        Counters.Packets += n;
        Counters.Bytes += readBytes;
        return n;
    }

    /// <summary>
    /// TryAddBurst's loop, out of line so its values have the registers to themselves (inlined
    /// into a large caller it shared them, and reloaded a third of them from the stack per
    /// buffer): makes <paramref name="buffers"/> available, one descriptor each from the free
    /// list, and writes their heads to <paramref name="heads"/>.
    /// </summary>
    /// <param name="buffers">The buffers, no more than the free descriptors.</param>
    /// <param name="heads">Where the heads go, as long as <paramref name="buffers"/>.</param>
    /// <param name="deviceWritable">Whether the device writes the buffers.</param>
    /// <returns>The readable bytes made available.</returns>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private long AddRun(ReadOnlySpan<BufferSegment> buffers, Span<ushort> heads, bool deviceWritable)
    {
        var descriptors = _ring.Descriptors;
        var availRing = _ring.AvailRing;
        var nextFree = _nextFree;
        var chainLength = _chainLength;
        var writableLength = _writableLength;

        // Unchecked per buffer: every head comes from the driver's own free list, which holds
        // _freeCount heads (at least the buffers), each below the queue size (the length of the
        // three record arrays). Nothing here is read from shared memory.
        if (nextFree.Length < _size || chainLength.Length < _size || writableLength.Length < _size || heads.Length != buffers.Length)
        {
            throw new InvalidOperationException("the driver's records are shorter than its queue");
        }

        // The descriptor's second word (length, then flags) with the flags in place, and the mask
        // that keeps a buffer's length as its writable length when the device writes it (and
        // leaves its readable bytes as the rest): no test of deviceWritable per buffer.
        var flagsWord = deviceWritable ? (ulong)SplitFlags.DescWrite << 32 : 0;
        var writableMask = deviceWritable ? uint.MaxValue : 0;
        var mask = _mask;
        var head = _freeHead;
        var avail = _availIndex;
        ulong readBytes = 0;
        ref var buffer = ref MemoryMarshal.GetReference(buffers);
        ref var buffersEnd = ref Unsafe.Add(ref buffer, buffers.Length);
        ref var id = ref MemoryMarshal.GetReference(heads);
        ref var next0 = ref MemoryMarshal.GetArrayDataReference(nextFree);
        ref var chains0 = ref MemoryMarshal.GetArrayDataReference(chainLength);
        ref var writable0 = ref MemoryMarshal.GetArrayDataReference(writableLength);

        // Fields read once into locals: the stores below (shared memory) could alias them as far
        // as the JIT knows, and it would reload each one per buffer.
        for (; Unsafe.IsAddressLessThan(ref buffer, ref buffersEnd); buffer = ref Unsafe.Add(ref buffer, 1), id = ref Unsafe.Add(ref id, 1))
        {
            var address = buffer.Address;
            var length = buffer.Length;
            var next = Unsafe.Add(ref next0, head);

            // Plain stores: published by the release store of avail.idx in Publish (2.7.13).
            StoreIfChanged(descriptors + head, address, length | flagsWord);
            StoreIfChanged(availRing + (avail & mask), head);

            Unsafe.Add(ref chains0, head) = 1;
            var writable = length & writableMask;
            Unsafe.Add(ref writable0, head) = writable;
            readBytes += length - writable;
            id = head;
            avail++;
            head = next;
        }

        _freeHead = head;
        _availIndex = avail;
        return (long)readBytes;
    }

    /// <inheritdoc/>
    public void Publish()
    {
        var pending = (ushort)(_availIndex - _publishedAvail);
        if (pending == 0)
        {
            return;
        }

        // Release: the descriptors and avail.ring entries written above become visible no later
        // than the index that covers them (2.7.13, "the driver performs a suitable memory barrier").
        Volatile.Write(ref _ring.Avail->Idx, _availIndex);
        _publishedAvail = _availIndex;
        Counters.RecordBurst(pending);
    }

    /// <inheritdoc/>
    public bool KickNeeded()
    {
        var newIndex = _publishedAvail;
        var oldIndex = _lastKickAvail;
        if (newIndex == oldIndex)
        {
            return false;
        }

        _lastKickAvail = newIndex;

        // Store-load: our avail.idx store must be visible before we read the device's
        // avail_event/flags, or both sides can decide the other will act (2.7.10).
        Interlocked.MemoryBarrier();
        bool kick = _eventIndex
            ? EventIndex.NeedsNotification(Volatile.Read(ref *_ring.AvailEvent), newIndex, oldIndex)
            : (Volatile.Read(ref _ring.Used->Flags) & SplitFlags.UsedNoNotify) == 0;
        Counters.RecordNotification(kick);
        return kick;
    }

    /// <inheritdoc/>
    public bool TryTakeUsed(out UsedElement used)
    {
        if (_batchLeft > 0)
        {
            return TakeFromBatch(out used);
        }

        used = default;

        // Checked before the cached index: a break can leave elements cached, and a broken
        // queue must hand nothing back until reset.
        if (IsBroken)
        {
            return false;
        }

        if (_lastUsed == _cachedUsedIndex)
        {
            // Acquire: the used elements are read only after the index that covers them.
            var index = Volatile.Read(ref _ring.Used->Idx);
            if (index == _lastUsed)
            {
                return false;
            }

            // Only published buffers can come back: added-but-unpublished ones are not the device's yet.
            if ((ushort)(index - _lastUsed) > _outstanding - (ushort)(_availIndex - _publishedAvail))
            {
                return Break(BrokenReason.UsedIndexTooFarAhead);
            }

            _cachedUsedIndex = index;
        }

        if (!ReadUsed(out var id, out var length))
        {
            return false;
        }

        if (_inOrder)
        {
            return StartBatch(id, length) && TakeFromBatch(out used);
        }

        _lastUsed++;
        FreeChain(id);
        Counters.Bytes += length;
        used = new UsedElement((ushort)id, length);
        return true;
    }

    /// <inheritdoc/>
    public int TakeUsed(Span<UsedElement> used)
    {
        var taken = 0;
        var refreshed = false;
        while (taken < used.Length)
        {
            if (_batchLeft > 0)
            {
                taken += TakeBatchRun(used[taken..]);
                continue;
            }

            // Checked before the cached index, as in TryTakeUsed.
            if (IsBroken)
            {
                break;
            }

            if (_lastUsed == _cachedUsedIndex)
            {
                if (refreshed)
                {
                    break;
                }

                // Acquire, once per call: the used elements are read only after the index that covers them (2.7.8).
                refreshed = true;
                var index = Volatile.Read(ref _ring.Used->Idx);
                if (index == _lastUsed)
                {
                    break;
                }

                if ((ushort)(index - _lastUsed) > _outstanding - (ushort)(_availIndex - _publishedAvail))
                {
                    Break(BrokenReason.UsedIndexTooFarAhead);
                    break;
                }

                PrefetchUsed(_lastUsed, index);
                _cachedUsedIndex = index;
            }

            if (_inOrder)
            {
                // Elements that each return one buffer (a receive queue's usual case, every buffer
                // with its own length) in one pass; an element returning several starts a batch.
                // The first element's id is only a hint here (the run reads it again and checks
                // what it reads), so a transmit queue's batches do not pay for the run's setup.
                if (_order.Count > 0 && _ring.UsedRing[_lastUsed & _mask].Id == _order.PeekAt(0))
                {
                    taken += TakeInOrderSingles(used[taken..]);
                    if (taken == used.Length || _lastUsed == _cachedUsedIndex)
                    {
                        continue;
                    }
                }

                if (!TakeInOrderBatch())
                {
                    break;
                }

                continue;
            }

            // Every cached element the span has room for, each checked as in TryTakeUsed, and
            // freed as FreeChain frees it, with the free list's head and counts in locals (stores
            // into the caller's span would otherwise make the JIT reload the fields after each one).
            var usedRing = _ring.UsedRing;
            var chainLength = _chainLength;
            var writableLength = _writableLength;
            var nextFree = _nextFree;
            var lastUsed = _lastUsed;
            var freeHead = _freeHead;
            var freed = 0;
            var returned = 0;
            var end = (ushort)(lastUsed + Math.Min((ushort)(_cachedUsedIndex - lastUsed), used.Length - taken));
            long bytes = 0;
            var reason = BrokenReason.None;
            while (lastUsed != end)
            {
                // Read once into a local (ordered after the acquire above); every check is of this copy.
                var element = usedRing[lastUsed & _mask];
                var id = element.Id;
                var length = element.Len;
                if (id >= _size || chainLength[id] == 0)
                {
                    reason = BrokenReason.UsedIdNotOutstanding;
                    break;
                }

                if (length > writableLength[id])
                {
                    reason = BrokenReason.UsedLengthTooLarge;
                    break;
                }

                // Walk our shadow links, never the shared table: the device may have rewritten it.
                int count = chainLength[id];
                var last = (ushort)id;
                for (var k = 1; k < count; k++)
                {
                    last = nextFree[last];
                }

                nextFree[last] = freeHead;
                freeHead = (ushort)id;
                chainLength[id] = 0;
                freed += count;
                returned++;
                lastUsed++;
                bytes += length;
                used[taken++] = new UsedElement((ushort)id, length);
            }

            _lastUsed = lastUsed;
            _freeHead = freeHead;
            _freeCount += freed;
            _outstanding -= returned;
            Counters.Bytes += bytes;
            if (reason != BrokenReason.None)
            {
                Break(reason);
                break;
            }
        }

        return taken;
    }

    /// <inheritdoc/>
    public bool EnableUsedNotifications()
    {
        _callsDisabled = false;
        if (_eventIndex)
        {
            // 2.7.7.2: ask for a call once the device moves past what we have taken.
            Volatile.Write(ref *_ring.UsedEvent, _lastUsed);
        }
        else
        {
            Volatile.Write(ref _ring.Avail->Flags, 0);
        }

        // Store-load: the request must be visible before we look at used.idx again, or the
        // device may publish and skip the call while we go to sleep on an empty-looking ring.
        Interlocked.MemoryBarrier();
        return _batchLeft > 0 || Volatile.Read(ref _ring.Used->Idx) != _lastUsed;
    }

    /// <inheritdoc/>
    public void DisableUsedNotifications()
    {
        if (_callsDisabled)
        {
            return;
        }

        _callsDisabled = true;
        if (_eventIndex)
        {
            // Move used_event half the index space away so no publish crosses it (a hint only; 2.7.7.2).
            Volatile.Write(ref *_ring.UsedEvent, (ushort)(_lastUsed + 0x8000));
        }
        else
        {
            Volatile.Write(ref _ring.Avail->Flags, SplitFlags.AvailNoInterrupt);
        }
    }

    /// <inheritdoc/>
    public void Reset()
    {
        for (var i = 0; i < _size; i++)
        {
            _nextFree[i] = (ushort)(i + 1 < _size ? i + 1 : NoDescriptor);
            _chainLength[i] = 0;
            _writableLength[i] = 0;
        }

        _freeHead = 0;
        _freeTail = (ushort)(_size - 1);
        _freeCount = _size;
        _order.Clear();
        _batchLeft = 0;
        _batchLastLength = 0;
        _outstanding = 0;
        _availIndex = _publishedAvail = _lastKickAvail = 0;
        _lastUsed = _cachedUsedIndex = 0;
        _callsDisabled = false;
        _broken = BrokenReason.None;
        _ring.Clear(_size);
    }

    /// <summary>
    /// Starts the driver at a given avail/used index instead of 0, as if that many buffers had
    /// already gone round (tests use it to cross the u16 wrap). Only valid on a fresh or reset ring.
    /// </summary>
    /// <param name="index">The starting index for both avail and used.</param>
    public void StartAt(ushort index)
    {
        if (_outstanding != 0)
        {
            throw new InvalidOperationException("StartAt needs a ring with nothing outstanding");
        }

        _availIndex = _publishedAvail = _lastKickAvail = index;
        _lastUsed = _cachedUsedIndex = index;
        Volatile.Write(ref _ring.Used->Idx, index);
        Volatile.Write(ref _ring.Avail->Idx, index);
        if (_eventIndex)
        {
            *_ring.UsedEvent = index;
            *_ring.AvailEvent = index;
        }
    }

    // Writes a one-descriptor buffer's entry in the descriptor table unless it already holds
    // exactly these values. A buffer slot tends to go back to the descriptor it left (both free
    // lists are stacks), so in steady state most entries are rewritten unchanged; a store, even of
    // the same bytes, takes the cache line away from the device's core, which must then fetch it
    // again, while a load leaves it shared by both. The device never writes the descriptor table
    // (2.7.5), so what is read here is what this driver last wrote, or, from a device that broke
    // the rules, something that differs and is overwritten. The publish's release store orders
    // either way: an unchanged entry was made visible by an earlier one.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreIfChanged(VirtqDesc* descriptor, ulong address, uint length, ushort flags) =>
        StoreIfChanged(descriptor, address, length | ((ulong)flags << 32));

    // A descriptor whose second word (length, then flags) is already put together.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreIfChanged(VirtqDesc* descriptor, ulong address, ulong second)
    {
        var words = (ulong*)descriptor;
        if (words[0] != address || words[1] != second)
        {
            words[0] = address;
            words[1] = second;
        }
    }

    // An avail ring entry, left alone when it already names this head (as above).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreIfChanged(ushort* entry, ushort head)
    {
        if (*entry != head)
        {
            *entry = head;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void Expose(ushort head, ulong readBytes)
    {
        // Plain store: published by the release store of avail.idx in Publish.
        StoreIfChanged(_ring.AvailRing + (_availIndex & _mask), head);

        _availIndex++;
        _outstanding++;
        if (_inOrder)
        {
            _order.Enqueue(head);
        }

        Counters.Packets++;
        Counters.Bytes += (long)readBytes;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void FreeChain(ushort head)
    {
        // Walk our shadow links, never the shared table: the device may have rewritten it.
        int count = _chainLength[head];
        var last = head;
        for (var i = 1; i < count; i++)
        {
            last = _nextFree[last];
        }

        _nextFree[last] = _freeHead;
        _freeHead = head;
        _freeCount += count;
        _chainLength[head] = 0;
        _outstanding--;
    }

    /// <summary>
    /// Asks for the lines of the used elements from <paramref name="from"/> up to
    /// <paramref name="to"/> at once: the device's core wrote them, and read one by one, each
    /// element's miss would wait for the one before. A hint only; nothing is read here.
    /// </summary>
    private void PrefetchUsed(ushort from, ushort to)
    {
        if (!Sse.IsSupported)
        {
            return;
        }

        // A 64-byte line holds 8 elements: one hint per 8 reaches every line up to the last
        // element's, which gets its own (the elements sit 4 bytes after the line boundary).
        var count = (ushort)(to - from);
        for (var i = 0; i < count; i += 8)
        {
            Sse.Prefetch0(_ring.UsedRing + ((from + i) & _mask));
        }

        Sse.Prefetch0(_ring.UsedRing + ((to - 1) & _mask));
    }

    /// <summary>
    /// IN_ORDER: reads and checks the used element at <c>_lastUsed</c> (cached index already read)
    /// and starts its batch; false when the device broke a rule.
    /// </summary>
    private bool TakeInOrderBatch() => ReadUsed(out var id, out var length) && StartBatch(id, length);

    /// <summary>
    /// Reads the used element at <c>_lastUsed</c> (the cached index covers it) and checks it names
    /// an outstanding buffer and a length its writable part holds; false when the device broke a rule.
    /// </summary>
    private bool ReadUsed(out ushort id, out uint length)
    {
        // The element read once into a local (ordered after the acquire of used.idx): the device
        // may change it under us, and every check is of this one copy.
        var element = _ring.UsedRing[_lastUsed & _mask];
        id = (ushort)element.Id;
        length = element.Len;
        if (element.Id >= _size || _chainLength[id] == 0)
        {
            return Break(BrokenReason.UsedIdNotOutstanding);
        }

        if (length > _writableLength[id])
        {
            return Break(BrokenReason.UsedLengthTooLarge);
        }

        return true;
    }

    /// <summary>IN_ORDER: starts the batch a checked used element naming <paramref name="id"/> returns.</summary>
    private bool StartBatch(ushort id, uint length)
    {
        // 2.7.9: one used element returns every buffer made available up to this one, and
        // used.idx moved by the whole batch.
        var batch = _order.BatchSize(id);
        if (batch > (ushort)(_cachedUsedIndex - _lastUsed))
        {
            return Break(BrokenReason.UsedBatchTooLarge);
        }

        _lastUsed += (ushort)batch;
        _batchLeft = batch;
        _batchLastLength = length;
        return true;
    }

    /// <summary>Hands back the oldest buffer of the current IN_ORDER batch.</summary>
    private bool TakeFromBatch(out UsedElement used)
    {
        used = default;
        return TakeBatchRun(new Span<UsedElement>(ref used)) == 1;
    }

    /// <summary>
    /// Hands back as many buffers of the current IN_ORDER batch as <paramref name="used"/> holds,
    /// oldest first (TryTakeUsed takes them one at a time through it): the free list's tail and
    /// count stay in locals and the freed chains are linked to each other, so a batch of a burst
    /// costs one store per chain instead of a round of field updates per buffer.
    /// </summary>
    private int TakeBatchRun(Span<UsedElement> used)
    {
        var n = Math.Min(_batchLeft, used.Length);
        var chainLength = _chainLength;
        var writableLength = _writableLength;
        var nextFree = _nextFree;
        var size = _size;
        var order = _order.Ring;
        var at = _order.OldestIndex;

        // Bounds once, not per buffer: the n ids leave the order ring from its oldest slot (it
        // holds the whole batch, queued by this driver's own adds), and each is a head this
        // driver handed out, so it names a record and its chain's links name descriptors. The
        // used span holds n. None of it was read from shared memory.
        if (n < 1 || (uint)at >= (uint)order.Length || writableLength.Length < size || chainLength.Length < size || nextFree.Length <= size)
        {
            throw new InvalidOperationException($"the driver's IN_ORDER records disagree: a batch of {n} from slot {at} of {order.Length}");
        }

        // The freed chains are linked on at the free list's tail; when the list is empty the
        // first goes after the spare link past the last descriptor instead, and becomes the
        // list's head after the loop: the loop then links every chain the same way, with no test.
        // (AppendToFreeList does the same per chain with a test, for TakeInOrderSingles; this run
        // through a shared spare-link helper measured 1.00 to 1.09 of this loop's time.)
        var empty = _freeCount == 0;
        var tail = empty ? size : (int)_freeTail;
        var freed = 0;
        long bytes = 0;
        ref var orderIds = ref MemoryMarshal.GetArrayDataReference(order);
        ref var writable0 = ref MemoryMarshal.GetArrayDataReference(writableLength);
        ref var chains0 = ref MemoryMarshal.GetArrayDataReference(chainLength);
        ref var next0 = ref MemoryMarshal.GetArrayDataReference(nextFree);
        ref var element = ref MemoryMarshal.GetReference(used);
        for (var i = 0; i < n; i++)
        {
            // The queue's ring and position in locals: the stores below could alias the fields.
            var id = Unsafe.Add(ref orderIds, at);
            if (++at == order.Length)
            {
                at = 0;
            }

            // 2.7.9: the buffers skipped over were used completely (the batch's last one is given
            // its own length after the loop, so the loop has no test for it). 2.7.5: freed in the
            // order they went out, the list stays in ring order; walked over our shadow links,
            // never the shared table (the device may have rewritten it).
            var length = Unsafe.Add(ref writable0, id);
            int count = Unsafe.Add(ref chains0, id);
            var last = id;
            for (var k = 1; k < count; k++)
            {
                last = Unsafe.Add(ref next0, last);
            }

            Unsafe.Add(ref next0, tail) = id;
            tail = last;
            Unsafe.Add(ref chains0, id) = 0;
            freed += count;
            bytes += length;
            Unsafe.Add(ref element, i) = new UsedElement(id, length);
        }

        if (empty)
        {
            _freeHead = nextFree[size];
        }

        if (n == _batchLeft)
        {
            bytes += InOrderQueue.EndBatch(ref Unsafe.Add(ref element, n - 1), _batchLastLength);
        }

        EndInOrderRun(n, (ushort)tail, freed, bytes);
        _batchLeft -= n;
        return n;
    }

    /// <summary>
    /// IN_ORDER: takes, oldest first, the cached used elements that each name the oldest buffer
    /// still out, so that each returns that buffer alone (2.7.9: a batch ends at the buffer it
    /// names) with the length it carries; stops at the first element naming a later buffer (a
    /// batch of several, for <see cref="TakeInOrderBatch"/>) or a length the buffer cannot hold
    /// (which TakeInOrderBatch then refuses). Each element is read once into a local, after the
    /// acquire of used.idx; the free list grows at its tail as in <see cref="TakeBatchRun"/>,
    /// with its tail and the queue's position in locals.
    /// </summary>
    /// <returns>The buffers taken.</returns>
    private int TakeInOrderSingles(Span<UsedElement> used)
    {
        var usedRing = _ring.UsedRing;
        var mask = _mask;
        var lastUsed = _lastUsed;
        var n = Math.Min(Math.Min((ushort)(_cachedUsedIndex - lastUsed), used.Length), _order.Count);
        var chainLength = _chainLength;
        var writableLength = _writableLength;
        var nextFree = _nextFree;
        var order = _order.Ring;
        var at = _order.OldestIndex;
        var tail = _freeTail;
        var empty = _freeCount == 0;
        var freed = 0;
        long bytes = 0;
        var i = 0;
        for (; i < n; i++)
        {
            var element = usedRing[(ushort)(lastUsed + i) & mask];
            var id = order[at];
            if (element.Id != id || element.Len > writableLength[id])
            {
                break;
            }

            if (++at == order.Length)
            {
                at = 0;
            }

            freed += AppendToFreeList(id, chainLength, nextFree, ref tail, ref empty);
            bytes += element.Len;
            used[i] = new UsedElement(id, element.Len);
        }

        EndInOrderRun(i, tail, freed, bytes);
        _lastUsed = (ushort)(lastUsed + i);
        return i;
    }

    /// <summary>
    /// Writes back what an IN_ORDER run (<see cref="TakeBatchRun"/>, <see cref="TakeInOrderSingles"/>)
    /// kept in locals: the free list's new tail (ended), the buffers gone from the order queue, the
    /// counts.
    /// </summary>
    private void EndInOrderRun(int buffers, ushort tail, int freed, long bytes)
    {
        if (buffers > 0)
        {
            _nextFree[tail] = NoDescriptor;
            _freeTail = tail;
        }

        _order.Skip(buffers);
        _freeCount += freed;
        _outstanding -= buffers;
        Counters.Bytes += bytes;
    }

    /// <summary>
    /// IN_ORDER: frees the chain at head <paramref name="id"/> onto the free list's tail (2.7.5:
    /// appended in the order they went out, the list stays in ring order), walking our shadow
    /// links, never the shared table (the device may have rewritten it). The list's tail and
    /// whether it was empty are the caller's locals, written back once after its run.
    /// </summary>
    /// <returns>The descriptors freed.</returns>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private int AppendToFreeList(ushort id, ushort[] chainLength, ushort[] nextFree, ref ushort tail, ref bool empty)
    {
        int count = chainLength[id];
        var last = id;
        for (var k = 1; k < count; k++)
        {
            last = nextFree[last];
        }

        if (empty)
        {
            _freeHead = id;
            empty = false;
        }
        else
        {
            nextFree[tail] = id;
        }

        tail = last;
        chainLength[id] = 0;
        return count;
    }

    private bool Break(BrokenReason reason) => Counters.Break(ref _broken, reason);
}
