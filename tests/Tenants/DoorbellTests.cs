using Rings.Linux.Plumbing;

namespace Rings.Tests.Tenants;

/// <summary>
/// Ringing a doorbell never blocks: a full eventfd counter means a wake-up is already pending,
/// which is what ringing it was for, so it counts as rung.
/// </summary>
public class DoorbellTests
{
    [Fact]
    public void RingingAFullNonBlockingDoorbellIsAPendingWakeUp()
    {
        using var doorbell = EventFd.Create();
        PeerFiles.AddToCounter(doorbell.Handle, 0xffff_ffff_ffff_fffe);
        Assert.True(doorbell.Signal());
        Assert.Equal(0xffff_ffff_ffff_fffeUL, doorbell.TryConsume());
        Assert.True(doorbell.Signal());
        Assert.Equal(1UL, doorbell.TryConsume());
    }

    [Fact]
    public void RingingAFullBlockingDoorbellReturnsAtOnce()
    {
        using var doorbell = new EventFd(PeerFiles.BlockingEventFd());
        PeerFiles.AddToCounter(doorbell.Handle, 0xffff_ffff_ffff_fffe);
        var rung = false;
        var ringer = new Thread(() => rung = doorbell.Signal()) { IsBackground = true };
        ringer.Start();
        var returned = ringer.Join(TimeSpan.FromSeconds(5));

        // Release a writer that did block, so no thread stays stuck past the test.
        Assert.True(doorbell.TryConsume() > 0);
        ringer.Join();
        Assert.True(returned, "ringing a full blocking eventfd blocked");
        Assert.True(rung);
    }
}
