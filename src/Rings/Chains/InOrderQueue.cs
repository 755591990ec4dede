using System.Diagnostics;
using System.Runtime.CompilerServices;

namespace Rings.Chains;

/// <summary>
/// The order in which a driver made its outstanding buffers available, for VIRTIO_F_IN_ORDER
/// (virtio 1.2 sections 2.7.9 and 2.8.8): one used entry naming buffer id X returns X and every
/// buffer made available before it. A FIFO of ids plus, for a driver, a sequence number per id, so
/// the size of a batch is known in O(1) before any of it is reclaimed (a device, which learns the
/// batch's size from its own pops, keeps the FIFO alone).
/// </summary>
internal struct InOrderQueue
{
    private readonly ushort[] _ids;
    private readonly uint[]? _sequence;
    private int _head;
    private int _count;
    private uint _next;

    /// <summary>Creates a queue for ids below <paramref name="size"/>.</summary>
    /// <param name="size">The ring size: ids are below it, and never more are queued.</param>
    /// <param name="batchSizes">Whether <see cref="BatchSize"/> is asked (a driver's queue); without it
    /// no sequence numbers are kept, and runs go in whole with <see cref="AppendRun"/>.</param>
    public InOrderQueue(int size, bool batchSizes = true)
    {
        _ids = new ushort[size];
        _sequence = batchSizes ? new uint[size] : null;
    }

    /// <summary>Ids queued.</summary>
    public readonly int Count => _count;

    /// <summary>The ring of ids, for a run over the oldest ones with its index in a local (see <see cref="OldestIndex"/>).</summary>
    public readonly ushort[] Ring => _ids;

    /// <summary>Where the oldest id sits in <see cref="Ring"/>.</summary>
    public readonly int OldestIndex => _head;

    /// <summary>
    /// A driver's run of a batch ends at the batch's last buffer (2.7.9, 2.8.8): the buffers
    /// before it were used completely and were taken with their whole writable length; this one
    /// gets the length its used entry carries (checked against the buffer when the batch began).
    /// </summary>
    /// <param name="last">The used element taken for the batch's last buffer.</param>
    /// <param name="length">The length the batch's used entry carries.</param>
    /// <returns>How much that changes the run's byte count.</returns>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static long EndBatch(ref UsedElement last, uint length)
    {
        var change = (long)length - last.Length;
        last = last with { Length = length };
        return change;
    }

    /// <summary>Queues an id just made available.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Enqueue(ushort id)
    {
        var tail = _head + _count;
        if (tail >= _ids.Length)
        {
            tail -= _ids.Length;
        }

        _ids[tail] = id;
        if (_sequence != null)
        {
            _sequence[id] = _next++;
        }

        _count++;
    }

    /// <summary>
    /// Appends a run of ids at once, as many <see cref="Enqueue"/> calls would: one copy into the
    /// ring (two where it wraps) instead of a store per id, and for a queue with batch sizes a
    /// loop that numbers them. The caller passes its own scratch, never a span a peer can change.
    /// </summary>
    /// <param name="ids">The ids, in the order they were made available, each below the size; with those queued, at most the ring size.</param>
    public void AppendRun(ReadOnlySpan<ushort> ids)
    {
        Debug.Assert(_count + ids.Length <= _ids.Length, "never more ids than the ring holds");
        var tail = _head + _count;
        if (tail >= _ids.Length)
        {
            tail -= _ids.Length;
        }

        CircularArray.Write(_ids, tail, ids);

        if (_sequence != null)
        {
            var sequence = _sequence;
            var next = _next;
            foreach (var id in ids)
            {
                sequence[id] = next++;
            }

            _next = next;
        }

        _count += ids.Length;
    }

    /// <summary>Removes and returns the oldest id.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ushort Dequeue()
    {
        var id = _ids[_head];
        if (++_head == _ids.Length)
        {
            _head = 0;
        }

        _count--;
        return id;
    }

    /// <summary>Drops the <paramref name="count"/> oldest ids (at most <see cref="Count"/>), read before with <see cref="PeekAt"/>.</summary>
    /// <param name="count">How many.</param>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Skip(int count)
    {
        _head += count;
        if (_head >= _ids.Length)
        {
            _head -= _ids.Length;
        }

        _count -= count;
    }

    /// <summary>Removes the newest id (undoing the last <see cref="Enqueue"/>).</summary>
    public void RemoveNewest()
    {
        _count--;
        _next--;
    }

    /// <summary>The id <paramref name="offset"/> places after the oldest (0 = the oldest).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly ushort PeekAt(int offset)
    {
        var index = _head + offset;
        if (index >= _ids.Length)
        {
            index -= _ids.Length;
        }

        return _ids[index];
    }

    /// <summary>
    /// Buffers a used entry naming <paramref name="lastId"/> returns: the oldest queued id up to
    /// and including <paramref name="lastId"/>. The caller has checked the id is queued.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly int BatchSize(ushort lastId) => (int)(_sequence![lastId] - _sequence[_ids[_head]]) + 1;

    /// <summary>Empties the queue.</summary>
    public void Clear()
    {
        _head = 0;
        _count = 0;
    }
}
