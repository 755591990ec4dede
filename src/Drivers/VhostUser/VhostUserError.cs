namespace Rings.Linux.VhostUser;

/// <summary>
/// Why a vhost-user message, request or connection failed: the one list of control-plane errors,
/// shared by the codec, the channel, the back-end's handlers and the front-end. The wire never
/// carries these (a refused request is NACKed with a bare non-zero u64); they are for logs,
/// counters and callers.
/// </summary>
public enum VhostUserErrorCode
{
    /// <summary>No error.</summary>
    None = 0,

    // ---- Framing and payloads ----------------------------------------------------------

    /// <summary>Fewer bytes than a header.</summary>
    Truncated,

    /// <summary>The header's size field does not match the bytes that follow it.</summary>
    SizeMismatch,

    /// <summary>The version bits are not 1.</summary>
    BadVersion,

    /// <summary>A request carries the REPLY flag, or a reply lacks it.</summary>
    BadReplyFlag,

    /// <summary>The request code is unknown or not supported.</summary>
    UnknownRequest,

    /// <summary>The payload's size or shape is wrong for the request.</summary>
    BadPayloadSize,

    /// <summary>The header announces a payload larger than any this side reads.</summary>
    PayloadTooLarge,

    /// <summary>Bits that must be zero are set (vring file index above bit 8, vring address flags).</summary>
    ReservedBitsSet,

    /// <summary>A value does not fit its field or is not one of the allowed values (enable, status).</summary>
    ValueOutOfRange,

    // ---- Descriptors (SCM_RIGHTS) ------------------------------------------------------

    /// <summary>Fewer descriptors than the request's descriptor rule requires.</summary>
    MissingDescriptor,

    /// <summary>More descriptors than the request's descriptor rule allows.</summary>
    UnexpectedDescriptor,

    /// <summary>A descriptor is not of the type its request needs (a kick that is not an eventfd).</summary>
    WrongDescriptorType,

    // ---- Negotiation -------------------------------------------------------------------

    /// <summary>Features, protocol features, queues or memory slots asked for were not offered.</summary>
    NotOffered,

    /// <summary>The request needs a protocol feature that was not negotiated.</summary>
    NotNegotiated,

    // ---- Memory ------------------------------------------------------------------------

    /// <summary>A memory table lists more regions than allowed.</summary>
    TooManyRegions,

    /// <summary>A region is empty, wraps, overlaps another, or is not there to remove.</summary>
    BadRegion,

    /// <summary>A region cannot be mapped (it reaches past the end of its file, or the kernel refused).</summary>
    MapFailed,

    /// <summary>The front-end asks for more than its budget (memory, rings, descriptors).</summary>
    BudgetExceeded,

    // ---- Rings -------------------------------------------------------------------------

    /// <summary>A vring index is not below the number of vrings the device has.</summary>
    RingIndexOutOfRange,

    /// <summary>The request needs a stopped ring and the ring is running.</summary>
    RingRunning,

    /// <summary>The queue size is not valid for the ring format.</summary>
    QueueSizeInvalid,

    /// <summary>The ring base does not fit the ring format or points past the ring.</summary>
    RingBaseInvalid,

    /// <summary>A ring area is outside every memory region, or misaligned.</summary>
    BadRingAddress,

    /// <summary>An application handler of a queue event threw.</summary>
    HandlerFailed,

    // ---- What the front-end sees of the back-end ----------------------------------------

    /// <summary>The back-end refused the request (REPLY_ACK with a non-zero value, or FEATURES_OK cleared).</summary>
    Refused,

    /// <summary>A reply names another request or another vring than the one asked about.</summary>
    UnexpectedReply,

    // ---- The connection ----------------------------------------------------------------

    /// <summary>A deadline on the peer passed: no reply in time, or a message stalled half-way.</summary>
    Timeout,

    /// <summary>The peer closed the connection.</summary>
    PeerClosed,

    /// <summary>The socket failed (connect, send or receive error from the kernel).</summary>
    SocketError,

    /// <summary>This side is shutting down and ended the connection.</summary>
    Shutdown,

    /// <summary>The peer's user (SO_PEERCRED) is not one this side serves.</summary>
    PeerNotAllowed,

    /// <summary>A bug: an unexpected exception ended the request or the connection.</summary>
    InternalError,
}

/// <summary>
/// One control-plane error: its code, the request it concerns (<see cref="VhostUserRequest.None"/>
/// when none), and a short detail for logs. <c>default</c> is "no error".
/// </summary>
/// <param name="Code">What went wrong.</param>
/// <param name="Request">The request it concerns, or <see cref="VhostUserRequest.None"/>.</param>
/// <param name="Detail">A short human-readable detail (values, indices), or null.</param>
public readonly record struct VhostUserError(VhostUserErrorCode Code, VhostUserRequest Request, string? Detail)
{
    /// <summary>Creates an error not (yet) tied to a request.</summary>
    /// <param name="code">What went wrong.</param>
    /// <param name="detail">A short detail.</param>
    public VhostUserError(VhostUserErrorCode code, string? detail)
        : this(code, VhostUserRequest.None, detail)
    {
    }

    /// <summary>No error.</summary>
    public static VhostUserError None => default;

    /// <summary>True unless <see cref="Code"/> is <see cref="VhostUserErrorCode.None"/>.</summary>
    public bool IsError => Code != VhostUserErrorCode.None;

    /// <summary>
    /// True when the connection itself is gone or unusable (<see cref="VhostUserErrorCode.PeerClosed"/>,
    /// <see cref="VhostUserErrorCode.Timeout"/>, <see cref="VhostUserErrorCode.SocketError"/>,
    /// <see cref="VhostUserErrorCode.Shutdown"/>), as opposed to a request the peer refused or sent wrong.
    /// </summary>
    public bool IsConnectionLost => Code is VhostUserErrorCode.PeerClosed or VhostUserErrorCode.Timeout or VhostUserErrorCode.SocketError or VhostUserErrorCode.Shutdown;

    /// <summary>The same error tied to <paramref name="request"/> (unless it already names one).</summary>
    /// <param name="request">The request.</param>
    /// <returns>The error.</returns>
    public VhostUserError About(VhostUserRequest request) => Request == VhostUserRequest.None ? this with { Request = request } : this;

    /// <summary>"Request (n): Code: detail", for logs.</summary>
    /// <returns>The text.</returns>
    public override string ToString()
    {
        if (!IsError)
        {
            return "ok";
        }

        var request = Request == VhostUserRequest.None ? null
            : Enum.IsDefined(Request) ? $"{Request} ({(uint)Request}): " : $"request {(uint)Request}: ";
        return string.IsNullOrEmpty(Detail) ? $"{request}{Code}" : $"{request}{Code}: {Detail}";
    }
}

/// <summary>
/// A vhost-user request failed or the connection broke, as the front-end reports it. An
/// <see cref="IOException"/>, so code that handles I/O failures keeps working; <see cref="Code"/>
/// tells a refused request (<see cref="VhostUserErrorCode.Refused"/>, <see cref="VhostUserErrorCode.NotOffered"/>, ...)
/// from a dead connection (<see cref="VhostUserError.IsConnectionLost"/>).
/// </summary>
public sealed class VhostUserException : IOException
{
    /// <summary>Creates the exception for <paramref name="error"/>.</summary>
    /// <param name="error">What went wrong.</param>
    /// <param name="inner">The exception that caused it, if any.</param>
    public VhostUserException(VhostUserError error, Exception? inner = null)
        : base(error.ToString(), inner)
    {
        Error = error;
    }

    /// <summary>The error.</summary>
    public VhostUserError Error { get; }

    /// <summary>The error's code.</summary>
    public VhostUserErrorCode Code => Error.Code;
}
