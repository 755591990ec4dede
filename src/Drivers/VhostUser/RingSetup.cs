using Rings.Memory;
using Rings.Split;

namespace Rings.Linux.VhostUser;

/// <summary>
/// The three areas of a virtqueue (virtio 1.2 section 2.6): descriptor area, driver area and
/// device area. Split rings: descriptor table, avail ring, used ring. Packed rings: descriptor
/// ring, driver event suppression, device event suppression.
/// </summary>
/// <param name="DescriptorArea">Descriptor table or ring.</param>
/// <param name="DriverArea">Avail ring (split) or driver event suppression (packed).</param>
/// <param name="DeviceArea">Used ring (split) or device event suppression (packed).</param>
public readonly record struct RingAreas(ulong DescriptorArea, ulong DriverArea, ulong DeviceArea);

/// <summary>Everything a back-end needs to build the device side of one ring.</summary>
/// <param name="RingMemory">Translates the ring areas (the front-end's user addresses).</param>
/// <param name="BufferMemory">Translates descriptor addresses (guest-physical).</param>
/// <param name="Areas">The ring areas, in <paramref name="RingMemory"/>'s address space.</param>
/// <param name="Size">Queue size.</param>
/// <param name="Features">The negotiated virtio feature word.</param>
/// <param name="Position">Where the device resumes (from SET_VRING_BASE).</param>
public readonly record struct DeviceRingSetup(GuestMemory RingMemory, GuestMemory BufferMemory, RingAreas Areas, int Size, ulong Features, RingPosition Position);

/// <summary>Everything a front-end needs to build the driver side of one ring.</summary>
/// <param name="Memory">The front-end's memory, keyed by guest-physical address.</param>
/// <param name="Areas">The ring areas, guest-physical.</param>
/// <param name="Size">Queue size.</param>
/// <param name="Features">The negotiated virtio feature word.</param>
public readonly record struct DriverRingSetup(GuestMemory Memory, RingAreas Areas, int Size, ulong Features);

/// <summary>Builds the device side of a ring; throws <see cref="ArgumentException"/> when an area is misaligned or outside memory.</summary>
/// <param name="setup">The ring's setup.</param>
/// <returns>The device ring, positioned at <see cref="DeviceRingSetup.Position"/>.</returns>
public delegate IDeviceRing DeviceRingFactory(in DeviceRingSetup setup);

/// <summary>Builds the driver side of a ring over zeroed ring memory.</summary>
/// <param name="setup">The ring's setup.</param>
/// <returns>The driver ring.</returns>
public delegate IDriverRing DriverRingFactory(in DriverRingSetup setup);

/// <summary>Ring layouts and factories per format (split, or packed when RING_PACKED is negotiated).</summary>
public static class RingFormats
{
    /// <summary>Largest queue size either format allows.</summary>
    public const int MaxQueueSize = 32768;

    /// <summary>Bytes of a packed ring's event suppression structure {u16 off_wrap; u16 flags} (2.8.10).</summary>
    public const int PackedEventSuppressionBytes = 4;

    /// <summary>Alignment Rings gives each area (keeps driver- and device-written lines apart).</summary>
    public const int AreaAlignment = 64;

    /// <summary>Builds a packed device ring (2.8), positioned where SET_VRING_BASE said.</summary>
    public static DeviceRingFactory PackedDevice { get; } = static (in DeviceRingSetup s) =>
    {
        var ring = new Rings.Packed.PackedDeviceRing(
            s.RingMemory,
            s.BufferMemory,
            new Rings.Packed.PackedRingAddresses(s.Areas.DescriptorArea, s.Areas.DriverArea, s.Areas.DeviceArea),
            s.Size,
            FeatureBits.ToRingFeatures(s.Features));
        try
        {
            ring.Restore(s.Position);
        }
        catch (ArgumentOutOfRangeException e)
        {
            throw new ArgumentException($"packed base {s.Position} is not a position in a ring of {s.Size}: {e.Message}");
        }

        return ring;
    };

    /// <summary>Builds a packed driver ring (2.8) over zeroed ring memory.</summary>
    public static DriverRingFactory PackedDriver { get; } = static (in DriverRingSetup s) =>
        new Rings.Packed.PackedDriverRing(
            s.Memory,
            new Rings.Packed.PackedRingAddresses(s.Areas.DescriptorArea, s.Areas.DriverArea, s.Areas.DeviceArea),
            s.Size,
            FeatureBits.ToRingFeatures(s.Features));

    /// <summary>Builds the device side of a split ring (the default back-end factory).</summary>
    public static DeviceRingFactory SplitDevice { get; } = static (in DeviceRingSetup s) =>
    {
        var ring = new SplitDeviceRing(
            s.RingMemory,
            s.BufferMemory,
            new SplitRingAddresses(s.Areas.DescriptorArea, s.Areas.DriverArea, s.Areas.DeviceArea),
            s.Size,
            FeatureBits.ToRingFeatures(s.Features));
        ring.Restore(s.Position);
        return ring;
    };

    /// <summary>Builds the driver side of a split ring (the default front-end factory).</summary>
    public static DriverRingFactory SplitDriver { get; } = static (in DriverRingSetup s) =>
        new SplitDriverRing(
            s.Memory,
            new SplitRingAddresses(s.Areas.DescriptorArea, s.Areas.DriverArea, s.Areas.DeviceArea),
            s.Size,
            FeatureBits.ToRingFeatures(s.Features));

    /// <summary>Whether <paramref name="size"/> is a valid queue size for the format.</summary>
    /// <param name="packed">True for a packed ring (any size 1-32768), false for split (a power of two).</param>
    /// <param name="size">The size.</param>
    /// <returns>True when valid.</returns>
    public static bool IsValidSize(bool packed, long size) =>
        packed ? size is > 0 and <= MaxQueueSize : size is > 0 and <= MaxQueueSize && SplitLayout.IsValidSize((int)size);

    /// <summary>Bytes of the three areas of a ring (virtio 1.2 sections 2.7 and 2.8).</summary>
    /// <param name="packed">True for packed.</param>
    /// <param name="size">Queue size.</param>
    /// <returns>Bytes of descriptor, driver and device areas.</returns>
    public static (ulong Descriptor, ulong Driver, ulong Device) AreaBytes(bool packed, int size) =>
        packed
            ? ((ulong)size * 16, PackedEventSuppressionBytes, PackedEventSuppressionBytes)
            : ((ulong)size * 16, 6 + (2 * (ulong)size), 6 + (8 * (ulong)size));

    /// <summary>
    /// Lays a ring out from <paramref name="baseAddress"/>: each area <see cref="AreaAlignment"/>-aligned, one after another.
    /// </summary>
    /// <param name="packed">True for packed.</param>
    /// <param name="size">Queue size.</param>
    /// <param name="baseAddress">Address of the descriptor area (64-byte aligned).</param>
    /// <param name="totalBytes">Bytes the ring occupies.</param>
    /// <returns>The area addresses.</returns>
    public static RingAreas Layout(bool packed, int size, ulong baseAddress, out ulong totalBytes)
    {
        if (!IsValidSize(packed, size))
        {
            throw new ArgumentOutOfRangeException(nameof(size), size, packed ? "a packed queue size is 1 to 32768" : "a split queue size is a power of two from 1 to 32768");
        }

        var bytes = AreaBytes(packed, size);
        var driver = Align(bytes.Descriptor);
        var device = Align(driver + bytes.Driver);
        totalBytes = Align(device + bytes.Device);
        return new RingAreas(baseAddress, baseAddress + driver, baseAddress + device);
    }

    /// <summary>
    /// Decodes a vhost-user vring base. Packed bases carry the avail position and wrap counter in
    /// bits 0-15 and the used ones in bits 16-31 (QEMU); a peer that sends only the low half
    /// (DPDK) means the used position equals the avail position, as it does for a stopped ring.
    /// </summary>
    /// <param name="value">The 32-bit num field.</param>
    /// <param name="packed">True for a packed ring.</param>
    /// <returns>The position.</returns>
    public static RingPosition DecodeBase(uint value, bool packed)
    {
        if (packed && (value >> 16) == 0)
        {
            var avail = RingPosition.FromVhostBase(value, packed: true);
            return avail with { UsedIndex = avail.AvailIndex, UsedWrapCounter = avail.AvailWrapCounter };
        }

        return RingPosition.FromVhostBase(value, packed);
    }

    private static ulong Align(ulong value) => (value + AreaAlignment - 1) & ~(ulong)(AreaAlignment - 1);
}
