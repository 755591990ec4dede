using Rings.Linux.Device;
using Rings.Linux.Net;
using Rings.Tests.Linux;

namespace Rings.Tests.Driver;

/// <summary>
/// An in-test vhost-user back-end with the real vhost-net data path: once a front-end's receive and
/// transmit queues run, a <see cref="NetWorker{TTx, TRx}"/> reflects every frame it transmits into
/// its receive queue (merging receive buffers when MRG_RXBUF was negotiated).
/// </summary>
internal sealed class ReflectingBackend : IDisposable
{
    private readonly object _gate = new();
    private readonly VhostQueue?[] _queues = new VhostQueue?[2];
    private NetWorker<IDeviceRing, IDeviceRing>? _worker;
    private Thread? _thread;

    public ReflectingBackend(VirtioFeatures? deviceFeatures = null)
    {
        Socket = TestPaths.Socket();
        var options = new VhostUserBackendOptions { SocketPath = Socket };
        if (deviceFeatures is { } f)
        {
            options.DeviceFeatures = f;
        }

        Backend = new VhostUserBackend(options);
        Backend.QueueStarted += (_, e) => Started(e.Queue);
        Backend.QueueStopped += (_, e) => Stop(e.Queue);
        Backend.SessionEnded += (_, _) => Interlocked.Increment(ref SessionsEnded);
        Backend.Start();
    }

    /// <summary>Sessions that have ended.</summary>
    public int SessionsEnded;

    public VhostUserBackend Backend { get; }

    public string Socket { get; }

    /// <summary>Frames the worker forwarded (of the current or last session).</summary>
    public long Frames { get; private set; }

    public void Dispose()
    {
        Backend.Dispose();
        lock (_gate)
        {
            StopWorker();
        }
    }

    private void Started(VhostQueue q)
    {
        lock (_gate)
        {
            _queues[q.Index] = q;
            if (_queues[0] is { } rx && _queues[1] is { } tx && _worker is null)
            {
                var mergeable = (rx.Features & VirtioFeatures.NetMergeRxBuffers) != 0;
                var worker = new NetWorker<IDeviceRing, IDeviceRing>(tx.Ring, tx.Kick!, tx.Call!, rx.Ring, rx.Kick!, rx.Call!, 32, mergeable, WaitStrategy.Adaptive);
                _worker = worker;
                _thread = new Thread(() => worker.Run()) { IsBackground = true, Name = "test vhost-net worker" };
                _thread.Start();
            }
        }
    }

    // The data path lets go of the rings before the back-end answers GET_VRING_BASE or unmaps.
    private void Stop(VhostQueue q)
    {
        lock (_gate)
        {
            StopWorker();
            _queues[q.Index] = null;
        }
    }

    private void StopWorker()
    {
        if (_worker is { } w)
        {
            w.Stop();
            _thread!.Join();
            w.Dispose();
            Frames = w.Frames;
            _worker = null;
        }
    }
}
