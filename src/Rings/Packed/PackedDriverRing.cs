using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Rings.Chains;
using Rings.Memory;

namespace Rings.Packed;

/// <summary>
/// The driver (guest) side of a packed virtqueue (virtio 1.2 section 2.8). Buffer ids come from a
/// free-id stack so the device may complete in any order, or under IN_ORDER in sequence (the device
/// then returns them in that order, 2.8.8); the driver keeps its own record of each
/// buffer (descriptor count, writable length) and never reads them back from the ring, so a device
/// scribbling on the descriptors can never steer it. Every used descriptor it takes back is checked.
/// </summary>
public sealed unsafe class PackedDriverRing : IDriverRing
{
    private readonly PvirtqDesc* _desc;
    private readonly PvirtqEventSuppress* _driverEvent;   // written by us: the device's calls
    private readonly PvirtqEventSuppress* _deviceEvent;   // written by the device: our kicks
    private readonly PvirtqDesc* _indirect;
    private readonly ulong _indirectAddress;
    private readonly int _indirectEntries;
    private readonly int _size;
    private readonly bool _eventIndex;
    private readonly bool _useIndirect;
    private readonly bool _inOrder;

    // Shadow state, never read back from shared memory.
    private readonly ushort[] _freeIds;          // without IN_ORDER: stack of buffer ids not in use
    private readonly BufferRecord[] _buffers;    // per buffer id: what the driver made available
    private readonly PvirtqDesc[] _made;         // per ring position: the descriptor as the driver wrote it (flags without AVAIL/USED)
    private int _freeIdCount;                    // ids not in use: the size less the buffers outstanding
    private int _oldestId;                       // IN_ORDER: id of the oldest buffer outstanding (see TakeId)
    private int _freeDescriptors;

    private int _availPosition;        // next descriptor to fill
    private ushort _availBits;         // AVAIL/USED bits of a descriptor made available this lap
    private PvirtqDesc* _pendingHead;  // first head of the unpublished burst: its flags are held back
    private ushort _pendingHeadFlags;
    private int _pendingBuffers;
    private int _publishedPosition;    // first descriptor not yet made available, as last published
    private bool _publishedWrap;
    private int _sinceKick;            // descriptors published since the last kick decision (EVENT_IDX window)

    private int _usedPosition;         // next descriptor the device writes a used descriptor to
    private ushort _usedBits;          // AVAIL/USED bits of a used descriptor this lap
    private int _batchLeft;            // IN_ORDER: buffers of the current batch not yet handed back
    private uint _batchLastLength;     // IN_ORDER: length the device wrote for the batch's last buffer
    private bool _callsDisabled;
    private BrokenReason _broken;
    private readonly GuestMemory _memory;   // the driver's own memory table: buffers are checked against it at add time

    /// <summary>Creates the driver side over ring memory already laid out in <paramref name="memory"/>.</summary>
    /// <param name="memory">The memory table holding the ring (and the indirect area, if any).</param>
    /// <param name="areas">Guest-physical addresses of the descriptor ring and the driver and device event suppression structures.</param>
    /// <param name="size">Queue size, from 1 to 32768.</param>
    /// <param name="features">Negotiated features; the ring uses INDIRECT_DESC, EVENT_IDX and IN_ORDER.</param>
    /// <param name="indirect">Where indirect tables live (one table per buffer id); needed for <see cref="VirtioFeatures.IndirectDescriptors"/> to be used.</param>
    /// <exception cref="ArgumentException">A part is misaligned or outside the memory table, or the size is not a packed queue size.</exception>
    public PackedDriverRing(GuestMemory memory, RingAreas areas, int size, VirtioFeatures features, IndirectArea? indirect = null)
    {
        var ring = new PackedRingMemory(memory, areas, RingFormat.Packed.Layout(size));
        _memory = memory;
        _desc = ring.Descriptors;
        _driverEvent = ring.DriverEvent;
        _deviceEvent = ring.DeviceEvent;
        _size = size;
        Features = features;
        _eventIndex = (features & VirtioFeatures.EventIndex) != 0;
        _inOrder = (features & VirtioFeatures.InOrder) != 0;
        var table = IndirectArea.Map(indirect, memory, size, features);
        if (table != 0)
        {
            _indirect = (PvirtqDesc*)table;
            _indirectAddress = indirect!.Value.Address;
            _indirectEntries = indirect.Value.EntriesPerTable;
            _useIndirect = true;
        }

        _freeIds = _inOrder ? [] : new ushort[size];
        _buffers = new BufferRecord[size];
        _made = new PvirtqDesc[size];

        Counters = new QueueCounters();
        Reset();
    }

    /// <summary>The negotiated features the ring was made with.</summary>
    public VirtioFeatures Features { get; }

    /// <inheritdoc/>
    public RingPosition PrepareDeviceRestart()
    {
        var resume = DevicePosition;

        // From the device's position to the last published one, every descriptor is the driver's
        // again: rewritten whole from the record, with the AVAIL/USED bits of the lap it was made
        // available in (the device's wrap counter at that position, 2.8.1).
        var position = (int)resume.AvailIndex;
        var bits = PackedFlags.AvailBits(resume.AvailWrapCounter);
        var count = _publishedPosition - position + ((_publishedWrap ? PackedFlags.Avail : PackedFlags.Used) == bits ? 0 : _size);
        if (count < 0 || count > _size)
        {
            return resume;
        }

        for (var k = 0; k < count; k++)
        {
            var made = _made[position];
            _desc[position] = new PvirtqDesc(made.Addr, made.Len, made.Id, (ushort)(made.Flags | bits));
            if (++position == _size)
            {
                position = 0;
                bits ^= PackedFlags.AvailUsed;
            }
        }

        // Release: the descriptors are whole before the device is told where to resume.
        Interlocked.MemoryBarrier();
        return resume;
    }

    /// <inheritdoc/>
    public RingPosition DevicePosition
    {
        get
        {
            // From the next used descriptor the driver expects, skip over each buffer the device
            // marked used and the driver has not taken, by the driver's own descriptor counts (2.8.6).
            var position = _usedPosition;
            var bits = _usedBits;
            var pending = _inOrder ? Outstanding : 0;
            var orderOffset = 0;
            if (_batchLeft > 0)
            {
                // The rest of a batch being handed back: the device's used position is past all of it.
                for (; orderOffset < _batchLeft; orderOffset++)
                {
                    Skip(_buffers[OutstandingId(orderOffset)].Descriptors, ref position, ref bits);
                }
            }

            // Bounded by the buffers outstanding; each step reads one used descriptor the device wrote.
            var outstanding = Outstanding - orderOffset;
            for (var steps = 0; steps < outstanding; steps++)
            {
                var d = _desc + position;

                // Acquire (2.8.22): the id is read only after the flags say the device wrote it.
                var flags = Volatile.Read(ref d->Flags);
                if ((flags & PackedFlags.AvailUsed) != bits)
                {
                    break;
                }

                var id = d->Id;
                if (id >= (uint)_buffers.Length || _buffers[id].Descriptors == 0)
                {
                    break;
                }

                if (!_inOrder)
                {
                    Skip(_buffers[id].Descriptors, ref position, ref bits);
                    continue;
                }

                // 2.8.8: one used descriptor stands for every buffer up to the one it names.
                var found = false;
                while (orderOffset < pending && !found)
                {
                    var next = OutstandingId(orderOffset++);
                    Skip(_buffers[next].Descriptors, ref position, ref bits);
                    found = next == id;
                }

                if (!found)
                {
                    break;
                }
            }

            var wrap = bits == PackedFlags.AvailUsed;
            return new RingPosition((ushort)position, wrap, (ushort)position, wrap);
        }
    }

    private void Skip(int descriptors, ref int position, ref ushort bits)
    {
        position += descriptors;
        if (position >= _size)
        {
            position -= _size;
            bits ^= PackedFlags.AvailUsed;
        }
    }

    /// <inheritdoc/>
    public int Size => _size;

    /// <inheritdoc/>
    public int FreeDescriptors => _freeDescriptors;

    /// <inheritdoc/>
    public int Outstanding => _size - _freeIdCount; // each outstanding buffer holds one id

    /// <inheritdoc/>
    public bool IsBroken => _broken != BrokenReason.None;

    /// <inheritdoc/>
    public BrokenReason BrokenReason => _broken;

    /// <inheritdoc/>
    public QueueCounters Counters { get; }

    /// <summary>
    /// Where the driver stands: the next descriptor it will make available and the next one it
    /// expects a used descriptor at, each with its wrap counter (diagnostics, NOTIFICATION_DATA).
    /// </summary>
    public RingPosition Position =>
        new((ushort)_availPosition, _availBits == PackedFlags.Avail, (ushort)_usedPosition, _usedBits == PackedFlags.AvailUsed);

    /// <inheritdoc/>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool TryAdd(BufferSegment segment, bool deviceWritable, out ushort id)
    {
        BufferSegment.CheckInside(_memory, segment);
        if (_freeDescriptors == 0 || IsBroken)
        {
            id = 0;
            return false;
        }

        id = TakeId();
        var d = _desc + _availPosition;
        WriteDescriptor(d, segment.Address, segment.Length, id);
        _made[_availPosition] = new PvirtqDesc(segment.Address, segment.Length, id, deviceWritable ? PackedFlags.Write : (ushort)0);
        Expose(d, (ushort)(_availBits | (deviceWritable ? PackedFlags.Write : 0)), 1);
        Track(id, 1, deviceWritable ? segment.Length : 0, deviceWritable ? 0 : segment.Length);
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
            if (_freeDescriptors == 0)
            {
                return false;
            }

            id = TakeId();

            // 2.8.7: the table is read in order; WRITE is its only valid flag, the id is unused.
            var first = (ulong)id * (ulong)_indirectEntries;
            var table = _indirect + first;
            for (var i = 0; i < total; i++)
            {
                var w = i >= readable.Length;
                var s = w ? writable[i - readable.Length] : readable[i];

                // Plain stores of whole entries: the table is published with the ring descriptor naming it.
                table[i] = new PvirtqDesc(s.Address, s.Length, 0, w ? PackedFlags.Write : (ushort)0);
            }

            var d = _desc + _availPosition;
            WriteDescriptor(d, _indirectAddress + (first * RingLayout.DescriptorBytes), (uint)(total * RingLayout.DescriptorBytes), id);
            _made[_availPosition] = new PvirtqDesc(_indirectAddress + (first * RingLayout.DescriptorBytes), (uint)(total * RingLayout.DescriptorBytes), id, PackedFlags.Indirect);
            Expose(d, (ushort)(_availBits | PackedFlags.Indirect), 1);
            Track(id, 1, writeBytes, readBytes);
            return true;
        }

        // 2.8.17: the whole list must fit before its first descriptor is made available.
        if (total > _freeDescriptors)
        {
            return false;
        }

        id = TakeId();
        var head = _desc + _availPosition;
        var headFlags = (ushort)0;
        var position = _availPosition;
        var bits = _availBits;
        for (var i = 0; i < total; i++)
        {
            var w = i >= readable.Length;
            var s = w ? writable[i - readable.Length] : readable[i];
            var d = _desc + position;

            // 2.8.6: every descriptor of the list carries the id and correct AVAIL/USED bits,
            // which flip where the list crosses the end of the ring.
            var flags = (ushort)(bits | (w ? PackedFlags.Write : 0) | (i + 1 < total ? PackedFlags.Next : 0));
            _made[position] = new PvirtqDesc(s.Address, s.Length, id, (ushort)(flags & ~PackedFlags.AvailUsed));
            if (i == 0)
            {
                // The head's flags are held back (Expose): its other fields only.
                WriteDescriptor(d, s.Address, s.Length, id);
                headFlags = flags;
            }
            else
            {
                // Plain store of the whole entry, flags included: nothing here is visible before the
                // burst's first head is (see Publish).
                *d = new PvirtqDesc(s.Address, s.Length, id, flags);
            }

            if (++position == _size)
            {
                position = 0;
                bits ^= PackedFlags.AvailUsed;
            }
        }

        Expose(head, headFlags, total);
        Track(id, total, writeBytes, readBytes);
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

        var n = Math.Min(buffers.Length, _freeDescriptors);
        if (n == 0)
        {
            return 0;
        }

        // In runs that stay inside one lap of the ring, so a run's loop tests no wrap and carries
        // few values (the JIT would otherwise keep them on the stack); its ids from the source
        // this ring uses, each run compiled for its own.
        var added = 0;
        while (added < n)
        {
            var run = buffers.Slice(added, Math.Min(n - added, _size - _availPosition));
            added += _inOrder
                ? AddRun(run, deviceWritable, ids[added..], new SequentialIds(NextSequentialId(), _size))
                : AddRun(run, deviceWritable, ids[added..], new StackIds(_freeIds, _freeIdCount));
        }

        return n;
    }

    /// <summary>
    /// TryAddBurst's loop: makes each of <paramref name="buffers"/> (checked, no more than the free
    /// descriptors and the rest of this lap) available as one direct descriptor with an id from
    /// <paramref name="source"/>, and records it (the descriptor as made, the buffer's record) in
    /// the same pass.
    /// </summary>
    private int AddRun<TIds>(ReadOnlySpan<BufferSegment> buffers, bool deviceWritable, Span<ushort> ids, TIds source)
        where TIds : struct, IIdSource
    {
        var n = buffers.Length;
        if (n < 1 || ids.Length < n || n > _size - _availPosition || n > _freeIdCount)
        {
            throw new ArgumentException("a run holds at least one buffer and at most the rest of the lap and the free ids, with an id for each", nameof(ids));
        }

        var write = deviceWritable ? PackedFlags.Write : (ushort)0;
        var flags = (ushort)(_availBits | write);
        var position = _availPosition;
        var d = _desc + position;
        ref var buffer = ref MemoryMarshal.GetReference(buffers);
        ref var id0 = ref MemoryMarshal.GetReference(ids);

        // The driver's own records, written in the loop that makes the descriptors, from the
        // values already in registers: a second pass over the run would load each buffer and id
        // again (measured: about 7 % of a packed round trip). Unchecked: the run stays in this
        // lap (so position + i is below the size, checked above) and every id comes from the
        // driver's own source (each below the size, the length of both arrays). _made holds
        // the descriptors as made, flags without AVAIL/USED (for PrepareDeviceRestart), written as
        // the ring's are, in two words (PvirtqDesc.LenIdFlags).
        ref var made = ref Unsafe.As<PvirtqDesc, ulong>(ref Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(_made), position));
        ref var records = ref MemoryMarshal.GetArrayDataReference(_buffers);
        var writableMask = deviceWritable ? uint.MaxValue : 0;
        ulong readBytes = 0;
        var i = 0;
        if (_pendingBuffers == 0)
        {
            // The burst's first head: its flags are held back until Publish, which writes them
            // last with release (Expose), so the device sees none of the burst before all of it.
            var id = source.Take();
            d->Addr = buffer.Address;
            d->Len = buffer.Length;
            d->Id = id;
            _pendingHead = d;
            _pendingHeadFlags = flags;
            id0 = id;
            made = buffer.Address;
            Unsafe.Add(ref made, 1) = PvirtqDesc.LenIdFlags(buffer.Length, id, write);
            Unsafe.Add(ref records, id) = new BufferRecord(writableMask & buffer.Length, 1);
            readBytes += ~writableMask & buffer.Length;
            i = 1;
        }

        for (; i < n; i++)
        {
            // Plain stores, the descriptor whole in two (its line is usually on the device's
            // core, and each store waits for it): published by the release store of the burst's
            // first head in Publish (2.8.21.1.1), before which the device reads none of them.
            var segment = Unsafe.Add(ref buffer, i);
            var id = source.Take();
            var words = (ulong*)(d + i);
            words[0] = segment.Address;
            words[1] = PvirtqDesc.LenIdFlags(segment.Length, id, flags);
            Unsafe.Add(ref made, 2 * i) = segment.Address;
            Unsafe.Add(ref made, (2 * i) + 1) = PvirtqDesc.LenIdFlags(segment.Length, id, write);
            Unsafe.Add(ref id0, i) = id;
            Unsafe.Add(ref records, id) = new BufferRecord(writableMask & segment.Length, 1);
            readBytes += ~writableMask & segment.Length;
        }

        position += n;
        if (position == _size)
        {
            // 2.8.1: the driver's wrap counter flips after it makes the ring's last descriptor available.
            position = 0;
            _availBits ^= PackedFlags.AvailUsed;
        }

        _availPosition = position;
        _freeIdCount -= n;
        _freeDescriptors -= n;
        _pendingBuffers += n;
        Counters.Packets += n;
        Counters.Bytes += (long)readBytes;
        return n;
    }

    /// <inheritdoc/>
    public void Publish()
    {
        if (_pendingBuffers == 0)
        {
            return;
        }

        // Release (2.8.21.1.1): every descriptor of the burst, including the later heads' flags,
        // was written above with plain stores; the device sees none of it before this store makes
        // the burst's first head available, and then it sees all of it.
        Volatile.Write(ref _pendingHead->Flags, _pendingHeadFlags);
        Counters.RecordBurst(_pendingBuffers);

        // Descriptors in the burst: never more than the ring, so equal positions mean a whole lap.
        var descriptors = _availPosition - _publishedPosition;
        if (descriptors <= 0)
        {
            descriptors += _size;
        }

        _sinceKick = Math.Min(_sinceKick + descriptors, _size);
        _publishedPosition = _availPosition;
        _publishedWrap = _availBits == PackedFlags.Avail;
        _pendingHead = null;
        _pendingBuffers = 0;
    }

    /// <inheritdoc/>
    public bool KickNeeded()
    {
        var advanced = _sinceKick;
        if (advanced == 0)
        {
            return false;
        }

        _sinceKick = 0;

        // Store-load (2.8.21.3.1): the flags published above must be visible before we read the
        // device's event suppression structure, or both sides can decide the other will act.
        Interlocked.MemoryBarrier();
        var kick = ShouldNotify(new PvirtqEventSuppress(Volatile.Read(ref _deviceEvent->Word)), _eventIndex, _publishedPosition, _publishedWrap, advanced, _size);
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
        if (_freeIdCount == _size || IsBroken)
        {
            return false;
        }

        var d = _desc + _usedPosition;

        // Acquire (2.8.22): id and len are read only after the flags say the device wrote them.
        var flags = Volatile.Read(ref d->Flags);
        if ((flags & PackedFlags.AvailUsed) != _usedBits)
        {
            return false;
        }

        // Each field read once into a local: the device may change it under us. Field by field,
        // not a copy of the whole descriptor: that would read the flags a second time (a value the
        // checks above did not see) and the address, which a used descriptor does not carry.
        // 2.8.4: len is reserved when WRITE is clear (nothing was written).
        var id = d->Id;
        var length = (flags & PackedFlags.Write) != 0 ? d->Len : 0;
        var buffers = _buffers;
        if (id >= (uint)buffers.Length || buffers[id].Descriptors == 0)
        {
            return Break(BrokenReason.UsedIdNotOutstanding);
        }

        if (length > buffers[id].WritableLength)
        {
            return Break(BrokenReason.UsedLengthTooLarge);
        }

        if (_inOrder)
        {
            // 2.8.8: one used descriptor returns every buffer made available up to this one.
            _batchLeft = BatchSize(id);
            _batchLastLength = length;
            return TakeFromBatch(out used);
        }

        Reclaim(id);
        Counters.Bytes += length;
        used = new UsedElement(id, length);
        return true;
    }

    /// <inheritdoc/>
    public int TakeUsed(Span<UsedElement> used)
    {
        if (!_inOrder)
        {
            return TakeUsedOutOfOrder(used);
        }

        var taken = 0;
        var buffers = _buffers;
        while (taken < used.Length)
        {
            if (_batchLeft > 0)
            {
                taken += TakeBatchRun(used[taken..]);
                continue;
            }

            if (_freeIdCount == _size || IsBroken)
            {
                break;
            }

            // Descriptors that each return one buffer (a receive queue's usual case, every buffer
            // with its own length) in one pass; one returning several starts a batch below. The
            // first descriptor's id is only a hint here (the run reads the flags first and checks
            // what it reads), so a transmit queue's batches do not pay for the run's setup.
            if (_desc[_usedPosition].Id == _oldestId)
            {
                taken += TakeInOrderSingles(used[taken..]);
                if (taken == used.Length || _freeIdCount == _size)
                {
                    // Full, or every buffer back: with none outstanding no descriptor is the
                    // device's to have written, and TryTakeUsed reads none (a descriptor made to
                    // look used then breaks neither).
                    break;
                }
            }

            // One pass over the used descriptors: each one's flags read once, with acquire (2.8.22),
            // before its id and len; the pass stops at the first the device has not written.
            var d = _desc + _usedPosition;
            var flags = Volatile.Read(ref d->Flags);
            if ((flags & PackedFlags.AvailUsed) != _usedBits)
            {
                break;
            }

            // Field by field, each read once, as in TryTakeUsed; 2.8.4: len is reserved without WRITE.
            var id = d->Id;
            var length = (flags & PackedFlags.Write) != 0 ? d->Len : 0;
            if (id >= (uint)buffers.Length || buffers[id].Descriptors == 0)
            {
                Break(BrokenReason.UsedIdNotOutstanding);
                break;
            }

            if (length > buffers[id].WritableLength)
            {
                Break(BrokenReason.UsedLengthTooLarge);
                break;
            }

            // 2.8.8: one used descriptor returns every buffer made available up to this one.
            _batchLeft = BatchSize(id);
            _batchLastLength = length;
        }

        return taken;
    }

    /// <summary>
    /// <see cref="TakeUsed"/> without IN_ORDER: TryTakeUsed's checks and Reclaim's work with the
    /// positions in locals (stores into the caller's span would otherwise make the JIT reload the
    /// fields after each one).
    /// </summary>
    private int TakeUsedOutOfOrder(Span<UsedElement> used)
    {
        if (IsBroken)
        {
            return 0;
        }

        var buffers = _buffers;
        var freeIds = _freeIds;
        var position = _usedPosition;
        var bits = _usedBits;
        var freeIdCount = _freeIdCount;
        var freeDescriptors = _freeDescriptors;
        var size = _size;
        var reason = BrokenReason.None;
        var taken = 0;
        long bytes = 0;
        while (taken < used.Length && freeIdCount != size)
        {
            // One pass over the used descriptors: each one's flags read once, with acquire (2.8.22),
            // before its id and len; the pass stops at the first the device has not written.
            var d = _desc + position;
            var flags = Volatile.Read(ref d->Flags);
            if ((flags & PackedFlags.AvailUsed) != bits)
            {
                break;
            }

            // Field by field, each read once; 2.8.4: len is reserved without WRITE.
            var id = d->Id;
            var length = (flags & PackedFlags.Write) != 0 ? d->Len : 0;
            if (id >= (uint)buffers.Length || buffers[id].Descriptors == 0)
            {
                reason = BrokenReason.UsedIdNotOutstanding;
                break;
            }

            ref var record = ref buffers[id];
            if (length > record.WritableLength)
            {
                reason = BrokenReason.UsedLengthTooLarge;
                break;
            }

            // Reclaim: skip the used position over the buffer's descriptors, by our own count (2.8.6).
            // A branch on the common one-descriptor buffer, not an add of the count: the next
            // used descriptor's address would otherwise wait for this one's id and record to
            // load (three loads in series per buffer); predicted, the next loads start at once.
            int count = record.Descriptors;
            record.Descriptors = 0;
            if (count == 1)
            {
                if (++position == size)
                {
                    position = 0;
                    bits ^= PackedFlags.AvailUsed;
                }
            }
            else
            {
                SkipUsed(ref position, ref bits, count, size);
            }

            freeIds[freeIdCount++] = id;
            freeDescriptors += count;
            bytes += length;
            used[taken++] = new UsedElement(id, length);
        }

        _usedPosition = position;
        _usedBits = bits;
        _freeIdCount = freeIdCount;
        _freeDescriptors = freeDescriptors;
        Counters.Bytes += bytes;
        if (reason != BrokenReason.None)
        {
            Break(reason);
        }

        return taken;
    }

    /// <inheritdoc/>
    public bool EnableUsedNotifications()
    {
        _callsDisabled = false;
        if (_eventIndex)
        {
            // 2.8.10: ask for a call when the device marks used the descriptor we look at next.
            // One 32-bit store so the device never sees DESC with a stale offset.
            var offWrap = PackedEventIndex.OffWrap(_usedPosition, _usedBits == PackedFlags.AvailUsed);
            Volatile.Write(ref _driverEvent->Word, new PvirtqEventSuppress(offWrap, PackedFlags.EventDesc).Word);
        }
        else
        {
            Volatile.Write(ref _driverEvent->Flags, PackedFlags.EventEnable);
        }

        // Store-load: the request must be visible before we look at the ring again, or the device
        // may mark a descriptor used and skip the call while we go to sleep on an empty-looking ring.
        Interlocked.MemoryBarrier();
        return _batchLeft > 0 || (_freeIdCount < _size && IsUsed(_desc + _usedPosition));
    }

    /// <inheritdoc/>
    public void DisableUsedNotifications()
    {
        if (_callsDisabled)
        {
            return;
        }

        _callsDisabled = true;
        Volatile.Write(ref _driverEvent->Flags, PackedFlags.EventDisable);
    }

    /// <inheritdoc/>
    public void Reset()
    {
        // Ids go out in ascending order from a fresh stack (or in sequence, under IN_ORDER): 0 first.
        for (var i = 0; i < _size; i++)
        {
            if (!_inOrder)
            {
                _freeIds[i] = (ushort)(_size - 1 - i);
            }

            _buffers[i] = default;
        }

        _oldestId = 0;
        _freeIdCount = _size;
        _freeDescriptors = _size;

        // 2.8.1: both wrap counters start at 1.
        _availPosition = _publishedPosition = _usedPosition = 0;
        _availBits = PackedFlags.AvailBits(true);
        _usedBits = PackedFlags.UsedBits(true);
        _publishedWrap = true;
        _pendingHead = null;
        _pendingHeadFlags = 0;
        _pendingBuffers = _sinceKick = 0;
        _batchLeft = 0;
        _batchLastLength = 0;
        _callsDisabled = false;
        _broken = BrokenReason.None;

        // 2.8.13: the descriptor ring is zero-initialized.
        new Span<PvirtqDesc>(_desc, _size).Clear();
        *_driverEvent = default;
        *_deviceEvent = default;
    }

    /// <summary>
    /// The notification decision shared by both sides of a packed ring: DISABLE never, DESC (under
    /// EVENT_IDX) when the window crossed the named descriptor, anything else (ENABLE, and the
    /// reserved or un-negotiated values, where a spare notification is the safe answer) always.
    /// </summary>
    /// <param name="snapshot">The peer's event suppression structure, read as one 32-bit word.</param>
    /// <param name="eventIndex">Whether VIRTIO_F_EVENT_IDX was negotiated.</param>
    /// <param name="position">Position just published.</param>
    /// <param name="wrap">Its wrap counter.</param>
    /// <param name="advanced">Descriptors published since the previous decision.</param>
    /// <param name="size">Queue size.</param>
    /// <returns>True when the peer is to be notified.</returns>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static bool ShouldNotify(PvirtqEventSuppress snapshot, bool eventIndex, int position, bool wrap, int advanced, int size)
    {
        var flags = snapshot.Flags & PackedFlags.EventFlagsMask;
        if (flags == PackedFlags.EventDisable)
        {
            return false;
        }

        return flags != PackedFlags.EventDesc || !eventIndex
            || PackedEventIndex.NeedsNotification(snapshot.OffWrap, position, wrap, advanced, size);
    }

    /// <summary>
    /// Writes a descriptor's address, length and id, not its flags: the flags make it available
    /// and are written apart (held back for the burst's first head, see <see cref="Expose"/>).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void WriteDescriptor(PvirtqDesc* d, ulong address, uint length, ushort id)
    {
        d->Addr = address;
        d->Len = length;
        d->Id = id;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool IsUsed(PvirtqDesc* d) => (Volatile.Read(ref d->Flags) & PackedFlags.AvailUsed) == _usedBits;

    /// <summary>Writes a buffer's head flags, or holds them back when it opens a burst; moves the avail position.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void Expose(PvirtqDesc* head, ushort flags, int descriptors)
    {
        if (_pendingBuffers == 0)
        {
            _pendingHead = head;
            _pendingHeadFlags = flags;
        }
        else
        {
            // Plain store: published by the release store of the burst's first head in Publish.
            head->Flags = flags;
        }

        _pendingBuffers++;
        var position = _availPosition + descriptors;
        if (position >= _size)
        {
            // 2.8.1: the driver's wrap counter flips after it makes the ring's last descriptor available.
            position -= _size;
            _availBits ^= PackedFlags.AvailUsed;
        }

        _availPosition = position;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void Track(ushort id, int descriptors, uint writable, ulong readBytes)
    {
        _buffers[id] = new BufferRecord(writable, (ushort)descriptors);
        _freeDescriptors -= descriptors;

        Counters.Packets++;
        Counters.Bytes += (long)readBytes;
    }

    /// <summary>Hands back the oldest buffer of the current IN_ORDER batch.</summary>
    private bool TakeFromBatch(out UsedElement used)
    {
        used = default;
        return TakeBatchRun(new Span<UsedElement>(ref used)) == 1;
    }

    /// <summary>
    /// Hands back as many buffers of the current IN_ORDER batch as <paramref name="used"/> holds,
    /// oldest first (TryTakeUsed takes them one at a time through it), as <see cref="Reclaim"/>
    /// frees them but with the positions and counts in locals: the stores into the caller's span
    /// and the records could alias the fields as far as the JIT knows, and it would store and
    /// reload each one per buffer.
    /// </summary>
    private int TakeBatchRun(Span<UsedElement> used)
    {
        var n = Math.Min(_batchLeft, used.Length);
        var records = _buffers;
        var position = _usedPosition;
        var bits = _usedBits;
        var size = _size;
        var id = _oldestId;

        // Bounds once, not per buffer: the n ids are the oldest outstanding, in sequence from the
        // oldest (below the size, the records' length) and wrapping at the size. The used span
        // holds n. None of it was read from shared memory.
        if (n < 1 || n > size - _freeIdCount || (uint)id >= (uint)records.Length || records.Length != size)
        {
            throw new InvalidOperationException($"the driver's IN_ORDER records disagree: a batch of {n} from id {id}, {_freeIdCount} of {size} ids free");
        }

        ref var record0 = ref MemoryMarshal.GetArrayDataReference(records);
        ref var element = ref MemoryMarshal.GetReference(used);
        var freed = 0;
        long bytes = 0;
        for (var i = 0; i < n; i++)
        {
            // 2.8.8: the buffers skipped over were used completely (the batch's last one is
            // given its own length after the loop, so the loop has no test for it).
            ref var record = ref Unsafe.Add(ref record0, id);
            var length = record.WritableLength;
            freed += record.Descriptors;
            record.Descriptors = 0;
            bytes += length;
            Unsafe.Add(ref element, i) = new UsedElement((ushort)id, length);
            if (++id == size)
            {
                id = 0;
            }
        }

        // The used position skips the run's descriptors at once, by our own counts (2.8.6): they
        // were all outstanding, so at most a lap, and the position wraps at most once.
        SkipUsed(ref position, ref bits, freed, size);

        if (n == _batchLeft)
        {
            bytes += InOrderQueue.EndBatch(ref Unsafe.Add(ref element, n - 1), _batchLastLength);
        }

        EndInOrderRun(n, id, position, bits, freed, bytes);
        _batchLeft -= n;
        return n;
    }

    /// <summary>
    /// IN_ORDER: takes the used descriptors that each name the oldest buffer still out, so that
    /// each returns that buffer alone (2.8.8: a batch ends at the buffer its descriptor names) with
    /// the length it carries; stops at the first the device has not written, one naming a later
    /// buffer (a batch of several, which TakeUsed starts) or one whose length the buffer cannot
    /// hold (which TakeUsed then refuses). Each descriptor's flags are read once with acquire
    /// (2.8.22) before its id and len, each read once; the positions and the oldest id stay in
    /// locals, as in <see cref="TakeBatchRun"/>.
    /// </summary>
    /// <returns>The buffers taken.</returns>
    private int TakeInOrderSingles(Span<UsedElement> used)
    {
        var n = Math.Min(used.Length, Outstanding);
        var records = _buffers;
        var position = _usedPosition;
        var bits = _usedBits;
        var size = _size;
        var id = _oldestId;
        var freed = 0;
        long bytes = 0;
        var i = 0;
        for (; i < n; i++)
        {
            var d = _desc + position;
            var flags = Volatile.Read(ref d->Flags);
            if ((flags & PackedFlags.AvailUsed) != bits)
            {
                break;
            }

            if (d->Id != id)
            {
                break;
            }

            // 2.8.4: len is reserved without WRITE.
            var length = (flags & PackedFlags.Write) != 0 ? d->Len : 0;
            ref var record = ref records[id];
            if (length > record.WritableLength)
            {
                break;
            }

            int count = record.Descriptors;
            record.Descriptors = 0;
            SkipUsed(ref position, ref bits, count, size);
            freed += count;
            bytes += length;
            used[i] = new UsedElement((ushort)id, length);
            if (++id == size)
            {
                id = 0;
            }
        }

        EndInOrderRun(i, id, position, bits, freed, bytes);
        return i;
    }

    /// <summary>
    /// Writes back what an IN_ORDER run (<see cref="TakeBatchRun"/>, <see cref="TakeInOrderSingles"/>)
    /// kept in locals: the buffers no longer out and the oldest id still out, the used position and
    /// its wrap bits, the counts.
    /// </summary>
    private void EndInOrderRun(int buffers, int oldestId, int position, ushort bits, int freed, long bytes)
    {
        _oldestId = oldestId;
        _freeIdCount += buffers;
        _usedPosition = position;
        _usedBits = bits;
        _freeDescriptors += freed;
        Counters.Bytes += bytes;
    }

    /// <summary>
    /// Takes an id for a buffer made available. Without IN_ORDER from the free-id stack, so the
    /// device may return buffers in any order. Under IN_ORDER in sequence, wrapping at the size:
    /// the device returns buffers in the order they were made available (2.8.8), so the ids out
    /// are always the <see cref="Outstanding"/> ones from the oldest, and the rest are free. A
    /// batch's size is then the distance between two ids, and a take frees an id with no store:
    /// no order queue, no free stack.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ushort TakeId()
    {
        if (!_inOrder)
        {
            return _freeIds[--_freeIdCount];
        }

        var id = NextSequentialId();
        _freeIdCount--;
        return (ushort)id;
    }

    /// <summary>IN_ORDER: the id the next buffer gets, the one after the newest outstanding.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private int NextSequentialId() => OutstandingId(Outstanding);

    /// <summary>IN_ORDER: the id of the outstanding buffer <paramref name="offset"/> places after the oldest.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private int OutstandingId(int offset)
    {
        var id = _oldestId + offset;
        return id >= _size ? id - _size : id;
    }

    /// <summary>
    /// IN_ORDER: buffers one used descriptor naming <paramref name="lastId"/> returns (2.8.8), the
    /// oldest outstanding up to that one. The caller has checked that <paramref name="lastId"/> is
    /// outstanding, so it lies in the sequence from the oldest.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private int BatchSize(int lastId)
    {
        var distance = lastId - _oldestId;
        return (distance < 0 ? distance + _size : distance) + 1;
    }

    /// <summary>An id source for <see cref="AddRun"/>, held in the run's locals.</summary>
    private interface IIdSource
    {
        /// <summary>The next free id.</summary>
        ushort Take();
    }

    /// <summary>Without IN_ORDER: ids from the top of the free-id stack.</summary>
    private struct StackIds(ushort[] ids, int count) : IIdSource
    {
        private int _count = count;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public ushort Take() => ids[--_count];
    }

    /// <summary>Under IN_ORDER: ids in sequence, wrapping at the size (see <see cref="TakeId"/>).</summary>
    private struct SequentialIds(int next, int size) : IIdSource
    {
        private int _next = next;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public ushort Take()
        {
            var id = _next;
            if (++_next == size)
            {
                _next = 0;
            }

            return (ushort)id;
        }
    }

    /// <summary>
    /// Without IN_ORDER: frees buffer <paramref name="id"/> (forgets its record, pushes the id on
    /// the free-id stack) and skips the used position over its descriptors, by our own count (2.8.6).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void Reclaim(ushort id)
    {
        ref var record = ref _buffers[id];
        int count = record.Descriptors;
        record.Descriptors = 0;
        SkipUsed(ref _usedPosition, ref _usedBits, count, _size);
        _freeIds[_freeIdCount++] = id;
        _freeDescriptors += count;
    }

    /// <summary>
    /// Skips a used position over a buffer's <paramref name="count"/> descriptors, by the driver's
    /// own count (2.8.6), flipping the wrap bits when it passes the ring's end (2.8.1).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void SkipUsed(ref int position, ref ushort bits, int count, int size)
    {
        position += count;
        if (position >= size)
        {
            position -= size;
            bits ^= PackedFlags.AvailUsed;
        }
    }

    /// <summary>What the driver remembers of a buffer it made available; never read back from the ring.</summary>
    /// <param name="WritableLength">Device-writable bytes.</param>
    /// <param name="Descriptors">Ring descriptors the buffer holds; 0 = not outstanding.</param>
    private record struct BufferRecord(uint WritableLength, ushort Descriptors);

    private bool Break(BrokenReason reason) => Counters.Break(ref _broken, reason);
}
