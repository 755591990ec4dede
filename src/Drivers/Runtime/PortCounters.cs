using System.Runtime.CompilerServices;

namespace Rings.Linux.Runtime;

/// <summary>
/// One port's evidence: frames and bytes each way, bursts, and drops by <see cref="DropReason"/>.
/// Kept in parts (<see cref="PortCounterPart"/>), each written by one worker only with plain
/// increments, and summed when read: one part for a port one worker serves, one part per worker
/// when the pipeline spreads the port's queue pairs over several (<see cref="Ports.Port.Lanes"/>),
/// so no two workers ever write the same word and no counter needs a lock or an atomic add.
/// Reads from any thread are approximate (a monitor's once-a-second table). The one exception,
/// <see cref="CountShared"/>, is for drops found by a worker that does not serve the port: those
/// go to words of their own, since an atomic add on a word the owner increments plainly could be
/// overwritten by the owner's read-modify-write and lost.
/// </summary>
public sealed class PortCounters
{
    private readonly long[] _sharedDrops = new long[DropReasons.Count];
    private volatile PortCounterPart[] _parts = [new PortCounterPart()];

    /// <summary>Times the link went up or down (control threads, atomic).</summary>
    public long LinkChanges;

    /// <summary>Frames received from the peer (everything taken from it, dropped ones included).</summary>
    public long RxFrames => Sum(static p => Volatile.Read(ref p.RxFrames));

    /// <summary>Ethernet bytes received (without virtio-net headers).</summary>
    public long RxBytes => Sum(static p => Volatile.Read(ref p.RxBytes));

    /// <summary>Receive calls that returned at least one frame.</summary>
    public long RxBursts => Sum(static p => Volatile.Read(ref p.RxBursts));

    /// <summary>Frames handed to the peer.</summary>
    public long TxFrames => Sum(static p => Volatile.Read(ref p.TxFrames));

    /// <summary>Ethernet bytes handed to the peer.</summary>
    public long TxBytes => Sum(static p => Volatile.Read(ref p.TxBytes));

    /// <summary>Transmit calls that handed over at least one frame.</summary>
    public long TxBursts => Sum(static p => Volatile.Read(ref p.TxBursts));

    /// <summary>
    /// GSO frames cut in software for this port, which did not negotiate their segmentation
    /// offload (their segments count in <see cref="TxFrames"/>).
    /// </summary>
    public long SoftwareSegmented => Sum(static p => Volatile.Read(ref p.SoftwareSegmented));

    /// <summary>The parts: one, or one per worker of the pipeline when the port's queue pairs are spread over workers (part k is worker k's).</summary>
    public IReadOnlyList<PortCounterPart> Parts => _parts;

    /// <summary>
    /// The part worker <paramref name="worker"/> writes: its own when the port is spread over
    /// workers, the only one otherwise (only the worker that serves the port writes it then).
    /// </summary>
    /// <param name="worker">The worker's index in its pipeline.</param>
    /// <returns>The part.</returns>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public PortCounterPart For(int worker)
    {
        var parts = _parts;
        return (uint)worker < (uint)parts.Length ? parts[worker] : parts[0];
    }

    /// <summary>Frames dropped for <paramref name="reason"/>.</summary>
    /// <param name="reason">The reason.</param>
    /// <returns>The count (read without a barrier: approximate while workers run).</returns>
    public long Drops(DropReason reason)
    {
        var sum = Volatile.Read(ref _sharedDrops[(int)reason]);
        foreach (var p in _parts)
        {
            sum += p.Drops(reason);
        }

        return sum;
    }

    /// <summary>Frames dropped for any reason.</summary>
    public long TotalDrops
    {
        get
        {
            long sum = 0;
            for (var i = 1; i < DropReasons.Count; i++)
            {
                sum += Drops((DropReason)i);
            }

            return sum;
        }
    }

    /// <summary>Counts <paramref name="frames"/> drops for <paramref name="reason"/> in the first part; the one worker serving the port only.</summary>
    /// <param name="reason">The reason.</param>
    /// <param name="frames">How many frames.</param>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Count(DropReason reason, int frames = 1) => _parts[0].Count(reason, frames);

    /// <summary>Counts drops from a thread that does not serve the port (atomic, on words no worker writes plainly).</summary>
    /// <param name="reason">The reason.</param>
    /// <param name="frames">How many frames.</param>
    public void CountShared(DropReason reason, int frames = 1) => Interlocked.Add(ref _sharedDrops[(int)reason], frames);

    /// <summary>Records a receive burst in the first part; the one worker serving the port only.</summary>
    /// <param name="frames">Frames taken.</param>
    /// <param name="bytes">Their Ethernet bytes.</param>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Received(int frames, long bytes) => _parts[0].Received(frames, bytes);

    /// <summary>Records a transmit burst in the first part; the one worker serving the port only.</summary>
    /// <param name="frames">Frames handed over.</param>
    /// <param name="bytes">Their Ethernet bytes.</param>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Transmitted(int frames, long bytes) => _parts[0].Transmitted(frames, bytes);

    /// <summary>A consistent-enough copy for display.</summary>
    /// <returns>The copy.</returns>
    public PortCounterSnapshot Snapshot()
    {
        var drops = new long[DropReasons.Count];
        for (var i = 0; i < drops.Length; i++)
        {
            drops[i] = Drops((DropReason)i);
        }

        return new PortCounterSnapshot(RxFrames, RxBytes, TxFrames, TxBytes, drops, SoftwareSegmented);
    }

    /// <summary>
    /// Gives each of <paramref name="workers"/> workers a part of its own (the pipeline, before its
    /// workers start, for a port spread over them). What the first part counted stays.
    /// </summary>
    /// <param name="workers">Workers of the pipeline.</param>
    internal void Spread(int workers)
    {
        var parts = new PortCounterPart[Math.Max(1, workers)];
        parts[0] = _parts[0];
        for (var w = 1; w < parts.Length; w++)
        {
            parts[w] = new PortCounterPart();
        }

        // Release: the parts are complete before a worker or a reader sees the array.
        _parts = parts;
    }

    private long Sum(Func<PortCounterPart, long> field)
    {
        long sum = 0;
        foreach (var p in _parts)
        {
            sum += field(p);
        }

        return sum;
    }
}

/// <summary>
/// The counters one worker keeps for one port (<see cref="PortCounters.For"/>): written by that
/// worker only, with plain increments once per burst where it can; read approximately from any
/// thread. A port's totals are the sums over its parts.
/// </summary>
public sealed class PortCounterPart
{
    private readonly long[] _drops = new long[DropReasons.Count];

    /// <summary>Frames received from the peer.</summary>
    public long RxFrames;

    /// <summary>Ethernet bytes received.</summary>
    public long RxBytes;

    /// <summary>Receive calls that returned at least one frame.</summary>
    public long RxBursts;

    /// <summary>Frames handed to the peer.</summary>
    public long TxFrames;

    /// <summary>Ethernet bytes handed to the peer.</summary>
    public long TxBytes;

    /// <summary>Transmit calls that handed over at least one frame.</summary>
    public long TxBursts;

    /// <summary>GSO frames cut in software for the port.</summary>
    public long SoftwareSegmented;

    /// <summary>Frames this part counted dropped for <paramref name="reason"/>.</summary>
    /// <param name="reason">The reason.</param>
    /// <returns>The count (approximate while the worker runs).</returns>
    public long Drops(DropReason reason) => Volatile.Read(ref _drops[(int)reason]);

    /// <summary>Counts <paramref name="frames"/> drops for <paramref name="reason"/>.</summary>
    /// <param name="reason">The reason.</param>
    /// <param name="frames">How many frames.</param>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Count(DropReason reason, int frames = 1) => _drops[(int)reason] += frames;

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
