using System.Buffers.Binary;

namespace Rings.Linux.Net;

/// <summary>
/// The virtio-net device configuration space (virtio 1.2 section 5.1.4), as a device answers
/// VHOST_USER_GET_CONFIG: <c>mac[6]</c>, <c>status</c> (le16), <c>max_virtqueue_pairs</c> (le16),
/// <c>mtu</c> (le16), <c>speed</c> (le32) and <c>duplex</c> (u8); the RSS fields after them are not
/// offered (no VIRTIO_NET_F_RSS). Nothing in it is writable by the driver.
/// </summary>
/// <param name="Mac">The device's MAC address (meaningful with VIRTIO_NET_F_MAC).</param>
/// <param name="Status">VIRTIO_NET_S_LINK_UP (1) and VIRTIO_NET_S_ANNOUNCE (2) bits.</param>
/// <param name="MaxVirtqueuePairs">Queue pairs the device has (meaningful with VIRTIO_NET_F_MQ), 1 to 0x8000.</param>
/// <param name="Mtu">The largest MTU the driver should use (meaningful with VIRTIO_NET_F_MTU).</param>
public readonly record struct VirtioNetConfig(MacAddress Mac, ushort Status, ushort MaxVirtqueuePairs, ushort Mtu)
{
    /// <summary>Bytes of the space as offered: up to and including <c>duplex</c>.</summary>
    public const int Size = 17;

    /// <summary>VIRTIO_NET_S_LINK_UP: the link is up.</summary>
    public const ushort LinkUp = 1;

    /// <summary>Offset of <c>status</c>.</summary>
    public const int StatusOffset = 6;

    /// <summary>Offset of <c>max_virtqueue_pairs</c>.</summary>
    public const int MaxVirtqueuePairsOffset = 8;

    /// <summary>Offset of <c>mtu</c>.</summary>
    public const int MtuOffset = 10;

    // speed is unknown (0xFFFFFFFF) and duplex unknown (0xFF): a software device has neither.
    private const int SpeedOffset = 12;
    private const int DuplexOffset = 16;

    /// <summary>The whole space, little-endian as 5.1.4 lays it out.</summary>
    /// <param name="destination">At least <see cref="Size"/> bytes.</param>
    public void Encode(Span<byte> destination)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(destination.Length, Size, nameof(destination));
        Mac.WriteTo(destination);
        BinaryPrimitives.WriteUInt16LittleEndian(destination[StatusOffset..], Status);
        BinaryPrimitives.WriteUInt16LittleEndian(destination[MaxVirtqueuePairsOffset..], MaxVirtqueuePairs);
        BinaryPrimitives.WriteUInt16LittleEndian(destination[MtuOffset..], Mtu);
        BinaryPrimitives.WriteUInt32LittleEndian(destination[SpeedOffset..], uint.MaxValue);
        destination[DuplexOffset] = 0xFF;
    }

    /// <summary>
    /// Reads <paramref name="size"/> bytes at <paramref name="offset"/>, as GET_CONFIG asks. The
    /// access must be at least one byte and lie inside the space; offset and
    /// size are checked without overflow whatever a peer sends.
    /// </summary>
    /// <param name="offset">Byte offset into the space.</param>
    /// <param name="size">Bytes wanted.</param>
    /// <param name="bytes">The bytes, or empty when refused.</param>
    /// <returns>Null, or why the access is refused.</returns>
    public string? TryRead(uint offset, uint size, out byte[] bytes)
    {
        bytes = [];
        if (size == 0)
        {
            return "config access of 0 bytes";
        }

        if (offset > Size || size > Size - offset)
        {
            return $"config access at offset {offset} of {size} bytes reaches past the {Size}-byte virtio-net config space";
        }

        Span<byte> space = stackalloc byte[Size];
        Encode(space);
        bytes = space.Slice((int)offset, (int)size).ToArray();
        return null;
    }
}
