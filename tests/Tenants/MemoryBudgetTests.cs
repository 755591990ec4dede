using Rings.Linux.Device;
using Rings.Linux.Plumbing;
using Rings.Linux.VhostUser;
using Rings.Memory;
using Rings.Tests.Linux;
using Rings.Tests.VhostUser;

namespace Rings.Tests.Tenants;

/// <summary>
/// A front-end may have at most <see cref="VhostUserBackendOptions.MaxMemoryBytes"/> of its memory
/// and <see cref="VhostUserBackendOptions.MaxMemorySlots"/> regions mapped at once. A table or
/// region beyond that is refused (BudgetExceeded, TooManyRegions) before anything is mapped: sparse
/// files of tens of TiB cost the front-end nothing, and would otherwise cost the host its address space.
/// </summary>
[Collection(FdCountCollection.Name)]
public class MemoryBudgetTests
{
    private const ulong GiB = 1UL << 30;

    [Fact]
    public void TheDefaultBudgetIsSixtyFourGiB() => Assert.Equal(64 * GiB, new VhostUserBackendOptions().MaxMemoryBytes);

    [Fact]
    public void ATableBeyondTheDefaultBudgetIsRefusedBeforeAnythingIsMapped()
    {
        using var harness = new SessionHarness();
        harness.Negotiate();
        var name = $"rings-sparse-{Guid.NewGuid():N}";
        using var sparse = SealedSparse(65 * GiB, name);
        var outcome = harness.Send(MemTable(new MemoryRegionDescription(0, 65 * GiB, 0x7000_0000_0000, 0)), sparse);

        Assert.Equal(VhostUserErrorCode.BudgetExceeded, outcome.Error.Code);
        Assert.False(outcome.Close);
        Assert.Equal(0, PeerFiles.Mappings(name));
        Assert.Null(harness.Session.Memory);
    }

    [Fact]
    public void TheBudgetCountsEveryRegionOfATable()
    {
        using var harness = new SessionHarness(new VhostUserBackendOptions { MaxMemoryBytes = 3 << 20 });
        harness.Negotiate();
        var name = $"rings-sparse-{Guid.NewGuid():N}";
        using var a = SealedSparse(2 << 20, name);
        using var b = SealedSparse(2 << 20, name);
        var outcome = harness.Send(
            MemTable(new MemoryRegionDescription(0, 2 << 20, 0x1000_0000, 0), new MemoryRegionDescription(4 << 20, 2 << 20, 0x2000_0000, 0)), a, b);

        Assert.Equal(VhostUserErrorCode.BudgetExceeded, outcome.Error.Code);
        Assert.Equal(0, PeerFiles.Mappings(name));
    }

    [Fact]
    public void RegionsAddedOneByOneCountAgainstTheSameBudget()
    {
        using var harness = new SessionHarness(new VhostUserBackendOptions { MaxMemoryBytes = 3 << 20 });
        harness.Negotiate();
        var name = $"rings-sparse-{Guid.NewGuid():N}";
        using var a = SealedSparse(2 << 20, name);
        using var b = SealedSparse(2 << 20, name);
        harness.Ok(VhostUserMessage.WithRegion(VhostUserRequest.AddMemReg, new MemoryRegionDescription(0, 2 << 20, 0x1000_0000, 0)), a);
        Assert.Equal(1, PeerFiles.Mappings(name));

        var outcome = harness.Send(VhostUserMessage.WithRegion(VhostUserRequest.AddMemReg, new MemoryRegionDescription(4 << 20, 2 << 20, 0x2000_0000, 0), needReply: true), b);

        Assert.Equal(VhostUserErrorCode.BudgetExceeded, outcome.Error.Code);
        Assert.Equal(1, PeerFiles.Mappings(name));
        Assert.Single(harness.Session.Memory!.Regions);
    }

    [Fact]
    public void AMemoryTableMayNotHaveMoreRegionsThanTheSlots()
    {
        using var harness = new SessionHarness(new VhostUserBackendOptions { MaxMemorySlots = 2 });
        harness.Negotiate();
        var name = $"rings-sparse-{Guid.NewGuid():N}";
        using var a = SealedSparse(1 << 20, name);
        using var b = SealedSparse(1 << 20, name);
        using var c = SealedSparse(1 << 20, name);
        var outcome = harness.Send(
            MemTable(
                new MemoryRegionDescription(0, 1 << 20, 0x1000_0000, 0),
                new MemoryRegionDescription(2 << 20, 1 << 20, 0x2000_0000, 0),
                new MemoryRegionDescription(4 << 20, 1 << 20, 0x3000_0000, 0)),
            a,
            b,
            c);

        Assert.Equal(VhostUserErrorCode.TooManyRegions, outcome.Error.Code);
        Assert.Equal(0, PeerFiles.Mappings(name));
    }

    [Fact]
    public void AnInflightRegionBeyondTheBudgetIsRefusedAndNothingIsMade()
    {
        // Two queues of the largest size: what a front-end may ask the back-end to make and lay out.
        var asked = new InflightDescription(0, 0, 2, RingFormat.MaxSize);
        var bytes = InflightRegion.Bytes(RingFormat.Split, 2, RingFormat.MaxSize);
        using var refused = new SessionHarness(new VhostUserBackendOptions { MaxMemoryBytes = bytes - 1 });
        refused.Negotiate();

        var outcome = refused.Send(VhostUserMessage.WithInflight(VhostUserRequest.GetInflightFd, asked, needReply: true));

        Assert.Equal(VhostUserErrorCode.BudgetExceeded, outcome.Error.Code);
        Assert.Contains("inflight region", outcome.Error.Detail!, StringComparison.Ordinal);
        Assert.Null(refused.Session.Inflight);

        using var fits = new SessionHarness(new VhostUserBackendOptions { MaxMemoryBytes = bytes });
        fits.Negotiate();
        fits.Ok(VhostUserMessage.WithInflight(VhostUserRequest.GetInflightFd, asked));
        Assert.Equal(bytes, fits.Session.Inflight!.Length);
    }

    [Fact]
    public void TheInflightRegionAndTheMemoryTableShareOneBudget()
    {
        var asked = new InflightDescription(0, 0, 2, RingFormat.MaxSize);
        var inflight = InflightRegion.Bytes(RingFormat.Split, 2, RingFormat.MaxSize);
        var budget = (2UL << 20) + inflight - 1;
        var name = $"rings-sparse-{Guid.NewGuid():N}";
        var table = MemTable(new MemoryRegionDescription(0, 2 << 20, 0x1000_0000, 0));

        // Inflight region first, then a table that fits the budget alone but not beside it.
        using (var h = new SessionHarness(new VhostUserBackendOptions { MaxMemoryBytes = budget }))
        {
            h.Negotiate();
            h.Ok(VhostUserMessage.WithInflight(VhostUserRequest.GetInflightFd, asked));
            using var memory = SealedSparse(2 << 20, name);
            var outcome = h.Send(table, memory);
            Assert.Equal(VhostUserErrorCode.BudgetExceeded, outcome.Error.Code);
            Assert.Contains("inflight region", outcome.Error.Detail!, StringComparison.Ordinal);
            Assert.Null(h.Session.Memory);
            Assert.Equal(0, PeerFiles.Mappings(name));
        }

        // The table first, then the inflight region: refused the same way, the table kept.
        using (var h = new SessionHarness(new VhostUserBackendOptions { MaxMemoryBytes = budget }))
        {
            h.Negotiate();
            using var memory = SealedSparse(2 << 20, name);
            h.Ok(table, memory);
            var outcome = h.Send(VhostUserMessage.WithInflight(VhostUserRequest.GetInflightFd, asked, needReply: true));
            Assert.Equal(VhostUserErrorCode.BudgetExceeded, outcome.Error.Code);
            Assert.Null(h.Session.Inflight);
            Assert.Single(h.Session.Memory!.Regions);
        }
    }

    private static VhostUserMessage MemTable(params MemoryRegionDescription[] regions) =>
        VhostUserMessage.WithMemTable(regions, needReply: true);

    private static FileDescriptor SealedSparse(ulong bytes, string name)
    {
        var fd = PeerFiles.Memfd(bytes, name, allowSealing: true);
        PeerFiles.Seal(fd);
        return fd;
    }
}
