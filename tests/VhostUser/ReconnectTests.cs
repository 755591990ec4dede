using Rings.Chains;
using Rings.Linux.Device;
using Rings.Linux.Driver;
using Rings.Linux.Net;
using Rings.Linux.Plumbing;
using Rings.Linux.VhostUser;
using Rings.Testing.Traffic;
using Rings.Tests.Driver;
using Rings.Tests.Linux;

namespace Rings.Tests.VhostUser;

/// <summary>
/// A back-end that dies and comes back: the front-end reconnects and resumes from the rings in its
/// own memory, and with the inflight region the restarted back-end completes exactly what was in
/// flight. The deaths are placed where they hurt: after the receive batch was published and before
/// the transmit batch was.
/// </summary>
public class ReconnectTests
{
    private const int FrameSize = 64;

    public static TheoryData<string, bool> FormatsWithAndWithoutInflight => new()
    {
        { "split", true }, { "split", false }, { "packed", true }, { "packed", false },
    };

    /// <summary>
    /// The previous back-end copied a burst into the receive queue and published it, then died
    /// before publishing the transmit completions. With the inflight region the next one sees that
    /// the receive batch went out and completes the transmit buffers without sending them again;
    /// without it, it can only send them again (every frame arrives, the burst twice: at most a
    /// ring's worth). Nothing is ever lost or damaged, and traffic goes on after the restart.
    /// </summary>
    [Theory]
    [MemberData(nameof(FormatsWithAndWithoutInflight))]
    public void ABackEndKilledBetweenTheReceiveAndTransmitPublishesDeliversEachFrameOnceWithInflight(string ring, bool inflight)
    {
        var format = RingFormat.Parse(ring);
        var socket = TestPaths.Socket();
        var options = new VhostUserFrontendOptions
        {
            SocketPath = socket,
            QueueSize = 64,
            Features = VirtioFeatures.Version1 | VirtioFeatures.EventIndex | VirtioFeatures.NetMergeRxBuffers | format.Feature,
        };
        if (!inflight)
        {
            options.ProtocolFeatures &= ~VhostUserProtocolFeatures.InflightShmfd;
        }

        var first = new ManualBackend(socket);
        VirtioNetDriver? net = null;
        ReflectingBackend? second = null;
        try
        {
            net = VirtioNetDriver.Connect(options, FrameSize);
            Assert.Equal(inflight, net.Frontend.HasInflightRegion);
            Send(net, 0, 8);
            var (tx, rx) = first.WaitForQueues();
            Assert.Equal(inflight, tx is InflightDeviceRing);

            // Forward the burst, publish the receive side only, and die.
            Assert.Equal(8, ForwardWithoutTransmitPublish(tx, rx));
            first.Dispose();
            first = null;

            var seen = new int[16];
            Receive(net, seen, 8, TimeSpan.FromSeconds(5));
            Assert.All(seen.Take(8), n => Assert.Equal(1, n));

            second = new ReflectingBackend(socket);
            net.Frontend.Reconnect();
            Assert.Equal(1, net.Frontend.Reconnects);
            net.Transmit.Kick.Signal();
            Send(net, 8, 8);
            var expected = inflight ? 16 : 24;
            Receive(net, seen, expected, TimeSpan.FromSeconds(10));

            // Give a wrong duplicate time to show up.
            Thread.Sleep(200);
            Receive(net, seen, expected, TimeSpan.Zero);
            Assert.All(seen.Skip(8), n => Assert.Equal(1, n));
            Assert.All(seen.Take(8), n => Assert.Equal(inflight ? 1 : 2, n));
            Assert.Equal(0, net.ReceiveErrors);
            Assert.False(net.IsBroken);
        }
        finally
        {
            net?.Dispose();
            first?.Dispose();
            second?.Dispose();
        }
    }

    /// <summary>
    /// The restarted back-end finds a packed transmit descriptor the dead one had overwritten with a
    /// used descriptor it never published (its flags held back): the front-end writes every
    /// outstanding descriptor again from its own record, so the next back-end reads them whole.
    /// </summary>
    [Fact]
    public void APackedDescriptorHalfOverwrittenByADeadBackEndIsWrittenAgainByTheFrontEnd()
    {
        var socket = TestPaths.Socket();
        var options = new VhostUserFrontendOptions
        {
            SocketPath = socket,
            QueueSize = 32,
            Features = VirtioFeatures.Version1 | VirtioFeatures.NetMergeRxBuffers | VirtioFeatures.RingPacked,
            ProtocolFeatures = VhostUserProtocolFeatures.ReplyAck | VhostUserProtocolFeatures.Multiqueue,
        };
        var first = new ManualBackend(socket);
        VirtioNetDriver? net = null;
        ReflectingBackend? second = null;
        try
        {
            net = VirtioNetDriver.Connect(options, FrameSize);
            Send(net, 0, 4);
            var (tx, _) = first.WaitForQueues();

            // Pop and return two frames without publishing: their descriptors now read as used
            // (the second) or carry the used length 0 (the first, flags held back).
            for (var i = 0; i < 2; i++)
            {
                Assert.True(tx.TryPop(out var chain));
                tx.PushUsed(chain.Token, 0);
            }

            first.Dispose();
            first = null;
            second = new ReflectingBackend(socket);
            net.Frontend.Reconnect();
            net.Transmit.Kick.Signal();
            var seen = new int[4];
            Receive(net, seen, 4, TimeSpan.FromSeconds(10));
            Assert.All(seen, n => Assert.Equal(1, n));
        }
        finally
        {
            net?.Dispose();
            first?.Dispose();
            second?.Dispose();
        }
    }

    /// <summary>Client mode: the back-end connects to a front-end that listens, retrying until it does, and again after the front-end drops the connection.</summary>
    [Fact]
    public void ABackEndInClientModeConnectsToAListeningFrontEndAndComesBackAfterADisconnect()
    {
        var socket = TestPaths.Socket();
        var backend = new ReflectingBackend(socket, connect: true);
        UnixSocket? listener = null;
        VirtioNetDriver? net = null;
        try
        {
            // Nobody listens yet: the back-end keeps trying.
            Thread.Sleep(1500);
            Assert.Equal(0, backend.Backend.Connections);
            listener = UnixSocket.Listen(socket);
            var connection = listener.Accept(5000) ?? throw new TimeoutException("the back-end did not connect within 5 s");
            var channel = new VhostUserChannel(connection);
            var frontend = VhostUserFrontend.Connect(channel, new VhostUserFrontendOptions { QueueSize = 64 });
            net = new VirtioNetDriver(frontend, FrameSize);
            var seen = new int[8];
            Send(net, 0, 4);
            Receive(net, seen, 4, TimeSpan.FromSeconds(5));

            // The front-end drops the connection; the back-end connects again and the rings resume.
            channel.Dispose();
            var again = listener.Accept(5000) ?? throw new TimeoutException("the back-end did not come back within 5 s");
            using var channel2 = new VhostUserChannel(again);
            frontend.Reconnect(channel2);
            net.Transmit.Kick.Signal();
            Send(net, 4, 4);
            Receive(net, seen, 8, TimeSpan.FromSeconds(5));
            Assert.All(seen, n => Assert.Equal(1, n));
            Assert.Equal(2, backend.Backend.Connections);
            net.Dispose();
            net = null;
        }
        finally
        {
            net?.Dispose();
            backend.Dispose();
            listener?.Dispose();
        }
    }

    /// <summary>Sends frames <paramref name="from"/> to <paramref name="from"/> + <paramref name="count"/> - 1 and flushes.</summary>
    internal static void Send(VirtioNetDriver net, int from, int count)
    {
        var frame = new byte[FrameSize];
        for (var i = from; i < from + count; i++)
        {
            TestFrame.Write(frame, (ulong)i, 0);
            Assert.True(net.TrySend(frame));
        }

        net.Flush();
    }

    /// <summary>Receives until <paramref name="total"/> frames were counted into <paramref name="seen"/> (by sequence number) or the time runs out.</summary>
    internal static void Receive(VirtioNetDriver net, int[] seen, int total, TimeSpan timeout)
    {
        var buffer = new byte[2048];
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            while (net.TryReceive(buffer, out var length))
            {
                Assert.Equal(FrameSize, length);
                Assert.True(TestFrame.TryRead(buffer.AsSpan(0, length), out var seq, out _), "a damaged frame");
                Assert.InRange(seq, 0UL, (ulong)seen.Length - 1);
                seen[seq]++;
            }

            net.Flush();
            if (seen.Sum() >= total || DateTime.UtcNow >= deadline)
            {
                break;
            }

            net.WaitForReceive(20);
        }

        Assert.True(seen.Sum() >= total, $"{seen.Sum()} frames received, {total} expected");
    }

    /// <summary>
    /// What the vhost-net forwarder does per burst, stopped half-way: every transmitted frame copied
    /// into a receive buffer, the receive batch published, the transmit buffers returned but not
    /// published. Returns the frames moved.
    /// </summary>
    private static int ForwardWithoutTransmitPublish(IDeviceRing tx, IDeviceRing rx)
    {
        InflightRecovery.Settle(tx, rx);
        var tokens = new List<ChainToken>();
        var moved = 0;
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(5);
        while (moved < 8 && DateTime.UtcNow < deadline)
        {
            if (!tx.TryPop(out var frame))
            {
                Thread.Sleep(1);
                continue;
            }

            Assert.True(rx.TryPop(out var buffer), "no receive buffer");
            var bytes = new byte[frame.ReadableBytes];
            frame.CopyReadableTo(bytes);
            new VirtioNetHeader { NumBuffers = 1 }.TryWrite(bytes);
            Assert.Equal(bytes.Length, buffer.CopyToWritable(bytes));
            rx.PushUsed(buffer.Token, (uint)bytes.Length);
            tokens.Add(frame.Token);
            moved++;
        }

        rx.PublishUsed();
        foreach (var t in tokens)
        {
            tx.PushUsed(t, 0);
        }

        return moved;
    }

    /// <summary>A back-end with no data path of its own: the test drives its rings, then drops it as a kill would (nothing written on the way out).</summary>
    private sealed class ManualBackend : IDisposable
    {
        private readonly VhostQueue?[] _queues = new VhostQueue?[2];
        private readonly VhostUserBackend _backend;

        public ManualBackend(string socket)
        {
            _backend = new VhostUserBackend(new VhostUserBackendOptions { SocketPath = socket });
            _backend.QueueStarted += (_, e) =>
            {
                lock (_queues)
                {
                    if (e.Queue.Index < 2)
                    {
                        _queues[e.Queue.Index] = e.Queue;
                    }
                }
            };
            _backend.Start();
        }

        public (IDeviceRing Tx, IDeviceRing Rx) WaitForQueues()
        {
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(5);
            while (DateTime.UtcNow < deadline)
            {
                lock (_queues)
                {
                    if (_queues[0] is { } rx && _queues[1] is { } tx)
                    {
                        return (tx.Ring, rx.Ring);
                    }
                }

                Thread.Sleep(5);
            }

            throw new TimeoutException("the queues did not start");
        }

        public void Dispose() => _backend.Dispose();
    }
}
