using Microsoft.Extensions.Logging;

namespace Rings.Linux.Diagnostics;

/// <summary>
/// The event ids Rings logs with (<see cref="Microsoft.Extensions.Logging"/>), so that a log
/// pipeline can filter or alert on them. Only control-plane events are logged: nothing per frame.
/// </summary>
public static class RingsEvents
{
    /// <summary>A vhost-user back-end listens on its socket.</summary>
    public static readonly EventId Listening = new(1, nameof(Listening));

    /// <summary>A front-end connected to a back-end.</summary>
    public static readonly EventId Connected = new(2, nameof(Connected));

    /// <summary>A front-end's connection ended (cleanly or with the error that ended it).</summary>
    public static readonly EventId Disconnected = new(3, nameof(Disconnected));

    /// <summary>A front-end was closed at once: the back-end served its limit.</summary>
    public static readonly EventId Refused = new(4, nameof(Refused));

    /// <summary>Accepting a connection failed.</summary>
    public static readonly EventId AcceptFailed = new(5, nameof(AcceptFailed));

    /// <summary>A back-end in client mode starts connecting to its front-end.</summary>
    public static readonly EventId Connecting = new(6, nameof(Connecting));

    /// <summary>A back-end in client mode found no front-end listening and retries.</summary>
    public static readonly EventId ConnectRetry = new(7, nameof(ConnectRetry));

    /// <summary>Features and protocol features were negotiated (front-end side).</summary>
    public static readonly EventId Negotiated = new(10, nameof(Negotiated));

    /// <summary>A vhost-user message was refused (NACK) or ended the connection.</summary>
    public static readonly EventId ProtocolError = new(11, nameof(ProtocolError));

    /// <summary>A ring started (its kick and call set, its base known).</summary>
    public static readonly EventId RingStarted = new(20, nameof(RingStarted));

    /// <summary>A ring stopped (GET_VRING_BASE, or its connection ended).</summary>
    public static readonly EventId RingStopped = new(21, nameof(RingStopped));

    /// <summary>A ring's inflight region was used (or could not be) when the ring started.</summary>
    public static readonly EventId Inflight = new(22, nameof(Inflight));

    /// <summary>A split ring started where its used index says, not at the base the front-end sent.</summary>
    public static readonly EventId RingResumed = new(23, nameof(RingResumed));

    /// <summary>A queue was marked broken by a peer's violation; the reason says which.</summary>
    public static readonly EventId QueueBroken = new(30, nameof(QueueBroken));

    /// <summary>A port's link went up.</summary>
    public static readonly EventId PortUp = new(40, nameof(PortUp));

    /// <summary>A port's link went down.</summary>
    public static readonly EventId PortDown = new(41, nameof(PortDown));

    /// <summary>Something a port did or found on its control plane (device created, peer gone, ...).</summary>
    public static readonly EventId PortEvent = new(42, nameof(PortEvent));

    /// <summary>The data path caught an exception (a processor or port bug); logged at falling frequency.</summary>
    public static readonly EventId WorkerFault = new(50, nameof(WorkerFault));

    /// <summary>A worker could not be pinned to its CPU.</summary>
    public static readonly EventId WorkerNotPinned = new(51, nameof(WorkerNotPinned));

    /// <summary>A thread (a worker, a connection) did not stop by its deadline and was left behind.</summary>
    public static readonly EventId NotStopped = new(52, nameof(NotStopped));

    /// <summary>An event handler of the application failed.</summary>
    public static readonly EventId HandlerFailed = new(60, nameof(HandlerFailed));
}

/// <summary>The log messages, generated (no formatting unless the level is enabled).</summary>
internal static partial class RingsLog
{
    [LoggerMessage(EventId = 1, EventName = nameof(RingsEvents.Listening), Level = LogLevel.Debug, Message = "vhost-user backend {Socket}: listening")]
    public static partial void Listening(ILogger logger, string socket);

    [LoggerMessage(EventId = 2, EventName = nameof(RingsEvents.Connected), Level = LogLevel.Information, Message = "vhost-user backend {Socket}: front-end connected")]
    public static partial void Connected(ILogger logger, string socket);

    [LoggerMessage(EventId = 3, EventName = nameof(RingsEvents.Disconnected), Level = LogLevel.Information, Message = "vhost-user backend {Socket}: {How}")]
    public static partial void Disconnected(ILogger logger, string socket, string how);

    [LoggerMessage(EventId = 4, EventName = nameof(RingsEvents.Refused), Level = LogLevel.Warning, Message = "vhost-user backend {Socket}: refused a front-end: already serving {Limit}")]
    public static partial void Refused(ILogger logger, string socket, int limit);

    [LoggerMessage(EventId = 5, EventName = nameof(RingsEvents.AcceptFailed), Level = LogLevel.Error, Message = "vhost-user backend {Socket}: accept failed: {Error}")]
    public static partial void AcceptFailed(ILogger logger, string socket, string error);

    [LoggerMessage(EventId = 6, EventName = nameof(RingsEvents.Connecting), Level = LogLevel.Information, Message = "vhost-user backend {Socket}: connecting as a client")]
    public static partial void Connecting(ILogger logger, string socket);

    [LoggerMessage(EventId = 7, EventName = nameof(RingsEvents.ConnectRetry), Level = LogLevel.Information, Message = "vhost-user backend {Socket}: front-end not there yet ({Error}); retrying every {Interval} ms")]
    public static partial void ConnectRetry(ILogger logger, string socket, string error, int interval);

    [LoggerMessage(EventId = 10, EventName = nameof(RingsEvents.Negotiated), Level = LogLevel.Information, Message = "vhost-user frontend: connected to {Socket}, features 0x{Features:x}, protocol 0x{ProtocolFeatures:x}")]
    public static partial void Negotiated(ILogger logger, string socket, ulong features, ulong protocolFeatures);

    [LoggerMessage(EventId = 11, EventName = nameof(RingsEvents.ProtocolError), Level = LogLevel.Warning, Message = "vhost-user: {Action}: {Error}")]
    public static partial void ProtocolError(ILogger logger, string action, string error);

    [LoggerMessage(EventId = 20, EventName = nameof(RingsEvents.RingStarted), Level = LogLevel.Debug, Message = "vhost-user backend {Socket}: vring {Queue} started: {Format} ring of {Size}")]
    public static partial void RingStarted(ILogger logger, string socket, int queue, string format, int size);

    [LoggerMessage(EventId = 21, EventName = nameof(RingsEvents.RingStopped), Level = LogLevel.Debug, Message = "vhost-user backend {Socket}: vring {Queue} stopped")]
    public static partial void RingStopped(ILogger logger, string socket, int queue);

    [LoggerMessage(EventId = 22, EventName = nameof(RingsEvents.Inflight), Level = LogLevel.Information, Message = "vhost-user: {What}")]
    public static partial void Inflight(ILogger logger, string what);

    [LoggerMessage(EventId = 23, EventName = nameof(RingsEvents.RingResumed), Level = LogLevel.Information, Message = "vhost-user: vring {Queue}: base {Base} but used.idx {Used} in the ring; resuming at {Used} (buffers fetched but not used are fetched again)")]
    public static partial void RingResumed(ILogger logger, int queue, ushort @base, ushort used);

    [LoggerMessage(EventId = 30, EventName = nameof(RingsEvents.QueueBroken), Level = LogLevel.Warning, Message = "{Port}: {Queue} broken: {Reason}")]
    public static partial void QueueBroken(ILogger logger, string port, string queue, BrokenReason reason);

    [LoggerMessage(EventId = 40, EventName = nameof(RingsEvents.PortUp), Level = LogLevel.Information, Message = "{Port}: link up ({Reason})")]
    public static partial void PortUp(ILogger logger, string port, string reason);

    [LoggerMessage(EventId = 41, EventName = nameof(RingsEvents.PortDown), Level = LogLevel.Information, Message = "{Port}: link down ({Reason})")]
    public static partial void PortDown(ILogger logger, string port, string reason);

    [LoggerMessage(EventId = 42, EventName = nameof(RingsEvents.PortEvent), Level = LogLevel.Debug, Message = "{Port}: {Event}")]
    public static partial void PortEvent(ILogger logger, string port, string @event);

    [LoggerMessage(EventId = 50, EventName = nameof(RingsEvents.WorkerFault), Level = LogLevel.Error, Message = "worker {Worker}: {Type}: {Error} ({Count} so far)")]
    public static partial void WorkerFault(ILogger logger, int worker, string type, string error, long count);

    [LoggerMessage(EventId = 51, EventName = nameof(RingsEvents.WorkerNotPinned), Level = LogLevel.Warning, Message = "worker {Worker}: cannot pin to CPU {Cpu}: {Error}")]
    public static partial void WorkerNotPinned(ILogger logger, int worker, int cpu, string error);

    [LoggerMessage(EventId = 52, EventName = nameof(RingsEvents.NotStopped), Level = LogLevel.Warning, Message = "{What}")]
    public static partial void NotStopped(ILogger logger, string what);

    [LoggerMessage(EventId = 60, EventName = nameof(RingsEvents.HandlerFailed), Level = LogLevel.Error, Message = "{Source}: handler failed: {Error}")]
    public static partial void HandlerFailed(ILogger logger, string source, string error);
}
