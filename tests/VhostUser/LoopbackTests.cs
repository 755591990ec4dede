using Rings.Linux.Device;
using Rings.Linux.Driver;
using Rings.Linux.VhostUser;
using Rings.Tests.Linux;
using Xunit.Abstractions;

namespace Rings.Tests.VhostUser;

/// <summary>Our front-end against our back-end over a real socket, with a loopback device in between.</summary>
public class LoopbackTests
{
    private readonly ITestOutputHelper _output;

    public LoopbackTests(ITestOutputHelper output)
    {
        _output = output;
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void FramesGoRoundAndSurviveARingStopAndRestart(bool addMemReg)
    {
        var path = TestPaths.Socket();
        var log = new List<string>();
        using var backend = new VhostUserBackend(new VhostUserBackendOptions { SocketPath = path, Logger = Collect(log) });
        var device = new TestDevice(backend);
        backend.Start();
        using var frontend = VhostUserFrontend.Connect(new VhostUserFrontendOptions
        {
            SocketPath = path,
            MemoryBytes = 4 << 20,
            GuestPhysicalBase = 0x1_0000_0000,
            QueueSize = 64,
            UseAddMemReg = addMemReg,
            Logger = Collect(log),
        });

        Assert.Equal(
            VirtioFeatures.Version1 | VirtioFeatures.EventIndex | VirtioFeatures.IndirectDescriptors | VirtioFeatures.NetMergeRxBuffers | VhostUserConstants.ProtocolFeaturesBit,
            frontend.Features);
        Assert.True(frontend.ProtocolFeatures.HasFlag(VhostUserProtocolFeatures.ReplyAck));
        Assert.True(frontend.ProtocolFeatures.HasFlag(VhostUserProtocolFeatures.ConfigureMemSlots));
        Assert.True(device.WaitForQueues(2, 10_000));

        var driver = new TestDriver(frontend);
        driver.PostReceiveBuffers(0, 32);
        using var echo = new EchoLoop(device);

        Exchange(driver, 0, 100);

        // Stop the transmit ring: the back-end reports where it stopped; restart from there.
        var position = frontend.StopQueue(1);
        Assert.Equal(100, position.AvailIndex);
        Assert.True(TestDevice.Wait(() => device.Queue(1) is null, 5000));
        frontend.StartQueue(1);
        Assert.True(device.WaitForQueues(2, 5000));
        Assert.Equal(100, device.Queue(1)!.Ring.Position.AvailIndex);

        Exchange(driver, 100, 50);
        Assert.Equal(0, backend.Errors);
        _output.WriteLine(string.Join(Environment.NewLine, log));
    }

    [Fact]
    public void TheServerServesConnectionAfterConnection()
    {
        var path = TestPaths.Socket();
        using var backend = new VhostUserBackend(new VhostUserBackendOptions { SocketPath = path });
        var device = new TestDevice(backend);
        var ended = 0;
        backend.SessionEnded += (_, _) => Interlocked.Increment(ref ended);
        backend.Start();
        using var echo = new EchoLoop(device);
        for (var round = 0; round < 5; round++)
        {
            using (var frontend = VhostUserFrontend.Connect(new VhostUserFrontendOptions { SocketPath = path, MemoryBytes = 2 << 20, QueueSize = 32 }))
            {
                Assert.True(device.WaitForQueues(2, 10_000));
                var driver = new TestDriver(frontend);
                driver.PostReceiveBuffers(0, 16);
                Exchange(driver, round * 10, 10);
            }

            var expected = round + 1;
            Assert.True(TestDevice.Wait(() => Volatile.Read(ref ended) == expected, 10_000));
            Assert.Null(device.Queue(0));
            Assert.Null(device.Queue(1));
        }

        Assert.Equal(5, backend.Connections);
        Assert.Equal(10, device.StartEvents);
        Assert.Equal(10, device.StopEvents);
        Assert.Equal(0, backend.Errors);
    }

    [Fact]
    public void TheSocketIsOwnerOnly()
    {
        var path = TestPaths.Socket();
        using var backend = new VhostUserBackend(new VhostUserBackendOptions { SocketPath = path });
        backend.Start();
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(path));
        backend.Dispose();
        Assert.False(File.Exists(path));
    }

    internal static void Exchange(TestDriver driver, int first, int count)
    {
        var received = new List<int>();
        for (var i = 0; i < count; i++)
        {
            Assert.True(driver.Send(1, TestFrames.Make(first + i)));
            if (i % 8 == 7 || i == count - 1)
            {
                var expected = (i % 8) + 1;
                var frames = driver.Receive(0, expected, 10_000);
                Assert.Equal(expected, frames.Count);
                received.AddRange(frames.Select(f => TestFrames.Sequence(f)));
                Assert.All(frames, f => Assert.Equal(TestFrames.Make(TestFrames.Sequence(f)), f));
            }
        }

        Assert.Equal(Enumerable.Range(first, count), received);
    }

    private static Diagnostics.ListLogger Collect(List<string> log) => new(log);
}

/// <summary>Runs the loopback device on its own thread until disposed.</summary>
internal sealed class EchoLoop : IDisposable
{
    private readonly Thread _thread;
    private volatile bool _stop;

    public EchoLoop(TestDevice device, int pair = 0)
    {
        _thread = new Thread(() =>
        {
            while (!_stop)
            {
                if (device.Echo(pair) == 0)
                {
                    Thread.Sleep(1);
                }
            }
        })
        { IsBackground = true, Name = "test echo device" };
        _thread.Start();
    }

    public void Dispose()
    {
        _stop = true;
        _thread.Join();
    }
}
