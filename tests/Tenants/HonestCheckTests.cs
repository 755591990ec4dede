using System.Runtime.CompilerServices;
using Rings.Fuzz.Targets;
using Rings.Linux.Plumbing;
using Rings.Memory;
using Rings.Split;
using Rings.Tests.Hostile;
using Rings.Tests.Linux;

namespace Rings.Tests.Tenants;

/// <summary>
/// The checks other tests and the fuzz targets rely on can fail: a leaked descriptor is counted,
/// a device ring broken for a reason popping cannot give is caught, and a front-end's memory
/// mapped by the host is counted whatever the front-end named it.
/// </summary>
[Collection(FdCountCollection.Name)]
public class HonestCheckTests
{
    [Fact]
    public void ALeakedDescriptorIsCountedByTheLeakCheck()
    {
        var before = FdCount.Snapshot();
        Leak();
        try
        {
            Assert.Equal([EventFd.KernelName], FdCount.OpenedSince(before).Select(l => l[(l.IndexOf(": ", StringComparison.Ordinal) + 2)..]));
        }
        finally
        {
            // The leak was made for the test: let its finalizer close it now.
            GC.Collect();
            GC.WaitForPendingFinalizers();
        }
    }

    [Fact]
    public void DrainCatchesABrokenVerdictPoppingCannotGive()
    {
        var (ring, regions) = EmptySplitRing();
        ring.MarkBroken(BrokenReason.UsedIdNotOutstanding);
        var violation = Assert.Throws<FuzzViolation>(() => DeviceChainChecks.Drain(ring, regions, 4, DrainBehaviour.None));
        Assert.Contains("UsedIdNotOutstanding", violation.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void DrainAcceptsAVerdictPoppingGives()
    {
        var (ring, regions) = EmptySplitRing();
        ring.MarkBroken(BrokenReason.HeadOutOfRange);
        Assert.Equal(0, DeviceChainChecks.Drain(ring, regions, 4, DrainBehaviour.None));
    }

    [Fact]
    public void AFrontEndsMemoryIsCountedWhateverItsName()
    {
        var before = ProcessResources.Of(Environment.ProcessId).GuestMappings;
        using (SharedMemory.Create(4096, $"rings-hostile-{Guid.NewGuid():N}"))
        {
            Assert.Equal(before + 1, ProcessResources.Of(Environment.ProcessId).GuestMappings);
        }

        Assert.Equal(before, ProcessResources.Of(Environment.ProcessId).GuestMappings);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void Leak() => _ = EventFd.Create();

    private static (SplitDeviceRing Ring, GuardedRegion[] Regions) EmptySplitRing()
    {
        var layout = RingFormat.Split.Layout(8);
        GuardedRegion[] regions =
        [
            new(layout.DescriptorAreaBytes, 0x1000, 16),
            new(layout.DriverAreaBytes, 0x10000, 2),
            new(layout.DeviceAreaBytes, 0x20000, 4),
        ];
        var memory = new GuestMemory([regions[0].Region, regions[1].Region, regions[2].Region]);
        return (new SplitDeviceRing(memory, new RingAreas(0x1000, 0x10000, 0x20000), 8, VirtioFeatures.None), regions);
    }
}
