using System.Buffers.Binary;

namespace Rings.Linux.Net;

/// <summary>
/// <c>struct virtio_net_hdr_v1</c> (virtio 1.2 section 5.1.6): the 12 bytes that precede every
/// frame on a virtio-net queue once VERSION_1 is negotiated. Little-endian on the wire.
/// </summary>
public struct VirtioNetHeader
{
    /// <summary>Size of the header in bytes.</summary>
    public const int Size = 12;

    /// <summary>Where num_buffers (little-endian, 2 bytes) lies in the header (5.1.6).</summary>
    public const int NumBuffersOffset = 10;

    /// <summary>VIRTIO_NET_HDR_F_NEEDS_CSUM: csum_start/csum_offset are meaningful.</summary>
    public const byte FlagNeedsCsum = 1;

    /// <summary>VIRTIO_NET_HDR_F_DATA_VALID: the checksum has been validated.</summary>
    public const byte FlagDataValid = 2;

    /// <summary>VIRTIO_NET_HDR_GSO_NONE.</summary>
    public const byte GsoNone = 0;

    /// <summary>flags.</summary>
    public byte Flags;

    /// <summary>gso_type.</summary>
    public byte GsoType;

    /// <summary>hdr_len.</summary>
    public ushort HeaderLength;

    /// <summary>gso_size.</summary>
    public ushort GsoSize;

    /// <summary>csum_start.</summary>
    public ushort CsumStart;

    /// <summary>csum_offset.</summary>
    public ushort CsumOffset;

    /// <summary>num_buffers: how many receive buffers a merged frame spans (MRG_RXBUF; 1 otherwise on receive).</summary>
    public ushort NumBuffers;

    /// <summary>Reads a header from the first 12 bytes of <paramref name="source"/>.</summary>
    /// <param name="source">At least 12 bytes.</param>
    /// <param name="header">The header when it fits.</param>
    /// <returns>False when fewer than 12 bytes were given.</returns>
    public static bool TryRead(ReadOnlySpan<byte> source, out VirtioNetHeader header)
    {
        if (source.Length < Size)
        {
            header = default;
            return false;
        }

        header = new VirtioNetHeader
        {
            Flags = source[0],
            GsoType = source[1],
            HeaderLength = BinaryPrimitives.ReadUInt16LittleEndian(source[2..]),
            GsoSize = BinaryPrimitives.ReadUInt16LittleEndian(source[4..]),
            CsumStart = BinaryPrimitives.ReadUInt16LittleEndian(source[6..]),
            CsumOffset = BinaryPrimitives.ReadUInt16LittleEndian(source[8..]),
            NumBuffers = BinaryPrimitives.ReadUInt16LittleEndian(source[NumBuffersOffset..]),
        };
        return true;
    }

    /// <summary>Writes this header into the first 12 bytes of <paramref name="destination"/>.</summary>
    /// <param name="destination">At least 12 bytes.</param>
    /// <returns>False when fewer than 12 bytes were given.</returns>
    public readonly bool TryWrite(Span<byte> destination)
    {
        if (destination.Length < Size)
        {
            return false;
        }

        // Two stores (8 and 4 bytes) rather than one per field: the header usually goes into a
        // buffer whose line is on the other side's core, and every store waits for that line.
        BinaryPrimitives.WriteUInt64LittleEndian(
            destination,
            Flags | ((ulong)GsoType << 8) | ((ulong)HeaderLength << 16) | ((ulong)GsoSize << 32) | ((ulong)CsumStart << 48));
        BinaryPrimitives.WriteUInt32LittleEndian(destination[8..], CsumOffset | ((uint)NumBuffers << 16));
        return true;
    }
}
