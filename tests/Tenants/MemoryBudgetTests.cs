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

    private static VhostUserMessage MemTable(params MemoryRegionDescription[] regions) =>
        VhostUserMessage.WithMemTable(regions, needReply: true);

    private static FileDescriptor SealedSparse(ulong bytes, string name)
    {
        var fd = PeerFiles.Memfd(bytes, name, allowSealing: true);
        PeerFiles.Seal(fd);
        return fd;
    }
}
