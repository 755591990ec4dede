using System.Runtime.CompilerServices;

namespace Rings.Linux.Runtime;

/// <summary>
/// One port's evidence: frames and bytes each way, bursts, and drops by <see cref="DropReason"/>.
/// Written only by the worker that owns the port (plain increments, once per burst where it can);
/// read approximately from any thread (a monitor's once-a-second table). The one exception,
/// <see cref="CountShared"/>, is for drops found by another worker: those go to words of their
/// own, since an atomic add on a word the owner increments plainly could be overwritten by the
/// owner's read-modify-write and lost.
/// </summary>
public sealed class PortCounters
{
    private readonly long[] _drops = new long[DropReasons.Count];
    private readonly long[] _sharedDrops = new long[DropReasons.Count];

    /// <summary>Frames received from the peer (everything taken from it, dropped ones included).</summary>
    public long RxFrames;

    /// <summary>Ethernet bytes received (without virtio-net headers).</summary>
    public long RxBytes;

    /// <summary>Receive calls that returned at least one frame.</summary>
    public long RxBursts;

    /// <summary>Frames handed to the peer.</summary>
    public long TxFrames;

    /// <summary>Ethernet bytes handed to the peer.</summary>
    public long TxBytes;

    /// <summary>Transmit calls that handed over at least one frame.</summary>
    public long TxBursts;

    /// <summary>
    /// GSO frames cut in software for this port, which did not negotiate their segmentation
    /// offload (their segments count in <see cref="TxFrames"/>).
    /// </summary>
    public long SoftwareSegmented;

    /// <summary>Times the link went up or down.</summary>
    public long LinkChanges;

    /// <summary>Frames dropped for <paramref name="reason"/>.</summary>
    /// <param name="reason">The reason.</param>
    /// <returns>The count (read without a barrier: approximate while the worker runs).</returns>
    public long Drops(DropReason reason) => Volatile.Read(ref _drops[(int)reason]) + Volatile.Read(ref _sharedDrops[(int)reason]);

    /// <summary>Frames dropped for any reason.</summary>
    public long TotalDrops
    {
        get
        {
            long sum = 0;
            for (var i = 1; i < _drops.Length; i++)
            {
                sum += Drops((DropReason)i);
            }

            return sum;
        }
    }

    /// <summary>Counts <paramref name="frames"/> drops for <paramref name="reason"/>; the owning worker only.</summary>
    /// <param name="reason">The reason.</param>
    /// <param name="frames">How many frames.</param>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Count(DropReason reason, int frames = 1) => _drops[(int)reason] += frames;

    /// <summary>Counts drops from a thread that does not own the port (atomic, on words the owner never writes).</summary>
    /// <param name="reason">The reason.</param>
    /// <param name="frames">How many frames.</param>
    public void CountShared(DropReason reason, int frames = 1) => Interlocked.Add(ref _sharedDrops[(int)reason], frames);

    /// <summary>Records a receive burst of <paramref name="frames"/> frames and <paramref name="bytes"/> bytes.</summary>
    /// <param name="frames">Frames taken.</param>
    /// <param name="bytes">Their Ethernet bytes.</param>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Received(int frames, long bytes)
    {
        if (frames > 0)
        {
            RxFrames += frames;
            RxBytes += bytes;
            RxBursts++;
        }
    }

    /// <summary>Records a transmit burst of <paramref name="frames"/> frames and <paramref name="bytes"/> bytes.</summary>
    /// <param name="frames">Frames handed over.</param>
    /// <param name="bytes">Their Ethernet bytes.</param>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Transmitted(int frames, long bytes)
    {
        if (frames > 0)
        {
            TxFrames += frames;
            TxBytes += bytes;
            TxBursts++;
        }
    }

    /// <summary>A consistent-enough copy for display.</summary>
    /// <returns>The copy.</returns>
    public PortCounterSnapshot Snapshot()
    {
        var drops = new long[_drops.Length];
        for (var i = 0; i < drops.Length; i++)
        {
            drops[i] = Drops((DropReason)i);
        }

        return new PortCounterSnapshot(
            Volatile.Read(ref RxFrames), Volatile.Read(ref RxBytes), Volatile.Read(ref TxFrames), Volatile.Read(ref TxBytes), drops, Volatile.Read(ref SoftwareSegmented));
    }
}

/// <summary>A copy of a port's counters at one moment.</summary>
/// <param name="RxFrames">Frames received.</param>
/// <param name="RxBytes">Bytes received.</param>
/// <param name="TxFrames">Frames transmitted.</param>
/// <param name="TxBytes">Bytes transmitted.</param>
/// <param name="DropsByReason">Drops indexed by <see cref="DropReason"/>.</param>
/// <param name="SoftwareSegmented">GSO frames cut in software for the port (<see cref="PortCounters.SoftwareSegmented"/>).</param>
public sealed record PortCounterSnapshot(long RxFrames, long RxBytes, long TxFrames, long TxBytes, IReadOnlyList<long> DropsByReason, long SoftwareSegmented = 0)
{
    /// <summary>Drops for any reason.</summary>
    public long TotalDrops => DropsByReason.Sum();

    /// <summary>Drops for one reason.</summary>
    /// <param name="reason">The reason.</param>
    /// <returns>The count.</returns>
    public long Drops(DropReason reason) => DropsByReason[(int)reason];
}
