using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using Rings.Linux.Ports;
using Rings.Linux.Runtime;

namespace Rings.Tests.Runtime;

/// <summary>The learning switch's rules, with in-memory ports and a pipeline driven round by round.</summary>
public class LearningSwitchTests
{
    private static readonly byte[] Broadcast = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff];

    private sealed class Rig : IDisposable
    {
        public Rig(int ports, int workers = 1, long aging = LearningSwitch.DefaultAgingMilliseconds)
        {
            Ports = new InMemoryPort[ports];
            for (var p = 0; p < ports; p++)
            {
                Ports[p] = new InMemoryPort($"p{p}", slots: 256);
                Ports[p].Open();
            }

            Switch = new LearningSwitch(agingMilliseconds: aging);
            Pipeline = new Pipeline(Ports, Switch, new PipelineOptions { Workers = workers });
        }

        public InMemoryPort[] Ports { get; }

        public LearningSwitch Switch { get; }

        public Pipeline Pipeline { get; }

        /// <summary>Sends a frame from <paramref name="source"/> to <paramref name="destination"/> in at <paramref name="ingress"/> and returns the ports it came out of.</summary>
        public List<int> Send(int ingress, byte[] source, byte[] destination)
        {
            var frame = new byte[64];
            destination.CopyTo(frame, 0);
            source.CopyTo(frame, 6);
            frame[12] = 0x88;
            frame[13] = 0xb5;
            Assert.True(Ports[ingress].TryInject(frame));
            Drain();
            var outs = new List<int>();
            var buffer = new byte[2048];
            for (var p = 0; p < Ports.Length; p++)
            {
                while (Ports[p].TryTake(buffer, out var length, out _))
                {
                    Assert.True(frame.AsSpan().SequenceEqual(buffer.AsSpan(0, length)));
                    outs.Add(p);
                }
            }

            return outs;
        }

        public void Drain()
        {
            var idle = 0;
            for (var i = 0; i < 1000 && idle < 3; i++)
            {
                idle = Pipeline.RunOnce() == 0 ? idle + 1 : 0;
            }
        }

        public void Dispose()
        {
            Pipeline.Dispose();
            foreach (var p in Ports)
            {
                p.Dispose();
            }
        }
    }

    private static byte[] Mac(int n) => [0x02, 0, 0, 0, 0, (byte)n];

    [Fact]
    public void BroadcastFloodsToEveryOtherPortNeverBackToTheIngress()
    {
        using var rig = new Rig(4);
        Assert.Equal([1, 2, 3], rig.Send(0, Mac(1), Broadcast));
        Assert.Equal([0, 1, 3], rig.Send(2, Mac(2), Broadcast));
    }

    [Fact]
    public void MulticastAndUnknownUnicastFlood()
    {
        using var rig = new Rig(3);
        Assert.Equal([1, 2], rig.Send(0, Mac(1), [0x01, 0x00, 0x5e, 0, 0, 1]));
        Assert.Equal([0, 2], rig.Send(1, Mac(2), Mac(9)));
    }

    [Fact]
    public void LearnedUnicastGoesToOnePortAndIsNotFlooded()
    {
        using var rig = new Rig(3);
        rig.Send(1, Mac(2), Broadcast); // learns station 2 on port 1
        Assert.Equal([1], rig.Send(0, Mac(1), Mac(2)));
        Assert.Equal([0], rig.Send(1, Mac(2), Mac(1))); // station 1 was learned on port 0 by the frame before
        Assert.Equal(1, rig.Ports[2].Counters.TxFrames); // port 2 saw only the first broadcast
    }

    [Fact]
    public void AStationThatMovesIsFollowed()
    {
        using var rig = new Rig(3);
        rig.Send(1, Mac(2), Broadcast);
        rig.Send(2, Mac(2), Broadcast);
        Assert.Equal([2], rig.Send(0, Mac(1), Mac(2)));
    }

    [Fact]
    public void AFrameForAStationOnItsOwnIngressPortIsFilteredAndCounted()
    {
        using var rig = new Rig(3);
        rig.Send(0, Mac(2), Broadcast);
        Assert.Empty(rig.Send(0, Mac(1), Mac(2)));
        Assert.Equal(1, rig.Ports[0].Counters.Drops(DropReason.Filtered));
    }

    [Fact]
    public void AMulticastSourceIsNeverLearned()
    {
        using var rig = new Rig(3);
        byte[] group = [0x03, 0, 0, 0, 0, 7];
        rig.Send(1, group, Broadcast);
        Assert.Equal(-1, rig.Switch.Lookup(group));
        Assert.Equal(0, rig.Switch.Stations);
        Assert.Equal([1, 2], rig.Send(0, Mac(1), group));
    }

    [Fact]
    public void APortThatGoesDownHasItsEntriesFlushedAndIsNotFloodedTo()
    {
        using var rig = new Rig(3);
        rig.Send(1, Mac(2), Broadcast);
        Assert.Equal(1, rig.Switch.Lookup(Mac(2)));
        rig.Ports[1].SetLinkState(LinkState.Down);
        rig.Drain();
        Assert.Equal(-1, rig.Switch.Lookup(Mac(2)));
        Assert.Equal([2], rig.Send(0, Mac(1), Mac(2)));
        Assert.Equal(0, rig.Ports[1].Counters.Drops(DropReason.LinkDown));
    }

    [Fact]
    public void EntriesAgeOut()
    {
        using var rig = new Rig(3, aging: 50);
        rig.Send(1, Mac(2), Broadcast);
        Assert.Equal([1], rig.Send(0, Mac(1), Mac(2)));
        Thread.Sleep(120);
        rig.Drain();
        Assert.Equal([0, 2], rig.Send(1, Mac(3), Mac(2)).Order());
    }

    [Fact]
    public void WithSeveralWorkersLearningReachesTheWriter()
    {
        using var rig = new Rig(4, workers: 2);
        rig.Send(3, Mac(4), Broadcast); // port 3 belongs to worker 1
        Assert.Equal(3, rig.Switch.Lookup(Mac(4)));
        Assert.Equal([3], rig.Send(0, Mac(1), Mac(4)));
        Assert.Equal([0], rig.Send(3, Mac(4), Mac(1)));
    }

    internal sealed record Step(int Ingress, int Source, int Destination);

    /// <summary>
    /// Random traffic between a few stations on a few ports, against a dictionary model of the
    /// table: each frame comes out exactly where the model says (unicast to the learned port,
    /// nothing back to the ingress, flood to all others for group and unknown addresses).
    /// </summary>
    [Property(MaxTest = 150)]
    public Property Frames_go_where_a_dictionary_model_says() =>
        Prop.ForAll(
            Arb.From(
                from ports in Gen.Choose(2, 5)
                from workers in Gen.Choose(1, 2)
                from steps in Gen.ListOf(
                    from ingress in Gen.Choose(0, ports - 1)
                    from source in Gen.Choose(0, 7)
                    from destination in Gen.Choose(0, 8)
                    select new Step(ingress, source, destination))
                select (ports, workers, steps)),
            c =>
            {
                using var rig = new Rig(c.ports, c.workers);
                var model = new Dictionary<int, int>();
                foreach (var s in c.steps)
                {
                    // Stations 6 and 7 are group addresses as sources; destination 8 is broadcast.
                    var source = s.Source >= 6 ? new byte[] { 0x03, 0, 0, 0, 0, (byte)s.Source } : Mac(s.Source);
                    var destination = s.Destination == 8 ? Broadcast : Mac(s.Destination);
                    // Worker 0 learns before it looks up; another worker's learning reaches the
                    // table (through worker 0) only after the frame was sent.
                    var learnsFirst = s.Ingress % c.workers == 0;
                    if (s.Source < 6 && learnsFirst)
                    {
                        model[s.Source] = s.Ingress;
                    }

                    List<int> expected;
                    if (s.Destination != 8 && model.TryGetValue(s.Destination, out var port))
                    {
                        expected = port == s.Ingress ? [] : [port];
                    }
                    else
                    {
                        expected = [.. Enumerable.Range(0, c.ports).Where(p => p != s.Ingress)];
                    }

                    var got = rig.Send(s.Ingress, source, destination);
                    Assert.Equal(expected, got.Order().ToList());
                    if (s.Source < 6)
                    {
                        model[s.Source] = s.Ingress;
                    }
                }

                return true;
            });
}
