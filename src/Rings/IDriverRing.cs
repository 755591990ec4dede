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
    /// Asks the device for a call when it next uses a buffer, then re-checks the ring. Only
    /// sleep when this returns false; true means used buffers are already waiting.
    /// </summary>
    /// <returns>True when used buffers are waiting.</returns>
    bool EnableUsedNotifications();

    /// <summary>Tells the device calls are not needed (the driver is polling).</summary>
    void DisableUsedNotifications();

    /// <summary>Forgets every buffer and returns the ring to its initial state (device reset), healthy again.</summary>
    void Reset();
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

    /// <summary>Returns a popped buffer as used. It becomes visible at the next <see cref="PublishUsed"/>.</summary>
    /// <param name="token">The popped buffer's token.</param>
    /// <param name="written">Bytes written into its device-writable part.</param>
    void PushUsed(ChainToken token, uint written);

    /// <summary>
    /// Under VIRTIO_F_IN_ORDER (virtio 1.2 sections 2.7.9 and 2.8.8): returns the
    /// <paramref name="buffers"/> oldest popped buffers not yet returned with one used entry that
    /// names the last of them. The driver takes every one of them back; the earlier ones count as
    /// used completely (their whole device-writable length). Visible at the next <see cref="PublishUsed"/>.
    /// </summary>
    /// <param name="last">The token of the batch's last (most recently popped) buffer.</param>
    /// <param name="written">Bytes written into the last buffer's device-writable part.</param>
    /// <param name="buffers">Buffers in the batch.</param>
    /// <param name="descriptors">Ring descriptors the batch occupied: the sum of its tokens' <see cref="ChainToken.DescriptorCount"/> (the split ring does not need it).</param>
    /// <exception cref="InvalidOperationException">VIRTIO_F_IN_ORDER was not negotiated.</exception>
    /// <exception cref="ArgumentException">The counts do not describe buffers in flight.</exception>
    void PushUsedInOrderBatch(ChainToken last, uint written, int buffers, int descriptors);

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
    /// off when a frame needs more receive buffers than are available.
    /// </summary>
    /// <param name="before">The position read before the pops.</param>
    void UndoPops(RingPosition before);

    /// <summary>Marks the queue broken for a reason found above the ring (for example a header that does not fit).</summary>
    /// <param name="reason">The reason.</param>
    void MarkBroken(BrokenReason reason);

    /// <summary>The device's position, for vhost-user GET_VRING_BASE.</summary>
    RingPosition Position { get; }

    /// <summary>Restores a position saved earlier (vhost-user SET_VRING_BASE); the ring is healthy again.</summary>
    /// <param name="position">The position.</param>
    void Restore(RingPosition position);
}
