using System.Net.NetworkInformation;
using System.Runtime.InteropServices;
using Rings.Linux.Net;
using Rings.Linux.Plumbing;
using Rings.Linux.Runtime;

namespace Rings.Linux.Ports;

/// <summary>
/// A Linux TAP device as a port: frames to and from the kernel's network stack through one
/// non-blocking descriptor opened with <c>IFF_TAP | IFF_NO_PI | IFF_VNET_HDR</c>, so every frame
/// carries its <c>virtio_net_hdr_v1</c> (virtio 1.2 5.1.6) and offload requests pass through.
/// <para>
/// <see cref="Open"/> creates the device when no interface has the name (it goes away when the
/// port closes) or attaches to an existing persistent one (which stays). The device may be moved
/// to another network namespace afterwards (<c>ip link set NAME netns NS</c>): the descriptor
/// stays valid. By default no offloads are asked of the kernel (TUNSETOFFLOAD 0), so frames arrive
/// complete, and none are given to it: the runtime completes partial checksums and segments GSO
/// frames before they get here. With <c>offload=on</c> both ways carry partial checksums and TCP
/// segmentation frames of up to 64 KiB as they are (the kernel completes what it is given).
/// </para>
/// <para>
/// Frames are read into the port's own buffers (one slot per frame of a burst, reused) and handed
/// on in place; transmitted frames are written from where they lie, header and segments in one
/// <c>writev</c>. Nothing is allocated per frame. A device deleted under the port
/// (<c>ip link del</c>) is the link going down for good; the switch goes on. An interface that is
/// administratively down refuses frames: they are counted <see cref="DropReason.LinkDown"/> here.
/// </para>
/// </summary>
public sealed unsafe class TapPort : Port
{
    /// <summary>Most segments of a frame written in one <c>writev</c> (header included); a frame in more pieces is copied first.</summary>
    private const int MaxGather = 17;

    private readonly object _gate = new();
    private readonly int _requestedMtu;
    private readonly bool _receiveOffloads;
    private volatile TapDevice? _device;
    private byte* _slots;
    private int _slotBytes;
    private byte* _gatherScratch;
    private int _deleted;
    private volatile bool _kernelDown;
    private bool _created;
    private readonly MacAddress? _requestedMac;

    /// <summary>
    /// Creates the port from <c>tap:NAME[,mtu=N][,mac=ADDRESS][,offload=on|off]</c> (the device is opened by
    /// <see cref="Open"/>). <c>offload=on</c> asks the kernel for partial checksums and TCP
    /// segmentation offload (TUNSETOFFLOAD): frames of up to 64 KiB with NEEDS_CSUM arrive and pass
    /// through to ports that take them; a port that does not gets the checksum completed and the
    /// frame segmented in software (<see cref="PortCounters.SoftwareSegmented"/>). The same option
    /// says what the port takes on transmit: with <c>offload=off</c> the switch hands the kernel only
    /// complete frames of at most the MTU. <c>mac=</c> gives the kernel side a fixed
    /// unicast address, so hosts that talk to it keep their neighbour entries when the device is
    /// made again (a new TAP device otherwise gets a random address each time).
    /// </summary>
    /// <param name="spec">The specification.</param>
    /// <exception cref="ArgumentException">The name is not a valid interface name, or an option is wrong.</exception>
    public TapPort(PortSpec spec)
        : base("tap", spec?.Text ?? throw new ArgumentNullException(nameof(spec)))
    {
        spec.RejectUnknown("mtu", "mac", "offload");
        _receiveOffloads = spec.GetOnOff("offload", false);
        try
        {
            TapDevice.ValidateName(spec.Target, TapOpenMode.CreateOrAttach);
        }
        catch (TapException e)
        {
            throw new ArgumentException($"port '{spec.Text}': {e.Message}", e);
        }

        DeviceName = spec.Target;
        _requestedMtu = spec.GetInt("mtu", 0, 68, 65521);
        if (spec.Options.TryGetValue("mac", out var mac))
        {
            if (!MacAddress.TryParse(mac, out var address) || address.IsMulticast || address == default)
            {
                throw new ArgumentException($"port '{spec.Text}': mac must be a unicast address such as 02:00:00:00:00:01, not '{mac}'");
            }

            _requestedMac = address;
        }
    }

    /// <summary>The interface name.</summary>
    public string DeviceName { get; }

    /// <summary>True when the port created the device (it goes away when the port closes); false when it attached to an existing one.</summary>
    public bool Created => _created;

    /// <summary>True once the device was deleted under the port.</summary>
    public bool Deleted => Volatile.Read(ref _deleted) != 0;

    /// <summary>The device's own counters (frames the kernel refused, frames too large for the buffers), once open.</summary>
    public TapCounters DeviceCounters => _device?.Counters ?? default;

    /// <inheritdoc/>
    public override string Status =>
        Deleted ? "down: the TAP device was deleted"
        : _device is null ? "closed"
        : $"{(_created ? "created" : "attached to")} {DeviceName}, MTU {Mtu}{(_receiveOffloads ? ", offloads on" : string.Empty)}{(_kernelDown ? ", kernel interface down" : string.Empty)}";

    /// <inheritdoc/>
    public override void Open()
    {
        lock (_gate)
        {
            if (_device is not null || Deleted)
            {
                throw new InvalidOperationException($"{Name} is already open");
            }

            var device = TapDevice.Open(DeviceName);
            MacAddress mac;
            try
            {
                if (_requestedMtu > 0)
                {
                    device.SetMtu(_requestedMtu);
                }

                Mtu = device.GetMtu();
                if (_requestedMac is { } requested)
                {
                    device.SetMacAddress(requested);
                }

                mac = device.GetMacAddress();
                Mac = new PhysicalAddress(ToOctets(mac));

                // The kernel would take partial checksums and GSO frames on write whatever TUNSETOFFLOAD
                // says (it completes and segments them itself); offload=off still means no offloads
                // either way, so such a port gets complete, MTU-sized frames (segmented and checksummed
                // by the switch) and a kernel that was told "no offloads" gets none from the switch either.
                Offloads = _receiveOffloads ? PortOffloads.Checksum | PortOffloads.Tso4 | PortOffloads.Tso6 | PortOffloads.Ecn : PortOffloads.None;

                if (_receiveOffloads)
                {
                    device.SetOffloads(TapOffloads.Checksum | TapOffloads.Tso4 | TapOffloads.Tso6 | TapOffloads.TsoEcn);
                }

                // Room for the largest frame the kernel sends after its header: what the MTU lets
                // through (with a VLAN tag), or a 64 KiB segmentation frame with the offloads on.
                _slotBytes = (TapDevice.HeaderSize + (_receiveOffloads ? FrameBurst.MaxFrameLength : MaxFrameLength) + 63) & ~63;
                _slots = (byte*)NativeMemory.AlignedAlloc((nuint)((long)_slotBytes * FrameBurst.MaxCapacity), 64);
                _gatherScratch = (byte*)NativeMemory.AlignedAlloc((nuint)FrameBurst.MaxFrameLength, 64);
            }
            catch
            {
                device.Dispose();
                FreeBuffers();
                throw;
            }

            _created = device.Created;
            _kernelDown = device.LinkState != TapLinkState.Up;

            // Release: the buffers are set before a worker can see the device.
            _device = device;
            Say($"{(_created ? "created" : "attached to")} TAP device {device.Name} (index {device.InterfaceIndex}, MTU {Mtu}, MAC {mac})");
            SetLink(LinkState.Up, _created ? "TAP device created" : "TAP device attached");
        }
    }

    // ---- Data path -------------------------------------------------------------------------

    /// <inheritdoc/>
    public override int Receive(FrameBurst burst)
    {
        var device = _device;
        if (device is null || Deleted)
        {
            return 0;
        }

        var taken = 0;
        var tooLong = 0;

        // Each attempt reads or drops one frame: bounded by the burst's room.
        for (var attempt = burst.Room; attempt > 0; attempt--)
        {
            var slot = _slots + ((long)taken * _slotBytes);
            var status = device.Receive(new Span<byte>(slot, _slotBytes), out var length);
            if (status == TapStatus.Done)
            {
                VirtioNetHeader.TryRead(new ReadOnlySpan<byte>(slot, TapDevice.HeaderSize), out var header);
                header.NumBuffers = 0;
                burst.TryAdd(header, new FrameSegment(slot + TapDevice.HeaderSize, length - TapDevice.HeaderSize), (ulong)taken, isPrivate: true);
                taken++;
                continue;
            }

            if (status == TapStatus.Dropped)
            {
                // Longer than the buffers (the MTU was raised after the port opened), or unreadable.
                tooLong++;
                continue;
            }

            if (status == TapStatus.Deleted)
            {
                OnDeleted();
            }

            break;
        }

        if (tooLong > 0)
        {
            Counters.Count(DropReason.OverMtu, tooLong);
        }

        if (taken > 0)
        {
            // Frames came: the interface is up. Once per burst (a volatile store).
            _kernelDown = false;
        }

        return taken;
    }

    /// <inheritdoc/>
    public override void Release(FrameBurst burst)
    {
        // The frames were read into the port's own slots, reused by the next Receive.
    }

    /// <inheritdoc/>
    public override int Transmit(FrameBurst burst, ReadOnlySpan<byte> frames)
    {
        var device = _device;
        if (device is null || Deleted)
        {
            Counters.Count(DropReason.LinkDown, frames.Length);
            return frames.Length;
        }

        var maxLength = MaxFrameLength;
        var vectors = stackalloc LibC.IoVec[MaxGather];
        var headerBytes = stackalloc byte[TapDevice.HeaderSize];
        var sent = 0;
        long bytes = 0;
        var down = 0;
        var refused = 0;
        var k = 0;
        for (; k < frames.Length; k++)
        {
            int frame = frames[k];
            var length = burst.Length(frame);
            var header = burst.Header(frame);
            if (length > maxLength && header.GsoType == VirtioNetHeader.GsoNone)
            {
                Counters.Count(DropReason.OverMtu);
                continue;
            }

            // The kernel reads num_buffers as nothing on a TAP device; zero it as a driver does (5.1.6).
            header.NumBuffers = 0;
            header.TryWrite(new Span<byte>(headerBytes, TapDevice.HeaderSize));
            vectors[0] = new LibC.IoVec { Base = headerBytes, Length = TapDevice.HeaderSize };
            var segments = burst.Segments(frame);
            var count = 1;
            if (segments.Length < MaxGather)
            {
                foreach (var s in segments)
                {
                    vectors[count++] = new LibC.IoVec { Base = s.Start, Length = (nuint)s.Length };
                }
            }
            else
            {
                burst.CopyTo(frame, new Span<byte>(_gatherScratch, length));
                vectors[count++] = new LibC.IoVec { Base = _gatherScratch, Length = (nuint)length };
            }

            var status = device.TransmitVectors(vectors, count, TapDevice.HeaderSize + length);
            if (status == TapStatus.Done)
            {
                sent++;
                bytes += length;
                continue;
            }

            if (status == TapStatus.WouldBlock)
            {
                // The kernel cannot take more now: the rest are the caller's to count as full.
                break;
            }

            if (status == TapStatus.Deleted)
            {
                OnDeleted();
                down += frames.Length - k;
                k = frames.Length;
                break;
            }

            if (status == TapStatus.LinkDown)
            {
                // The interface is administratively down: nothing passes until it is brought up.
                _kernelDown = true;
                down++;
                continue;
            }

            // The kernel refused this frame (a header it does not accept): it never passes.
            refused++;
        }

        if (down > 0)
        {
            Counters.Count(DropReason.LinkDown, down);
        }

        if (refused > 0)
        {
            Counters.Count(DropReason.Malformed, refused);
        }

        Counters.Transmitted(sent, bytes);
        return k;
    }

    /// <inheritdoc/>
    public override void Flush()
    {
        // Every write went to the kernel at once.
    }

    /// <inheritdoc/>
    public override bool EnableWakeups() => false; // poll(2) on the descriptor is level-triggered: frames already queued wake at once.

    /// <inheritdoc/>
    public override int GetWakeupDescriptors(Span<FileDescriptor> descriptors)
    {
        // A deleted device's descriptor polls as always ready (POLLERR): never sleep on it.
        if (_device is { } device && !Deleted && descriptors.Length > 0)
        {
            descriptors[0] = device.Handle;
            return 1;
        }

        return 0;
    }

    // ---- Control plane ---------------------------------------------------------------------

    /// <summary>On the data path: the device is gone; the link change is raised on a pool thread, as a control-plane event.</summary>
    private void OnDeleted()
    {
        if (Interlocked.Exchange(ref _deleted, 1) != 0)
        {
            return;
        }

        ThreadPool.UnsafeQueueUserWorkItem(
            static port =>
            {
                port.Say("the TAP device was deleted");
                port.SetLink(LinkState.Down, "TAP device deleted");
            },
            this,
            preferLocal: false);
    }

    private static byte[] ToOctets(MacAddress mac)
    {
        var octets = new byte[MacAddress.Size];
        mac.WriteTo(octets);
        return octets;
    }

    private void FreeBuffers()
    {
        if (_slots is not null)
        {
            NativeMemory.AlignedFree(_slots);
            _slots = null;
        }

        if (_gatherScratch is not null)
        {
            NativeMemory.AlignedFree(_gatherScratch);
            _gatherScratch = null;
        }
    }

    /// <inheritdoc/>
    protected override void Dispose(bool disposing)
    {
        lock (_gate)
        {
            var device = _device;
            if (device is null)
            {
                return;
            }

            // Unpublish, then let the worker leave the round that may hold the buffers.
            _device = null;
            if (!WaitForDataPath())
            {
                Say($"the data path did not let go of the device within {DefaultQuiesceMilliseconds} ms; its buffers are kept");
                return;
            }

            // A device created here goes away with its descriptor; an attached one stays.
            device.Dispose();
            FreeBuffers();
            if (!Deleted)
            {
                SetLink(LinkState.Down, "closed");
            }
        }
    }
}
