using Rings.Chains;

namespace Rings;

/// <summary>
/// The driver (guest) side of a virtqueue, whatever its format: make buffers available,
/// publish them once per burst, kick when the device asked, take used buffers back.
/// One thread owns a driver ring; nothing here blocks, allocates or throws on a peer's input.
/// </summary>
public interface IDriverRing
{
    /// <summary>Queue size (number of descriptors).</summary>
    int Size { get; }

    /// <summary>Descriptors free for new buffers.</summary>
    int FreeDescriptors { get; }

    /// <summary>Buffers made available and not yet taken back.</summary>
    int Outstanding { get; }

    /// <summary>True once the device broke a rule (<see cref="BrokenReason"/> says which); only <see cref="Reset"/> clears it.</summary>
    bool IsBroken { get; }

    /// <summary>Why the ring stopped, or <see cref="Rings.BrokenReason.None"/> while it is healthy.</summary>
    BrokenReason BrokenReason { get; }

    /// <summary>This side's counters.</summary>
    QueueCounters Counters { get; }

    /// <summary>
    /// Adds a buffer of device-readable then device-writable segments. It becomes visible to the
    /// device at the next <see cref="Publish"/>. Uses an indirect table when one is configured,
    /// negotiated and the buffer has more than one segment.
    /// </summary>
    /// <param name="readable">Segments the device reads, in order.</param>
    /// <param name="writable">Segments the device writes, in order.</param>
    /// <param name="id">The buffer id the device will return.</param>
    /// <returns>False when there is no room (or the ring is broken).</returns>
    /// <exception cref="ArgumentException">No segment was given.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A segment is not inside the memory table the ring was made with (checked here, so a wrong address never reaches the device).</exception>
    bool TryAdd(ReadOnlySpan<BufferSegment> readable, ReadOnlySpan<BufferSegment> writable, out ushort id);

    /// <summary>Adds a one-segment buffer; the fast path of <see cref="TryAdd(ReadOnlySpan{BufferSegment}, ReadOnlySpan{BufferSegment}, out ushort)"/>.</summary>
    /// <param name="segment">The only segment.</param>
    /// <param name="deviceWritable">True when the device writes it (receive), false when it reads it (transmit).</param>
    /// <param name="id">The buffer id the device will return.</param>
    /// <returns>False when there is no room (or the ring is broken).</returns>
    /// <exception cref="ArgumentOutOfRangeException">The segment is not inside the memory table the ring was made with.</exception>
    bool TryAdd(BufferSegment segment, bool deviceWritable, out ushort id);

    /// <summary>
    /// Adds a burst of one-segment buffers, all device-readable or all device-writable (the net
    /// path's transmit and receive buffers): the same as calling
    /// <see cref="TryAdd(BufferSegment, bool, out ushort)"/> for each until one is refused, with the
    /// bookkeeping done once per burst. Every segment is checked before any is added, so a bad one
    /// leaves the ring as it was. Visible to the device at the next <see cref="Publish"/>.
    /// </summary>
    /// <param name="buffers">One segment per buffer, in the order they are made available.</param>
    /// <param name="deviceWritable">True when the device writes them (receive), false when it reads them (transmit).</param>
    /// <param name="ids">Receives the buffer id of each buffer added; at least as long as <paramref name="buffers"/>.</param>
    /// <returns>Buffers added: fewer than given when the ring filled up, 0 when it is broken.</returns>
    /// <exception cref="ArgumentException"><paramref name="ids"/> is shorter than <paramref name="buffers"/>.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A segment is not inside the memory table the ring was made with.</exception>
    int TryAddBurst(ReadOnlySpan<BufferSegment> buffers, bool deviceWritable, Span<ushort> ids);

    /// <summary>Makes every buffer added since the last publish visible to the device at once (release).</summary>
    void Publish();

    /// <summary>
    /// After <see cref="Publish"/>: whether the device asked to be kicked for what was published
    /// since the last decision (VRING_USED_F_NO_NOTIFY, or avail_event under EVENT_IDX). Counts the decision.
    /// </summary>
    /// <returns>True when the caller must kick.</returns>
    bool KickNeeded();

    /// <summary>Takes the next used buffer back, checking its id and length.</summary>
    /// <param name="used">The buffer and how many bytes the device wrote.</param>
    /// <returns>False when none is ready or the device broke a rule (then <see cref="IsBroken"/> is set).</returns>
    bool TryTakeUsed(out UsedElement used);

    /// <summary>
    /// Takes back up to <paramref name="used"/>'s length of used buffers: the same elements, checks
    /// and counts as calling <see cref="TryTakeUsed"/> until it returns false, but with at most one
    /// acquire read of the device's index (split) or one pass over the used descriptors' flags
    /// (packed) per call.
    /// </summary>
    /// <param name="used">Receives the buffers, in the order the device returned them.</param>
    /// <returns>Buffers taken; 0 when none is ready or the device broke a rule (then <see cref="IsBroken"/> is set).</returns>
    int TakeUsed(Span<UsedElement> used);

    /// <summary>
    /// Asks the device for a call when it next uses a buffer, then re-checks the ring. Only
    /// sleep when this returns false; true means used buffers are already waiting.
    /// </summary>
    /// <returns>True when used buffers are waiting.</returns>
    bool EnableUsedNotifications();

    /// <summary>Tells the device calls are not needed (the driver is polling).</summary>
    void DisableUsedNotifications();

    /// <summary>Forgets every buffer and returns the ring to its initial state (device reset), healthy again.</summary>
    void Reset();

    /// <summary>
    /// Where the device stands as ring memory shows it: the position just past the last buffer it
    /// returned used, whether or not the driver has taken it yet. A device that lost its state (a
    /// vhost-user back-end restarted) resumes there with nothing the driver handed over skipped:
    /// every buffer made available and not yet used is read again. Split: the avail index equal to
    /// the used index the device published; packed: avail and used positions both there, with
    /// their wrap counters. A device that wrote nonsense cannot move it past what is outstanding.
    /// </summary>
    RingPosition DevicePosition { get; }

    /// <summary>
    /// Readies the ring for a device that lost its state (a restarted vhost-user back-end) and returns
    /// where it resumes (<see cref="DevicePosition"/>). Packed: every descriptor of a buffer made
    /// available and not yet returned is written again as the driver made it, from the driver's own
    /// record, because a device stopped in the middle of a burst may have overwritten some with used
    /// descriptors it never published (2.8.6). Split: nothing to rewrite (the device writes only
    /// the used ring). Call only while no device runs the ring.
    /// </summary>
    /// <returns>The position for vhost-user SET_VRING_BASE.</returns>
    RingPosition PrepareDeviceRestart();
}

/// <summary>
/// The device (host) side of a virtqueue, whatever its format: pop validated buffers, return
/// them used, publish once per burst, call when the driver asked. Treats ring memory as hostile:
/// a violation marks the queue broken with a reason; nothing throws out of these methods.
/// </summary>
public interface IDeviceRing
{
    /// <summary>Queue size (number of descriptors).</summary>
    int Size { get; }

    /// <summary>True once the driver broke a rule (<see cref="BrokenReason"/> says which); only <see cref="Restore"/> clears it.</summary>
    bool IsBroken { get; }

    /// <summary>Why the ring stopped, or <see cref="Rings.BrokenReason.None"/> while it is healthy.</summary>
    BrokenReason BrokenReason { get; }

    /// <summary>This side's counters.</summary>
    QueueCounters Counters { get; }

    /// <summary>Pops and validates the next available buffer.</summary>
    /// <param name="chain">The buffer; its segments are valid until the next pop.</param>
    /// <returns>False when none is available or the driver broke a rule (then <see cref="IsBroken"/> is set).</returns>
    bool TryPop(out DescriptorChain chain);

    /// <summary>
    /// Pops and validates up to <paramref name="chains"/>' length of available buffers: the same
    /// buffers, checks and counts as calling <see cref="TryPop"/> until it returns false, with at
    /// most one acquire read of the driver's index (split) per call; their segments go to
    /// <paramref name="segments"/>, one after the other. A buffer whose segments do not fit in what
    /// is left of <paramref name="segments"/> is not popped (it stays available); a span of
    /// <see cref="Size"/> segments per chain always fits.
    /// </summary>
    /// <param name="chains">Receives the buffers, in ring order.</param>
    /// <param name="segments">Receives the buffers' validated segments.</param>
    /// <returns>Buffers popped; 0 when none is available (or none fits), or the driver broke a rule (then <see cref="IsBroken"/> is set).</returns>
    int PopBurst(Span<PoppedChain> chains, Span<ChainSegment> segments)
    {
        // Generic form over the single calls, for rings that wrap another (the four formats' rings
        // have their own).
        var popped = 0;
        var used = 0;
        while (popped < chains.Length)
        {
            var before = Position;
            if (!TryPop(out var chain))
            {
                break;
            }

            var count = chain.Segments.Length;
            if (count > segments.Length - used)
            {
                UndoPops(before);
                break;
            }

            chain.Segments.CopyTo(segments[used..]);
            chains[popped++] = new PoppedChain(chain.Token, used, count, chain.ReadableCount, chain.ReadableBytes, chain.WritableBytes, before);
            used += count;
        }

        return popped;
    }

    /// <summary>
    /// Pops the available buffers that are one segment each, the common case of a network queue,
    /// up to the shorter span's length: the same buffers, checks and counts as calling
    /// <see cref="TryPop"/>, but stopping before the first buffer of several segments, which stays
    /// available (<see cref="PopBurst"/> or <see cref="TryPop"/> takes it); one that breaks a rule
    /// breaks the queue here, as a pop of it would. Writes per buffer only its segment (which holds
    /// its length and whether it is device-writable) and the token to return it with, where
    /// <see cref="PopBurst"/> also writes a record that repeats them.
    /// </summary>
    /// <param name="segments">Receives each buffer's segment, in ring order.</param>
    /// <param name="tokens">Receives each buffer's token, beside its segment.</param>
    /// <returns>Buffers popped; 0 when none is available, the next has several segments, or the
    /// driver broke a rule (then <see cref="IsBroken"/> is set).</returns>
    /// <remarks>To give popped buffers back, <see cref="UndoNewestPops"/> counts them from the newest.</remarks>
    int PopSingles(Span<ChainSegment> segments, Span<ChainToken> tokens);

    /// <summary>Returns a popped buffer as used. It becomes visible at the next <see cref="PublishUsed"/>.</summary>
    /// <param name="token">The popped buffer's token.</param>
    /// <param name="written">Bytes written into its device-writable part.</param>
    void PushUsed(ChainToken token, uint written);

    /// <summary>
    /// Returns a burst of popped buffers as used, one used entry each, in the order given: the same
    /// as calling <see cref="PushUsed"/> for each. Visible at the next <see cref="PublishUsed"/>.
    /// </summary>
    /// <param name="tokens">The popped buffers' tokens.</param>
    /// <param name="written">Bytes written into each buffer's device-writable part, one per token; empty when nothing was written to any (transmit completions).</param>
    /// <exception cref="ArgumentException"><paramref name="written"/> is neither empty nor as long as <paramref name="tokens"/>.</exception>
    void PushUsedBurst(ReadOnlySpan<ChainToken> tokens, ReadOnlySpan<uint> written)
    {
        ChainToken.CheckWritten(tokens, written);
        for (var i = 0; i < tokens.Length; i++)
        {
            PushUsed(tokens[i], written.IsEmpty ? 0 : written[i]);
        }
    }

    /// <summary>
    /// Under VIRTIO_F_IN_ORDER (virtio 1.2 sections 2.7.9 and 2.8.8): returns the
    /// <paramref name="buffers"/> oldest popped buffers not yet returned with one used entry that
    /// names the last of them. The driver takes every one of them back; the earlier ones count as
    /// used completely (their whole device-writable length). Visible at the next <see cref="PublishUsed"/>.
    /// </summary>
    /// <param name="last">The token of the batch's last (most recently popped) buffer.</param>
    /// <param name="written">Bytes written into the last buffer's device-writable part.</param>
    /// <param name="buffers">Buffers in the batch.</param>
    /// <remarks>The ring descriptors the batch occupied (which the packed ring's used position skips)
    /// come from the device's own record of its pops, not from the caller.</remarks>
    /// <exception cref="InvalidOperationException">VIRTIO_F_IN_ORDER was not negotiated.</exception>
    /// <exception cref="ArgumentException">The batch is not the oldest buffers in flight, ending at <paramref name="last"/>.</exception>
    void PushUsedInOrderBatch(ChainToken last, uint written, int buffers);

    /// <summary>True when VIRTIO_F_IN_ORDER was negotiated, so <see cref="PushUsedInOrderBatch"/> may be used.</summary>
    bool InOrder { get; }

    /// <summary>Makes every buffer pushed since the last publish visible to the driver at once (release).</summary>
    void PublishUsed();

    /// <summary>
    /// After <see cref="PublishUsed"/>: whether the driver asked for a call (VRING_AVAIL_F_NO_INTERRUPT,
    /// or used_event under EVENT_IDX). Counts the decision.
    /// </summary>
    /// <returns>True when the caller must call (signal) the driver.</returns>
    bool CallNeeded();

    /// <summary>
    /// Asks the driver for a kick when it next makes a buffer available, then re-checks the ring.
    /// Only sleep when this returns false.
    /// </summary>
    /// <returns>True when buffers are already available.</returns>
    bool EnableAvailNotifications();

    /// <summary>Tells the driver kicks are not needed (the device is polling).</summary>
    void DisableAvailNotifications();

    /// <summary>
    /// True when the driver has published buffers the device has not popped yet (acquire read of
    /// the driver's index or the next descriptor's flags). Lets a device check for room before it
    /// commits to work.
    /// </summary>
    bool HasAvailable { get; }

    /// <summary>
    /// Undoes the pops made since <paramref name="before"/> was read from <see cref="Position"/>, when
    /// none of those buffers was pushed used: they will be popped (and validated) again. Used to back
    /// off when a frame needs more receive buffers than are available. Their readable bytes come
    /// off <see cref="Counters"/>, so a buffer popped again is counted once.
    /// </summary>
    /// <param name="before">The position read before the pops.</param>
    void UndoPops(RingPosition before);

    /// <summary>
    /// Undoes the newest <paramref name="buffers"/> pops, when none of them was pushed used: the
    /// same as <see cref="UndoPops"/> from the position before the oldest of them.
    /// Gives back the tail of a <see cref="PopSingles"/> burst, whose buffers carry no position.
    /// </summary>
    /// <param name="buffers">How many of the newest pops to undo; 0 undoes none.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="buffers"/> is negative or more
    /// than the ring has popped and not returned (the split ring, which keeps no count of its pops,
    /// checks it against the queue size only).</exception>
    /// <exception cref="InvalidOperationException">The packed ring: one of those pops was already
    /// returned (its record is gone); nothing is undone.</exception>
    void UndoNewestPops(int buffers);

    /// <summary>Marks the queue broken for a reason found above the ring (for example a header that does not fit).</summary>
    /// <param name="reason">The reason.</param>
    void MarkBroken(BrokenReason reason);

    /// <summary>The device's position, for vhost-user GET_VRING_BASE.</summary>
    RingPosition Position { get; }

    /// <summary>Restores a position saved earlier (vhost-user SET_VRING_BASE); the ring is healthy again.</summary>
    /// <param name="position">The position.</param>
    void Restore(RingPosition position);
}
