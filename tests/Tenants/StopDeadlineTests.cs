using Rings.Linux.VhostUser;
using Rings.Tests.VhostUser;

namespace Rings.Tests.Tenants;

/// <summary>
/// A data path that cannot let go of a ring in time (a doorbell its front-end controls stuck its
/// thread) costs that front-end its ring and its connection, and nothing more: the session marks
/// the ring broken and closes instead of answering as if the ring had stopped cleanly.
/// </summary>
public class StopDeadlineTests
{
    [Fact]
    public void ADataPathThatDoesNotLetGoBreaksItsRingAndClosesTheConnection()
    {
        using var harness = new SessionHarness();
        var stopDeadlines = new List<int>();
        harness.Session.QueueStopped += (_, e) =>
        {
            stopDeadlines.Add(e.StopTimeoutMilliseconds);
            e.ReportNotStopped("stuck for the test");
        };
        harness.Negotiate();
        harness.SendMemTable();
        harness.SetupRing(0, 256);
        var ring = harness.Running[0].Ring;

        var outcome = harness.Send(VhostUserMessage.WithState(VhostUserRequest.GetVringBase, 0, 0));

        Assert.True(outcome.Close, $"the session answered as if the ring had stopped: {outcome.Error}");
        Assert.Equal(VhostUserErrorCode.Timeout, outcome.Error.Code);
        Assert.Contains("did not let go", outcome.Error.Detail, StringComparison.Ordinal);
        Assert.True(ring.IsBroken);
        Assert.Equal(BrokenReason.DataPathStuck, ring.BrokenReason);
        Assert.Equal([harness.Options.StopTimeoutMilliseconds], stopDeadlines);
    }

    [Fact]
    public void ADataPathThatLetsGoInTimeStopsCleanly()
    {
        using var harness = new SessionHarness();
        harness.Negotiate();
        harness.SendMemTable();
        harness.SetupRing(0, 256);
        var ring = harness.Running[0].Ring;

        var outcome = harness.Send(VhostUserMessage.WithState(VhostUserRequest.GetVringBase, 0, 0));

        Assert.False(outcome.Close);
        Assert.NotNull(outcome.Reply);
        Assert.False(ring.IsBroken);
    }
}
