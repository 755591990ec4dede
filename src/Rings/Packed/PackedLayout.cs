namespace Rings.Packed;

/// <summary>
/// Byte layout of a packed virtqueue of a given size (virtio 1.2 section 2.8.10.1): the descriptor
/// ring, the driver event suppression structure (driver area) and the device event suppression
/// structure (device area), laid one after another with each part 64-byte aligned so the parts
/// written by different sides never share a cache line.
/// </summary>
public readonly struct PackedLayout
{
    /// <summary>Largest queue size the spec allows (2.8: up to 2^15 entries).</summary>
    public const int MaxSize = 32768;

    /// <summary>Bytes per descriptor: <c>{u64 addr; u32 len; u16 id; u16 flags}</c> (2.8.13).</summary>
    public const int DescriptorBytes = 16;

    /// <summary>Bytes of one event suppression structure: <c>{u16 off_wrap; u16 flags}</c> (2.8.14).</summary>
    public const int EventSuppressionBytes = 4;

    /// <summary>Alignment Rings gives each part (the spec needs 16, 4 and 4).</summary>
    public const int PartAlignment = 64;

    /// <summary>Computes the layout for <paramref name="size"/> descriptors.</summary>
    /// <param name="size">Queue size: any value from 1 to 32768 (2.8.10.1: it need not be a power of two).</param>
    /// <exception cref="ArgumentOutOfRangeException">The size is 0, negative or above 32768.</exception>
    public PackedLayout(int size)
    {
        if (!IsValidSize(size))
        {
            throw new ArgumentOutOfRangeException(nameof(size), size, "a packed queue size is from 1 to 32768");
        }

        Size = size;
        DriverAreaOffset = Align(DescriptorRingBytes);
        DeviceAreaOffset = Align(DriverAreaOffset + EventSuppressionBytes);
        TotalBytes = Align(DeviceAreaOffset + EventSuppressionBytes);
    }

    /// <summary>Queue size.</summary>
    public int Size { get; }

    /// <summary>Offset of the descriptor ring (always 0).</summary>
    public int DescriptorRingOffset => 0;

    /// <summary>Bytes of the descriptor ring: 16 * size.</summary>
    public int DescriptorRingBytes => DescriptorBytes * Size;

    /// <summary>Offset of the driver event suppression structure (written by the driver).</summary>
    public int DriverAreaOffset { get; }

    /// <summary>Offset of the device event suppression structure (written by the device).</summary>
    public int DeviceAreaOffset { get; }

    /// <summary>Total bytes, a multiple of 64.</summary>
    public int TotalBytes { get; }

    /// <summary>The three part addresses when the ring is laid at <paramref name="baseAddress"/>.</summary>
    /// <param name="baseAddress">Guest-physical address of the descriptor ring (64-byte aligned).</param>
    /// <returns>The part addresses.</returns>
    public PackedRingAddresses At(ulong baseAddress) =>
        new(baseAddress, baseAddress + (ulong)DriverAreaOffset, baseAddress + (ulong)DeviceAreaOffset);

    /// <summary>Whether <paramref name="size"/> is a valid packed queue size.</summary>
    /// <param name="size">The size.</param>
    /// <returns>True for 1 to 32768.</returns>
    public static bool IsValidSize(int size) => size is > 0 and <= MaxSize;

    private static int Align(int value) => (value + PartAlignment - 1) & ~(PartAlignment - 1);
}

/// <summary>Guest-physical addresses of the three parts of a packed virtqueue.</summary>
/// <param name="DescriptorRing">Descriptor area, the descriptor ring (16-byte aligned).</param>
/// <param name="DriverArea">Driver area, the driver event suppression structure (4-byte aligned).</param>
/// <param name="DeviceArea">Device area, the device event suppression structure (4-byte aligned).</param>
public readonly record struct PackedRingAddresses(ulong DescriptorRing, ulong DriverArea, ulong DeviceArea);
