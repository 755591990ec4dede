using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using Rings.Linux.Ports;
using Rings.Linux.Runtime;

namespace Rings.Tests.Runtime;

/// <summary>
/// How a pipeline deals queue pairs (lanes) to workers: every lane has exactly one worker, the
/// load is even, a port with as many lanes as workers has one on each, and the workers of a real
/// pipeline receive from exactly the lanes dealt to them.
/// </summary>
public class LaneAssignmentTests
{
    private static Gen<(int[] Lanes, int Workers)> Cases() =>
        from ports in Gen.Choose(1, 8)
        from lanes in Gen.ArrayOf(Gen.Frequency((3, Gen.Constant(1)), (2, Gen.Choose(2, 8))), ports)
        from workers in Gen.Choose(1, 6)
        select (lanes, workers);

    [Property(MaxTest = 300)]
    public Property EveryLaneHasExactlyOneWorkerAndTheLoadIsEven() =>
        Prop.ForAll(Cases().ToArbitrary(), c =>
        {
            var (lanes, workers) = c;
            var owners = LaneAssignment.Deal(lanes, workers);
            var count = LaneAssignment.WorkerCount(lanes, workers);
            Assert.Equal(Math.Min(workers, lanes.Sum()), count);
            Assert.Equal(lanes.Length, owners.Length);
            var load = new int[count];
            for (var p = 0; p < lanes.Length; p++)
            {
                // One owner per lane, and a real worker.
                Assert.Equal(lanes[p], owners[p].Length);
                foreach (var w in owners[p])
                {
                    Assert.InRange(w, 0, count - 1);
                    load[w]++;
                }

                // A port with at least as many lanes as workers has a lane on every worker, so
                // frames between two such ports stay on the worker that received them.
                if (lanes[p] >= count)
                {
                    Assert.Equal(count, owners[p].Distinct().Count());
                }
            }

            Assert.All(load, l => Assert.True(l >= 1, "every worker has a lane"));
            Assert.True(load.Max() - load.Min() <= 1, $"load [{string.Join(',', load)}]");
        });

    [Property(MaxTest = 200)]
    public Property EveryEnabledPairIsServedByExactlyOneWorker() =>
        Prop.ForAll(Cases().ToArbitrary(), Gen.Choose(0, int.MaxValue).ToArbitrary(), (c, seed) =>
        {
            // Whatever subset of pairs the front-ends enable, the workers' shares of them are
            // disjoint and together cover them all.
            var (lanes, workers) = c;
            var owners = LaneAssignment.Deal(lanes, workers);
            var count = LaneAssignment.WorkerCount(lanes, workers);
            var random = new Random(seed);
            for (var p = 0; p < lanes.Length; p++)
            {
                var enabled = Enumerable.Range(0, lanes[p]).Where(_ => random.Next(2) == 0).ToHashSet();
                var served = new List<int>();
                for (var w = 0; w < count; w++)
                {
                    served.AddRange(enabled.Where(l => owners[p][l] == w));
                }

                Assert.Equal(enabled.Count, served.Count);
                Assert.True(enabled.SetEquals(served));
            }
        });

    [Property(MaxTest = 60)]
    public Property APipelineGivesEachWorkerTheLanesDealtToIt() =>
        Prop.ForAll(Cases().ToArbitrary(), c =>
        {
            var (lanes, workers) = c;
            var ports = lanes.Select((l, i) => new LanePort($"lanes{i}", l)).ToArray();
            using var pipeline = new Pipeline(ports, new ReflectProcessor(), new PipelineOptions { Workers = workers, HandoffBytes = 1 << 19 });
            pipeline.RunOnce();
            var expected = LaneAssignment.Deal(lanes, workers);
            Assert.Equal(LaneAssignment.WorkerCount(lanes, workers), pipeline.WorkerCount);
            for (var p = 0; p < ports.Length; p++)
            {
                Assert.Equal(expected[p], pipeline.Assignment[p]);
                Assert.Equal(expected[p], ports[p].LaneWorkers);

                // The workers that polled the port are exactly the owners of its lanes.
                Assert.True(ports[p].Polled.SetEquals(expected[p]), $"port {p}: polled by [{string.Join(',', ports[p].Polled)}], lanes on [{string.Join(',', expected[p])}]");

                // A port served by several workers counts in a part per worker; by one, in one part.
                Assert.Equal(expected[p].Distinct().Count() > 1 ? pipeline.WorkerCount : 1, ports[p].Counters.Parts.Count);
            }
        });

    [Fact]
    public void TheStartupDescriptionNamesEachPairsWorker()
    {
        var owners = LaneAssignment.Deal([2, 1, 2], 2);
        Assert.Equal(
            ["pair 0 on worker 0, pair 1 on worker 1", "worker 0", "pair 0 on worker 1, pair 1 on worker 0"],
            owners.Select(o => LaneAssignment.Describe(o)));
    }

    /// <summary>A port with lanes and no peer: remembers which workers asked it for frames.</summary>
    private sealed class LanePort(string name, int lanes) : Port("lanes", name)
    {
        public HashSet<int> Polled { get; } = [];

        public override int Lanes => lanes;

        public override int Receive(FrameBurst burst)
        {
            lock (Polled)
            {
                Polled.Add(burst.Worker);
            }

            return 0;
        }

        public override void Release(FrameBurst burst)
        {
        }

        public override int Transmit(FrameBurst burst, ReadOnlySpan<byte> frames) => frames.Length;

        public override void Flush()
        {
        }
    }
}
