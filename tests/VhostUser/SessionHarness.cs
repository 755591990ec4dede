using Rings.Linux.Device;
using Rings.Linux.Plumbing;
using Rings.Linux.VhostUser;
using Rings.Memory;
using Rings.Split;

namespace Rings.Tests.VhostUser;

/// <summary>What one message got from the back-end: the reply's bytes, whether the connection closed, and the error.</summary>
internal readonly record struct HarnessOutcome(byte[]? Reply, bool Close, VhostUserError Error)
{
    public bool Succeeded => !Error.IsError;
}

/// <summary>
/// Plays a front-end against a <see cref="VhostUserSession"/> without a socket: one memfd region
/// whose guest-physical base differs from its user address, so both translation tables are exercised.
/// Rings sit at 64 KiB steps from the start; buffers from <see cref="BufferOffset"/>.
/// </summary>
internal sealed class SessionHarness : IDisposable
{
    public const ulong GuestBase = 0x4000_0000;
    public const ulong RingStride = 0x10000;
    public const ulong BufferOffset = 0x80000;

    private readonly VhostUserChannel? _channel;
    private readonly List<FileDescriptor> _replyFds = [];

    /// <summary>Plays the front-end over a socket to a running back-end instead of in-process.</summary>
    /// <param name="socketPath">The back-end's socket.</param>
    /// <param name="memoryBytes">Size of the one region.</param>
    /// <param name="memoryFile">The region's file (a hostile front-end's, unsealed); a sealed memfd by default.</param>
    public SessionHarness(string socketPath, ulong memoryBytes = 1 << 20, FileDescriptor? memoryFile = null)
        : this((VhostUserBackendOptions?)null, memoryBytes, memoryFile)
    {
        _channel = new VhostUserChannel(UnixSocket.Connect(socketPath));
    }

    public SessionHarness(VhostUserBackendOptions? options = null, ulong memoryBytes = 1 << 20, FileDescriptor? memoryFile = null)
    {
        Options = options ?? new VhostUserBackendOptions();
        Memory = memoryFile is null ? SharedMemory.Create(memoryBytes) : SharedMemory.Map(memoryFile, 0, memoryBytes);
        MemoryFile = memoryFile ?? Memory.Handle!;
        Session = new VhostUserSession(Options);
        Kicks = Enumerable.Range(0, Session.QueueCount).Select(_ => EventFd.Create()).ToArray();
        Calls = Enumerable.Range(0, Session.QueueCount).Select(_ => EventFd.Create()).ToArray();
        Session.QueueStarted += (_, e) =>
        {
            Events.Add($"start {e.Queue.Index}");
            Running[e.Queue.Index] = e.Queue;
        };
        Session.QueueStopped += (_, e) =>
        {
            Events.Add($"stop {e.Queue.Index}");
            Assert.Same(Running[e.Queue.Index], e.Queue);
            Running.Remove(e.Queue.Index);
        };
        Session.QueueEnabledChanged += (_, e) => Events.Add($"enable {e.Queue.Index} {e.Queue.Enabled}");
    }

    public VhostUserBackendOptions Options { get; }

    public SharedMemory Memory { get; }

    /// <summary>The file sent as the region's descriptor.</summary>
    public FileDescriptor MemoryFile { get; }

    public VhostUserSession Session { get; }

    public EventFd[] Kicks { get; }

    public EventFd[] Calls { get; }

    public List<string> Events { get; } = [];

    public Dictionary<int, VhostQueue> Running { get; } = [];

    public bool ReplyAck { get; private set; }

    public ulong UserBase => (ulong)Memory.HostAddress;

    public GuestMemory Guest => new(Memory.RegionAt(GuestBase));

    public MemoryRegionDescription Region => new(GuestBase, Memory.Length, UserBase, 0);

    /// <summary>Hands the session duplicates of <paramref name="fds"/> (it owns and closes what it gets).</summary>
    public HarnessOutcome Send(in VhostUserMessage message, params FileDescriptor[] fds) => SendRaw(VhostUserCodec.Encode(message), fds);

    public HarnessOutcome SendRaw(byte[] bytes, params FileDescriptor[] fds)
    {
        if (_channel is null)
        {
            var outcome = Session.Handle(bytes, fds.Select(f => f.Duplicate()).ToList());
            return new HarnessOutcome(outcome.Reply is { } r ? VhostUserCodec.Encode(r) : null, outcome.Close, outcome.Error);
        }

        // Over a socket: send, then read the reply if one is due; a closed connection shows as Close.
        VhostUserCodec.TryReadHeader(bytes, out var request, out var flags, out _);
        try
        {
            _channel.SendRaw(bytes, fds);
        }
        catch (IOException e)
        {
            return new HarnessOutcome(null, true, new VhostUserError(VhostUserErrorCode.PeerClosed, request, e.Message));
        }

        var replyDue = VhostUserRequests.Find(request) is { } row
            ? row.ReplyDue((flags & VhostUserConstants.NeedReplyFlag) != 0, ReplyAck)
            : ReplyAck && (flags & VhostUserConstants.NeedReplyFlag) != 0;
        var status = _channel.Receive(_replyFds, replyDue ? 5000 : 0);
        foreach (var fd in _replyFds)
        {
            fd.Dispose();
        }

        _replyFds.Clear();
        switch (status)
        {
            case ReceiveStatus.Message:
                var reply = _channel.Received.ToArray();
                var value = reply.Length == 20 ? BitConverter.ToUInt64(reply, 12) : 0;
                var nack = VhostUserRequests.Find(request) is not { Reply: VhostUserReplyRule.Always } && value != 0;
                return new HarnessOutcome(reply, false, nack ? new VhostUserError(VhostUserErrorCode.Refused, request, $"NACK {value}") : default);
            case ReceiveStatus.Timeout:
                return new HarnessOutcome(null, false, replyDue ? _channel.LastError.About(request) : default);
            default:
                return new HarnessOutcome(null, true, _channel.LastError.About(request));
        }
    }

    /// <summary>Sends a message that must succeed; with REPLY_ACK on, asks for and checks the ack.</summary>
    public VhostUserMessage? Ok(VhostUserMessage message, params FileDescriptor[] fds)
    {
        var row = VhostUserRequests.Find(message.Request)!;
        if (ReplyAck && row.Reply == VhostUserReplyRule.AckIfAsked)
        {
            message = message with { Flags = message.Flags | VhostUserConstants.NeedReplyFlag };
        }

        var outcome = Send(message, fds);
        Assert.True(outcome.Succeeded, outcome.Error.ToString());
        Assert.False(outcome.Close);
        if (outcome.Reply is null)
        {
            Assert.False(row.ReplyDue(message.NeedsReply, ReplyAck));
            return null;
        }

        Assert.True(row.ReplyDue(message.NeedsReply, ReplyAck));
        Assert.Equal(VhostUserErrorCode.None, VhostUserCodec.DecodeReply(outcome.Reply, row.ReplyDescriptors, out var reply).Code);
        Assert.Equal(message.Request, reply.Request);
        Assert.Equal(row.ReplyPayload, reply.Payload);
        if (row.Reply == VhostUserReplyRule.AckIfAsked)
        {
            Assert.Equal(0UL, reply.Value);
        }

        return reply;
    }

    /// <summary>Negotiation as QEMU and DPDK do it; returns the negotiated features.</summary>
    public VirtioFeatures Negotiate(bool replyAck = true, VirtioFeatures features = VirtioFeatures.Version1 | VirtioFeatures.EventIndex | VirtioFeatures.IndirectDescriptors)
    {
        var offered = (VirtioFeatures)Ok(VhostUserMessage.Empty(VhostUserRequest.GetFeatures))!.Value.Value;
        Assert.NotEqual(VirtioFeatures.None, offered & VhostUserConstants.ProtocolFeaturesBit);
        var protocol = (VhostUserProtocolFeatures)Ok(VhostUserMessage.Empty(VhostUserRequest.GetProtocolFeatures))!.Value.Value;
        var wanted = protocol & ~(replyAck ? 0 : VhostUserProtocolFeatures.ReplyAck);
        Ok(VhostUserMessage.WithU64(VhostUserRequest.SetProtocolFeatures, (ulong)wanted));
        ReplyAck = replyAck;
        Ok(VhostUserMessage.Empty(VhostUserRequest.SetOwner));
        var negotiated = (features & offered) | VhostUserConstants.ProtocolFeaturesBit;
        Ok(VhostUserMessage.WithU64(VhostUserRequest.SetFeatures, (ulong)negotiated));
        return negotiated;
    }

    public void SendMemTable() => Ok(VhostUserMessage.WithMemTable([Region]), MemoryFile);

    public static ulong RingOffset(int index) => (ulong)index * RingStride;

    public RingAreas GuestAreas(int index, int size, RingFormat format = default) =>
        format.Layout(size).At(GuestBase + RingOffset(index));

    public RingAreas UserAreas(int index, int size, RingFormat format = default) =>
        format.Layout(size).At(UserBase + RingOffset(index));

    public static VhostUserMessage Address(int index, RingAreas a) =>
        VhostUserMessage.WithAddress(new VringAddress((uint)index, 0, a.DescriptorArea, a.DeviceArea, a.DriverArea, 0));

    /// <summary>NUM, BASE, ADDR, CALL, KICK, ENABLE for one ring.</summary>
    public void SetupRing(int index, int size, uint baseValue = 0, bool enable = true, RingFormat format = default)
    {
        Ok(VhostUserMessage.WithState(VhostUserRequest.SetVringNum, (uint)index, (uint)size));
        Ok(VhostUserMessage.WithState(VhostUserRequest.SetVringBase, (uint)index, baseValue));
        Ok(Address(index, UserAreas(index, size, format)));
        Ok(VhostUserMessage.WithFile(VhostUserRequest.SetVringCall, (uint)index, true), Calls[index].Handle);
        Ok(VhostUserMessage.WithFile(VhostUserRequest.SetVringKick, (uint)index, true), Kicks[index].Handle);
        if (enable)
        {
            Ok(VhostUserMessage.WithState(VhostUserRequest.SetVringEnable, (uint)index, 1));
        }
    }

    public SplitDriverRing DriverRing(int index, int size, VirtioFeatures features) =>
        new(Guest, GuestAreas(index, size), size, features);

    public ulong BufferAddress(int slot, int bytes = 2048) => GuestBase + BufferOffset + ((ulong)slot * (ulong)bytes);

    public Span<byte> Buffer(ulong guestAddress, int length) => Memory.Slice(guestAddress - GuestBase, length);

    public void Dispose()
    {
        _channel?.Dispose();
        Session.Dispose();
        foreach (var e in Kicks.Concat(Calls))
        {
            e.Dispose();
        }

        Memory.Dispose();
    }
}
