using System.Buffers.Binary;
using Rings.Chains;
using Rings.Memory;
using Rings.Packed;
using Rings.Split;

namespace Rings.Tests.Packed;

/// <summary>Packed descriptor flag values as the spec writes them (2.8), independent of the library's.</summary>
internal static class Pf
{
    public const ushort Next = 1;
    public const ushort Write = 2;
    public const ushort Indirect = 4;
    public const ushort Avail = 1 << 7;
    public const ushort Used = 1 << 15;

    /// <summary>AVAIL/USED bits of a descriptor made available with wrap counter <paramref name="wrap"/>.</summary>
    public static ushort AvailBits(bool wrap) => wrap ? Avail : Used;

    /// <summary>AVAIL/USED bits of a used descriptor with wrap counter <paramref name="wrap"/>.</summary>
    public static ushort UsedBits(bool wrap) => wrap ? (ushort)(Avail | Used) : (ushort)0;
}

/// <summary>
/// One packed ring, both sides, in one native region: the ring parts, an indirect area with a
/// table per buffer id, and three buffer slots per buffer id.
/// </summary>
internal sealed unsafe class PackedRig : IDisposable
{
    public const ulong GuestBase = 0x4000_0000;
    public const int SlotBytes = 128;
    public const int SlotsPerId = 3;

    public PackedRig(int size, VirtioFeatures features = VirtioFeatures.None, int indirectEntries = 4)
    {
        Size = size;
        Layout = RingFormat.Packed.Layout(size);
        var ringBytes = (ulong)Layout.TotalBytes;
        IndirectEntries = Math.Min(indirectEntries, size);
        var indirectBytes = Align((ulong)size * (ulong)Math.Max(IndirectEntries, 1) * 16);
        var bufferBytes = (ulong)size * SlotsPerId * SlotBytes;
        Region = new NativeRegion(ringBytes + indirectBytes + bufferBytes, GuestBase);
        Memory = new GuestMemory(Region.Region);
        Addresses = Layout.At(GuestBase);
        IndirectAddress = GuestBase + ringBytes;
        BuffersAddress = IndirectAddress + indirectBytes;
        Features = features;
        IndirectArea? area = IndirectEntries >= 2 ? new IndirectArea(IndirectAddress, IndirectEntries) : null;
        Driver = new PackedDriverRing(Memory, Addresses, size, features, area);
        Device = new PackedDeviceRing(Memory, Addresses, size, features);
    }

    public int Size { get; }

    public int IndirectEntries { get; }

    public VirtioFeatures Features { get; }

    public RingLayout Layout { get; }

    public NativeRegion Region { get; }

    public GuestMemory Memory { get; }

    public RingAreas Addresses { get; }

    public ulong IndirectAddress { get; }

    public ulong BuffersAddress { get; }

    public PackedDriverRing Driver { get; }

    public PackedDeviceRing Device { get; set; }

    /// <summary>A buffer slot's guest address.</summary>
    public ulong SlotAddress(int slot) => BuffersAddress + ((ulong)slot * SlotBytes);

    /// <summary>A segment over buffer slot <paramref name="slot"/>.</summary>
    public BufferSegment Slot(int slot, uint length = SlotBytes) => new(SlotAddress(slot), length);

    /// <summary>The bytes of a buffer slot.</summary>
    public Span<byte> SlotBytesOf(int slot) => Region.Slice(SlotAddress(slot) - GuestBase, SlotBytes);

    /// <summary>The 16 bytes of descriptor <paramref name="position"/>.</summary>
    public Span<byte> Descriptor(int position) => Region.Slice((ulong)position * 16, 16);

    /// <summary>The whole descriptor ring.</summary>
    public Span<byte> Ring => Region.Slice(0, Size * 16);

    public Span<byte> DriverEvent => Region.Slice((ulong)Layout.DriverAreaOffset, 4);

    public Span<byte> DeviceEvent => Region.Slice((ulong)Layout.DeviceAreaOffset, 4);

    public ushort FlagsAt(int position) => BinaryPrimitives.ReadUInt16LittleEndian(Descriptor(position)[14..]);

    public ushort IdAt(int position) => BinaryPrimitives.ReadUInt16LittleEndian(Descriptor(position)[12..]);

    public uint LengthAt(int position) => BinaryPrimitives.ReadUInt32LittleEndian(Descriptor(position)[8..]);

    /// <summary>Writes a descriptor as a (possibly hostile) driver or device would.</summary>
    public void WriteDescriptor(int position, ulong address, uint length, ushort id, ushort flags) =>
        WriteEntry(Descriptor(position), address, length, id, flags);

    /// <summary>Writes a 16-byte descriptor into <paramref name="d"/>.</summary>
    public static void WriteEntry(Span<byte> d, ulong address, uint length, ushort id, ushort flags)
    {
        BinaryPrimitives.WriteUInt64LittleEndian(d, address);
        BinaryPrimitives.WriteUInt32LittleEndian(d[8..], length);
        BinaryPrimitives.WriteUInt16LittleEndian(d[12..], id);
        BinaryPrimitives.WriteUInt16LittleEndian(d[14..], flags);
    }

    /// <summary>Bytes of the region at a guest address.</summary>
    public Span<byte> At(ulong guestAddress, int length) => Region.Slice(guestAddress - GuestBase, length);

    /// <summary>Whether a validated segment lies wholly inside the region.</summary>
    public bool Inside(ChainSegment segment)
    {
        if (segment.Length == 0)
        {
            return true;
        }

        fixed (byte* p = segment.Span)
        {
            var start = (ulong)p;
            var begin = (ulong)Region.HostAddress;
            return start >= begin && start + segment.Length <= begin + Region.Length;
        }
    }

    /// <summary>A new device side over the same ring (a restarted backend).</summary>
    public PackedDeviceRing NewDevice() => new(Memory, Addresses, Size, Features);

    public void Dispose() => Region.Dispose();

    private static ulong Align(ulong value) => (value + 63) & ~63UL;
}

/// <summary>One split ring, both sides, in one native region (for the IN_ORDER tests).</summary>
internal sealed class SplitRig : IDisposable
{
    public const ulong GuestBase = 0x2000_0000;
    public const int SlotBytes = 128;

    public SplitRig(int size, VirtioFeatures features)
    {
        Size = size;
        var layout = RingFormat.Split.Layout(size);
        var ringBytes = (ulong)layout.TotalBytes;
        Region = new NativeRegion(ringBytes + ((ulong)size * 3 * SlotBytes), GuestBase);
        Memory = new GuestMemory(Region.Region);
        BuffersAddress = GuestBase + ringBytes;
        Driver = new SplitDriverRing(Memory, layout.At(GuestBase), size, features);
        Device = new SplitDeviceRing(Memory, layout.At(GuestBase), size, features);
        Layout = layout;
    }

    public int Size { get; }

    public RingLayout Layout { get; }

    public NativeRegion Region { get; }

    public GuestMemory Memory { get; }

    public ulong BuffersAddress { get; }

    public SplitDriverRing Driver { get; }

    public SplitDeviceRing Device { get; }

    public BufferSegment Slot(int slot, uint length = SlotBytes) => new(BuffersAddress + ((ulong)slot * SlotBytes), length);

    public void Dispose() => Region.Dispose();
}
