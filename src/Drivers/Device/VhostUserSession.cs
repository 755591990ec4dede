using Rings.Linux.Plumbing;
using Rings.Linux.VhostUser;
using GuestMemoryTable = Rings.Memory.GuestMemory;

namespace Rings.Linux.Device;

/// <summary>What handling one message produced.</summary>
/// <param name="Reply">The encoded reply to send, if any.</param>
/// <param name="Close">True when the connection must be closed (an error that could not be NACKed).</param>
/// <param name="Error">Why the message failed, or null.</param>
public readonly record struct VhostUserOutcome(byte[]? Reply, bool Close, string? Error)
{
    /// <summary>True when the message succeeded.</summary>
    public bool Succeeded => Error is null;
}

/// <summary>
/// The back-end state machine of one front-end connection, with no socket: feed it decoded
/// messages (or raw bytes) and the descriptors that came with them, and send what it returns.
/// Dispatch is a table of handlers indexed by request. Every handler validates sizes, indices
/// and addresses; a failure is NACKed when REPLY_ACK allows, else the connection must close.
/// Disposing it stops every ring, unmaps every region and closes every descriptor it kept.
/// Not thread-safe: one thread drives a session.
/// </summary>
public sealed class VhostUserSession : IDisposable
{
    private static readonly Handler?[] Handlers = BuildHandlers();

    private readonly VhostUserBackendOptions _options;
    private readonly Vring[] _rings;
    private VhostMemoryMap? _memory;
    private FileDescriptor? _backendChannel;
    private bool _disposed;

    /// <summary>Creates a session with the given offer.</summary>
    /// <param name="options">What the device offers.</param>
    public VhostUserSession(VhostUserBackendOptions options)
    {
        _options = options ?? throw new ArgumentNullException(nameof(options));
        if (options.MaxQueuePairs is < 1 or > 128)
        {
            throw new ArgumentOutOfRangeException(nameof(options), options.MaxQueuePairs, "MaxQueuePairs must be 1 to 128");
        }

        if (options.MaxMemorySlots is < 1 or > GuestMemoryTable.MaxRegions)
        {
            throw new ArgumentOutOfRangeException(nameof(options), options.MaxMemorySlots, $"MaxMemorySlots must be 1 to {GuestMemoryTable.MaxRegions}");
        }

        _rings = new Vring[options.QueueCount];
        for (var i = 0; i < _rings.Length; i++)
        {
            _rings[i] = new Vring(i);
        }
    }

    private delegate string? Handler(VhostUserSession session, in VhostUserMessage message, List<FileDescriptor> fds, ref VhostUserMessage? reply);

    /// <summary>A ring started: the data path may use it. Raised on the thread driving the session.</summary>
    public event EventHandler<VhostQueueEventArgs>? QueueStarted;

    /// <summary>A ring stopped: the handler must return only once nothing touches the ring or its doorbells.</summary>
    public event EventHandler<VhostQueueEventArgs>? QueueStopped;

    /// <summary>A started ring was enabled or disabled (see <see cref="VhostQueue.Enabled"/>).</summary>
    public event EventHandler<VhostQueueEventArgs>? QueueEnabledChanged;

    /// <summary>True once SET_OWNER was received.</summary>
    public bool HasOwner { get; private set; }

    /// <summary>The features the front-end set (none before SET_FEATURES).</summary>
    public VirtioFeatures Features { get; private set; }

    /// <summary>The protocol features the front-end set.</summary>
    public VhostUserProtocolFeatures ProtocolFeatures { get; private set; }

    /// <summary>The device status last set (SET_STATUS).</summary>
    public byte Status { get; private set; }

    /// <summary>The mapped memory, or null before a memory table arrived.</summary>
    public VhostMemoryMap? Memory => _memory;

    /// <summary>Number of vrings the device has.</summary>
    public int QueueCount => _rings.Length;

    /// <summary>Messages handled.</summary>
    public long Messages { get; private set; }

    /// <summary>Messages that failed.</summary>
    public long Errors { get; private set; }

    /// <summary>The queue view of a started ring, or null while it is stopped.</summary>
    /// <param name="index">The vring index.</param>
    /// <returns>The started queue or null.</returns>
    public VhostQueue? StartedQueue(int index) => (uint)index < (uint)_rings.Length ? _rings[index].Active : null;

    /// <summary>
    /// Decodes and handles one raw message. Takes ownership of every descriptor in
    /// <paramref name="fds"/>: those kept are removed, the rest are closed before this returns.
    /// </summary>
    /// <param name="bytes">Header and payload.</param>
    /// <param name="fds">The descriptors that came with it; empty on return.</param>
    /// <returns>The reply to send and whether to close.</returns>
    public VhostUserOutcome Handle(ReadOnlySpan<byte> bytes, List<FileDescriptor> fds)
    {
        ArgumentNullException.ThrowIfNull(fds);
        var error = VhostUserCodec.DecodeRequest(bytes, fds.Count, out var message);
        if (error == VhostUserDecodeError.None)
        {
            return Handle(message, fds);
        }

        CloseAll(fds);
        Messages++;

        // A bad version or direction means nothing else in the header can be trusted.
        var trusted = error is not (VhostUserDecodeError.Truncated or VhostUserDecodeError.BadVersion or VhostUserDecodeError.BadReplyFlag or VhostUserDecodeError.SizeMismatch);
        return Fail(message, trusted, $"{DescribeRequest(message.Request)}: {VhostUserCodec.Describe(error)}");
    }

    /// <summary>
    /// Handles one decoded message. Takes ownership of every descriptor in <paramref name="fds"/>:
    /// those kept are removed, the rest are closed before this returns.
    /// </summary>
    /// <param name="message">The message (as <see cref="VhostUserCodec.DecodeRequest"/> produced it).</param>
    /// <param name="fds">The descriptors that came with it; empty on return.</param>
    /// <returns>The reply to send and whether to close.</returns>
    public VhostUserOutcome Handle(in VhostUserMessage message, List<FileDescriptor> fds)
    {
        ArgumentNullException.ThrowIfNull(fds);
        ObjectDisposedException.ThrowIf(_disposed, this);
        Messages++;
        try
        {
            var handler = (uint)message.Request < (uint)Handlers.Length ? Handlers[(int)message.Request] : null;
            if (handler is null)
            {
                return Fail(message, true, $"{DescribeRequest(message.Request)}: unknown or unsupported request");
            }

            if (message.Payload != VhostUserCodec.RequestPayload(message.Request) ||
                (message.Payload == VhostUserPayload.MemoryTable && message.Regions is null))
            {
                return Fail(message, true, $"{DescribeRequest(message.Request)}: payload shape does not match the request");
            }

            if (!VhostUserCodec.FdCountMatches(message, fds.Count))
            {
                return Fail(message, true, $"{DescribeRequest(message.Request)}: {VhostUserCodec.Describe(VhostUserDecodeError.WrongFdCount)} ({fds.Count})");
            }

            VhostUserMessage? reply = null;
            var error = handler(this, message, fds, ref reply);
            if (error is not null)
            {
                return Fail(message, true, $"{DescribeRequest(message.Request)}: {error}");
            }

            if (reply is { } r)
            {
                return new VhostUserOutcome(VhostUserCodec.Encode(r), false, null);
            }

            return AckWanted(message)
                ? new VhostUserOutcome(VhostUserCodec.Encode(VhostUserMessage.ReplyU64(message.Request, 0)), false, null)
                : default;
        }
        finally
        {
            CloseAll(fds);
        }
    }

    /// <summary>Stops every ring, unmaps the memory and closes every descriptor the session kept.</summary>
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        foreach (var v in _rings)
        {
            Discard(v);
            v.ClearDescriptors();
        }

        _memory?.Unmap();
        _memory = null;
        _backendChannel?.Dispose();
        _backendChannel = null;
    }

    private static string DescribeRequest(VhostUserRequest request) =>
        Enum.IsDefined(request) ? $"{request} ({(uint)request})" : $"request {(uint)request}";

    private static void CloseAll(List<FileDescriptor> fds)
    {
        foreach (var fd in fds)
        {
            fd.Dispose();
        }

        fds.Clear();
    }

    private static FileDescriptor Take(List<FileDescriptor> fds, int index)
    {
        var fd = fds[index];
        fds.RemoveAt(index);
        return fd;
    }

    private static Handler?[] BuildHandlers()
    {
        var t = new Handler?[41];
        t[(int)VhostUserRequest.GetFeatures] = static (VhostUserSession s, in VhostUserMessage m, List<FileDescriptor> f, ref VhostUserMessage? r) => s.GetFeatures(m, ref r);
        t[(int)VhostUserRequest.SetFeatures] = static (VhostUserSession s, in VhostUserMessage m, List<FileDescriptor> f, ref VhostUserMessage? r) => s.SetFeatures(m);
        t[(int)VhostUserRequest.SetOwner] = static (VhostUserSession s, in VhostUserMessage m, List<FileDescriptor> f, ref VhostUserMessage? r) => s.SetOwner();
        t[(int)VhostUserRequest.ResetOwner] = static (VhostUserSession s, in VhostUserMessage m, List<FileDescriptor> f, ref VhostUserMessage? r) => s.ResetOwner();
        t[(int)VhostUserRequest.SetMemTable] = static (VhostUserSession s, in VhostUserMessage m, List<FileDescriptor> f, ref VhostUserMessage? r) => s.SetMemTable(m, f);
        t[(int)VhostUserRequest.SetVringNum] = static (VhostUserSession s, in VhostUserMessage m, List<FileDescriptor> f, ref VhostUserMessage? r) => s.SetVringNum(m);
        t[(int)VhostUserRequest.SetVringAddr] = static (VhostUserSession s, in VhostUserMessage m, List<FileDescriptor> f, ref VhostUserMessage? r) => s.SetVringAddr(m);
        t[(int)VhostUserRequest.SetVringBase] = static (VhostUserSession s, in VhostUserMessage m, List<FileDescriptor> f, ref VhostUserMessage? r) => s.SetVringBase(m);
        t[(int)VhostUserRequest.GetVringBase] = static (VhostUserSession s, in VhostUserMessage m, List<FileDescriptor> f, ref VhostUserMessage? r) => s.GetVringBase(m, ref r);
        t[(int)VhostUserRequest.SetVringKick] = static (VhostUserSession s, in VhostUserMessage m, List<FileDescriptor> f, ref VhostUserMessage? r) => s.SetVringFile(m, f);
        t[(int)VhostUserRequest.SetVringCall] = static (VhostUserSession s, in VhostUserMessage m, List<FileDescriptor> f, ref VhostUserMessage? r) => s.SetVringFile(m, f);
        t[(int)VhostUserRequest.SetVringErr] = static (VhostUserSession s, in VhostUserMessage m, List<FileDescriptor> f, ref VhostUserMessage? r) => s.SetVringFile(m, f);
        t[(int)VhostUserRequest.GetProtocolFeatures] = static (VhostUserSession s, in VhostUserMessage m, List<FileDescriptor> f, ref VhostUserMessage? r) => s.GetProtocolFeatures(m, ref r);
        t[(int)VhostUserRequest.SetProtocolFeatures] = static (VhostUserSession s, in VhostUserMessage m, List<FileDescriptor> f, ref VhostUserMessage? r) => s.SetProtocolFeatures(m);
        t[(int)VhostUserRequest.GetQueueNum] = static (VhostUserSession s, in VhostUserMessage m, List<FileDescriptor> f, ref VhostUserMessage? r) => s.GetQueueNum(m, ref r);
        t[(int)VhostUserRequest.SetVringEnable] = static (VhostUserSession s, in VhostUserMessage m, List<FileDescriptor> f, ref VhostUserMessage? r) => s.SetVringEnable(m);
        t[(int)VhostUserRequest.SetBackendReqFd] = static (VhostUserSession s, in VhostUserMessage m, List<FileDescriptor> f, ref VhostUserMessage? r) => s.SetBackendReqFd(f);
        t[(int)VhostUserRequest.ResetDevice] = static (VhostUserSession s, in VhostUserMessage m, List<FileDescriptor> f, ref VhostUserMessage? r) => s.ResetDevice();
        t[(int)VhostUserRequest.GetMaxMemSlots] = static (VhostUserSession s, in VhostUserMessage m, List<FileDescriptor> f, ref VhostUserMessage? r) => s.GetMaxMemSlots(m, ref r);
        t[(int)VhostUserRequest.AddMemReg] = static (VhostUserSession s, in VhostUserMessage m, List<FileDescriptor> f, ref VhostUserMessage? r) => s.AddMemReg(m, f);
        t[(int)VhostUserRequest.RemMemReg] = static (VhostUserSession s, in VhostUserMessage m, List<FileDescriptor> f, ref VhostUserMessage? r) => s.RemMemReg(m);
        t[(int)VhostUserRequest.SetStatus] = static (VhostUserSession s, in VhostUserMessage m, List<FileDescriptor> f, ref VhostUserMessage? r) => s.SetStatus(m);
        t[(int)VhostUserRequest.GetStatus] = static (VhostUserSession s, in VhostUserMessage m, List<FileDescriptor> f, ref VhostUserMessage? r) => s.GetStatus(m, ref r);
        return t;
    }

    private bool Negotiated(VhostUserProtocolFeatures feature) => (ProtocolFeatures & feature) == feature;

    private bool AckWanted(in VhostUserMessage message) =>
        message.NeedsReply && Negotiated(VhostUserProtocolFeatures.ReplyAck) && !VhostUserCodec.HasExplicitReply(message.Request);

    private VhostUserOutcome Fail(in VhostUserMessage message, bool headerTrusted, string reason)
    {
        Errors++;
        if (headerTrusted && AckWanted(message))
        {
            _options.Log?.Invoke($"vhost-user: NACK {reason}");
            return new VhostUserOutcome(VhostUserCodec.Encode(VhostUserMessage.ReplyU64(message.Request, 1)), false, reason);
        }

        _options.Log?.Invoke($"vhost-user: closing connection: {reason}");
        return new VhostUserOutcome(null, true, reason);
    }

    private RingFormat Format => RingFormat.Of(Features);

    /// <summary>Without VHOST_USER_F_PROTOCOL_FEATURES rings start enabled; with it, SET_VRING_ENABLE decides.</summary>
    private bool EffectiveEnabled(Vring v) => v.Enabled || (Features & VhostUserConstants.ProtocolFeaturesBit) == 0;

    private string? Ring(uint index, out Vring ring)
    {
        if (index >= (uint)_rings.Length)
        {
            ring = null!;
            return $"vring index {index} out of range (the device has {_rings.Length})";
        }

        ring = _rings[index];
        return null;
    }

    // ---- Handlers -------------------------------------------------------------------------

    private string? GetFeatures(in VhostUserMessage m, ref VhostUserMessage? reply)
    {
        reply = VhostUserMessage.ReplyU64(m.Request, (ulong)_options.OfferedFeatures);
        return null;
    }

    private string? SetFeatures(in VhostUserMessage m)
    {
        var unknown = m.Value & ~(ulong)_options.OfferedFeatures;
        if (unknown != 0)
        {
            return $"features 0x{unknown:x} were not offered";
        }

        var features = (VirtioFeatures)m.Value;
        if (RingFormat.Of(features) != Format && _rings.Any(v => v.Ring is not null))
        {
            return "cannot change the ring format while rings run";
        }

        Features = features;
        return null;
    }

    private string? SetOwner()
    {
        HasOwner = true;
        return null;
    }

    private string? ResetOwner()
    {
        // Deprecated; vhost-user.rst recommends treating it as "disable all rings".
        foreach (var v in _rings)
        {
            Stop(v);
        }

        return null;
    }

    private string? GetProtocolFeatures(in VhostUserMessage m, ref VhostUserMessage? reply)
    {
        reply = VhostUserMessage.ReplyU64(m.Request, (ulong)_options.OfferedProtocolFeatures);
        return null;
    }

    private string? SetProtocolFeatures(in VhostUserMessage m)
    {
        var unknown = m.Value & ~(ulong)_options.OfferedProtocolFeatures;
        if (unknown != 0)
        {
            return $"protocol features 0x{unknown:x} were not offered";
        }

        ProtocolFeatures = (VhostUserProtocolFeatures)m.Value;
        return null;
    }

    private string? GetQueueNum(in VhostUserMessage m, ref VhostUserMessage? reply)
    {
        reply = VhostUserMessage.ReplyU64(m.Request, (ulong)_options.MaxQueuePairs);
        return null;
    }

    private string? SetMemTable(in VhostUserMessage m, List<FileDescriptor> fds)
    {
        var regions = m.Regions ?? [];
        var error = VhostMemoryMap.Validate(regions, VhostUserConstants.MaxMemTableRegions);
        if (error is not null)
        {
            return error;
        }

        error = VhostMemoryMap.TryMap(regions, fds, out var map);
        if (error is not null)
        {
            return error;
        }

        ReplaceMemory(map!, unmapOld: true);

        // The descriptors are no longer needed once mapped; the caller closes them.
        return StartAll();
    }

    private string? GetMaxMemSlots(in VhostUserMessage m, ref VhostUserMessage? reply)
    {
        if (!Negotiated(VhostUserProtocolFeatures.ConfigureMemSlots))
        {
            return "CONFIGURE_MEM_SLOTS was not negotiated";
        }

        reply = VhostUserMessage.ReplyU64(m.Request, (ulong)_options.MaxMemorySlots);
        return null;
    }

    private string? AddMemReg(in VhostUserMessage m, List<FileDescriptor> fds)
    {
        if (!Negotiated(VhostUserProtocolFeatures.ConfigureMemSlots))
        {
            return "CONFIGURE_MEM_SLOTS was not negotiated";
        }

        var existing = _memory?.Regions ?? [];
        var descriptions = existing.Select(r => r.Description).Append(m.Region).ToArray();
        var error = VhostMemoryMap.Validate(descriptions, _options.MaxMemorySlots);
        if (error is not null)
        {
            return error;
        }

        SharedMemory mapping;
        try
        {
            mapping = SharedMemory.Map(fds[0], m.Region.MmapOffset, m.Region.Size);
        }
        catch (IOException e)
        {
            return $"region cannot be mapped: {e.Message}";
        }

        var all = existing.Append(new MappedRegion(m.Region, mapping)).ToArray();
        error = VhostMemoryMap.TryBuild(all, out var map);
        if (error is not null)
        {
            mapping.Dispose();
            return error;
        }

        ReplaceMemory(map!, unmapOld: false);
        return StartAll();
    }

    private string? RemMemReg(in VhostUserMessage m)
    {
        if (!Negotiated(VhostUserProtocolFeatures.ConfigureMemSlots))
        {
            return "CONFIGURE_MEM_SLOTS was not negotiated";
        }

        var existing = _memory?.Regions ?? [];
        var target = m.Region;

        // vhost-user.rst: identified by guest address, user address and size; the offset is ignored.
        var victim = existing.FirstOrDefault(r =>
            r.Description.GuestPhysicalAddress == target.GuestPhysicalAddress &&
            r.Description.UserAddress == target.UserAddress &&
            r.Description.Size == target.Size);
        if (victim is null)
        {
            return $"no region at guest 0x{target.GuestPhysicalAddress:x} user 0x{target.UserAddress:x} size 0x{target.Size:x}";
        }

        var rest = existing.Where(r => !ReferenceEquals(r, victim)).ToArray();
        VhostMemoryMap? map = null;
        if (rest.Length > 0)
        {
            var error = VhostMemoryMap.TryBuild(rest, out map);
            if (error is not null)
            {
                return error;
            }
        }

        foreach (var v in _rings)
        {
            Discard(v);
        }

        _memory = map;
        victim.Mapping.Dispose();
        return StartAll();
    }

    private string? SetVringNum(in VhostUserMessage m)
    {
        var error = Ring(m.State.Index, out var v);
        if (error is not null)
        {
            return error;
        }

        if (v.Ring is not null)
        {
            return $"vring {v.Index} is running; stop it (GET_VRING_BASE) before resizing";
        }

        // The format may not be known yet (SET_FEATURES can come later): a size no format takes is
        // refused now, and the format's own rule once the features are set (again at start).
        var num = m.State.Num;
        if (!RingFormat.All.Any(f => f.IsValidSize(num)))
        {
            return $"queue size {num} is not valid for any ring format";
        }

        if (Features != VirtioFeatures.None && !Format.IsValidSize(m.State.Num))
        {
            return $"queue size {m.State.Num} is not {Format.SizeRule} ({Format} ring)";
        }

        v.Num = (int)m.State.Num;
        return TryStart(v);
    }

    private string? SetVringAddr(in VhostUserMessage m)
    {
        var a = m.Address;
        var error = Ring(a.Index, out var v);
        if (error is not null)
        {
            return error;
        }

        if ((a.Flags & ~VhostUserConstants.VringFlagLog) != 0)
        {
            return $"unknown vring address flags 0x{a.Flags:x}";
        }

        if (v.Ring is not null)
        {
            return $"vring {v.Index} is running; stop it before moving it";
        }

        var areas = new RingAreas(a.Descriptor, a.Avail, a.Used);

        // With memory and size known, a ring outside every region is refused now, not at start.
        if (_memory is not null && Format.IsValidSize(v.Num))
        {
            error = CheckAreas(areas, Format.Layout(v.Num));
            if (error is not null)
            {
                return error;
            }
        }

        v.Areas = areas;
        return TryStart(v);
    }

    private string? SetVringBase(in VhostUserMessage m)
    {
        var error = Ring(m.State.Index, out var v);
        if (error is not null)
        {
            return error;
        }

        if (v.Ring is not null)
        {
            return $"vring {v.Index} is running; stop it before setting its base";
        }

        // The queue size may not be known yet; positions past it are refused at start.
        if (!Format.IsValidBase(m.State.Num, RingFormat.MaxSize))
        {
            return $"base 0x{m.State.Num:x} is not a {Format} ring position (a split base fits 16 bits)";
        }

        v.Base = m.State.Num;
        return TryStart(v);
    }

    private string? GetVringBase(in VhostUserMessage m, ref VhostUserMessage? reply)
    {
        var error = Ring(m.State.Index, out var v);
        if (error is not null)
        {
            return error;
        }

        // The data path lets go first; only then is the position final.
        Suspend(v);
        var position = v.Ring is { } ring ? v.Format.EncodeBase(ring.Position) : v.Base ?? 0;
        Stop(v);
        reply = VhostUserMessage.ReplyState(m.Request, (uint)v.Index, position);
        return null;
    }

    private string? SetVringFile(in VhostUserMessage m, List<FileDescriptor> fds)
    {
        var error = Ring(m.FileIndex, out var v);
        if (error is not null)
        {
            return error;
        }

        EventFd? doorbell = null;
        if (!m.FileHasNoFd)
        {
            doorbell = new EventFd(Take(fds, 0));
        }

        // A running ring is paused while its doorbells change, so no thread uses a closed one.
        var wasActive = v.Active is not null;
        Suspend(v);
        switch (m.Request)
        {
            case VhostUserRequest.SetVringKick:
                v.Kick?.Dispose();
                v.Kick = doorbell;
                v.HasKick = true;
                break;
            case VhostUserRequest.SetVringCall:
                v.Call?.Dispose();
                v.Call = doorbell;
                break;
            default:
                v.Error?.Dispose();
                v.Error = doorbell;
                break;
        }

        return wasActive || m.Request == VhostUserRequest.SetVringKick ? TryStart(v) : null;
    }

    private string? SetVringEnable(in VhostUserMessage m)
    {
        var error = Ring(m.State.Index, out var v);
        if (error is not null)
        {
            return error;
        }

        if (m.State.Num > 1)
        {
            return $"enable must be 0 or 1, got {m.State.Num}";
        }

        v.Enabled = m.State.Num == 1;
        if (v.Active is { } q && q.Enabled != EffectiveEnabled(v))
        {
            q.Enabled = EffectiveEnabled(v);
            return Raise(QueueEnabledChanged, q);
        }

        return null;
    }

    private string? SetBackendReqFd(List<FileDescriptor> fds)
    {
        if (!Negotiated(VhostUserProtocolFeatures.BackendRequest))
        {
            return "BACKEND_REQ was not negotiated";
        }

        _backendChannel?.Dispose();
        _backendChannel = Take(fds, 0);
        return null;
    }

    private string? ResetDevice()
    {
        foreach (var v in _rings)
        {
            Discard(v);
            v.ClearDescriptors();
            v.Reset();
        }

        Features = VirtioFeatures.None;
        Status = 0;
        return null;
    }

    private string? SetStatus(in VhostUserMessage m)
    {
        if (m.Value > byte.MaxValue)
        {
            return $"status 0x{m.Value:x} does not fit 8 bits";
        }

        Status = (byte)m.Value;
        if (Status == 0)
        {
            // Writing 0 resets the device (virtio 1.2 section 2.1.1): every ring stops.
            foreach (var v in _rings)
            {
                Stop(v);
            }
        }

        return null;
    }

    private string? GetStatus(in VhostUserMessage m, ref VhostUserMessage? reply)
    {
        var status = Status;
        if (_rings.Any(v => v.Ring is { IsBroken: true }))
        {
            status |= DeviceStatus.NeedsReset;
        }

        reply = VhostUserMessage.ReplyU64(m.Request, status);
        return null;
    }

    // ---- Ring life cycle ------------------------------------------------------------------

    private string? CheckAreas(RingAreas areas, RingLayout layout)
    {
        var user = _memory!.User;
        if (!user.TryTranslate(areas.DescriptorArea, (ulong)layout.DescriptorAreaBytes, out _))
        {
            return $"descriptor area 0x{areas.DescriptorArea:x} (+{layout.DescriptorAreaBytes}) is outside every region";
        }

        if (!user.TryTranslate(areas.DriverArea, (ulong)layout.DriverAreaBytes, out _))
        {
            return $"driver area 0x{areas.DriverArea:x} (+{layout.DriverAreaBytes}) is outside every region";
        }

        if (!user.TryTranslate(areas.DeviceArea, (ulong)layout.DeviceAreaBytes, out _))
        {
            return $"device area 0x{areas.DeviceArea:x} (+{layout.DeviceAreaBytes}) is outside every region";
        }

        return null;
    }

    /// <summary>Starts the ring if it has size, addresses, kick, base and memory; resumes it if only paused.</summary>
    private string? TryStart(Vring v)
    {
        if (v.Ring is null)
        {
            if (v.Num == 0 || v.Areas is not { } areas || !v.HasKick || v.Base is not { } raw || _memory is null)
            {
                return null;
            }

            var format = Format;
            if (!format.IsValidSize(v.Num))
            {
                return $"vring {v.Index}: queue size {v.Num} is not valid for a {format} ring";
            }

            if (!format.IsValidBase(raw, v.Num))
            {
                return $"vring {v.Index}: base 0x{raw:x} points past a ring of {v.Num}";
            }

            var error = CheckAreas(areas, format.Layout(v.Num));
            if (error is not null)
            {
                return $"vring {v.Index}: {error}";
            }

            try
            {
                v.Ring = _options.RingFactory(new DeviceRingSetup(format, _memory.User, _memory.Physical, areas, v.Num, Features, format.DecodeBase(raw)));
                v.Format = format;
            }
            catch (ArgumentException e)
            {
                return $"vring {v.Index}: {e.Message}";
            }
        }

        if (v.Active is null)
        {
            var q = new VhostQueue(v.Index, v.Ring, Features, v.Kick, v.Call, v.Error, _memory!.Physical, EffectiveEnabled(v));
            v.Active = q;
            return Raise(QueueStarted, q);
        }

        return null;
    }

    private string? StartAll()
    {
        string? first = null;
        foreach (var v in _rings)
        {
            var error = TryStart(v);
            first ??= error;
        }

        return first;
    }

    /// <summary>Tells the data path to let go of the ring; the ring object and its position are kept.</summary>
    private void Suspend(Vring v)
    {
        if (v.Active is { } q)
        {
            v.Active = null;
            Raise(QueueStopped, q);
        }
    }

    /// <summary>Drops the ring object, remembering its position as the base to restart from.</summary>
    private void Discard(Vring v)
    {
        Suspend(v);
        if (v.Ring is { } ring)
        {
            v.Base = v.Format.EncodeBase(ring.Position);
            v.Ring = null;
        }
    }

    /// <summary>GET_VRING_BASE semantics: the ring stops and needs a new base and kick to start again.</summary>
    private void Stop(Vring v)
    {
        Discard(v);
        v.Kick?.Dispose();
        v.Kick = null;
        v.HasKick = false;
        v.Base = null;
    }

    private void ReplaceMemory(VhostMemoryMap map, bool unmapOld)
    {
        // Rings hold translations into the old tables: drop them (keeping positions) first.
        foreach (var v in _rings)
        {
            Discard(v);
        }

        var old = _memory;
        _memory = map;
        if (unmapOld)
        {
            old?.Unmap();
        }
    }

    private string? Raise(EventHandler<VhostQueueEventArgs>? handler, VhostQueue queue)
    {
        if (handler is null)
        {
            return null;
        }

        try
        {
            handler(this, new VhostQueueEventArgs(queue));
            return null;
        }
        catch (Exception e)
        {
            _options.Log?.Invoke($"vhost-user: queue {queue.Index} event handler failed: {e.Message}");
            return $"vring {queue.Index}: event handler failed: {e.Message}";
        }
    }

    /// <summary>Per-vring configuration as the front-end set it.</summary>
    private sealed class Vring
    {
        public Vring(int index)
        {
            Index = index;
        }

        public int Index { get; }

        public int Num { get; set; }

        public RingAreas? Areas { get; set; }

        public uint? Base { get; set; }

        public bool HasKick { get; set; }

        public EventFd? Kick { get; set; }

        public EventFd? Call { get; set; }

        public EventFd? Error { get; set; }

        public bool Enabled { get; set; }

        public IDeviceRing? Ring { get; set; }

        public RingFormat Format { get; set; }

        public VhostQueue? Active { get; set; }

        public void ClearDescriptors()
        {
            Kick?.Dispose();
            Call?.Dispose();
            Error?.Dispose();
            Kick = Call = Error = null;
            HasKick = false;
        }

        public void Reset()
        {
            Num = 0;
            Areas = null;
            Base = null;
            Enabled = false;
        }
    }
}
