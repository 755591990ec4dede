using Rings.Linux.Runtime;

namespace Rings.Tests.Runtime;

/// <summary>Drop counts from the owning worker and from other workers, at the same time.</summary>
public class PortCountersTests
{
    [Fact]
    public void DropsCountedByAnotherWorkerAreNotLostToTheOwnersIncrements()
    {
        // The owner counts plainly while another worker counts the same reason atomically; every
        // drop of both must be in the total (a shared word would lose some of the other's adds).
        const int Owner = 2_000_000;
        const int Other = 2_000_000;
        var counters = new PortCounters();
        using var start = new Barrier(2);
        var other = new Thread(() =>
        {
            start.SignalAndWait();
            for (var i = 0; i < Other; i++)
            {
                counters.CountShared(DropReason.DestinationFull);
            }
        });
        other.Start();
        start.SignalAndWait();
        for (var i = 0; i < Owner; i++)
        {
            counters.Count(DropReason.DestinationFull);
        }

        other.Join();
        Assert.Equal(Owner + Other, counters.Drops(DropReason.DestinationFull));
        Assert.Equal(Owner + Other, counters.TotalDrops);
        Assert.Equal(Owner + Other, counters.Snapshot().Drops(DropReason.DestinationFull));
    }

    [Fact]
    public void SharedAndOwnDropsAddUpPerReason()
    {
        var counters = new PortCounters();
        counters.Count(DropReason.OverMtu, 3);
        counters.CountShared(DropReason.OverMtu, 4);
        counters.CountShared(DropReason.DestinationFull, 5);
        Assert.Equal(7, counters.Drops(DropReason.OverMtu));
        Assert.Equal(5, counters.Drops(DropReason.DestinationFull));
        Assert.Equal(12, counters.TotalDrops);
        var snapshot = counters.Snapshot();
        Assert.Equal(7, snapshot.Drops(DropReason.OverMtu));
        Assert.Equal(12, snapshot.TotalDrops);
    }
}
