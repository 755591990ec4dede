using System.Buffers.Binary;
using Rings.Memory;
using Rings.Split;

namespace Rings.Fuzz.Targets;

/// <summary>
/// Target (a): split device-side chain walking (virtio 1.2 section 2.7). The fuzzer writes the
/// descriptor table, the avail ring and a data area (indirect tables and buffers); the device then
/// pops until the ring is empty or broken. Every part sits in its own region pressed against a guard
/// page, so a read past any of them faults. Buffers are translated through a table of the
/// descriptor table, avail ring and data area (not the used ring).
/// </summary>
/// <remarks>
/// Input: byte 0 = queue size exponent (bits 0-2), INDIRECT_DESC (bit 3), EVENT_IDX (bit 4),
/// IN_ORDER (bit 5); u16 device start index; u16 used.idx; byte behaviour (<see cref="DrainBehaviour"/> in bits 0-1 and 4,
/// bit 2: enable kicks at the end, bit 3: disable kicks first); then 16 x size bytes of descriptor
/// table, 6 + 2 x size bytes of avail ring, and the data area (the rest, up to <see cref="DataBytes"/>).
/// Missing bytes are zero.
/// </remarks>
public static class SplitChainTarget
{
    /// <summary>Guest-physical address of the data area (indirect tables and buffers).</summary>
    public const ulong DataAddress = 0;

    /// <summary>Bytes of the data area.</summary>
    public const int DataBytes = 8192;

    /// <summary>Guest-physical address of the descriptor table.</summary>
    public const ulong DescriptorAddress = 0x1_0000;

    /// <summary>Guest-physical address of the avail ring.</summary>
    public const ulong AvailAddress = 0x2_0000;

    /// <summary>Guest-physical address of the used ring.</summary>
    public const ulong UsedAddress = 0x3_0000;

    /// <summary>Bytes before the descriptor table.</summary>
    public const int HeaderBytes = 6;

    [ThreadStatic]
    private static Memory?[]? t_memory;

    /// <summary>Runs one input.</summary>
    /// <param name="data">The fuzzer's bytes.</param>
    public static void Run(ReadOnlySpan<byte> data)
    {
        var input = new FuzzInput(data);
        var config = input.Byte();
        var shift = config & 7;
        var size = 1 << shift;
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
            features |= VirtioFeatures.InOrder; // the drain returns chains in pop order, as IN_ORDER asks
        }

        var start = input.UInt16();
        var usedStart = input.UInt16();
        var behaviour = input.Byte();

        var m = MemoryFor(shift);
        m.Descriptors.Load(input.Take(m.Descriptors.Length));
        m.Avail.Load(input.Take(m.Avail.Length));
        m.Data.Load(input.Rest);
        m.Used.Bytes.Clear();
        BinaryPrimitives.WriteUInt16LittleEndian(m.Used.Bytes[2..], usedStart);

        var ring = new SplitDeviceRing(m.RingTable, m.BufferTable, new RingAreas(DescriptorAddress, AvailAddress, UsedAddress), size, features);
        ring.Restore(new RingPosition(start));
        if ((behaviour & 8) != 0)
        {
            ring.DisableAvailNotifications();
        }

        // Snapshot what the driver published; unless the device writes into buffers (which may
        // alias the ring), ring memory stays as loaded and the outcome is exactly predictable.
        var stable = (behaviour & (int)DrainBehaviour.WriteBuffers) == 0;
        var availIndex = BinaryPrimitives.ReadUInt16LittleEndian(m.Avail.Bytes[2..]);
        var ahead = (ushort)(availIndex - start);
        var heads = m.Avail.Bytes.Slice(4, 2 * size).ToArray();
        var pops = DeviceChainChecks.Drain(ring, m.All, (2 * size) + 2, (DrainBehaviour)(behaviour & 0x13), stable
            ? (n, token) =>
            {
                // The id is the head the avail ring named at that position (2.7.6).
                var head = BinaryPrimitives.ReadUInt16LittleEndian(heads.AsSpan(((start + n) & (size - 1)) * 2));
                FuzzViolation.Check(token.Id == head, $"pop {n} returned id {token.Id}, the avail ring names {head}");
            }
        : null);

        DeviceChainChecks.CheckVerdict(ring, ring.BrokenReason);
        if (stable)
        {
            if (ahead > size)
            {
                // 2.7.13: never more than a ring ahead.
                FuzzViolation.Check(pops == 0 && ring.BrokenReason == BrokenReason.AvailIndexTooFarAhead,
                    $"avail index {ahead} ahead of a ring of {size}: {pops} pops, {ring.BrokenReason}");
            }
            else
            {
                // Either every published chain was popped, or the walk stopped at a bad one and broke the ring.
                FuzzViolation.Check(pops == ahead ? !ring.IsBroken : pops < ahead && ring.IsBroken,
                    $"{ahead} published, {pops} popped, broken: {ring.BrokenReason}");
            }
        }

        if ((behaviour & 4) != 0)
        {
            ring.EnableAvailNotifications();
        }
    }

    private static Memory MemoryFor(int shift)
    {
        var cache = t_memory ??= new Memory?[8];
        return cache[shift] ??= new Memory(1 << shift);
    }

    private sealed class Memory
    {
        public Memory(int size)
        {
            var layout = RingFormat.Split.Layout(size);
            Descriptors = new GuardedRegion(layout.DescriptorAreaBytes, DescriptorAddress, 16);
            Avail = new GuardedRegion(layout.DriverAreaBytes, AvailAddress, 2);
            Used = new GuardedRegion(layout.DeviceAreaBytes, UsedAddress, 4);
            Data = new GuardedRegion(DataBytes, DataAddress, 4096);
            All = [Descriptors, Avail, Used, Data];
            RingTable = new GuestMemory([Descriptors.Region, Avail.Region, Used.Region, Data.Region]);

            // Buffers may alias the driver's parts of the ring but not the used ring, which the device
            // itself rewrites as it goes: that keeps a run without buffer writes exactly predictable.
            BufferTable = new GuestMemory([Descriptors.Region, Avail.Region, Data.Region]);
        }

        public GuardedRegion Descriptors { get; }

        public GuardedRegion Avail { get; }

        public GuardedRegion Used { get; }

        public GuardedRegion Data { get; }

        public GuardedRegion[] All { get; }

        public GuestMemory RingTable { get; }

        public GuestMemory BufferTable { get; }
    }
}
