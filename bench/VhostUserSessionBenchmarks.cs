using System.Runtime.Versioning;
using BenchmarkDotNet.Attributes;
using Microsoft.Extensions.ObjectPool;
using Rings.Linux.Device;
using Rings.Linux.Plumbing;
using Rings.Linux.VhostUser;

namespace Rings.Benchmarks;

/// <summary>
/// The vhost-user back-end's cost per control message, without the socket: decode the raw bytes,
/// run the request table's checks and the handler, encode the reply. Three ways to hold the
/// reply's bytes, in the same run: a new array per reply (what the server did before replies
/// became messages), an array rented from Microsoft.Extensions.ObjectPool, and the one send
/// buffer the channel reuses (what the server does now). Two message mixes: queries with
/// explicit replies or acks (no descriptors), and a ring restart as QEMU and DPDK do it
/// (GET_VRING_BASE, NUM, BASE, ADDR, CALL and KICK with their eventfds, ENABLE), every set
/// request asking for an ack. Reported per message.
/// </summary>
[MemoryDiagnoser]
[MinColumn]
[MedianColumn]
[SupportedOSPlatform("linux")]
public class VhostUserSessionBenchmarks
{
    private const int RingSize = 256;

    private readonly List<FileDescriptor> _fds = [];
    private readonly byte[] _sendBuffer = new byte[VhostUserConstants.HeaderBytes + VhostUserConstants.MaxSupportedPayloadBytes];
    private readonly ObjectPool<byte[]> _pool = new DefaultObjectPoolProvider().Create(new ReplyBufferPolicy());
    private SharedMemory? _memory;
    private EventFd? _kick;
    private EventFd? _call;
    private VhostUserSession? _session;
    private (byte[] Bytes, EventFd? Fd)[] _messages = [];
    private long _sink;

    /// <summary>The message mix.</summary>
    [Params("queries", "ring restart")]
    public string Mix { get; set; } = "queries";

    /// <summary>A negotiated session with memory and both rings of one queue pair running.</summary>
    [GlobalSetup]
    public void Setup()
    {
        _memory = SharedMemory.Create(1 << 20);
        _kick = EventFd.Create();
        _call = EventFd.Create();
        _session = new VhostUserSession(new VhostUserBackendOptions());
        var user = (ulong)_memory.HostAddress;
        const bool ack = true;
        Run(VhostUserMessage.WithU64(VhostUserRequest.SetProtocolFeatures, (ulong)VhostUserBackendOptions.DefaultProtocolFeatures));
        Run(VhostUserMessage.Empty(VhostUserRequest.SetOwner, ack));
        Run(VhostUserMessage.WithU64(VhostUserRequest.SetFeatures, (ulong)(VirtioFeatures.Version1 | VirtioFeatures.EventIndex | VhostUserConstants.ProtocolFeaturesBit), ack));
        Run(VhostUserMessage.WithMemTable([new MemoryRegionDescription(0x1000_0000, _memory.Length, user, 0)], ack), _memory.Handle!.Duplicate());
        var areas = RingFormat.Split.Layout(RingSize).At(user);
        (byte[], EventFd?)[] restart =
        [
            (Encode(VhostUserMessage.WithState(VhostUserRequest.GetVringBase, 0, 0)), null),
            (Encode(VhostUserMessage.WithState(VhostUserRequest.SetVringNum, 0, RingSize, ack)), null),
            (Encode(VhostUserMessage.WithState(VhostUserRequest.SetVringBase, 0, 0, ack)), null),
            (Encode(VhostUserMessage.WithAddress(new VringAddress(0, 0, areas.DescriptorArea, areas.DeviceArea, areas.DriverArea, 0), ack)), null),
            (Encode(VhostUserMessage.WithFile(VhostUserRequest.SetVringCall, 0, true, ack)), _call),
            (Encode(VhostUserMessage.WithFile(VhostUserRequest.SetVringKick, 0, true, ack)), _kick),
            (Encode(VhostUserMessage.WithState(VhostUserRequest.SetVringEnable, 0, 1, ack)), null),
        ];

        // Start the ring once, so the restart mix always finds it running.
        foreach (var (bytes, fd) in restart[1..])
        {
            Handle(bytes, fd);
        }

        _messages = Mix == "queries"
            ?
            [
                (Encode(VhostUserMessage.Empty(VhostUserRequest.GetFeatures)), null),
                (Encode(VhostUserMessage.Empty(VhostUserRequest.GetProtocolFeatures)), null),
                (Encode(VhostUserMessage.Empty(VhostUserRequest.GetQueueNum)), null),
                (Encode(VhostUserMessage.Empty(VhostUserRequest.GetStatus)), null),
                (Encode(VhostUserMessage.WithU64(VhostUserRequest.SetStatus, 0x0F, ack)), null),
                (Encode(VhostUserMessage.WithState(VhostUserRequest.SetVringEnable, 0, 1, ack)), null),
            ]
            : restart;

        // Every message must succeed and be answered: check once before measuring.
        foreach (var (bytes, fd) in _messages)
        {
            if (Handle(bytes, fd) is not { } reply || VhostUserCodec.DecodeReply(VhostUserCodec.Encode(reply), 0, out _).IsError)
            {
                throw new InvalidOperationException("a benchmark message got no valid reply");
            }
        }

        if (_session.StartedQueue(0) is null || _session.Errors != 0)
        {
            throw new InvalidOperationException("the ring did not restart");
        }
    }

    /// <summary>Releases the session, the doorbells and the memory.</summary>
    [GlobalCleanup]
    public void Cleanup()
    {
        _session?.Dispose();
        _kick?.Dispose();
        _call?.Dispose();
        _memory?.Dispose();
    }

    /// <summary>Each reply encoded into a new array.</summary>
    /// <returns>A checksum of the replies.</returns>
    [Benchmark(Baseline = true, OperationsPerInvoke = 7)]
    public long ReplyInNewArray()
    {
        for (var i = 0; i < 7; i++)
        {
            var (bytes, fd) = _messages[i % _messages.Length];
            if (Handle(bytes, fd) is { } reply)
            {
                var buffer = VhostUserCodec.Encode(reply);
                _sink += buffer[0] + buffer.Length;
            }
        }

        return _sink;
    }

    /// <summary>Each reply encoded into an array rented from an object pool and returned after sending.</summary>
    /// <returns>A checksum of the replies.</returns>
    [Benchmark(OperationsPerInvoke = 7)]
    public long ReplyFromObjectPool()
    {
        for (var i = 0; i < 7; i++)
        {
            var (bytes, fd) = _messages[i % _messages.Length];
            if (Handle(bytes, fd) is { } reply)
            {
                var buffer = _pool.Get();
                var length = VhostUserCodec.Encode(reply, buffer);
                _sink += buffer[0] + length;
                _pool.Return(buffer);
            }
        }

        return _sink;
    }

    /// <summary>Each reply encoded into the one buffer the connection sends from.</summary>
    /// <returns>A checksum of the replies.</returns>
    [Benchmark(OperationsPerInvoke = 7)]
    public long ReplyInChannelBuffer()
    {
        for (var i = 0; i < 7; i++)
        {
            var (bytes, fd) = _messages[i % _messages.Length];
            if (Handle(bytes, fd) is { } reply)
            {
                var length = VhostUserCodec.Encode(reply, _sendBuffer);
                _sink += _sendBuffer[0] + length;
            }
        }

        return _sink;
    }

    private static byte[] Encode(in VhostUserMessage message) => VhostUserCodec.Encode(message);

    private VhostUserMessage? Handle(byte[] bytes, EventFd? fd)
    {
        // As the socket delivers it: a descriptor received is a new one, owned by the session.
        if (fd is not null)
        {
            _fds.Add(fd.Handle.Duplicate());
        }

        var outcome = _session!.Handle(bytes, _fds);
        return outcome.Reply;
    }

    private void Run(in VhostUserMessage message, FileDescriptor? fd = null)
    {
        if (fd is not null)
        {
            _fds.Add(fd);
        }

        if (!_session!.Handle(Encode(message), _fds).Succeeded)
        {
            throw new InvalidOperationException($"{message.Request} failed");
        }
    }

    private sealed class ReplyBufferPolicy : PooledObjectPolicy<byte[]>
    {
        public override byte[] Create() => new byte[VhostUserConstants.HeaderBytes + VhostUserConstants.MaxSupportedPayloadBytes];

        public override bool Return(byte[] obj) => true;
    }
}
