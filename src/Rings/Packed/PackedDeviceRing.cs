using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Rings.Chains;
using Rings.Memory;

namespace Rings.Packed;

/// <summary>
/// The device (host) side of a packed virtqueue (virtio 1.2 section 2.8). All ring memory is
/// treated as written by an enemy: each descriptor is detected by its flags against the device's
/// wrap counter, every field is read once, chains are bounded by the queue size and by the
/// descriptors still in flight, every buffer is translated through the memory table, and a
/// violation marks the queue broken with a reason instead of throwing.
/// </summary>
public sealed unsafe class PackedDeviceRing : IDeviceRing
{
    private readonly GuestMemory _memory;
    private readonly PvirtqDesc* _desc;
    private readonly PvirtqEventSuppress* _driverEvent;   // written by the driver: our calls
    private readonly PvirtqEventSuppress* _deviceEvent;   // written by us: the driver's kicks
    private readonly int _size;
    private readonly bool _eventIndex;
    private readonly bool _indirectAllowed;
    private readonly bool _inOrder;
    private readonly ChainSegment[] _segments;
    private readonly ulong[] _idRecords;   // per buffer id while in flight: its descriptors and readable bytes (see Record); 0 = not in flight
    private readonly ushort[] _runIds = new ushort[MaxDirectRun];   // PopDirectRun's ids, for its bookkeeping after the loop
    private readonly ushort[] _popLogIds;  // ids of the latest pops in pop order, for UndoPops and (see PushUsedInOrderBatch) IN_ORDER
    private int _popLogNext;
    private int _buffersInFlight;          // buffers popped and not yet returned

    private int _availPosition;            // next descriptor to read
    private ushort _availBits;             // AVAIL/USED bits of an available descriptor this lap
    private int _inFlight;                 // descriptors popped and not yet covered by a used descriptor
    private int _usedPosition;             // next descriptor to write a used descriptor to
    private ushort _usedBits;              // AVAIL/USED bits of a used descriptor this lap
    private PvirtqDesc* _pendingUsed;      // first used descriptor of the unpublished burst: flags held back
    private ushort _pendingUsedFlags;
    private int _pendingChains;
    private int _publishedPosition;        // used position as last published
    private bool _publishedWrap;
    private int _sinceCall;                // descriptors published since the last call decision (EVENT_IDX window)
    private bool _kicksDisabled;
    private BrokenReason _broken;

    /// <summary>Creates the device side over a ring the driver laid out in <paramref name="memory"/>.</summary>
    /// <param name="memory">The memory table: ring parts and every buffer address are translated through it.</param>
    /// <param name="areas">Guest-physical addresses of the descriptor ring and the driver and device event suppression structures.</param>
    /// <param name="size">Queue size, from 1 to 32768.</param>
    /// <param name="features">Negotiated features; the ring uses INDIRECT_DESC, EVENT_IDX and IN_ORDER.</param>
    /// <exception cref="ArgumentException">A part is misaligned or outside the memory table, or the size is not a packed queue size.</exception>
    public PackedDeviceRing(GuestMemory memory, RingAreas areas, int size, VirtioFeatures features)
        : this(memory, memory, areas, size, features)
    {
    }

    /// <summary>
    /// Creates the device side when ring addresses and buffer addresses are translated differently
    /// (vhost-user gives ring addresses in the frontend's virtual addresses, buffers in guest-physical ones).
    /// </summary>
    /// <param name="ringMemory">Table that translates the ring part addresses.</param>
    /// <param name="bufferMemory">Table that translates descriptor addresses.</param>
    /// <param name="areas">Addresses of the descriptor ring and the event suppression structures, in <paramref name="ringMemory"/>'s space.</param>
    /// <param name="size">Queue size, from 1 to 32768.</param>
    /// <param name="features">Negotiated features; the ring uses INDIRECT_DESC, EVENT_IDX and IN_ORDER.</param>
    /// <exception cref="ArgumentException">A part is misaligned or outside the memory table, or the size is not a packed queue size.</exception>
    public PackedDeviceRing(GuestMemory ringMemory, GuestMemory bufferMemory, RingAreas areas, int size, VirtioFeatures features)
    {
        ArgumentNullException.ThrowIfNull(bufferMemory);
        var ring = new PackedRingMemory(ringMemory, areas, RingFormat.Packed.Layout(size));
        _memory = bufferMemory;
        _desc = ring.Descriptors;
        _driverEvent = ring.DriverEvent;
        _deviceEvent = ring.DeviceEvent;
        _size = size;
        Features = features;
        _eventIndex = (features & VirtioFeatures.EventIndex) != 0;
        _indirectAllowed = (features & VirtioFeatures.IndirectDescriptors) != 0;
        _inOrder = (features & VirtioFeatures.InOrder) != 0;
        _segments = new ChainSegment[size];
        _idRecords = new ulong[size];
        _popLogIds = new ushort[size];

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

    /// <summary>Descriptors popped and not yet returned used.</summary>
    public int DescriptorsInFlight => _inFlight;

    /// <inheritdoc/>
    /// <remarks>
    /// Both positions with their wrap counters. The used position counts every used descriptor
    /// pushed, so publish before reading it when the ring is being stopped.
    /// </remarks>
    public RingPosition Position =>
        new((ushort)_availPosition, _availBits == PackedFlags.Avail, (ushort)_usedPosition, _usedBits == PackedFlags.AvailUsed);

    /// <inheritdoc/>
    public bool InOrder => _inOrder;

    /// <inheritdoc/>
    public bool HasAvailable
    {
        get
        {
            // Acquire, as in TryPop: the flags are what the driver writes last.
            var flags = Volatile.Read(ref _desc[_availPosition].Flags);
            return !IsBroken && (flags & PackedFlags.AvailUsed) == _availBits;
        }
    }

    /// <inheritdoc/>
    public void UndoNewestPops(int buffers)
    {
        // The descriptors those buffers took, from the pop log (each took at least one, so no
        // more buffers than descriptors in flight), then the position that many back on the line
        // of two laps (the first lap's wrap counter is set).
        ArgumentOutOfRangeException.ThrowIfNegative(buffers);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(buffers, _inFlight);
        var descriptors = 0;
        var at = _popLogNext;
        for (var i = 0; i < buffers; i++)
        {
            at = at == 0 ? _popLogIds.Length - 1 : at - 1;
            descriptors += Descriptors(InFlightRecord(_popLogIds[at]));
        }

        ArgumentOutOfRangeException.ThrowIfGreaterThan(descriptors, _inFlight, nameof(buffers));
        var line = _availPosition + (_availBits == PackedFlags.Avail ? 0 : _size) - descriptors;
        if (line < 0)
        {
            line += 2 * _size;
        }

        UndoPops(new RingPosition((ushort)(line % _size), line < _size, (ushort)_usedPosition, _usedBits == PackedFlags.AvailUsed));
    }

    /// <inheritdoc/>
    public void UndoPops(RingPosition before)
    {
        // Descriptors popped since 'before', on a line of two laps (the wrap counter picks the lap).
        var from = before.AvailIndex + (before.AvailWrapCounter ? 0 : _size);
        var to = _availPosition + (_availBits == PackedFlags.Avail ? 0 : _size);
        var undo = to - from;
        if (undo < 0)
        {
            undo += 2 * _size;
        }

        if (before.AvailIndex >= _size || undo > _inFlight)
        {
            throw new ArgumentException("the position is not one read before the pops being undone", nameof(before));
        }

        // The pops since 'before' are the pop log's newest, each still in flight, and their
        // descriptors add up to the distance: checked before anything changes.
        var at = _popLogNext;
        var left = undo;
        while (left > 0)
        {
            at = at == 0 ? _popLogIds.Length - 1 : at - 1;
            left -= Descriptors(InFlightRecord(_popLogIds[at]));
        }

        if (left != 0)
        {
            throw new ArgumentException("the position is not one read before a pop", nameof(before));
        }

        // Walk the pop log back, freeing each buffer id; the descriptors stay the driver's and
        // are popped (and validated) again.
        while (undo > 0)
        {
            _popLogNext = _popLogNext == 0 ? _popLogIds.Length - 1 : _popLogNext - 1;
            var id = _popLogIds[_popLogNext];
            var record = _idRecords[id];
            var descriptors = Descriptors(record);
            _idRecords[id] = 0;

            // Its readable bytes were counted when it was popped; it is popped (and counted) again.
            Counters.Bytes -= ReadBytes(record);
            _buffersInFlight--;
            _inFlight -= descriptors;
            undo -= descriptors;
        }

        _availPosition = before.AvailIndex;
        _availBits = PackedFlags.AvailBits(before.AvailWrapCounter);
    }

    /// <inheritdoc/>
    public void MarkBroken(BrokenReason reason) => Break(reason);

    /// <inheritdoc/>
    public bool TryPop(out DescriptorChain chain)
    {
        var d = _desc + _availPosition;

        // Acquire (2.8.21.1): the driver writes these flags last; the descriptor's other fields,
        // the rest of its list and the rest of its burst are read only after we see them.
        var flags = Volatile.Read(ref d->Flags);
        if ((flags & PackedFlags.AvailUsed) != _availBits || IsBroken)
        {
            chain = default;
            return false;
        }

        if ((flags & (PackedFlags.Next | PackedFlags.Indirect)) != 0 || _inFlight >= _size)
        {
            return TryPopList(d, flags, out chain);
        }

        // One direct descriptor, the common case: each field read once, after the acquire. Field
        // by field, not a copy of the whole descriptor, which would read the flags a second time
        // (a value the checks above did not see).
        var address = d->Addr;
        var length = d->Len;
        var id = d->Id;
        if (length > int.MaxValue || !_memory.TryTranslate(address, length, out var host))
        {
            chain = default;
            return Break(BrokenReason.AddressOutOfRange);
        }

        var writable = (flags & PackedFlags.Write) != 0;
        if (!Commit(id, 1, writable ? 0 : length))
        {
            chain = default;
            return false;
        }

        // The scratch array holds the queue size (at least 1) segments: no bounds check needed.
        ref var segment = ref MemoryMarshal.GetArrayDataReference(_segments);
        segment = new ChainSegment(host, length, writable);
        var readBytes = writable ? 0 : length;
        Counters.Bytes += readBytes;
        chain = new DescriptorChain(MemoryMarshal.CreateReadOnlySpan(ref segment, 1), writable ? 0 : 1, readBytes, writable ? length : 0, new ChainToken(id, 1));
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
        var popped = 0;
        var used = 0;
        long bytes = 0;
        while (popped < chains.Length && !IsBroken)
        {
            // Direct descriptors, the common case, in runs: a run stays inside this lap of the
            // ring, the caller's spans and what the device may still hold (each holds one
            // descriptor), so its bounds are known before it starts.
            var room = Math.Min(Math.Min(chains.Length - popped, segments.Length - used), Math.Min(_size - _inFlight, _size - _availPosition));
            ushort flags;
            if (room > 0)
            {
                var bound = Math.Min(room, MaxDirectRun);
                var run = PopDirectRun<TRecord, TRecords>(chains.Slice(popped, bound), segments[used..], used, out var runBytes, out var reason, out flags);
                popped += run;
                used += run;
                bytes += runBytes;
                if (reason != BrokenReason.None)
                {
                    Break(reason);
                    break;
                }

                if (run == bound)
                {
                    // The run ended at a bound, not at a descriptor: the next one (in the next lap,
                    // or past a full run) is read by the next round.
                    continue;
                }
            }
            else if (used == segments.Length)
            {
                break;
            }
            else
            {
                // The device holds the whole ring: this head's flags are read here, once, with
                // acquire as in the run; the general walk finds the overrun, if it is one.
                flags = Volatile.Read(ref _desc[_availPosition].Flags);
            }

            // The run stopped at a descriptor, whose flags (acquired there) say why: not made
            // available, or a list or an indirect table, or a buffer outside the memory table's
            // largest region, which the general walk takes from those flags (never fetched twice).
            if ((flags & PackedFlags.AvailUsed) != _availBits)
            {
                break;
            }

            var taken = PopWalked<TRecord, TRecords>(flags, ref chains[popped], segments[used..], used);
            if (taken == 0)
            {
                break;
            }

            used += taken;
            popped++;
        }

        Counters.Bytes += bytes;
        return popped;
    }

    /// <summary>Most direct descriptors one <see cref="PopDirectRun"/> takes (the size of its id scratch).</summary>
    private const int MaxDirectRun = 64;

    /// <summary>
    /// PopBurst's common case, apart so its loop has the registers to itself: pops the direct
    /// descriptors from the avail position, at most <paramref name="chains"/>' length (which the
    /// caller keeps inside this lap, its segments and what the device may still hold), with
    /// TryPop's and Commit's checks, and records them as Commit would.
    /// </summary>
    /// <param name="chains">Where the chains go, one per descriptor; its length is the run's bound.</param>
    /// <param name="segments">Where the segments go, one per descriptor; at least as long as <paramref name="chains"/>.</param>
    /// <param name="firstSegment">Where <paramref name="segments"/> begins in the caller's span.</param>
    /// <param name="bytes">The readable bytes popped.</param>
    /// <param name="reason">Why the queue breaks at the descriptor the run stopped at, or None.</param>
    /// <param name="flags">The flags of the descriptor the run stopped at (read with acquire), when it
    /// stopped before its bound for a reason other than a break (a descriptor not available, a list,
    /// an indirect table, or a buffer outside the memory table's largest region).</param>
    /// <returns>The descriptors popped.</returns>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private int PopDirectRun<TRecord, TRecords>(Span<TRecord> chains, Span<ChainSegment> segments, int firstSegment, out long bytes, out BrokenReason reason, out ushort flags)
        where TRecord : struct
        where TRecords : struct, IPopRecords<TRecord>
    {
        // The caller's spans by reference, checked once here so the loop carries no lengths (each
        // span would otherwise hold two registers and a bounds check per store).
        if (segments.Length < chains.Length || chains.Length > MaxDirectRun)
        {
            throw new ArgumentException("a run's segments must be at least as many as its chains, and at most MaxDirectRun", nameof(chains));
        }

        // The ids popped, for the bookkeeping after the loop: kept in the device's own scratch
        // rather than read back from the caller's span, which the device does not trust.
        Span<ushort> ids = _runIds;
        var position = _availPosition;
        var bits = _availBits;
        var d = _desc + position;
        var memory = _memory;
        var idRecords = _idRecords;

        // Where the ring stood before each buffer, for a caller that gives the burst's tail back:
        // the run stays in one lap, so only the avail index moves, one per buffer.
        var before = new RingPosition((ushort)position, bits == PackedFlags.Avail, (ushort)_usedPosition, _usedBits == PackedFlags.AvailUsed).Value;
        long read = 0;
        var stop = BrokenReason.None;
        ushort stopFlags = 0;
        ref var chain = ref MemoryMarshal.GetReference(chains);
        ref var segment = ref MemoryMarshal.GetReference(segments);
        ref var scratch = ref MemoryMarshal.GetReference(ids);
        // The three outputs walk with the descriptor, each by its own reference, rather than one
        // index scaled three ways: fewer live values, so the loop keeps more of them in registers.
        var start = d;
        var end = d + chains.Length;
        var index = firstSegment;
        var positionDelta = before - (uint)firstSegment;
        for (; d < end; d++, index++, chain = ref Unsafe.Add(ref chain, 1), segment = ref Unsafe.Add(ref segment, 1), scratch = ref Unsafe.Add(ref scratch, 1))
        {
            // Acquire (2.8.21.1): the descriptor's other fields only after its flags. One test
            // covers both reasons to stop here: not available this lap, or a list or an indirect
            // table (the caller tells them apart from the flags).
            var f = Volatile.Read(ref d->Flags);
            if ((f & (PackedFlags.AvailUsed | PackedFlags.Next | PackedFlags.Indirect)) != bits)
            {
                stopFlags = f;
                break;
            }

            // Each field read once, after the acquire; not a copy of the whole descriptor, which
            // would read the flags a second time.
            var address = d->Addr;
            var length = d->Len;
            var id = d->Id;
            if (length > int.MaxValue)
            {
                stop = BrokenReason.AddressOutOfRange;
                break;
            }

            // The largest region only: a buffer elsewhere (or nowhere) ends the run here, and the
            // caller's general walk translates it against the whole table (and breaks the queue
            // when it lies outside).
            if (!memory.TryTranslateCommon(address, length, out var host))
            {
                stopFlags = f;
                break;
            }

            // 2.8.6: the id must name a buffer not already in flight.
            if (id >= (uint)idRecords.Length || idRecords[id] != 0)
            {
                stop = BrokenReason.BufferIdInvalid;
                break;
            }

            var writable = (f & PackedFlags.Write) != 0;
            var readBytes = writable ? 0UL : length;
            idRecords[id] = Record(1, readBytes);
            scratch = id;
            segment = new ChainSegment(host, length, writable);
            chain = TRecords.Direct(new ChainToken(id, 1), index, length, writable, new RingPosition(positionDelta + (uint)index));
            read += (long)readBytes;
        }

        var n = (int)(d - start);

        // The rest of Commit's record, for the run at once: the pop log, a copy of the run's ids
        // (two where the log wraps) rather than a store per buffer.
        _popLogNext = CircularArray.Write(_popLogIds, _popLogNext, ids[..n]);
        _buffersInFlight += n;

        position += n;
        if (position == _size)
        {
            position = 0;
            _availBits = (ushort)(bits ^ PackedFlags.AvailUsed);
        }

        _availPosition = position;
        _inFlight += n;
        bytes = read;
        reason = stop;
        flags = stopFlags;
        return n;
    }

    /// <summary>
    /// PopBurst's general case, apart so the burst loop keeps a small frame: walks the list (or
    /// indirect table) whose head is at the avail position, with the head's <paramref name="flags"/>
    /// as acquired, and when it is valid and fits, commits it and copies its segments to the start
    /// of <paramref name="free"/> (the caller's segments not yet used), numbering them from where
    /// that span begins in the caller's.
    /// </summary>
    /// <returns>The segments taken; 0 when the list broke the queue, does not fit, or (for a pop of
    /// single segments) has more than one: then it stays available. Counts come back as a value, not through refs: a local whose address is taken
    /// lives in memory for the whole burst loop.</returns>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private int PopWalked<TRecord, TRecords>(ushort flags, ref TRecord chain, Span<ChainSegment> free, int firstSegment)
        where TRecord : struct
        where TRecords : struct, IPopRecords<TRecord>
    {
        var before = Position;
        var reason = Walk(_desc + _availPosition, flags, out var count, out var readable, out var readBytes, out var writeBytes, out var descriptors, out var id);
        if (reason != BrokenReason.None)
        {
            Break(reason);
            return 0;
        }

        if (TRecords.SingleSegmentOnly && count != 1)
        {
            // Several segments: it stays available, to be walked again. Its id is checked as a pop
            // of it would (2.8.6), so a list that breaks the queue breaks it here too, as it does
            // on the split ring, whose walk checks everything.
            if (!IdFree(id))
            {
                Break(BrokenReason.BufferIdInvalid);
            }

            return 0;
        }

        if (count > free.Length || !Commit(id, descriptors, readBytes))
        {
            // Does not fit (it stays available, to be walked again), or the id broke the queue.
            return 0;
        }

        _segments.AsSpan(0, count).CopyTo(free);
        chain = TRecords.Walked(new ChainToken(id, (ushort)descriptors), firstSegment, count, readable, readBytes, writeBytes, before);
        Counters.Bytes += (long)readBytes;
        return count;
    }

    /// <inheritdoc/>
    public void PushUsedBurst(ReadOnlySpan<ChainToken> tokens, ReadOnlySpan<uint> written)
    {
        ChainToken.CheckWritten(tokens, written);
        if (tokens.IsEmpty)
        {
            return;
        }

        // PushUsed's work with the positions in locals: the stores into the ring below would
        // otherwise make the JIT reload every field after each one.
        var idRecords = _idRecords;
        var position = _usedPosition;
        var bits = _usedBits;
        var descriptors = 0;
        long bytes = 0;
        var first = _pendingUsed == null;
        for (var i = 0; i < tokens.Length; i++)
        {
            var token = tokens[i];
            var w = written.IsEmpty ? 0 : written[i];
            Debug.Assert(token.Id < _size && idRecords[token.Id] != 0, "the token names a buffer in flight");
            Debug.Assert(!_inOrder || OldestInFlight(i) == token.Id, "IN_ORDER: buffers are returned in the order they were popped");
            idRecords[token.Id] = 0;

            // 2.8.3, 2.8.4: WRITE says whether anything was written, and len how much.
            var d = _desc + position;
            var flags = (ushort)(bits | (w != 0 ? PackedFlags.Write : 0));
            if (first)
            {
                d->Len = w;
                d->Id = token.Id;
                _pendingUsed = d;
                _pendingUsedFlags = flags;
                first = false;
            }
            else
            {
                // Plain store of len, id and flags at once (the line is usually on the driver's
                // core, and each store waits for it): published by the release store of the
                // burst's first flags in PublishUsed (2.8.22).
                ((ulong*)d)[1] = PvirtqDesc.LenIdFlags(w, token.Id, flags);
            }

            descriptors += token.DescriptorCount;
            bytes += w;
            position += token.DescriptorCount;
            if (position >= _size)
            {
                // 2.8.1: the device's wrap counter flips after it uses the ring's last descriptor.
                position -= _size;
                bits ^= PackedFlags.AvailUsed;
            }
        }

        _usedPosition = position;
        _usedBits = bits;
        _inFlight -= descriptors;
        _buffersInFlight -= tokens.Length;
        _pendingChains += tokens.Length;
        Counters.Packets += tokens.Length;
        Counters.Bytes += bytes;
    }

    /// <inheritdoc/>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void PushUsed(ChainToken token, uint written)
    {
        Debug.Assert(token.Id < _size && _idRecords[token.Id] != 0, "the token names a buffer in flight");
        Debug.Assert(token.DescriptorCount >= 1 && token.DescriptorCount <= _inFlight, "the token's descriptor count is one popped");
        Debug.Assert(!_inOrder || OldestInFlight(0) == token.Id, "IN_ORDER: buffers are returned in the order they were popped");
        _idRecords[token.Id] = 0;
        _buffersInFlight--;

        WriteUsed(token.Id, written, token.DescriptorCount, 1);
    }

    /// <inheritdoc/>
    public void PushUsedInOrderBatch(ChainToken last, uint written, int buffers)
    {
        if (!_inOrder)
        {
            throw new InvalidOperationException("a batch needs VIRTIO_F_IN_ORDER");
        }

        ArgumentOutOfRangeException.ThrowIfLessThan(buffers, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(buffers, _buffersInFlight);
        if (OldestInFlight(buffers - 1) != last.Id)
        {
            throw new ArgumentException($"buffer {last.Id} is not the last of the {buffers} oldest in flight", nameof(last));
        }

        // Under IN_ORDER the buffers in flight are the pop log's newest entries, oldest first:
        // every pop goes to the log, an undone pop leaves it, every return takes the oldest, and
        // the log is as long as the ring (never fewer entries than buffers in flight). So the
        // batch is the run of the log from the oldest in flight, and each id's descriptors are in
        // its record. The log and its position in locals: the stores into the records could alias
        // the fields as far as the JIT knows, and it would store and reload them per buffer.
        // Unchecked per buffer: each id in the log was checked against the records' length when it
        // was popped and copied into this device's own log; nothing here is read from shared memory.
        var log = _popLogIds;
        var entry = OldestEntry(0);
        if ((uint)entry >= (uint)log.Length || _idRecords.Length != log.Length)
        {
            throw new InvalidOperationException($"the device's IN_ORDER records are inconsistent: oldest entry {entry} of {log.Length}");
        }

        ref var records = ref MemoryMarshal.GetArrayDataReference(_idRecords);
        ref var logIds = ref MemoryMarshal.GetArrayDataReference(log);
        var descriptors = 0;
        for (var i = 0; i < buffers; i++)
        {
            ref var record = ref Unsafe.Add(ref records, Unsafe.Add(ref logIds, entry));
            descriptors += Descriptors(record);
            record = 0;
            if (++entry == log.Length)
            {
                entry = 0;
            }
        }

        if (descriptors > _inFlight)
        {
            throw new InvalidOperationException($"the device's IN_ORDER records are inconsistent: a batch of {descriptors} descriptors with {_inFlight} in flight");
        }

        _buffersInFlight -= buffers;

        // 2.8.8: one used descriptor, over the batch's first descriptor, names its last buffer;
        // the used position then skips the whole batch.
        WriteUsed(last.Id, written, descriptors, buffers);
    }

    /// <inheritdoc/>
    public void PublishUsed()
    {
        if (_pendingUsed == null)
        {
            return;
        }

        // Release (2.8.9, 2.8.22): the burst's used descriptors, including the later ones' flags,
        // were written with plain stores; the driver sees none before this store marks the first
        // one used, and then it sees all of them.
        Volatile.Write(ref _pendingUsed->Flags, _pendingUsedFlags);
        Counters.RecordBurst(_pendingChains);

        // Descriptors in the burst: never more than the ring, so equal positions mean a whole lap.
        var descriptors = _usedPosition - _publishedPosition;
        if (descriptors <= 0)
        {
            descriptors += _size;
        }

        _sinceCall = Math.Min(_sinceCall + descriptors, _size);
        _publishedPosition = _usedPosition;
        _publishedWrap = _usedBits == PackedFlags.AvailUsed;
        _pendingUsed = null;
        _pendingChains = 0;
    }

    /// <inheritdoc/>
    public bool CallNeeded()
    {
        var advanced = _sinceCall;
        if (advanced == 0)
        {
            return false;
        }

        _sinceCall = 0;

        // Store-load: the used flags published above must be visible before we read the driver's
        // event suppression structure, or the driver may re-check before our publish while we read
        // its stale request (2.8.22).
        Interlocked.MemoryBarrier();
        var call = PackedDriverRing.ShouldNotify(new PvirtqEventSuppress(Volatile.Read(ref _driverEvent->Word)), _eventIndex, _publishedPosition, _publishedWrap, advanced, _size);
        Counters.RecordNotification(call);
        return call;
    }

    /// <inheritdoc/>
    public bool EnableAvailNotifications()
    {
        _kicksDisabled = false;
        if (_eventIndex)
        {
            // 2.8.10: ask for a kick when the driver makes available the descriptor we read next.
            // One 32-bit store so the driver never sees DESC with a stale offset.
            var offWrap = PackedEventIndex.OffWrap(_availPosition, _availBits == PackedFlags.Avail);
            Volatile.Write(ref _deviceEvent->Word, new PvirtqEventSuppress(offWrap, PackedFlags.EventDesc).Word);
        }
        else
        {
            Volatile.Write(ref _deviceEvent->Flags, PackedFlags.EventEnable);
        }

        // Store-load: the request must be visible before we re-read the ring, or the driver may
        // publish, read our stale request, skip the kick, and we sleep on a non-empty ring.
        Interlocked.MemoryBarrier();
        var flags = Volatile.Read(ref _desc[_availPosition].Flags);
        return (flags & PackedFlags.AvailUsed) == _availBits;
    }

    /// <inheritdoc/>
    public void DisableAvailNotifications()
    {
        if (_kicksDisabled)
        {
            return;
        }

        _kicksDisabled = true;
        Volatile.Write(ref _deviceEvent->Flags, PackedFlags.EventDisable);
    }

    /// <inheritdoc/>
    /// <exception cref="ArgumentOutOfRangeException">
    /// A position is not below the queue size, or the used position is ahead of the avail position
    /// (more than a lap of descriptors would be in flight).
    /// </exception>
    public void Restore(RingPosition position)
    {
        if (position.AvailIndex >= _size || position.UsedIndex >= _size)
        {
            throw new ArgumentOutOfRangeException(nameof(position), position, $"packed ring positions are below the queue size {_size}");
        }

        // Descriptors in flight: the distance from used to avail on a line of two laps.
        var avail = position.AvailIndex + (position.AvailWrapCounter ? 0 : _size);
        var used = position.UsedIndex + (position.UsedWrapCounter ? 0 : _size);
        var inFlight = avail - used;
        if (inFlight < 0)
        {
            inFlight += 2 * _size;
        }

        if (inFlight > _size)
        {
            throw new ArgumentOutOfRangeException(nameof(position), position, "the used position is ahead of the avail position");
        }

        _availPosition = position.AvailIndex;
        _availBits = PackedFlags.AvailBits(position.AvailWrapCounter);
        _usedPosition = _publishedPosition = position.UsedIndex;
        _usedBits = PackedFlags.UsedBits(position.UsedWrapCounter);
        _publishedWrap = position.UsedWrapCounter;
        _inFlight = inFlight;
        _pendingUsed = null;
        _pendingUsedFlags = 0;
        _pendingChains = _sinceCall = 0;
        _kicksDisabled = false;

        // Which buffers were in flight before is not carried; forget them.
        Array.Clear(_idRecords);
        _buffersInFlight = 0;
        _broken = BrokenReason.None;
    }

    /// <summary>The general pop: a NEXT list or an indirect table, or a ring the device holds whole.</summary>
    private bool TryPopList(PvirtqDesc* d, ushort flags, out DescriptorChain chain)
    {
        chain = default;
        var reason = Walk(d, flags, out var count, out var readable, out var readBytes, out var writeBytes, out var descriptors, out var id);
        if (reason != BrokenReason.None)
        {
            return Break(reason);
        }

        if (!Commit(id, descriptors, readBytes))
        {
            return false;
        }

        Counters.Bytes += (long)readBytes;
        chain = new DescriptorChain(new ReadOnlySpan<ChainSegment>(_segments, 0, count), readable, readBytes, writeBytes, new ChainToken(id, (ushort)descriptors));
        return true;
    }

    // 2.8.6: an id a driver may use for a new buffer: below the size, and not naming one in flight.
    private bool IdFree(ushort id) => id < (uint)_idRecords.Length && _idRecords[id] == 0;

    /// <summary>
    /// What the device keeps of a buffer in flight, in one word so a pop stores it at once: the
    /// descriptors it took (low 16 bits; at least 1, at most a queue size of 32768, so the word is
    /// never 0) and its readable bytes (above; at most 32768 descriptors of 4 GiB, 47 bits), taken
    /// back off the byte counter when the pop is undone.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ulong Record(int descriptors, ulong readBytes) => (uint)descriptors | (readBytes << 16);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int Descriptors(ulong record) => (ushort)record;

    private static long ReadBytes(ulong record) => (long)(record >> 16);

    /// <summary>The record of buffer <paramref name="id"/>, for a pop being undone: it must still be in flight.</summary>
    private ulong InFlightRecord(ushort id)
    {
        var record = _idRecords[id];
        if (record == 0)
        {
            throw new InvalidOperationException($"buffer {id} was returned: only pops not yet returned can be undone");
        }

        return record;
    }

    /// <summary>Where in the pop log the buffer <paramref name="offset"/> places after the oldest in flight is (IN_ORDER).</summary>
    private int OldestEntry(int offset)
    {
        var entry = _popLogNext - _buffersInFlight + offset;
        if (entry < 0)
        {
            entry += _popLogIds.Length;
        }
        else if (entry >= _popLogIds.Length)
        {
            entry -= _popLogIds.Length;
        }

        return entry;
    }

    /// <summary>IN_ORDER: the id of the buffer <paramref name="offset"/> places after the oldest in flight.</summary>
    private ushort OldestInFlight(int offset) => _popLogIds[OldestEntry(offset)];

    /// <summary>Checks a popped buffer's id, marks it in flight and moves the avail position past its descriptors.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool Commit(ushort id, int descriptors, ulong readBytes)
    {
        // 2.8.6: the id (from the list's last descriptor) must name a buffer not already in flight.
        if (!IdFree(id))
        {
            return Break(BrokenReason.BufferIdInvalid);
        }

        _idRecords[id] = Record(descriptors, readBytes);
        _popLogIds[_popLogNext] = id;
        _popLogNext = _popLogNext + 1 == _popLogIds.Length ? 0 : _popLogNext + 1;
        _buffersInFlight++;

        _inFlight += descriptors;
        var position = _availPosition + descriptors;
        if (position >= _size)
        {
            position -= _size;
            _availBits ^= PackedFlags.AvailUsed;
        }

        _availPosition = position;
        return true;
    }

    /// <summary>Writes one used descriptor, holding its flags back when it opens a burst; moves the used position.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void WriteUsed(ushort id, uint written, int descriptors, int chains)
    {
        // 2.8.3, 2.8.4: WRITE says whether anything was written, and len how much.
        var d = _desc + _usedPosition;
        d->Len = written;
        d->Id = id;
        var flags = (ushort)(_usedBits | (written != 0 ? PackedFlags.Write : 0));
        if (_pendingUsed == null)
        {
            _pendingUsed = d;
            _pendingUsedFlags = flags;
        }
        else
        {
            // Plain store: published by the release store of the burst's first flags in PublishUsed.
            d->Flags = flags;
        }

        _pendingChains += chains;
        Counters.Packets += chains;
        _inFlight -= descriptors;
        _usedPosition += descriptors;
        if (_usedPosition >= _size)
        {
            // 2.8.1: the device's wrap counter flips after it uses the ring's last descriptor.
            _usedPosition -= _size;
            _usedBits ^= PackedFlags.AvailUsed;
        }

        Counters.Bytes += written;
    }

    private BrokenReason Walk(PvirtqDesc* d, ushort flags, out int count, out int readable, out ulong readBytes, out ulong writeBytes, out int descriptors, out ushort id)
    {
        count = 0;
        readable = 0;
        readBytes = 0;
        writeBytes = 0;
        descriptors = 0;
        id = 0;

        // A legal driver never has more descriptors available than the queue holds minus those
        // the device still owns (2.8.16): past that it is overwriting descriptors in flight.
        var limit = _size - _inFlight;
        var position = _availPosition;
        var bits = _availBits;
        var seenWritable = false;
        while (true)
        {
            if (++descriptors > limit)
            {
                return descriptors > _size ? BrokenReason.ChainTooLong : BrokenReason.RingOverrun;
            }

            // The descriptor read once into a local, ordered after the head's acquire: the driver
            // wrote the rest of the list before the head. The head's flags are the acquired value
            // (the copy's are ignored, so they are never fetched twice).
            var desc = *d;
            if (descriptors > 1)
            {
                // 2.8.6: each descriptor of the list is marked available.
                flags = desc.Flags;
                if ((flags & PackedFlags.AvailUsed) != bits)
                {
                    return BrokenReason.DescriptorNotAvailable;
                }
            }

            if ((flags & PackedFlags.Indirect) != 0)
            {
                if (!_indirectAllowed)
                {
                    return BrokenReason.IndirectNotNegotiated;
                }

                // 2.8.19: an indirect descriptor stands alone, never in a NEXT list.
                if ((flags & PackedFlags.Next) != 0 || descriptors > 1)
                {
                    return BrokenReason.IndirectWithNext;
                }

                id = desc.Id;
                return WalkIndirect(desc.Addr, desc.Len, ref count, ref readable, ref readBytes, ref writeBytes);
            }

            var r = AddSegment(desc.Addr, desc.Len, (flags & PackedFlags.Write) != 0, ref count, ref readable, ref readBytes, ref writeBytes, ref seenWritable);
            if (r != BrokenReason.None)
            {
                return r;
            }

            if ((flags & PackedFlags.Next) == 0)
            {
                // 2.8.6: the buffer id is in the list's last descriptor.
                id = desc.Id;
                return BrokenReason.None;
            }

            if (++position == _size)
            {
                position = 0;
                bits ^= PackedFlags.AvailUsed;
                d = _desc;
            }
            else
            {
                d++;
            }
        }
    }

    private BrokenReason WalkIndirect(ulong tableAddress, uint tableLength, ref int count, ref int readable, ref ulong readBytes, ref ulong writeBytes)
    {
        // 2.8.7: the table is a whole number of 16-byte descriptors, read in order.
        if (tableLength == 0 || (tableLength & 15) != 0)
        {
            return BrokenReason.IndirectTableMisaligned;
        }

        var entries = tableLength / RingLayout.DescriptorBytes;
        if (entries > (uint)_size)
        {
            return BrokenReason.ChainTooLong;
        }

        if (!_memory.TryTranslate(tableAddress, tableLength, out var host))
        {
            return BrokenReason.AddressOutOfRange;
        }

        var table = (PvirtqDesc*)host;
        var seenWritable = false;
        for (uint i = 0; i < entries; i++)
        {
            // Read once into a local: the driver may rewrite the table under us.
            var e = table[i];
            var flags = e.Flags;
            if ((flags & PackedFlags.Indirect) != 0)
            {
                return BrokenReason.NestedIndirect;
            }

            // WRITE is the only flag that counts in a table; the others are reserved (2.8.7).
            var r = AddSegment(e.Addr, e.Len, (flags & PackedFlags.Write) != 0, ref count, ref readable, ref readBytes, ref writeBytes, ref seenWritable);
            if (r != BrokenReason.None)
            {
                return r;
            }
        }

        return BrokenReason.None;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private BrokenReason AddSegment(ulong address, uint length, bool writable, ref int count, ref int readable, ref ulong readBytes, ref ulong writeBytes, ref bool seenWritable) =>
        ChainValidation.AddSegment(_memory, _segments, address, length, writable, ref count, ref readable, ref readBytes, ref writeBytes, ref seenWritable);

    private bool Break(BrokenReason reason) => Counters.Break(ref _broken, reason);
}
