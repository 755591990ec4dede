using System.Text;
using FsCheck;
using FsCheck.Fluent;
using Rings.Chains;

namespace Rings.Tests.Conformance;

/// <summary>One step of a model run.</summary>
public enum OpKind
{
    /// <summary>Driver adds a buffer (<see cref="Op.Readable"/>, <see cref="Op.Writable"/> segment lengths).</summary>
    Add,

    /// <summary>Driver publishes what it added.</summary>
    Publish,

    /// <summary>Driver makes its kick decision.</summary>
    Kick,

    /// <summary>Device pops up to <see cref="Op.Count"/> buffers.</summary>
    Pop,

    /// <summary>Device returns up to <see cref="Op.Count"/> popped buffers (in order or picked by <see cref="Op.Pick"/>).</summary>
    Push,

    /// <summary>Device publishes what it returned.</summary>
    PublishUsed,

    /// <summary>Device makes its call decision.</summary>
    Call,

    /// <summary>Driver takes back up to <see cref="Op.Count"/> used buffers.</summary>
    Take,

    /// <summary>Driver enables used notifications (and the result is checked).</summary>
    EnableUsed,

    /// <summary>Driver disables used notifications.</summary>
    DisableUsed,

    /// <summary>Device enables avail notifications (and the result is checked).</summary>
    EnableAvail,

    /// <summary>Device disables avail notifications.</summary>
    DisableAvail,
}

/// <summary>One step of a model run.</summary>
public sealed record Op(OpKind Kind, int Count, int Pick, int[] Readable, int[] Writable)
{
    /// <inheritdoc/>
    public override string ToString() => Kind switch
    {
        OpKind.Add => $"Add(r[{string.Join(',', Readable)}] w[{string.Join(',', Writable)}])",
        OpKind.Pop or OpKind.Take => $"{Kind}({Count})",
        OpKind.Push => $"Push({Count},{Pick})",
        _ => Kind.ToString(),
    };
}

/// <summary>A model run: a ring, a completion order, and a sequence of steps.</summary>
public sealed record ModelScenario(RingSetup Setup, bool Shuffled, Op[] Ops)
{
    /// <inheritdoc/>
    public override string ToString() =>
        $"{Setup}, {(Shuffled ? "shuffled" : "in-order")} completion, {Ops.Length} ops: {string.Join(' ', Ops.Select(o => o.ToString()))}";
}

/// <summary>
/// Runs random interleavings of driver and device operations on a real ring pair against a
/// plain FIFO model: what the driver publishes the device pops in order, with the same segments
/// and bytes; what the device returns the driver takes back in the order returned, with the
/// length and bytes the device wrote. Nothing lost, duplicated or corrupted.
/// </summary>
public static class RingModel
{
    /// <summary>Bytes of one buffer slot (the most a segment holds).</summary>
    public const int SlotBytes = 64;

    private const byte Unwritten = 0xEE;

    /// <summary>Generator of ring setups for a format.</summary>
    public static Gen<RingSetup> Setups(IRingFormat format) =>
        from size in format.Sizes
        from eventIndex in Gen.Elements(false, true)
        from indirect in size >= 2 ? Gen.Elements(false, true) : Gen.Constant(false)
        from entries in Gen.Elements(2, 3, 4, 8, 16)
        from start in Starts(size)
        select new RingSetup(
            size,
            (eventIndex ? VirtioFeatures.EventIndex : VirtioFeatures.None) | (indirect ? VirtioFeatures.IndirectDescriptors : VirtioFeatures.None),
            start,
            indirect ? Math.Min(entries, size) : 0);

    /// <summary>Start positions: mostly just below the u16 wrap, some anywhere.</summary>
    public static Gen<ushort> Starts(int size) => Gen.Frequency(
        (6, Gen.Choose(0, Math.Min(3 * size, 120)).Select(k => (ushort)(65535 - k))),
        (1, Gen.Constant((ushort)0)),
        (2, Gen.Choose(0, 65535).Select(v => (ushort)v)));

    /// <summary>Generator of whole scenarios for a format.</summary>
    public static Gen<ModelScenario> Scenarios(IRingFormat format) =>
        from setup in Setups(format)
        from s in ScenarioFor(setup, 10, 260)
        select s;

    /// <summary>Generator of scenarios on a given ring with <paramref name="minOps"/> to <paramref name="maxOps"/> steps.</summary>
    public static Gen<ModelScenario> ScenarioFor(RingSetup setup, int minOps, int maxOps) =>
        from shuffled in Gen.Elements(false, true)
        from n in Gen.Choose(minOps, maxOps)
        from ops in Gen.ArrayOf(Ops(setup), n)
        select new ModelScenario(setup, shuffled, ops);

    /// <summary>Shrinks a scenario by dropping steps.</summary>
    public static IEnumerable<ModelScenario> Shrink(ModelScenario s) =>
        Shrinking.DropSteps(s.Ops).Select(ops => s with { Ops = ops });

    /// <summary>The arbitrary used by the model properties.</summary>
    public static Arbitrary<ModelScenario> Arbitrary(IRingFormat format) => Arb.From(Scenarios(format), Shrink);

    private static Gen<Op> Ops(RingSetup setup)
    {
        var size = setup.Size;
        var smallCount = Gen.Choose(1, 4);
        var counts = Gen.Frequency((5, smallCount), (1, Gen.Constant(size)));
        Gen<Op> Simple(OpKind k) => Gen.Constant(new Op(k, 0, 0, [], []));
        Gen<Op> Counted(OpKind k) => counts.Select(c => new Op(k, c, 0, [], []));
        return Gen.Frequency(
            (6, Adds(setup)),
            (3, Simple(OpKind.Publish)),
            (1, Simple(OpKind.Kick)),
            (3, Counted(OpKind.Pop)),
            (3, from c in counts from p in Gen.Choose(0, 1 << 20) select new Op(OpKind.Push, c, p, [], [])),
            (2, Simple(OpKind.PublishUsed)),
            (1, Simple(OpKind.Call)),
            (3, Counted(OpKind.Take)),
            (1, Simple(OpKind.EnableUsed)),
            (1, Simple(OpKind.DisableUsed)),
            (1, Simple(OpKind.EnableAvail)),
            (1, Simple(OpKind.DisableAvail)));
    }

    private static Gen<Op> Adds(RingSetup setup)
    {
        var size = setup.Size;
        var total = Gen.Frequency(
            (6, Gen.Choose(1, Math.Min(size, 4))),
            (2, Gen.Choose(1, Math.Min(size, 16))),
            (1, Gen.Constant(Math.Min(size, 64))));
        var length = Gen.Frequency((1, Gen.Constant(0)), (10, Gen.Choose(1, SlotBytes)));
        return from t in total
               from r in Gen.Choose(0, t)
               from lengths in Gen.ArrayOf(length, t)
               select new Op(OpKind.Add, 0, 0, lengths[..r], lengths[r..]);
    }

    /// <summary>Bytes the driver puts in readable segments of buffer <paramref name="seq"/>.</summary>
    public static byte DriverByte(int seq, int i) => (byte)((seq * 131) + (i * 7) + 3);

    /// <summary>Bytes the device writes into writable segments for pop <paramref name="popSeq"/>.</summary>
    public static byte DeviceByte(int popSeq, int i) => (byte)(((popSeq * 17) + (i * 13) + 5) ^ 0x5A);

    /// <summary>Runs one scenario; throws (xunit assertion) on the first disagreement with the model.</summary>
    public static void Run(IRingFormat format, ModelScenario scenario)
    {
        var setup = scenario.Setup;
        var slots = Math.Clamp(setup.Size * Math.Max(1, setup.DriverUsesIndirect ? setup.IndirectEntries : 1), 64, 1024);
        using var memory = new GuardedMemory(format.RingBytes(setup) + (ulong)(slots * SlotBytes) + 4096);
        var pair = format.Create(memory, setup);
        var run = new Runner(format, scenario, memory, pair, slots);
        var step = 0;
        try
        {
            foreach (var op in scenario.Ops)
            {
                run.Apply(op);
                run.CheckInvariants();
                step++;
            }

            run.Drain();
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            throw new Xunit.Sdk.XunitException($"{format.Name} model failed at step {step}: {e.Message}\n{run.Describe()}");
        }

        memory.AssertGuardsIntact();
    }

    private sealed class Item
    {
        public int Seq;
        public ushort Id;
        public int[] Slots = [];
        public int[] Lengths = [];
        public int ReadableCount;
        public int Descriptors;
        public ChainToken Token;
        public uint Written;
        public int PopSeq;

        public int Total => Lengths.Length;
    }

    private sealed class Runner(IRingFormat format, ModelScenario scenario, GuardedMemory memory, RingSides pair, int slotCount)
    {
        private readonly RingSetup _setup = scenario.Setup;
        private readonly IDriverRing _driver = pair.Driver;
        private readonly IDeviceRing _device = pair.Device;
        private readonly ulong _pool = memory.Allocate((ulong)(slotCount * SlotBytes), 64);
        private readonly Queue<int> _freeSlots = new(Enumerable.Range(0, slotCount));
        private readonly Queue<Item> _added = new();
        private readonly Queue<Item> _published = new();
        private readonly List<Item> _popped = [];
        private readonly Queue<Item> _pushed = new();
        private readonly Queue<Item> _used = new();
        private readonly Dictionary<ushort, Item> _outstanding = [];
        private readonly byte[] _scratch = new byte[SlotBytes * 64];
        private int _seq;
        private int _popSeq;
        private int _descriptorsInUse;
        private int _taken;
        private int _pushes;

        public string Describe()
        {
            var sb = new StringBuilder();
            sb.Append($"model: added {_added.Count}, published {_published.Count}, popped {_popped.Count}, pushed {_pushed.Count}, used {_used.Count}, outstanding {_outstanding.Count}; ");
            sb.Append($"driver broken {_driver.BrokenReason}, device broken {_device.BrokenReason}");
            return sb.ToString();
        }

        public void Apply(Op op)
        {
            switch (op.Kind)
            {
                case OpKind.Add:
                    Add(op.Readable, op.Writable);
                    break;
                case OpKind.Publish:
                    _driver.Publish();
                    while (_added.TryDequeue(out var a))
                    {
                        _published.Enqueue(a);
                    }

                    break;
                case OpKind.Kick:
                    _driver.KickNeeded();
                    break;
                case OpKind.Pop:
                    for (var i = 0; i < op.Count; i++)
                    {
                        Pop();
                    }

                    break;
                case OpKind.Push:
                    for (var i = 0; i < op.Count && _popped.Count > 0; i++)
                    {
                        var index = scenario.Shuffled ? (int)((uint)(op.Pick + (i * 7919)) % (uint)_popped.Count) : 0;
                        Push(index);
                    }

                    break;
                case OpKind.PublishUsed:
                    _device.PublishUsed();
                    while (_pushed.TryDequeue(out var p))
                    {
                        _used.Enqueue(p);
                    }

                    break;
                case OpKind.Call:
                    _device.CallNeeded();
                    break;
                case OpKind.Take:
                    for (var i = 0; i < op.Count; i++)
                    {
                        Take();
                    }

                    break;
                case OpKind.EnableUsed:
                    Assert.True(_driver.EnableUsedNotifications() == (_used.Count > 0), "EnableUsedNotifications must report exactly whether used buffers wait");
                    break;
                case OpKind.DisableUsed:
                    _driver.DisableUsedNotifications();
                    break;
                case OpKind.EnableAvail:
                    Assert.True(_device.EnableAvailNotifications() == (_published.Count > 0), "EnableAvailNotifications must report exactly whether buffers are available");
                    break;
                case OpKind.DisableAvail:
                    _device.DisableAvailNotifications();
                    break;
            }
        }

        public void CheckInvariants()
        {
            Assert.False(_driver.IsBroken, $"driver broke: {_driver.BrokenReason}");
            Assert.False(_device.IsBroken, $"device broke: {_device.BrokenReason}");
            Assert.Equal(_outstanding.Count, _driver.Outstanding);
            Assert.Equal(_setup.Size - _descriptorsInUse, _driver.FreeDescriptors);
        }

        public void Drain()
        {
            Apply(new Op(OpKind.Publish, 0, 0, [], []));
            for (var round = 0; _outstanding.Count > 0; round++)
            {
                Assert.True(round < 4, "buffers still outstanding after draining");
                while (_published.Count > 0)
                {
                    Pop();
                }

                Assert.False(_device.TryPop(out _), "device popped a buffer the driver never published");
                var pick = 12345;
                while (_popped.Count > 0)
                {
                    Push(scenario.Shuffled ? pick++ % _popped.Count : 0);
                }

                Apply(new Op(OpKind.PublishUsed, 0, 0, [], []));
                while (_used.Count > 0)
                {
                    Take();
                }

                Assert.False(_driver.TryTakeUsed(out _), "driver took a buffer the device never returned");
                CheckInvariants();
            }

            Assert.Equal(0, _driver.Outstanding);
            Assert.Equal(_setup.Size, _driver.FreeDescriptors);
            Assert.Equal(_seq, _driver.Counters.Packets);
            Assert.Equal(_popSeq, _device.Counters.Packets);
            Assert.Equal(_seq, _taken);
            Assert.Equal(_seq, _pushes);
        }

        private void Add(int[] readable, int[] writable)
        {
            var total = readable.Length + writable.Length;
            if (_freeSlots.Count < total)
            {
                return; // the test's buffer pool is exhausted (large rings only): skip
            }

            var item = new Item { Seq = _seq, Slots = new int[total], Lengths = [.. readable, .. writable], ReadableCount = readable.Length };
            var readSegs = new BufferSegment[readable.Length];
            var writeSegs = new BufferSegment[writable.Length];
            var offset = 0;
            for (var i = 0; i < total; i++)
            {
                var slot = _freeSlots.Dequeue();
                item.Slots[i] = slot;
                var address = SlotAddress(slot, item.Lengths[i]);
                var bytes = memory.Bytes(address, item.Lengths[i]);
                if (i < readable.Length)
                {
                    for (var b = 0; b < bytes.Length; b++)
                    {
                        bytes[b] = DriverByte(item.Seq, offset + b);
                    }

                    offset += bytes.Length;
                    readSegs[i] = new BufferSegment(address, (uint)item.Lengths[i]);
                }
                else
                {
                    bytes.Fill(Unwritten);
                    writeSegs[i - readable.Length] = new BufferSegment(address, (uint)item.Lengths[i]);
                }
            }

            var need = format.DescriptorsFor(total, _setup);
            var free = _driver.FreeDescriptors;
            var ok = _driver.TryAdd(readSegs, writeSegs, out var id);
            Assert.True(ok == (free >= need), $"TryAdd of {total} segments ({need} descriptors) with {free} free returned {ok}");
            if (!ok)
            {
                foreach (var s in item.Slots)
                {
                    _freeSlots.Enqueue(s);
                }

                return;
            }

            Assert.False(_outstanding.ContainsKey(id), $"id {id} handed out twice");
            item.Id = id;
            item.Descriptors = need;
            _outstanding.Add(id, item);
            _descriptorsInUse += need;
            _added.Enqueue(item);
            _seq++;
        }

        // Segments end at the end of their slot, so a length slip shows as a neighbour's bytes.
        private ulong SlotAddress(int slot, int length) => _pool + (ulong)(slot * SlotBytes) + (ulong)(SlotBytes - length);

        private void Pop()
        {
            var ok = _device.TryPop(out var chain);
            Assert.True(ok == (_published.Count > 0), $"TryPop returned {ok} with {_published.Count} published");
            if (!ok)
            {
                return;
            }

            var item = _published.Dequeue();
            Assert.Equal(item.Id, chain.Token.Id);
            Assert.Equal(item.Total, chain.Segments.Length);
            Assert.Equal(item.ReadableCount, chain.ReadableCount);
            ulong readBytes = 0, writeBytes = 0;
            for (var i = 0; i < item.Total; i++)
            {
                var seg = chain.Segments[i];
                var span = seg.Span;
                Assert.Equal((uint)item.Lengths[i], seg.Length);
                Assert.Equal(i >= item.ReadableCount, seg.IsWritable);
                Assert.True(memory.Contains(span), "segment outside guest memory");
                if (span.Length > 0)
                {
                    unsafe
                    {
                        fixed (byte* p = span)
                        {
                            Assert.Equal(memory.HostOf(SlotAddress(item.Slots[i], item.Lengths[i])), (nint)p);
                        }
                    }
                }

                if (seg.IsWritable)
                {
                    writeBytes += seg.Length;
                }
                else
                {
                    readBytes += seg.Length;
                }
            }

            Assert.Equal(readBytes, chain.ReadableBytes);
            Assert.Equal(writeBytes, chain.WritableBytes);

            var copied = chain.CopyReadableTo(_scratch);
            Assert.Equal((int)readBytes, copied);
            for (var b = 0; b < copied; b++)
            {
                if (_scratch[b] != DriverByte(item.Seq, b))
                {
                    Assert.Fail($"readable byte {b} of buffer {item.Seq} is {_scratch[b]:x2}, expected {DriverByte(item.Seq, b):x2}");
                }
            }

            item.PopSeq = _popSeq++;
            var written = writeBytes == 0 ? 0 : (int)((uint)(item.PopSeq * 7919) % (writeBytes + 1));
            for (var b = 0; b < written; b++)
            {
                _scratch[b] = DeviceByte(item.PopSeq, b);
            }

            Assert.Equal(written, chain.CopyToWritable(_scratch.AsSpan(0, written)));
            item.Written = (uint)written;
            item.Token = chain.Token;
            _popped.Add(item);
        }

        private void Push(int index)
        {
            var item = _popped[index];
            _popped.RemoveAt(index);
            _device.PushUsed(item.Token, item.Written);
            _pushed.Enqueue(item);
            _pushes++;
        }

        private void Take()
        {
            var ok = _driver.TryTakeUsed(out var used);
            Assert.True(ok == (_used.Count > 0), $"TryTakeUsed returned {ok} with {_used.Count} used");
            if (!ok)
            {
                return;
            }

            var item = _used.Dequeue();
            Assert.Equal(item.Id, used.Id);
            Assert.Equal(item.Written, used.Length);

            // Readable segments untouched, writable ones hold the device's bytes then the fill.
            var readOffset = 0;
            var writeOffset = 0;
            for (var i = 0; i < item.Total; i++)
            {
                var bytes = memory.Bytes(SlotAddress(item.Slots[i], item.Lengths[i]), item.Lengths[i]);
                for (var b = 0; b < bytes.Length; b++)
                {
                    byte expected;
                    if (i < item.ReadableCount)
                    {
                        expected = DriverByte(item.Seq, readOffset + b);
                    }
                    else
                    {
                        expected = writeOffset + b < item.Written ? DeviceByte(item.PopSeq, writeOffset + b) : Unwritten;
                    }

                    if (bytes[b] != expected)
                    {
                        Assert.Fail($"buffer {item.Seq} segment {i} byte {b} is {bytes[b]:x2}, expected {expected:x2}");
                    }
                }

                if (i < item.ReadableCount)
                {
                    readOffset += bytes.Length;
                }
                else
                {
                    writeOffset += bytes.Length;
                }
            }

            _outstanding.Remove(item.Id);
            _descriptorsInUse -= item.Descriptors;
            foreach (var s in item.Slots)
            {
                _freeSlots.Enqueue(s);
            }

            _taken++;
        }
    }
}
