using Rings.Linux.Plumbing;


namespace Rings.Linux.VhostUser;

/// <summary>What <see cref="VhostUserChannel.Receive"/> got.</summary>
public enum ReceiveStatus
{
    /// <summary>A whole message (header and payload) is in the buffer.</summary>
    Message,

    /// <summary>Nothing arrived in time (only before the first byte of a message).</summary>
    Timeout,

    /// <summary>The peer closed the connection between messages.</summary>
    PeerClosed,

    /// <summary>The stop descriptor became readable.</summary>
    Stopped,

    /// <summary>The stream broke: closed or stalled mid-message, oversized payload, too many fds, or a socket error.</summary>
    Error,
}

/// <summary>
/// Message framing over a connected Unix socket: reads exactly one header and the payload it
/// announces (never more than <see cref="VhostUserConstants.MaxPayloadBytes"/>), collecting the
/// descriptors that ride along; sends encoded messages with their descriptors.
/// </summary>
public sealed class VhostUserChannel : IDisposable
{
    private readonly byte[] _buffer = new byte[VhostUserConstants.HeaderBytes + VhostUserConstants.MaxPayloadBytes];
    private readonly byte[] _sendBuffer = new byte[VhostUserConstants.HeaderBytes + Math.Max(VhostUserConstants.MaxSupportedPayloadBytes, VhostUserConstants.ConfigHeaderBytes + VhostUserConstants.MaxConfigBytes)];

    /// <summary>Wraps a connected socket (taking ownership).</summary>
    /// <param name="socket">The connection.</param>
    public VhostUserChannel(UnixSocket socket)
    {
        Socket = socket ?? throw new ArgumentNullException(nameof(socket));
    }

    /// <summary>The connection.</summary>
    public UnixSocket Socket { get; }

    /// <summary>How long the rest of a message may take once its first byte arrived.</summary>
    public int MessageTimeoutMilliseconds { get; set; } = 5000;

    /// <summary>The last message received (valid until the next receive).</summary>
    public ReadOnlySpan<byte> Received => _buffer.AsSpan(0, ReceivedLength);

    /// <summary>Bytes of the last message received.</summary>
    public int ReceivedLength { get; private set; }

    /// <summary>
    /// Why the last <see cref="Receive"/> returned something other than a message:
    /// <see cref="VhostUserErrorCode.Timeout"/>, <see cref="VhostUserErrorCode.PeerClosed"/>,
    /// <see cref="VhostUserErrorCode.Shutdown"/> (stopped), <see cref="VhostUserErrorCode.PayloadTooLarge"/>
    /// or <see cref="VhostUserErrorCode.SocketError"/>; no error after a message.
    /// </summary>
    public VhostUserError LastError { get; private set; }

    /// <summary>
    /// Receives one message into <see cref="Received"/>. Descriptors that arrive are appended to
    /// <paramref name="fds"/> and belong to the caller whatever the status.
    /// </summary>
    /// <param name="fds">Receives the descriptors.</param>
    /// <param name="timeoutMilliseconds">How long to wait for the first byte; -1 forever.</param>
    /// <param name="stop">When readable, the wait ends with <see cref="ReceiveStatus.Stopped"/>.</param>
    /// <returns>The status.</returns>
    public ReceiveStatus Receive(List<FileDescriptor> fds, int timeoutMilliseconds = -1, FileDescriptor? stop = null)
    {
        ReceivedLength = 0;
        LastError = VhostUserError.None;
        var status = ReadExact(_buffer.AsSpan(0, VhostUserConstants.HeaderBytes), fds, timeoutMilliseconds, stop, first: true);
        if (status != ReceiveStatus.Message)
        {
            return status;
        }

        VhostUserCodec.TryReadHeader(_buffer, out var request, out _, out var size);
        if (size > VhostUserConstants.MaxPayloadBytes)
        {
            LastError = new VhostUserError(VhostUserErrorCode.PayloadTooLarge, request, $"a {size}-byte payload announced (limit {VhostUserConstants.MaxPayloadBytes})");
            return ReceiveStatus.Error;
        }

        if (size > 0)
        {
            status = ReadExact(_buffer.AsSpan(VhostUserConstants.HeaderBytes, (int)size), fds, MessageTimeoutMilliseconds, stop, first: false);
            if (status != ReceiveStatus.Message)
            {
                return status;
            }
        }

        ReceivedLength = VhostUserConstants.HeaderBytes + (int)size;
        return ReceiveStatus.Message;
    }

    /// <summary>Encodes and sends a message with its descriptors.</summary>
    /// <param name="message">The message.</param>
    /// <param name="fds">Descriptors to pass (the caller keeps them).</param>
    public void Send(in VhostUserMessage message, ReadOnlySpan<FileDescriptor> fds = default)
    {
        var length = VhostUserCodec.Encode(message, _sendBuffer);
        Socket.Send(_sendBuffer.AsSpan(0, length), fds);
    }

    /// <summary>Sends bytes as they are (tests use it to send malformed messages).</summary>
    /// <param name="bytes">The bytes.</param>
    /// <param name="fds">Descriptors to pass.</param>
    public void SendRaw(ReadOnlySpan<byte> bytes, ReadOnlySpan<FileDescriptor> fds = default) => Socket.Send(bytes, fds);

    /// <summary>Closes the connection.</summary>
    public void Dispose() => Socket.Dispose();

    private ReceiveStatus ReadExact(Span<byte> target, List<FileDescriptor> fds, int timeoutMilliseconds, FileDescriptor? stop, bool first)
    {
        var read = 0;
        Span<bool> ready = stackalloc bool[2];
        var deadline = timeoutMilliseconds > 0 ? Environment.TickCount64 + timeoutMilliseconds : 0;
        try
        {
            while (read < target.Length)
            {
                var startOfMessage = first && read == 0;
                var wait = timeoutMilliseconds <= 0 ? timeoutMilliseconds : (int)Math.Max(0, deadline - Environment.TickCount64);
                var n = stop is null
                    ? Poll.WaitReadable([Socket.Handle], wait, ready)
                    : Poll.WaitReadable([Socket.Handle, stop], wait, ready);
                if (stop is not null && ready[1])
                {
                    LastError = new VhostUserError(VhostUserErrorCode.Shutdown, "stopped while waiting for the peer");
                    return ReceiveStatus.Stopped;
                }

                if (n == 0)
                {
                    if (startOfMessage)
                    {
                        LastError = new VhostUserError(VhostUserErrorCode.Timeout, "nothing arrived in time");
                        return ReceiveStatus.Timeout;
                    }

                    LastError = new VhostUserError(VhostUserErrorCode.Timeout, "peer stalled in the middle of a message");
                    return ReceiveStatus.Error;
                }

                var got = Socket.Receive(target[read..], fds);
                if (got == 0)
                {
                    if (startOfMessage)
                    {
                        LastError = new VhostUserError(VhostUserErrorCode.PeerClosed, "peer closed the connection");
                        return ReceiveStatus.PeerClosed;
                    }

                    LastError = new VhostUserError(VhostUserErrorCode.PeerClosed, "peer closed the connection in the middle of a message");
                    return ReceiveStatus.Error;
                }

                read += got;

                // Later chunks of a message get the message timeout, not the idle one.
                if (startOfMessage && timeoutMilliseconds != MessageTimeoutMilliseconds)
                {
                    timeoutMilliseconds = MessageTimeoutMilliseconds;
                    deadline = Environment.TickCount64 + timeoutMilliseconds;
                }
            }

            return ReceiveStatus.Message;
        }
        catch (IOException e)
        {
            LastError = new VhostUserError(VhostUserErrorCode.SocketError, e.Message);
            return ReceiveStatus.Error;
        }
    }
}
