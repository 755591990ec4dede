using Rings.Memory;
using Rings.Packed;

namespace Rings.Fuzz.Targets;

/// <summary>
/// Target (b): packed device-side chain walking (virtio 1.2 section 2.8). The fuzzer writes the
/// descriptor ring, the driver event suppression area and a data area (indirect tables and buffers);
/// the device then pops until nothing more is available or the ring is broken. Every part sits in
/// its own region pressed against a guard page. Buffers are translated through a table without the
/// device event suppression area, which the device itself writes.
/// </summary>
/// <remarks>
/// Input: byte 0 = queue size (bits 0-2 index <see cref="Sizes"/>), INDIRECT_DESC (bit 3),
/// EVENT_IDX (bit 4), IN_ORDER (bit 5); u16 start position (bits 0-14, modulo the size; bit 15 set
/// starts both wrap counters at 0 instead of 1), byte behaviour (<see cref="DrainBehaviour"/> in bits 0-1 and 4, bit 2: enable kicks at the end,
/// bit 3: disable kicks first); then 16 x size bytes of descriptor ring, 4 bytes of driver area, and
/// the data area (the rest, up to <see cref="DataBytes"/>). Missing bytes are zero.
/// </remarks>
public static class PackedChainTarget
{
    /// <summary>Guest-physical address of the data area.</summary>
    public const ulong DataAddress = 0;

    /// <summary>Bytes of the data area.</summary>
    public const int DataBytes = 8192;

    /// <summary>Guest-physical address of the descriptor ring.</summary>
    public const ulong DescriptorAddress = 0x1_0000;

    /// <summary>Guest-physical address of the driver event suppression area.</summary>
    public const ulong DriverAreaAddress = 0x2_0000;

    /// <summary>Guest-physical address of the device event suppression area.</summary>
    public const ulong DeviceAreaAddress = 0x3_0000;

    /// <summary>Bytes before the descriptor ring.</summary>
    public const int HeaderBytes = 4;

    /// <summary>The queue sizes a target can pick (packed sizes need not be powers of two).</summary>
    public static ReadOnlySpan<int> Sizes => [1, 2, 3, 4, 5, 8, 17, 64];

    [ThreadStatic]
    private static Memory?[]? t_memory;

    /// <summary>Runs one input.</summary>
    /// <param name="data">The fuzzer's bytes.</param>
    public static void Run(ReadOnlySpan<byte> data)
    {
        var input = new FuzzInput(data);
        var config = input.Byte();
        var pick = config & 7;
        var size = Sizes[pick];
        var features = VirtioFeatures.None;
        if ((config & 8) != 0)
        {
            features |= VirtioFeatures.IndirectDescriptors;
        }

        if ((config & 16) != 0)
        {
            features |= VirtioFeatures.EventIndex;
        }

        if ((config & 32) != 0)
        {
            features |= VirtioFeatures.InOrder;
        }

        var start = input.UInt16();
        var behaviour = input.Byte();

        var m = MemoryFor(pick, size);
        m.Descriptors.Load(input.Take(m.Descriptors.Length));
        m.DriverArea.Load(input.Take(m.DriverArea.Length));
        m.Data.Load(input.Rest);
        m.DeviceArea.Bytes.Clear();

        var ring = new PackedDeviceRing(m.RingTable, m.BufferTable, new RingAreas(DescriptorAddress, DriverAreaAddress, DeviceAreaAddress), size, features);
        var position = (ushort)((start & 0x7FFF) % size);
        var wrap = (start & 0x8000) == 0; // both counters start at 1 (2.8.1); the input's bit clears it
        ring.Restore(new RingPosition(position, wrap, position, wrap));
        if ((behaviour & 8) != 0)
        {
            ring.DisableAvailNotifications();
        }

        var pops = DeviceChainChecks.Drain(ring, m.All, (2 * size) + 2, (DrainBehaviour)(behaviour & 0x13));
        DeviceChainChecks.CheckVerdict(ring, ring.BrokenReason);
        if ((behaviour & (int)DrainBehaviour.WriteBuffers) == 0)
        {
            // Unless the device writes into buffers that alias the ring, only the fuzzer made
            // descriptors available: at most one lap of them (the device's own used writes never
            // look available to it on the next lap).
            FuzzViolation.Check(pops <= size, $"{pops} chains popped from a ring of {size} written once");
        }

        if ((behaviour & 4) != 0)
        {
            ring.EnableAvailNotifications();
        }
    }

    private static Memory MemoryFor(int pick, int size)
    {
        var cache = t_memory ??= new Memory?[8];
        return cache[pick] ??= new Memory(size);
    }

    private sealed class Memory
    {
        public Memory(int size)
        {
            var layout = RingFormat.Packed.Layout(size);
            Descriptors = new GuardedRegion(layout.DescriptorAreaBytes, DescriptorAddress, 16);
            DriverArea = new GuardedRegion(layout.DriverAreaBytes, DriverAreaAddress, 4);
            DeviceArea = new GuardedRegion(layout.DeviceAreaBytes, DeviceAreaAddress, 4);
            Data = new GuardedRegion(DataBytes, DataAddress, 4096);
            All = [Descriptors, DriverArea, DeviceArea, Data];
            RingTable = new GuestMemory([Descriptors.Region, DriverArea.Region, DeviceArea.Region, Data.Region]);
            BufferTable = new GuestMemory([Descriptors.Region, DriverArea.Region, Data.Region]);
        }

        public GuardedRegion Descriptors { get; }

        public GuardedRegion DriverArea { get; }

        public GuardedRegion DeviceArea { get; }

        public GuardedRegion Data { get; }

        public GuardedRegion[] All { get; }

        public GuestMemory RingTable { get; }

        public GuestMemory BufferTable { get; }
    }
}
