using System.Diagnostics;
using Rings.Linux.Switching;

namespace Rings.Tests.Switching;

public class MacTableConcurrencyTests
{
    private const int Stations = 96;
    private const int PortCount = 64;

    /// <summary>
    /// One writer learns, moves, ages and flushes stations on a small, crowded table (so entries
    /// shift back through probe runs all the time) while two readers look them up without a lock.
    /// Every station only ever gets ports of its own residue class (port % 8 == station % 8), and
    /// the writer records each port it assigns before assigning it: a reader must only ever get
    /// a port that was recorded for that station, never one of another station's class (which a
    /// torn entry, address of one and port of another, would give).
    /// </summary>
    [Fact]
    public void ReadersOnlyEverSeeAPortThatStationHad()
    {
        var table = new MacTable(48, agingTicks: 40);
        var addresses = Enumerable.Range(0, Stations).Select(MacTableTests.Station).ToArray();
        var assigned = new long[Stations];
        long now = 0;
        var stop = 0;
        var wrong = 0L;
        var hits = 0L;
        var lookups = 0L;
        string? firstWrong = null;

        void Reader(int seed)
        {
            var random = new Random(seed);
            long localHits = 0, localLookups = 0;
            while (Volatile.Read(ref stop) == 0)
            {
                var s = random.Next(Stations);
                var port = table.Lookup(addresses[s], Volatile.Read(ref now));
                localLookups++;
                if (port == MacTable.Flood)
                {
                    continue;
                }

                localHits++;
                var history = Volatile.Read(ref assigned[s]);
                if ((uint)port >= PortCount || (history & (1L << port)) == 0 || port % 8 != s % 8)
                {
                    Interlocked.Increment(ref wrong);
                    Interlocked.CompareExchange(ref firstWrong, $"station {s} got port {port}, assigned 0x{history:x}", null);
                }
            }

            Interlocked.Add(ref hits, localHits);
            Interlocked.Add(ref lookups, localLookups);
        }

        var readers = new[] { new Thread(() => Reader(1)), new Thread(() => Reader(2)) };
        foreach (var r in readers)
        {
            r.Start();
        }

        var results = new long[5];
        var random = new Random(3);
        var clock = Stopwatch.StartNew();
        var operations = 0;
        try
        {
            // Bounded in time and in steps; a couple of million steps on an idle machine.
            while (clock.ElapsedMilliseconds < 1500 && operations < 5_000_000)
            {
                operations++;
                var s = random.Next(Stations);
                var roll = random.Next(1000);
                if (roll < 2)
                {
                    table.FlushPort(random.Next(PortCount));
                }
                else if (roll < 4)
                {
                    table.Expire(Volatile.Read(ref now));
                }
                else if (roll < 30)
                {
                    Volatile.Write(ref now, now + 1);
                }
                else
                {
                    var port = (s % 8) + (8 * random.Next(PortCount / 8));

                    // Recorded before the table can hand it out (the interlocked write is a full fence).
                    Interlocked.Or(ref assigned[s], 1L << port);
                    results[(int)table.Learn(addresses[s], port, Volatile.Read(ref now))]++;
                }
            }
        }
        finally
        {
            Volatile.Write(ref stop, 1);
            foreach (var r in readers)
            {
                r.Join();
            }
        }

        Assert.True(wrong == 0, $"{wrong} wrong lookups; first: {firstWrong}");

        // The run did what it is meant to: the table moved, shifted, filled and aged under the readers.
        Assert.True(results[(int)MacLearnResult.Moved] > 1000, $"moves {results[(int)MacLearnResult.Moved]}");
        Assert.True(results[(int)MacLearnResult.TableFull] > 0, "the table never filled");
        Assert.True(table.Counters.Aged + table.Counters.Flushed > 100, $"removals {table.Counters.Aged + table.Counters.Flushed}");
        Assert.True(hits > 1000 && lookups > hits, $"{hits} hits of {lookups} lookups");
    }
}
