using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using Rings.Linux.Plumbing;
using Rings.Linux.VhostUser;

namespace Rings.Linux.Device;

/// <summary>
/// The shared inflight region of vhost-user (VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD, "Inflight I/O
/// tracking" in vhost-user.rst): one queue region per virtqueue, back to back, each
/// <see cref="QueueBytes"/> long. The back-end creates it (GET_INFLIGHT_FD), the front-end keeps
/// its descriptor across back-end restarts and hands it back (SET_INFLIGHT_FD). What a front-end
/// hands back is untrusted: its size is checked against the description before it is mapped, it
/// must be sealed against shrinking, and every index read from it is checked before use.
/// </summary>
public sealed class InflightRegion : IDisposable
{
    /// <summary>Bytes of a split queue region's header {u64 features; u16 version; u16 desc_num; u16 last_batch_head; u16 used_idx}.</summary>
    public const int SplitHeaderBytes = 16;

    /// <summary>Bytes of one DescStateSplit {u8 inflight; u8 padding[5]; u16 next; u64 counter}.</summary>
    public const int SplitEntryBytes = 16;

    /// <summary>
    /// Bytes of a packed queue region's header {u64 features; u16 version; u16 desc_num; u16 free_head;
    /// u16 old_free_head; u16 used_idx; u16 old_used_idx; u8 used_wrap_counter; u8 old_used_wrap_counter;
    /// u8 padding[7]}, rounded up to the 8-byte alignment of the entries that follow.
    /// </summary>
    public const int PackedHeaderBytes = 32;

    /// <summary>Bytes of one DescStatePacked {u8 inflight; u8 padding; u16 next; u16 last; u16 num; u64 counter; u16 id; u16 flags; u32 len; u64 addr}.</summary>
    public const int PackedEntryBytes = 32;

    /// <summary>Each queue region starts on a 64-byte boundary, as DPDK and libvhost-user lay them out.</summary>
    public const int QueueAlignment = 64;

    /// <summary>The region's version once a back-end has used it; 0 means never used (vhost-user.rst).</summary>
    public const ushort Version = 1;

    private readonly SharedMemory _memory;
    private int _references = 1;

    private InflightRegion(SharedMemory memory, RingFormat format, int queues, int queueSize, bool owned)
    {
        _memory = memory;
        Format = format;
        Queues = queues;
        QueueSize = queueSize;
        Owned = owned;
    }

    /// <summary>The layout: split or packed queue regions.</summary>
    public RingFormat Format { get; }

    /// <summary>Virtqueues the region tracks.</summary>
    public int Queues { get; }

    /// <summary>Entries per queue region (the largest ring it can track).</summary>
    public int QueueSize { get; }

    /// <summary>True when this back-end created the region (its descriptor is <see cref="Handle"/>).</summary>
    public bool Owned { get; }

    /// <summary>The memory file, for the GET_INFLIGHT_FD reply (only when <see cref="Owned"/>).</summary>
    public FileDescriptor? Handle => _memory.Handle;

    /// <summary>Bytes of the region: its queue regions (the memory file may be a little longer, a whole number of pages).</summary>
    public ulong Length => Bytes(Format, Queues, QueueSize);

    /// <summary>The description a GET_INFLIGHT_FD reply carries for this region.</summary>
    public InflightDescription Description => new(Length, 0, (ushort)Queues, (ushort)QueueSize);

    /// <summary>Bytes of one queue region of <paramref name="format"/> for rings of <paramref name="queueSize"/>.</summary>
    /// <param name="format">The layout.</param>
    /// <param name="queueSize">Entries (1 to 32768).</param>
    /// <returns>The bytes, a multiple of <see cref="QueueAlignment"/>.</returns>
    public static ulong QueueBytes(RingFormat format, int queueSize)
    {
        var raw = format == RingFormat.Packed
            ? PackedHeaderBytes + ((ulong)queueSize * PackedEntryBytes)
            : SplitHeaderBytes + ((ulong)queueSize * SplitEntryBytes);
        return (raw + QueueAlignment - 1) / QueueAlignment * QueueAlignment;
    }

    /// <summary>Bytes of a region of <paramref name="queues"/> queue regions of <paramref name="format"/> for rings of <paramref name="queueSize"/>.</summary>
    /// <param name="format">The layout.</param>
    /// <param name="queues">Virtqueues.</param>
    /// <param name="queueSize">Entries per queue region (1 to 32768).</param>
    /// <returns>The bytes.</returns>
    public static ulong Bytes(RingFormat format, int queues, int queueSize) => (ulong)queues * QueueBytes(format, queueSize);

    /// <summary>Checks a description against the device: queue count, queue size and (when <paramref name="exactSize"/>) the mmap size the layout needs.</summary>
    /// <param name="description">The description.</param>
    /// <param name="format">The layout the rings use.</param>
    /// <param name="vrings">Vrings the device has.</param>
    /// <param name="exactSize">Also require the size and a page-aligned offset (SET_INFLIGHT_FD).</param>
    /// <returns>None, or why the description is refused.</returns>
    public static VhostUserError Validate(InflightDescription description, RingFormat format, int vrings, bool exactSize)
    {
        if (description.NumQueues < 1 || description.NumQueues > vrings)
        {
            return new VhostUserError(VhostUserErrorCode.ValueOutOfRange, $"inflight region for {description.NumQueues} queues; the device has {vrings}");
        }

        if (description.QueueSize is < 1 or > RingFormat.MaxSize)
        {
            return new VhostUserError(VhostUserErrorCode.QueueSizeInvalid, $"inflight queue size {description.QueueSize} is not 1 to {RingFormat.MaxSize}");
        }

        if (!exactSize)
        {
            return default;
        }

        var needed = Bytes(format, description.NumQueues, description.QueueSize);
        if (description.MmapSize != needed)
        {
            return new VhostUserError(VhostUserErrorCode.BadRegion, $"inflight region of {description.MmapSize} bytes; {description.NumQueues} {format} queues of {description.QueueSize} need {needed}");
        }

        if (description.MmapOffset % (ulong)SharedMemory.PageSize != 0)
        {
            return new VhostUserError(VhostUserErrorCode.BadRegion, $"inflight region offset 0x{description.MmapOffset:x} is not page-aligned");
        }

        return default;
    }

    /// <summary>Creates a zeroed, sealed region and lays the queue regions out as a fresh back-end does (version 0: never used).</summary>
    /// <param name="format">The layout.</param>
    /// <param name="queues">Virtqueues.</param>
    /// <param name="queueSize">Entries per queue region.</param>
    /// <returns>The region, owning its memory file.</returns>
    public static InflightRegion Create(RingFormat format, int queues, int queueSize)
    {
        var memory = SharedMemory.Create(Bytes(format, queues, queueSize), "rings-inflight");
        var region = new InflightRegion(memory, format, queues, queueSize, owned: true);
        for (var q = 0; q < queues; q++)
        {
            region.Queue(q).Initialize((ushort)queueSize);
        }

        return region;
    }

    /// <summary>Maps a region a front-end handed back, after checking its description and its seals.</summary>
    /// <param name="fd">The memory file (not kept).</param>
    /// <param name="description">Where the region is and what it holds (already validated).</param>
    /// <param name="format">The layout the rings use.</param>
    /// <param name="region">The mapping.</param>
    /// <returns>None, or why it cannot be used.</returns>
    public static VhostUserError TryMap(FileDescriptor fd, InflightDescription description, RingFormat format, out InflightRegion? region)
    {
        region = null;
        if (!SharedMemory.IsShrinkSealed(fd))
        {
            // A file the front-end could shrink would fault (SIGBUS) on our next access.
            return new VhostUserError(VhostUserErrorCode.BadRegion, "the inflight region's file is not sealed against shrinking (F_SEAL_SHRINK)");
        }

        try
        {
            var memory = SharedMemory.Map(fd, description.MmapOffset, description.MmapSize);
            region = new InflightRegion(memory, format, description.NumQueues, description.QueueSize, owned: false);
            return default;
        }
        catch (IOException e)
        {
            return new VhostUserError(VhostUserErrorCode.MapFailed, $"inflight region cannot be mapped: {e.Message}");
        }
    }

    /// <summary>The region of vring <paramref name="index"/>.</summary>
    /// <param name="index">Below <see cref="Queues"/>.</param>
    /// <returns>A view over its bytes.</returns>
    public InflightQueueMemory Queue(int index)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(index);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(index, Queues);
        var bytes = QueueBytes(Format, QueueSize);
        return new InflightQueueMemory(_memory.HostAddress + (nint)((ulong)index * bytes), QueueSize, Format);
    }

    /// <summary>
    /// Keeps the region mapped until the lease is disposed, even past <see cref="Dispose"/>: a data
    /// path that may outlive its stop deadline takes one with the ring memory's.
    /// </summary>
    /// <returns>The lease.</returns>
    /// <exception cref="ObjectDisposedException">The region is already unmapped.</exception>
    public IDisposable Lease()
    {
        while (true)
        {
            var n = Volatile.Read(ref _references);
            ObjectDisposedException.ThrowIf(n == 0, this);
            if (Interlocked.CompareExchange(ref _references, n + 1, n) == n)
            {
                return new RegionLease(this);
            }
        }
    }

    /// <summary>The owner lets go: the region is unmapped (and its file closed when owned) once no lease holds it. Call once.</summary>
    public void Dispose() => Release();

    private void Release()
    {
        if (Interlocked.Decrement(ref _references) == 0)
        {
            _memory.Dispose();
        }
    }

    private sealed class RegionLease(InflightRegion region) : IDisposable
    {
        private InflightRegion? _region = region;

        public void Dispose() => Interlocked.Exchange(ref _region, null)?.Release();
    }
}

/// <summary>
/// One queue region in shared memory, as plain field accessors with every entry index checked:
/// the front-end can write anything here, and nothing read from it is trusted.
/// Stores that must be ordered after a ring publication are releases (<see cref="Volatile.Write(ref ushort, ushort)"/>),
/// so a back-end killed at any instruction leaves a state the next one can read (vhost-user.rst,
/// "Inflight I/O tracking").
/// </summary>
public readonly unsafe struct InflightQueueMemory
{
    private readonly byte* _base;

    internal InflightQueueMemory(nint address, int entries, RingFormat format)
    {
        _base = (byte*)address;
        Entries = entries;
        Format = format;
    }

    /// <summary>Entries in the region.</summary>
    public int Entries { get; }

    /// <summary>The layout.</summary>
    public RingFormat Format { get; }

    private bool Packed => Format == RingFormat.Packed;

    private int HeaderBytes => Packed ? InflightRegion.PackedHeaderBytes : InflightRegion.SplitHeaderBytes;

    private int EntryBytes => Packed ? InflightRegion.PackedEntryBytes : InflightRegion.SplitEntryBytes;

    /// <summary>The region's version (0: never used).</summary>
    public ushort Version
    {
        get => Volatile.Read(ref *(ushort*)(_base + 8));
        set => Volatile.Write(ref *(ushort*)(_base + 8), value);
    }

    /// <summary>desc_num: the entries the region says it has.</summary>
    public ushort DescNum
    {
        get => *(ushort*)(_base + 10);
        set => *(ushort*)(_base + 10) = value;
    }

    // ---- Split header ---------------------------------------------------------------------

    /// <summary>Split: head of the list of the last batch of used descriptors.</summary>
    public ushort LastBatchHead
    {
        get => *(ushort*)(_base + 12);
        set => Volatile.Write(ref *(ushort*)(_base + 12), value);
    }

    /// <summary>Split: the used ring's idx when the last batch was finished.</summary>
    public ushort UsedIdx
    {
        get => *(ushort*)(_base + (Packed ? 16 : 14));
        set => Volatile.Write(ref *(ushort*)(_base + (Packed ? 16 : 14)), value);
    }

    // ---- Packed header --------------------------------------------------------------------

    /// <summary>Packed: head of the free entry list.</summary>
    public ushort FreeHead
    {
        get => *(ushort*)(_base + 12);
        set => Volatile.Write(ref *(ushort*)(_base + 12), value);
    }

    /// <summary>Packed: the free list's head as of the last finished batch.</summary>
    public ushort OldFreeHead
    {
        get => *(ushort*)(_base + 14);
        set => Volatile.Write(ref *(ushort*)(_base + 14), value);
    }

    /// <summary>Packed: the used index as of the last finished batch.</summary>
    public ushort OldUsedIdx
    {
        get => *(ushort*)(_base + 18);
        set => Volatile.Write(ref *(ushort*)(_base + 18), value);
    }

    /// <summary>Packed: the device's wrap counter (1 or 0).</summary>
    public bool UsedWrapCounter
    {
        get => _base[20] != 0;
        set => Volatile.Write(ref _base[20], value ? (byte)1 : (byte)0);
    }

    /// <summary>Packed: the wrap counter as of the last finished batch.</summary>
    public bool OldUsedWrapCounter
    {
        get => _base[21] != 0;
        set => Volatile.Write(ref _base[21], value ? (byte)1 : (byte)0);
    }

    // ---- Entries (index checked by the callers against Entries) ---------------------------

    /// <summary>Whether entry <paramref name="i"/> is in flight.</summary>
    /// <param name="i">The entry.</param>
    /// <returns>True when its inflight byte is non-zero.</returns>
    public bool IsInflight(int i) => Entry(i)[0] != 0;

    /// <summary>Sets or clears entry <paramref name="i"/>'s inflight byte (a release store).</summary>
    /// <param name="i">The entry.</param>
    /// <param name="value">In flight.</param>
    public void SetInflight(int i, bool value) => Volatile.Write(ref Entry(i)[0], value ? (byte)1 : (byte)0);

    /// <summary>Entry <paramref name="i"/>'s next link.</summary>
    /// <param name="i">The entry.</param>
    /// <returns>The link (unchecked).</returns>
    public ushort Next(int i) => *(ushort*)(Entry(i) + (Packed ? 2 : 6));

    /// <summary>Sets entry <paramref name="i"/>'s next link.</summary>
    /// <param name="i">The entry.</param>
    /// <param name="value">The link.</param>
    public void SetNext(int i, ushort value) => Volatile.Write(ref *(ushort*)(Entry(i) + (Packed ? 2 : 6)), value);

    /// <summary>Entry <paramref name="i"/>'s counter (the order buffers were fetched in).</summary>
    /// <param name="i">The entry.</param>
    /// <returns>The counter.</returns>
    public ulong Counter(int i) => *(ulong*)(Entry(i) + 8);

    /// <summary>Sets entry <paramref name="i"/>'s counter.</summary>
    /// <param name="i">The entry.</param>
    /// <param name="value">The counter.</param>
    public void SetCounter(int i, ulong value) => *(ulong*)(Entry(i) + 8) = value;

    /// <summary>Packed: entry <paramref name="i"/>'s last link (the list's last entry).</summary>
    /// <param name="i">The entry.</param>
    /// <returns>The link (unchecked).</returns>
    public ushort Last(int i) => *(ushort*)(Entry(i) + 4);

    /// <summary>Packed: sets entry <paramref name="i"/>'s last link.</summary>
    /// <param name="i">The entry.</param>
    /// <param name="value">The link.</param>
    public void SetLast(int i, ushort value) => *(ushort*)(Entry(i) + 4) = value;

    /// <summary>Packed: descriptors in entry <paramref name="i"/>'s list.</summary>
    /// <param name="i">The entry.</param>
    /// <returns>The count.</returns>
    public ushort Num(int i) => *(ushort*)(Entry(i) + 6);

    /// <summary>Packed: sets the descriptor count.</summary>
    /// <param name="i">The entry.</param>
    /// <param name="value">The count.</param>
    public void SetNum(int i, ushort value) => *(ushort*)(Entry(i) + 6) = value;

    /// <summary>Packed: the buffer id recorded in entry <paramref name="i"/>.</summary>
    /// <param name="i">The entry.</param>
    /// <returns>The id (unchecked).</returns>
    public ushort Id(int i) => *(ushort*)(Entry(i) + 16);

    /// <summary>Packed: records a fetched descriptor {addr, len, id, flags} in entry <paramref name="i"/>.</summary>
    /// <param name="i">The entry.</param>
    /// <param name="address">Buffer address.</param>
    /// <param name="length">Buffer length.</param>
    /// <param name="id">Buffer id.</param>
    /// <param name="flags">Descriptor flags.</param>
    public void SetDescriptor(int i, ulong address, uint length, ushort id, ushort flags) => StoreDescriptor(Entry(i), address, length, id, flags);

    /// <summary>
    /// Packed, "receiving available buffers" for a buffer of one descriptor, which goes into the
    /// free entry <paramref name="head"/> that also heads it: the stores
    /// <c>SetNum</c>, <c>SetCounter</c>, <c>SetInflight</c>, <c>SetDescriptor</c>, <c>SetNum</c>
    /// and <c>SetLast</c> make, in their order, on the entry's address worked out once (each
    /// accessor works it out again, and reloads this struct's fields after every store).
    /// </summary>
    /// <param name="head">The free entry (the region's free head).</param>
    /// <param name="counter">The buffer's fetch counter.</param>
    /// <param name="address">The descriptor's addr.</param>
    /// <param name="length">Its len.</param>
    /// <param name="id">Its buffer id.</param>
    /// <param name="flags">Its flags.</param>
    /// <returns>The entry after <paramref name="head"/> on the free list.</returns>
    public ushort RecordSingle(int head, ulong counter, ulong address, uint length, ushort id, ushort flags)
    {
        var e = Entry(head);
        *(ushort*)(e + 6) = 0;
        *(ulong*)(e + 8) = counter;

        // Release, as SetInflight writes the flag: num and counter are in place before it.
        Volatile.Write(ref e[0], (byte)1);
        StoreDescriptor(e, address, length, id, flags);
        *(ushort*)(e + 6) = 1;
        *(ushort*)(e + 4) = (ushort)head;
        return *(ushort*)(e + 2);
    }

    /// <summary>Lays out a never-used region: desc_num, and for packed a free list through every entry with both wrap counters 1.</summary>
    /// <param name="entries">desc_num.</param>
    public void Initialize(ushort entries)
    {
        DescNum = entries;
        if (!Packed)
        {
            return;
        }

        for (var i = 0; i < Entries; i++)
        {
            SetNext(i, (ushort)(i + 1));
        }

        FreeHead = OldFreeHead = 0;
        UsedIdx = OldUsedIdx = 0;
        UsedWrapCounter = OldUsedWrapCounter = true;
    }

    // A packed entry's copy of the descriptor (bytes 16 to 31: id, flags, len, addr).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreDescriptor(byte* e, ulong address, uint length, ushort id, ushort flags)
    {
        *(ushort*)(e + 16) = id;
        *(ushort*)(e + 18) = flags;
        *(uint*)(e + 20) = length;
        *(ulong*)(e + 24) = address;
    }

    // Small enough to be inlined into every accessor (a tracked ring calls several per buffer):
    // the throw and its message live in a method of their own.
    private byte* Entry(int i)
    {
        if ((uint)i >= (uint)Entries)
        {
            ThrowOutside(i, Entries);
        }

        return _base + HeaderBytes + ((nint)i * EntryBytes);
    }

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void ThrowOutside(int i, int entries) =>
        throw new ArgumentOutOfRangeException(nameof(i), i, $"inflight entry outside the region of {entries}");
}
