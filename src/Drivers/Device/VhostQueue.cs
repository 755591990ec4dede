using Rings.Linux.Plumbing;
using Rings.Memory;

namespace Rings.Linux.Device;

/// <summary>
/// A started ring as the data path sees it: the device ring and its doorbells. Handed out by
/// <see cref="VhostUserSession.QueueStarted"/>; valid until <see cref="VhostUserSession.QueueStopped"/>
/// has returned for it. A stop handler must return only once no thread touches the ring or the
/// doorbells any more: the session then reads the ring's position and may close the descriptors
/// or unmap the memory.
/// </summary>
public sealed class VhostQueue
{
    private readonly VhostMemoryMap _memory;
    private readonly InflightRegion? _inflight;
    private volatile bool _enabled;
    private int _breakReported;

    internal VhostQueue(int index, IDeviceRing ring, VirtioFeatures features, EventFd? kick, EventFd? call, EventFd? error, VhostMemoryMap memory, bool enabled, InflightRegion? inflight = null)
    {
        _inflight = inflight;
        Index = index;
        Ring = ring;
        Features = features;
        Kick = kick;
        Call = call;
        Error = error;
        _memory = memory;
        BufferMemory = memory.Physical;
        _enabled = enabled;
    }

    /// <summary>The vring index (for virtio-net: even = receive queue, odd = transmit queue of pair index/2).</summary>
    public int Index { get; }

    /// <summary>The device side of the ring.</summary>
    public IDeviceRing Ring { get; }

    /// <summary>The ring format, as the negotiated features chose it.</summary>
    public RingFormat Format => RingFormat.Of(Features);

    /// <summary>The negotiated features.</summary>
    public VirtioFeatures Features { get; }

    /// <summary>The kick doorbell the driver rings; null when the front-end asked for polling.</summary>
    public EventFd? Kick { get; }

    /// <summary>The call doorbell to ring when the driver asked for it; null when none was given.</summary>
    public EventFd? Call { get; }

    /// <summary>The error doorbell (SET_VRING_ERR); null when none was given. See <see cref="ReportBroken"/>.</summary>
    public EventFd? Error { get; }

    /// <summary>True once <see cref="ReportBroken"/> has run for this ring.</summary>
    public bool BreakReported => Volatile.Read(ref _breakReported) != 0;

    /// <summary>
    /// Tells the front-end that the ring broke (the ring's <see cref="IDeviceRing.BrokenReason"/>
    /// says why): rings the error doorbell once, so the driver learns at once rather than waiting
    /// for buffers that never come back. The data path calls it when it finds the ring broken;
    /// idempotent and safe from any thread. GET_STATUS says NEEDS_RESET besides.
    /// </summary>
    public void ReportBroken()
    {
        if (Volatile.Read(ref _breakReported) == 0 && Interlocked.Exchange(ref _breakReported, 1) == 0)
        {
            Error?.Signal();
        }
    }

    /// <summary>Translates guest-physical buffer addresses.</summary>
    public GuestMemory BufferMemory { get; }

    /// <summary>
    /// Keeps the memory the ring and its buffers live in mapped until the lease is disposed, even
    /// after the session let go of it. A data path takes it before its thread starts and disposes
    /// it when the thread ends, so a thread that missed its stop deadline never reads unmapped memory.
    /// </summary>
    /// <returns>The lease.</returns>
    public IDisposable LeaseMemory()
    {
        var memory = _memory.Lease();
        if (_inflight is null)
        {
            return memory;
        }

        try
        {
            // The inflight region the ring records into (InflightDeviceRing) is held the same way.
            return new Leases(memory, _inflight.Lease());
        }
        catch (ObjectDisposedException)
        {
            memory.Dispose();
            throw;
        }
    }

    private sealed class Leases(IDisposable first, IDisposable second) : IDisposable
    {
        public void Dispose()
        {
            second.Dispose();
            first.Dispose();
        }
    }

    /// <summary>
    /// False while the front-end has the ring disabled (SET_VRING_ENABLE 0): a net device then
    /// must not supply receive buffers (vhost-user.rst, Ring states). The document has transmitted
    /// buffers discarded; <c>rings host</c> and the ports leave them in the ring until it is enabled
    /// again, as DPDK's vhost library does, so a pair turned off and on loses nothing.
    /// </summary>
    public bool Enabled
    {
        get => _enabled;
        internal set => _enabled = value;
    }
}

/// <summary>Carries the queue a start, stop or enable change concerns.</summary>
public sealed class VhostQueueEventArgs : EventArgs
{
    private string? _notStopped;

    /// <summary>Creates the arguments.</summary>
    /// <param name="queue">The queue.</param>
    /// <param name="stopTimeoutMilliseconds">For a stop: how long the handler may take to make its data path let go.</param>
    public VhostQueueEventArgs(VhostQueue queue, int stopTimeoutMilliseconds = Timeout.Infinite)
    {
        Queue = queue;
        StopTimeoutMilliseconds = stopTimeoutMilliseconds;
    }

    /// <summary>The queue.</summary>
    public VhostQueue Queue { get; }

    /// <summary>For a stop: how long the handler may wait for its data path to let go of the queue.</summary>
    public int StopTimeoutMilliseconds { get; }

    /// <summary>For a stop: why the data path did not let go in time, or null when it did.</summary>
    public string? NotStopped => Volatile.Read(ref _notStopped);

    /// <summary>
    /// Says that the data path did not let go of the queue within <see cref="StopTimeoutMilliseconds"/>
    /// (a thread is stuck, typically on a doorbell its front-end blocked). The session then marks the
    /// ring broken and closes the connection; memory stays mapped while a <see cref="VhostQueue.LeaseMemory"/>
    /// lease holds it, so the stuck thread keeps its own lease.
    /// </summary>
    /// <param name="detail">What did not stop, for the log.</param>
    public void ReportNotStopped(string detail) => Volatile.Write(ref _notStopped, detail ?? "no detail");
}
