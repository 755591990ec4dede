using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Rings.Linux.Net;

namespace Rings.Linux.Runtime;

/// <summary>
/// Frames one worker sends to ports another worker owns: a single-producer single-consumer ring
/// of variable-length records in native memory (header, destinations, bytes), so workers share
/// nothing on the data path but this. The producer copies each frame in once; the consumer reads
/// records in place as a burst and transmits them. A full ring drops the frame, counted
/// <see cref="DropReason.DestinationFull"/> on its destinations; the producer never waits.
/// </summary>
internal sealed unsafe class Handoff : IDisposable
{
    private const int RecordHeader = 32; // length (4), pad (4), destinations (8), virtio_net_hdr (12), pad (4)
    private const int WrapMarker = -1;

    private readonly byte* _ring;
    private readonly long _capacity;
    private readonly Padded _producer;
    private readonly Padded _consumer;
    private long _reserved;
    private long _readUpTo;
    private bool _disposed;

    public Handoff(int capacityBytes)
    {
        if (capacityBytes < 4 * FrameBurst.MaxFrameLength || (capacityBytes & (capacityBytes - 1)) != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(capacityBytes), capacityBytes, "a power of two of at least four largest frames");
        }

        _capacity = capacityBytes;
        _ring = (byte*)NativeMemory.AlignedAlloc((nuint)capacityBytes, 64);
        _producer = new Padded();
        _consumer = new Padded();
    }

    ~Handoff() => Free();

    /// <summary>True when the consumer asked to be woken (it is about to sleep).</summary>
    public bool ConsumerWantsWakeup => Volatile.Read(ref _consumer.Flag) != 0;

    /// <summary>True when records are published and not yet consumed (acquire).</summary>
    public bool HasRecords => Volatile.Read(ref _producer.Position) != _consumer.Position;

    /// <summary>Producer: appends a copy of frame <paramref name="frame"/> for <paramref name="destinations"/>.</summary>
    /// <returns>False when the ring has no room (the frame is dropped by the caller).</returns>
    public bool TryWrite(FrameBurst burst, int frame, PortMask destinations)
    {
        var length = burst.Length(frame);
        var size = Align(RecordHeader + length);
        var at = _reserved;
        var offset = at & (_capacity - 1);
        var tail = offset + size > _capacity ? _capacity - offset : 0; // bytes skipped to wrap
        // Acquire: the consumer has finished with what lies below its position.
        if (at + tail + size - Volatile.Read(ref _consumer.Position) > _capacity)
        {
            return false;
        }

        if (tail > 0)
        {
            *(int*)(_ring + offset) = WrapMarker;
            at += tail;
            offset = 0;
        }

        var record = _ring + offset;
        *(int*)record = length;
        *(ulong*)(record + 8) = destinations.Bits;
        burst.Header(frame).TryWrite(new Span<byte>(record + 16, VirtioNetHeader.Size));
        burst.CopyTo(frame, new Span<byte>(record + RecordHeader, length));
        _reserved = at + size;
        return true;
    }

    /// <summary>Producer: makes every record written since the last publish visible (release).</summary>
    public void Publish() => Volatile.Write(ref _producer.Position, _reserved);

    /// <summary>Consumer: fills <paramref name="burst"/> with published records in place, each decided for its destinations.</summary>
    /// <returns>Frames read.</returns>
    public int Read(FrameBurst burst)
    {
        // Acquire: every record below the producer's position is written.
        var end = Volatile.Read(ref _producer.Position);
        var at = _consumer.Position;
        var n = 0;
        while (at < end && burst.Room > 0)
        {
            var offset = at & (_capacity - 1);
            var record = _ring + offset;
            var length = *(int*)record;
            if (length == WrapMarker)
            {
                at += _capacity - offset;
                continue;
            }

            VirtioNetHeader.TryRead(new ReadOnlySpan<byte>(record + 16, VirtioNetHeader.Size), out var header);
            burst.TryAdd(header, new FrameSegment(record + RecordHeader, length), 0, isPrivate: true);
            burst.Send(burst.Count - 1, new PortMask(*(ulong*)(record + 8)));
            at += Align(RecordHeader + length);
            n++;
        }

        _readUpTo = at;
        return n;
    }

    /// <summary>Consumer: frees what <see cref="Read"/> returned (release).</summary>
    public void Release() => Volatile.Write(ref _consumer.Position, _readUpTo);

    /// <summary>
    /// Consumer, before sleeping: asks for a wake-up, then (after a full fence) checks again.
    /// True when records are waiting.
    /// </summary>
    public bool EnableWakeup()
    {
        Volatile.Write(ref _consumer.Flag, 1);
        Interlocked.MemoryBarrier();
        return HasRecords;
    }

    /// <summary>Consumer, after waking.</summary>
    public void DisableWakeup() => Volatile.Write(ref _consumer.Flag, 0);

    public void Dispose()
    {
        Free();
        GC.SuppressFinalize(this);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static long Align(long bytes) => (bytes + 7) & ~7L;

    private void Free()
    {
        if (!_disposed)
        {
            _disposed = true;
            NativeMemory.AlignedFree(_ring);
        }
    }

    /// <summary>A position on its own cache lines, so producer and consumer do not share one.</summary>
    [StructLayout(LayoutKind.Explicit, Size = 256)]
    private sealed class Padded
    {
        [FieldOffset(128)]
        public long Position;

        [FieldOffset(136)]
        public int Flag;
    }
}
