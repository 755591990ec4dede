using System.Diagnostics;
using Rings.Linux.Device;
using Rings.Linux.VhostUser;

namespace Rings.Testing.Faults;

/// <summary>
/// A vhost-user back-end whose data path is a <see cref="HostileDevice"/>: serves front-end after
/// front-end and, once a front-end's receive and transmit queues run, reflects its frames honestly
/// for a while and then lies to it. Plugs into <see cref="VhostUserBackend"/> through its public
/// surface only: the ring factories of <see cref="VhostUserBackendOptions"/> (to know where each
/// ring lives) and the <see cref="VhostUserBackend.QueueStarted"/>, <see cref="VhostUserBackend.QueueStopped"/>
/// and <see cref="VhostUserBackend.SessionEnded"/> events.
/// </summary>
public sealed class HostileHost : IDisposable
{
    private readonly string _kind;
    private readonly int _burst;
    private readonly TextWriter _output;
    private readonly VhostUserBackend _backend;
    private readonly object _gate = new();
    private readonly Dictionary<IDeviceRing, DeviceRingSetup> _setups = new(ReferenceEqualityComparer.Instance);
    private readonly Dictionary<object, VhostQueue?[]> _queues = [];
    private readonly Dictionary<object, Running> _devices = [];

    /// <summary>Creates the back-end; <see cref="Start"/> opens the socket.</summary>
    /// <param name="socket">Where to listen.</param>
    /// <param name="kind">One of <see cref="HostileDevice.Kinds"/>.</param>
    /// <param name="burst">Most frames per round.</param>
    /// <param name="output">One line per session started and ended.</param>
    public HostileHost(string socket, string kind, int burst, TextWriter output)
    {
        if (Array.IndexOf(HostileDevice.Kinds, kind) < 0)
        {
            throw new ArgumentOutOfRangeException(nameof(kind), kind, $"one of {string.Join(", ", HostileDevice.Kinds)}");
        }

        _kind = kind;
        _burst = burst;
        _output = output;
        // No inflight tracking: this device lies about what it used, so it keeps no honest record
        // for a successor, and the rings it is given stay the ones its factory made.
        var options = new VhostUserBackendOptions
        {
            SocketPath = socket,
            MaxConnections = 8,
            ProtocolFeatures = VhostUserBackendOptions.DefaultProtocolFeatures & ~VhostUserProtocolFeatures.InflightShmfd,
        };
        var create = options.RingFactory;
        options.RingFactory = (in DeviceRingSetup s) => Remember(create(s), s);

        _backend = new VhostUserBackend(options);
        _backend.QueueStarted += (session, e) => OnStarted(session!, e.Queue);
        _backend.QueueStopped += (session, e) => OnStopped(session!, e.Queue);
        _backend.SessionEnded += (session, reason) => OnSessionEnded(session!, reason);
    }

    /// <summary>Opens the socket and serves on a background thread.</summary>
    public void Start() => _backend.Start();

    /// <summary>Stops serving and every data path.</summary>
    public void Dispose()
    {
        _backend.Dispose();
        lock (_gate)
        {
            foreach (var session in _devices.Keys.ToList())
            {
                StopDevice(session, "stopping");
            }
        }
    }

    private IDeviceRing Remember(IDeviceRing ring, in DeviceRingSetup setup)
    {
        lock (_gate)
        {
            _setups[ring] = setup;
        }

        return ring;
    }

    private void OnStarted(object session, VhostQueue queue)
    {
        lock (_gate)
        {
            if (queue.Index > 1)
            {
                return;
            }

            if (!_queues.TryGetValue(session, out var pair))
            {
                pair = new VhostQueue?[2];
                _queues[session] = pair;
            }

            pair[queue.Index] = queue;
            if (pair[0] is { } rx && pair[1] is { } tx && !_devices.ContainsKey(session))
            {
                StartDevice(session, tx, rx);
            }
        }
    }

    private void OnStopped(object session, VhostQueue queue)
    {
        lock (_gate)
        {
            // The device must let go of the ring before the back-end answers GET_VRING_BASE.
            if (_queues.TryGetValue(session, out var pair) && queue.Index <= 1 && pair[queue.Index] == queue)
            {
                StopDevice(session, "queue stopped");
                pair[queue.Index] = null;
                _setups.Remove(queue.Ring);
            }
        }
    }

    private void OnSessionEnded(object session, VhostUserError reason)
    {
        lock (_gate)
        {
            StopDevice(session, reason.IsError ? reason.ToString() : "front-end disconnected");
            if (_queues.Remove(session, out var pair))
            {
                foreach (var q in pair)
                {
                    if (q is not null)
                    {
                        _setups.Remove(q.Ring);
                    }
                }
            }
        }
    }

    // Caller holds _gate.
    private void StartDevice(object session, VhostQueue tx, VhostQueue rx)
    {
        if (tx.Kick is null || tx.Call is null || rx.Call is null ||
            !_setups.TryGetValue(tx.Ring, out var txSetup) || !_setups.TryGetValue(rx.Ring, out var rxSetup))
        {
            _output.WriteLine("hostile host: the queue pair needs kick and call doorbells; not started");
            return;
        }

        var device = new HostileDevice(_kind, tx.Ring, txSetup, tx.Kick, tx.Call, rx.Ring, rxSetup, rx.Call, _burst);
        var thread = new Thread(() =>
        {
            try
            {
                device.Run();
            }
            catch (Exception e)
            {
                _output.WriteLine($"hostile host: data path failed: {e.GetType().Name}: {e.Message}");
            }
        })
        { Name = "hostile vhost-net device", IsBackground = true };
        _devices[session] = new Running(device, thread, tx.Ring, rx.Ring, Stopwatch.StartNew());
        thread.Start();
        _output.WriteLine($"hostile host: misbehaving ({_kind}) after {HostileDevice.HonestFrames} honest frames: ring {tx.Format}, size {tx.Ring.Size}");
    }

    // Caller holds _gate.
    private void StopDevice(object session, string why)
    {
        if (!_devices.Remove(session, out var r))
        {
            return;
        }

        r.Device.Stop();
        r.Thread.Join();
        var broken = r.Tx.IsBroken || r.Rx.IsBroken ? $", broken: tx {r.Tx.BrokenReason}, rx {r.Rx.BrokenReason}" : string.Empty;
        _output.WriteLine($"hostile host: {why}: forwarded {r.Device.Frames:N0} frames in {r.Clock.Elapsed.TotalSeconds:0.0} s, offences {r.Device.Offences:N0}, sleeps {r.Device.Sleeps:N0}{broken}");
    }

    private sealed record Running(HostileDevice Device, Thread Thread, IDeviceRing Tx, IDeviceRing Rx, Stopwatch Clock);
}
