using System.Runtime.Versioning;
using BenchmarkDotNet.Attributes;
using Rings.Linux.Device;
using Rings.Linux.Driver;
using Rings.Linux.Net;

namespace Rings.Benchmarks;

/// <summary>
/// A virtio-net round trip on one thread, over a real vhost-user setup in this process: the driver
/// sends a burst of 64-byte frames, the vhost-net forwarder reflects them into the receive queue,
/// the driver takes them back and reposts its buffers. Once through <see cref="NetDriverPath{TTx, TRx}"/>
/// directly, once through <see cref="VirtioNetDriver"/> on top of it; per frame.
/// </summary>
[MemoryDiagnoser]
[SupportedOSPlatform("linux")]
public class NetDriverBenchmarks
{
    private const int Burst = 32;

    private readonly byte[] _frame = new byte[64];
    private readonly byte[] _received = new byte[2048];
    private VhostUserBackend? _backend;
    private VirtioNetDriver? _net;
    private IDeviceRing? _tx;
    private IDeviceRing? _rx;
    private string? _socket;

    /// <summary>Ring format.</summary>
    [Params("split", "packed")]
    public string Ring { get; set; } = "split";

    /// <summary>Starts a back-end, connects the driver and waits for the device side of both queues.</summary>
    [GlobalSetup]
    public void Setup()
    {
        _socket = System.IO.Path.Combine(System.IO.Path.GetTempPath(), $"rings-bench-{Guid.NewGuid():N}"[..24] + ".sock");
        _backend = new VhostUserBackend(new VhostUserBackendOptions { SocketPath = _socket });
        var queues = new VhostQueue?[2];
        using var started = new CountdownEvent(2);
        _backend.QueueStarted += (_, e) =>
        {
            queues[e.Queue.Index] = e.Queue;
            started.Signal();
        };
        _backend.Start();
        _net = VirtioNetDriver.Connect(new VhostUserFrontendOptions { SocketPath = _socket, MemoryBytes = 8 << 20, QueueSize = 256, Features = new VhostUserFrontendOptions().Features | RingFormat.Parse(Ring).Feature }, 64);
        if (!started.Wait(10_000))
        {
            throw new InvalidOperationException("the queues did not start");
        }

        _rx = queues[0]!.Ring;
        _tx = queues[1]!.Ring;
        _tx.DisableAvailNotifications();
        _rx.DisableAvailNotifications();
    }

    /// <summary>Disconnects and stops the back-end.</summary>
    [GlobalCleanup]
    public void Cleanup()
    {
        _net?.Dispose();
        _backend?.Dispose();
    }

    /// <summary>The data path underneath, driven by hand (as a traffic engine does).</summary>
    /// <returns>Frames back.</returns>
    [Benchmark(Baseline = true, OperationsPerInvoke = Burst)]
    public int Path()
    {
        var net = _net!;
        var path = net.Path;
        for (var i = 0; i < Burst; i++)
        {
            path.TrySend(_frame);
        }

        if (path.FlushTransmit())
        {
            net.Transmit.Kick.Signal();
        }

        NetForwarder.Forward(_tx!, _rx!, Burst, net.Mergeable);
        var n = 0;
        while (path.TryReceive(_received, out _))
        {
            n++;
        }

        if (path.RefillReceive())
        {
            net.Receive.Kick.Signal();
        }

        return n;
    }

    /// <summary>The one-call driver's API: send, flush, receive, flush.</summary>
    /// <returns>Frames back.</returns>
    [Benchmark(OperationsPerInvoke = Burst)]
    public int Driver()
    {
        var net = _net!;
        for (var i = 0; i < Burst; i++)
        {
            net.TrySend(_frame);
        }

        net.Flush();
        NetForwarder.Forward(_tx!, _rx!, Burst, net.Mergeable);
        var n = 0;
        while (net.TryReceive(_received, out _))
        {
            n++;
        }

        net.Flush();
        return n;
    }
}
