namespace Rings.Linux.Runtime;

/// <summary>
/// Why a frame was not delivered. Every drop is counted on one port by reason (see
/// <see cref="PortCounters.Drops(DropReason)"/>): reasons found on arrival or chosen by the processor
/// count on the ingress port, reasons found on the way out count on the destination port.
/// </summary>
public enum DropReason : byte
{
    /// <summary>Not a drop (the decision of a frame still to be delivered).</summary>
    None = 0,

    /// <summary>The processor left the frame without a decision; counted on the ingress port.</summary>
    Undecided,

    /// <summary>The destination had no room (no receive buffer, a full handoff); counted on the destination. Never waited for.</summary>
    DestinationFull,

    /// <summary>Longer than the destination takes (its MTU, or its receive buffers without MRG_RXBUF); counted on the destination.</summary>
    OverMtu,

    /// <summary>Shorter than an Ethernet header (14 bytes); counted on the ingress port.</summary>
    Runt,

    /// <summary>The frame or its virtio-net header could not be taken as it came (for example more segments than a frame may have); counted on the ingress port.</summary>
    Malformed,

    /// <summary>The processor found nowhere to send it; counted on the ingress port.</summary>
    NoRoute,

    /// <summary>The processor chose to drop it; counted on the ingress port.</summary>
    Filtered,

    /// <summary>The destination's link was down (counted on the destination), or a flood found no other port up (counted on the ingress port).</summary>
    LinkDown,

    /// <summary>
    /// The frame needs an offload the destination lacks and software could not do it (a checksum
    /// field outside the frame; a GSO frame the segmenter refuses: headers it cannot parse, or more
    /// than 256 segments); counted on the destination.
    /// </summary>
    OffloadUnsupported,
}

/// <summary>Helpers over <see cref="DropReason"/>.</summary>
public static class DropReasons
{
    /// <summary>Number of <see cref="DropReason"/> values (the size of a per-reason counter array).</summary>
    public const int Count = (int)DropReason.OffloadUnsupported + 1;

    /// <summary>The reason as a short lower-case name for tables and logs.</summary>
    /// <param name="reason">The reason.</param>
    /// <returns>For example <c>destination-full</c>.</returns>
    public static string Name(DropReason reason) => reason switch
    {
        DropReason.None => "none",
        DropReason.Undecided => "undecided",
        DropReason.DestinationFull => "destination-full",
        DropReason.OverMtu => "over-mtu",
        DropReason.Runt => "runt",
        DropReason.Malformed => "malformed",
        DropReason.NoRoute => "no-route",
        DropReason.Filtered => "filtered",
        DropReason.LinkDown => "link-down",
        DropReason.OffloadUnsupported => "offload-unsupported",
        _ => $"reason-{(int)reason}",
    };
}
