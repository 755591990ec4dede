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

    /// <summary>
    /// The peer shares the descriptor's flags: it can make a doorbell it handed over blocking at
    /// any time, then fill or drain the counter. A doorbell taken from a peer rings and is
    /// consumed without blocking all the same.
    /// </summary>
    [Fact]
    public void ADoorbellFromAPeerNeverBlocksWhenThePeerMakesItBlockingLater()
    {
        using var peerSide = EventFd.Create();
        var doorbell = EventFd.FromPeer(peerSide.Handle.Duplicate(), out var kind);
        Assert.NotNull(doorbell);
        using (doorbell)
        {
            Assert.Equal(EventFd.KernelName, kind);
            Assert.True(doorbell.Guarded);
            PeerFiles.SetBlocking(peerSide.Handle, true);

            // Empty counter: a plain read would block.
            var consumed = true;
            var reader = new Thread(() => consumed = doorbell.TryConsume(out _)) { IsBackground = true };
            reader.Start();
            var readerReturned = reader.Join(TimeSpan.FromSeconds(5));

            // Full counter: a plain write would block.
            PeerFiles.AddToCounter(peerSide.Handle, 0xffff_ffff_ffff_fffe);
            var rung = false;
            var ringer = new Thread(() => rung = doorbell.Signal()) { IsBackground = true };
            ringer.Start();
            var ringerReturned = ringer.Join(TimeSpan.FromSeconds(5));

            // Release any thread that did block, so none stays stuck past the test.
            PeerFiles.SetBlocking(peerSide.Handle, false);
            PeerFiles.TakeCounter(peerSide.Handle);
            ringer.Join();
            PeerFiles.AddToCounter(peerSide.Handle, 1);
            reader.Join();
            Assert.True(readerReturned, "consuming an empty doorbell the peer made blocking blocked");
            Assert.False(consumed);
            Assert.True(ringerReturned, "ringing a full doorbell the peer made blocking blocked");
            Assert.True(rung);
        }
    }

    /// <summary>
    /// The last resort of a stop deadline: a thread of ours stuck writing to a full eventfd (the
    /// peer filled it right after our poll) is released by <see cref="EventFd.Unblock"/>, which
    /// itself never blocks.
    /// </summary>
    [Fact]
    public void UnblockReleasesAWriterStuckOnAFullDoorbell()
    {
        // Wrapped while non-blocking, so unguarded: a plain write, as one that lost the race with
        // the peer would be.
        using var fd = PeerFiles.BlockingEventFd();
        PeerFiles.SetBlocking(fd, false);
        using var unguarded = new EventFd(fd.Duplicate());
        Assert.False(unguarded.Guarded);
        PeerFiles.SetBlocking(fd, true);
        PeerFiles.AddToCounter(fd, 0xffff_ffff_ffff_fffe);
        var ringer = new Thread(() => unguarded.Signal()) { IsBackground = true };
        ringer.Start();
        Assert.False(ringer.Join(TimeSpan.FromMilliseconds(300)), "the plain write did not block; the test proves nothing");

        var clock = System.Diagnostics.Stopwatch.StartNew();
        var other = EventFd.FromPeer(fd.Duplicate(), out _)!;
        using (other)
        {
            other.Unblock();
        }

        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(1), $"Unblock took {clock.Elapsed}");
        Assert.True(ringer.Join(TimeSpan.FromSeconds(5)), "Unblock did not release the writer");
    }
}
