using System.Buffers.Binary;

namespace Rings.Linux.Net;

/// <summary>The receive offloads a driver negotiated: what a frame handed to it may still leave undone.</summary>
[Flags]
public enum GuestOffloads
{
    /// <summary>None: every frame must arrive whole and fully checksummed.</summary>
    None = 0,

    /// <summary>VIRTIO_NET_F_GUEST_CSUM (1): partial checksums (NEEDS_CSUM) are accepted.</summary>
    Csum = 1,

    /// <summary>VIRTIO_NET_F_GUEST_TSO4 (7): TCPV4 GSO frames are accepted.</summary>
    Tso4 = 2,

    /// <summary>VIRTIO_NET_F_GUEST_TSO6 (8): TCPV6 GSO frames are accepted.</summary>
    Tso6 = 4,

    /// <summary>VIRTIO_NET_F_GUEST_ECN (9): TSO frames with the ECN bit are accepted.</summary>
    Ecn = 8,

    /// <summary>VIRTIO_NET_F_GUEST_UFO (10): UDP (UFO) GSO frames are accepted.</summary>
    Ufo = 16,

    /// <summary>VIRTIO_NET_F_GUEST_USO4 (54): UDP_L4 GSO frames over IPv4 are accepted.</summary>
    Uso4 = 32,

    /// <summary>VIRTIO_NET_F_GUEST_USO6 (55): UDP_L4 GSO frames over IPv6 are accepted.</summary>
    Uso6 = 64,
}

/// <summary>What to do with a transmitted frame before a given destination may receive it.</summary>
public enum OffloadAction : byte
{
    /// <summary>Hand it over as it is (with <see cref="OffloadPlanner.ReceiveHeader"/>).</summary>
    Deliver,

    /// <summary>Complete its checksum first (<see cref="ChecksumOffload.Complete(Span{byte}, ref VirtioNetHeader, bool)"/>).</summary>
    CompleteChecksum,

    /// <summary>Cut it into fully checksummed frames (<see cref="GsoSegmenter"/>).</summary>
    Segment,
}

/// <summary>
/// Decides, per frame and destination, whether the offloads a sender used can pass through or must
/// be done in software; the switch between ports asks this before it copies a frame.
/// </summary>
public static class OffloadPlanner
{
    private static readonly (VirtioFeatures Feature, GuestOffloads Offload)[] FeatureMap =
    [
        (VirtioFeatures.NetGuestCsum, GuestOffloads.Csum),
        (VirtioFeatures.NetGuestTso4, GuestOffloads.Tso4),
        (VirtioFeatures.NetGuestTso6, GuestOffloads.Tso6),
        (VirtioFeatures.NetGuestEcn, GuestOffloads.Ecn),
        (VirtioFeatures.NetGuestUfo, GuestOffloads.Ufo),
        (VirtioFeatures.NetGuestUso4, GuestOffloads.Uso4),
        (VirtioFeatures.NetGuestUso6, GuestOffloads.Uso6),
    ];

    /// <summary>The guest offloads in a negotiated feature word (virtio 1.2 section 5.1.3).</summary>
    /// <param name="features">The features the driver accepted.</param>
    /// <returns>Its receive offloads.</returns>
    public static GuestOffloads FromFeatures(VirtioFeatures features)
    {
        var o = GuestOffloads.None;
        foreach (var (feature, offload) in FeatureMap)
        {
            if ((features & feature) != 0)
            {
                o |= offload;
            }
        }

        return o;
    }

    /// <summary>What must be done to <paramref name="frame"/> before <paramref name="destination"/> may receive it.</summary>
    /// <param name="frame">The Ethernet frame (only its EtherType is read, for UDP_L4).</param>
    /// <param name="header">The header the sender wrote.</param>
    /// <param name="destination">The destination driver's offloads.</param>
    /// <returns>Deliver, complete the checksum, or segment.</returns>
    public static OffloadAction Decide(ReadOnlySpan<byte> frame, in VirtioNetHeader header, GuestOffloads destination)
    {
        var type = (byte)(header.GsoType & ~VirtioNetGso.Ecn);
        if (type != VirtioNetGso.None)
        {
            var needed = type switch
            {
                VirtioNetGso.TcpV4 => GuestOffloads.Tso4,
                VirtioNetGso.TcpV6 => GuestOffloads.Tso6,
                VirtioNetGso.Udp => GuestOffloads.Ufo,
                VirtioNetGso.UdpL4 => IsIpv6(frame) ? GuestOffloads.Uso6 : GuestOffloads.Uso4,
                _ => (GuestOffloads)(-1),
            };
            if ((header.GsoType & VirtioNetGso.Ecn) != 0)
            {
                needed |= GuestOffloads.Ecn;
            }

            // Every GSO feature depends on GUEST_CSUM (section 5.1.3.1); an unknown type is left
            // to the segmenter, which names it.
            needed |= GuestOffloads.Csum;
            return (destination & needed) == needed ? OffloadAction.Deliver : OffloadAction.Segment;
        }

        return (header.Flags & VirtioNetHeader.FlagNeedsCsum) != 0 && (destination & GuestOffloads.Csum) == 0
            ? OffloadAction.CompleteChecksum
            : OffloadAction.Deliver;
    }

    /// <summary>
    /// The header a destination receives with a frame delivered as it is: the sender's offload
    /// fields, less DATA_VALID, which only a device that checked the checksum may set
    /// (section 5.1.6.4.1); num_buffers is left for the receive path.
    /// </summary>
    /// <param name="transmitted">The header the sender wrote.</param>
    /// <returns>The header to write in the destination's receive buffer.</returns>
    public static VirtioNetHeader ReceiveHeader(in VirtioNetHeader transmitted) => new()
    {
        Flags = (byte)(transmitted.Flags & VirtioNetHeader.FlagNeedsCsum),
        GsoType = transmitted.GsoType,
        HeaderLength = transmitted.HeaderLength,
        GsoSize = transmitted.GsoSize,
        CsumStart = transmitted.CsumStart,
        CsumOffset = transmitted.CsumOffset,
    };

    /// <summary>
    /// The header a destination receives with a frame the switch completed or cut: nothing left to
    /// do (gso_type NONE, no NEEDS_CSUM), and DATA_VALID when the driver negotiated GUEST_CSUM, since
    /// the checksum was just computed (section 5.1.6.4.1); without GUEST_CSUM flags must be 0.
    /// </summary>
    /// <param name="destination">The destination driver's offloads.</param>
    /// <returns>The header to write in the destination's receive buffer (num_buffers aside).</returns>
    public static VirtioNetHeader CompletedHeader(GuestOffloads destination) => new()
    {
        Flags = (destination & GuestOffloads.Csum) != 0 ? VirtioNetHeader.FlagDataValid : (byte)0,
    };

    private static bool IsIpv6(ReadOnlySpan<byte> frame)
    {
        if (frame.Length < 14)
        {
            return false;
        }

        var etherType = BinaryPrimitives.ReadUInt16BigEndian(frame[12..]);
        if (etherType == FrameLayout.EtherTypeVlan && frame.Length >= 18)
        {
            etherType = BinaryPrimitives.ReadUInt16BigEndian(frame[16..]);
        }

        return etherType == FrameLayout.EtherTypeIpv6;
    }
}
