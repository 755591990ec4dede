namespace Rings.Linux.Diagnostics;

/// <summary>
/// One virtqueue a port drives, as monitoring sees it: its name, its side's counters and its health.
/// Read from a monitoring thread (approximate while the data path runs).
/// </summary>
/// <param name="Name">The virtio name of the queue (<c>receiveq</c>, <c>transmitq</c>, virtio 5.1.2).</param>
/// <param name="Counters">The counters of the side this process drives.</param>
/// <param name="Broken">Why the queue stopped, or <see cref="BrokenReason.None"/>.</param>
/// <param name="IsDevice">True for the device side (its notifications are calls), false for the driver side (kicks).</param>
public readonly record struct PortQueue(string Name, QueueCounters Counters, BrokenReason Broken, bool IsDevice)
{
    /// <summary>
    /// The metric label of a queue of queue pair <paramref name="pair"/>: "receiveq" or "transmitq"
    /// for the first pair (the label a one-pair port always had), then the virtio names
    /// "receiveq2", "transmitq2" and on (5.1.2: pair N holds receiveq<c>N+1</c> and transmitq<c>N+1</c>).
    /// </summary>
    /// <param name="kind">"receiveq" or "transmitq".</param>
    /// <param name="pair">The queue pair, from 0.</param>
    /// <returns>The label.</returns>
    public static string Label(string kind, int pair) => pair == 0 ? kind : $"{kind}{pair + 1}";

    /// <summary>The device side of a queue.</summary>
    /// <param name="name">The queue's name.</param>
    /// <param name="ring">The ring.</param>
    /// <returns>The view.</returns>
    public static PortQueue Of(string name, IDeviceRing ring) => new(name, ring.Counters, ring.BrokenReason, IsDevice: true);

    /// <summary>The driver side of a queue.</summary>
    /// <param name="name">The queue's name.</param>
    /// <param name="ring">The ring.</param>
    /// <returns>The view.</returns>
    public static PortQueue Of(string name, IDriverRing ring) => new(name, ring.Counters, ring.BrokenReason, IsDevice: false);
}
