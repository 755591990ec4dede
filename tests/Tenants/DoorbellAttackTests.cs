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
/// A doorbell is an eventfd and nothing else, and no thread of the back-end ever blocks on one:
/// a front-end that hands over a pipe, a socket or a memory file as a kick, call or error
/// descriptor is refused (WrongDescriptorType) and the descriptor closed; one that blocks its own
/// eventfd afterwards costs only its own connection.
/// </summary>
[Collection(ProcessCollection.Name)]
public class DoorbellAttackTests
{
    private readonly ITestOutputHelper _output;

    public DoorbellAttackTests(ITestOutputHelper output)
    {
        _output = output;
    }

    public static TheoryData<VhostUserRequest, string> NotEventFds()
    {
        var data = new TheoryData<VhostUserRequest, string>();
        foreach (var request in new[] { VhostUserRequest.SetVringKick, VhostUserRequest.SetVringCall, VhostUserRequest.SetVringErr })
        {
            foreach (var kind in new[] { "pipe write end", "pipe read end", "socket", "memfd" })
            {
                data.Add(request, kind);
            }
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(NotEventFds))]
    public void ADoorbellThatIsNotAnEventFdIsRefusedAndClosed(VhostUserRequest request, string kind)
    {
        var path = TestPaths.Socket();
        var log = new List<string>();
        using var backend = new VhostUserBackend(new VhostUserBackendOptions { SocketPath = path, Logger = new Diagnostics.ListLogger(log) });
        backend.Start();
        using var harness = new SessionHarness(path);
        harness.Negotiate();
        FileDescriptor sent;
        FileDescriptor? other = null;
        switch (kind)
        {
            case "pipe write end":
                (other, sent) = PeerFiles.Pipe();
                break;
            case "pipe read end":
                (sent, other) = PeerFiles.Pipe();
                break;
            case "socket":
                (sent, other) = PeerFiles.SocketPair();
                break;
            default:
                sent = PeerFiles.Memfd(4096, $"rings-doorbell-{Guid.NewGuid():N}");
                break;
        }

        using (sent)
        using (other)
        {
            // Both ends of a pipe have the same name in /proc: count what is there before.
            var copies = PeerFiles.OpenCopies(sent);
            var outcome = harness.Send(VhostUserMessage.WithFile(request, 0, hasFd: true, needReply: true), sent);
            lock (log)
            {
                _output.WriteLine(string.Join('\n', log));
            }

            Assert.True(outcome.Error.Code == VhostUserErrorCode.Refused, $"{request} with a {kind} ({PeerFiles.Link(sent.Value)}): {outcome.Error}");
            Assert.False(outcome.Close);
            Assert.Equal(1, backend.ErrorCount(VhostUserErrorCode.WrongDescriptorType));

            // The back-end closed its copy before it answered.
            Assert.Equal(copies, PeerFiles.OpenCopies(sent));
            lock (log)
            {
                Assert.Contains(log, l => l.Contains("WrongDescriptorType", StringComparison.Ordinal));
            }

            // And serves on.
            harness.Ok(VhostUserMessage.Empty(VhostUserRequest.GetFeatures));
        }
    }

    /// <summary>
    /// The attack that froze <c>rings host</c>: the write end of a pipe the attacker filled, sent as a
    /// kick, then GET_VRING_BASE. The host must answer within its deadline, and a good guest started
    /// afterwards must get every frame back.
    /// </summary>
    [Fact]
    public void AKickThatIsAFullPipeCannotFreezeTheHost()
    {
        // Verbose: the refusal and its reason are logged with the conversation.
        using var host = RingsHost.Start("--verbose");
        try
        {
            var (read, write) = PeerFiles.Pipe();
            using (read)
            using (write)
            {
                var filled = PeerFiles.Fill(write);
                HarnessOutcome kick;
                using (var attacker = new SessionHarness(host.Socket))
                {
                    attacker.Negotiate();
                    attacker.SendMemTable();
                    attacker.SetupRing(0, 256);
                    (_, kick) = TenantChecks.SetupRingWith(attacker, 1, 256, attacker.Calls[1].Handle, write);
                    var (answer, elapsed) = TenantChecks.Timed(attacker, VhostUserMessage.WithState(VhostUserRequest.GetVringBase, 1, 0));
                    _output.WriteLine($"pipe of {filled} bytes as the kick: {kick.Error}; GET_VRING_BASE answered in {elapsed.TotalMilliseconds:0} ms: {(answer.Reply is not null ? "reply" : answer.Close ? "closed" : answer.Error.ToString())}");
                    Assert.True(answer.Reply is not null || answer.Close, $"GET_VRING_BASE got no answer in {elapsed.TotalSeconds:0.0} s: {answer.Error}\n{host.Output}");
                }

                TenantChecks.GoodGuestIsServed(host);
                Assert.True(kick.Error.Code == VhostUserErrorCode.Refused, $"the pipe was accepted as a kick: {kick.Error}");
                Assert.Contains("WrongDescriptorType", host.Output, StringComparison.Ordinal);
            }
        }
        finally
        {
            _output.WriteLine(host.Output);
        }
    }

    /// <summary>
    /// A front-end hands over a proper non-blocking eventfd as its receive call, then switches that
    /// descriptor (whose flags it shares with the host) to blocking and fills its counter, so a
    /// plain write by the host's next call would block. The host must ring it without blocking
    /// (a full counter is a pending wake-up): GET_VRING_BASE is answered well within the stop
    /// deadline, with a reply, and other front-ends are served.
    /// </summary>
    [Fact]
    public void AFrontEndThatBlocksItsOwnCallHoldsUpNobody()
    {
        using var host = RingsHost.Start();
        try
        {
            using (var attacker = new SessionHarness(host.Socket))
            {
                var features = attacker.Negotiate();
                attacker.SendMemTable();
                attacker.SetupRing(0, 256);
                attacker.SetupRing(1, 256);
                host.WaitForLines(0, l => l.Contains("reflecting", StringComparison.Ordinal), 1, TimeSpan.FromSeconds(10));

                var call = attacker.Calls[0].Handle;
                PeerFiles.AddToCounter(call, 0xffff_ffff_ffff_fffe);
                PeerFiles.SetBlocking(call, true);
                var (rx, _) = TenantChecks.OneFrameOut(attacker, features);
                Assert.True(SpinWait.SpinUntil(() => rx.TryTakeUsed(out _), TimeSpan.FromSeconds(10)), "the host did not forward the frame");

                var (answer, elapsed) = TenantChecks.Timed(attacker, VhostUserMessage.WithState(VhostUserRequest.GetVringBase, 1, 0));
                _output.WriteLine($"GET_VRING_BASE answered in {elapsed.TotalMilliseconds:0} ms: {(answer.Reply is not null ? "reply" : answer.Close ? "closed" : answer.Error.ToString())}");
                Assert.True(answer.Reply is not null, $"GET_VRING_BASE got no reply ({answer.Error}, closed {answer.Close}) in {elapsed.TotalSeconds:0.0} s\n{host.Output}");
                Assert.True(elapsed < TimeSpan.FromMilliseconds(new VhostUserBackendOptions().StopTimeoutMilliseconds), $"GET_VRING_BASE waited for the stop deadline: {elapsed.TotalMilliseconds:0} ms");
            }

            TenantChecks.GoodGuestIsServed(host);
            Assert.DoesNotContain(host.LinesFrom(0), l => l.Contains("did not stop", StringComparison.Ordinal));
        }
        finally
        {
            _output.WriteLine(host.Output);
        }
    }
}
