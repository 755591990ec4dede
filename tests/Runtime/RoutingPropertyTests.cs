using System.Buffers.Binary;
using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using Rings.Linux.Ports;
using Rings.Linux.Runtime;

namespace Rings.Tests.Runtime;

/// <summary>
/// Burst routing against a model: frames enter in-memory ports, a scripted processor decides each
/// one, destinations accept a random number of frames (or are down, or take shorter frames), and
/// every copy addressed to a port either arrives there once, intact and in order, or is counted
/// as a drop with a reason, on the right port. Nothing is lost or duplicated uncounted, with one
/// worker or several (frames crossing workers through handoffs).
/// </summary>
public class RoutingPropertyTests
{
    internal sealed record FrameCase(int Ingress, int Length, Decision Decision);

    internal sealed record RoutingCase(int Ports, int Workers, int Burst, int[] SlotBytes, int[] Budgets, bool[] Up, FrameCase[] Frames)
    {
        public override string ToString() =>
            $"ports {Ports}, workers {Workers}, burst {Burst}, slots [{string.Join(',', SlotBytes)}], budgets [{string.Join(',', Budgets)}], up [{string.Join(',', Up)}], frames: {string.Join("; ", Frames.Select(f => $"{f.Ingress}:{f.Length}:{f.Decision.Kind}/{f.Decision.Value:x}"))}";
    }

    private static Gen<RoutingCase> Cases() =>
        from ports in Gen.Choose(1, 6)
        from workers in Gen.Choose(1, 3)
        from burst in Gen.Elements(1, 4, 32, 256)
        from slots in Gen.ArrayOf(Gen.Elements(256, 2048), ports)
        from budgets in Gen.ArrayOf(Gen.Frequency((3, Gen.Constant(-1)), (2, Gen.Choose(0, 20))), ports)
        from up in Gen.ArrayOf(Gen.Frequency((5, Gen.Constant(true)), (1, Gen.Constant(false))), ports)
        from count in Gen.Choose(0, 120)
        from frames in Gen.ArrayOf(FrameGen(ports, slots), count)
        select new RoutingCase(ports, workers, burst, slots, budgets, up, frames);

    private static Gen<FrameCase> FrameGen(int ports, int[] slots) =>
        from ingress in Gen.Choose(0, ports - 1)
        from length in Gen.Frequency((1, Gen.Choose(0, 13)), (8, Gen.Choose(18, Math.Min(300, slots[ingress]))), (2, Gen.Choose(18, slots[ingress])))
        from decision in Gen.Frequency(
            (4, Gen.Choose(0, ports - 1).Select(p => new Decision(DecisionKind.Forward, (ulong)p))),
            (3, Gen.Choose(0, (1 << ports) - 1).Select(m => new Decision(DecisionKind.Send, (ulong)m))),
            (1, Gen.Constant(new Decision(DecisionKind.Send, 1UL << 50))),
            (3, Gen.Constant(new Decision(DecisionKind.Flood, 0))),
            (1, Gen.Elements(DropReason.Filtered, DropReason.NoRoute).Select(r => new Decision(DecisionKind.Drop, 0, r))),
            (1, Gen.Constant(new Decision(DecisionKind.Undecided, 0))))
        select new FrameCase(ingress, length, decision);

    [Property(MaxTest = 300)]
    public Property Every_copy_arrives_once_intact_or_is_counted_as_a_drop() =>
        Prop.ForAll(Arb.From(Cases()), c => Run(c, hold: 0));

    /// <summary>The same with frames held back while their only destinations are full: held frames end up delivered or counted, never both, never neither.</summary>
    [Property(MaxTest = 100)]
    public Property Holding_frames_for_full_destinations_loses_and_duplicates_nothing_uncounted() =>
        Prop.ForAll(Arb.From(Cases()), c => Run(c, hold: 2));

    [Fact]
    public void AHeldFrameWaitsForRoomThenArrivesWithNothingDropped()
    {
        using var a = new InMemoryPort("a");
        using var b = new InMemoryPort("b");
        a.Open();
        b.Open();
        b.TransmitBudget = 0;
        var script = new Dictionary<int, Decision>();
        for (var id = 0; id < 10; id++)
        {
            script[id] = new Decision(DecisionKind.Forward, 1);
            Assert.True(a.TryInject(ScriptedProcessor.Frame(id, 60)));
        }

        using var pipeline = new Pipeline([a, b], new ScriptedProcessor(script), new PipelineOptions { Burst = 4, HoldMilliseconds = 60_000 });
        for (var i = 0; i < 5; i++)
        {
            Assert.Equal(0, pipeline.RunOnce());
        }

        Assert.Equal(10, a.Pending);
        Assert.Equal(0, b.Counters.TotalDrops);
        Assert.Equal(0, a.Counters.RxFrames);
        b.TransmitBudget = 3;
        pipeline.RunOnce();
        b.TransmitBudget = -1;
        while (pipeline.RunOnce() > 0)
        {
        }

        var buffer = new byte[2048];
        for (var id = 0; id < 10; id++)
        {
            Assert.True(b.TryTake(buffer, out _, out _));
            Assert.Equal(id, BinaryPrimitives.ReadInt32LittleEndian(buffer.AsSpan(14)));
        }

        Assert.Equal(0, b.Counters.TotalDrops);
        Assert.Equal(10, a.Counters.RxFrames);
        Assert.Equal(10, b.Counters.TxFrames);
    }

    [Fact]
    public void AHeldSourceIsNotTakenAgainUntilItsDestinationHasRoomOrTheHoldEnds()
    {
        using var a = new InMemoryPort("a");
        using var b = new InMemoryPort("b");
        a.Open();
        b.Open();
        b.TransmitBudget = 0;
        var script = new Dictionary<int, Decision>();
        for (var id = 0; id < 8; id++)
        {
            script[id] = new Decision(DecisionKind.Forward, 1);
            Assert.True(a.TryInject(ScriptedProcessor.Frame(id, 60)));
        }

        var processor = new ScriptedProcessor(script);
        using var pipeline = new Pipeline([a, b], processor, new PipelineOptions { Burst = 4, HoldMilliseconds = 300 });
        for (var i = 0; i < 50; i++)
        {
            pipeline.RunOnce();
        }

        // Taken once, refused, held: not taken, refused and given back 49 more times.
        Assert.Equal(4, processor.Processed);
        Assert.Equal(8, a.Pending);

        // Room for two: the next round takes the burst again and two of its frames go.
        b.TransmitBudget = 2;
        pipeline.RunOnce();
        Assert.Equal(8, processor.Processed);
        Assert.Equal(2, b.Counters.TxFrames);
        Assert.Equal(6, a.Pending);

        // No room ever again: once the hold time is over the held frames are taken, dropped and counted.
        var deadline = Environment.TickCount64 + 10_000;
        while (a.Pending > 0 && Environment.TickCount64 < deadline)
        {
            pipeline.RunOnce();
            Thread.Sleep(5);
        }

        Assert.Equal(0, a.Pending);
        Assert.Equal(6, b.Counters.Drops(DropReason.DestinationFull));
        Assert.Equal(2, b.Counters.TxFrames);
    }

    [Fact]
    public void FramesFloodedWhileNoOtherPortIsUpWaitForOneThenArrive()
    {
        using var a = new InMemoryPort("a");
        using var b = new InMemoryPort("b");
        a.Open();
        for (var id = 0; id < 5; id++)
        {
            Assert.True(a.TryInject(ScriptedProcessor.Frame(id, 60)));
        }

        using var pipeline = new Pipeline([a, b], new LearningSwitch(), new PipelineOptions { HoldMilliseconds = 60_000 });
        for (var i = 0; i < 5; i++)
        {
            Assert.Equal(0, pipeline.RunOnce());
        }

        Assert.Equal(5, a.Pending);
        Assert.Equal(0, a.Counters.TotalDrops);
        b.Open();
        while (pipeline.RunOnce() > 0)
        {
        }

        Assert.Equal(5, b.Available);
        Assert.Equal(0, a.Counters.TotalDrops + b.Counters.TotalDrops);
    }

    private static bool Run(RoutingCase c, int hold)
    {
        var ports = new InMemoryPort[c.Ports];
        for (var p = 0; p < c.Ports; p++)
        {
            ports[p] = new InMemoryPort($"p{p}", slots: 512, slotBytes: c.SlotBytes[p]);
            ports[p].Open();
        }

        try
        {
            var script = new Dictionary<int, Decision>();
            var sent = new Dictionary<int, byte[]>();
            var expected = new List<int>[c.Ports];
            for (var p = 0; p < c.Ports; p++)
            {
                expected[p] = [];
            }

            var upMask = 0UL;
            for (var p = 0; p < c.Ports; p++)
            {
                upMask |= c.Up[p] ? 1UL << p : 0;
            }

            var all = (1UL << c.Ports) - 1;
            var ingressDrops = new long[c.Ports];
            var floodedNowhere = new long[c.Ports];
            for (var id = 0; id < c.Frames.Length; id++)
            {
                var f = c.Frames[id];
                var frame = ScriptedProcessor.Frame(id, f.Length);
                Assert.True(ports[f.Ingress].TryInject(frame));
                if (f.Length < 14)
                {
                    ingressDrops[f.Ingress]++;
                    continue;
                }

                script[id] = f.Decision;
                sent[id] = frame;
                var destinations = f.Decision.Kind switch
                {
                    DecisionKind.Forward => 1UL << (int)f.Decision.Value,
                    DecisionKind.Send => f.Decision.Value & all,
                    DecisionKind.Flood => upMask & ~(1UL << f.Ingress),
                    _ => 0UL,
                };
                if (destinations == 0 && f.Decision.Kind == DecisionKind.Flood)
                {
                    // A flood with no other port up: link-down, on the ingress port.
                    floodedNowhere[f.Ingress]++;
                }
                else if (destinations == 0)
                {
                    ingressDrops[f.Ingress]++;
                }

                foreach (var p in new PortMask(destinations))
                {
                    expected[p].Add(id);
                }
            }

            for (var p = 0; p < c.Ports; p++)
            {
                if (!c.Up[p])
                {
                    ports[p].SetLinkState(LinkState.Down);
                }

                ports[p].TransmitBudget = c.Budgets[p];
            }

            using var pipeline = new Pipeline(ports, new ScriptedProcessor(script), new PipelineOptions { Workers = c.Workers, Burst = c.Burst, HandoffBytes = 1 << 19, HoldMilliseconds = hold });
            var idle = 0;
            for (var round = 0; round < 10_000 && (idle < 3 || ports.Any(p => p.Pending > 0)); round++)
            {
                idle = pipeline.RunOnce() == 0 ? idle + 1 : 0;
                if (idle >= 3)
                {
                    // Frames held for a full destination: let the hold time pass.
                    Thread.Sleep(1);
                }
            }

            Assert.All(ports, p => Assert.Equal(0, p.Pending));
            Assert.Equal(0, pipeline.Errors);
            var buffer = new byte[4096];
            for (var p = 0; p < c.Ports; p++)
            {
                var port = ports[p];
                var got = new List<int>();
                while (port.TryTake(buffer, out var length, out _))
                {
                    var id = BinaryPrimitives.ReadInt32LittleEndian(buffer.AsSpan(14));
                    Assert.True(sent.TryGetValue(id, out var original), $"port {p} got an unknown frame {id}");
                    Assert.True(original.AsSpan().SequenceEqual(buffer.AsSpan(0, length)), $"frame {id} corrupted at port {p}");
                    got.Add(id);
                }

                Assert.Equal(got.Count, got.Distinct().Count());

                // In order per ingress port (the order frames were offered there).
                foreach (var group in got.GroupBy(id => c.Frames[id].Ingress))
                {
                    var wanted = expected[p].Where(id => c.Frames[id].Ingress == group.Key).ToList();
                    Assert.True(IsSubsequence(group.ToList(), wanted), $"port {p}: frames from port {group.Key} out of order or unexpected");
                }

                var counters = port.Counters;
                var linkDownHere = counters.Drops(DropReason.LinkDown) - floodedNowhere[p];
                var departureDrops = counters.Drops(DropReason.DestinationFull) + counters.Drops(DropReason.OverMtu) + linkDownHere + counters.Drops(DropReason.OffloadUnsupported);
                Assert.True(expected[p].Count == got.Count + departureDrops, $"port {p}: {expected[p].Count} addressed, {got.Count} arrived, {departureDrops} counted as dropped on the way out");
                Assert.Equal(got.Count, counters.TxFrames);
                if (c.Up[p])
                {
                    Assert.Equal(0, linkDownHere);
                }
                else
                {
                    Assert.Empty(got);
                }

                var arrivalDrops = counters.Drops(DropReason.Runt) + counters.Drops(DropReason.Undecided) + counters.Drops(DropReason.Filtered) + counters.Drops(DropReason.NoRoute) + counters.Drops(DropReason.Malformed);
                Assert.True(ingressDrops[p] == arrivalDrops, $"port {p}: {ingressDrops[p]} frames had nowhere to go, {arrivalDrops} counted");
                Assert.Equal(c.Frames.Count(f => f.Ingress == p), counters.RxFrames);
            }

            return true;
        }
        finally
        {
            foreach (var port in ports)
            {
                port.Dispose();
            }
        }
    }

    private static bool IsSubsequence(List<int> got, List<int> wanted)
    {
        var j = 0;
        foreach (var id in got)
        {
            while (j < wanted.Count && wanted[j] != id)
            {
                j++;
            }

            if (j == wanted.Count)
            {
                return false;
            }

            j++;
        }

        return true;
    }
}
