using Rings.Memory;

namespace Rings;

/// <summary>
/// The byte layout of one ring, from <see cref="RingFormat.Layout"/>: the descriptor area, the
/// driver area and the device area (virtio 1.2 section 2.6) one after another, each
/// <see cref="RingFormat.AreaAlignment"/>-aligned. Split rings: descriptor table, avail ring, used
/// ring (2.7). Packed rings: descriptor ring, driver and device event suppression (2.8.10.1).
/// </summary>
public readonly record struct RingLayout
{
    /// <summary>Bytes of one descriptor in either format (2.7.5, 2.8.13), and of an indirect table entry.</summary>
    public const int DescriptorBytes = 16;

    internal RingLayout(RingFormat format, int size, int descriptorAreaBytes, int driverAreaBytes, int deviceAreaBytes)
    {
        Format = format;
        Size = size;
        DescriptorAreaBytes = descriptorAreaBytes;
        DriverAreaBytes = driverAreaBytes;
        DeviceAreaBytes = deviceAreaBytes;
        DriverAreaOffset = Align(descriptorAreaBytes);
        DeviceAreaOffset = Align(DriverAreaOffset + driverAreaBytes);
        TotalBytes = Align(DeviceAreaOffset + deviceAreaBytes);
    }

    /// <summary>The format.</summary>
    public RingFormat Format { get; }

    /// <summary>Queue size.</summary>
    public int Size { get; }

    /// <summary>Offset of the descriptor area (always 0).</summary>
    public int DescriptorAreaOffset => 0;

    /// <summary>Bytes of the descriptor area: 16 per descriptor.</summary>
    public int DescriptorAreaBytes { get; }

    /// <summary>Offset of the driver area (written by the driver).</summary>
    public int DriverAreaOffset { get; }

    /// <summary>Bytes of the driver area: split, flags, idx, ring[size], used_event; packed, one event suppression structure.</summary>
    public int DriverAreaBytes { get; }

    /// <summary>Offset of the device area (written by the device).</summary>
    public int DeviceAreaOffset { get; }

    /// <summary>Bytes of the device area: split, flags, idx, ring[size] of {id, len}, avail_event; packed, one event suppression structure.</summary>
    public int DeviceAreaBytes { get; }

    /// <summary>Total bytes, a multiple of <see cref="RingFormat.AreaAlignment"/>.</summary>
    public int TotalBytes { get; }

    /// <summary>The three area addresses when the ring is laid at <paramref name="baseAddress"/>.</summary>
    /// <param name="baseAddress">Address of the descriptor area (<see cref="RingFormat.AreaAlignment"/>-aligned).</param>
    /// <returns>The area addresses.</returns>
    public RingAreas At(ulong baseAddress) =>
        new(baseAddress, baseAddress + (ulong)DriverAreaOffset, baseAddress + (ulong)DeviceAreaOffset);

    private static int Align(int value) => (value + RingFormat.AreaAlignment - 1) & ~(RingFormat.AreaAlignment - 1);
}

/// <summary>
/// Addresses of the three areas of a virtqueue (virtio 1.2 section 2.6). Split rings: descriptor
/// table, avail ring, used ring. Packed rings: descriptor ring, driver event suppression, device
/// event suppression.
/// </summary>
/// <param name="DescriptorArea">Descriptor table or ring.</param>
/// <param name="DriverArea">Avail ring (split) or driver event suppression (packed).</param>
/// <param name="DeviceArea">Used ring (split) or device event suppression (packed).</param>
public readonly record struct RingAreas(ulong DescriptorArea, ulong DriverArea, ulong DeviceArea);

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
    public ulong BytesFor(int queueSize) => (ulong)queueSize * (ulong)EntriesPerTable * RingLayout.DescriptorBytes;

    /// <summary>
    /// For a driver ring of either format: checks the area (2 to <paramref name="queueSize"/>
    /// entries per table, all of it inside <paramref name="memory"/>, 16-byte aligned) and returns
    /// where its first table lies in this process, or zero when there is no area or
    /// INDIRECT_DESC was not negotiated.
    /// </summary>
    /// <param name="area">The area, or null.</param>
    /// <param name="memory">The memory table.</param>
    /// <param name="queueSize">Queue size.</param>
    /// <param name="features">Negotiated features.</param>
    /// <returns>The area's local address, or zero when indirect tables are not used.</returns>
    internal static nint Map(IndirectArea? area, GuestMemory memory, int queueSize, VirtioFeatures features)
    {
        if (area is not { } a || (features & VirtioFeatures.IndirectDescriptors) == 0)
        {
            return 0;
        }

        ArgumentOutOfRangeException.ThrowIfLessThan(a.EntriesPerTable, 2, "indirect");
        ArgumentOutOfRangeException.ThrowIfGreaterThan(a.EntriesPerTable, queueSize, "indirect");
        return RingPart.Translate(memory, a.Address, a.BytesFor(queueSize), 16, "indirect area");
    }
}
