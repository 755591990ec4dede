using System.Diagnostics;
using Rings.Linux.Device;
using Rings.Linux.Plumbing;
using Rings.Linux.VhostUser;
using Rings.Tests.Apps;
using Rings.Tests.Hostile;
using Rings.Tests.Linux;
using Rings.Tests.VhostUser;
using Xunit.Abstractions;

namespace Rings.Tests.Tenants;

/// <summary>
/// A connection holds one of the back-end's few slots only while it makes progress: one that sends
/// nothing is closed at the first-message deadline, one that never finishes setting up gives its
/// slot to a front-end that is waiting, and one whose peer's user is not allowed is closed before
/// anything is read from it.
/// </summary>
[Collection(ProcessCollection.Name)]
public class ConnectionHygieneTests
{
    private readonly ITestOutputHelper _output;

    public ConnectionHygieneTests(ITestOutputHelper output)
    {
        _output = output;
    }

    /// <summary>The attack that locked out <c>rings host</c>: nine connect() calls that send nothing, then a good guest.</summary>
    [Fact]
    public void NineIdleConnectionsDoNotLockOutAGoodGuest()
    {
        using var host = RingsHost.Start("--verbose");
        var idle = new List<UnixSocket>();
        try
        {
            for (var i = 0; i < 9; i++)
            {
                idle.Add(UnixSocket.Connect(host.Socket));
            }

            TenantChecks.GoodGuestIsServed(host, why: "a good guest after nine idle connections");
            Assert.Contains(host.LinesFrom(0), l => l.Contains("Timeout", StringComparison.Ordinal) && l.Contains("first message", StringComparison.Ordinal));
        }
        finally
        {
            foreach (var s in idle)
            {
                s.Dispose();
            }

            _output.WriteLine(host.Output);
        }
    }

    [Fact]
    public void AConnectionThatSendsNothingIsClosedAtTheFirstMessageDeadline()
    {
        var path = TestPaths.Socket();
        using var backend = new VhostUserBackend(new VhostUserBackendOptions { SocketPath = path, FirstMessageTimeoutMilliseconds = 300 });
        backend.Start();
        using var idle = UnixSocket.Connect(path);
        var clock = Stopwatch.StartNew();
        var buffer = new byte[16];
        var fds = new List<FileDescriptor>();
        Assert.True(Poll.WaitReadable(idle.Handle, 10_000), "the back-end never closed the idle connection");
        Assert.Equal(0, idle.Receive(buffer, fds));
        _output.WriteLine($"closed after {clock.ElapsedMilliseconds} ms");
        Assert.True(TestDevice.Wait(() => backend.ErrorCount(VhostUserErrorCode.Timeout) == 1, 5000));
        Assert.Contains("first message", backend.LastError.ToString(), StringComparison.Ordinal);
    }

    /// <summary>
    /// One slot, held by a front-end that negotiates and then never sets a ring up. A second
    /// front-end that waits for the slot gets it once the first one is past the setup deadline.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void AFrontEndThatNeverFinishesSetupGivesItsSlotToOneThatWaits(bool refuseWhenFull)
    {
        var path = TestPaths.Socket();
        using var backend = new VhostUserBackend(new VhostUserBackendOptions
        {
            SocketPath = path,
            MaxConnections = 1,
            RefuseWhenFull = refuseWhenFull,
            SetupTimeoutMilliseconds = 500,
        });
        var started = 0;
        backend.QueueStarted += (_, _) => Interlocked.Increment(ref started);
        backend.Start();
        using var squatter = new SessionHarness(path);
        squatter.Negotiate();
        Thread.Sleep(700);

        // Past its setup deadline, but nobody waits: it keeps the slot.
        Assert.Equal(0, backend.SessionsEnded);

        var clock = Stopwatch.StartNew();
        using var good = new SessionHarness(path);
        good.Negotiate();
        good.SendMemTable();
        good.SetupRing(0, 256);
        _output.WriteLine($"the waiting front-end was served after {clock.ElapsedMilliseconds} ms");
        Assert.True(TestDevice.Wait(() => Volatile.Read(ref started) == 1, 5000));
        Assert.Equal(1, backend.SessionsEnded);
        Assert.Equal(1, backend.ErrorCount(VhostUserErrorCode.Timeout));
        Assert.True(squatter.Send(VhostUserMessage.Empty(VhostUserRequest.GetFeatures)).Close, "the squatter still has its connection");
    }

    [Fact]
    public void AFrontEndWithRingsRunningKeepsItsSlot()
    {
        var path = TestPaths.Socket();
        using var backend = new VhostUserBackend(new VhostUserBackendOptions { SocketPath = path, MaxConnections = 1, RefuseWhenFull = true, SetupTimeoutMilliseconds = 200 });
        backend.Start();
        using var first = new SessionHarness(path);
        first.Negotiate();
        first.SendMemTable();
        first.SetupRing(0, 256);
        Thread.Sleep(400);
        using (var second = new SessionHarness(path))
        {
            Assert.True(second.Send(VhostUserMessage.Empty(VhostUserRequest.GetFeatures)).Close, "a second front-end took the slot of a ready one");
        }

        first.Ok(VhostUserMessage.Empty(VhostUserRequest.GetFeatures));
        Assert.Equal(1, backend.Refused);
    }

    [Fact]
    public void APeerWhoseUserIsNotAllowedIsClosedAtOnce()
    {
        var path = TestPaths.Socket();
        var uid = PeerFiles.Uid();
        using var backend = new VhostUserBackend(new VhostUserBackendOptions { SocketPath = path, AllowedUids = [uid + 1] });
        backend.Start();
        using (var refused = new SessionHarness(path))
        {
            var outcome = refused.Send(VhostUserMessage.Empty(VhostUserRequest.GetFeatures));
            Assert.True(outcome.Close, $"a peer of uid {uid} was served although only {uid + 1} is allowed");
        }

        Assert.True(TestDevice.Wait(() => backend.ErrorCount(VhostUserErrorCode.PeerNotAllowed) == 1, 5000));
        Assert.Contains($"uid {uid}", backend.LastError.ToString(), StringComparison.Ordinal);
    }

    [Fact]
    public void APeerWhoseUserIsAllowedIsServed()
    {
        var path = TestPaths.Socket();
        using var backend = new VhostUserBackend(new VhostUserBackendOptions { SocketPath = path, AllowedUids = [PeerFiles.Uid() + 1, PeerFiles.Uid()] });
        backend.Start();
        using var allowed = new SessionHarness(path);
        allowed.Negotiate();
        Assert.Equal(0, backend.Errors);
    }

    [Fact]
    public void AVhostUserPortChecksTheUidOfItsPeers()
    {
        var path = TestPaths.Socket();
        using var port = new Rings.Linux.Ports.VhostUserPort(Rings.Linux.Ports.PortSpec.Parse($"vhost-user:{path}")) { AllowedUids = [PeerFiles.Uid() + 1] };
        port.Open();
        using (var refused = new SessionHarness(path))
        {
            Assert.True(refused.Send(VhostUserMessage.Empty(VhostUserRequest.GetFeatures)).Close);
        }

        Assert.True(TestDevice.Wait(() => port.Backend!.ErrorCount(VhostUserErrorCode.PeerNotAllowed) == 1, 5000));
    }

    [Fact]
    public void RingsHostChecksTheUidOfItsPeers()
    {
        var other = (PeerFiles.Uid() + 1).ToString(System.Globalization.CultureInfo.InvariantCulture);
        using var host = RingsHost.Start("--verbose", "--allow-uid", other);
        try
        {
            using (var refused = new SessionHarness(host.Socket))
            {
                Assert.True(refused.Send(VhostUserMessage.Empty(VhostUserRequest.GetFeatures)).Close);
            }

            host.WaitForLines(0, l => l.Contains("PeerNotAllowed", StringComparison.Ordinal), 1, TimeSpan.FromSeconds(10));
        }
        finally
        {
            _output.WriteLine(host.Output);
        }
    }
}
