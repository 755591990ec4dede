using System.Numerics;
using System.Runtime.CompilerServices;

namespace Rings;

/// <summary>
/// One queue side's evidence: what moved, in what bursts, and what each notification decision
/// was. Statistics only: the ring that owns them updates them on the thread that owns the side
/// (readable, approximately, from any thread), and nothing here decides the queue's health;
/// that is the ring's (<see cref="IDeviceRing.BrokenReason"/>, <see cref="IDriverRing.BrokenReason"/>).
/// </summary>
public sealed class QueueCounters
{
    /// <summary>Number of burst-size buckets: bucket k counts bursts of 2^k .. 2^(k+1)-1 chains.</summary>
    public const int BurstBuckets = 16;

    private readonly long[] _burstHistogram = new long[BurstBuckets];

    /// <summary>
    /// Chains (packets) that went through this side: a driver counts one when it makes it
    /// available, a device when it returns it used (a pop given back and popped again counts once).
    /// </summary>
    public long Packets { get; internal set; }

    /// <summary>Payload bytes that went through this side.</summary>
    public long Bytes { get; internal set; }

    /// <summary>Publishes of the ring index that carried at least one chain.</summary>
    public long Bursts { get; private set; }

    /// <summary>Notifications sent to the peer (kicks from a driver, calls from a device).</summary>
    public long NotificationsSent { get; private set; }

    /// <summary>Notification decisions that found the peer did not want one.</summary>
    public long NotificationsSuppressed { get; private set; }

    /// <summary>Frames dropped for want of a buffer (counted by whoever dropped them, see <see cref="RecordDrop"/>).</summary>
    public long Drops { get; private set; }

    /// <summary>Times this queue was marked broken (a reset and a new break count again).</summary>
    public long BrokenCount { get; private set; }

    /// <summary>Burst sizes in power-of-two buckets (see <see cref="BurstBuckets"/>).</summary>
    public ReadOnlySpan<long> BurstHistogram => _burstHistogram;

    /// <summary>Mean chains per burst.</summary>
    public double MeanBurst => Bursts == 0 ? 0 : (double)Packets / Bursts;

    /// <summary>
    /// Counts a frame dropped above the ring (a ring never drops: the data path that found no room
    /// for a frame in this queue's buffers says so here).
    /// </summary>
    public void RecordDrop() => Drops++;

    /// <summary>Sets every statistic back to zero. The queue's health is the ring's and does not change.</summary>
    public void Clear()
    {
        Packets = Bytes = Bursts = NotificationsSent = NotificationsSuppressed = Drops = BrokenCount = 0;
        Array.Clear(_burstHistogram);
    }

    /// <summary>Records one publish of <paramref name="chains"/> chains.</summary>
    /// <param name="chains">Chains made visible by the publish; zero is ignored.</param>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void RecordBurst(int chains)
    {
        if (chains <= 0)
        {
            return;
        }

        Bursts++;
        var bucket = BitOperations.Log2((uint)chains);
        _burstHistogram[bucket < BurstBuckets ? bucket : BurstBuckets - 1]++;
    }

    /// <summary>Records a notification decision.</summary>
    /// <param name="sent">True when a notification is to be sent.</param>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void RecordNotification(bool sent)
    {
        if (sent)
        {
            NotificationsSent++;
        }
        else
        {
            NotificationsSuppressed++;
        }
    }

    /// <summary>
    /// A ring's break: sets <paramref name="state"/> to <paramref name="reason"/> unless the ring is
    /// already broken (the first reason is kept), and counts the break.
    /// </summary>
    /// <param name="state">The ring's broken reason.</param>
    /// <param name="reason">Why.</param>
    /// <returns>Always false, so a failing ring operation can return it directly.</returns>
    internal bool Break(ref BrokenReason state, BrokenReason reason)
    {
        if (state == BrokenReason.None)
        {
            state = reason;
            BrokenCount++;
        }

        return false;
    }
}
