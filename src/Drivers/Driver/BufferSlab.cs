using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Rings.Memory;

namespace Rings.Linux.Driver;

/// <summary>
/// Fixed-size packet buffers carved out of guest memory, handed out by index from a free stack.
/// Packet buffers live here, never in managed pools: the device must be able to address them.
/// Owned by one thread.
/// </summary>
public sealed unsafe class BufferSlab
{
    private readonly int[] _free;
    private readonly ulong _baseAddress;
    private readonly byte* _host;
    private readonly bool _firstInFirstOut;
    private int _freeCount;

    // First in, first out: the oldest free buffer is at _free[_oldest], the rest follow it round
    // the array. Last in, first out: the newest is at _free[_freeCount - 1] (and _oldest stays 0).
    private int _oldest;

    /// <summary>Creates a slab of <paramref name="count"/> buffers of <paramref name="bufferSize"/> bytes at <paramref name="baseAddress"/>.</summary>
    /// <param name="memory">The memory table holding the slab.</param>
    /// <param name="baseAddress">Guest-physical address of buffer 0.</param>
    /// <param name="count">Number of buffers.</param>
    /// <param name="bufferSize">Bytes per buffer.</param>
    /// <exception cref="ArgumentException">The slab does not fit one region of the memory table.</exception>
    public BufferSlab(GuestMemory memory, ulong baseAddress, int count, int bufferSize)
        : this(memory, baseAddress, count, bufferSize, firstInFirstOut: false)
    {
    }

    /// <summary>
    /// Creates a slab of <paramref name="count"/> buffers of <paramref name="bufferSize"/> bytes at
    /// <paramref name="baseAddress"/>, handing free buffers out last in, first out (a stack), or
    /// first in, first out (a queue).
    /// </summary>
    /// <param name="memory">The memory table holding the slab.</param>
    /// <param name="baseAddress">Guest-physical address of buffer 0.</param>
    /// <param name="count">Number of buffers.</param>
    /// <param name="bufferSize">Bytes per buffer.</param>
    /// <param name="firstInFirstOut">
    /// True to hand out the buffer returned longest ago. A split ring's driver reuses freed
    /// descriptors last in, first out, but under VIRTIO_F_IN_ORDER first in, first out (in ring
    /// order); a slab that hands out buffers in the same order as the ring hands out descriptors
    /// gives each buffer back to the descriptor it had, whose entry then need not be rewritten
    /// (see the split driver ring's adds).
    /// </param>
    /// <exception cref="ArgumentException">The slab does not fit one region of the memory table.</exception>
    public BufferSlab(GuestMemory memory, ulong baseAddress, int count, int bufferSize, bool firstInFirstOut)
    {
        ArgumentNullException.ThrowIfNull(memory);
        ArgumentOutOfRangeException.ThrowIfLessThan(count, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(bufferSize, 1);
        if (!memory.TryTranslate(baseAddress, (ulong)count * (ulong)bufferSize, out var host))
        {
            throw new ArgumentException($"a slab of {count} x {bufferSize} B at 0x{baseAddress:x} is not inside the memory table");
        }

        // Translated once: the whole slab lies in one region, so buffer i is at a fixed offset.
        _host = (byte*)host;
        _baseAddress = baseAddress;
        Count = count;
        BufferSize = bufferSize;
        _free = new int[count];
        for (var i = 0; i < count; i++)
        {
            _free[i] = count - 1 - i;
        }

        _freeCount = count;
        _firstInFirstOut = firstInFirstOut;
    }

    /// <summary>Number of buffers.</summary>
    public int Count { get; }

    /// <summary>Bytes per buffer.</summary>
    public int BufferSize { get; }

    /// <summary>Buffers free.</summary>
    public int FreeCount => _freeCount;

    /// <summary>Bytes a slab of <paramref name="count"/> buffers of <paramref name="bufferSize"/> needs.</summary>
    /// <param name="count">Number of buffers.</param>
    /// <param name="bufferSize">Bytes per buffer.</param>
    /// <returns>Bytes.</returns>
    public static ulong BytesFor(int count, int bufferSize) => (ulong)count * (ulong)bufferSize;

    /// <summary>Takes a free buffer.</summary>
    /// <param name="index">The buffer's index.</param>
    /// <returns>False when none is free.</returns>
    public bool TryTake(out int index)
    {
        if (_freeCount == 0)
        {
            index = -1;
            return false;
        }

        _freeCount--;
        if (_firstInFirstOut)
        {
            index = _free[_oldest];
            _oldest = _oldest + 1 == _free.Length ? 0 : _oldest + 1;
        }
        else
        {
            index = _free[_freeCount];
        }

        return true;
    }

    /// <summary>
    /// The buffer the <paramref name="ahead"/>-th next <see cref="TryTake"/> would hand out if
    /// nothing were returned in between (0: the next one), or -1 when fewer are free.
    /// </summary>
    /// <param name="ahead">How many takes ahead.</param>
    /// <returns>The buffer's index, or -1.</returns>
    public int PeekFree(int ahead)
    {
        if ((uint)ahead >= (uint)_freeCount)
        {
            return -1;
        }

        if (!_firstInFirstOut)
        {
            return _free[_freeCount - 1 - ahead];
        }

        var at = _oldest + ahead;
        return _free[at < _free.Length ? at : at - _free.Length];
    }

    /// <summary>
    /// Takes up to <paramref name="slots"/>.Length free buffers at once, in the order as many
    /// <see cref="TryTake"/> calls would hand them out (one update of the free list for all).
    /// </summary>
    /// <param name="slots">Where the buffers' indices go.</param>
    /// <returns>The buffers taken: fewer than asked when fewer are free.</returns>
    public int TakeBurst(Span<int> slots)
    {
        var n = Math.Min(slots.Length, _freeCount);
        var free = _free;
        if (_firstInFirstOut)
        {
            var at = _oldest;
            for (var i = 0; i < n; i++)
            {
                slots[i] = free[at];
                if (++at == free.Length)
                {
                    at = 0;
                }
            }

            _oldest = at;
        }
        else
        {
            var top = _freeCount;
            for (var i = 0; i < n; i++)
            {
                slots[i] = free[--top];
            }
        }

        _freeCount -= n;
        return n;
    }

    /// <summary>Returns a buffer taken earlier.</summary>
    /// <param name="index">The buffer's index.</param>
    public void Return(int index)
    {
        if ((uint)index >= (uint)Count || _freeCount == Count)
        {
            throw new ArgumentOutOfRangeException(nameof(index), index, "not a buffer of this slab, or returned twice");
        }

        var at = _oldest + _freeCount;
        _free[at < _free.Length ? at : at - _free.Length] = index;
        _freeCount++;
    }

    /// <summary>Guest-physical address of buffer <paramref name="index"/>.</summary>
    /// <param name="index">The buffer's index.</param>
    /// <returns>The address.</returns>
    public ulong AddressOf(int index) => _baseAddress + ((ulong)(uint)index * (ulong)BufferSize);

    /// <summary>The bytes of buffer <paramref name="index"/>.</summary>
    /// <param name="index">The buffer's index.</param>
    /// <returns>A span over the whole buffer.</returns>
    public Span<byte> Span(int index)
    {
        if ((uint)index >= (uint)Count)
        {
            throw new ArgumentOutOfRangeException(nameof(index));
        }

        return new Span<byte>(_host + ((long)index * BufferSize), BufferSize);
    }

    /// <summary>Bytes <see cref="TryStreamLine(int, ReadOnlySpan{byte})"/> writes: one cache line.</summary>
    public const int LineSize = 64;

    /// <summary>
    /// Writes the first <see cref="LineSize"/> bytes of buffer <paramref name="index"/> from
    /// <paramref name="line"/> with non-temporal stores, when the CPU has them and the buffer
    /// starts on a line: the whole line goes to memory without the core first taking it over from
    /// the cache of the core that read it last (the device's, a lap ago), which an ordinary store
    /// must wait for. Such stores are not ordered with later ordinary ones (not even on x86): the
    /// caller must run <see cref="StoreFence"/> before it publishes the buffer.
    /// </summary>
    /// <param name="index">The buffer's index.</param>
    /// <param name="line">The line's bytes, <see cref="LineSize"/> of them.</param>
    /// <returns>True when the line was streamed (a fence is owed); false when nothing was written (no such stores here, or the buffer is not line-aligned).</returns>
    public bool TryStreamLine(int index, ReadOnlySpan<byte> line)
    {
        if (line.Length < LineSize)
        {
            throw new ArgumentException($"a line is {LineSize} bytes, not {line.Length}", nameof(line));
        }

        return TryStreamLine(index, Vector256.Create(line), Vector256.Create(line[32..]));
    }

    /// <summary>As <see cref="TryStreamLine(int, ReadOnlySpan{byte})"/>, the line given as two halves held in registers.</summary>
    /// <param name="index">The buffer's index.</param>
    /// <param name="low">Line bytes 0 to 31.</param>
    /// <param name="high">Line bytes 32 to 63.</param>
    /// <returns>True when the line was streamed (a fence is owed); false when nothing was written.</returns>
    public bool TryStreamLine(int index, Vector256<byte> low, Vector256<byte> high)
    {
        if ((uint)index >= (uint)Count)
        {
            throw new ArgumentOutOfRangeException(nameof(index));
        }

        var at = _host + ((long)index * BufferSize);
        if (!Avx.IsSupported || BufferSize < LineSize || ((nuint)at & (LineSize - 1)) != 0)
        {
            return false;
        }

        Avx.StoreAlignedNonTemporal(at, low);
        Avx.StoreAlignedNonTemporal(at + 32, high);
        return true;
    }

    /// <summary>
    /// Makes every <see cref="TryStreamLine(int, Vector256{byte}, Vector256{byte})"/> store before
    /// it visible to other cores before any store after it (SFENCE): what a release publication
    /// alone does not do for them.
    /// </summary>
    public static void StoreFence()
    {
        if (Sse.IsSupported)
        {
            Sse.StoreFence();
        }
    }

    /// <summary>
    /// Asks the CPU to start loading the first cache line of buffer <paramref name="index"/>: a
    /// burst of buffers the device has just written are all on another core's cache, and asking
    /// for all of them before reading the first lets the transfers overlap instead of waiting for
    /// each in turn. A hint only; an index outside the slab is ignored.
    /// </summary>
    /// <param name="index">The buffer's index.</param>
    public void Prefetch(int index)
    {
        if ((uint)index < (uint)Count && Sse.IsSupported)
        {
            Sse.Prefetch0(_host + ((long)index * BufferSize));
        }
    }
}
