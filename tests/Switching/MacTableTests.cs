using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using Rings.Linux.Net;
using Rings.Linux.Switching;

namespace Rings.Tests.Switching;

/// <summary>What a model run does at one step.</summary>
public enum MacOpKind
{
    Learn,
    Lookup,
    Advance,
    Expire,
    FlushPort,
}

/// <summary>One step: <see cref="Station"/> indexes the scenario's address pool.</summary>
public sealed record MacOp(MacOpKind Kind, int Station, int Port, long Ticks)
{
    public override string ToString() => Kind switch
    {
        MacOpKind.Learn => $"Learn(s{Station}@p{Port})",
        MacOpKind.Lookup => $"Lookup(s{Station})",
        MacOpKind.Advance => $"Advance({Ticks})",
        MacOpKind.FlushPort => $"Flush(p{Port})",
        _ => Kind.ToString(),
    };
}

/// <summary>A table size, an aging time, an address pool and the steps run against table and model.</summary>
public sealed record MacScenario(int Capacity, long Aging, int Stations, MacOp[] Ops)
{
    public override string ToString() =>
        $"capacity {Capacity}, aging {Aging}, {Stations} stations: {string.Join(' ', Ops.Select(o => o.ToString()))}";
}

public class MacTableTests
{
    /// <summary>Ports the scenarios use: a few small ones and the largest allowed.</summary>
    private static readonly int[] Ports = [0, 1, 2, 3, 4, MacTable.MaxPort];

    /// <summary>
    /// Random runs of learning (new stations, refreshes, moves, group and all-zero sources),
    /// lookups (learned, unknown, aged, group destinations), time passing, expiry and port flushes,
    /// on tables from 1 to 256 entries: after every step the table has the model's size and
    /// counters and gives the same result, and it answers every address of the pool as the
    /// dictionary model does (after every step on small pools, every 8th on large ones).
    /// </summary>
    [Property(MaxTest = 300)]
    public Property AgreesWithADictionaryModel() =>
        Prop.ForAll(Arb.From(Scenarios(), Shrink), scenario =>
        {
            var pool = Pool(scenario.Stations);
            var table = new MacTable(scenario.Capacity, scenario.Aging);
            var model = new MacTableModel(scenario.Capacity, scenario.Aging);
            long now = 1000;
            var step = 0;
            foreach (var op in scenario.Ops)
            {
                step++;
                var port = Ports[op.Port];
                switch (op.Kind)
                {
                    case MacOpKind.Learn:
                        Assert.Equal(model.Learn(pool[op.Station], port, now), table.Learn(pool[op.Station], port, now));
                        break;
                    case MacOpKind.Lookup:
                        Assert.Equal(model.Lookup(pool[op.Station], now), table.Lookup(pool[op.Station], now));
                        break;
                    case MacOpKind.Advance:
                        now += op.Ticks;
                        break;
                    case MacOpKind.Expire:
                        Assert.Equal(model.Expire(now), table.Expire(now));
                        break;
                    case MacOpKind.FlushPort:
                        Assert.Equal(model.FlushPort(port), table.FlushPort(port));
                        break;
                }

                Assert.Equal(model.Count, table.Count);
                Assert.True(table.Count <= table.Capacity);
                Assert.True(table.OverflowCountsAreExact());
                Assert.Equal(model.Counters, table.Counters);

                // Every address after every step on small pools; on large ones every 8th step and the last.
                if (pool.Length <= 32 || step % 8 == 0 || step == scenario.Ops.Length)
                {
                    foreach (var address in pool)
                    {
                        Assert.Equal(model.Lookup(address, now), table.Lookup(address, now));
                    }
                }
            }
        });

    [Fact]
    public void GroupDestinationsFloodAndGroupOrZeroSourcesAreNeverLearned()
    {
        var table = new MacTable(8, 100);
        var multicast = MacAddress.Parse("01:00:5e:00:00:fb");
        var ipv6Multicast = MacAddress.Parse("33:33:00:00:00:01");
        foreach (var group in new[] { MacAddress.Broadcast, multicast, ipv6Multicast })
        {
            Assert.True(group.IsMulticast);
            Assert.Equal(MacLearnResult.InvalidSource, table.Learn(group, 1, 0));
            Assert.Equal(MacTable.Flood, table.Lookup(group, 0));
        }

        Assert.Equal(MacLearnResult.InvalidSource, table.Learn(default, 1, 0));
        Assert.Equal(MacTable.Flood, table.Lookup(default, 0));
        Assert.Equal(0, table.Count);
        Assert.Equal(4, table.Counters.InvalidSources);
        Assert.Equal(0, table.Counters.Learned);
    }

    [Fact]
    public void AFullTableRefusesNewStationsAndKeepsTheOnesItHasUntilTheyAge()
    {
        var table = new MacTable(4, agingTicks: 100);
        for (var i = 0; i < 4; i++)
        {
            Assert.Equal(MacLearnResult.Learned, table.Learn(Station(i), i, now: 0));
        }

        // A flood of new source addresses learns nothing and displaces nobody.
        for (var i = 4; i < 1000; i++)
        {
            Assert.Equal(MacLearnResult.TableFull, table.Learn(Station(i), 9, now: 50));
        }

        Assert.Equal(996, table.Counters.Refused);
        for (var i = 0; i < 4; i++)
        {
            Assert.Equal(i, table.Lookup(Station(i), 50));
        }

        Assert.Equal(MacTable.Flood, table.Lookup(Station(500), 50));

        // Station 0 stays active; the others age out at tick 100 and make room.
        Assert.Equal(MacLearnResult.Refreshed, table.Learn(Station(0), 0, now: 60));
        Assert.Equal(MacLearnResult.Learned, table.Learn(Station(1000), 7, now: 100));
        Assert.Equal(2, table.Count);
        Assert.Equal(3, table.Counters.Aged);
        Assert.Equal(0, table.Lookup(Station(0), 100));
        Assert.Equal(7, table.Lookup(Station(1000), 100));
        Assert.Equal(MacTable.Flood, table.Lookup(Station(1), 100));
    }

    [Fact]
    public void MovesAgingAndFlushesAtTheirBoundaries()
    {
        var table = new MacTable(16, agingTicks: 10);
        var a = Station(1);
        Assert.Equal(MacLearnResult.Learned, table.Learn(a, 3, 0));
        Assert.Equal(MacLearnResult.Moved, table.Learn(a, 5, 2));
        Assert.Equal(5, table.Lookup(a, 11));
        Assert.Equal(MacTable.Flood, table.Lookup(a, 12));

        // Aged but still held: seen again, it is learned afresh (not a move).
        Assert.Equal(1, table.Count);
        Assert.Equal(MacLearnResult.Learned, table.Learn(a, 6, 30));
        Assert.Equal(1, table.Counters.Moved);
        Assert.Equal(2, table.Counters.Learned);

        Assert.Equal(MacLearnResult.Learned, table.Learn(Station(2), 6, 30));
        Assert.Equal(MacLearnResult.Learned, table.Learn(Station(3), 7, 30));
        Assert.Equal(2, table.FlushPort(6));
        Assert.Equal(MacTable.Flood, table.Lookup(a, 30));
        Assert.Equal(7, table.Lookup(Station(3), 30));
        Assert.Equal(1, table.Expire(40));
        Assert.Equal(0, table.Count);
    }

    [Fact]
    public void AThousandStationsAreAllFoundAndAllFlushed()
    {
        var table = new MacTable(1024, long.MaxValue);
        var random = new Random(7);
        var stations = Enumerable.Range(0, 1024).Select(_ => RandomStation(random)).Distinct().ToArray();
        for (var i = 0; i < stations.Length; i++)
        {
            Assert.Equal(MacLearnResult.Learned, table.Learn(stations[i], i % 8, 0));
        }

        Assert.Equal(stations.Length, table.Count);
        for (var i = 0; i < stations.Length; i++)
        {
            Assert.Equal(i % 8, table.Lookup(stations[i], 1));
        }

        // Flushing ports one by one shifts entries back through every probe run.
        for (var port = 0; port < 8; port++)
        {
            Assert.Equal(Enumerable.Range(0, stations.Length).Count(i => i % 8 == port), table.FlushPort(port));
            for (var i = 0; i < stations.Length; i++)
            {
                Assert.Equal(i % 8 <= port ? MacTable.Flood : i % 8, table.Lookup(stations[i], 1));
            }
        }

        Assert.Equal(0, table.Count);
        Assert.True(table.OverflowCountsAreExact());
    }

    [Fact]
    public void BadArgumentsAreRefused()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new MacTable(0, 10));
        Assert.Throws<ArgumentOutOfRangeException>(() => new MacTable(MacTable.MaxCapacity + 1, 10));
        Assert.Throws<ArgumentOutOfRangeException>(() => new MacTable(4, 0));
        var table = new MacTable(4, 10);
        Assert.Throws<ArgumentOutOfRangeException>(() => table.Learn(Station(1), -1, 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => table.Learn(Station(1), MacTable.MaxPort + 1, 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => table.FlushPort(-1));
        Assert.Equal(MacLearnResult.Learned, table.Learn(Station(1), MacTable.MaxPort, 0));
        Assert.Equal(MacTable.MaxPort, table.Lookup(Station(1), 0));
    }

    [Property]
    public Property AddressesRoundTripThroughBytesNumbersAndText(ulong value)
    {
        var number = value & 0xFFFF_FFFF_FFFF;
        var address = MacAddress.FromUInt64(number);
        Span<byte> octets = stackalloc byte[6];
        address.WriteTo(octets);
        var read = MacAddress.Read(octets);
        var text = address.ToString();
        return (read == address
                && address.ToUInt64() == number
                && MacAddress.Parse(text) == address
                && octets[0] == (byte)(number >> 40)
                && address.IsMulticast == ((octets[0] & 1) != 0)
                && address.IsLocallyAdministered == ((octets[0] & 2) != 0)
                && text == string.Join(':', octets.ToArray().Select(b => b.ToString("x2"))))
            .Label($"{text} from 0x{number:x12}");
    }

    [Fact]
    public void AddressTextIsParsedStrictly()
    {
        Assert.Equal(0x0252_494E_4701UL, MacAddress.Parse("02:52:49:4E:47:01").ToUInt64());
        Assert.Equal(MacAddress.Parse("02-52-49-4e-47-01"), MacAddress.Parse("02:52:49:4e:47:01"));
        Assert.True(MacAddress.Broadcast.IsBroadcast);
        Assert.False(MacAddress.TryParse("02:52:49:4e:47", out _));
        Assert.False(MacAddress.TryParse("02:52:49:4e:47:0g", out _));
        Assert.False(MacAddress.TryParse("02:52:49.4e:47:01", out _));
        Assert.Throws<FormatException>(() => MacAddress.Parse("nonsense"));
        Assert.Throws<ArgumentOutOfRangeException>(() => MacAddress.FromUInt64(1UL << 48));
    }

    /// <summary>A locally administered unicast address numbered <paramref name="i"/>.</summary>
    internal static MacAddress Station(int i) => MacAddress.FromUInt64(0x0252_0000_0000UL | (uint)i);

    internal static MacAddress RandomStation(Random random) =>
        MacAddress.FromUInt64((((ulong)random.NextInt64() & 0xFFFF_FFFF_FFFF) & ~0x0100_0000_0000UL) | 0x0200_0000_0000UL);

    /// <summary>Unicast stations, then broadcast, two multicast addresses and the all-zero address.</summary>
    private static MacAddress[] Pool(int stations) =>
    [
        .. Enumerable.Range(0, stations).Select(Station),
        MacAddress.Broadcast,
        MacAddress.Parse("01:00:5e:00:00:01"),
        MacAddress.Parse("33:33:ff:00:00:02"),
        default,
    ];

    private static Gen<MacScenario> Scenarios() =>
        from big in Gen.Frequency((3, Gen.Constant(false)), (1, Gen.Constant(true)))
        from capacity in big ? Gen.Choose(64, 256) : Gen.Choose(1, 16)
        from stations in big ? Gen.Choose(capacity, capacity * 2) : Gen.Choose(1, 24)
        from aging in Gen.Choose(1, 20)
        from length in Gen.Choose(1, big ? 600 : 150)
        from ops in Gen.ArrayOf(Op(stations + 4, aging), length)
        select new MacScenario(capacity, aging, stations, ops);

    private static Gen<MacOp> Op(int addresses, int aging) => Gen.Frequency(
        (10, from s in Gen.Choose(0, addresses - 1) from p in Gen.Choose(0, Ports.Length - 1) select new MacOp(MacOpKind.Learn, s, p, 0)),
        (4, from s in Gen.Choose(0, addresses - 1) select new MacOp(MacOpKind.Lookup, s, 0, 0)),
        (4, from t in Gen.Frequency((4, Gen.Choose(0, 2)), (1, Gen.Choose(aging - 1, aging + 1))) select new MacOp(MacOpKind.Advance, 0, 0, t)),
        (1, Gen.Constant(new MacOp(MacOpKind.Expire, 0, 0, 0))),
        (1, from p in Gen.Choose(0, Ports.Length - 1) select new MacOp(MacOpKind.FlushPort, 0, p, 0)));

    private static IEnumerable<MacScenario> Shrink(MacScenario s) =>
        Shrinking.DropSteps(s.Ops).Select(ops => s with { Ops = ops });
}
