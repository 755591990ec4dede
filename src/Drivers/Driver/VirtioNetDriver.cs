using Rings.Linux.Net;
using Rings.Linux.Plumbing;
using Rings.Linux.VhostUser;

namespace Rings.Linux.Driver;

/// <summary>
/// A virtio-net driver over vhost-user, ready in one call: connects a <see cref="VhostUserFrontend"/>,
/// lays transmit and receive buffers out after the rings, works out VIRTIO_NET_F_MRG_RXBUF from
/// the negotiated features, posts the receive buffers, and kicks the device only when it asked.
/// Frames go out with <see cref="TrySend"/> (or a transmit lease and <see cref="Submit(in TransmitLease, int)"/>) and
/// <see cref="Flush"/>; they come in with <see cref="TryReceive"/> or <see cref="TryReceiveInPlace"/>.
/// One queue pair (receiveq1 and transmitq1, virtio 1.2 section 5.1.2), owned by one thread;
/// nothing here allocates per frame.
/// </summary>
/// <example>
/// <code>
/// using var net = VirtioNetDriver.Connect(new VhostUserFrontendOptions { SocketPath = "/run/vhost.sock" });
/// net.TrySend(frame);
/// net.Flush();
/// while (!net.TryReceive(buffer, out var length))
/// {
///     net.WaitForReceive(100);
/// }
/// </code>
/// </example>
public sealed class VirtioNetDriver : IDisposable
{
    /// <summary>The default largest frame to transmit: a standard Ethernet frame without its FCS.</summary>
    public const int DefaultMaxFrameSize = 1514;

    /// <summary>Bytes per receive buffer under MRG_RXBUF: a standard frame and its header fit in one.</summary>
    public const int MergeableReceiveBufferSize = 2048;

    // Buffers start on cache lines so neighbouring frames never share one.
    private const int BufferAlignment = 64;

    private readonly VhostUserFrontend _frontend;
    private readonly INetDriverPath _path;
    private readonly EventFd _breakSignal = EventFd.Create();
    private readonly bool _ownsFrontend;
    private bool _transmitPending;
    private bool _receiveTaken;
    private long _receiveErrorsAtRefill;

    /// <summary>
    /// Lays the data path over a front-end that is already connected (for example one made over a
    /// caller's channel with <see cref="VhostUserFrontend.Connect(VhostUserChannel, VhostUserFrontendOptions)"/>)
    /// and takes ownership of it: disposing this driver disposes the front-end. When this throws,
    /// the front-end stays the caller's.
    /// </summary>
    /// <param name="frontend">A connected front-end with at least one queue pair and driver rings.</param>
    /// <param name="maxFrameSize">The largest frame to transmit, in bytes (without the 12-byte header).</param>
    /// <exception cref="ArgumentException">
    /// The buffers do not fit in the memory left after the rings (raise <see cref="VhostUserFrontendOptions.MemoryBytes"/>),
    /// or the front-end has no queue pair.
    /// </exception>
    public VirtioNetDriver(VhostUserFrontend frontend, int maxFrameSize = DefaultMaxFrameSize)
        : this(frontend, maxFrameSize, pair: 0, shares: 1, ownsFrontend: true)
    {
    }

    // Queue pair <pair> of the front-end, its buffers in share <pair> of <shares> equal shares of
    // the buffer area (one per pair when every pair gets a driver).
    private VirtioNetDriver(VhostUserFrontend frontend, int maxFrameSize, int pair, int shares, bool ownsFrontend)
    {
        ArgumentNullException.ThrowIfNull(frontend);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxFrameSize, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(maxFrameSize, ushort.MaxValue - VirtioNetHeader.Size);
        if (frontend.Queues.Count < (2 * pair) + 2)
        {
            throw new ArgumentException(pair == 0 ? "the front-end has no queue pair" : $"the front-end has no queue pair {pair}", nameof(frontend));
        }

        // Vring 2N receives and 2N+1 transmits for queue pair N (5.1.2).
        var receive = frontend.Queues[2 * pair];
        var transmit = frontend.Queues[(2 * pair) + 1];
        Mergeable = (frontend.Features & VirtioFeatures.NetMergeRxBuffers) != 0;

        // Without MRG_RXBUF every frame must fit one receive buffer: at least a standard frame (5.1.6.3.1).
        var transmitBuffer = Align(VirtioNetHeader.Size + maxFrameSize);
        var receiveBuffer = Mergeable ? MergeableReceiveBufferSize : Align(VirtioNetHeader.Size + Math.Max(maxFrameSize, DefaultMaxFrameSize));
        var transmitBytes = BufferSlab.BytesFor(transmit.Size, transmitBuffer);
        var needed = transmitBytes + BufferSlab.BytesFor(receive.Size, receiveBuffer);
        var share = frontend.BufferBytes / (ulong)shares / BufferAlignment * BufferAlignment;
        if (needed > share)
        {
            // No parameter name: the message is what a caller shows its user.
            throw new ArgumentException(shares == 1
                ? $"the buffers need {needed >> 20} MiB but only {frontend.BufferBytes >> 20} MiB of memory are left after the rings"
                : $"the buffers of {shares} queue pairs need {(needed * (ulong)shares) >> 20} MiB but only {frontend.BufferBytes >> 20} MiB of memory are left after the rings");
        }

        var bufferAddress = frontend.BufferAddress + ((ulong)pair * share);
        _ownsFrontend = ownsFrontend;
        Pair = pair;
        // Buffers handed out in the order the rings hand out descriptors (see BufferSlab).
        var inOrder = (frontend.Features & VirtioFeatures.InOrder) != 0;
        var transmitSlab = new BufferSlab(frontend.GuestMemory, bufferAddress, transmit.Size, transmitBuffer, inOrder);
        var receiveSlab = new BufferSlab(frontend.GuestMemory, bufferAddress + transmitBytes, receive.Size, receiveBuffer, inOrder);
        _frontend = frontend;
        ReceiveBufferSize = receiveBuffer;
        Receive = receive;
        Transmit = transmit;
        _path = NetDriverPath.ForRings(transmit.Ring, receive.Ring, transmitSlab, receiveSlab, Mergeable);

        // Transmit buffers are reclaimed when they run short and receive queues polled: no calls
        // wanted until WaitForReceive asks for one (2.7.10, 2.8.10).
        transmit.Ring.DisableUsedNotifications();
        receive.Ring.DisableUsedNotifications();
        frontend.QueueBroken += (_, e) =>
        {
            if (e.Queue == Receive || e.Queue == Transmit)
            {
                _breakSignal.Signal();
            }
        };
        if (_path.RefillReceive())
        {
            receive.Kick.Signal();
        }
    }

    /// <summary>The queue pair this driver drives (0 for receiveq1 and transmitq1).</summary>
    public int Pair { get; }

    /// <summary>The control connection, memory and rings.</summary>
    public VhostUserFrontend Frontend => _frontend;

    /// <summary>The receive queue (receiveq<c>N+1</c>, vring 2N for pair N): the device writes frames into its buffers.</summary>
    public FrontendQueue Receive { get; }

    /// <summary>The transmit queue (transmitq<c>N+1</c>, vring 2N+1 for pair N): the device reads frames from its buffers.</summary>
    public FrontendQueue Transmit { get; }

    /// <summary>True when VIRTIO_NET_F_MRG_RXBUF was negotiated: a received frame may span several buffers.</summary>
    public bool Mergeable { get; }

    /// <summary>
    /// The queue pair's data path underneath, for a caller that drives the rings and doorbells itself
    /// (its own burst and wait policy). Frames sent or taken through it are not flushed by <see cref="Flush"/>.
    /// Over plain split or packed rings it is a <see cref="NetDriverPath{TTx, TRx}"/> of that
    /// format's ring structs (<see cref="NetDriverPath.ForRings"/>); a caller's own hot loop gets
    /// it typed so through <see cref="INetDriverPath.Accept{TResult}"/>.
    /// </summary>
    public INetDriverPath Path => _path;

    /// <summary>Bytes per receive buffer, the virtio-net header included.</summary>
    public int ReceiveBufferSize { get; }

    /// <summary>Largest frame <see cref="TrySend"/> and a transmit lease take, in bytes: at least what was asked for (buffers are whole cache lines).</summary>
    public int MaxFrameSize => _path.MaxFrameSize;

    /// <summary>False once the back-end has gone away (see <see cref="VhostUserFrontend.IsConnected"/>).</summary>
    public bool IsConnected => _frontend.IsConnected;

    /// <summary>
    /// True once either queue is broken: the device reported it (<see cref="VhostUserFrontend.QueueBroken"/>)
    /// or broke a rule this side's ring caught. <see cref="BrokenDescription"/> says which; the data
    /// path then throws a <see cref="VirtioNetBrokenException"/> rather than wait for frames that cannot come.
    /// </summary>
    public bool IsBroken => Transmit.DeviceBroken || Receive.DeviceBroken || Transmit.Ring.IsBroken || Receive.Ring.IsBroken;

    /// <summary>Why the data path stopped, naming the queue, or null while it works.</summary>
    public string? BrokenDescription => Transmit.BrokenDescription ?? Receive.BrokenDescription;

    /// <summary>Frames received with a bad header, length or <c>num_buffers</c>, and discarded.</summary>
    public long ReceiveErrors => _path.ReceiveErrors;

    /// <summary>
    /// Connects to the back-end at <see cref="VhostUserFrontendOptions.SocketPath"/>, negotiates, and
    /// lays the data path out (see <see cref="VirtioNetDriver(VhostUserFrontend, int)"/>).
    /// </summary>
    /// <param name="options">What the front-end asks for (socket, memory, queue size, features, ring format).</param>
    /// <param name="maxFrameSize">The largest frame to transmit, in bytes (without the 12-byte header).</param>
    /// <returns>The driver, receive buffers posted.</returns>
    /// <exception cref="VhostUserException">The back-end refused something, went away, or did not answer in time (the code says which).</exception>
    /// <exception cref="ArgumentException">The options are invalid or the memory does not hold rings and buffers.</exception>
    public static VirtioNetDriver Connect(VhostUserFrontendOptions options, int maxFrameSize = DefaultMaxFrameSize)
    {
        var frontend = VhostUserFrontend.Connect(options);
        try
        {
            return new VirtioNetDriver(frontend, maxFrameSize);
        }
        catch
        {
            frontend.Dispose();
            throw;
        }
    }

    /// <summary>Copies <paramref name="frame"/> into a transmit buffer behind a zeroed header; the device sees it at <see cref="Flush"/>.</summary>
    /// <param name="frame">The Ethernet frame.</param>
    /// <returns>False when no transmit buffer is free (the device has not finished with enough yet).</returns>
    /// <exception cref="ArgumentException">The frame is larger than <see cref="MaxFrameSize"/>.</exception>
    /// <exception cref="VirtioNetBrokenException">No buffer was free because a queue is broken.</exception>
    public bool TrySend(ReadOnlySpan<byte> frame)
    {
        if (!_path.TrySend(frame))
        {
            ThrowIfBroken();
            return false;
        }

        _transmitPending = true;
        return true;
    }

    /// <summary>Leases a transmit buffer to build a frame in place in shared memory (zero copy).</summary>
    /// <param name="lease">Write the frame into <see cref="TransmitLease.Frame"/>, then call <see cref="Submit(in TransmitLease, int)"/>.</param>
    /// <returns>False when no transmit buffer is free.</returns>
    public bool TryLeaseTransmit(out TransmitLease lease) => _path.TryLeaseTransmit(out lease);

    /// <summary>Queues a leased buffer holding a frame of <paramref name="length"/> bytes; the device sees it at <see cref="Flush"/>.</summary>
    /// <param name="lease">A lease from <see cref="TryLeaseTransmit"/>.</param>
    /// <param name="length">The frame's length in bytes.</param>
    /// <returns>False when the ring refused it (broken); the buffer is then free again.</returns>
    public bool Submit(in TransmitLease lease, int length) => Submit(lease, length, default);

    /// <summary>
    /// Queues a leased buffer holding a frame of <paramref name="length"/> bytes behind
    /// <paramref name="header"/> (a partial checksum or a GSO frame, 5.1.6.2, for a device that
    /// negotiated CSUM or HOST_TSO*); the device sees it at <see cref="Flush"/>.
    /// </summary>
    /// <param name="lease">A lease from <see cref="TryLeaseTransmit"/>.</param>
    /// <param name="length">The frame's length in bytes.</param>
    /// <param name="header">Its virtio-net header.</param>
    /// <returns>False when the ring refused it (broken); the buffer is then free again.</returns>
    public bool Submit(in TransmitLease lease, int length, VirtioNetHeader header)
    {
        if (!_path.Submit(lease, length, header))
        {
            return false;
        }

        _transmitPending = true;
        return true;
    }

    /// <summary>
    /// Makes what happened since the last flush visible to the device in one publication per queue:
    /// frames queued for transmit, and receive buffers freed by taking frames (posted again). Kicks
    /// each queue only when the device asked for it (2.7.13, 2.8.22).
    /// </summary>
    /// <exception cref="VirtioNetBrokenException">A queue is broken.</exception>
    public void Flush()
    {
        ThrowIfBroken();
        if (_transmitPending)
        {
            _transmitPending = false;
            if (_path.FlushTransmit())
            {
                Transmit.Kick.Signal();
            }
        }

        // Buffers come back from frames taken, and from bad frames discarded on the way.
        if (_receiveTaken || _path.ReceiveErrors != _receiveErrorsAtRefill)
        {
            _receiveTaken = false;
            _receiveErrorsAtRefill = _path.ReceiveErrors;
            if (_path.RefillReceive())
            {
                Receive.Kick.Signal();
            }
        }
    }

    /// <summary>Copies the next received frame (without its header) into <paramref name="destination"/>; its buffers go back to the device at <see cref="Flush"/>.</summary>
    /// <param name="destination">Where the frame goes.</param>
    /// <param name="length">The frame's full length; more than <paramref name="destination"/> holds when it was cut short.</param>
    /// <returns>False when no whole frame is waiting.</returns>
    /// <exception cref="VirtioNetBrokenException">No frame was waiting because a queue is broken.</exception>
    public bool TryReceive(Span<byte> destination, out int length)
    {
        if (!_path.TryReceive(destination, out length))
        {
            ThrowIfBroken();
            return false;
        }

        _receiveTaken = true;
        return true;
    }

    /// <summary>
    /// Lends the next received frame that sits in one buffer, in place in shared memory (zero copy),
    /// until <see cref="Release"/>. A frame spanning several buffers is not lent; take it with
    /// <see cref="TryReceive"/>.
    /// </summary>
    /// <param name="frame">The frame.</param>
    /// <returns>False when no single-buffer frame is at the head of the receive queue.</returns>
    public bool TryReceiveInPlace(out ReceivedFrame frame) => _path.TryReceiveInPlace(out frame);

    /// <summary>Gives a lent frame back; its buffer goes back to the device at <see cref="Flush"/>.</summary>
    /// <param name="frame">A frame from <see cref="TryReceiveInPlace"/>.</param>
    public void Release(in ReceivedFrame frame)
    {
        _path.Release(frame);
        _receiveTaken = true;
    }

    /// <summary>
    /// Flushes, then sleeps until the device returns a receive buffer or the time runs out. Asks
    /// for a call first and re-checks the ring, so a frame that arrives meanwhile is never slept
    /// through (2.7.10); polling callers never need this.
    /// </summary>
    /// <param name="timeoutMilliseconds">Longest sleep; -1 for no limit.</param>
    /// <returns>True when frames may be waiting, false when the time ran out.</returns>
    /// <exception cref="VirtioNetBrokenException">A queue is broken, or broke while this waited (it wakes at once when the device reports a break).</exception>
    public bool WaitForReceive(int timeoutMilliseconds)
    {
        Flush();
        var ring = Receive.Ring;
        var ready = _path.HasPendingReceive || ring.EnableUsedNotifications() || WaitForCall(timeoutMilliseconds);
        ring.DisableUsedNotifications();
        ThrowIfBroken();
        return ready;
    }

    /// <summary>
    /// Closes the connection, unmaps the memory and closes the doorbells (through the front-end),
    /// when this driver owns the front-end; a driver of one pair among several (<see cref="ForEachPair"/>)
    /// leaves that to whoever owns the front-end.
    /// </summary>
    public void Dispose()
    {
        if (_ownsFrontend)
        {
            _frontend.Dispose();
        }

        _breakSignal.Dispose();
    }

    /// <summary>
    /// One driver per queue pair of a connected front-end (<see cref="VhostUserFrontendOptions.QueuePairs"/>),
    /// each with its own share of the buffer area, for one thread per pair: pairs share nothing on the
    /// data path. None owns the front-end: the caller disposes the drivers, then the front-end.
    /// </summary>
    /// <param name="frontend">A connected front-end.</param>
    /// <param name="maxFrameSize">The largest frame to transmit, in bytes (without the 12-byte header).</param>
    /// <returns>The drivers, by pair; receive buffers posted.</returns>
    /// <exception cref="ArgumentException">The buffers of every pair do not fit in the memory left after the rings.</exception>
    public static VirtioNetDriver[] ForEachPair(VhostUserFrontend frontend, int maxFrameSize = DefaultMaxFrameSize)
    {
        ArgumentNullException.ThrowIfNull(frontend);
        var pairs = frontend.Queues.Count / 2;
        var drivers = new List<VirtioNetDriver>(pairs);
        try
        {
            for (var p = 0; p < pairs; p++)
            {
                drivers.Add(new VirtioNetDriver(frontend, maxFrameSize, p, pairs, ownsFrontend: false));
            }

            return [.. drivers];
        }
        catch
        {
            foreach (var d in drivers)
            {
                d.Dispose();
            }

            throw;
        }
    }

    // Sleeps on the receive call and both error doorbells' reports at once: a device that reports
    // a break wakes the sleeper instead of leaving it to its timeout.
    private bool WaitForCall(int timeoutMilliseconds)
    {
        Span<FileDescriptor> fds = [Receive.Call.Handle, _breakSignal.Handle];
        Span<bool> ready = stackalloc bool[2];
        if (Poll.WaitReadable(fds, timeoutMilliseconds, ready) == 0)
        {
            return false;
        }

        return ready[0] && Receive.Call.TryConsume(out _);
    }

    private void ThrowIfBroken()
    {
        if (BrokenDescription is { } why)
        {
            throw new VirtioNetBrokenException(why);
        }
    }

    private static int Align(int bytes) => (bytes + BufferAlignment - 1) / BufferAlignment * BufferAlignment;
}

/// <summary>
/// The data path of a <see cref="VirtioNetDriver"/> stopped because a queue is broken: the device
/// reported it, or broke a rule this side caught. The message names the queue; the device needs a
/// reset (a new connection) before frames move again.
/// </summary>
public sealed class VirtioNetBrokenException : IOException
{
    /// <summary>Creates the exception.</summary>
    /// <param name="message">What broke, naming the queue.</param>
    public VirtioNetBrokenException(string message)
        : base(message)
    {
    }
}
