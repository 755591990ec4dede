using System.Numerics;
using System.Runtime.CompilerServices;

namespace Rings;

/// <summary>
/// One queue side's evidence: what moved, in what bursts, and what each notification decision
/// was. Written by the thread that owns the side; readable (approximately) from any thread.
/// </summary>
public sealed class QueueCounters
{
    /// <summary>Number of burst-size buckets: bucket k counts bursts of 2^k .. 2^(k+1)-1 chains.</summary>
    public const int BurstBuckets = 16;

    /// <summary>Chains (packets) that went through this side.</summary>
    public long Packets;

    /// <summary>Payload bytes that went through this side.</summary>
    public long Bytes;

    /// <summary>Publishes of the ring index that carried at least one chain.</summary>
    public long Bursts;

    /// <summary>Notifications sent to the peer (kicks from a driver, calls from a device).</summary>
    public long NotificationsSent;

    /// <summary>Notification decisions that found the peer did not want one.</summary>
    public long NotificationsSuppressed;

    /// <summary>Frames dropped for want of a buffer.</summary>
    public long Drops;

    /// <summary>Times this queue was marked broken.</summary>
    public long BrokenCount;

    /// <summary>The reason of the last break, or <see cref="Rings.BrokenReason.None"/>.</summary>
    public BrokenReason BrokenReason;

    /// <summary>Burst sizes in power-of-two buckets (see <see cref="BurstBuckets"/>).</summary>
    public readonly long[] BurstHistogram = new long[BurstBuckets];

    /// <summary>Mean chains per burst.</summary>
    public double MeanBurst => Bursts == 0 ? 0 : (double)Packets / Bursts;

    /// <summary>Records one publish of <paramref name="chains"/> chains.</summary>
    /// <param name="chains">Chains made visible by the publish; zero is ignored.</param>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void RecordBurst(int chains)
    {
        if (chains <= 0)
        {
            return;
        }

        Bursts++;
        var bucket = BitOperations.Log2((uint)chains);
        BurstHistogram[bucket < BurstBuckets ? bucket : BurstBuckets - 1]++;
    }

    /// <summary>Records a notification decision.</summary>
    /// <param name="sent">True when a notification is to be sent.</param>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void RecordNotification(bool sent)
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
    /// Marks the queue broken with <paramref name="reason"/>, unless it already is (the first
    /// reason is kept), and counts the break.
    /// </summary>
    /// <param name="reason">Why.</param>
    /// <returns>Always false, so a failing ring operation can return it directly.</returns>
    public bool Break(BrokenReason reason)
    {
        if (BrokenReason == BrokenReason.None)
        {
            BrokenReason = reason;
            BrokenCount++;
        }

        return false;
    }

    /// <summary>Sets every counter back to zero.</summary>
    public void Clear()
    {
        Packets = Bytes = Bursts = NotificationsSent = NotificationsSuppressed = Drops = BrokenCount = 0;
        BrokenReason = BrokenReason.None;
        Array.Clear(BurstHistogram);
    }
}
