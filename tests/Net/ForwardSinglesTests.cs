using System.Runtime.InteropServices;
using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using Rings.Chains;
using Rings.Linux.Device;
using Rings.Memory;

namespace Rings.Tests.Net;

/// <summary>
/// The forwarder's burst of one-segment buffers (PopSingles on both queues) must do exactly what its
/// burst of whole records does: twin ring pairs in identical memories, one forwarded with the
/// singles burst and one without, driven alike through random mixes of frames of one and of several
/// segments, receive buffers of one and of several segments, frames too short for their header,
/// frames larger than a buffer (merged or dropped), receive buffers the device may not write, and
/// receive queues that run dry. After every step both must agree on what the forwarder reported,
/// what the drivers took back, the rings' positions, broken states and counters, and every byte
/// of the buffers.
/// </summary>
public sealed class ForwardSinglesTests
{
    private const ulong Guest = 0x10_0000;
    private const int DataBytes = 64 * 1024;

    /// <summary>One step: the driver adds a transmit frame or a receive buffer, publishes, the device forwards, or the driver takes back.</summary>
    public enum StepKind
    {
        /// <summary>A frame: Segments readable segments holding Length bytes, header included.</summary>
        AddFrame,

        /// <summary>A receive buffer: Segments writable (or, when Odd, readable) segments of Length bytes in all.</summary>
        AddBuffer,

        /// <summary>Both drivers publish.</summary>
        Publish,

        /// <summary>The device forwards up to Length frames.</summary>
        Forward,

        /// <summary>The drivers take back what was used.</summary>
        Take,
    }

    /// <summary>A step and its values.</summary>
    public sealed record Step(StepKind Kind, int Segments, int Length, bool Odd, int Offset)
    {
        /// <inheritdoc/>
        public override string ToString() => $"{Kind}({Segments}x{Length}{(Odd ? ",odd" : "")}@{Offset})";
    }

    /// <summary>A run: ring format and features, and its steps.</summary>
    public sealed record Scenario(bool Packed, bool InOrder, bool Mergeable, int Size, Step[] Steps)
    {
        /// <inheritdoc/>
        public override string ToString() =>
            $"{(Packed ? "packed" : "split")}{(InOrder ? " in-order" : "")}{(Mergeable ? " mergeable" : "")} size {Size}: {string.Join(' ', Steps.Select(s => s.ToString()))}";
    }

    private static Gen<Step> Steps =>
        from kind in Gen.Frequency(
            (6, Gen.Constant(StepKind.AddFrame)),
            (6, Gen.Constant(StepKind.AddBuffer)),
            (3, Gen.Constant(StepKind.Publish)),
            (3, Gen.Constant(StepKind.Forward)),
            (2, Gen.Constant(StepKind.Take)))
        from segments in Gen.Frequency((5, Gen.Constant(1)), (1, Gen.Choose(2, 3)))
        from length in kind == StepKind.Forward
            ? Gen.Choose(1, 64)
            : Gen.Frequency((1, Gen.Choose(0, 11)), (6, Gen.Choose(12, 140)), (2, Gen.Choose(141, 600)))
        from odd in Gen.Frequency((12, Gen.Constant(false)), (1, Gen.Constant(true)))
        from offset in Gen.Choose(0, DataBytes - 1024)
        select new Step(kind, segments, length, odd, offset);

    private static Arbitrary<Scenario> Scenarios =>
        Arb.From(
            from packed in Gen.Elements(false, true)
            from inOrder in Gen.Elements(false, true)
            from mergeable in Gen.Elements(false, true)
            from size in Gen.Elements(16, 64)
            from n in Gen.Choose(10, 160)
            from steps in Gen.ArrayOf(Steps, n)
            select new Scenario(packed, inOrder, mergeable, size, steps),
            s => Shrinking.DropSteps(s.Steps).Select(steps => s with { Steps = steps }));

    /// <summary>The singles burst and the record burst forward alike, step by step.</summary>
    [Property(MaxTest = 300)]
    public Property The_singles_burst_forwards_as_the_record_burst_does() =>
        Prop.ForAll(Scenarios, scenario =>
        {
            using var singles = new Twin(scenario);
            using var records = new Twin(scenario);
            for (var i = 0; i < scenario.Steps.Length; i++)
            {
                var step = scenario.Steps[i];
                var expected = records.Run(step, singles: false);
                var actual = singles.Run(step, singles: true);
                if (expected != actual)
                {
                    throw new InvalidOperationException($"step {i} {step}: records gave {expected}, singles gave {actual}");
                }

                var difference = records.Difference(singles);
                if (difference is not null)
                {
                    throw new InvalidOperationException($"after step {i} {step}: {difference}");
                }
            }
        });

    // Two rings (the driver's transmit and receive queues) and a data area in one region, both
    // sides of each ring over it.
    private sealed class Twin : IDisposable
    {
        private readonly NativeRegion _region;
        private readonly IDriverRing _txDriver;
        private readonly IDriverRing _rxDriver;
        private readonly IDeviceRing _tx;
        private readonly IDeviceRing _rx;
        private readonly bool _mergeable;
        private readonly ulong _data;

        public Twin(Scenario scenario)
        {
            var format = scenario.Packed ? RingFormat.Packed : RingFormat.Split;
            var layout = format.Layout(scenario.Size);
            var ringBytes = (ulong)((layout.TotalBytes + 4095) & ~4095);
            _region = new NativeRegion((2 * ringBytes) + DataBytes, Guest);
            _data = Guest + (2 * ringBytes);

            // The same bytes in both twins' data areas: the frames' contents.
            var bytes = Bytes(Guest, (int)_region.Length);
            for (var i = 0; i < bytes.Length; i++)
            {
                bytes[i] = (byte)((i * 131) + (i >> 8));
            }

            bytes[..(int)(2 * ringBytes)].Clear();
            var memory = new GuestMemory(_region.Region);
            var features = VirtioFeatures.Version1 | (scenario.InOrder ? VirtioFeatures.InOrder : VirtioFeatures.None);
            var txAreas = layout.At(Guest);
            var rxAreas = layout.At(Guest + ringBytes);
            _txDriver = format.CreateDriver(memory, txAreas, scenario.Size, features);
            _rxDriver = format.CreateDriver(memory, rxAreas, scenario.Size, features);
            _tx = format.CreateDevice(memory, memory, txAreas, scenario.Size, features, new RingPosition(0));
            _rx = format.CreateDevice(memory, memory, rxAreas, scenario.Size, features, new RingPosition(0));
            _mergeable = scenario.Mergeable;
        }

        public string Run(Step step, bool singles)
        {
            switch (step.Kind)
            {
                case StepKind.AddFrame:
                case StepKind.AddBuffer:
                {
                    // The length split over the segments, the first taking the rest.
                    var parts = new BufferSegment[step.Segments];
                    var at = _data + (ulong)step.Offset;
                    for (var i = 0; i < parts.Length; i++)
                    {
                        var length = (step.Length / parts.Length) + (i == 0 ? step.Length % parts.Length : 0);
                        parts[i] = new BufferSegment(at, (uint)length);
                        at += (ulong)length + 8;
                    }

                    var frame = step.Kind == StepKind.AddFrame;
                    var driver = frame ? _txDriver : _rxDriver;
                    var readable = frame ^ step.Odd;
                    var added = driver.TryAdd(readable ? parts : [], readable ? [] : parts, out var id);
                    return $"added {added} {(added ? id : 0)}";
                }

                case StepKind.Publish:
                    _txDriver.Publish();
                    _rxDriver.Publish();
                    return "published";

                case StepKind.Forward:
                {
                    var result = NetForwarder.Forward(_tx, _rx, step.Length, _mergeable, singles);
                    return result.ToString();
                }

                case StepKind.Take:
                {
                    var taken = new List<string>();
                    while (_txDriver.TryTakeUsed(out var used))
                    {
                        taken.Add($"t{used.Id}/{used.Length}");
                    }

                    while (_rxDriver.TryTakeUsed(out var used))
                    {
                        taken.Add($"r{used.Id}/{used.Length}");
                    }

                    return string.Join(' ', taken);
                }

                default:
                    throw new InvalidOperationException(step.Kind.ToString());
            }
        }

        public string? Difference(Twin other)
        {
            var mine = State();
            var theirs = other.State();
            if (mine != theirs)
            {
                return $"state\n  {mine}\nvs\n  {theirs}";
            }

            // The buffers' bytes, not the rings': under IN_ORDER a burst the singles burst ends
            // early (at a buffer of several segments) returns its frames with two used entries
            // where the record burst writes one; the driver takes back the same either way, which
            // the Take steps compare.
            var a = Bytes(_data, DataBytes);
            var b = other.Bytes(other._data, DataBytes);
            var at = a.CommonPrefixLength(b);
            return at == a.Length ? null : $"data differs at offset {at}";
        }

        // Counters too, bytes included: the two bursts undo different pops (the record burst pops
        // a buffer of several segments the singles burst leaves in the ring), and an undone pop's
        // bytes come off the counter. A broken queue's position and bytes not: the buffers after
        // the one that broke it stay popped, and the record burst may have popped more of them;
        // its packets (counted when returned) yes.
        private string State() =>
            $"tx {Where(_tx)} d{_tx.Counters.Drops} rx {Where(_rx)} d{_rx.Counters.Drops} "
            + $"drivers {_txDriver.Outstanding}/{_rxDriver.Outstanding} {_txDriver.BrokenReason}/{_rxDriver.BrokenReason}";

        private static string Where(IDeviceRing ring) =>
            ring.IsBroken ? $"broken {ring.BrokenReason} p{ring.Counters.Packets}" : $"{ring.Position} p{ring.Counters.Packets} b{ring.Counters.Bytes}";

        private unsafe Span<byte> Bytes(ulong guest, int length) =>
            new((void*)(_region.HostAddress + (nint)(guest - Guest)), length);

        public void Dispose() => _region.Dispose();
    }
}
