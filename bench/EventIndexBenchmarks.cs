using BenchmarkDotNet.Attributes;

namespace Rings.Benchmarks;

/// <summary>The notification decisions: the EVENT_IDX formula over a spread of indices.</summary>
[MemoryDiagnoser]
public class EventIndexBenchmarks
{
    private readonly ushort[] _events = new ushort[1024];
    private readonly ushort[] _news = new ushort[1024];

    /// <summary>Fills the inputs with a fixed pseudo-random spread.</summary>
    [GlobalSetup]
    public void Setup()
    {
        var random = new Random(42);
        for (var i = 0; i < _events.Length; i++)
        {
            _events[i] = (ushort)random.Next(65536);
            _news[i] = (ushort)random.Next(65536);
        }
    }

    /// <summary>One EVENT_IDX decision (2.7.10), per operation.</summary>
    /// <returns>How many said notify.</returns>
    [Benchmark(OperationsPerInvoke = 1024)]
    public int NeedsNotification()
    {
        var count = 0;
        for (var i = 0; i < _events.Length; i++)
        {
            var n = _news[i];
            if (EventIndex.NeedsNotification(_events[i], n, (ushort)(n - 32)))
            {
                count++;
            }
        }

        return count;
    }
}
