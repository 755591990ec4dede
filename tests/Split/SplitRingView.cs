using System.Buffers.Binary;
using Rings.Split;
using Rings.Tests.Conformance;

namespace Rings.Tests.Split;

/// <summary>
/// The fields of a split ring read and written straight from memory by the spec's layout
/// (virtio 1.2 section 2.7, little-endian), independently of the ring classes.
/// </summary>
public sealed class SplitRingView
{
    private readonly GuardedMemory _memory;

    /// <param name="memory">Where the ring lives.</param>
    /// <param name="layout">Its layout.</param>
    /// <param name="addresses">Its part addresses.</param>
    public SplitRingView(GuardedMemory memory, RingLayout layout, RingAreas addresses)
    {
        _memory = memory;
        Size = layout.Size;
        Addresses = addresses;
    }

    /// <summary>Queue size.</summary>
    public int Size { get; }

    /// <summary>Part addresses.</summary>
    public RingAreas Addresses { get; }

    /// <summary>Flag VIRTQ_DESC_F_NEXT.</summary>
    public const ushort Next = 1;

    /// <summary>Flag VIRTQ_DESC_F_WRITE.</summary>
    public const ushort Write = 2;

    /// <summary>Flag VIRTQ_DESC_F_INDIRECT.</summary>
    public const ushort Indirect = 4;

    /// <summary>Writes descriptor <paramref name="index"/> of the descriptor table.</summary>
    public void WriteDescriptor(int index, ulong address, uint length, ushort flags, ushort next) =>
        WriteDescriptorAt(_memory, Addresses.DescriptorArea + (ulong)(16 * index), address, length, flags, next);

    /// <summary>Writes a 16-byte descriptor at any guest address (e.g. inside an indirect table).</summary>
    public static void WriteDescriptorAt(GuardedMemory memory, ulong at, ulong address, uint length, ushort flags, ushort next)
    {
        var d = memory.Bytes(at, 16);
        BinaryPrimitives.WriteUInt64LittleEndian(d, address);
        BinaryPrimitives.WriteUInt32LittleEndian(d[8..], length);
        BinaryPrimitives.WriteUInt16LittleEndian(d[12..], flags);
        BinaryPrimitives.WriteUInt16LittleEndian(d[14..], next);
    }

    /// <summary>Reads descriptor <paramref name="index"/>.</summary>
    public (ulong Address, uint Length, ushort Flags, ushort Next) ReadDescriptor(int index)
    {
        var d = _memory.Bytes(Addresses.DescriptorArea + (ulong)(16 * index), 16);
        return (BinaryPrimitives.ReadUInt64LittleEndian(d), BinaryPrimitives.ReadUInt32LittleEndian(d[8..]),
            BinaryPrimitives.ReadUInt16LittleEndian(d[12..]), BinaryPrimitives.ReadUInt16LittleEndian(d[14..]));
    }

    /// <summary>avail.flags.</summary>
    public ushort AvailFlags { get => Get(Addresses.DriverArea); set => Set(Addresses.DriverArea, value); }

    /// <summary>avail.idx.</summary>
    public ushort AvailIdx { get => Get(Addresses.DriverArea + 2); set => Set(Addresses.DriverArea + 2, value); }

    /// <summary>avail.used_event (after ring[Size]).</summary>
    public ushort UsedEvent { get => Get(Addresses.DriverArea + 4 + (ulong)(2 * Size)); set => Set(Addresses.DriverArea + 4 + (ulong)(2 * Size), value); }

    /// <summary>avail.ring[index mod Size].</summary>
    public ushort GetAvailEntry(ushort index) => Get(Addresses.DriverArea + 4 + (ulong)(2 * (index % Size)));

    /// <summary>Sets avail.ring[index mod Size].</summary>
    public void SetAvailEntry(ushort index, ushort head) => Set(Addresses.DriverArea + 4 + (ulong)(2 * (index % Size)), head);

    /// <summary>used.flags.</summary>
    public ushort UsedFlags { get => Get(Addresses.DeviceArea); set => Set(Addresses.DeviceArea, value); }

    /// <summary>used.idx.</summary>
    public ushort UsedIdx { get => Get(Addresses.DeviceArea + 2); set => Set(Addresses.DeviceArea + 2, value); }

    /// <summary>used.avail_event (after ring[Size]).</summary>
    public ushort AvailEvent { get => Get(Addresses.DeviceArea + 4 + (ulong)(8 * Size)); set => Set(Addresses.DeviceArea + 4 + (ulong)(8 * Size), value); }

    /// <summary>used.ring[index mod Size].</summary>
    public (uint Id, uint Length) GetUsedEntry(ushort index)
    {
        var e = _memory.Bytes(Addresses.DeviceArea + 4 + (ulong)(8 * (index % Size)), 8);
        return (BinaryPrimitives.ReadUInt32LittleEndian(e), BinaryPrimitives.ReadUInt32LittleEndian(e[4..]));
    }

    /// <summary>Sets used.ring[index mod Size].</summary>
    public void SetUsedEntry(ushort index, uint id, uint length)
    {
        var e = _memory.Bytes(Addresses.DeviceArea + 4 + (ulong)(8 * (index % Size)), 8);
        BinaryPrimitives.WriteUInt32LittleEndian(e, id);
        BinaryPrimitives.WriteUInt32LittleEndian(e[4..], length);
    }

    private ushort Get(ulong address) => BinaryPrimitives.ReadUInt16LittleEndian(_memory.Bytes(address, 2));

    private void Set(ulong address, ushort value) => BinaryPrimitives.WriteUInt16LittleEndian(_memory.Bytes(address, 2), value);
}
