using System.Runtime.InteropServices;
using Rings.Memory;

namespace Rings.Split;

/// <summary>
/// <c>struct virtq_desc</c> (virtio 1.2 section 2.7.5): one entry of the descriptor table or of
/// an indirect table.
/// </summary>
[StructLayout(LayoutKind.Sequential, Size = RingLayout.DescriptorBytes)]
internal struct VirtqDesc
{
    /// <summary>Guest-physical address of the buffer (or of the indirect table).</summary>
    public ulong Addr;

    /// <summary>Length of the buffer (or of the indirect table) in bytes.</summary>
    public uint Len;

    /// <summary>NEXT, WRITE, INDIRECT (<see cref="SplitFlags"/>).</summary>
    public ushort Flags;

    /// <summary>The next descriptor of the chain, when <see cref="Flags"/> has NEXT.</summary>
    public ushort Next;

    public VirtqDesc(ulong addr, uint len, ushort flags, ushort next)
    {
        Addr = addr;
        Len = len;
        Flags = flags;
        Next = next;
    }
}

/// <summary>The <c>flags</c> and <c>idx</c> that open both the avail ring (2.7.6) and the used ring (2.7.8).</summary>
[StructLayout(LayoutKind.Sequential, Size = 4)]
internal struct VirtqRingHeader
{
    /// <summary>avail: VRING_AVAIL_F_NO_INTERRUPT; used: VRING_USED_F_NO_NOTIFY.</summary>
    public ushort Flags;

    /// <summary>The free-running index the writer publishes.</summary>
    public ushort Idx;
}

/// <summary>
/// <c>struct virtq_used_elem</c> (2.7.8): one entry of the used ring as it lies in memory (the
/// driver hands its callers a checked <see cref="Chains.UsedElement"/> instead).
/// </summary>
[StructLayout(LayoutKind.Sequential, Size = 8)]
internal struct VirtqUsedElem
{
    /// <summary>Head index of the used chain (32 bits wide; only values below the queue size are valid).</summary>
    public uint Id;

    /// <summary>Bytes written into the chain's device-writable part.</summary>
    public uint Len;

    public VirtqUsedElem(uint id, uint len)
    {
        Id = id;
        Len = len;
    }
}

/// <summary>
/// Typed pointers into one split ring's three areas, translated and checked once at setup:
/// descriptor table, avail ring (header, ring[size], used_event) and used ring (header,
/// ring[size], avail_event). Shared by the driver and the device side; which side may write
/// which field, and with what ordering, is decided at each use.
/// </summary>
internal readonly unsafe struct SplitRingMemory
{
    public readonly VirtqDesc* Descriptors;
    public readonly VirtqRingHeader* Avail;
    public readonly ushort* AvailRing;
    public readonly ushort* UsedEvent;
    public readonly VirtqRingHeader* Used;
    public readonly VirtqUsedElem* UsedRing;
    public readonly ushort* AvailEvent;

    /// <exception cref="ArgumentException">An area is misaligned (the spec asks 16, 2 and 4) or outside the memory table.</exception>
    public SplitRingMemory(GuestMemory memory, RingAreas areas, RingLayout layout)
    {
        var size = layout.Size;
        Descriptors = (VirtqDesc*)RingPart.Translate(memory, areas.DescriptorArea, (ulong)layout.DescriptorAreaBytes, 16, "descriptor table");
        Avail = (VirtqRingHeader*)RingPart.Translate(memory, areas.DriverArea, (ulong)layout.DriverAreaBytes, 2, "avail ring");
        Used = (VirtqRingHeader*)RingPart.Translate(memory, areas.DeviceArea, (ulong)layout.DeviceAreaBytes, 4, "used ring");
        AvailRing = (ushort*)(Avail + 1);
        UsedEvent = AvailRing + size;
        UsedRing = (VirtqUsedElem*)(Used + 1);
        AvailEvent = (ushort*)(UsedRing + size);
    }

    /// <summary>Bytes of the avail ring: header, ring[size], used_event.</summary>
    public static int AvailBytes(int size) => sizeof(VirtqRingHeader) + (sizeof(ushort) * size) + sizeof(ushort);

    /// <summary>Bytes of the used ring: header, ring[size] of virtq_used_elem, avail_event.</summary>
    public static int UsedBytes(int size) => sizeof(VirtqRingHeader) + (sizeof(VirtqUsedElem) * size) + sizeof(ushort);

    /// <summary>Zeroes all three areas (a driver's reset).</summary>
    public void Clear(int size)
    {
        new Span<VirtqDesc>(Descriptors, size).Clear();
        new Span<byte>(Avail, AvailBytes(size)).Clear();
        new Span<byte>(Used, UsedBytes(size)).Clear();
    }
}
