using Rings.Linux.Device;
using Rings.Linux.Driver;
using Rings.Linux.Plumbing;
using Rings.Linux.VhostUser;
using Rings.Tests.Linux;

namespace Rings.Tests.VhostUser;

/// <summary>
/// The front-end reports every failure as a <see cref="VhostUserException"/> whose code tells a
/// refused request from a dead connection, against real and scripted back-ends.
/// </summary>
public class FrontendErrorTests
{
    [Fact]
    public void ARequestTheBackEndRefusesIsRefusedAndCountedThere()
    {
        var path = TestPaths.Socket();
        using var backend = new VhostUserBackend(new VhostUserBackendOptions { SocketPath = path });
        var ended = 0;
        backend.SessionEnded += (_, _) => Interlocked.Increment(ref ended);

        // The application cannot take the ring: the back-end NACKs the kick that would start it.
        backend.QueueStarted += (_, _) => throw new InvalidOperationException("no room for another queue");
        backend.Start();

        var e = Assert.Throws<VhostUserException>(() => Connect(path));
        Assert.Equal(VhostUserErrorCode.Refused, e.Code);
        Assert.Equal(VhostUserRequest.SetVringKick, e.Error.Request);
        Assert.False(e.Error.IsConnectionLost);
        Assert.IsAssignableFrom<IOException>(e);

        Assert.True(TestDevice.Wait(() => Volatile.Read(ref ended) == 1, 10_000));
        Assert.Equal(1, backend.ErrorCount(VhostUserErrorCode.HandlerFailed));
        Assert.Equal(backend.Errors, backend.ErrorCount(VhostUserErrorCode.HandlerFailed));
        Assert.Equal((VhostUserErrorCode.HandlerFailed, VhostUserRequest.SetVringKick), (backend.LastError!.Value.Code, backend.LastError.Value.Request));
        Assert.Contains("no room for another queue", backend.LastError.Value.Detail, StringComparison.Ordinal);
    }

    [Fact]
    public void TooFewQueuePairsAreNotOffered()
    {
        var path = TestPaths.Socket();
        using var backend = new VhostUserBackend(new VhostUserBackendOptions { SocketPath = path, MaxQueuePairs = 1 });
        backend.Start();
        var e = Assert.Throws<VhostUserException>(() => Connect(path, o => o.QueuePairs = 2));
        Assert.Equal((VhostUserErrorCode.NotOffered, VhostUserRequest.GetQueueNum), (e.Code, e.Error.Request));
    }

    [Fact]
    public void NothingListeningIsASocketError()
    {
        var e = Assert.Throws<VhostUserException>(() => Connect(TestPaths.Socket()));
        Assert.Equal(VhostUserErrorCode.SocketError, e.Code);
        Assert.True(e.Error.IsConnectionLost);
        Assert.IsAssignableFrom<IOException>(e.InnerException);
    }

    [Fact]
    public void ABackEndThatHangsUpIsPeerClosed()
    {
        using var backend = new ScriptedBackend(_ => null);
        var e = Assert.Throws<VhostUserException>(() => Connect(backend.Path));
        Assert.Equal((VhostUserErrorCode.PeerClosed, VhostUserRequest.GetFeatures), (e.Code, e.Error.Request));
        Assert.True(e.Error.IsConnectionLost);
    }

    [Fact]
    public void ABackEndThatNeverAnswersIsATimeout()
    {
        using var backend = new ScriptedBackend(_ => []);
        var e = Assert.Throws<VhostUserException>(() => Connect(backend.Path, o => o.ReplyTimeoutMilliseconds = 200));
        Assert.Equal((VhostUserErrorCode.Timeout, VhostUserRequest.GetFeatures), (e.Code, e.Error.Request));
        Assert.True(e.Error.IsConnectionLost);
    }

    [Fact]
    public void RepliesThatDoNotFitTheRequestAreNamed()
    {
        // A reply to another request.
        using (var backend = new ScriptedBackend(m => VhostUserCodec.Encode(VhostUserMessage.ReplyU64(VhostUserRequest.GetProtocolFeatures, 0))))
        {
            var e = Assert.Throws<VhostUserException>(() => Connect(backend.Path));
            Assert.Equal((VhostUserErrorCode.UnexpectedReply, VhostUserRequest.GetFeatures), (e.Code, e.Error.Request));
            Assert.False(e.Error.IsConnectionLost);
        }

        // A "reply" without the REPLY flag.
        using (var backend = new ScriptedBackend(m => VhostUserCodec.Encode(VhostUserMessage.WithU64(m.Request, 0))))
        {
            var e = Assert.Throws<VhostUserException>(() => Connect(backend.Path));
            Assert.Equal((VhostUserErrorCode.BadReplyFlag, VhostUserRequest.GetFeatures), (e.Code, e.Error.Request));
        }

        // Features without VIRTIO_F_VERSION_1.
        using (var backend = new ScriptedBackend(m => VhostUserCodec.Encode(VhostUserMessage.ReplyU64(m.Request, (ulong)VirtioFeatures.EventIndex))))
        {
            var e = Assert.Throws<VhostUserException>(() => Connect(backend.Path));
            Assert.Equal((VhostUserErrorCode.NotOffered, VhostUserRequest.GetFeatures), (e.Code, e.Error.Request));
        }
    }

    [Fact]
    public void ANackIsRefusedWithTheRequestItAnswers()
    {
        // Negotiates REPLY_ACK, then refuses SET_OWNER.
        using var backend = new ScriptedBackend(m => m.Request switch
        {
            VhostUserRequest.GetFeatures => VhostUserCodec.Encode(VhostUserMessage.ReplyU64(m.Request, (ulong)(VirtioFeatures.Version1 | VhostUserConstants.ProtocolFeaturesBit))),
            VhostUserRequest.GetProtocolFeatures => VhostUserCodec.Encode(VhostUserMessage.ReplyU64(m.Request, (ulong)VhostUserProtocolFeatures.ReplyAck)),
            VhostUserRequest.SetProtocolFeatures => [],
            _ => VhostUserCodec.Encode(VhostUserMessage.ReplyU64(m.Request, 1)),
        });
        var e = Assert.Throws<VhostUserException>(() => Connect(backend.Path));
        Assert.Equal((VhostUserErrorCode.Refused, VhostUserRequest.SetOwner), (e.Code, e.Error.Request));
        Assert.Contains("NACK 1", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void ABackEndGoneAfterSetupIsAConnectionLoss()
    {
        var path = TestPaths.Socket();
        var backend = new VhostUserBackend(new VhostUserBackendOptions { SocketPath = path });
        var device = new TestDevice(backend);
        backend.Start();
        using var frontend = Connect(path);
        Assert.True(device.WaitForQueues(2, 10_000));
        backend.Dispose();
        Assert.True(TestDevice.Wait(() => !frontend.IsConnected, 10_000));

        var e = Assert.Throws<VhostUserException>(() => frontend.StopQueue(0));
        Assert.Equal(VhostUserErrorCode.PeerClosed, e.Code);
        Assert.True(e.Error.IsConnectionLost);
    }

    private static VhostUserFrontend Connect(string path, Action<VhostUserFrontendOptions>? configure = null)
    {
        var options = new VhostUserFrontendOptions { SocketPath = path, MemoryBytes = 1 << 20, QueueSize = 16 };
        configure?.Invoke(options);
        return VhostUserFrontend.Connect(options);
    }

    /// <summary>
    /// A back-end that serves one connection by a script: for each request, the bytes to answer
    /// (empty: answer nothing), or null to hang up.
    /// </summary>
    private sealed class ScriptedBackend : IDisposable
    {
        private readonly UnixSocket _listener;
        private readonly EventFd _stop = EventFd.Create();
        private readonly Thread _thread;

        public ScriptedBackend(Func<VhostUserMessage, byte[]?> answer)
        {
            Path = TestPaths.Socket();
            _listener = UnixSocket.Listen(Path);
            _thread = new Thread(() => Serve(answer)) { IsBackground = true };
            _thread.Start();
        }

        public string Path { get; }

        public void Dispose()
        {
            _stop.Signal();
            _thread.Join();
            _listener.Dispose();
            _stop.Dispose();
        }

        private void Serve(Func<VhostUserMessage, byte[]?> answer)
        {
            var connection = _listener.Accept(10_000);
            if (connection is null)
            {
                return;
            }

            using var channel = new VhostUserChannel(connection);
            var fds = new List<FileDescriptor>();
            try
            {
                while (channel.Receive(fds, 10_000, _stop.Handle) == ReceiveStatus.Message)
                {
                    Assert.False(VhostUserCodec.DecodeRequest(channel.Received, fds.Count, out var request).IsError);
                    var reply = answer(request);
                    if (reply is null)
                    {
                        return;
                    }

                    if (reply.Length > 0)
                    {
                        channel.SendRaw(reply);
                    }
                }
            }
            finally
            {
                foreach (var fd in fds)
                {
                    fd.Dispose();
                }
            }
        }
    }
}
