namespace Rings.Split;

/// <summary>
/// Byte layout of a split virtqueue of a given size (virtio 1.2 section 2.7): descriptor table,
/// driver area (avail ring) and device area (used ring), laid one after another with each part
/// 64-byte aligned so the driver-written and device-written parts never share a cache line.
/// </summary>
public readonly struct SplitLayout
{
    /// <summary>Largest queue size the spec allows (2.7).</summary>
    public const int MaxSize = 32768;

    /// <summary>Bytes per descriptor: <c>{u64 addr; u32 len; u16 flags; u16 next}</c>.</summary>
    public const int DescriptorBytes = 16;

    /// <summary>Bytes per used element: <c>{u32 id; u32 len}</c>.</summary>
    public const int UsedElementBytes = 8;

    /// <summary>Alignment Rings gives each part (the spec needs 16, 2 and 4).</summary>
    public const int PartAlignment = 64;

    /// <summary>Computes the layout for <paramref name="size"/> descriptors.</summary>
    /// <param name="size">Queue size: a power of two from 1 to 32768.</param>
    /// <exception cref="ArgumentOutOfRangeException">The size is not a power of two in range.</exception>
    public SplitLayout(int size)
    {
        if (!IsValidSize(size))
        {
            throw new ArgumentOutOfRangeException(nameof(size), size, "a split queue size is a power of two from 1 to 32768");
        }

        Size = size;
        AvailOffset = Align(DescriptorTableBytes);
        UsedOffset = Align(AvailOffset + AvailBytes);
        TotalBytes = Align(UsedOffset + UsedBytes);
    }

    /// <summary>Queue size.</summary>
    public int Size { get; }

    /// <summary>Offset of the descriptor table (always 0).</summary>
    public int DescriptorTableOffset => 0;

    /// <summary>Bytes of the descriptor table: 16 * size.</summary>
    public int DescriptorTableBytes => DescriptorBytes * Size;

    /// <summary>Offset of the avail ring.</summary>
    public int AvailOffset { get; }

    /// <summary>Bytes of the avail ring: flags, idx, ring[size], used_event.</summary>
    public int AvailBytes => 6 + (2 * Size);

    /// <summary>Offset of the used ring.</summary>
    public int UsedOffset { get; }

    /// <summary>Bytes of the used ring: flags, idx, ring[size] of {id, len}, avail_event.</summary>
    public int UsedBytes => 6 + (UsedElementBytes * Size);

    /// <summary>Total bytes, a multiple of 64.</summary>
    public int TotalBytes { get; }

    /// <summary>The three part addresses when the ring is laid at <paramref name="baseAddress"/>.</summary>
    /// <param name="baseAddress">Guest-physical address of the descriptor table (64-byte aligned).</param>
    /// <returns>The part addresses.</returns>
    public SplitRingAddresses At(ulong baseAddress) =>
        new(baseAddress, baseAddress + (ulong)AvailOffset, baseAddress + (ulong)UsedOffset);

    /// <summary>Whether <paramref name="size"/> is a valid split queue size.</summary>
    /// <param name="size">The size.</param>
    /// <returns>True for a power of two from 1 to 32768.</returns>
    public static bool IsValidSize(int size) => size is > 0 and <= MaxSize && (size & (size - 1)) == 0;

    private static int Align(int value) => (value + PartAlignment - 1) & ~(PartAlignment - 1);
}

/// <summary>Guest-physical addresses of the three parts of a split virtqueue.</summary>
/// <param name="DescriptorTable">Descriptor table (16-byte aligned).</param>
/// <param name="AvailRing">Driver area, the avail ring (2-byte aligned).</param>
/// <param name="UsedRing">Device area, the used ring (4-byte aligned).</param>
public readonly record struct SplitRingAddresses(ulong DescriptorTable, ulong AvailRing, ulong UsedRing);

/// <summary>
/// Where a driver keeps indirect descriptor tables: one table of <paramref name="EntriesPerTable"/>
/// descriptors per buffer id, back to back from <paramref name="Address"/> (16 * entries * queue size bytes).
/// </summary>
/// <param name="Address">Guest-physical address of the first table (16-byte aligned).</param>
/// <param name="EntriesPerTable">Descriptors per table; a buffer with more segments goes direct.</param>
public readonly record struct IndirectArea(ulong Address, int EntriesPerTable)
{
    /// <summary>Bytes the area needs for a queue of <paramref name="queueSize"/>.</summary>
    /// <param name="queueSize">Queue size.</param>
    /// <returns>Bytes.</returns>
    public ulong BytesFor(int queueSize) => (ulong)queueSize * (ulong)EntriesPerTable * SplitLayout.DescriptorBytes;
}
