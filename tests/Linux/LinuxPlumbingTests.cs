using System.Runtime.InteropServices;
using Rings.Linux.Plumbing;

namespace Rings.Tests.Linux;

public class SharedMemoryTests
{
    [Fact]
    public void CreatedMemoryIsZeroedSealedAndSharedThroughItsDescriptor()
    {
        using var memory = SharedMemory.Create(3 * 4096 + 1);
        Assert.Equal(4UL * 4096, memory.Length);
        Assert.True(memory.Slice(0, (int)memory.Length).IndexOfAnyExcept((byte)0) < 0);
        Assert.True(SharedMemory.IsShrinkSealed(memory.Handle!));
        Assert.Equal(memory.Length, SharedMemory.FileSize(memory.Handle!));

        // A second mapping of the same file (what a peer does) sees the same bytes, at an unaligned offset too.
        using var peer = SharedMemory.Map(memory.Handle!, 4096 + 100, 200);
        memory.Slice(4096 + 100, 4).Fill(0xAB);
        Assert.Equal(0xAB, peer.Slice(0, 1)[0]);
        peer.Slice(199, 1)[0] = 0x5A;
        Assert.Equal(0x5A, memory.Slice(4096 + 299, 1)[0]);
        Assert.Equal(memory.HostAddress + 4096 + 100 - peer.HostAddress, memory.HostAddress + 4096 + 100 - peer.HostAddress);

        var region = peer.RegionAt(0x1000);
        Assert.Equal(0x1000UL, region.GuestPhysicalAddress);
        Assert.Equal(200UL, region.Length);
        Assert.Equal(peer.HostAddress, region.HostAddress);
    }

    [Fact]
    public void MappingPastTheEndOfTheFileIsRefused()
    {
        using var memory = SharedMemory.Create(8192);
        Assert.Throws<IOException>(() => SharedMemory.Map(memory.Handle!, 4096, 8192));
        Assert.Throws<IOException>(() => SharedMemory.Map(memory.Handle!, ulong.MaxValue - 10, 100));
        Assert.Throws<IOException>(() => SharedMemory.Map(memory.Handle!, 8193, 1));
        using var ok = SharedMemory.Map(memory.Handle!, 0, 8192);
        Assert.Equal(8192UL, ok.Length);
    }

    [Fact]
    public void AnEventFdIsNotMemory()
    {
        using var doorbell = EventFd.Create();
        Assert.Throws<IOException>(() => SharedMemory.Map(doorbell.Handle, 0, 4096));
    }

    [Fact]
    public void DisposeUnmapsAndClosesTheFile()
    {
        var memory = SharedMemory.Create(4096);
        var fd = memory.Handle!;
        memory.Dispose();
        Assert.True(memory.IsDisposed);
        Assert.True(fd.IsClosed);
        Assert.Throws<ObjectDisposedException>(() => memory.HostAddress);
        memory.Dispose();
    }
}

public class EventFdTests
{
    [Fact]
    public void SignalsCoalesceAndAreConsumedAtOnce()
    {
        using var doorbell = EventFd.Create();
        Assert.False(doorbell.TryConsume(out _));
        Assert.True(doorbell.Signal());
        Assert.True(doorbell.Signal());
        Assert.True(doorbell.Signal());
        Assert.True(doorbell.TryConsume(out var count));
        Assert.Equal(3UL, count);
        Assert.Equal(0UL, doorbell.TryConsume());
    }

    [Fact]
    public void WaitTimesOutWhenNobodyRingsAndWakesWhenSomeoneDoes()
    {
        using var doorbell = EventFd.Create();
        Assert.False(doorbell.Wait(0));
        Assert.False(doorbell.Wait(20));
        var ringer = new Thread(() =>
        {
            Thread.Sleep(30);
            doorbell.Signal();
        });
        ringer.Start();
        Assert.True(doorbell.Wait(10_000));
        ringer.Join();
        Assert.False(doorbell.TryConsume(out _));
    }

    [Fact]
    public void ABlockingPeerEventFdIsConsumedWithoutBlocking()
    {
        // What a peer might send: an eventfd without EFD_NONBLOCK.
        var raw = Native.eventfd(0, 0);
        Assert.True(raw >= 0);
        using var doorbell = new EventFd(new FileDescriptor(raw));
        Assert.False(doorbell.TryConsume(out _));
        doorbell.Signal();
        Assert.True(doorbell.TryConsume(out var count));
        Assert.Equal(1UL, count);
        Assert.False(doorbell.TryConsume(out _));
    }

    [Fact]
    public void PollReportsWhichDescriptorsAreReady()
    {
        using var a = EventFd.Create();
        using var b = EventFd.Create();
        using var c = EventFd.Create();
        Span<bool> ready = stackalloc bool[3];
        Assert.Equal(0, Poll.WaitReadable([a.Handle, b.Handle, c.Handle], 0, ready));
        b.Signal();
        Assert.Equal(1, Poll.WaitReadable([a.Handle, b.Handle, c.Handle], 1000, ready));
        Assert.False(ready[0]);
        Assert.True(ready[1]);
        Assert.False(ready[2]);
    }

    private static partial class Native
    {
        [DllImport("libc")]
        public static extern int eventfd(uint initial, int flags);
    }
}

[Collection(FdCountCollection.Name)]
public class UnixSocketTests
{
    [Fact]
    public void ListeningSocketFileIsOwnerOnly()
    {
        var path = TestPaths.Socket();
        using var listener = UnixSocket.Listen(path);
        var mode = File.GetUnixFileMode(path);
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, mode);
        listener.Dispose();
        Assert.False(File.Exists(path));
    }

    [Fact]
    public void DescriptorsCrossTheSocketAndStillWork()
    {
        var path = TestPaths.Socket();
        using var listener = UnixSocket.Listen(path);
        using var client = UnixSocket.Connect(path);
        using var server = listener.Accept(5000)!;
        Assert.NotNull(server);

        using var memory = SharedMemory.Create(4096);
        using var doorbell = EventFd.Create();
        memory.Slice(0, 5).Fill(7);
        client.Send([1, 2, 3], [memory.Handle!, doorbell.Handle]);

        var fds = new List<FileDescriptor>();
        var buffer = new byte[16];
        var n = server.Receive(buffer, fds);
        Assert.Equal(3, n);
        Assert.Equal(2, fds.Count);

        using (var mapped = SharedMemory.Map(fds[0], 0, 4096))
        {
            Assert.Equal(7, mapped.Slice(4, 1)[0]);
        }

        using var received = new EventFd(fds[1]);
        received.Signal();
        Assert.True(doorbell.TryConsume(out var count));
        Assert.Equal(1UL, count);
        fds[0].Dispose();

        // Received descriptors are close-on-exec (MSG_CMSG_CLOEXEC).
        Assert.Equal(1, Native.fcntl(received.Handle.Value, 1 /* F_GETFD */, 0) & 1);
    }

    [Fact]
    public void TooManyDescriptorsIsAnErrorAndNoneLeak()
    {
        var path = TestPaths.Socket();
        using var listener = UnixSocket.Listen(path);
        using var client = UnixSocket.Connect(path);
        using var server = listener.Accept(5000)!;
        var doorbells = Enumerable.Range(0, 20).Select(_ => EventFd.Create()).ToArray();
        try
        {
            var before = FdCount.Snapshot();

            // More than the receiver's control buffer holds: MSG_CTRUNC.
            client.Send([9], doorbells.Select(d => d.Handle).ToArray());
            var fds = new List<FileDescriptor>();
            Assert.Throws<IOException>(() => server.Receive(new byte[4], fds));
            Assert.Empty(fds);
            Assert.Empty(FdCount.OpenedSince(before));
        }
        finally
        {
            foreach (var d in doorbells)
            {
                d.Dispose();
            }
        }
    }

    [Fact]
    public void ReceiveReturnsZeroWhenThePeerCloses()
    {
        var path = TestPaths.Socket();
        using var listener = UnixSocket.Listen(path);
        var client = UnixSocket.Connect(path);
        using var server = listener.Accept(5000)!;
        client.Dispose();
        Assert.Equal(0, server.Receive(new byte[4], []));
    }

    private static class Native
    {
        [DllImport("libc")]
        public static extern int fcntl(int fd, int command, int argument);
    }
}

public class SocketPathTests
{
    [Fact]
    public void AStaleSocketIsReplacedButALiveOneOrAPlainFileIsNot()
    {
        var path = TestPaths.Socket();
        var live = UnixSocket.Listen(path);
        Assert.Throws<IOException>(() => UnixSocket.Listen(path));

        // A listener that went away without removing its file (as a crashed process leaves it).
        // Another test may be starting a process right now: until that child has exec'd, it holds
        // a copy of every descriptor (CLOEXEC acts at exec), so the socket may listen a moment longer.
        live.Handle.Dispose();
        using (var again = ListenOnceStale(path))
        {
            using var client = UnixSocket.Connect(path);
            Assert.NotNull(again.Accept(5000));
        }

        File.WriteAllText(path, "not a socket");
        try
        {
            Assert.Throws<IOException>(() => UnixSocket.Listen(path));
            Assert.Equal("not a socket", File.ReadAllText(path));
        }
        finally
        {
            File.Delete(path);
        }
    }

    private static UnixSocket ListenOnceStale(string path)
    {
        var deadline = Environment.TickCount64 + 5000;
        while (true)
        {
            try
            {
                return UnixSocket.Listen(path);
            }
            catch (IOException e) when (e.Message.Contains("in use", StringComparison.Ordinal) && Environment.TickCount64 < deadline)
            {
                Thread.Sleep(10);
            }
        }
    }
}
