using Rings.Linux.Driver;
using Rings.Linux.Net;
using Rings.Testing.Traffic;
using Xunit.Abstractions;

namespace Rings.Tests.Apps;

/// <summary>
/// A traffic generator on each queue pair of a library front-end (64 B frames, each pair its own
/// flow, the frames expected back): for tests that pause pairs while the others run and then check
/// that no pair lost, duplicated or damaged a frame.
/// </summary>
internal sealed class PairTraffic : IDisposable
{
    private readonly VirtioNetDriver[] _drivers;
    private readonly TrafficGenerator[] _generators;
    private readonly TrafficFigures?[] _figures;
    private readonly Thread[] _threads;

    /// <summary>Starts a generator thread on each pair of <paramref name="frontend"/> (which the caller disposes after this).</summary>
    public PairTraffic(VhostUserFrontend frontend, int pairs)
    {
        _drivers = VirtioNetDriver.ForEachPair(frontend, 128);
        _generators = new TrafficGenerator[pairs];
        _figures = new TrafficFigures?[pairs];
        _threads = new Thread[pairs];
        for (var p = 0; p < pairs; p++)
        {
            var d = _drivers[p];
            var traffic = new TrafficOptions(64, 32, 0, TimeSpan.FromSeconds(60), WaitStrategy.Adaptive, Flow: TestFrame.FlowFor(p, pairs));
            _generators[p] = TrafficGenerator.Create(d.Path, d.Transmit.Kick, d.Receive.Kick, d.Receive.Call, traffic);
            var pair = p;
            _threads[p] = new Thread(() => _figures[pair] = _generators[pair].Run(TimeSpan.FromSeconds(10))) { IsBackground = true };
            _threads[p].Start();
        }
    }

    /// <summary>Frames pair <paramref name="pair"/> got back so far.</summary>
    public long Received(int pair) => Volatile.Read(ref _generators[pair].Received);

    /// <summary>What each pair sent, once <see cref="StopAndCheck"/> has run.</summary>
    public long[] Sent => [.. _figures.Select(f => f!.Sent)];

    /// <summary>Stops every generator, lets it drain, and asserts each pair got back every frame it sent, once and intact.</summary>
    public void StopAndCheck(ITestOutputHelper output)
    {
        foreach (var g in _generators)
        {
            g.Stop();
        }

        Assert.All(_threads, t => Assert.True(t.Join(30_000), "a traffic thread did not drain"));
        for (var p = 0; p < _figures.Length; p++)
        {
            var f = _figures[p]!;
            output.WriteLine($"pair {p}: sent {f.Sent:N0}, received {f.Received:N0}, lost {f.Lost}, duplicated {f.Duplicated}, corrupted {f.Corrupted}");
            Assert.True(f.Sent > 0);
            Assert.Equal(f.Sent, f.Received);
            Assert.Equal(0, f.Lost);
            Assert.Equal(0, f.Duplicated);
            Assert.Equal(0, f.Corrupted);
        }
    }

    /// <summary>Stops the generators and frees the drivers (not the front-end).</summary>
    public void Dispose()
    {
        foreach (var g in _generators)
        {
            g.Stop();
        }

        foreach (var t in _threads)
        {
            t.Join(10_000);
        }

        foreach (var d in _drivers)
        {
            d.Dispose();
        }
    }
}
