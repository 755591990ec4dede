using System.Runtime.CompilerServices;
using Rings.Linux.Net;

namespace Rings.Linux.Runtime;

/// <summary>
/// What to do with a frame whose virtio-net header asks for an offload its destination did not
/// negotiate: a partial checksum is completed here (5.1.6.2: sum from csum_start to the end,
/// stored at csum_start + csum_offset); a GSO frame is cut by the worker's
/// <see cref="SoftwareSegmentation"/> instead.
/// </summary>
internal static class SoftwareOffloads
{
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

        if ((header.GsoType & VirtioNetGso.Ecn) != 0 && (accepted & PortOffloads.Ecn) == 0)
        {
            return false;
        }

        return (header.GsoType & ~VirtioNetGso.Ecn) switch
        {
            VirtioNetGso.None => true,
            VirtioNetGso.TcpV4 => (accepted & PortOffloads.Tso4) != 0,
            VirtioNetGso.TcpV6 => (accepted & PortOffloads.Tso6) != 0,
            VirtioNetGso.UdpL4 => (accepted & PortOffloads.Uso) != 0,
            VirtioNetGso.Udp => false, // UFO: deprecated, never negotiated here
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

        // Checked before the copy, so a checksum outside the frame costs no copy.
        if (header.CsumStart + header.CsumOffset + 2 > burst.Length(frame))
        {
            return false;
        }

        // Flags 0 after: DATA_VALID is for a device that checked a received checksum, not for a
        // transmitted frame (5.1.6.4.1); the destination port decides its own receive flags.
        return ChecksumOffload.Complete(burst.Writable(frame), ref header, markDataValid: false) == OffloadStatus.Ok;
    }
}
