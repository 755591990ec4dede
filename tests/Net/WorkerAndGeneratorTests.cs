using Rings.Linux.Device;
using Rings.Linux.Driver;
using Rings.Linux.Net;
using Rings.Memory;
using Rings.Split;
using Rings.Testing.Traffic;

namespace Rings.Tests.Net;

/// <summary>The worker loop and the traffic generator on two threads of one process, over split rings.</summary>
public sealed class WorkerAndGeneratorTests
{
    private const ulong Base = 0x8000_0000;

    [Theory]
    [InlineData(WaitStrategy.Poll, VirtioFeatures.EventIndex, 64, false, Verification.Full)]
    [InlineData(WaitStrategy.Poll, VirtioFeatures.EventIndex, 64, false, Verification.Sample)]
    [InlineData(WaitStrategy.Block, VirtioFeatures.EventIndex, 64, false, Verification.Full)]
    [InlineData(WaitStrategy.Block, VirtioFeatures.None, 64, false, Verification.Full)]
    [InlineData(WaitStrategy.Adaptive, VirtioFeatures.EventIndex, 1514, false, Verification.Full)]
    [InlineData(WaitStrategy.Block, VirtioFeatures.EventIndex, 9000, true, Verification.Full)]
    [InlineData(WaitStrategy.Block, VirtioFeatures.EventIndex, 9000, true, Verification.Sample)]
    public void EveryFrameComesBackIntact(WaitStrategy wait, VirtioFeatures features, int frameSize, bool mergeable, Verification verify)
    {
        const int size = 256;
        using var region = new NativeRegion(16 << 20, Base);
        var memory = new GuestMemory(region.Region);
        var layout = RingFormat.Split.Layout(size);
        var txAt = layout.At(Base);
        var rxAt = layout.At(Base + (ulong)layout.TotalBytes);
        var slabs = Base + (2 * (ulong)layout.TotalBytes);
        var txSlab = new BufferSlab(memory, slabs, size, 9216);
        var rxBuffer = mergeable ? 2048 : 9216;
        var rxSlab = new BufferSlab(memory, slabs + BufferSlab.BytesFor(size, 9216), size, rxBuffer);
        var path = new NetDriverPath<SplitDriverRing, SplitDriverRing>(
            new SplitDriverRing(memory, txAt, size, features), new SplitDriverRing(memory, rxAt, size, features), txSlab, rxSlab, mergeable);
        var txDevice = new SplitDeviceRing(memory, txAt, size, features);
        var rxDevice = new SplitDeviceRing(memory, rxAt, size, features);
        using SemaphoreDoorbell txKick = new(), txCall = new(), rxKick = new(), rxCall = new();
        using var worker = new NetWorker<SplitDeviceRing, SplitDeviceRing>(txDevice, txKick, txCall, rxDevice, rxKick, rxCall, 32, mergeable, wait);
        var frames = frameSize == 64 ? 300_000 : 30_000;
        var generator = new TrafficGenerator<SplitDriverRing, SplitDriverRing>(
            path, txKick, rxKick, rxCall, new TrafficOptions(frameSize, 32, 0, TimeSpan.FromSeconds(30), wait, frames, Verify: verify));
        var workerThread = new Thread(() => worker.Run(20)) { IsBackground = true };
        workerThread.Start();
        var figures = generator.Run(TimeSpan.FromSeconds(5));
        worker.Stop();
        Assert.True(workerThread.Join(5000), "the worker did not stop");

        Assert.Equal(frames, figures.Sent);
        Assert.Equal(frames, figures.Received);
        Assert.Equal(0, figures.Lost);
        Assert.Equal(0, figures.Duplicated);
        Assert.Equal(0, figures.Corrupted);
        Assert.Equal((long)frames * frameSize, figures.BytesReceived);
        Assert.Equal(frames, worker.Frames);
        Assert.False(txDevice.IsBroken || rxDevice.IsBroken || path.Transmit.IsBroken || path.Receive.IsBroken);
        if (wait == WaitStrategy.Poll && features == VirtioFeatures.EventIndex)
        {
            // Busy-polling with EVENT_IDX: doorbells are rare.
            Assert.True(path.Transmit.Counters.NotificationsSent < frames / 100, $"kicks {path.Transmit.Counters.NotificationsSent}");
        }
    }
}
