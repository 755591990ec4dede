using System.Runtime.Versioning;
using BenchmarkDotNet.Attributes;
using Rings.Linux.Net;
using Rings.Linux.Switching;

namespace Rings.Benchmarks;

/// <summary>
/// The learning switch's per-frame table work: learn the source, look up the destination, over
/// a table of <see cref="Entries"/> learned stations. Frames come in bursts of 32 and the clock
/// ticks once per burst, so almost every learn also writes its entry's age stamp (the costly
/// case). The baseline is the same work on a <see cref="Dictionary{TKey, TValue}"/> (which has
/// no concurrent readers, no aging and no fixed size).
/// </summary>
[MemoryDiagnoser]
[MedianColumn]
[SupportedOSPlatform("linux")]
public class MacTableBenchmarks
{
    private const int Frames = 4096;
    private const int Burst = 32;

    private MacAddress[] _sources = [];
    private MacAddress[] _destinations = [];
    private int[] _ports = [];
    private MacTable? _table;
    private Dictionary<MacAddress, (int Port, long LastSeen)> _dictionary = [];
    private long _now;

    /// <summary>Stations learned in the table.</summary>
    [Params(1024)]
    public int Entries { get; set; }

    /// <summary>Learns every station and draws random frames between them.</summary>
    [GlobalSetup]
    public void Setup()
    {
        var random = new Random(11);
        var stations = new HashSet<MacAddress>();
        while (stations.Count < Entries)
        {
            // Locally administered unicast addresses.
            stations.Add(MacAddress.FromUInt64((((ulong)random.NextInt64() & 0xFFFF_FFFF_FFFF) & ~0x0100_0000_0000UL) | 0x0200_0000_0000UL));
        }

        var all = stations.ToArray();
        var portOf = all.Select(_ => random.Next(8)).ToArray();
        _table = new MacTable(Entries, agingTicks: 300_000);
        for (var i = 0; i < all.Length; i++)
        {
            _table.Learn(all[i], portOf[i], 0);
            _dictionary[all[i]] = (portOf[i], 0);
        }

        _sources = new MacAddress[Frames];
        _destinations = new MacAddress[Frames];
        _ports = new int[Frames];
        // Every station sends in every pass over the frames, so none ages out however long the run.
        var senders = Enumerable.Range(0, Frames).Select(f => f % all.Length).ToArray();
        random.Shuffle(senders);
        for (var f = 0; f < Frames; f++)
        {
            var s = senders[f];
            _sources[f] = all[s];
            _ports[f] = portOf[s];
            _destinations[f] = all[random.Next(all.Length)];
        }
    }

    /// <summary>Per frame: learn the source and look up the destination on the dictionary.</summary>
    /// <returns>A sum of the ports found, so nothing is optimized away.</returns>
    [Benchmark(Baseline = true, OperationsPerInvoke = Frames)]
    public int DictionaryLearnAndLookup()
    {
        var sum = 0;
        var dictionary = _dictionary;
        var (sources, destinations, ports, now) = (_sources, _destinations, _ports, _now);
        for (var f = 0; f < Frames; f++)
        {
            if ((f & (Burst - 1)) == 0)
            {
                now++;
            }

            dictionary[sources[f]] = (ports[f], now);
            sum += dictionary.TryGetValue(destinations[f], out var e) && now - e.LastSeen < 300_000 ? e.Port : -1;
        }

        _now = now;
        return sum;
    }

    /// <summary>Per frame: learn the source and look up the destination on the MAC table.</summary>
    /// <returns>A sum of the ports found, so nothing is optimized away.</returns>
    [Benchmark(OperationsPerInvoke = Frames)]
    public int LearnAndLookup()
    {
        var sum = 0;
        var table = _table!;
        var (sources, destinations, ports, now) = (_sources, _destinations, _ports, _now);
        for (var f = 0; f < Frames; f++)
        {
            if ((f & (Burst - 1)) == 0)
            {
                now++;
            }

            table.Learn(sources[f], ports[f], now);
            sum += table.Lookup(destinations[f], now);
        }

        _now = now;
        return sum;
    }
}
