using Microsoft.Extensions.Logging;
using Rings.Linux.Device;
using Rings.Linux.Diagnostics;
using Rings.Linux.Driver;
using Rings.Linux.Ports;
using Rings.Linux.Runtime;

namespace Rings.Tests.Diagnostics;

/// <summary>The library logs control-plane events with their event ids to the ILogger it is given, and nothing per frame.</summary>
public class LoggingTests
{
    [Fact]
    public void ConnectionNegotiationAndRingsAreLoggedWithTheirEventIds()
    {
        var lines = new List<string>();
        var device = new ListLogger(lines);
        var driver = new ListLogger(lines);
        var path = Rings.Tests.Linux.TestPaths.Socket();
        try
        {
            using (var backend = new VhostUserBackend(new VhostUserBackendOptions { SocketPath = path, Logger = device }))
            {
                backend.Start();
                using (var net = VirtioNetDriver.Connect(new VhostUserFrontendOptions { SocketPath = path, MemoryBytes = 8 << 20, QueueSize = 64, Logger = driver }))
                {
                    Assert.True(net.TrySend(new byte[60]));
                    net.Flush();
                }

                var clock = System.Diagnostics.Stopwatch.StartNew();
                while (!device.Snapshot().Exists(e => e.Id == RingsEvents.Disconnected) && clock.Elapsed < TimeSpan.FromSeconds(10))
                {
                    Thread.Sleep(10);
                }
            }

            var events = device.Snapshot();
            Assert.Contains(events, e => e.Id == RingsEvents.Listening && e.Level == LogLevel.Debug);
            Assert.Contains(events, e => e.Id == RingsEvents.Connected && e.Level == LogLevel.Information && e.Message.Contains(path, StringComparison.Ordinal));
            Assert.Equal(2, events.Count(e => e.Id == RingsEvents.RingStarted));
            Assert.Contains(events, e => e.Id == RingsEvents.Disconnected && e.Message.EndsWith("front-end disconnected", StringComparison.Ordinal));
            Assert.All(events, e => Assert.False(string.IsNullOrEmpty(e.Id.Name)));
            var negotiated = Assert.Single(driver.Snapshot());
            Assert.Equal(RingsEvents.Negotiated, negotiated.Id);
            Assert.Contains("features 0x", negotiated.Message, StringComparison.Ordinal);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void LinkChangesAreLoggedAndFramesAreNot()
    {
        var logger = new ListLogger([]);
        var a = new InMemoryPort("log-a");
        var b = new InMemoryPort("log-b");
        a.Open();
        b.Open();
        using var pipeline = new Pipeline([a, b], new PatchProcessor(), new PipelineOptions { Logger = logger });
        pipeline.RunOnce();
        b.SetLinkState(LinkState.Down, "unplugged");
        b.SetLinkState(LinkState.Up, "plugged");
        var before = logger.Snapshot().Count;
        var frame = new byte[64];
        for (var i = 0; i < 1000; i++)
        {
            a.TryInject(frame);
            pipeline.RunOnce();
            b.TryTake(new byte[2048], out _, out _);
        }

        var events = logger.Snapshot();
        Assert.Equal(before, events.Count);
        Assert.Equal(1000, b.Counters.TxFrames);
        Assert.Contains(events, e => e.Id == RingsEvents.PortDown && e.Message == "log-b: link down (unplugged)");
        Assert.Contains(events, e => e.Id == RingsEvents.PortUp && e.Message == "log-b: link up (plugged)");
        a.Dispose();
        b.Dispose();
    }
}
