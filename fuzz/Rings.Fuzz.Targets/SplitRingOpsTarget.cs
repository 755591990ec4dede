using Rings.Chains;
using Rings.Memory;
using Rings.Split;

namespace Rings.Fuzz.Targets;

/// <summary>
/// Target (c): a random sequence of driver and device operations on one split ring, with random
/// bytes written over ring memory in between (after rust-vmm virtio-queue's fuzzer). Always: nothing
/// throws, every popped segment is inside the guarded region, the driver's bookkeeping (free
/// descriptors, outstanding ids) stays exact, a broken side does nothing more. While no corruption
/// has happened: the ring behaves exactly like a FIFO model, in both directions.
/// </summary>
/// <remarks>
/// Input: byte 0 = queue size exponent (bits 0-2), INDIRECT_DESC (bit 3), EVENT_IDX (bit 4),
/// IN_ORDER (bit 5: the device then returns buffers oldest first, singly or in batches);
/// u16 start index (both sides start there, so runs cross the u16 wrap); then operations, one byte
/// each (<see cref="Op"/>, modulo the count) followed by its argument bytes.
/// </remarks>
public static class SplitRingOpsTarget
{
    /// <summary>Guest-physical address of the region (ring first, then indirect tables, then buffers).</summary>
    public const ulong BaseAddress = 0x1_0000;

    /// <summary>Bytes of the buffer area: a segment starts at 64 x (0..255) and is 1..256 bytes long.</summary>
    public const int DataBytes = (255 * 64) + 256;

    /// <summary>Most operations one input runs.</summary>
    public const int MaxOperations = 4096;

    private const int MaxIndirectEntries = 4;

    [ThreadStatic]
    private static GuardedRegion?[]? t_regions;

    /// <summary>The operations, in input order.</summary>
    public enum Op : byte
    {
        /// <summary>Driver adds a buffer. Args: shape byte (readable count bits 0-1, writable bits 2-3), then per segment an offset byte (x64) and a length byte (+1).</summary>
        Add,

        /// <summary>Driver publishes its avail index.</summary>
        Publish,

        /// <summary>Driver decides whether to kick.</summary>
        Kick,

        /// <summary>Device pops a chain. Arg: byte, bit 0 = write a pattern into its writable segments.</summary>
        Pop,

        /// <summary>
        /// Device returns a popped chain used. Args: which popped chain (byte), bytes written (u16, clamped).
        /// Under IN_ORDER the oldest popped, and bits 4-7 of the first byte make a batch of that many
        /// more (modulo the popped count) returned with one used element (2.7.9).
        /// </summary>
        Push,

        /// <summary>Device publishes its used index.</summary>
        PublishUsed,

        /// <summary>Device decides whether to call.</summary>
        Call,

        /// <summary>Driver takes a used buffer back.</summary>
        Take,

        /// <summary>Driver enables (arg bit 0 set) or disables used notifications.</summary>
        DriverNotifications,

        /// <summary>Device enables (arg bit 0 set) or disables avail notifications.</summary>
        DeviceNotifications,

        /// <summary>Device remembers its position for a later undo.</summary>
        Mark,

        /// <summary>Device undoes its pops since the mark, when none of them was pushed.</summary>
        Undo,

        /// <summary>Random bytes over ring memory. Args: u16 offset, byte length (bits 0-3, +1), the bytes.</summary>
        Corrupt,

        /// <summary>Both sides reset to a new start index (u16 arg); memory is clean again.</summary>
        Reset,
    }

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

        var inOrder = (config & 32) != 0;
        if (inOrder)
        {
            features |= VirtioFeatures.InOrder;
        }

        var start = input.UInt16();
        var layout = RingFormat.Split.Layout(size);
        var entries = Math.Min(MaxIndirectEntries, size);
        var useIndirect = (features & VirtioFeatures.IndirectDescriptors) != 0 && entries >= 2;
        var indirect = new IndirectArea(BaseAddress + (ulong)layout.TotalBytes, entries);
        var corruptible = layout.TotalBytes + (int)indirect.BytesFor(size);
        var dataOffset = (corruptible + 63) & ~63;

        var region = RegionFor(shift, dataOffset + DataBytes);
        region.Bytes.Clear();
        var memory = new GuestMemory(region.Region);
        var regions = new[] { region };
        var at = layout.At(BaseAddress);
        var driver = new SplitDriverRing(memory, at, size, features, useIndirect ? indirect : null);
        var device = new SplitDeviceRing(memory, at, size, features);
        driver.StartAt(start);
        device.Restore(new RingPosition(start));

        var m = new Model(size);
        Span<BufferSegment> segments = stackalloc BufferSegment[6];
        Span<byte> frame = stackalloc byte[300];
        for (var step = 0; step < MaxOperations && !input.IsEmpty; step++)
        {
            var op = (Op)(input.Byte() % 14);
            FuzzTrace.Writer?.WriteLine($"{step}: {op} (driver free {driver.FreeDescriptors}, outstanding {driver.Outstanding}, broken {driver.BrokenReason}; device {device.Position.AvailIndex} broken {device.BrokenReason}; corrupted {m.Corrupted})");
            switch (op)
            {
                case Op.Add:
                    {
                        var shape = input.Byte();
                        var readable = shape & 3;
                        var writable = (shape >> 2) & 3;
                        if (readable + writable == 0)
                        {
                            readable = 1;
                        }

                        var total = readable + writable;
                        uint writableBytes = 0;
                        for (var i = 0; i < total; i++)
                        {
                            segments[i] = new BufferSegment(BaseAddress + (ulong)dataOffset + (input.Byte() * 64u), input.Byte() + 1u);
                            if (i >= readable)
                            {
                                writableBytes += segments[i].Length;
                            }
                        }

                        var needed = useIndirect && total > 1 && total <= entries ? 1 : total;
                        var free = driver.FreeDescriptors;
                        var wasBroken = driver.IsBroken;
                        var added = driver.TryAdd(segments[..readable], segments[readable..total], out var id);
                        FuzzViolation.Check(added == (!wasBroken && free >= needed), $"add of {needed} descriptors with {free} free, broken {wasBroken}: {added}");
                        if (added)
                        {
                            FuzzViolation.Check(!m.Outstanding.ContainsKey(id), $"id {id} handed out twice");
                            m.Outstanding[id] = (needed, writableBytes);
                            m.Added.Add(new Buffer(id, segments[..readable].ToArray(), segments[readable..total].ToArray(), writableBytes));
                        }

                        break;
                    }

                case Op.Publish:
                    driver.Publish();
                    m.Published.AddRange(m.Added);
                    m.Added.Clear();
                    break;

                case Op.Kick:
                    driver.KickNeeded();
                    break;

                case Op.Pop:
                    {
                        var write = (input.Byte() & 1) != 0;
                        var wasBroken = device.IsBroken;
                        if (device.TryPop(out var chain))
                        {
                            FuzzViolation.Check(!wasBroken, "a broken device popped a chain");
                            DeviceChainChecks.CheckChain(chain, size, regions);
                            Buffer? expected = null;
                            if (!m.Corrupted)
                            {
                                FuzzViolation.Check(m.Published.Count > 0, "popped a chain nobody published");
                                expected = m.Published[0];
                                m.Published.RemoveAt(0);
                                Same(expected, chain, region);
                            }

                            m.Popped.Add((chain.Token, chain.WritableBytes, expected));
                            m.PopsSinceMark++;
                            if (write)
                            {
                                frame.Fill((byte)m.Popped.Count);
                                chain.CopyToWritable(frame);
                            }
                        }
                        else
                        {
                            FuzzViolation.Check(!wasBroken || device.IsBroken, "the device healed by itself");
                            if (!m.Corrupted)
                            {
                                FuzzViolation.Check(!device.IsBroken, $"a clean ring broke the device: {device.BrokenReason}");
                                FuzzViolation.Check(m.Published.Count == 0, $"{m.Published.Count} published chains not popped");
                            }
                        }

                        break;
                    }

                case Op.Push:
                    {
                        var which = input.Byte();
                        var written = input.UInt16();
                        if (m.Popped.Count == 0)
                        {
                            break;
                        }

                        m.MarkValid = false; // UndoPops may not cross a push
                        if (inOrder)
                        {
                            PushInOrder(device, m, 1 + ((which >> 4) % m.Popped.Count), written);
                            break;
                        }

                        var k = which % m.Popped.Count;
                        var (token, writableBytes, _) = m.Popped[k];
                        m.Popped.RemoveAt(k);
                        var length = (uint)Math.Min(written, writableBytes);
                        device.PushUsed(token, length);
                        m.Pushed.Add((token.Id, length));
                        break;
                    }

                case Op.PublishUsed:
                    device.PublishUsed();
                    m.UsedPublished.AddRange(m.Pushed);
                    m.Pushed.Clear();
                    break;

                case Op.Call:
                    device.CallNeeded();
                    break;

                case Op.Take:
                    {
                        var wasBroken = driver.IsBroken;
                        if (driver.TryTakeUsed(out var used))
                        {
                            FuzzViolation.Check(!wasBroken, "a broken driver took a used buffer");

                            // Whatever the device wrote, only an outstanding id comes back, within its length.
                            FuzzViolation.Check(m.Outstanding.TryGetValue(used.Id, out var o), $"took id {used.Id}, which is not outstanding");
                            FuzzViolation.Check(used.Length <= o.WritableBytes, $"took {used.Length} bytes of a {o.WritableBytes}-byte buffer");
                            m.Outstanding.Remove(used.Id);
                            if (!m.Corrupted)
                            {
                                FuzzViolation.Check(m.UsedPublished.Count > 0, "took a buffer the device never published");
                                var (id, length) = m.UsedPublished[0];
                                m.UsedPublished.RemoveAt(0);
                                FuzzViolation.Check(used.Id == id && used.Length == length, $"took ({used.Id}, {used.Length}), expected ({id}, {length})");
                            }
                        }
                        else
                        {
                            FuzzViolation.Check(!wasBroken || driver.IsBroken, "the driver healed by itself");
                            if (!m.Corrupted)
                            {
                                FuzzViolation.Check(!driver.IsBroken, $"a clean ring broke the driver: {driver.BrokenReason}");
                                FuzzViolation.Check(m.UsedPublished.Count == 0, $"{m.UsedPublished.Count} used buffers not taken");
                            }
                        }

                        break;
                    }

                case Op.DriverNotifications:
                    if ((input.Byte() & 1) != 0)
                    {
                        var waiting = driver.EnableUsedNotifications();
                        FuzzViolation.Check(m.Corrupted || waiting == (m.UsedPublished.Count > 0), $"driver re-check says {waiting} with {m.UsedPublished.Count} used waiting");
                    }
                    else
                    {
                        driver.DisableUsedNotifications();
                    }

                    break;

                case Op.DeviceNotifications:
                    if ((input.Byte() & 1) != 0)
                    {
                        var waiting = device.EnableAvailNotifications();
                        FuzzViolation.Check(m.Corrupted || waiting == (m.Published.Count > 0), $"device re-check says {waiting} with {m.Published.Count} published");
                    }
                    else
                    {
                        device.DisableAvailNotifications();
                    }

                    break;

                case Op.Mark:
                    m.Mark = device.Position;
                    m.MarkValid = true;
                    m.PopsSinceMark = 0;
                    m.PoppedAtMark = m.Popped.Count;
                    break;

                case Op.Undo:
                    if (m.MarkValid && m.PopsSinceMark <= size)
                    {
                        device.UndoPops(m.Mark);
                        FuzzViolation.Check(device.Position == m.Mark, "undo did not restore the position");

                        // The chains popped since the mark go back to the front of the queue, in order.
                        var back = m.Popped.GetRange(m.PoppedAtMark, m.Popped.Count - m.PoppedAtMark);
                        m.Popped.RemoveRange(m.PoppedAtMark, back.Count);
                        if (!m.Corrupted)
                        {
                            m.Published.InsertRange(0, back.ConvertAll(p => p.Expected!));
                        }

                        m.PopsSinceMark = 0;
                    }

                    break;

                case Op.Corrupt:
                    {
                        var offset = input.UInt16() % corruptible;
                        var length = (input.Byte() & 15) + 1;
                        var bytes = input.Take(Math.Min(length, corruptible - offset));
                        bytes.CopyTo(region.Bytes[offset..]);
                        m.Corrupted = true;
                        break;
                    }

                case Op.Reset:
                    {
                        var index = input.UInt16();
                        driver.Reset();
                        FuzzViolation.Check(driver.FreeDescriptors == size && driver.Outstanding == 0, "reset left buffers outstanding");
                        driver.StartAt(index);
                        device.Restore(new RingPosition(index));
                        m.Clear();
                        break;
                    }
            }

            // The driver's bookkeeping is its own shadow: exact whatever the device scribbled.
            var inUse = 0;
            foreach (var o in m.Outstanding.Values)
            {
                inUse += o.Descriptors;
            }

            FuzzViolation.Check(driver.Outstanding == m.Outstanding.Count, $"driver counts {driver.Outstanding} outstanding, model {m.Outstanding.Count}");
            FuzzViolation.Check(driver.FreeDescriptors == size - inUse, $"driver counts {driver.FreeDescriptors} free, model {size - inUse}");
        }
    }

    /// <summary>
    /// IN_ORDER: returns the <paramref name="buffers"/> oldest popped chains, one used element for a
    /// single one, one for the batch otherwise. The driver hands the batch back one buffer at a time,
    /// each skipped one with the length it made writable, the last with the length written (2.7.9).
    /// </summary>
    private static void PushInOrder(SplitDeviceRing device, Model m, int buffers, ushort written)
    {
        var (last, lastWritable, _) = m.Popped[buffers - 1];
        var length = (uint)Math.Min(written, lastWritable);
        if (buffers == 1)
        {
            device.PushUsed(last, length);
        }
        else
        {
            device.PushUsedInOrderBatch(last, length, buffers);
        }

        for (var i = 0; i < buffers - 1; i++)
        {
            var id = m.Popped[i].Token.Id;
            m.Pushed.Add((id, m.Outstanding.TryGetValue(id, out var o) ? o.WritableBytes : 0));
        }

        m.Pushed.Add((last.Id, length));
        m.Popped.RemoveRange(0, buffers);
    }

    // A clean pop returns exactly what the driver added: same id, segments, order and writability.
    private static void Same(Buffer expected, in DescriptorChain chain, GuardedRegion region)
    {
        FuzzViolation.Check(chain.Token.Id == expected.Id, $"popped id {chain.Token.Id}, expected {expected.Id}");
        var s = chain.Segments;
        FuzzViolation.Check(s.Length == expected.Readable.Length + expected.Writable.Length && chain.ReadableCount == expected.Readable.Length,
            $"popped {s.Length} segments ({chain.ReadableCount} readable), expected {expected.Readable.Length}+{expected.Writable.Length}");
        for (var i = 0; i < s.Length; i++)
        {
            var e = i < expected.Readable.Length ? expected.Readable[i] : expected.Writable[i - expected.Readable.Length];
            var host = region.HostAddress + (nint)(e.Address - region.GuestPhysicalAddress);
            unsafe
            {
                fixed (byte* p = s[i].Span)
                {
                    FuzzViolation.Check((nint)p == host && s[i].Length == e.Length, $"segment {i} differs from what was added");
                }
            }
        }
    }

    private static GuardedRegion RegionFor(int shift, int bytes)
    {
        var cache = t_regions ??= new GuardedRegion?[8];
        return cache[shift] ??= new GuardedRegion(bytes, BaseAddress, 4096);
    }

    private sealed record Buffer(ushort Id, BufferSegment[] Readable, BufferSegment[] Writable, uint WritableBytes);

    private sealed class Model(int size)
    {
        public Dictionary<ushort, (int Descriptors, uint WritableBytes)> Outstanding { get; } = new(size);

        public List<Buffer> Added { get; } = [];

        public List<Buffer> Published { get; } = [];

        public List<(ChainToken Token, ulong WritableBytes, Buffer? Expected)> Popped { get; } = [];

        public List<(ushort Id, uint Length)> Pushed { get; } = [];

        public List<(ushort Id, uint Length)> UsedPublished { get; } = [];

        public bool Corrupted { get; set; }

        public RingPosition Mark { get; set; }

        public bool MarkValid { get; set; }

        public int PopsSinceMark { get; set; }

        public int PoppedAtMark { get; set; }

        public void Clear()
        {
            Outstanding.Clear();
            Added.Clear();
            Published.Clear();
            Popped.Clear();
            Pushed.Clear();
            UsedPublished.Clear();
            Corrupted = false;
            MarkValid = false;
        }
    }
}
