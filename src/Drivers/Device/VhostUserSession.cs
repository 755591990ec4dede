using System.Buffers.Binary;
using Rings.Linux.Diagnostics;
using Rings.Linux.Plumbing;
using Rings.Linux.VhostUser;
using static Rings.Linux.VhostUser.VhostUserErrorCode;
using GuestMemoryTable = Rings.Memory.GuestMemory;

namespace Rings.Linux.Device;

/// <summary>What handling one message produced.</summary>
/// <param name="Reply">The reply to send (encode it with <see cref="VhostUserCodec"/>), if any.</param>
/// <param name="Close">True when the connection must be closed (an error that could not be NACKed).</param>
/// <param name="Error">Why the message failed, or no error.</param>
/// <param name="ReplyDescriptor">A descriptor to send with the reply (GET_INFLIGHT_FD's region); the session keeps owning it.</param>
public readonly record struct VhostUserOutcome(VhostUserMessage? Reply, bool Close, VhostUserError Error, FileDescriptor? ReplyDescriptor = null)
{
    /// <summary>True when the message succeeded.</summary>
    public bool Succeeded => !Error.IsError;
}

/// <summary>
/// The back-end state machine of one front-end connection, with no socket: feed it decoded
/// messages (or raw bytes) and the descriptors that came with them, and send what it returns.
/// Dispatch follows <see cref="VhostUserRequests"/>: the row checks the payload, the descriptors
/// and the vring index and state, then its handler validates values and addresses. A failure is
/// NACKed when REPLY_ACK allows, else the connection must close.
/// Disposing it stops every ring, unmaps every region and closes every descriptor it kept.
/// Not thread-safe: one thread drives a session.
/// </summary>
public sealed class VhostUserSession : IDisposable, IVhostUserHandlers
{
    private static readonly VhostUserError MemorySlotsNotNegotiated = new(NotNegotiated, "CONFIGURE_MEM_SLOTS was not negotiated");

    private readonly VhostUserBackendOptions _options;
    private readonly Vring[] _rings;
    private VhostMemoryMap? _memory;

    // ADD_MEM_REG of a region already mapped (same guest address, user address and size), counted
    // per region so that as many REM_MEM_REG of it are acked before it is unmapped.
    private readonly Dictionary<(ulong Guest, ulong User, ulong Size), int> _repeatedRegions = [];
    private FileDescriptor? _backendChannel;
    private InflightRegion? _inflight;
    private VhostUserError _closing;
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

    /// <summary>The shared inflight region (GET/SET_INFLIGHT_FD), or null.</summary>
    public InflightRegion? Inflight => _inflight;

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
        if (!error.IsError)
        {
            return Handle(message, fds);
        }

        CloseAll(fds);
        Messages++;

        // A bad version or direction means nothing else in the header can be trusted.
        var trusted = error.Code is not (Truncated or BadVersion or BadReplyFlag or SizeMismatch);
        return Fail(message, trusted, error);
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
            var row = VhostUserRequests.Find(message.Request);
            var error = row is null ? new VhostUserError(UnknownRequest, "unknown or unsupported request") : Admit(row, message, fds.Count);
            if (!error.IsError)
            {
                var call = new VhostUserCall(message, fds, row!.Vring == VhostUserVringRule.None ? -1 : (int)VhostUserRequestInfo.VringIndex(message));
                error = row.Handler(this, ref call);
                if (_closing.IsError)
                {
                    return Close(message, _closing);
                }

                if (!error.IsError)
                {
                    var outcome = Answer(row, message, call.Reply);
                    return call.ReplyFd is { } fd ? outcome with { ReplyDescriptor = fd } : outcome;
                }
            }

            return Fail(message, true, error);
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
        _inflight?.Dispose();
        _inflight = null;
        _backendChannel?.Dispose();
        _backendChannel = null;
    }

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

    private static VhostUserError Error(VhostUserErrorCode code, string detail) => new(code, detail);

    private bool Negotiated(VhostUserProtocolFeatures feature) => (ProtocolFeatures & feature) == feature;

    /// <summary>REPLY_ACK: whether a request that has no explicit reply gets an ack (or a NACK).</summary>
    private bool AckWanted(in VhostUserMessage message)
    {
        var replyAck = Negotiated(VhostUserProtocolFeatures.ReplyAck);
        return VhostUserRequests.Find(message.Request) is { } row
            ? row.Reply == VhostUserReplyRule.AckIfAsked && row.ReplyDue(message.NeedsReply, replyAck)
            : message.NeedsReply && replyAck; // an unknown request is NACKed when it asks for a reply
    }

    /// <summary>The row's checks: payload shape, descriptors, vring index, and a stopped ring where the row needs one.</summary>
    private VhostUserError Admit(VhostUserRequestInfo row, in VhostUserMessage message, int descriptors)
    {
        var error = row.Check(message, descriptors, _rings.Length);
        if (!error.IsError && row.Vring == VhostUserVringRule.Stopped && _rings[VhostUserRequestInfo.VringIndex(message)].Ring is { })
        {
            error = Error(RingRunning, $"vring {VhostUserRequestInfo.VringIndex(message)} is running; stop it (GET_VRING_BASE) first");
        }

        return error;
    }

    /// <summary>The reply rule of the row: the handler's reply, an ack when one is due, or nothing.</summary>
    private VhostUserOutcome Answer(VhostUserRequestInfo row, in VhostUserMessage message, VhostUserMessage? reply)
    {
        if (row.Reply == VhostUserReplyRule.Always)
        {
            return reply is { } body
                ? new VhostUserOutcome(body, false, default)
                : Fail(message, true, new VhostUserError(InternalError, "the handler produced no reply"));
        }

        return AckWanted(message) ? new VhostUserOutcome(VhostUserMessage.ReplyU64(message.Request, 0), false, default) : default;
    }

    private VhostUserOutcome Fail(in VhostUserMessage message, bool headerTrusted, VhostUserError error)
    {
        if (headerTrusted && message.Request == VhostUserRequest.GetConfig)
        {
            // A refused GET_CONFIG is answered with an empty body (vhost-user.rst), not a closed connection.
            Errors++;
            error = error.About(message.Request);
            RingsLog.ProtocolError(_options.Logger, "GET_CONFIG refused", error.ToString());
            return new VhostUserOutcome(VhostUserMessage.ReplyConfig(null), false, error);
        }

        if (headerTrusted && AckWanted(message))
        {
            Errors++;
            error = error.About(message.Request);
            RingsLog.ProtocolError(_options.Logger, "NACK", error.ToString());
            return new VhostUserOutcome(VhostUserMessage.ReplyU64(message.Request, 1), false, error);
        }

        return Close(message, error);
    }

    private VhostUserOutcome Close(in VhostUserMessage message, VhostUserError error)
    {
        Errors++;
        error = error.About(message.Request);
        RingsLog.ProtocolError(_options.Logger, "closing connection", error.ToString());
        return new VhostUserOutcome(null, true, error);
    }

    private RingFormat Format => RingFormat.Of(Features);

    /// <summary>Without VHOST_USER_F_PROTOCOL_FEATURES rings start enabled; with it, SET_VRING_ENABLE decides.</summary>
    private bool EffectiveEnabled(Vring v) => v.Enabled || (Features & VhostUserConstants.ProtocolFeaturesBit) == 0;

    // ---- Handlers (one per row of VhostUserRequests) ----------------------------------------

    VhostUserError IVhostUserHandlers.GetFeatures(ref VhostUserCall c)
    {
        c.Reply = VhostUserMessage.ReplyU64(c.Message.Request, (ulong)_options.OfferedFeatures);
        return default;
    }

    VhostUserError IVhostUserHandlers.SetFeatures(ref VhostUserCall c)
    {
        ref readonly var m = ref c.Message;
        var unknown = m.Value & ~(ulong)_options.OfferedFeatures;
        if (unknown != 0)
        {
            return Error(NotOffered, $"features 0x{unknown:x} were not offered");
        }

        var features = (VirtioFeatures)m.Value;
        if (RingFormat.Of(features) != Format && _rings.Any(v => v.Ring is not null))
        {
            return Error(RingRunning, "cannot change the ring format while rings run");
        }

        Features = features;
        return default;
    }

    VhostUserError IVhostUserHandlers.SetOwner(ref VhostUserCall c)
    {
        HasOwner = true;
        return default;
    }

    VhostUserError IVhostUserHandlers.ResetOwner(ref VhostUserCall c)
    {
        // Deprecated; vhost-user.rst recommends treating it as "disable all rings".
        foreach (var v in _rings)
        {
            Stop(v);
        }

        return default;
    }

    VhostUserError IVhostUserHandlers.GetProtocolFeatures(ref VhostUserCall c)
    {
        c.Reply = VhostUserMessage.ReplyU64(c.Message.Request, (ulong)_options.OfferedProtocolFeatures);
        return default;
    }

    VhostUserError IVhostUserHandlers.SetProtocolFeatures(ref VhostUserCall c)
    {
        var unknown = c.Message.Value & ~(ulong)_options.OfferedProtocolFeatures;
        if (unknown != 0)
        {
            return Error(NotOffered, $"protocol features 0x{unknown:x} were not offered");
        }

        ProtocolFeatures = (VhostUserProtocolFeatures)c.Message.Value;
        return default;
    }

    VhostUserError IVhostUserHandlers.GetQueueNum(ref VhostUserCall c)
    {
        c.Reply = VhostUserMessage.ReplyU64(c.Message.Request, (ulong)_options.MaxQueuePairs);
        return default;
    }

    VhostUserError IVhostUserHandlers.SetMemTable(ref VhostUserCall c)
    {
        var regions = c.Message.Regions ?? [];
        var error = VhostMemoryMap.Validate(regions, Math.Min(VhostUserConstants.MaxMemTableRegions, _options.MaxMemorySlots));
        if (!error.IsError)
        {
            error = CheckMemory(regions, c.Fds);
        }

        if (!error.IsError)
        {
            error = VhostMemoryMap.TryMap(regions, c.Fds, out var map);
            if (!error.IsError)
            {
                ReplaceMemory(map);

                // The descriptors are no longer needed once mapped; the caller closes them.
                error = StartAll();
            }
        }

        return error;
    }

    // The budget and the seals, before anything is mapped. fds are the files of the regions being
    // added (the last ones of regions).
    private VhostUserError CheckMemory(IReadOnlyList<MemoryRegionDescription> regions, IReadOnlyList<FileDescriptor> fds)
    {
        var error = VhostMemoryMap.CheckBudget(regions, _options.MaxMemoryBytes, _inflight?.Length ?? 0);
        return error.IsError ? error : VhostMemoryMap.CheckSealed(fds, _options.TrustUnsealedMemory);
    }

    VhostUserError IVhostUserHandlers.GetMaxMemSlots(ref VhostUserCall c)
    {
        if (!Negotiated(VhostUserProtocolFeatures.ConfigureMemSlots))
        {
            return MemorySlotsNotNegotiated;
        }

        c.Reply = VhostUserMessage.ReplyU64(c.Message.Request, (ulong)_options.MaxMemorySlots);
        return default;
    }

    VhostUserError IVhostUserHandlers.AddMemReg(ref VhostUserCall c)
    {
        if (!Negotiated(VhostUserProtocolFeatures.ConfigureMemSlots))
        {
            return MemorySlotsNotNegotiated;
        }

        var region = c.Message.Region;
        var existing = _memory?.Regions ?? [];
        if (existing.Any(r => SameRegion(r.Description, region)))
        {
            // QEMU before 8.1 sends the memory table once per queue pair with several pairs (one
            // vhost device each), so every region is added again: the same region, already
            // mapped, is acked and counted, not refused as an overlap.
            var key = (region.GuestPhysicalAddress, region.UserAddress, region.Size);
            _repeatedRegions[key] = _repeatedRegions.GetValueOrDefault(key) + 1;
            return default;
        }

        var descriptions = existing.Select(r => r.Description).Append(region).ToArray();
        var error = VhostMemoryMap.Validate(descriptions, _options.MaxMemorySlots);
        if (!error.IsError)
        {
            error = CheckMemory(descriptions, c.Fds);
        }

        if (error.IsError)
        {
            return error;
        }

        SharedMemory mapping;
        try
        {
            mapping = SharedMemory.Map(c.Fds[0], region.MmapOffset, region.Size);
        }
        catch (IOException e)
        {
            return Error(MapFailed, $"region cannot be mapped: {e.Message}");
        }

        var all = existing.Append(new MappedRegion(region, mapping)).ToArray();
        error = VhostMemoryMap.TryBuild(all, out var map);
        if (error.IsError)
        {
            mapping.Dispose();
            return error;
        }

        // The new map holds the regions it shares with the old one.
        ReplaceMemory(map);
        return StartAll();
    }

    VhostUserError IVhostUserHandlers.RemMemReg(ref VhostUserCall c)
    {
        if (!Negotiated(VhostUserProtocolFeatures.ConfigureMemSlots))
        {
            return MemorySlotsNotNegotiated;
        }

        var existing = _memory?.Regions ?? [];
        var target = c.Message.Region;

        // vhost-user.rst: identified by guest address, user address and size; the offset is ignored.
        var victim = existing.FirstOrDefault(r => SameRegion(r.Description, target));
        if (victim is null)
        {
            return Error(BadRegion, $"no region at guest 0x{target.GuestPhysicalAddress:x} user 0x{target.UserAddress:x} size 0x{target.Size:x}");
        }

        var key = (target.GuestPhysicalAddress, target.UserAddress, target.Size);
        if (_repeatedRegions.TryGetValue(key, out var repeats))
        {
            // Added more than once (see AddMemReg): the last removal unmaps it.
            if (repeats == 1)
            {
                _repeatedRegions.Remove(key);
            }
            else
            {
                _repeatedRegions[key] = repeats - 1;
            }

            return default;
        }

        var rest = existing.Where(r => !ReferenceEquals(r, victim)).ToArray();
        VhostMemoryMap? map = null;
        if (rest.Length > 0)
        {
            var error = VhostMemoryMap.TryBuild(rest, out map);
            if (error.IsError)
            {
                return error;
            }
        }

        // The victim is unmapped with the old map, once nothing holds that any more.
        ReplaceMemory(map);
        return StartAll();
    }

    VhostUserError IVhostUserHandlers.SetVringNum(ref VhostUserCall c)
    {
        ref readonly var m = ref c.Message;
        var v = _rings[c.Vring];

        // The format may not be known yet (SET_FEATURES can come later): a size no format takes is
        // refused now, and the format's own rule once the features are set (again at start).
        var num = m.State.Num;
        if (!RingFormat.All.Any(f => f.IsValidSize(num)))
        {
            return Error(QueueSizeInvalid, $"queue size {num} is not valid for any ring format");
        }

        if (Features != VirtioFeatures.None && !Format.IsValidSize(m.State.Num))
        {
            return Error(QueueSizeInvalid, $"queue size {m.State.Num} is not {Format.SizeRule} ({Format} ring)");
        }

        v.Num = (int)m.State.Num;
        return TryStart(v);
    }

    VhostUserError IVhostUserHandlers.SetVringAddr(ref VhostUserCall c)
    {
        var a = c.Message.Address;
        var v = _rings[c.Vring];
        if ((a.Flags & ~VhostUserConstants.VringFlagLog) != 0)
        {
            return Error(ReservedBitsSet, $"unknown vring address flags 0x{a.Flags:x}");
        }

        var areas = new RingAreas(a.Descriptor, a.Avail, a.Used);

        // With memory and size known, a ring outside every region is refused now, not at start.
        if (_memory is not null && Format.IsValidSize(v.Num))
        {
            var error = CheckAreas(areas, Format.Layout(v.Num));
            if (error.IsError)
            {
                return error;
            }
        }

        v.Areas = areas;
        return TryStart(v);
    }

    VhostUserError IVhostUserHandlers.SetVringBase(ref VhostUserCall c)
    {
        ref readonly var m = ref c.Message;
        var v = _rings[c.Vring];

        // The queue size may not be known yet; positions past it are refused at start.
        if (!Format.IsValidBase(m.State.Num, RingFormat.MaxSize))
        {
            return Error(RingBaseInvalid, $"base 0x{m.State.Num:x} is not a {Format} ring position (a split base fits 16 bits)");
        }

        v.Base = m.State.Num;
        return TryStart(v);
    }

    VhostUserError IVhostUserHandlers.GetVringBase(ref VhostUserCall c)
    {
        var v = _rings[c.Vring];

        // The data path lets go first; only then is the position final.
        Suspend(v);
        var position = v.Ring is { } ring ? v.Format.EncodeBase(ring.Position) : v.Base ?? 0;
        Stop(v);
        c.Reply = VhostUserMessage.ReplyState(c.Message.Request, (uint)v.Index, position);
        return default;
    }

    VhostUserError IVhostUserHandlers.SetVringFile(ref VhostUserCall c)
    {
        ref readonly var m = ref c.Message;
        var v = _rings[c.Vring];
        EventFd? doorbell = null;
        if (!m.FileHasNoFd)
        {
            // A doorbell is an eventfd and nothing else: a pipe or a socket could block the
            // thread that rings or reads it. Refused, it stays in the list and is closed.
            doorbell = EventFd.FromPeer(c.Fds[0], out var kind);
            if (doorbell is null)
            {
                return Error(WrongDescriptorType, $"vring {v.Index}: the {Doorbell(m.Request)} is {kind}, not an eventfd");
            }

            Take(c.Fds, 0);
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

        return wasActive || m.Request == VhostUserRequest.SetVringKick ? TryStart(v) : default;
    }

    private static string Doorbell(VhostUserRequest request) => request switch
    {
        VhostUserRequest.SetVringKick => "kick",
        VhostUserRequest.SetVringCall => "call",
        _ => "error descriptor",
    };

    VhostUserError IVhostUserHandlers.SetVringEnable(ref VhostUserCall c)
    {
        var num = c.Message.State.Num;
        var v = _rings[c.Vring];
        if (num > 1)
        {
            return Error(ValueOutOfRange, $"enable must be 0 or 1, got {num}");
        }

        v.Enabled = num == 1;
        if (v.Active is { } q && q.Enabled != EffectiveEnabled(v))
        {
            q.Enabled = EffectiveEnabled(v);
            return Raise(QueueEnabledChanged, new VhostQueueEventArgs(q));
        }

        return default;
    }

    VhostUserError IVhostUserHandlers.SetBackendReqFd(ref VhostUserCall c)
    {
        if (!Negotiated(VhostUserProtocolFeatures.BackendRequest))
        {
            return Error(NotNegotiated, "BACKEND_REQ was not negotiated");
        }

        _backendChannel?.Dispose();
        _backendChannel = Take(c.Fds, 0);
        return default;
    }

    VhostUserError IVhostUserHandlers.GetConfig(ref VhostUserCall c)
    {
        if (!Negotiated(VhostUserProtocolFeatures.Config))
        {
            return Error(NotNegotiated, "CONFIG was not negotiated");
        }

        var access = c.Message.Config!.Value;
        if (access.Flags > 1)
        {
            return Error(ValueOutOfRange, $"config flags 0x{access.Flags:x}; 0 (front-end) or 1 (migration) allowed");
        }

        // 5.1.4: the virtio-net config space; offset and size checked against it, never trusted.
        if (_options.NetConfig.TryRead(access.Offset, access.Size, out var bytes) is { } refused)
        {
            return Error(ValueOutOfRange, refused);
        }

        c.Reply = VhostUserMessage.ReplyConfig(access with { Data = bytes });
        return default;
    }

    VhostUserError IVhostUserHandlers.SetConfig(ref VhostUserCall c)
    {
        if (!Negotiated(VhostUserProtocolFeatures.Config))
        {
            return Error(NotNegotiated, "CONFIG was not negotiated");
        }

        // 5.1.4: every field of the virtio-net config space is read-only for the driver. A write of
        // what is already there changes nothing and is accepted; any other is refused.
        var access = c.Message.Config!.Value;
        if (_options.NetConfig.TryRead(access.Offset, access.Size, out var current) is { } refused)
        {
            return Error(ValueOutOfRange, refused);
        }

        return current.AsSpan().SequenceEqual(access.Data)
            ? default
            : Error(Refused, $"config write of {access.Size} bytes at offset {access.Offset} refused: nothing in the virtio-net config space is writable");
    }

    VhostUserError IVhostUserHandlers.GetInflightFd(ref VhostUserCall c)
    {
        var error = CheckInflightRequest(c.Message.Inflight, exactSize: false);
        if (!error.IsError)
        {
            error = CheckInflightBudget(InflightRegion.Bytes(Format, c.Message.Inflight.NumQueues, c.Message.Inflight.QueueSize));
        }

        if (error.IsError)
        {
            return error;
        }

        // A fresh region for the rings' format, sealed; the front-end keeps it across our restarts.
        InflightRegion region;
        try
        {
            region = InflightRegion.Create(Format, c.Message.Inflight.NumQueues, c.Message.Inflight.QueueSize);
        }
        catch (IOException e)
        {
            return Error(MapFailed, $"inflight region cannot be created: {e.Message}");
        }

        _inflight?.Dispose();
        _inflight = region;
        c.Reply = VhostUserMessage.ReplyInflight(c.Message.Request, region.Description);
        c.ReplyFd = region.Handle;
        return default;
    }

    VhostUserError IVhostUserHandlers.SetInflightFd(ref VhostUserCall c)
    {
        var description = c.Message.Inflight;
        var error = CheckInflightRequest(description, exactSize: true);
        if (!error.IsError)
        {
            error = CheckInflightBudget(description.MmapSize);
        }

        if (error.IsError)
        {
            return error;
        }

        error = InflightRegion.TryMap(c.Fds[0], description, Format, out var region);
        if (error.IsError)
        {
            return error;
        }

        _inflight?.Dispose();
        _inflight = region;
        return default;
    }

    // The inflight region (which replaces any the front-end had) counts against the same budget as
    // its memory: a back-end's GET_INFLIGHT_FD region is the process's own memory, every page of it
    // written when it is laid out.
    private VhostUserError CheckInflightBudget(ulong bytes) =>
        VhostMemoryMap.CheckBudget([.. (_memory?.Regions ?? []).Select(r => r.Description)], _options.MaxMemoryBytes, bytes);

    private VhostUserError CheckInflightRequest(InflightDescription description, bool exactSize)
    {
        if (!Negotiated(VhostUserProtocolFeatures.InflightShmfd))
        {
            return Error(NotNegotiated, "INFLIGHT_SHMFD was not negotiated");
        }

        if (_rings.Any(v => v.Ring is not null))
        {
            return Error(RingRunning, "the inflight region changes only while every ring is stopped");
        }

        return InflightRegion.Validate(description, Format, _rings.Length, exactSize);
    }

    VhostUserError IVhostUserHandlers.ResetDevice(ref VhostUserCall c)
    {
        foreach (var v in _rings)
        {
            Discard(v);
            v.ClearDescriptors();
            v.Reset();
        }

        Features = VirtioFeatures.None;
        Status = 0;
        _inflight?.Dispose();
        _inflight = null;
        return default;
    }

    VhostUserError IVhostUserHandlers.SetStatus(ref VhostUserCall c)
    {
        var value = c.Message.Value;
        if (value > byte.MaxValue)
        {
            return Error(ValueOutOfRange, $"status 0x{value:x} does not fit 8 bits");
        }

        Status = (byte)value;
        if (Status == 0)
        {
            // Writing 0 resets the device (virtio 1.2 section 2.1.1): every ring stops.
            foreach (var v in _rings)
            {
                Stop(v);
            }
        }

        return default;
    }

    VhostUserError IVhostUserHandlers.GetStatus(ref VhostUserCall c)
    {
        var status = Status;
        if (_rings.Any(v => v.Ring is { IsBroken: true }))
        {
            status |= DeviceStatus.NeedsReset;
        }

        c.Reply = VhostUserMessage.ReplyU64(c.Message.Request, status);
        return default;
    }

    // ---- Ring life cycle ------------------------------------------------------------------

    private VhostUserError CheckAreas(RingAreas areas, RingLayout layout)
    {
        var user = _memory!.User;
        if (!user.TryTranslate(areas.DescriptorArea, (ulong)layout.DescriptorAreaBytes, out _))
        {
            return Error(BadRingAddress, $"descriptor area 0x{areas.DescriptorArea:x} (+{layout.DescriptorAreaBytes}) is outside every region");
        }

        if (!user.TryTranslate(areas.DriverArea, (ulong)layout.DriverAreaBytes, out _))
        {
            return Error(BadRingAddress, $"driver area 0x{areas.DriverArea:x} (+{layout.DriverAreaBytes}) is outside every region");
        }

        if (!user.TryTranslate(areas.DeviceArea, (ulong)layout.DeviceAreaBytes, out _))
        {
            return Error(BadRingAddress, $"device area 0x{areas.DeviceArea:x} (+{layout.DeviceAreaBytes}) is outside every region");
        }

        return default;
    }

    /// <summary>Starts the ring if it has size, addresses, kick, base and memory; resumes it if only paused.</summary>
    private VhostUserError TryStart(Vring v)
    {
        if (v.Ring is null)
        {
            if (v.Num == 0 || v.Areas is not { } areas || !v.HasKick || v.Base is not { } raw || _memory is null)
            {
                return default;
            }

            var format = Format;
            if (!format.IsValidSize(v.Num))
            {
                return Error(QueueSizeInvalid, $"vring {v.Index}: queue size {v.Num} is not valid for a {format} ring");
            }

            if (!format.IsValidBase(raw, v.Num))
            {
                return Error(RingBaseInvalid, $"vring {v.Index}: base 0x{raw:x} points past a ring of {v.Num}");
            }

            var error = CheckAreas(areas, format.Layout(v.Num));
            if (error.IsError)
            {
                return error with { Detail = $"vring {v.Index}: {error.Detail}" };
            }

            var position = format.DecodeBase(raw);
            if (format == RingFormat.Split && !Negotiated(VhostUserProtocolFeatures.InflightShmfd)
                && _memory.User.TryGetSpan(areas.DeviceArea + 2, sizeof(ushort), out var usedIdx))
            {
                // A split ring's base is only the next available index; the used index lives in
                // the ring. A front-end that restarts its back-end without knowing the position
                // (DPDK's virtio-user as a server sends 0) would have the ring start that many
                // buffers behind used.idx, which reads as the driver running more than a ring
                // ahead. As DPDK's vhost library does, resume where used.idx says: buffers that
                // were fetched but not used are fetched again. Read once; any value is only a
                // position, checked like every other against avail.idx.
                var used = BinaryPrimitives.ReadUInt16LittleEndian(usedIdx);
                if (used != position.AvailIndex)
                {
                    RingsLog.RingResumed(_options.Logger, v.Index, position.AvailIndex, used);
                    position = new RingPosition(used);
                }
            }

            try
            {
                v.Ring = Track(v, _options.RingFactory(new DeviceRingSetup(format, _memory.User, _memory.Physical, areas, v.Num, Features, position)), areas);
                v.Format = format;
            }
            catch (ArgumentException e)
            {
                return Error(BadRingAddress, $"vring {v.Index}: {e.Message}");
            }
        }

        if (v.Active is null)
        {
            var q = new VhostQueue(v.Index, v.Ring, Features, v.Kick, v.Call, v.Error, _memory!, EffectiveEnabled(v), v.Ring is InflightDeviceRing ? _inflight : null);
            v.Active = q;
            return Raise(QueueStarted, new VhostQueueEventArgs(q));
        }

        return default;
    }

    /// <summary>
    /// With an inflight region, wraps the ring so it records what it fetches, resuming where the
    /// region says the previous back-end stopped. A ring the region does not fit runs untracked.
    /// </summary>
    private IDeviceRing Track(Vring v, IDeviceRing ring, RingAreas areas)
    {
        if (_inflight is not { } region || !Negotiated(VhostUserProtocolFeatures.InflightShmfd))
        {
            return ring;
        }

        if (region.Format != Format || v.Index >= region.Queues || v.Num > region.QueueSize)
        {
            Diagnostics.RingsLog.Inflight(_options.Logger, $"vring {v.Index} runs without inflight tracking (a {Format} ring of {v.Num}; the region tracks {region.Queues} {region.Format} queues of {region.QueueSize})");
            return ring;
        }

        var tracked = new InflightDeviceRing(ring, region.Queue(v.Index), _memory!.User, areas, Features, line => Diagnostics.RingsLog.Inflight(_options.Logger, line));
        if (!tracked.Fresh)
        {
            Diagnostics.RingsLog.Inflight(_options.Logger, $"vring {v.Index} resumes at {tracked.Resume} with {tracked.InflightAtStart} buffers in flight{(tracked.LastBatchPublished ? ", the last batch published" : string.Empty)}");
        }

        return tracked;
    }

    private VhostUserError StartAll()
    {
        VhostUserError first = default;
        foreach (var v in _rings)
        {
            var error = TryStart(v);
            first = first.IsError ? first : error;
        }

        return first;
    }

    /// <summary>
    /// Tells the data path to let go of the ring; the ring object and its position are kept. A data
    /// path that could not let go in time (a doorbell the front-end controls blocked it) leaves the
    /// ring broken and the connection closing: its position cannot be trusted any more.
    /// </summary>
    private void Suspend(Vring v)
    {
        if (v.Active is { } q)
        {
            v.Active = null;
            var e = new VhostQueueEventArgs(q, _options.StopTimeoutMilliseconds);
            Raise(QueueStopped, e);
            if (e.NotStopped is { } why)
            {
                q.Ring.MarkBroken(BrokenReason.DataPathStuck);
                if (!_closing.IsError)
                {
                    _closing = Error(VhostUserErrorCode.Timeout, $"vring {q.Index}: the data path did not let go within {_options.StopTimeoutMilliseconds} ms ({why}); the ring is broken and the connection closes");
                }
            }
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

    private static bool SameRegion(MemoryRegionDescription a, MemoryRegionDescription b) =>
        a.GuestPhysicalAddress == b.GuestPhysicalAddress && a.UserAddress == b.UserAddress && a.Size == b.Size;

    private void ReplaceMemory(VhostMemoryMap? map)
    {
        // Rings hold translations into the old tables: drop them (keeping positions) first.
        foreach (var v in _rings)
        {
            Discard(v);
        }

        var old = _memory;
        _memory = map;
        old?.Unmap();

        // A region gone (a new table, the last removal) takes its repeat count with it.
        foreach (var key in _repeatedRegions.Keys.ToArray())
        {
            if (map is null || !map.Regions.Any(r => r.Description.GuestPhysicalAddress == key.Guest && r.Description.UserAddress == key.User && r.Description.Size == key.Size))
            {
                _repeatedRegions.Remove(key);
            }
        }
    }

    private VhostUserError Raise(EventHandler<VhostQueueEventArgs>? handler, VhostQueueEventArgs args)
    {
        var queue = args.Queue;
        if (handler is null)
        {
            return default;
        }

        try
        {
            handler(this, args);
            return default;
        }
        catch (Exception e)
        {
            RingsLog.HandlerFailed(_options.Logger, $"vhost-user: queue {queue.Index} event", e.Message);
            return Error(HandlerFailed, $"vring {queue.Index}: event handler failed: {e.Message}");
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
