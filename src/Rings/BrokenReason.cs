namespace Rings;

/// <summary>
/// Why a queue stopped: the peer broke a rule of the spec. A broken queue does nothing more
/// until reset; the process and its other queues carry on.
/// </summary>
public enum BrokenReason
{
    /// <summary>The queue is healthy.</summary>
    None = 0,

    /// <summary>The driver's avail index is more than the queue size ahead of the device (2.7.13).</summary>
    AvailIndexTooFarAhead,

    /// <summary>A head index read from the avail ring is not below the queue size.</summary>
    HeadOutOfRange,

    /// <summary>A descriptor's next index is not below the queue size or the indirect table size.</summary>
    NextOutOfRange,

    /// <summary>A chain holds more descriptors than the queue size (2.7.5.3.1).</summary>
    ChainTooLong,

    /// <summary>A chain visits the same descriptor twice.</summary>
    ChainLoop,

    /// <summary>A buffer or table address range is not wholly inside the memory table.</summary>
    AddressOutOfRange,

    /// <summary>An indirect descriptor was used without VIRTIO_F_INDIRECT_DESC.</summary>
    IndirectNotNegotiated,

    /// <summary>An indirect table holds another indirect descriptor (2.7.5.3.1).</summary>
    NestedIndirect,

    /// <summary>
    /// A descriptor has both INDIRECT and NEXT (2.7.5.3.1), or, in a packed ring, an indirect
    /// descriptor is part of a NEXT chain (2.8.19).
    /// </summary>
    IndirectWithNext,

    /// <summary>An indirect table's length is zero or not a multiple of 16 bytes.</summary>
    IndirectTableMisaligned,

    /// <summary>A device-readable descriptor follows a device-writable one (2.7.4.2).</summary>
    ReadableAfterWritable,

    /// <summary>The device's used index is more than the queue size ahead of the driver.</summary>
    UsedIndexTooFarAhead,

    /// <summary>A used element names a buffer id that is not outstanding.</summary>
    UsedIdNotOutstanding,

    /// <summary>A used element's length exceeds the device-writable length of its buffer.</summary>
    UsedLengthTooLarge,

    /// <summary>A ring part's address is misaligned or outside the memory table.</summary>
    RingAddressInvalid,

    /// <summary>A packed descriptor's buffer id is not below the queue size, or is already in flight.</summary>
    BufferIdInvalid,

    /// <summary>A buffer is too short for the protocol header in front of its payload (virtio_net_hdr, 5.1.6).</summary>
    HeaderTooShort,

    /// <summary>A packed chain continues into a descriptor not marked available for the current lap (2.8.6).</summary>
    DescriptorNotAvailable,

    /// <summary>
    /// A packed driver made more descriptors available than the queue holds: it overwrote descriptors
    /// the device had not yet marked used (2.8.16).
    /// </summary>
    RingOverrun,

    /// <summary>An IN_ORDER used entry covers more buffers than the device's used index moved (2.7.9).</summary>
    UsedBatchTooLarge,

    /// <summary>
    /// The device's data path did not let go of the queue within its deadline when asked to stop
    /// (a doorbell the driver controls blocked it), so the queue's position cannot be trusted.
    /// Set by the device's owner, not by a ring check.
    /// </summary>
    DataPathStuck,
}
