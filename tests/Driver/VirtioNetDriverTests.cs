using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using Rings.Linux.Device;
using Rings.Linux.Driver;
using Rings.Linux.Net;
using Rings.Linux.Plumbing;
using Rings.Linux.VhostUser;
using Rings.Testing.Faults;
using Rings.Tests.Linux;
using Rings.Tests.VhostUser;

namespace Rings.Tests.Driver;

/// <summary>
/// The one-call front-end (<see cref="VirtioNetDriver"/>) against an in-test back-end running the real
/// vhost-net worker, and the seam a front-end offers for a connection its caller keeps.
/// </summary>
public class VirtioNetDriverTests
{
    [Theory]
    [InlineData("split", true, 64)]
    [InlineData("split", true, 1514)]
    [InlineData("split", true, 9000)]
    [InlineData("split", false, 64)]
    [InlineData("split", false, 9000)]
    [InlineData("packed", true, 64)]
    [InlineData("packed", true, 9000)]
    [InlineData("packed", false, 1514)]
    public void FramesGoOutOnTransmitAndComeBackOnReceive(string ring, bool mergeable, int frameSize)
    {
        using var backend = new ReflectingBackend();
        var format = RingFormat.Parse(ring);
        var features = VirtioFeatures.Version1 | VirtioFeatures.EventIndex | format.Feature | (mergeable ? VirtioFeatures.NetMergeRxBuffers : VirtioFeatures.None);
        using var net = VirtioNetDriver.Connect(
            new VhostUserFrontendOptions { SocketPath = backend.Socket, MemoryBytes = 16 << 20, QueueSize = 128, Features = features },
            maxFrameSize: frameSize);

        // Named queues: vring 0 receives, vring 1 transmits (virtio 1.2 section 5.1.2).
        Assert.Equal(0, net.Receive.Index);
        Assert.Equal(1, net.Transmit.Index);
        Assert.Same(net.Frontend.Queues[0], net.Receive);
        Assert.Same(net.Frontend.Queues[1], net.Transmit);
        Assert.Equal(format, net.Receive.Format);
        Assert.Equal(format, net.Transmit.Format);
        Assert.Equal(mergeable, net.Mergeable);
        Assert.InRange(net.MaxFrameSize, frameSize, frameSize + 63);
        Assert.Equal(mergeable ? VirtioNetDriver.MergeableReceiveBufferSize : (12 + Math.Max(frameSize, 1514) + 63) / 64 * 64, net.ReceiveBufferSize);

        // Frames of every size up to the largest, in order; a 9000-byte frame spans five merged buffers.
        const int Count = 3000;
        var received = 0;
        var sent = 0;
        var buffer = new byte[frameSize];
        var deadline = Environment.TickCount64 + 30_000;
        while (received < Count && Environment.TickCount64 < deadline)
        {
            while (sent < Count && sent - received < 64 && net.TrySend(Frame(sent, SizeOf(sent, frameSize))))
            {
                sent++;
            }

            net.Flush();
            var any = false;
            while (net.TryReceive(buffer, out var length))
            {
                any = true;
                Assert.Equal(SizeOf(received, frameSize), length);
                Assert.True(Frame(received, length).AsSpan().SequenceEqual(buffer.AsSpan(0, length)), $"frame {received} came back changed");
                received++;
            }

            if (!any)
            {
                net.WaitForReceive(10);
            }
        }

        Assert.Equal(Count, received);
        Assert.False(net.IsBroken);
        Assert.Equal(0, net.ReceiveErrors);
        Assert.True(net.IsConnected);
    }

    [Fact]
    public void LeasesAndFramesInPlaceMoveFramesWithoutCopiesOrAllocation()
    {
        using var backend = new ReflectingBackend();
        using var net = VirtioNetDriver.Connect(new VhostUserFrontendOptions { SocketPath = backend.Socket, MemoryBytes = 8 << 20, QueueSize = 256 });
        Exchange(net, 0, 2000);

        // Warm, the round trip allocates nothing on this thread.
        Exchange(net, 2000, 2000, sleep: false);
        var before = GC.GetAllocatedBytesForCurrentThread();
        var (back, wrong) = Exchange(net, 4000, 20_000, sleep: false);
        var allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.Equal(20_000, back);
        Assert.Equal(0, wrong);
        Assert.Equal(0, allocated);
    }

    [Fact]
    public void ReceiveBuffersOfDiscardedFramesGoBackToTheDevice()
    {
        var socket = TestPaths.Socket();
        using var backend = new VhostUserBackend(new VhostUserBackendOptions { SocketPath = socket });
        var device = new TestDevice(backend);
        backend.Start();
        using var net = VirtioNetDriver.Connect(new VhostUserFrontendOptions { SocketPath = socket, MemoryBytes = 2 << 20, QueueSize = 16 });
        Assert.True(device.WaitForQueues(2, 10_000));

        // The device returns every receive buffer with a length shorter than the header (5.1.6.4): each is discarded.
        var rx = device.Queue(0)!.Ring;
        for (var i = 0; i < 16; i++)
        {
            Assert.True(rx.TryPop(out var chain));
            rx.PushUsed(chain.Token, 4);
        }

        rx.PublishUsed();
        Assert.False(net.TryReceive(new byte[2048], out _));
        Assert.Equal(16, net.ReceiveErrors);

        // A flush posts them again, so good frames find buffers.
        net.Flush();
        var buffer = new byte[2048];
        for (var i = 0; i < 16; i++)
        {
            Assert.True(device.TryInject(0, Frame(i, 64)), $"no receive buffer for frame {i}");
            Assert.True(SpinWait.SpinUntil(() => net.TryReceive(buffer, out _), 5000));
            Assert.Equal(i, BinaryPrimitives.ReadInt32BigEndian(buffer.AsSpan(14)));
            net.Flush();
        }
    }

    [Fact]
    public void TooLittleMemoryForTheBuffersIsAClearErrorAndLeavesNothingOpen()
    {
        using var backend = new ReflectingBackend();
        var e = Assert.Throws<ArgumentException>(() => VirtioNetDriver.Connect(
            new VhostUserFrontendOptions { SocketPath = backend.Socket, MemoryBytes = 1 << 20, QueueSize = 256 },
            maxFrameSize: 9000));
        Assert.Contains("MiB of memory are left after the rings", e.Message, StringComparison.Ordinal);

        // The front-end it connected was closed: the back-end saw the session end.
        Assert.True(SpinWait.SpinUntil(() => Volatile.Read(ref backend.SessionsEnded) == 1, 5000));
    }

    [Fact]
    public void AFrontEndOverTheCallersChannelLeavesItOpenForTheCallersOwnRequests()
    {
        using var backend = new ReflectingBackend();
        using var channel = new VhostUserChannel(UnixSocket.Connect(backend.Socket));
        var frontend = VhostUserFrontend.Connect(channel, new VhostUserFrontendOptions { MemoryBytes = 4 << 20, QueueSize = 64 });
        using (var net = new VirtioNetDriver(frontend))
        {
            Exchange(net, 0, 100);

            // A request of the caller's own between the front-end's: the device status, DRIVER_OK set.
            Assert.Equal(DeviceStatus.DriverOk, Status(channel) & DeviceStatus.DriverOk);
            Exchange(net, 100, 100);
            net.Frontend.StopQueues();
            net.Frontend.StartQueues();
            Assert.True(net.IsConnected);
        }

        // Disposing the front-end left the connection to its owner: it still answers.
        Assert.Equal(0, Volatile.Read(ref backend.SessionsEnded));
        channel.Send(VhostUserMessage.Empty(VhostUserRequest.GetFeatures));
        Assert.Equal(ReceiveStatus.Message, channel.Receive([], 5000));
        Assert.Equal(VhostUserErrorCode.None, VhostUserCodec.DecodeReply(channel.Received, 0, out var reply).Code);
        Assert.Equal(1, backend.Backend.Connections);
        Assert.NotEqual(VirtioFeatures.None, (VirtioFeatures)reply.Value & VirtioFeatures.Version1);

        // The owner closes it, and the back-end ends the session.
        channel.Dispose();
        Assert.True(SpinWait.SpinUntil(() => Volatile.Read(ref backend.SessionsEnded) == 1, 5000));
    }

    [Fact]
    public void AFrontEndWhoseCallerDroppedTheConnectionSaysItIsNotConnected()
    {
        using var backend = new ReflectingBackend();
        var channel = new VhostUserChannel(UnixSocket.Connect(backend.Socket));
        using var frontend = VhostUserFrontend.Connect(channel, new VhostUserFrontendOptions { MemoryBytes = 2 << 20, QueueSize = 32 });
        Assert.True(frontend.IsConnected);
        channel.Dispose();
        Assert.False(frontend.IsConnected);
        Assert.True(SpinWait.SpinUntil(() => Volatile.Read(ref backend.SessionsEnded) == 1, 5000));
    }

    [Fact]
    public void TheFaultInjectionToolsUseNoPrivateAccess()
    {
        // The hostile peers reach the front-end through its public seam, never by a private member's name.
        var accessors = typeof(HostileGuest).Assembly.GetTypes()
            .SelectMany(t => t.GetMethods(System.Reflection.BindingFlags.Static | System.Reflection.BindingFlags.Instance | System.Reflection.BindingFlags.Public | System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.DeclaredOnly))
            .Where(m => m.GetCustomAttributes(typeof(UnsafeAccessorAttribute), false).Length > 0)
            .Select(m => $"{m.DeclaringType}.{m.Name}")
            .ToList();
        Assert.Empty(accessors);
    }

    // Sends frames built in leased transmit buffers and checks each one in place as it returns.
    private static void Exchange(VirtioNetDriver net, int first, int count)
    {
        var (back, wrong) = Exchange(net, first, count, sleep: true);
        Assert.Equal(count, back);
        Assert.Equal(0, wrong);
    }

    // The same without an assertion or a sleep inside, so it can be measured for allocations.
    private static (int Back, int Wrong) Exchange(VirtioNetDriver net, int first, int count, bool sleep)
    {
        var sent = first;
        var received = first;
        var wrong = 0;
        var end = first + count;
        var deadline = Environment.TickCount64 + 30_000;
        while (received < end && Environment.TickCount64 < deadline)
        {
            while (sent < end && sent - received < 128 && net.TryLeaseTransmit(out var lease))
            {
                Fill(lease.Frame[..64], sent);
                if (!net.Submit(lease, 64))
                {
                    return (received - first, wrong + 1);
                }

                sent++;
            }

            net.Flush();
            var any = false;
            while (net.TryReceiveInPlace(out var frame))
            {
                any = true;
                if (frame.Data.Length != 64 || BinaryPrimitives.ReadInt32BigEndian(frame.Data[14..]) != received)
                {
                    wrong++;
                }

                net.Release(frame);
                received++;
            }

            if (!any && sleep)
            {
                net.WaitForReceive(10);
            }
        }

        return (received - first, wrong);
    }

    private static ulong Status(VhostUserChannel channel)
    {
        channel.Send(VhostUserMessage.Empty(VhostUserRequest.GetStatus));
        Assert.Equal(ReceiveStatus.Message, channel.Receive([], 5000));
        Assert.Equal(VhostUserErrorCode.None, VhostUserCodec.DecodeReply(channel.Received, 0, out var reply).Code);
        Assert.Equal(VhostUserRequest.GetStatus, reply.Request);
        return reply.Value;
    }

    // Sizes from 60 bytes to the largest, varying frame by frame.
    private static int SizeOf(int sequence, int largest) => 60 + (int)((uint)(sequence * 7919) % (uint)(largest - 59));

    private static byte[] Frame(int sequence, int length)
    {
        var frame = new byte[length];
        Fill(frame, sequence);
        return frame;
    }

    private static void Fill(Span<byte> frame, int sequence)
    {
        frame.Clear();
        frame[0] = 0x02;
        frame[5] = 0x02;
        frame[6] = 0x02;
        frame[11] = 0x01;
        frame[12] = 0x88;
        frame[13] = 0xB5;
        BinaryPrimitives.WriteInt32BigEndian(frame[14..], sequence);
        for (var i = 18; i < frame.Length; i++)
        {
            frame[i] = (byte)(sequence + i);
        }
    }
}
