namespace Rings.Packed;

/// <summary>Flag values of the packed virtqueue (virtio 1.2 sections 2.8.1, 2.8.6, 2.8.7 and 2.8.10).</summary>
internal static class PackedFlags
{
    public const ushort Next = 1;
    public const ushort Write = 2;
    public const ushort Indirect = 4;

    /// <summary>VIRTQ_DESC_F_AVAIL.</summary>
    public const ushort Avail = 1 << 7;

    /// <summary>VIRTQ_DESC_F_USED.</summary>
    public const ushort Used = 1 << 15;

    /// <summary>Both wrap bits; flipping a wrap counter is an XOR with this.</summary>
    public const ushort AvailUsed = Avail | Used;

    /// <summary>RING_EVENT_FLAGS_ENABLE.</summary>
    public const ushort EventEnable = 0;

    /// <summary>RING_EVENT_FLAGS_DISABLE.</summary>
    public const ushort EventDisable = 1;

    /// <summary>RING_EVENT_FLAGS_DESC (only with VIRTIO_F_EVENT_IDX).</summary>
    public const ushort EventDesc = 2;

    /// <summary>The two flag bits of an event suppression structure.</summary>
    public const ushort EventFlagsMask = 3;

    /// <summary>The wrap counter bit of <c>off_wrap</c>.</summary>
    public const ushort EventWrap = 1 << 15;

    /// <summary>
    /// The AVAIL/USED bits of a descriptor the driver makes available with wrap counter
    /// <paramref name="wrap"/>: AVAIL matches it, USED is its inverse (2.8.1).
    /// </summary>
    public static ushort AvailBits(bool wrap) => wrap ? Avail : Used;

    /// <summary>The AVAIL/USED bits of a descriptor the device marks used with wrap counter <paramref name="wrap"/>: both match it.</summary>
    public static ushort UsedBits(bool wrap) => wrap ? AvailUsed : (ushort)0;
}
