using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Rings.Linux.Driver;
using Rings.Linux.Net;
using Rings.Linux.Plumbing;
using Rings.Linux.Runtime;

namespace Rings.Linux.Ports;

/// <summary>
/// The driver side of a virtio-net device over vhost-user: the port connects to a vhost-user
/// back-end's socket (DPDK's <c>net_vhost</c>, another <c>rings</c> process), owns the shared
/// memory and drives one queue pair through <see cref="VirtioNetDriver"/>.
/// <para>
/// Frames from the back-end are taken in place from used receive buffers, in this process's own
/// memory, and the buffers are posted again at <see cref="Release"/>; frames for the back-end are
/// copied into transmit buffers and published once per burst at <see cref="Flush"/>, which kicks
/// only when the device asked (2.7.13, 2.8.22). MRG_RXBUF is not negotiated, so every frame lies
/// in one receive buffer sized for the MTU (5.1.6.3.1). By default no offloads are negotiated: the
/// back-end sends complete frames and gets complete frames (the runtime completes checksums and
/// segments GSO frames first). With <c>offload=on</c> the port acks CSUM, HOST_TSO4/6, HOST_ECN and
/// HOST_USO where the back-end offers them and hands it partial checksums and GSO frames of up
/// to 64 KiB as they are (transmit buffers are then 64 KiB each); it still takes no GUEST_* offload.
/// </para>
/// <para>
/// A back-end that goes away (its end of the socket closes) is the link going down. With
/// <c>reconnect=on</c> (the default) the port then connects again every second and, once the
/// back-end is back, resumes from the rings in its own memory (<see cref="VhostUserFrontend.Reconnect()"/>,
/// the inflight region handed back when the back-end offers one) and the link comes up again.
/// </para>
/// </summary>
public sealed unsafe class VirtioUserPort : Port
{
    /// <summary>How often the control connection is checked for a back-end that went away.</summary>
    public const int MonitorMilliseconds = 200;

    private readonly object _gate = new();
    private readonly VhostUserFrontendOptions _options;
    private volatile VirtioNetDriver? _driver;
    private VirtioNetDriver? _detached;      // while the back-end is away: kept for the reconnect
    private long _nextAttempt;
    private readonly bool _reconnect;
    private readonly bool _offloads;
    private Timer? _monitor;

    // Data path only (the owning worker): the driver a round started with, so a detach in the
    // middle of a round never strands what was taken or submitted.
    private VirtioNetDriver? _receiving;
    private VirtioNetDriver? _transmitting;
    private string _status = "not connected";
    private int _submitted;

    /// <summary>The features <c>offload=on</c> acks where the back-end offers them: what the device takes from the driver (5.1.3).</summary>
    public const VirtioFeatures OffloadFeatures =
        VirtioFeatures.NetCsum | VirtioFeatures.NetHostTso4 | VirtioFeatures.NetHostTso6 | VirtioFeatures.NetHostEcn | VirtioFeatures.NetHostUso;

    /// <summary>Creates the port from <c>virtio-user:PATH[,mtu=N][,queue-size=N][,ring=split|packed][,reconnect=on|off][,offload=on|off][,hugepages=auto|on|off]</c> (it connects in <see cref="Open"/>).</summary>
    /// <param name="spec">The specification.</param>
    /// <exception cref="ArgumentException">An option is wrong.</exception>
    public VirtioUserPort(PortSpec spec)
        : base("virtio-user", spec?.Text ?? throw new ArgumentNullException(nameof(spec)))
    {
        spec.RejectUnknown("mtu", "queue-size", "ring", "reconnect", "offload", "hugepages");
        _offloads = spec.GetOnOff("offload", false);
        _reconnect = spec.GetOnOff("reconnect", true);
        SocketPath = spec.Target;
        Mtu = spec.GetInt("mtu", DefaultMtu, 68, ushort.MaxValue - VirtioNetHeader.Size - LinkHeaderBytes);
        var features = VirtioFeatures.Version1 | VirtioFeatures.EventIndex | VirtioFeatures.IndirectDescriptors | (_offloads ? OffloadFeatures : 0);
        var ring = spec.Options.TryGetValue("ring", out var r) ? r : "split";
        features |= ring switch
        {
            "split" => 0,
            "packed" => VirtioFeatures.RingPacked,
            _ => throw new ArgumentException($"port '{spec.Text}': ring must be split or packed, not '{ring}'"),
        };
        var format = RingFormat.Of(features);
        var size = spec.GetInt("queue-size", 256, 2, 32768);
        if (!format.IsValidSize(size))
        {
            throw new ArgumentException($"port '{spec.Text}': a {format} queue size is {format.SizeRule}, not {size}");
        }

        var huge = spec.Options.TryGetValue("hugepages", out var h) ? h : "auto";
        _options = new VhostUserFrontendOptions
        {
            SocketPath = SocketPath,
            QueueSize = size,
            Features = features,
            HugePages = huge switch
            {
                "auto" => HugePages.Auto,
                "on" => HugePages.On,
                "off" => HugePages.Off,
                _ => throw new ArgumentException($"port '{spec.Text}': hugepages must be auto, on or off, not '{huge}'"),
            },
        };
    }

    /// <summary>The back-end's socket path.</summary>
    public string SocketPath { get; }

    /// <summary>The driver while connected (features, rings and their counters).</summary>
    public VirtioNetDriver? Driver => _driver;

    /// <inheritdoc/>
    public override IEnumerable<Diagnostics.PortQueue> Queues =>
        _driver is { } d ? [Diagnostics.PortQueue.Of("receiveq", d.Receive.Ring!), Diagnostics.PortQueue.Of("transmitq", d.Transmit.Ring!)] : [];

    /// <inheritdoc/>
    public override string Status
    {
        get
        {
            lock (_gate)
            {
                return _status;
            }
        }
    }

    /// <inheritdoc/>
    public override void Open()
    {
        lock (_gate)
        {
            if (_driver is not null || _monitor is not null)
            {
                throw new InvalidOperationException($"{Name} is already open");
            }

            _options.Logger = Logger;
            VirtioNetDriver driver;
            try
            {
                // A GSO frame may be up to 64 KiB: every transmit buffer must hold one (no chaining of buffers here).
                driver = VirtioNetDriver.Connect(_options, _offloads ? MaxTransmitFrame : MaxFrameLength);
            }
            catch (Exception e) when (e is IOException or System.Net.Sockets.SocketException or InvalidOperationException)
            {
                throw new IOException($"{Name}: cannot set up with a vhost-user back-end at {SocketPath}: {e.Message}", e);
            }

            var features = driver.Frontend.Features;
            Offloads = OffloadsOf(features);
            var memory = driver.Frontend.Memory;
            _status = $"connected: {RingFormat.Of(features)} ring of {driver.Receive.Size}, features 0x{(ulong)features:x}, memory in {memory.PageBytes >> 10} KiB pages";
            if (memory.HugePageFallback is { } fallback)
            {
                Say(fallback);
            }

            // Release: the driver is complete before a worker can see it.
            _driver = driver;
            _monitor = new Timer(static state => ((VirtioUserPort)state!).CheckBackend(), this, MonitorMilliseconds, MonitorMilliseconds);
            Say(_status);
            SetLink(LinkState.Up, "connected to the back-end");
        }
    }

    // The largest frame one transmit buffer holds behind its header (a descriptor's length is 32 bits,
    // but a GSO frame never exceeds an IP packet of 64 KiB plus its link header).
    private const int MaxTransmitFrame = ushort.MaxValue - VirtioNetHeader.Size;

    // What the device takes from this driver beyond complete frames (5.1.6.2): CSUM for partial
    // checksums, HOST_TSO4/6, HOST_ECN and HOST_USO for GSO frames.
    private static PortOffloads OffloadsOf(VirtioFeatures features)
    {
        var o = PortOffloads.None;
        o |= (features & VirtioFeatures.NetCsum) != 0 ? PortOffloads.Checksum : 0;
        o |= (features & VirtioFeatures.NetHostTso4) != 0 ? PortOffloads.Tso4 : 0;
        o |= (features & VirtioFeatures.NetHostTso6) != 0 ? PortOffloads.Tso6 : 0;
        o |= (features & VirtioFeatures.NetHostEcn) != 0 ? PortOffloads.Ecn : 0;
        o |= (features & VirtioFeatures.NetHostUso) != 0 ? PortOffloads.Uso : 0;
        return o;
    }

    // ---- Data path -------------------------------------------------------------------------

    /// <inheritdoc/>
    public override int Receive(FrameBurst burst)
    {
        var driver = _driver;
        if (driver is null)
        {
            return 0;
        }

        var path = driver.Path;
        var taken = 0;
        while (burst.Room > 0 && path.TryReceiveInPlace(out var frame))
        {
            // The device wrote the header right before the frame, in the same buffer (5.1.6.3.1, no MRG_RXBUF).
            var data = frame.Data;
            var start = (byte*)Unsafe.AsPointer(ref MemoryMarshal.GetReference(data));
            VirtioNetHeader.TryRead(new ReadOnlySpan<byte>(start - VirtioNetHeader.Size, VirtioNetHeader.Size), out var header);
            header.NumBuffers = 0;
            burst.TryAdd(header, new FrameSegment(start, data.Length), (ulong)frame.Slot, isPrivate: true);
            taken++;
        }

        if (taken > 0)
        {
            _receiving = driver;
        }

        return taken;
    }

    /// <inheritdoc/>
    public override void Release(FrameBurst burst)
    {
        var driver = _receiving;
        _receiving = null;
        if (driver is null || burst.Taken == 0)
        {
            return;
        }

        var path = driver.Path;
        foreach (var slot in burst.Completions)
        {
            path.Release(new ReceivedFrame((int)slot, default));
        }

        if (path.RefillReceive())
        {
            driver.Receive.Kick.Signal();
        }
    }

    /// <inheritdoc/>
    public override int Transmit(FrameBurst burst, ReadOnlySpan<byte> frames)
    {
        var driver = _transmitting ??= _driver;
        if (driver is null)
        {
            Counters.Count(DropReason.LinkDown, frames.Length);
            return frames.Length;
        }

        var path = driver.Path;
        var maxLength = Math.Min(MaxFrameLength, path.MaxFrameSize);
        var sent = 0;
        long bytes = 0;
        var k = 0;
        for (; k < frames.Length; k++)
        {
            int frame = frames[k];
            var length = burst.Length(frame);
            var header = burst.Header(frame);
            if ((length > maxLength && header.GsoType == VirtioNetHeader.GsoNone) || length > path.MaxFrameSize)
            {
                Counters.Count(DropReason.OverMtu);
                continue;
            }

            // A driver sets no flag but NEEDS_CSUM (5.1.6.2.1); the worker left a request in the
            // header only where this port's device took it (Offloads).
            header.Flags &= VirtioNetHeader.FlagNeedsCsum;

            if (!path.TryLeaseTransmit(out var lease))
            {
                // No free transmit buffer: the back-end has not finished with enough yet.
                break;
            }

            burst.CopyTo(frame, lease.Frame[..length]);
            if (!path.Submit(lease, length, header))
            {
                // The ring is broken (the device broke a rule): nothing more goes out.
                Counters.Count(DropReason.LinkDown, frames.Length - k);
                k = frames.Length;
                break;
            }

            sent++;
            bytes += length;
        }

        _submitted += sent;
        Counters.Transmitted(sent, bytes);
        return k;
    }

    /// <inheritdoc/>
    public override void Flush()
    {
        var driver = _transmitting;
        _transmitting = null;
        if (driver is null || _submitted == 0)
        {
            return;
        }

        _submitted = 0;
        if (driver.Path.FlushTransmit())
        {
            driver.Transmit.Kick.Signal();
        }
    }

    /// <inheritdoc/>
    public override bool EnableWakeups() => _driver is { } driver && driver.Receive.Ring!.EnableUsedNotifications();

    /// <inheritdoc/>
    public override void DisableWakeups()
    {
        if (_driver is { } driver)
        {
            driver.Receive.Ring!.DisableUsedNotifications();
            driver.Receive.Call.TryConsume(out _);
        }
    }

    /// <inheritdoc/>
    public override int GetWakeupDescriptors(Span<FileDescriptor> descriptors)
    {
        if (_driver is { } driver && descriptors.Length > 0)
        {
            descriptors[0] = driver.Receive.Call.Handle;
            return 1;
        }

        return 0;
    }

    // ---- Control plane ---------------------------------------------------------------------

    /// <summary>On the monitor's timer thread: a closed control connection is the back-end gone; with reconnect on, try to get it back.</summary>
    private void CheckBackend()
    {
        lock (_gate)
        {
            if (_driver is { } driver && Link == LinkState.Up && !driver.IsConnected)
            {
                _status = "down: the back-end went away";
                Say("the back-end went away");
                SetLink(LinkState.Down, "back-end disconnected");
                if (!_reconnect)
                {
                    // The memory and rings are ours and stay mapped until the port closes: the data
                    // path may go on touching them harmlessly; it only stops getting anything.
                    return;
                }

                // The reconnect rewrites ring state: the data path lets go of the driver first.
                _driver = null;
                if (!WaitForDataPath())
                {
                    Say($"the data path did not let go of the rings within {DefaultQuiesceMilliseconds} ms; not reconnecting");
                    return;
                }

                _detached = driver;
                _nextAttempt = 0;
            }

            if (_detached is { } detached && Environment.TickCount64 >= _nextAttempt)
            {
                try
                {
                    detached.Frontend.Reconnect();
                }
                catch (IOException)
                {
                    // VhostUserException included: not back yet (or refusing); try again in a second.
                    _nextAttempt = Environment.TickCount64 + 1000;
                    return;
                }

                // A back-end that sleeps until kicked learns at once that buffers wait.
                detached.Transmit.Kick.Signal();
                detached.Receive.Kick.Signal();
                _detached = null;
                _status = $"connected again ({detached.Frontend.Reconnects} reconnect(s)){(detached.Frontend.HasInflightRegion ? ", inflight region handed back" : string.Empty)}";
                Say(_status);

                // Release: the reconnected driver is complete before a worker can see it.
                _driver = detached;
                SetLink(LinkState.Up, "reconnected to the back-end");
            }
        }
    }

    /// <inheritdoc/>
    protected override void Dispose(bool disposing)
    {
        lock (_gate)
        {
            _monitor?.Dispose();
            _monitor = null;
            _detached?.Dispose();
            _detached = null;
            var driver = _driver;
            if (driver is null)
            {
                return;
            }

            // Unpublish, then let the worker leave the round that may hold the rings.
            _driver = null;
            if (!WaitForDataPath())
            {
                Say($"the data path did not let go of the rings within {DefaultQuiesceMilliseconds} ms; the memory is kept");
                return;
            }

            driver.Dispose();
            _status = "closed";
            SetLink(LinkState.Down, "closed");
        }
    }
}
