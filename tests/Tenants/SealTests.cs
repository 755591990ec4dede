using Rings.Linux.Device;
using Rings.Linux.Plumbing;
using Rings.Linux.VhostUser;
using Rings.Memory;
using Rings.Tests.Apps;
using Rings.Tests.Hostile;
using Rings.Tests.Linux;
using Rings.Tests.VhostUser;
using Xunit.Abstractions;

namespace Rings.Tests.Tenants;

/// <summary>
/// A front-end that truncates a memory file the back-end has mapped makes the back-end's next
/// access fault (SIGBUS), which no runtime can turn into an exception: the whole host dies, with
/// every other front-end's service. So by default only files sealed against shrinking are mapped;
/// a front-end that cannot seal must be trusted explicitly.
/// </summary>
[Collection(ProcessCollection.Name)]
public class SealTests
{
    private readonly ITestOutputHelper _output;

    public SealTests(ITestOutputHelper output)
    {
        _output = output;
    }

    public static TheoryData<string> UnsealedFiles() => ["memfd that cannot be sealed", "memfd that could be sealed but is not", "plain file"];

    [Theory]
    [MemberData(nameof(UnsealedFiles))]
    public void UnsealedMemoryIsRefusedByDefaultAndMappedWhenTrusted(string kind)
    {
        var name = $"rings-unsealed-{Guid.NewGuid():N}";
        var path = Path.Combine(Path.GetTempPath(), name);
        try
        {
            foreach (var trust in new[] { false, true })
            {
                using var file = Unsealed(kind, name, path);
                using var harness = new SessionHarness(new VhostUserBackendOptions { TrustUnsealedMemory = trust });
                harness.Negotiate();
                var region = new MemoryRegionDescription(0, 1 << 20, 0x1000_0000, 0);
                var outcome = harness.Send(VhostUserMessage.WithMemTable([region], needReply: true), file);
                if (trust)
                {
                    Assert.True(outcome.Succeeded, $"{kind}, trusted: {outcome.Error}");
                    Assert.Equal(1, PeerFiles.Mappings(name));
                }
                else
                {
                    Assert.Equal(VhostUserErrorCode.UnsealedMemory, outcome.Error.Code);
                    Assert.Contains("F_SEAL_SHRINK", outcome.Error.Detail, StringComparison.Ordinal);
                    Assert.Equal(0, PeerFiles.Mappings(name));
                }
            }
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void AddingAnUnsealedRegionIsRefusedToo()
    {
        var name = $"rings-unsealed-{Guid.NewGuid():N}";
        using var file = PeerFiles.Memfd(1 << 20, name);
        using var harness = new SessionHarness();
        harness.Negotiate();
        var outcome = harness.Send(VhostUserMessage.WithRegion(VhostUserRequest.AddMemReg, new MemoryRegionDescription(0, 1 << 20, 0x1000_0000, 0), needReply: true), file);
        Assert.Equal(VhostUserErrorCode.UnsealedMemory, outcome.Error.Code);
        Assert.Equal(0, PeerFiles.Mappings(name));
    }

    [Fact]
    public void MemoryTheRingsFrontEndMakesIsSealed()
    {
        using var memory = SharedMemory.Create(1 << 20);
        Assert.True(SharedMemory.IsShrinkSealed(memory.Handle!));
    }

    /// <summary>
    /// The attack that made <c>rings host</c> abort: a front-end starts a queue pair on an unsealed
    /// memfd, then shrinks it to nothing and kicks. By default the table is refused, so nothing is
    /// mapped to fault on; the host lives and serves a good guest.
    /// </summary>
    [Fact]
    public void ATruncatingFrontEndCannotTakeTheHostDown()
    {
        using var host = RingsHost.Start("--verbose");
        try
        {
            var name = $"rings-truncating-{Guid.NewGuid():N}";
            using (var memfd = PeerFiles.Memfd(1 << 20, name))
            using (var attacker = new SessionHarness(host.Socket, 1 << 20, memfd))
            {
                var features = attacker.Negotiate();
                var table = attacker.Send(VhostUserMessage.WithMemTable([attacker.Region], needReply: true), memfd);
                _output.WriteLine($"unsealed memory table: {table.Error}");
                if (!table.Succeeded)
                {
                    Assert.Equal(VhostUserErrorCode.Refused, table.Error.Code);
                }

                foreach (var ring in new[] { 0, 1 })
                {
                    attacker.Send(VhostUserMessage.WithState(VhostUserRequest.SetVringNum, (uint)ring, 256));
                    attacker.Send(VhostUserMessage.WithState(VhostUserRequest.SetVringBase, (uint)ring, 0));
                    attacker.Send(SessionHarness.Address(ring, attacker.UserAreas(ring, 256)));
                    attacker.Send(VhostUserMessage.WithFile(VhostUserRequest.SetVringCall, (uint)ring, hasFd: true), attacker.Calls[ring].Handle);
                    attacker.Send(VhostUserMessage.WithFile(VhostUserRequest.SetVringKick, (uint)ring, hasFd: true), attacker.Kicks[ring].Handle);
                    attacker.Send(VhostUserMessage.WithState(VhostUserRequest.SetVringEnable, (uint)ring, 1));
                }

                // Give the host work in the memory, then take the memory away under it.
                TenantChecks.OneFrameOut(attacker, features);
                Thread.Sleep(200);
                PeerFiles.Truncate(memfd, 0);
                for (var i = 0; i < 20; i++)
                {
                    attacker.Kicks[0].Signal();
                    attacker.Kicks[1].Signal();
                    Thread.Sleep(10);
                }

                Thread.Sleep(500);
                Assert.False(host.HasExited, $"the host died:\n{host.Output}");
                Assert.True(table.Error.Code == VhostUserErrorCode.Refused, "an unsealed memory table was accepted");
            }

            TenantChecks.GoodGuestIsServed(host, why: "a good guest after a truncating front-end");
            Assert.Contains("UnsealedMemory", host.Output, StringComparison.Ordinal);
        }
        finally
        {
            _output.WriteLine(host.Output);
        }
    }

    private static FileDescriptor Unsealed(string kind, string name, string path)
    {
        switch (kind)
        {
            case "memfd that cannot be sealed":
                return PeerFiles.Memfd(1 << 20, name);
            case "memfd that could be sealed but is not":
                return PeerFiles.Memfd(1 << 20, name, allowSealing: true);
            default:
                using (var stream = new FileStream(path, FileMode.Create))
                {
                    stream.SetLength(1 << 20);
                }

                return PeerFiles.OpenFile(path);
        }
    }
}
