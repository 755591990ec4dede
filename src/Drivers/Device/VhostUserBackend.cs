using Rings.Linux.Diagnostics;
using Rings.Linux.Plumbing;
using Rings.Linux.VhostUser;


namespace Rings.Linux.Device;

/// <summary>
/// The host side of vhost-user as a socket server: listens on an owner-only (0600) Unix socket,
/// serves up to <see cref="VhostUserBackendOptions.MaxConnections"/> front-ends at once, each on
/// its own connection thread with a fresh <see cref="VhostUserSession"/>. A connection that
/// misbehaves or disappears at any point is closed and leaves no mapping, descriptor or thread
/// behind; the server goes on serving. Ring life-cycle events are raised on the connection's thread.
/// <para>
/// A slot is held only while its front-end makes progress: while another front-end waits for a
/// slot, a connection that has sent no message after
/// <see cref="VhostUserBackendOptions.FirstMessageTimeoutMilliseconds"/> is closed, and so is one
/// with no ring running after <see cref="VhostUserBackendOptions.SetupTimeoutMilliseconds"/>
/// (one that sent nothing by then is closed in any case); a message must arrive whole and a reply
/// be taken within <see cref="VhostUserBackendOptions.MessageTimeoutMilliseconds"/>, and a peer
/// whose user is not in <see cref="VhostUserBackendOptions.AllowedUids"/> is closed unread.
/// </para>
/// <para>
/// In client mode (<see cref="VhostUserBackendOptions.Connect"/>) it connects to a front-end that
/// listens instead (QEMU's <c>server=on</c>, DPDK virtio-user's <c>server=1</c>), one connection at
/// a time, and connects again every <see cref="VhostUserBackendOptions.ReconnectIntervalMilliseconds"/>
/// while the front-end is not there and after each connection ends.
/// </para>
/// </summary>
public sealed class VhostUserBackend : IDisposable
{
    private readonly VhostUserBackendOptions _options;
    private readonly EventFd _stop;
    private UnixSocket? _listener;
    private Thread? _thread;
    private readonly List<Connection> _live = [];
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
        if (_options.Connect)
        {
            _thread = new Thread(ServeAsClient) { IsBackground = true, Name = "vhost-user backend" };
            _thread.Start();
            RingsLog.Connecting(_options.Logger, SocketPath);
            return;
        }

        _listener = UnixSocket.Listen(SocketPath);
        _thread = new Thread(Serve) { IsBackground = true, Name = "vhost-user backend" };
        _thread.Start();
        RingsLog.Listening(_options.Logger, SocketPath);
    }

    /// <summary>
    /// Stops serving: ends every connection (stopping its rings), joins the threads and removes the
    /// socket. Each join has a deadline (a connection's rings get their stop deadline, and more);
    /// a thread that misses it is logged and left behind.
    /// </summary>
    public void Dispose()
    {
        if (_thread is { } thread)
        {
            _stop.Signal();
            thread.Join();
            _thread = null;
            Connection[] live;
            lock (_live)
            {
                live = [.. _live];
            }

            foreach (var c in live)
            {
                c.End(null);
            }

            // Each connection stops its rings (a stop deadline per ring) and then closes.
            var deadline = Environment.TickCount64 + _options.MessageTimeoutMilliseconds + (_options.QueueCount * (long)_options.StopTimeoutMilliseconds);
            foreach (var c in live)
            {
                if (!c.Thread!.Join(TimeSpan.FromMilliseconds(Math.Max(0, deadline - Environment.TickCount64))))
                {
                    RingsLog.NotStopped(_options.Logger, $"vhost-user backend {SocketPath}: a connection thread did not end in time; left behind");
                }
            }
        }

        _listener?.Dispose();
        _listener = null;
        _stop.Dispose();
    }

    private void Serve()
    {
        var listener = _listener!;
        var slots = _slots!;
        Span<bool> ready = stackalloc bool[2];
        while (true)
        {
            // At capacity, leave new front-ends waiting in the listen backlog until one leaves,
            // unless asked to refuse them (below, once accepted). One waiting is what takes a slot
            // from a connection past its setup deadline.
            var slotTaken = false;
            while (!_options.RefuseWhenFull && !(slotTaken = slots.Wait(50)))
            {
                if (Poll.WaitReadable(_stop.Handle, 0))
                {
                    return;
                }

                if (Poll.WaitReadable(listener.Handle, 0))
                {
                    EvictUnready();
                }
            }

            try
            {
                Poll.WaitReadable([listener.Handle, _stop.Handle], -1, ready);
                if (ready[1])
                {
                    return;
                }

                var socket = listener.Accept(0);
                if (socket is null)
                {
                    continue;
                }

                if (!Allowed(socket))
                {
                    socket.Dispose();
                    continue;
                }

                // A front-end waits: a connection past its setup deadline makes room.
                if (!slotTaken && !(slotTaken = slots.Wait(0)) && EvictUnready())
                {
                    slotTaken = slots.Wait(_options.StopTimeoutMilliseconds * 2);
                }

                if (!slotTaken)
                {
                    // Closing before any reply is the only refusal vhost-user has: the front-end's
                    // first request fails with the connection closed.
                    socket.Dispose();
                    Interlocked.Increment(ref _refused);
                    RingsLog.Refused(_options.Logger, SocketPath, _options.MaxConnections);
                    continue;
                }

                StartConnection(socket, slots);
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

    /// <summary>Serves <paramref name="socket"/> on a thread of its own; the thread releases the slot (if any) when it ends.</summary>
    private Connection StartConnection(UnixSocket socket, SemaphoreSlim? slots)
    {
        Interlocked.Increment(ref _connections);
        var connection = new Connection(socket);
        connection.Thread = new Thread(() =>
        {
            try
            {
                ServeConnection(connection);
            }
            finally
            {
                lock (_live)
                {
                    _live.Remove(connection);
                }

                connection.Dispose();
                slots?.Release();
            }
        })
        { IsBackground = true, Name = "vhost-user connection" };
        lock (_live)
        {
            _live.Add(connection);
        }

        connection.Thread.Start();
        return connection;
    }

    /// <summary>Client mode: connect, serve until the connection ends, and again; a refused connect is retried after the interval.</summary>
    private void ServeAsClient()
    {
        var interval = Math.Max(1, _options.ReconnectIntervalMilliseconds);
        var waiting = false;
        while (!Poll.WaitReadable(_stop.Handle, 0))
        {
            UnixSocket socket;
            try
            {
                socket = UnixSocket.Connect(SocketPath);
            }
            catch (IOException e)
            {
                if (!waiting)
                {
                    RingsLog.ConnectRetry(_options.Logger, SocketPath, e.Message, interval);
                    waiting = true;
                }

                if (Poll.WaitReadable(_stop.Handle, interval))
                {
                    return;
                }

                continue;
            }

            waiting = false;
            var connection = StartConnection(socket, slots: null);

            // Until the connection ends (Dispose ends and joins it when asked to stop), then a pause
            // so a front-end that closes at once does not make us spin.
            while (connection.Thread!.IsAlive)
            {
                if (Poll.WaitReadable(_stop.Handle, 50))
                {
                    return;
                }
            }

            if (Poll.WaitReadable(_stop.Handle, interval))
            {
                return;
            }
        }
    }

    // SO_PEERCRED against the allowed users, before anything is read.
    private bool Allowed(UnixSocket socket)
    {
        if (_options.AllowedUids is not { Count: > 0 } allowed)
        {
            return true;
        }

        var (pid, uid, _) = socket.PeerCredentials();
        if (allowed.Contains(uid))
        {
            return true;
        }

        var error = new VhostUserError(VhostUserErrorCode.PeerNotAllowed, $"a front-end of uid {uid} (pid {pid}) connected; only uid {string.Join(", ", allowed)} may");
        RecordError(error);
        RingsLog.Disconnected(_options.Logger, SocketPath, $"connection closed: {error}");
        return false;
    }

    // Another front-end waits: ends every connection that has sent nothing for longer than the
    // first-message deadline or has had no ring running for longer than the setup deadline.
    // Returns true when it ended at least one (its slot is freed once its thread cleans up).
    private bool EvictUnready()
    {
        var now = Environment.TickCount64;
        var evicted = false;
        lock (_live)
        {
            foreach (var c in _live)
            {
                var age = now - c.Accepted;
                var why = !c.Spoke && age > _options.FirstMessageTimeoutMilliseconds ? $"no first message within {_options.FirstMessageTimeoutMilliseconds} ms"
                    : !c.Ready && age > _options.SetupTimeoutMilliseconds ? $"no ring running {_options.SetupTimeoutMilliseconds} ms after connecting"
                    : null;
                if (why is not null && c.End($"{why}, and another front-end waits for the slot"))
                {
                    evicted = true;
                }
            }
        }

        return evicted;
    }

    /// <summary>Serves one front-end until it leaves, misbehaves, misses a deadline or is ended.</summary>
    private void ServeConnection(Connection connection)
    {
        connection.Socket.SetSendTimeout(_options.MessageTimeoutMilliseconds);
        var channel = new VhostUserChannel(connection.Socket) { MessageTimeoutMilliseconds = _options.MessageTimeoutMilliseconds };
        var session = new VhostUserSession(_options);
        session.QueueStarted += (_, e) =>
        {
            connection.Ready = true;
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
        var first = true;
        RingsLog.Connected(_options.Logger, SocketPath);
        try
        {
            while (true)
            {
                var status = channel.Receive(fds, first ? _options.SetupTimeoutMilliseconds : -1, connection.Ended.Handle);
                if (status == ReceiveStatus.Stopped)
                {
                    reason = connection.Evicted is { } evicted ? new VhostUserError(VhostUserErrorCode.Timeout, evicted) : channel.LastError;
                    if (connection.Evicted is not null)
                    {
                        RecordError(reason);
                    }

                    break;
                }

                if (status == ReceiveStatus.PeerClosed)
                {
                    break;
                }

                if (status == ReceiveStatus.Timeout)
                {
                    reason = new VhostUserError(VhostUserErrorCode.Timeout, $"no first message within {_options.SetupTimeoutMilliseconds} ms");
                    RecordError(reason);
                    break;
                }

                if (status != ReceiveStatus.Message)
                {
                    reason = channel.LastError;
                    RecordError(reason);
                    break;
                }

                first = false;
                connection.Spoke = true;
                var outcome = session.Handle(channel.Received, fds);
                if (outcome.Error.IsError)
                {
                    RecordError(outcome.Error);
                }

                if (outcome.Reply is { } reply)
                {
                    if (outcome.ReplyDescriptor is { } fd)
                    {
                        channel.Send(reply, [fd]);
                    }
                    else
                    {
                        channel.Send(reply);
                    }
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
            // A bug or a socket failure (a reply the peer did not take in time) ends this connection only.
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

    /// <summary>One accepted front-end: its socket, its thread, and how to end it from outside.</summary>
    private sealed class Connection(UnixSocket socket) : IDisposable
    {
        private bool _ended;
        private bool _disposed;

        public UnixSocket Socket { get; } = socket;

        public Thread? Thread { get; set; }

        public long Accepted { get; } = Environment.TickCount64;

        /// <summary>Readable once the connection is to end (eviction or shutdown).</summary>
        public EventFd Ended { get; } = EventFd.Create();

        /// <summary>Set on the connection's thread once a ring runs; read by the accept thread.</summary>
        public volatile bool Ready;

        /// <summary>Set on the connection's thread once a message arrived; read by the accept thread.</summary>
        public volatile bool Spoke;

        /// <summary>Why the connection was evicted, or null (not evicted, or ended by shutdown).</summary>
        public string? Evicted { get; private set; }

        /// <summary>Asks the connection to end (evicted: why; null for shutdown); false when it was asked already.</summary>
        public bool End(string? evicted)
        {
            lock (Ended)
            {
                if (_ended || _disposed)
                {
                    return false;
                }

                _ended = true;
                Evicted = evicted;
                Ended.Signal();
                return true;
            }
        }

        public void Dispose()
        {
            lock (Ended)
            {
                _disposed = true;
                Ended.Dispose();
            }
        }
    }
}
