using System.Runtime.InteropServices;
using Rings.Memory;

namespace Rings.Packed;

/// <summary>
/// <c>struct pvirtq_desc</c> (virtio 1.2 section 2.8.13): one entry of the descriptor ring or of
/// an indirect table. The driver makes it available and the device writes it back used, so
/// <see cref="Flags"/> is what each side publishes last and the other reads first.
/// </summary>
[StructLayout(LayoutKind.Sequential, Size = RingLayout.DescriptorBytes)]
internal struct PvirtqDesc
{
    /// <summary>Guest-physical address of the buffer (or of the indirect table); reserved when used.</summary>
    public ulong Addr;

    /// <summary>Buffer length; when used, the bytes the device wrote.</summary>
    public uint Len;

    /// <summary>Buffer id (in the last descriptor of a list).</summary>
    public ushort Id;

    /// <summary>NEXT, WRITE, INDIRECT, AVAIL, USED (<see cref="PackedFlags"/>).</summary>
    public ushort Flags;

    public PvirtqDesc(ulong addr, uint len, ushort id, ushort flags)
    {
        Addr = addr;
        Len = len;
        Id = id;
        Flags = flags;
    }

    /// <summary>
    /// <see cref="Len"/>, <see cref="Id"/> and <see cref="Flags"/> as the one little-endian
    /// 8-byte word they fill (bytes 8 to 15), for a side that writes them with one store: the
    /// descriptor's line is usually on the other side's core, and each store waits for it.
    /// </summary>
    public static ulong LenIdFlags(uint len, ushort id, ushort flags) => len | ((ulong)id << 32) | ((ulong)flags << 48);
}

/// <summary>
/// <c>struct pvirtq_event_suppress</c> (2.8.14): <c>off_wrap</c> and <c>flags</c>, also seen as
/// one 32-bit <see cref="Word"/> so a side reads (or writes) both with one access and never pairs
/// a new flag with a stale offset.
/// </summary>
[StructLayout(LayoutKind.Explicit, Size = 4)]
internal struct PvirtqEventSuppress
{
    /// <summary>Bits 0-14 descriptor offset, bit 15 wrap counter (used with RING_EVENT_FLAGS_DESC).</summary>
    [FieldOffset(0)]
    public ushort OffWrap;

    /// <summary>RING_EVENT_FLAGS_ENABLE, DISABLE or DESC.</summary>
    [FieldOffset(2)]
    public ushort Flags;

    /// <summary>Both fields as one little-endian word: off_wrap in the low half, flags in the high half.</summary>
    [FieldOffset(0)]
    public uint Word;

    public PvirtqEventSuppress(uint word)
    {
        OffWrap = 0;
        Flags = 0;
        Word = word;
    }

    public PvirtqEventSuppress(ushort offWrap, ushort flags)
    {
        Word = 0;
        OffWrap = offWrap;
        Flags = flags;
    }
}

/// <summary>
/// Typed pointers into one packed ring's three areas, translated and checked once at setup: the
/// descriptor ring, the driver event suppression structure (written by the driver) and the device
/// event suppression structure (written by the device).
/// </summary>
internal readonly unsafe struct PackedRingMemory
{
    /// <summary>Bytes of an event suppression structure.</summary>
    public const int EventSuppressionBytes = 4;

    public readonly PvirtqDesc* Descriptors;
    public readonly PvirtqEventSuppress* DriverEvent;
    public readonly PvirtqEventSuppress* DeviceEvent;

    /// <exception cref="ArgumentException">An area is misaligned (the spec asks 16, 4 and 4) or outside the memory table.</exception>
    public PackedRingMemory(GuestMemory memory, RingAreas areas, RingLayout layout)
    {
        Descriptors = (PvirtqDesc*)RingPart.Translate(memory, areas.DescriptorArea, (ulong)layout.DescriptorAreaBytes, 16, "descriptor ring");
        DriverEvent = (PvirtqEventSuppress*)RingPart.Translate(memory, areas.DriverArea, EventSuppressionBytes, 4, "driver event suppression");
        DeviceEvent = (PvirtqEventSuppress*)RingPart.Translate(memory, areas.DeviceArea, EventSuppressionBytes, 4, "device event suppression");
    }
}
