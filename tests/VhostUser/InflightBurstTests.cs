using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using Rings.Chains;
using Rings.Linux.Device;
using Rings.Linux.Plumbing;
using Rings.Linux.VhostUser;

namespace Rings.Tests.VhostUser;

/// <summary>
/// A ring tracked in the inflight region pops and returns bursts with the wrapped ring's own burst
/// calls and records each buffer afterwards: the region must then say exactly what single pops and
/// returns would have made it say, after the pops, an undo, the returns and the publish.
/// </summary>
public class InflightBurstTests
{
    private const int QueueSize = 8;
    private static readonly InflightDescription TwoQueues = new(0, 0, 2, QueueSize);

    /// <summary>One round: buffers the driver adds (segments each), the burst asked for, where an undo starts.</summary>
    public readonly record struct Round(int[] Chains, int Want, int UndoAt);

    /// <summary>
    /// Two sessions driven alike, one device popping and returning one buffer at a time and one a
    /// burst at a time: same buffers in the same order, and the same inflight region byte for byte
    /// at every step.
    /// </summary>
    [Property(MaxTest = 40)]
    public Property BurstPopsAndReturnsRecordWhatSingleOnesRecord() =>
        Prop.ForAll(
            (from packed in ArbMap.Default.GeneratorFor<bool>()
             from inOrder in ArbMap.Default.GeneratorFor<bool>()
             from rounds in Gen.ListOf(
                 from chains in Gen.ArrayOf(Gen.Choose(1, 3)).Where(c => c.Length <= 6)
                 from want in Gen.Choose(1, 8)
                 from undoAt in Gen.Choose(0, 8)
                 select new Round(chains, want, undoAt)).Where(r => r.Count <= 8)
             select (packed, inOrder, rounds)).ToArbitrary(),
            t =>
            {
                var format = t.packed ? RingFormat.Packed : RingFormat.Split;
                var features = VirtioFeatures.Version1 | format.Feature | (t.inOrder ? VirtioFeatures.InOrder : 0);
                using var single = new Side(format, features);
                using var burst = new Side(format, features);
                Span<PoppedChain> chains = stackalloc PoppedChain[QueueSize];
                Span<ChainSegment> segments = stackalloc ChainSegment[QueueSize * 3];
                var befores = new RingPosition[QueueSize];
                var slot = 0;
                foreach (var round in t.rounds)
                {
                    foreach (var count in round.Chains)
                    {
                        var added = single.Add(count, slot);
                        Assert.Equal(added, burst.Add(count, slot));
                        slot = (slot + 1) % 32;
                    }

                    single.Driver.Publish();
                    burst.Driver.Publish();

                    var popped = 0;
                    var singles = new ChainToken[QueueSize];
                    while (popped < round.Want)
                    {
                        befores[popped] = single.Ring.Position;
                        if (!single.Ring.TryPop(out var chain))
                        {
                            break;
                        }

                        singles[popped++] = chain.Token;
                    }

                    Assert.Equal(popped, burst.Ring.PopBurst(chains[..round.Want], segments));
                    for (var i = 0; i < popped; i++)
                    {
                        Assert.Equal(singles[i], chains[i].Token);
                        Assert.Equal(befores[i], chains[i].Before);
                    }

                    Assert.Equal(single.Region(), burst.Region());

                    var kept = Math.Min(popped, round.UndoAt);
                    if (kept < popped)
                    {
                        single.Ring.UndoPops(befores[kept]);
                        burst.Ring.UndoPops(chains[kept].Before);
                        Assert.Equal(single.Region(), burst.Region());
                    }

                    var tokens = new ChainToken[kept];
                    for (var i = 0; i < kept; i++)
                    {
                        single.Ring.PushUsed(singles[i], 0);
                        tokens[i] = chains[i].Token;
                    }

                    burst.Ring.PushUsedBurst(tokens, default);
                    Assert.Equal(single.Region(), burst.Region());

                    single.Publish();
                    burst.Publish();
                    Assert.Equal(single.Region(), burst.Region());
                    Assert.Equal(single.Ring.Position, burst.Ring.Position);
                }
            });

    /// <summary>
    /// PopSingles on a tracked ring (the interface's form over single pops) records what single
    /// pops record, takes the buffers of one segment up to the first of several, and leaves that
    /// one to be popped: the inflight region byte for byte alike at every step.
    /// </summary>
    [Property(MaxTest = 40)]
    public Property SinglesPopsRecordWhatSingleOnesRecord() =>
        Prop.ForAll(
            (from packed in ArbMap.Default.GeneratorFor<bool>()
             from rounds in Gen.ListOf(
                 from chains in Gen.ArrayOf(Gen.Frequency((3, Gen.Constant(1)), (1, Gen.Choose(2, 3)))).Where(c => c.Length <= 6)
                 from want in Gen.Choose(0, 8)
                 select new Round(chains, want, 0)).Where(r => r.Count <= 8)
             select (packed, rounds)).ToArbitrary(),
            t =>
            {
                var format = t.packed ? RingFormat.Packed : RingFormat.Split;
                var features = VirtioFeatures.Version1 | format.Feature;
                using var single = new Side(format, features);
                using var burst = new Side(format, features);
                var segments = new ChainSegment[QueueSize];
                var tokens = new ChainToken[QueueSize];
                var available = new Queue<int>(); // segments of each buffer added and not popped
                var slot = 0;
                foreach (var round in t.rounds)
                {
                    foreach (var count in round.Chains)
                    {
                        var added = single.Add(count, slot);
                        Assert.Equal(added, burst.Add(count, slot));
                        if (added)
                        {
                            available.Enqueue(count);
                        }

                        slot = (slot + 1) % 32;
                    }

                    single.Driver.Publish();
                    burst.Driver.Publish();

                    // What PopSingles must do, in single pops: stop before the first buffer of
                    // several segments (known from what was added: a pop given back would still
                    // have taken a fetch counter).
                    // A pop call commits a recovery first (the region's first use), even one that
                    // pops nothing.
                    ((InflightDeviceRing)single.Ring).CommitRecovery();
                    var expected = new List<ChainToken>();
                    while (expected.Count < round.Want && available.TryPeek(out var next) && next == 1)
                    {
                        Assert.True(single.Ring.TryPop(out var chain));
                        Assert.Equal(1, chain.Segments.Length);
                        expected.Add(chain.Token);
                        available.Dequeue();
                    }

                    var popped = burst.Ring.PopSingles(segments.AsSpan(0, round.Want), tokens);
                    Assert.Equal(expected, tokens[..popped]);
                    Assert.All(segments[..popped], s => Assert.Equal(60u, s.Length));
                    Assert.Equal(single.Region(), burst.Region());
                    Assert.Equal(single.Ring.Position, burst.Ring.Position);

                    foreach (var token in expected)
                    {
                        single.Ring.PushUsed(token, 0);
                    }

                    burst.Ring.PushUsedBurst(tokens[..popped], default);
                    single.Publish();
                    burst.Publish();
                    Assert.Equal(single.Region(), burst.Region());

                    // A buffer of several segments at the head stops PopSingles for good: the
                    // round's leftovers are popped whole, so the next round starts clean.
                    DrainWhole(single);
                    DrainWhole(burst);
                    available.Clear();
                    Assert.Equal(single.Region(), burst.Region());
                }
            });

    // Pops and returns every available buffer, one at a time.
    private static void DrainWhole(Side side)
    {
        while (side.Ring.TryPop(out var chain))
        {
            side.Ring.PushUsed(chain.Token, 0);
        }

        side.Publish();
    }

    // One back-end session with the inflight region, a driver ring over its queue 1 and the
    // device's tracked ring.
    private sealed class Side : IDisposable
    {
        private readonly SessionHarness _harness = new();
        private readonly InflightRegion _region;

        public Side(RingFormat format, VirtioFeatures features)
        {
            var negotiated = _harness.Negotiate(features: features);
            _harness.SendMemTable();
            _harness.Ok(VhostUserMessage.WithInflight(VhostUserRequest.GetInflightFd, TwoQueues));
            _region = _harness.Session.Inflight!;
            // A packed ring starts with its wrap counters set (2.8.1): bit 15 of the base says so.
            _harness.SetupRing(1, QueueSize, baseValue: format == RingFormat.Packed ? 0x8000u : 0, format: format);
            Ring = _harness.Running[1].Ring;
            Assert.IsType<InflightDeviceRing>(Ring);
            Driver = format.CreateDriver(_harness.Guest, _harness.GuestAreas(1, QueueSize, format), QueueSize, negotiated);
        }

        public IDeviceRing Ring { get; }

        public IDriverRing Driver { get; }

        // A buffer of 'count' readable segments of 60 bytes; false when the ring has no room.
        public bool Add(int count, int slot)
        {
            Span<BufferSegment> readable = stackalloc BufferSegment[count];
            for (var i = 0; i < count; i++)
            {
                readable[i] = new BufferSegment(_harness.BufferAddress((slot * 3) + i, 64), 60);
            }

            return Driver.TryAdd(readable, [], out _);
        }

        public void Publish()
        {
            Ring.PublishUsed();
            InflightDeviceRing.FinishPublish(Ring);
            while (Driver.TryTakeUsed(out _))
            {
            }
        }

        public byte[] Region()
        {
            using var mine = SharedMemory.Map(_region.Handle!, 0, _region.Length);
            return mine.Slice(0, (int)_region.Length).ToArray();
        }

        public void Dispose() => _harness.Dispose();
    }
}
