using Rings.Linux.Diagnostics;
using Rings.Linux.Plumbing;
using Rings.Linux.VhostUser;


namespace Rings.Linux.Device;

/// <summary>
/// The host side of vhost-user as a socket server: listens on an owner-only (0600) Unix socket,
/// serves one front-end at a time, connection after connection, each with a fresh
/// <see cref="VhostUserSession"/>. A connection that misbehaves or disappears at any point is
/// closed and leaves no mapping, descriptor or thread behind; the server goes on serving.
/// Ring life-cycle events are raised on the server thread.
/// </summary>
public sealed class VhostUserBackend : IDisposable
{
    private readonly VhostUserBackendOptions _options;
    private readonly EventFd _stop;
    private UnixSocket? _listener;
    private Thread? _thread;
    private readonly List<Thread> _connectionThreads = [];
    private SemaphoreSlim? _slots;
    private long _connections;
    private long _sessionsEnded;
    private readonly long[] _errorCounts = new long[ErrorCodeCount];
    private long _errors;
    private long _refused;
    private VhostUserError? _lastError;

    /// <summary>Creates a back-end; <see cref="Start"/> opens the socket.</summary>
    /// <param name="options">What to offer and where to listen (<see cref="VhostUserBackendOptions.SocketPath"/> is required).</param>
    public VhostUserBackend(VhostUserBackendOptions options)
    {
        _options = options ?? throw new ArgumentNullException(nameof(options));
        ArgumentException.ThrowIfNullOrEmpty(options.SocketPath, nameof(options));
        _stop = EventFd.Create();
    }

    // Every event's sender is the VhostUserSession of the connection it concerns, so a data path
    // serving several front-ends at once can tell them apart.

    /// <summary>A ring started (see <see cref="VhostUserSession.QueueStarted"/>); the sender is the connection's session.</summary>
    public event EventHandler<VhostQueueEventArgs>? QueueStarted;

    /// <summary>A ring stopped (see <see cref="VhostUserSession.QueueStopped"/>).</summary>
    public event EventHandler<VhostQueueEventArgs>? QueueStopped;

    /// <summary>A started ring was enabled or disabled.</summary>
    public event EventHandler<VhostQueueEventArgs>? QueueEnabledChanged;

    /// <summary>
    /// A connection ended; the sender is its session and the argument says why: no error for a
    /// clean close by the peer, <see cref="VhostUserErrorCode.Shutdown"/> when this back-end stops.
    /// </summary>
    public event EventHandler<VhostUserError>? SessionEnded;

    /// <summary>The socket path.</summary>
    public string SocketPath => _options.SocketPath!;

    /// <summary>Connections accepted so far.</summary>
    public long Connections => Interlocked.Read(ref _connections);

    /// <summary>Connections finished and cleaned up so far.</summary>
    public long SessionsEnded => Interlocked.Read(ref _sessionsEnded);

    /// <summary>Messages that failed (NACKed or closed) and connections that broke, over all connections.</summary>
    public long Errors => Interlocked.Read(ref _errors);

    /// <summary>Front-ends closed at once because <see cref="VhostUserBackendOptions.MaxConnections"/> were served (<see cref="VhostUserBackendOptions.RefuseWhenFull"/>).</summary>
    public long Refused => Interlocked.Read(ref _refused);

    /// <summary>The last failure, or null before the first.</summary>
    public VhostUserError? LastError
    {
        get
        {
            lock (_errorCounts)
            {
                return _lastError;
            }
        }
    }

    private static int ErrorCodeCount => (int)Enum.GetValues<VhostUserErrorCode>().Max() + 1;

    /// <summary>How many failures of one kind <see cref="Errors"/> counts.</summary>
    /// <param name="code">The error code.</param>
    /// <returns>The count (0 for codes never seen).</returns>
    public long ErrorCount(VhostUserErrorCode code) =>
        (uint)code < (uint)_errorCounts.Length ? Interlocked.Read(ref _errorCounts[(int)code]) : 0;

    /// <summary>Creates the listening socket and starts serving on a background thread.</summary>
    public void Start()
    {
        if (_thread is not null)
        {
            throw new InvalidOperationException("already started");
        }

        _slots = new SemaphoreSlim(_options.MaxConnections, _options.MaxConnections);
        _listener = UnixSocket.Listen(SocketPath);
        _thread = new Thread(Serve) { IsBackground = true, Name = "vhost-user backend" };
        _thread.Start();
        RingsLog.Listening(_options.Logger, SocketPath);
    }

    /// <summary>Stops serving: ends the current connection (stopping its rings), joins the thread and removes the socket.</summary>
    public void Dispose()
    {
        if (_thread is { } thread)
        {
            _stop.Signal();
            thread.Join();
            _thread = null;
            Thread[] connections;
            lock (_connectionThreads)
            {
                connections = [.. _connectionThreads];
            }

            foreach (var t in connections)
            {
                t.Join();
            }
        }

        _listener?.Dispose();
        _listener = null;
        _stop.Dispose();
        _slots?.Dispose();
    }

    private void Serve()
    {
        var listener = _listener!;
        var slots = _slots!;
        Span<bool> ready = stackalloc bool[2];
        while (true)
        {
            // At capacity, leave new front-ends waiting in the listen backlog until one leaves,
            // unless asked to refuse them (below, once accepted).
            var slotTaken = false;
            while (!_options.RefuseWhenFull && !(slotTaken = slots.Wait(50)))
            {
                if (Poll.WaitReadable(_stop.Handle, 0))
                {
                    return;
                }
            }

            try
            {
                Poll.WaitReadable([listener.Handle, _stop.Handle], -1, ready);
                if (ready[1])
                {
                    return;
                }

                var connection = listener.Accept(0);
                if (connection is null)
                {
                    continue;
                }

                if (!slotTaken && !(slotTaken = slots.Wait(0)))
                {
                    // Closing before any reply is the only refusal vhost-user has: the front-end's
                    // first request fails with the connection closed.
                    connection.Dispose();
                    Interlocked.Increment(ref _refused);
                    RingsLog.Refused(_options.Logger, SocketPath, _options.MaxConnections);
                    continue;
                }

                Interlocked.Increment(ref _connections);
                var worker = new Thread(() =>
                {
                    try
                    {
                        ServeConnection(connection);
                    }
                    finally
                    {
                        connection.Dispose();
                        slots.Release();
                    }
                })
                { IsBackground = true, Name = "vhost-user connection" };
                lock (_connectionThreads)
                {
                    _connectionThreads.RemoveAll(t => !t.IsAlive);
                    _connectionThreads.Add(worker);
                }

                worker.Start();
                slotTaken = false; // the connection thread releases it
            }
            catch (Exception e) when (e is IOException or ObjectDisposedException)
            {
                RingsLog.AcceptFailed(_options.Logger, SocketPath, e.Message);
                Thread.Sleep(10);
            }
            finally
            {
                if (slotTaken)
                {
                    slots.Release();
                }
            }
        }
    }

    /// <summary>Serves one front-end until it leaves or misbehaves. Returns false when asked to stop.</summary>
    private bool ServeConnection(UnixSocket connection)
    {
        var channel = new VhostUserChannel(connection) { MessageTimeoutMilliseconds = _options.MessageTimeoutMilliseconds };
        var session = new VhostUserSession(_options);
        session.QueueStarted += (_, e) =>
        {
            RingsLog.RingStarted(_options.Logger, SocketPath, e.Queue.Index, e.Queue.Format.Name, e.Queue.Ring.Size);
            QueueStarted?.Invoke(session, e);
        };
        session.QueueStopped += (_, e) =>
        {
            RingsLog.RingStopped(_options.Logger, SocketPath, e.Queue.Index);
            QueueStopped?.Invoke(session, e);
        };
        session.QueueEnabledChanged += (_, e) => QueueEnabledChanged?.Invoke(session, e);
        var fds = new List<FileDescriptor>();
        VhostUserError reason = default;
        var keepServing = true;
        RingsLog.Connected(_options.Logger, SocketPath);
        try
        {
            while (true)
            {
                var status = channel.Receive(fds, -1, _stop.Handle);
                if (status == ReceiveStatus.Stopped)
                {
                    keepServing = false;
                    reason = channel.LastError;
                    break;
                }

                if (status == ReceiveStatus.PeerClosed)
                {
                    break;
                }

                if (status != ReceiveStatus.Message)
                {
                    reason = channel.LastError;
                    RecordError(reason);
                    break;
                }

                var outcome = session.Handle(channel.Received, fds);
                if (outcome.Error.IsError)
                {
                    RecordError(outcome.Error);
                }

                if (outcome.Reply is { } reply)
                {
                    channel.Send(reply);
                }

                if (outcome.Close)
                {
                    reason = outcome.Error;
                    break;
                }
            }
        }
        catch (Exception e)
        {
            // A bug or a socket failure ends this connection only; the server keeps serving.
            reason = new VhostUserError(e is IOException ? VhostUserErrorCode.SocketError : VhostUserErrorCode.InternalError, $"connection failed: {e.GetType().Name}: {e.Message}");
            RecordError(reason);
        }
        finally
        {
            foreach (var fd in fds)
            {
                fd.Dispose();
            }

            session.Dispose();
            channel.Dispose();
            Interlocked.Increment(ref _sessionsEnded);
            RingsLog.Disconnected(_options.Logger, SocketPath, reason.IsError ? $"connection closed: {reason}" : "front-end disconnected");
            try
            {
                SessionEnded?.Invoke(session, reason);
            }
            catch (Exception e)
            {
                RingsLog.HandlerFailed(_options.Logger, $"vhost-user backend {SocketPath}: SessionEnded", e.Message);
            }
        }

        return keepServing;
    }

    private void RecordError(VhostUserError error)
    {
        Interlocked.Increment(ref _errors);
        Interlocked.Increment(ref _errorCounts[(int)error.Code]);
        lock (_errorCounts)
        {
            _lastError = error;
        }
    }

}
