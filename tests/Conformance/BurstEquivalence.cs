using System.Runtime.InteropServices;
using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using Rings.Chains;

namespace Rings.Tests.Conformance;

/// <summary>One step of a burst-equivalence run.</summary>
public enum BurstOpKind
{
    /// <summary>Driver adds <see cref="BurstOp.Count"/> one-segment buffers (burst or single calls).</summary>
    Add,

    /// <summary>Driver adds one buffer of several segments (single call on both twins).</summary>
    AddChain,

    /// <summary>Driver publishes.</summary>
    Publish,

    /// <summary>Device pops up to <see cref="BurstOp.Count"/> buffers (burst or single calls).</summary>
    Pop,

    /// <summary>
    /// Device pops up to <see cref="BurstOp.Count"/> buffers of one segment, stopping before any
    /// other (PopSingles, or single pops that give back the first buffer of several segments).
    /// </summary>
    PopSingles,

    /// <summary>Device returns up to <see cref="BurstOp.Count"/> popped buffers (burst or single calls).</summary>
    Push,

    /// <summary>Device publishes.</summary>
    PublishUsed,

    /// <summary>Driver takes back up to <see cref="BurstOp.Count"/> used buffers (burst or single calls).</summary>
    Take,

    /// <summary>Device gives back up to <see cref="BurstOp.Count"/> of its newest pops that are still in flight (UndoPops from the oldest one's position, or UndoNewestPops with their count).</summary>
    Undo,

    /// <summary>The same hostile write into both twins' memory (the driver's areas when <see cref="BurstOp.Burst"/>, else the device's).</summary>
    Corrupt,
}

/// <summary>One step: what, how many, whether the twin under test uses the burst call, and the values it needs.</summary>
public sealed record BurstOp(BurstOpKind Kind, int Count, bool Burst, bool Writable, int Seed, Patch? Patch)
{
    /// <inheritdoc/>
    public override string ToString() => Kind switch
    {
        BurstOpKind.Add => $"Add({Count}{(Writable ? ",w" : "")}{(Burst ? ",burst" : "")})",
        BurstOpKind.Pop or BurstOpKind.PopSingles or BurstOpKind.Push or BurstOpKind.Take => $"{Kind}({Count}{(Burst ? ",burst" : "")})",
        BurstOpKind.Undo => $"Undo({Count}{(Burst ? ",count" : "")})",
        BurstOpKind.Corrupt => $"Corrupt({(Burst ? "driver" : "device")} {Patch})",
        BurstOpKind.AddChain => $"AddChain({Seed})",
        _ => Kind.ToString(),
    };
}

/// <summary>A run: a ring (IN_ORDER or not) and its steps.</summary>
public sealed record BurstScenario(RingSetup Setup, BurstOp[] Ops)
{
    /// <inheritdoc/>
    public override string ToString() => $"{Setup}, {Ops.Length} ops: {string.Join(' ', Ops.Select(o => o.ToString()))}";
}

/// <summary>
/// Twin rings in two identical memories: the reference twin makes only single calls (TryAdd,
/// TryPop, PushUsed, TryTakeUsed), the twin under test the burst calls where a step says so
/// (TryAddBurst, PopBurst, PopSingles, PushUsedBurst, TakeUsed). After every step both must agree on what
/// was returned (ids, tokens, segments, used elements), on every counter, on their broken state
/// and reason, and on every byte of ring memory, also after the same hostile writes.
/// </summary>
public abstract class BurstEquivalenceTests<TFormat>
    where TFormat : IRingFormat, new()
{
    private const int Slots = 64;
    private static readonly TFormat Format = new();

    /// <summary>Random mixes of burst and single calls, with and without IN_ORDER, agree with single calls only.</summary>
    [Property(MaxTest = 400)]
    public Property Burst_calls_agree_with_single_calls() =>
        Prop.ForAll(Arb.From(Scenarios(corrupt: false), Shrink), Run);

    /// <summary>The same, with hostile writes into either side's memory between steps: the same breaks, for the same reasons.</summary>
    [Property(MaxTest = 400)]
    public Property Burst_calls_break_like_single_calls_on_hostile_memory() =>
        Prop.ForAll(Arb.From(Scenarios(corrupt: true), Shrink), Run);

    private static Gen<BurstScenario> Scenarios(bool corrupt) =>
        from setup in RingModel.Setups(Format)
        where setup.Size <= 512
        from inOrder in Gen.Elements(false, true)
        from n in Gen.Choose(10, 200)
        from ops in Gen.ArrayOf(Ops(setup.Size, corrupt), n)
        select new BurstScenario(setup with { Features = setup.Features | (inOrder ? VirtioFeatures.InOrder : VirtioFeatures.None) }, ops);

    private static Gen<BurstOp> Ops(int size, bool corrupt)
    {
        var count = Gen.Frequency((3, Gen.Choose(0, 8)), (2, Gen.Choose(1, Math.Max(1, size))), (1, Gen.Choose(0, 40)));
        var patch = HostileRing.Scenarios(Format).Select(s => s.Rounds[0][0]);
        return from kind in Gen.Frequency(
                   (6, Gen.Constant(BurstOpKind.Add)),
                   (1, Gen.Constant(BurstOpKind.AddChain)),
                   (3, Gen.Constant(BurstOpKind.Publish)),
                   (5, Gen.Constant(BurstOpKind.Pop)),
                   (4, Gen.Constant(BurstOpKind.PopSingles)),
                   (5, Gen.Constant(BurstOpKind.Push)),
                   (3, Gen.Constant(BurstOpKind.PublishUsed)),
                   (5, Gen.Constant(BurstOpKind.Take)),
                   (2, Gen.Constant(BurstOpKind.Undo)),
                   (corrupt ? 2 : 0, Gen.Constant(BurstOpKind.Corrupt)))
               from c in count
               from burst in Gen.Frequency((3, Gen.Constant(true)), (1, Gen.Constant(false)))
               from writable in Gen.Elements(false, true)
               from seed in Gen.Choose(0, int.MaxValue)
               from p in kind == BurstOpKind.Corrupt ? patch.Select(x => (Patch?)x) : Gen.Constant<Patch?>(null)
               select new BurstOp(kind, c, burst, writable, seed, p);
    }

    private static IEnumerable<BurstScenario> Shrink(BurstScenario s) =>
        Shrinking.DropSteps(s.Ops).Select(ops => s with { Ops = ops });

    private static bool Run(BurstScenario scenario)
    {
        var setup = scenario.Setup;
        var bytes = Format.RingBytes(setup) + (Slots * RingModel.SlotBytes) + 4096;
        using var reference = new Twin(setup, bytes);
        using var tested = new Twin(setup, bytes);
        for (var step = 0; step < scenario.Ops.Length; step++)
        {
            var op = scenario.Ops[step];
            if (op.Kind == BurstOpKind.Corrupt)
            {
                reference.Corrupt(op);
                tested.Corrupt(op);
            }
            else
            {
                var expected = reference.Step(op, burst: false);
                var actual = tested.Step(op, burst: op.Burst);
                if (expected != actual)
                {
                    throw new InvalidOperationException($"step {step} {op}: single calls gave\n  {expected}\nburst calls gave\n  {actual}");
                }
            }

            var difference = reference.Difference(tested);
            if (difference is not null)
            {
                throw new InvalidOperationException($"after step {step} {op}: {difference}");
            }
        }

        reference.Memory.AssertGuardsIntact();
        tested.Memory.AssertGuardsIntact();
        return true;
    }

    /// <summary>One ring pair in its own memory, with what its device popped and not yet returned.</summary>
    private sealed class Twin : IDisposable
    {
        private readonly RingSetup _setup;
        private readonly RingSides _sides;
        private readonly ulong _data;
        private readonly List<PoppedChain> _inFlight = [];
        private readonly List<long> _popNumbers = [];   // each of _inFlight's pops numbered in pop order
        private long _pops;

        // Readable bytes of the buffers the single-call twin popped and gave back to stop a
        // PopSingles step: UndoPops leaves a pop's bytes counted, and PopSingles never counted them.
        private readonly List<MemoryArea> _allAreas;

        public Twin(RingSetup setup, ulong bytes)
        {
            _setup = setup;
            Memory = new GuardedMemory(bytes);
            _sides = Format.Create(Memory, setup);
            _data = Memory.Allocate(Slots * RingModel.SlotBytes, 64);
            _allAreas = [.. _sides.DriverWritten, .. _sides.DeviceWritten];
        }

        public GuardedMemory Memory { get; }

        private IDriverRing Driver => _sides.Driver;

        private IDeviceRing Device => _sides.Device;

        public void Corrupt(BurstOp op)
        {
            var areas = op.Burst ? _sides.DriverWritten : _sides.DeviceWritten;
            HostileRing.Apply(Memory, areas, _allAreas, _setup.Size, Device.Position.AvailIndex, op.Patch!);
        }

        /// <summary>Runs one step and describes what the calls returned (offsets, not host addresses).</summary>
        public string Step(BurstOp op, bool burst)
        {
            var random = new Random(op.Seed);
            switch (op.Kind)
            {
                case BurstOpKind.Add:
                {
                    var segments = new BufferSegment[op.Count];
                    for (var i = 0; i < segments.Length; i++)
                    {
                        segments[i] = new BufferSegment(_data + (ulong)(random.Next(Slots) * RingModel.SlotBytes), (uint)random.Next(1, RingModel.SlotBytes + 1));
                    }

                    var ids = new ushort[op.Count];
                    var added = 0;
                    if (burst)
                    {
                        added = Driver.TryAddBurst(segments, op.Writable, ids);
                    }
                    else
                    {
                        while (added < segments.Length && Driver.TryAdd(segments[added], op.Writable, out ids[added]))
                        {
                            added++;
                        }
                    }

                    return $"added {added}: {string.Join(',', ids[..added])}";
                }

                case BurstOpKind.AddChain:
                {
                    var readable = new BufferSegment[random.Next(0, 3)];
                    var writable = new BufferSegment[random.Next(readable.Length == 0 ? 1 : 0, 3)];
                    for (var i = 0; i < readable.Length + writable.Length; i++)
                    {
                        var s = new BufferSegment(_data + (ulong)(random.Next(Slots) * RingModel.SlotBytes), (uint)random.Next(1, RingModel.SlotBytes + 1));
                        (i < readable.Length ? ref readable[i] : ref writable[i - readable.Length]) = s;
                    }

                    var ok = Driver.TryAdd(readable, writable, out var id);
                    return $"chain {ok} {(ok ? id : 0)}";
                }

                case BurstOpKind.Publish:
                    Driver.Publish();
                    return "published";

                case BurstOpKind.PublishUsed:
                    Device.PublishUsed();
                    return "published used";

                case BurstOpKind.Pop:
                {
                    var chains = new PoppedChain[op.Count];
                    var segments = new ChainSegment[Math.Max(1, op.Count) * _setup.Size];
                    var popped = 0;
                    if (burst)
                    {
                        popped = Device.PopBurst(chains, segments);
                    }
                    else
                    {
                        var used = 0;
                        while (popped < chains.Length)
                        {
                            var before = Device.Position;
                            if (!Device.TryPop(out var chain))
                            {
                                break;
                            }

                            chain.Segments.CopyTo(segments.AsSpan(used));
                            chains[popped++] = new PoppedChain(chain.Token, used, chain.Segments.Length, chain.ReadableCount, chain.ReadableBytes, chain.WritableBytes, before);
                            used += chain.Segments.Length;
                        }
                    }

                    var text = new System.Text.StringBuilder($"popped {popped}:");
                    for (var i = 0; i < popped; i++)
                    {
                        var c = chains[i];
                        _inFlight.Add(c);
                        _popNumbers.Add(_pops++);
                        text.Append($" [{c.Token} r{c.ReadableCount} {c.ReadableBytes}/{c.WritableBytes} from {c.Before}");
                        foreach (var s in c.Segments(segments))
                        {
                            text.Append($" {Offset(s)}+{s.Length}{(s.IsWritable ? "w" : "")}");
                        }

                        text.Append(']');
                    }

                    return text.ToString();
                }

                case BurstOpKind.PopSingles:
                {
                    var segments = new ChainSegment[op.Count];
                    var tokens = new ChainToken[op.Count + (op.Seed % 3)];
                    var befores = new RingPosition[op.Count];
                    var popped = 0;
                    if (burst)
                    {
                        // The position before each buffer, from the one before the call: each
                        // buffer is one descriptor, so each moves the avail position by one.
                        var start = Device.Position;
                        popped = Device.PopSingles(segments, tokens);
                        for (var i = 0; i < popped; i++)
                        {
                            befores[i] = Advance(start, i);
                        }
                    }
                    else
                    {
                        while (popped < segments.Length)
                        {
                            var before = Device.Position;
                            if (!Device.TryPop(out var chain))
                            {
                                break;
                            }

                            if (chain.Segments.Length != 1)
                            {
                                Device.UndoPops(before);
                                break;
                            }

                            segments[popped] = chain.Segments[0];
                            tokens[popped] = chain.Token;
                            befores[popped++] = before;
                        }
                    }

                    var text = new System.Text.StringBuilder($"popped singles {popped}:");
                    for (var i = 0; i < popped; i++)
                    {
                        var s = segments[i];
                        var c = new PoppedChain(tokens[i], 0, 1, s.IsWritable ? 0 : 1, s.IsWritable ? 0 : s.Length, s.IsWritable ? s.Length : 0, befores[i]);
                        _inFlight.Add(c);
                        _popNumbers.Add(_pops++);
                        text.Append($" [{c.Token} from {c.Before} {Offset(s)}+{s.Length}{(s.IsWritable ? "w" : "")}]");
                    }

                    return text.ToString();
                }

                case BurstOpKind.Push:
                {
                    // IN_ORDER returns in pop order; otherwise a random pick of those in flight.
                    var n = Math.Min(op.Count, _inFlight.Count);
                    var tokens = new ChainToken[n];
                    var written = new uint[n];
                    var anyWritten = false;
                    for (var i = 0; i < n; i++)
                    {
                        var k = (_setup.Features & VirtioFeatures.InOrder) != 0 ? 0 : random.Next(_inFlight.Count);
                        var c = _inFlight[k];
                        _inFlight.RemoveAt(k);
                        _popNumbers.RemoveAt(k);
                        tokens[i] = c.Token;
                        written[i] = c.WritableBytes == 0 ? 0 : (uint)random.Next(0, (int)Math.Min(c.WritableBytes, 1000) + 1);
                        anyWritten |= written[i] != 0;
                    }

                    if (burst)
                    {
                        Device.PushUsedBurst(tokens, anyWritten ? written : default);
                    }
                    else
                    {
                        for (var i = 0; i < n; i++)
                        {
                            Device.PushUsed(tokens[i], written[i]);
                        }
                    }

                    return $"pushed {string.Join(',', tokens)} written {string.Join(',', written)}";
                }

                case BurstOpKind.Undo:
                {
                    // Only the newest pops can go back, and only while none of them was returned:
                    // the run of in-flight buffers at the end numbered up to the last pop.
                    var n = 0;
                    while (n < op.Count && n < _inFlight.Count && _popNumbers[^(n + 1)] == _pops - 1 - n)
                    {
                        n++;
                    }

                    if (n == 0)
                    {
                        return "undid nothing";
                    }

                    var from = _inFlight.Count - n;
                    try
                    {
                        if (burst)
                        {
                            Device.UndoNewestPops(n);
                        }
                        else
                        {
                            Device.UndoPops(_inFlight[from].Before);
                        }
                    }
                    catch (ArgumentException)
                    {
                        // The two forms word it differently: that both refuse is what must agree.
                        return "undo refused";
                    }

                    _inFlight.RemoveRange(from, n);
                    _popNumbers.RemoveRange(from, n);
                    _pops -= n;
                    return $"undid {n}";
                }

                case BurstOpKind.Take:
                {
                    var used = new UsedElement[op.Count];
                    var taken = 0;
                    if (burst)
                    {
                        taken = Driver.TakeUsed(used);
                    }
                    else
                    {
                        while (taken < used.Length && Driver.TryTakeUsed(out used[taken]))
                        {
                            taken++;
                        }
                    }

                    return $"taken {taken}: {string.Join(',', used[..taken])}";
                }

                default:
                    throw new InvalidOperationException(op.Kind.ToString());
            }
        }

        // The device's position after one more pop of one descriptor (2.7.6: split's avail index
        // runs free; 2.8.1: packed's wraps at the size and flips its wrap counter).
        private RingPosition Advance(RingPosition position, int descriptors)
        {
            if (Device is not Rings.Packed.PackedDeviceRing)
            {
                return position with { AvailIndex = (ushort)(position.AvailIndex + descriptors) };
            }

            var index = position.AvailIndex + descriptors;
            var laps = index / _setup.Size;
            return position with { AvailIndex = (ushort)(index % _setup.Size), AvailWrapCounter = position.AvailWrapCounter ^ (laps % 2 == 1) };
        }

        /// <summary>What differs between this twin and <paramref name="other"/>, or null.</summary>
        public string? Difference(Twin other)
        {
            var mine = State();
            var theirs = other.State();
            if (mine != theirs)
            {
                return $"state\n  {mine}\nvs\n  {theirs}";
            }

            var a = Memory.Bytes(Memory.Base, (int)Memory.Length);
            var b = other.Memory.Bytes(other.Memory.Base, (int)other.Memory.Length);
            var at = a.CommonPrefixLength(b);
            return at == a.Length ? null : $"ring memory differs at offset {at}";
        }

        private string State() =>
            $"driver {Driver.Outstanding}/{Driver.FreeDescriptors} {Driver.BrokenReason} {Counters(Driver.Counters)} "
            + $"device {Device.Position} {Device.BrokenReason} {Counters(Device.Counters)} in flight {_inFlight.Count}";

        private static string Counters(QueueCounters c) =>
            $"p{c.Packets} b{c.Bytes} u{c.Bursts} n{c.NotificationsSent}/{c.NotificationsSuppressed} x{c.BrokenCount} h[{string.Join(',', c.BurstHistogram.ToArray())}]";

        private unsafe long Offset(ChainSegment s) =>
            (long)((byte*)System.Runtime.CompilerServices.Unsafe.AsPointer(ref MemoryMarshal.GetReference(s.Span)) - (byte*)Memory.HostStart);

        public void Dispose() => Memory.Dispose();
    }
}
