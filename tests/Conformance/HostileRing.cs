using System.Buffers.Binary;
using FsCheck;
using FsCheck.Fluent;
using Rings.Chains;

namespace Rings.Tests.Conformance;

/// <summary>How a hostile write is shaped.</summary>
public enum PatchKind
{
    /// <summary>Random bytes.</summary>
    Raw,

    /// <summary>A u16 (index, flags or next field), aligned.</summary>
    U16,

    /// <summary>A u32 (length or used id), aligned.</summary>
    U32,

    /// <summary>A u64 address, aligned: inside, at the edges of, or far outside guest memory.</summary>
    Address,

    /// <summary>
    /// A whole 16-byte descriptor, 16-aligned: a plausible address and length, then two u16 that are
    /// each index-like or flags-like (fits the split <c>flags, next</c> and the packed <c>id, flags</c>).
    /// </summary>
    Descriptor,
}

/// <summary>One hostile write into ring memory.</summary>
/// <param name="Area">Which of the victim's areas (modulo their count).</param>
/// <param name="Offset">Where in it (modulo its length, aligned to the value's width).</param>
/// <param name="Kind">The shape of the value.</param>
/// <param name="Pick">Which family of values.</param>
/// <param name="Value">Random bits the value is made from.</param>
/// <param name="Raw">The bytes of a <see cref="PatchKind.Raw"/> patch.</param>
public sealed record Patch(int Area, int Offset, PatchKind Kind, int Pick, ulong Value, byte[] Raw)
{
    /// <inheritdoc/>
    public override string ToString() => Kind == PatchKind.Raw
        ? $"Raw(a{Area},o{Offset},{Convert.ToHexString(Raw)})"
        : $"{Kind}(a{Area},o{Offset},p{Pick},0x{Value:x})";
}

/// <summary>A hostile run: an honest start, then rounds of hostile writes, each followed by the victim's work.</summary>
public sealed record HostileScenario(RingSetup Setup, int HonestAdds, int HonestPops, Patch[][] Rounds)
{
    /// <inheritdoc/>
    public override string ToString() =>
        $"{Setup}, honest adds {HonestAdds}, pops {HonestPops}, rounds: {string.Join(" | ", Rounds.Select(r => string.Join(' ', r.Select(p => p.ToString()))))}";
}

/// <summary>
/// Hostile-memory checks for any ring format: random and half-plausible bytes written into the
/// memory the peer controls never make the victim throw, hang, touch memory outside the memory
/// table, or (driver side) hand back a buffer that is not outstanding.
/// </summary>
public static class HostileRing
{
    private static readonly ulong[] EdgeLengths = [0, 1, 15, 16, 17, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFF];

    /// <summary>Generator of hostile scenarios.</summary>
    public static Gen<HostileScenario> Scenarios(IRingFormat format) =>
        from setup in RingModel.Setups(format)
        where setup.Size <= 4096
        from adds in Gen.Choose(0, Math.Min(setup.Size, 64))
        from pops in Gen.Choose(0, adds)
        from rounds in Gen.Choose(1, 8)
        from patches in Gen.ArrayOf(Gen.Choose(1, 5).SelectMany(n => Gen.ArrayOf(Patches, n)), rounds)
        select new HostileScenario(setup, adds, pops, patches);

    /// <summary>Shrinks by dropping rounds and patches.</summary>
    public static IEnumerable<HostileScenario> Shrink(HostileScenario s)
    {
        for (var i = 0; i < s.Rounds.Length; i++)
        {
            if (s.Rounds.Length > 1)
            {
                yield return s with { Rounds = [.. s.Rounds[..i], .. s.Rounds[(i + 1)..]] };
            }
        }

        for (var i = 0; i < s.Rounds.Length; i++)
        {
            for (var j = 0; j < s.Rounds[i].Length && s.Rounds[i].Length > 1; j++)
            {
                var round = s.Rounds[i];
                Patch[][] rounds = [.. s.Rounds];
                rounds[i] = [.. round[..j], .. round[(j + 1)..]];
                yield return s with { Rounds = rounds };
            }
        }

        if (s.HonestPops > 0)
        {
            yield return s with { HonestPops = 0 };
        }

        if (s.HonestAdds > 0)
        {
            yield return s with { HonestAdds = s.HonestAdds / 2, HonestPops = Math.Min(s.HonestPops, s.HonestAdds / 2) };
        }
    }

    private static Gen<Patch> Patches =>
        from area in Gen.Choose(0, 1 << 16)
        from offset in Gen.Frequency((1, Gen.Choose(0, 127)), (1, Gen.Choose(0, int.MaxValue))) // live descriptors sit low
        from kind in Gen.Frequency(
            (2, Gen.Constant(PatchKind.Raw)),
            (4, Gen.Constant(PatchKind.U16)),
            (3, Gen.Constant(PatchKind.U32)),
            (3, Gen.Constant(PatchKind.Address)),
            (4, Gen.Constant(PatchKind.Descriptor)))
        from pick in Gen.Choose(0, 7)
        from hi in Gen.Choose(int.MinValue, int.MaxValue)
        from lo in Gen.Choose(int.MinValue, int.MaxValue)
        from raw in kind == PatchKind.Raw ? Gen.Choose(1, 48).SelectMany(n => Gen.ArrayOf(Gen.Choose(0, 255).Select(b => (byte)b), n)) : Gen.Constant(Array.Empty<byte>())
        select new Patch(area, offset, kind, pick, ((ulong)(uint)hi << 32) | (uint)lo, raw);

    /// <summary>Writes <paramref name="patch"/> into one of <paramref name="areas"/>.</summary>
    /// <param name="memory">The guest memory.</param>
    /// <param name="areas">The areas the attacker controls.</param>
    /// <param name="allAreas">Every ring area (plausible targets for addresses).</param>
    /// <param name="size">Queue size (plausible index range).</param>
    /// <param name="hintIndex">A ring index near which index values are plausible.</param>
    /// <param name="patch">The write.</param>
    public static void Apply(GuardedMemory memory, IReadOnlyList<MemoryArea> areas, IReadOnlyList<MemoryArea> allAreas, int size, ushort hintIndex, Patch patch)
    {
        var area = areas[patch.Area % areas.Count];
        if (patch.Kind == PatchKind.Descriptor)
        {
            var tables = areas.Where(a => a.HoldsDescriptors).ToArray();
            if (tables.Length == 0)
            {
                return;
            }

            area = tables[patch.Area % tables.Length];
        }

        var v = patch.Value;
        var width = patch.Kind switch
        {
            PatchKind.Raw => Math.Min(patch.Raw.Length, area.Length),
            PatchKind.U16 => 2,
            PatchKind.U32 => 4,
            PatchKind.Address => 8,
            _ => 16,
        };
        if (width > area.Length)
        {
            return;
        }

        var offset = patch.Offset % (area.Length - width + 1);
        if (patch.Kind != PatchKind.Raw)
        {
            offset &= ~(width - 1);
        }

        var target = memory.Bytes(area.Address + (ulong)offset, width);
        switch (patch.Kind)
        {
            case PatchKind.Raw:
                patch.Raw.AsSpan(0, width).CopyTo(target);
                break;
            case PatchKind.U16:
                BinaryPrimitives.WriteUInt16LittleEndian(target, Index16(patch.Pick, v, size, hintIndex));
                break;
            case PatchKind.U32:
                BinaryPrimitives.WriteUInt32LittleEndian(target, Length32(patch.Pick, v, size));
                break;
            case PatchKind.Address:
                BinaryPrimitives.WriteUInt64LittleEndian(target, Address64(patch.Pick, v, memory, allAreas));
                break;
            case PatchKind.Descriptor:
                var mixed = (v * 0x9E37_79B9_7F4A_7C15UL) ^ (v >> 29);
                ulong address;
                uint length;
                var k = (uint)(mixed % 80);
                var keepTail = patch.Pick < 2; // only address and length: the flags stay plausible
                switch (patch.Pick % 5)
                {
                    case 0 or 2: // ends exactly at, just before or just past the end of guest memory
                        address = memory.Base + memory.Length - k;
                        length = k + (uint)((mixed >> 8) % 3) - 1;
                        break;
                    case 1 or 3: // starts just below guest memory
                        address = memory.Base - 1 - (k % 16);
                        length = k + 1;
                        break;
                    default:
                        address = Address64((int)(mixed >> 60) % 6, v, memory, allAreas);
                        length = Length32((int)((mixed >> 8) % 3), mixed >> 12, size);
                        break;
                }

                BinaryPrimitives.WriteUInt64LittleEndian(target, address);
                BinaryPrimitives.WriteUInt32LittleEndian(target[8..], length);
                if (!keepTail)
                {
                    BinaryPrimitives.WriteUInt16LittleEndian(target[12..], Index16((int)((mixed >> 20) % 2) * 6, mixed >> 24, size, hintIndex));
                    BinaryPrimitives.WriteUInt16LittleEndian(target[14..], Index16((int)((mixed >> 40) % 2) * 6, mixed >> 44, size, hintIndex));
                }

                break;
        }
    }

    private static ushort Index16(int pick, ulong v, int size, ushort hintIndex) => (pick % 8) switch
    {
        0 or 1 or 2 => (ushort)(v % (ulong)(size + 2)),                         // an index, maybe just out of range
        3 or 4 or 5 => (ushort)(hintIndex + (int)(v % (ulong)((2 * size) + 5)) - 2), // a ring index near the current one
        6 => (ushort)((v & 7) | ((v >> 8) & 1) << 7 | ((v >> 9) & 1) << 15),      // descriptor flags, packed bits too
        _ => (ushort)v,
    };

    private static uint Length32(int pick, ulong v, int size) => (pick % 4) switch
    {
        0 => (uint)(v % 300),
        1 => (uint)(16 * (v % (ulong)(size + 3))),
        2 => (uint)EdgeLengths[v % (ulong)EdgeLengths.Length],
        _ => (uint)v,
    };

    private static ulong Address64(int pick, ulong v, GuardedMemory memory, IReadOnlyList<MemoryArea> allAreas)
    {
        var pointAt = allAreas[(int)(v % (ulong)allAreas.Count)];
        return pick switch
        {
            0 => memory.Base + (v % memory.Length),
            1 or 6 => memory.Base + memory.Length - (v % 80),
            2 => memory.Base - 1 - (v % 80),
            3 => ulong.MaxValue - (v % 80),
            4 => pointAt.Address + ((v >> 8) % (ulong)Math.Max(1, pointAt.Length) & ~15UL),
            5 => memory.Base + ((v % memory.Length) & ~15UL),
            _ => v,
        };
    }

    /// <summary>Runs <paramref name="body"/> on its own thread and fails if it does not finish in time (a hang).</summary>
    public static void Bounded(Action body, TimeSpan limit)
    {
        Exception? failure = null;
        var thread = new Thread(() =>
        {
            try
            {
                body();
            }
            catch (Exception e)
            {
                failure = e;
            }
        })
        { IsBackground = true };
        thread.Start();
        Assert.True(thread.Join(limit), $"did not finish within {limit.TotalSeconds} s: a hang");
        if (failure is not null)
        {
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(failure).Throw();
        }
    }

    /// <summary>The device side under a hostile driver.</summary>
    public static void RunDevice(IRingFormat format, HostileScenario s) =>
        Bounded(() => RunDeviceBody(format, s), TimeSpan.FromSeconds(30));

    /// <summary>The driver side under a hostile device.</summary>
    public static void RunDriver(IRingFormat format, HostileScenario s) =>
        Bounded(() => RunDriverBody(format, s), TimeSpan.FromSeconds(30));

    private static ulong BufferPool(int size) => (ulong)Math.Min(size, 64) * 4 * RingModel.SlotBytes;

    private static void AddHonest(IDriverRing driver, ulong pool, int n, int seq, Dictionary<ushort, ulong>? outstanding)
    {
        for (var i = 0; i < n; i++)
        {
            var k = seq + i;
            // The pool holds min(size, 64) slots of four (BufferPool): stay inside it.
            var slot = pool + (ulong)(((k % Math.Min(driver.Size, 64)) * 4) * RingModel.SlotBytes);
            var segments = 1 + (k % 3);
            var readable = new BufferSegment[segments - 1];
            for (var j = 0; j < readable.Length; j++)
            {
                readable[j] = new BufferSegment(slot + (ulong)(j * RingModel.SlotBytes), 40);
            }

            BufferSegment[] writable = [new BufferSegment(slot + (ulong)(3 * RingModel.SlotBytes), (uint)(8 + (k % 50)))];
            if (!driver.TryAdd(readable, writable, out var id))
            {
                break;
            }

            outstanding?.Add(id, writable[0].Length);
        }
    }

    private static void RunDeviceBody(IRingFormat format, HostileScenario s)
    {
        var setup = s.Setup;
        using var memory = new GuardedMemory(format.RingBytes(setup) + BufferPool(setup.Size) + 4096, protectGuards: true);
        var pair = format.Create(memory, setup);
        var driver = pair.Driver;
        var device = pair.Device;
        var pool = memory.Allocate(BufferPool(setup.Size));
        var allAreas = pair.DriverWritten.Concat(pair.DeviceWritten).ToArray();
        AddHonest(driver, pool, s.HonestAdds, 0, null);
        driver.Publish();
        for (var i = 0; i < s.HonestPops && device.TryPop(out var c); i++)
        {
            device.PushUsed(c.Token, 0);
        }

        device.PublishUsed();
        var scratch = new byte[4096];
        var breaks = 0;
        foreach (var round in s.Rounds)
        {
            foreach (var patch in round)
            {
                Apply(memory, pair.DriverWritten, allAreas, setup.Size, device.Position.AvailIndex, patch);
            }

            var bound = Math.Min((2 * setup.Size) + 4, 300);
            for (var i = 0; i < bound; i++)
            {
                if (!device.TryPop(out var chain))
                {
                    if (device.IsBroken)
                    {
                        Assert.NotEqual(BrokenReason.None, device.BrokenReason);
                        Assert.False(device.TryPop(out _), "a broken queue popped");
                        breaks++;
                        Assert.Equal(breaks, device.Counters.BrokenCount);
                        device.Restore(device.Position);
                        Assert.False(device.IsBroken);
                    }

                    break;
                }

                CheckChain(memory, setup.Size, chain);
                var copied = chain.CopyReadableTo(scratch);
                Assert.Equal((int)Math.Min(chain.ReadableBytes, (ulong)scratch.Length), copied);
                scratch.AsSpan().Fill(0xA5);
                var written = chain.CopyToWritable(scratch);
                Assert.Equal((int)Math.Min(chain.WritableBytes, (ulong)scratch.Length), written);
                device.PushUsed(chain.Token, (uint)written);
                if (i % 3 == 0)
                {
                    device.PublishUsed();
                    device.CallNeeded();
                }
            }

            device.PublishUsed();
            device.EnableAvailNotifications();
            device.DisableAvailNotifications();
        }

        memory.AssertGuardsIntact();
    }

    private static unsafe void CheckChain(GuardedMemory memory, int size, DescriptorChain chain)
    {
        Assert.InRange(chain.Segments.Length, 1, size);
        Assert.InRange(chain.ReadableCount, 0, chain.Segments.Length);
        ulong readable = 0, writable = 0;
        for (var i = 0; i < chain.Segments.Length; i++)
        {
            var seg = chain.Segments[i];
            Assert.Equal(i >= chain.ReadableCount, seg.IsWritable);
            var span = seg.Span;
            Assert.Equal((int)seg.Length, span.Length);
            fixed (byte* p = span)
            {
                Assert.True(span.Length == 0 || memory.ContainsHost((nint)p, (ulong)span.Length), $"segment {i} (+{span.Length}) lies outside guest memory");
            }

            if (seg.IsWritable)
            {
                writable += seg.Length;
            }
            else
            {
                readable += seg.Length;
            }
        }

        Assert.Equal(readable, chain.ReadableBytes);
        Assert.Equal(writable, chain.WritableBytes);
    }

    private static void RunDriverBody(IRingFormat format, HostileScenario s)
    {
        var setup = s.Setup;
        using var memory = new GuardedMemory(format.RingBytes(setup) + BufferPool(setup.Size) + 4096, protectGuards: true);
        var pair = format.Create(memory, setup);
        var driver = pair.Driver;
        var device = pair.Device;
        var pool = memory.Allocate(BufferPool(setup.Size));
        var allAreas = pair.DriverWritten.Concat(pair.DeviceWritten).ToArray();
        var outstanding = new Dictionary<ushort, ulong>(); // id -> writable bytes
        var seq = 0;
        AddHonest(driver, pool, s.HonestAdds, seq, outstanding);
        seq += s.HonestAdds;
        driver.Publish();
        for (var i = 0; i < s.HonestPops && device.TryPop(out var c); i++)
        {
            device.PushUsed(c.Token, (uint)c.WritableBytes);
        }

        device.PublishUsed();
        var taken = 0;
        foreach (var round in s.Rounds)
        {
            foreach (var patch in round)
            {
                Apply(memory, pair.DeviceWritten, allAreas, setup.Size, (ushort)(setup.Start + taken), patch);
            }

            var bound = Math.Min((2 * setup.Size) + 4, 300);
            for (var i = 0; i < bound; i++)
            {
                if (!driver.TryTakeUsed(out var used))
                {
                    break;
                }

                Assert.True(outstanding.Remove(used.Id, out var writable), $"TryTakeUsed returned id {used.Id}, which is not outstanding");
                Assert.True(used.Length <= writable, $"used length {used.Length} exceeds the buffer's {writable} writable bytes");
                taken++;
            }

            Assert.Equal(outstanding.Count, driver.Outstanding);
            if (driver.IsBroken)
            {
                Assert.Contains(driver.BrokenReason, new[] { BrokenReason.UsedIndexTooFarAhead, BrokenReason.UsedIdNotOutstanding, BrokenReason.UsedLengthTooLarge });
                Assert.Equal(1, driver.Counters.BrokenCount);
                Assert.False(driver.TryTakeUsed(out _), "a broken queue handed a buffer back");
                Assert.False(driver.TryAdd(new BufferSegment(pool, 1), false, out _), "a broken queue took a buffer");
                continue;
            }

            // Honest traffic between attacks: more buffers, and the device returning some.
            AddHonest(driver, pool, 3, seq, outstanding);
            seq += 3;
            driver.Publish();
            driver.KickNeeded();
            driver.EnableUsedNotifications();
            driver.DisableUsedNotifications();
        }

        memory.AssertGuardsIntact();
    }
}

/// <summary>The hostile-memory properties for any ring format.</summary>
public abstract class HostileRingTests<TFormat>
    where TFormat : IRingFormat, new()
{
    private static readonly TFormat Format = new();

    /// <summary>Random bytes in the driver-written memory: the device never throws, hangs or strays.</summary>
    [FsCheck.Xunit.Property(MaxTest = 1500)]
    public Property Device_survives_hostile_driver_memory() =>
        Prop.ForAll(Arb.From(HostileRing.Scenarios(Format), HostileRing.Shrink), s => HostileRing.RunDevice(Format, s));

    /// <summary>Random bytes in the device-written memory: the driver never throws or returns a buffer not outstanding.</summary>
    [FsCheck.Xunit.Property(MaxTest = 1500)]
    public Property Driver_survives_hostile_device_memory() =>
        Prop.ForAll(Arb.From(HostileRing.Scenarios(Format), HostileRing.Shrink), s => HostileRing.RunDriver(Format, s));
}
