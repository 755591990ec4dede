using System.Buffers.Binary;

namespace Rings.Linux.Net;

/// <summary>
/// Completes a partial checksum in software (virtio 1.2 section 5.1.6.2): the driver that set
/// VIRTIO_NET_HDR_F_NEEDS_CSUM left the pseudo-header sum in the checksum field; the ones'
/// complement of the sum from csum_start to the end of the frame goes at csum_start + csum_offset.
/// </summary>
public static class ChecksumOffload
{
    private const int UdpChecksumOffset = 6;

    /// <summary>
    /// Completes the checksum of <paramref name="frame"/> when its header asks for it and rewrites the
    /// header for a receiving driver: NEEDS_CSUM cleared, DATA_VALID set when
    /// <paramref name="markDataValid"/> (only for a driver that negotiated VIRTIO_NET_F_GUEST_CSUM,
    /// section 5.1.6.4.1). A header without NEEDS_CSUM is left as it is.
    /// </summary>
    /// <param name="frame">The Ethernet frame (without the virtio_net_hdr).</param>
    /// <param name="header">The frame's header; updated on success.</param>
    /// <param name="markDataValid">True to set DATA_VALID: the destination negotiated GUEST_CSUM.</param>
    /// <returns>Ok, or which offset falls outside the frame (then neither frame nor header changed).</returns>
    public static OffloadStatus Complete(Span<byte> frame, ref VirtioNetHeader header, bool markDataValid)
    {
        if ((header.Flags & VirtioNetHeader.FlagNeedsCsum) == 0)
        {
            return OffloadStatus.Ok;
        }

        var status = Complete(frame, header.CsumStart, header.CsumOffset);
        if (status != OffloadStatus.Ok)
        {
            return status;
        }

        header.Flags = markDataValid ? VirtioNetHeader.FlagDataValid : (byte)0;
        header.CsumStart = 0;
        header.CsumOffset = 0;
        return OffloadStatus.Ok;
    }

    /// <summary>Completes the checksum that starts at <paramref name="csumStart"/> and is stored <paramref name="csumOffset"/> bytes after it.</summary>
    /// <param name="frame">The Ethernet frame (without the virtio_net_hdr).</param>
    /// <param name="csumStart">csum_start from the header.</param>
    /// <param name="csumOffset">csum_offset from the header.</param>
    /// <returns>Ok, or which offset falls outside the frame (then nothing was written).</returns>
    public static OffloadStatus Complete(Span<byte> frame, ushort csumStart, ushort csumOffset)
    {
        if (csumStart > frame.Length)
        {
            return OffloadStatus.ChecksumStartBeyondFrame;
        }

        // Both are 16-bit, so the sum cannot overflow an int.
        var field = csumStart + csumOffset;
        if (field + 2 > frame.Length)
        {
            return OffloadStatus.ChecksumFieldBeyondFrame;
        }

        // At csum_offset 6 the field is UDP's (RFC 768), where 0 means "no checksum"; elsewhere
        // (TCP at 16) the plain complement is stored, as RFC 1624 asks.
        var sum = InternetChecksum.Sum(frame[csumStart..]);
        var check = csumOffset == UdpChecksumOffset ? Finalize(sum) : (ushort)~sum;
        BinaryPrimitives.WriteUInt16BigEndian(frame[field..], check);
        return OffloadStatus.Ok;
    }

    /// <summary>
    /// The value stored for a folded sum: its complement, with 0 sent as 0xFFFF (equal in ones'
    /// complement, and 0 means "no checksum" to UDP, RFC 768).
    /// </summary>
    /// <param name="sum">The folded sum over the covered bytes (checksum field 0 or the pseudo-header sum).</param>
    /// <returns>The checksum field value.</returns>
    internal static ushort Finalize(ushort sum)
    {
        var check = (ushort)~sum;
        return check == 0 ? (ushort)0xFFFF : check;
    }
}
