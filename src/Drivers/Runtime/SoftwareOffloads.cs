using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using Rings.Linux.Net;

namespace Rings.Linux.Runtime;

/// <summary>
/// What to do with a frame whose virtio-net header asks for an offload its destination did not
/// negotiate: a partial checksum is completed here (5.1.6.2: sum from csum_start to the end,
/// stored at csum_start + csum_offset); segmentation is not done here, so such a frame is dropped
/// as <see cref="DropReason.OffloadUnsupported"/>.
/// </summary>
internal static class SoftwareOffloads
{
    private const byte GsoTcp4 = 1;
    private const byte GsoUdp = 3;
    private const byte GsoTcp6 = 4;
    private const byte GsoUdpL4 = 5;
    private const byte GsoEcn = 0x80;

    /// <summary>True when the header asks for anything beyond a complete frame.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool AsksForOffload(in VirtioNetHeader header) =>
        (header.Flags & VirtioNetHeader.FlagNeedsCsum) != 0 || header.GsoType != VirtioNetHeader.GsoNone;

    /// <summary>True when <paramref name="accepted"/> covers everything the header asks for.</summary>
    public static bool Accepts(PortOffloads accepted, in VirtioNetHeader header)
    {
        if ((header.Flags & VirtioNetHeader.FlagNeedsCsum) != 0 && (accepted & PortOffloads.Checksum) == 0)
        {
            return false;
        }

        if ((header.GsoType & GsoEcn) != 0 && (accepted & PortOffloads.Ecn) == 0)
        {
            return false;
        }

        return (header.GsoType & ~GsoEcn) switch
        {
            VirtioNetHeader.GsoNone => true,
            GsoTcp4 => (accepted & PortOffloads.Tso4) != 0,
            GsoTcp6 => (accepted & PortOffloads.Tso6) != 0,
            GsoUdpL4 => (accepted & PortOffloads.Uso) != 0,
            GsoUdp => false, // UFO: deprecated, never negotiated here
            _ => false,
        };
    }

    /// <summary>
    /// Makes the frame a complete one: computes a partial checksum in a private copy and clears
    /// the request. False for a GSO frame or a checksum position outside the frame.
    /// </summary>
    public static bool TryComplete(FrameBurst burst, int frame)
    {
        ref var header = ref burst.Header(frame);
        if (header.GsoType != VirtioNetHeader.GsoNone)
        {
            return false;
        }

        if ((header.Flags & VirtioNetHeader.FlagNeedsCsum) == 0)
        {
            return true;
        }

        var length = burst.Length(frame);
        int start = header.CsumStart;
        var field = start + header.CsumOffset;
        if (start >= length || field + 2 > length)
        {
            return false;
        }

        var bytes = burst.Writable(frame);

        // The field holds the pseudo-header sum the sender seeded; summing over it completes the checksum.
        var sum = (ushort)~InternetChecksum.Sum(bytes[start..]);
        if (sum == 0 && header.CsumOffset == 6)
        {
            // UDP: a computed 0 is sent as all ones (RFC 768).
            sum = 0xFFFF;
        }

        BinaryPrimitives.WriteUInt16BigEndian(bytes[field..], sum);
        header.Flags = (byte)(header.Flags & ~VirtioNetHeader.FlagNeedsCsum);
        header.CsumStart = 0;
        header.CsumOffset = 0;
        return true;
    }
}
