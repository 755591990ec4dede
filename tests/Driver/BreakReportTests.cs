using System.Diagnostics;
using Rings.Chains;
using Rings.Linux.Device;
using Rings.Linux.Driver;
using Rings.Tests.Apps;
using Rings.Tests.Hostile;
using Rings.Tests.Linux;

namespace Rings.Tests.Driver;

/// <summary>
/// A break surfaces on both sides within 100 ms. Device side: a back-end that finds a ring broken
/// rings that ring's error doorbell (SET_VRING_ERR), here <c>rings host</c> and <c>rings switch</c>
/// given a transmit queue holding a receive buffer (receive and transmit swapped). Driver side: the
/// front-end hears it (<see cref="VhostUserFrontend.QueueBroken"/>, <see cref="FrontendQueue.DeviceBroken"/>),
/// and a <see cref="VirtioNetDriver"/> waiting for frames stops with an error naming the queue.
/// </summary>
[Collection(ProcessCollection.Name)]
public sealed class BreakReportTests
{
    private static readonly TimeSpan Limit = TimeSpan.FromMilliseconds(100);

    [Theory]
    [InlineData("host")]
    [InlineData("switch")]
    public void A_back_end_reports_a_broken_ring_to_the_front_end_within_100_ms(string command)
    {
        using var host = command == "host" ? RingsHost.Start() : null;
        using var sw = command == "switch" ? RingsSwitch.Start(1) : null;
        var socket = host?.Socket ?? sw!.Sockets[0];
        using var frontend = VhostUserFrontend.Connect(new VhostUserFrontendOptions { SocketPath = socket });
        using var reported = new ManualResetEventSlim();
        FrontendQueue? queue = null;
        long at = 0;
        frontend.QueueBroken += (_, e) =>
        {
            at = Stopwatch.GetTimestamp();
            queue = e.Queue;
            reported.Set();
        };

        // Receive and transmit swapped: a frame to send (device-readable) on the receive queue,
        // vring 0, and a receive buffer (device-writable, no header to read) on the transmit
        // queue, vring 1. The device must refuse the latter (5.1.6.2) and say so.
        var receive = frontend.Queues[0];
        var transmit = frontend.Queues[1];
        Assert.Null(frontend.BrokenQueue);
        Thread.Sleep(300); // the back-end's data path is attached to both rings
        Assert.True(receive.Ring.TryAdd(new BufferSegment(frontend.BufferAddress, 12 + 64), deviceWritable: false, out _));
        receive.Ring.Publish();
        receive.Kick.Signal();
        Assert.True(transmit.Ring.TryAdd(new BufferSegment(frontend.BufferAddress + 4096, 2048), deviceWritable: true, out _));
        transmit.Ring.Publish();
        var kicked = Stopwatch.GetTimestamp();
        transmit.Kick.Signal();

        Assert.True(reported.Wait(TimeSpan.FromSeconds(10)), $"the front-end heard of no break:\n{host?.Output ?? sw!.Output}");
        var took = Stopwatch.GetElapsedTime(kicked, at);
        Assert.True(took < Limit, $"the break took {took.TotalMilliseconds:0.0} ms to reach the front-end");
        Assert.Same(transmit, queue);
        Assert.True(transmit.DeviceBroken);
        Assert.False(frontend.Queues[0].DeviceBroken);
        Assert.Same(transmit, frontend.BrokenQueue);
        Assert.Equal("the device reported transmitq1 (vring 1) broken (vring error eventfd); it needs a reset", transmit.BrokenDescription);
    }

    [Fact]
    public void A_driver_waiting_for_frames_stops_with_an_error_naming_the_queue_within_100_ms_of_the_report()
    {
        using var reporter = new ReportingBackend();
        using var net = VirtioNetDriver.Connect(new VhostUserFrontendOptions { SocketPath = reporter.Socket });
        Assert.False(net.IsBroken);
        Assert.Null(net.BrokenDescription);
        Assert.False(net.WaitForReceive(50));

        // The device reports vring 1 broken while the driver sleeps waiting for a frame.
        long reportedAt = 0;
        var report = new Thread(() =>
        {
            Thread.Sleep(200);
            reportedAt = Stopwatch.GetTimestamp();
            reporter.Transmit!.ReportBroken();
        });
        report.Start();
        var e = Assert.Throws<VirtioNetBrokenException>(() => net.WaitForReceive(10_000));
        var took = Stopwatch.GetElapsedTime(reportedAt);
        report.Join();
        Assert.True(took < Limit, $"the waiting driver took {took.TotalMilliseconds:0.0} ms to stop");
        Assert.Contains("transmitq1 (vring 1)", e.Message, StringComparison.Ordinal);
        Assert.True(net.IsBroken);
        Assert.True(net.Transmit.DeviceBroken);
        Assert.Same(net.Transmit, net.Frontend.BrokenQueue);

        // The rest of the data path refuses too, rather than wait for what cannot come.
        Assert.Throws<VirtioNetBrokenException>(net.Flush);
        Assert.Throws<VirtioNetBrokenException>(() => net.TryReceive(new byte[2048], out _));
        Assert.True(reporter.Transmit!.BreakReported);
    }

    /// <summary>
    /// The error watch is the front-end's own thread: a <see cref="VhostUserFrontend.QueueBroken"/>
    /// handler that throws is logged, the process lives on, and a later report on another ring is
    /// still heard.
    /// </summary>
    [Fact]
    public void A_QueueBroken_handler_that_throws_is_logged_and_later_reports_are_still_heard()
    {
        using var reporter = new ReportingBackend();
        var logger = new Diagnostics.ListLogger([]);
        using var frontend = VhostUserFrontend.Connect(new VhostUserFrontendOptions { SocketPath = reporter.Socket, Logger = logger });
        var heard = new System.Collections.Concurrent.ConcurrentQueue<int>();
        frontend.QueueBroken += (_, e) =>
        {
            heard.Enqueue(e.Queue.Index);
            throw new InvalidOperationException($"handler bug on vring {e.Queue.Index}");
        };

        Assert.True(SpinWait.SpinUntil(() => reporter.Receive is not null && reporter.Transmit is not null, TimeSpan.FromSeconds(10)));
        reporter.Transmit!.ReportBroken();
        Assert.True(SpinWait.SpinUntil(() => heard.Count == 1, TimeSpan.FromSeconds(10)), "the first report was not heard");
        reporter.Receive!.ReportBroken();
        Assert.True(SpinWait.SpinUntil(() => heard.Count == 2, TimeSpan.FromSeconds(10)), "a report after a handler threw was not heard");
        Assert.Equal([1, 0], heard.ToArray());
        Assert.True(frontend.Queues[0].DeviceBroken);
        Assert.True(frontend.Queues[1].DeviceBroken);
        var failures = logger.Snapshot().Where(e => e.Id == Rings.Linux.Diagnostics.RingsEvents.HandlerFailed).Select(e => e.Message).ToArray();
        Assert.Contains(failures, m => m.Contains("QueueBroken: handler failed: InvalidOperationException: handler bug on vring 1", StringComparison.Ordinal));
        Assert.Contains(failures, m => m.Contains("QueueBroken: handler failed: InvalidOperationException: handler bug on vring 0", StringComparison.Ordinal));
    }

    /// <summary>A back-end that runs no data path and reports a ring broken when told to.</summary>
    private sealed class ReportingBackend : IDisposable
    {
        private readonly VhostUserBackend _backend;

        public ReportingBackend()
        {
            Socket = TestPaths.Socket();
            _backend = new VhostUserBackend(new VhostUserBackendOptions { SocketPath = Socket });
            _backend.QueueStarted += (_, e) =>
            {
                if (e.Queue.Index == 0)
                {
                    Receive = e.Queue;
                }

                if (e.Queue.Index == 1)
                {
                    Transmit = e.Queue;
                }
            };
            _backend.Start();
        }

        public string Socket { get; }

        public VhostQueue? Receive { get; private set; }

        public VhostQueue? Transmit { get; private set; }

        public void Dispose() => _backend.Dispose();
    }
}
