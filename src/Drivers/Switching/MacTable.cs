using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Security.Cryptography;
using Rings.Linux.Net;

namespace Rings.Linux.Switching;

/// <summary>What <see cref="MacTable.Learn"/> did with a source address.</summary>
public enum MacLearnResult
{
    /// <summary>The address was already known on this port; its age was reset.</summary>
    Refreshed,

    /// <summary>A new entry (or one that had aged out) now maps the address to the port.</summary>
    Learned,

    /// <summary>The station moved: its entry now names the new port.</summary>
    Moved,

    /// <summary>A group (multicast or broadcast) or all-zero source address is never learned: it names no single station.</summary>
    InvalidSource,

    /// <summary>The table is full of live entries: the new address was not learned (frames to it flood).</summary>
    TableFull,
}

/// <summary>Counters of a <see cref="MacTable"/> since it was created.</summary>
/// <param name="Learned">New entries (including re-learned ones that had aged out).</param>
/// <param name="Moved">Stations seen on a different port than their entry named.</param>
/// <param name="Refused">New addresses not learned because the table was full.</param>
/// <param name="InvalidSources">Frames whose source was a group or all-zero address (not learned).</param>
/// <param name="Aged">Entries removed because they had not been seen for the aging time.</param>
/// <param name="Flushed">Entries removed by <see cref="MacTable.FlushPort"/>.</param>
public readonly record struct MacTableCounters(long Learned, long Moved, long Refused, long InvalidSources, long Aged, long Flushed);

/// <summary>
/// The forwarding table of an L2 learning switch: station address to port, learned from source
/// addresses, aged out after <see cref="AgingTicks"/> without a frame. Its size is fixed at
/// creation and nothing is allocated afterwards. A new address that finds the table full of live
/// entries is refused and counted (<see cref="MacLearnResult.TableFull"/>): a stream of new
/// source addresses (a MAC flood) never evicts a station already learned, and frames to refused
/// addresses flood until entries age out, as in the Linux bridge with a learning limit.
/// </summary>
/// <remarks>
/// <para>
/// Threads: one writer (<see cref="Learn"/>, <see cref="Expire"/>, <see cref="FlushPort"/>)
/// and any number of readers (<see cref="Lookup"/>) on other threads at the same time, with no
/// lock. Time is the caller's: ticks of any unit, passed in (a worker reads its clock once per
/// burst; coarse ticks such as milliseconds also spare the writer most age updates).
/// </para>
/// <para>
/// Layout: buckets of four entries, one 64-byte cache line each (four keys, then their four age
/// stamps), at most half the entries of the table in use. An address hashes to its home bucket
/// and almost always lives there; a full bucket passes newcomers on to the next, and counts them
/// (its overflow count), so a probe goes on to the next bucket only while that count is non-zero.
/// One vector compare finds the address among a bucket's four keys, without a branch per entry.
/// </para>
/// <para>
/// Concurrency: a key holds address and port in one 64-bit word (48 bits of address, 16 of
/// port + 1; zero is an empty entry), written by the writer with one release store, so a reader
/// can never combine the address of one entry with the port of another: there is nothing to
/// tear, and no sequence number or retry is needed. The vector load only nominates an entry; the
/// reader then loads that key alone (acquire) and uses it only if it still holds the address.
/// The age stamp is stored before the key it belongs to, so a reader that sees a key sees a stamp
/// at least as new. Entries never move: removal empties the entry, then lowers the overflow counts
/// an insertion raised before publishing its key. A reader racing the writer may miss an entry
/// for that moment and answer <see cref="Flood"/>, which delivers the frame anyway; every port a
/// reader returns was the learned port of that address at some moment.
/// </para>
/// </remarks>
public sealed unsafe class MacTable
{
    /// <summary>What <see cref="Lookup"/> returns for a destination with no live entry, or a group address.</summary>
    public const int Flood = -1;

    /// <summary>The highest port number an entry can hold.</summary>
    public const int MaxPort = ushort.MaxValue - 1;

    /// <summary>The largest capacity (entries) a table can be created with.</summary>
    public const int MaxCapacity = 1 << 24;

    private const ulong AddressBits = (1UL << 48) - 1;
    private const int PortShift = 48;

    /// <summary>Entries per bucket.</summary>
    private const int Ways = 4;

    /// <summary>64-bit words per bucket: four keys, then four stamps.</summary>
    private const int BucketWords = 2 * Ways;

    /// <summary>Buckets, pinned; bucket b starts at word <c>_origin + 8 b</c>, on a 64-byte boundary.</summary>
    private readonly ulong[] _words;
    private readonly int _origin;

    /// <summary>
    /// Word 0 of bucket 0, as an address: the array is pinned for its lifetime (it never moves)
    /// and lives as long as this table, which holds it in <see cref="_words"/>. Per-frame access
    /// goes through it unchecked: every access is a bucket number masked by <c>_bucketMask</c>,
    /// times eight, plus less than eight, inside the array (which has one bucket to spare for the
    /// alignment); one field load instead of the array, its origin and the range checks, which
    /// are a tenth of a frame's cost.
    /// </summary>
    private readonly ulong* _buckets;

    /// <summary>Per bucket: entries whose home bucket is at or before it and that live after it (a probe goes on while non-zero).</summary>
    private readonly int[] _overflow;
    private readonly int _bucketMask;
    private readonly int _shift;
    private readonly ulong _multiplier;
    private readonly long _aging;
    private WriterState _writer;

    /// <summary>Creates an empty table.</summary>
    /// <param name="capacity">Most entries held at once (1 to <see cref="MaxCapacity"/>).</param>
    /// <param name="agingTicks">An entry not refreshed for this many ticks is no longer used, and is removed when space is needed or on <see cref="Expire"/>.</param>
    public MacTable(int capacity, long agingTicks)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(capacity, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(capacity, MaxCapacity);
        ArgumentOutOfRangeException.ThrowIfLessThan(agingTicks, 1);

        // Twice the entries needed: buckets rarely overflow, and an empty entry always exists,
        // so every insertion's probe ends.
        var buckets = (int)BitOperations.RoundUpToPowerOf2((uint)Math.Max(2, (capacity * 2) / Ways));
        while (buckets * Ways < capacity * 2)
        {
            buckets *= 2;
        }

        _words = GC.AllocateArray<ulong>((buckets * BucketWords) + BucketWords, pinned: true);
        var address = (long)Marshal.UnsafeAddrOfPinnedArrayElement(_words, 0);
        _origin = (int)(((64 - (address & 63)) & 63) / sizeof(ulong));
        _buckets = (ulong*)address + _origin;
        _overflow = new int[buckets];
        _bucketMask = buckets - 1;
        _shift = 64 - BitOperations.Log2((uint)buckets);

        // Multiply-shift hashing with a random odd multiplier per table: a sender choosing its
        // source addresses cannot aim them at one bucket without knowing the multiplier.
        Span<byte> random = stackalloc byte[8];
        RandomNumberGenerator.Fill(random);
        _multiplier = MemoryMarshal.Read<ulong>(random) | 1;

        Capacity = capacity;
        _aging = agingTicks;
        _writer.NextExpiry = long.MaxValue;
    }

    /// <summary>Most entries held at once.</summary>
    public int Capacity { get; }

    /// <summary>Ticks after which an entry not refreshed ages out.</summary>
    public long AgingTicks => _aging;

    /// <summary>Entries held, including aged ones not yet removed (any thread may read it).</summary>
    public int Count => Volatile.Read(ref _writer.Count);

    /// <summary>The counters so far (any thread may read them; each is exact, the set is not one instant).</summary>
    public MacTableCounters Counters => new(
        Volatile.Read(ref _writer.Learned),
        Volatile.Read(ref _writer.Moved),
        Volatile.Read(ref _writer.Refused),
        Volatile.Read(ref _writer.InvalidSources),
        Volatile.Read(ref _writer.Aged),
        Volatile.Read(ref _writer.Flushed));

    /// <summary>
    /// The port to send a frame for <paramref name="destination"/> to, or <see cref="Flood"/> for a
    /// group address or an address with no live entry. Any thread, concurrently with the writer.
    /// </summary>
    /// <param name="destination">The frame's destination address.</param>
    /// <param name="now">The current time in ticks.</param>
    /// <returns>The learned port, or <see cref="Flood"/>.</returns>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int Lookup(MacAddress destination, long now)
    {
        var address = destination.Bits;

        // The all-zero address needs no test of its own: never learned, it can only match an
        // empty entry, whose key (port + 1 = 0) reads as Flood.
        if ((address & 1) != 0)
        {
            return Flood;
        }

        ref var bucket = ref HomeBucket(address);
        var matches = Matches(ref bucket, address);
        return matches != 0 ? Read(ref Unsafe.Add(ref bucket, (nuint)BitOperations.TrailingZeroCount(matches)), address, now) : LookupFurther(address, now);
    }

    /// <summary>Learns that <paramref name="source"/> is reachable through <paramref name="port"/> (the writer thread only).</summary>
    /// <param name="source">The frame's source address.</param>
    /// <param name="port">The port the frame came in on (0 to <see cref="MaxPort"/>).</param>
    /// <param name="now">The current time in ticks.</param>
    /// <returns>What changed.</returns>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public MacLearnResult Learn(MacAddress source, int port, long now)
    {
        if ((uint)port > MaxPort)
        {
            ThrowPort(port);
        }

        var address = source.Bits;
        if ((address & 1) != 0 || address == 0)
        {
            _writer.InvalidSources++;
            return MacLearnResult.InvalidSource;
        }

        // Only this thread writes: plain reads of its own data. Almost every address lives in
        // its home bucket; the rest is out of line.
        var key = address | ((ulong)(port + 1) << PortShift);
        ref var bucket = ref HomeBucket(address);
        var matches = Matches(ref bucket, address);
        return matches != 0 ? Update(ref Unsafe.Add(ref bucket, (nuint)BitOperations.TrailingZeroCount(matches)), key, now) : LearnFurther(key, now);
    }

    /// <summary>Removes every entry that has aged out by <paramref name="now"/> (the writer thread only).</summary>
    /// <param name="now">The current time in ticks.</param>
    /// <returns>How many entries were removed.</returns>
    public int Expire(long now)
    {
        var removed = RemoveWhere(new AgedOut(now, _aging));
        _writer.Aged += removed;

        var next = long.MaxValue;
        for (var bucket = 0; bucket <= _bucketMask; bucket++)
        {
            var at = _origin + (bucket * BucketWords);
            for (var way = 0; way < Ways; way++)
            {
                if (_words[at + way] != 0)
                {
                    next = Math.Min(next, ExpiryOf((long)_words[at + Ways + way]));
                }
            }
        }

        _writer.NextExpiry = next;
        return removed;
    }

    /// <summary>Removes every entry on <paramref name="port"/>, when that port goes away (the writer thread only).</summary>
    /// <param name="port">The port.</param>
    /// <returns>How many entries were removed.</returns>
    /// <remarks>A reader that began its lookup before the removal may still return the port once.</remarks>
    public int FlushPort(int port)
    {
        if ((uint)port > MaxPort)
        {
            ThrowPort(port);
        }

        var removed = RemoveWhere(new OnPort((ulong)(port + 1)));
        _writer.Flushed += removed;
        return removed;
    }

    /// <summary>Recounts every bucket's overflow from the entries (for tests: the counts must be exact, not just high enough).</summary>
    /// <returns>True when every count equals the entries that passed its bucket.</returns>
    internal bool OverflowCountsAreExact()
    {
        var expected = new int[_overflow.Length];
        for (var bucket = 0; bucket <= _bucketMask; bucket++)
        {
            for (var way = 0; way < Ways; way++)
            {
                var key = _words[_origin + (bucket * BucketWords) + way];
                for (var passed = Home(key & AddressBits); key != 0 && passed != bucket; passed = (passed + 1) & _bucketMask)
                {
                    expected[passed]++;
                }
            }
        }

        return expected.AsSpan().SequenceEqual(_overflow);
    }

    /// <summary>Word 0 of bucket 0 (see <see cref="_buckets"/>).</summary>
    private ref ulong Words => ref *_buckets;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private int Home(ulong address) => (int)((address * _multiplier) >> _shift);

    /// <summary>Word 0 of the home bucket of <paramref name="address"/> (the hash stays unsigned all the way: no sign extension per frame).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ref ulong HomeBucket(ulong address) => ref _buckets[((address * _multiplier) >> _shift) * BucketWords];

    /// <summary>Bit w set when entry w of <paramref name="bucket"/> holds <paramref name="address"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int Matches(ref ulong bucket, ulong address)
    {
        if (Vector256.IsHardwareAccelerated)
        {
            var keys = Vector256.LoadUnsafe(ref bucket);
            return (int)Vector256.Equals(keys & Vector256.Create(AddressBits), Vector256.Create(address)).ExtractMostSignificantBits();
        }

        var matches = 0;
        for (var way = 0; way < Ways; way++)
        {
            matches |= (Unsafe.Add(ref bucket, way) & AddressBits) == address ? 1 << way : 0;
        }

        return matches;
    }

    private long ExpiryOf(long lastSeen) => lastSeen > long.MaxValue - _aging ? long.MaxValue : lastSeen + _aging;

    /// <summary>The entry the vector compare nominated for <paramref name="address"/>: its port if it still holds the address and has not aged.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private int Read(ref ulong entry, ulong address, long now)
    {
        // Acquire, and the check that counts: the vector load only nominated this entry. The
        // stamp read next is at least as new as this key (stored before it).
        var key = Volatile.Read(ref entry);
        return (key & AddressBits) == address && now - (long)Volatile.Read(ref Unsafe.Add(ref entry, Ways)) < _aging
            ? (int)(key >> PortShift) - 1
            : Flood;
    }

    /// <summary>Lookup past a home bucket that did not hold the address: on while buckets say entries passed them.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private int LookupFurther(ulong address, long now)
    {
        var bucket = Home(address);

        // Bounded even if the writer keeps changing the table under this reader.
        for (var probes = 0; probes < _bucketMask && Volatile.Read(ref _overflow[bucket]) != 0; probes++)
        {
            bucket = (bucket + 1) & _bucketMask;
            ref var words = ref Unsafe.Add(ref Words, bucket * BucketWords);
            var matches = Matches(ref words, address);
            if (matches != 0)
            {
                return Read(ref Unsafe.Add(ref words, BitOperations.TrailingZeroCount(matches)), address, now);
            }
        }

        return Flood;
    }

    /// <summary>Learning past a home bucket that did not hold the address: it lives further on, or is new.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private MacLearnResult LearnFurther(ulong key, long now)
    {
        var address = key & AddressBits;
        var bucket = Home(address);
        for (var probes = 0; probes < _bucketMask && _overflow[bucket] != 0; probes++)
        {
            bucket = (bucket + 1) & _bucketMask;
            ref var words = ref Unsafe.Add(ref Words, bucket * BucketWords);
            var matches = Matches(ref words, address);
            if (matches != 0)
            {
                return Update(ref Unsafe.Add(ref words, BitOperations.TrailingZeroCount(matches)), key, now);
            }
        }

        return Insert(key, now);
    }

    /// <summary>The address is in entry <paramref name="stored"/> (its stamp four words on): refresh, move, or learn afresh if it had aged.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private MacLearnResult Update(ref ulong stored, ulong key, long now)
    {
        ref var stamp = ref Unsafe.Add(ref stored, Ways);
        var lastSeen = (long)stamp;
        if (now - lastSeen >= _aging)
        {
            // Aged out but not yet removed: learned afresh, in place. Stamp first, then the key
            // (release), so a reader seeing the key sees the new stamp.
            Volatile.Write(ref stamp, (ulong)now);
            Volatile.Write(ref stored, key);
            _writer.Learned++;
            return MacLearnResult.Learned;
        }

        // Stamps only move forward, so NextExpiry stays a lower bound of every expiry.
        if (now > lastSeen)
        {
            Volatile.Write(ref stamp, (ulong)now);
        }

        if (stored == key)
        {
            return MacLearnResult.Refreshed;
        }

        // One release store swaps the port: a reader sees the old port or the new one.
        Volatile.Write(ref stored, key);
        _writer.Moved++;
        return MacLearnResult.Moved;
    }

    private MacLearnResult Insert(ulong key, long now)
    {
        if (_writer.Count >= Capacity)
        {
            // Full: make room from aged entries, but only when one can have aged (NextExpiry is a
            // lower bound of every entry's expiry), so a flood of new addresses against a table of
            // live entries costs no sweep per frame.
            if (now >= _writer.NextExpiry)
            {
                Expire(now);
            }

            if (_writer.Count >= Capacity)
            {
                _writer.Refused++;
                return MacLearnResult.TableFull;
            }
        }

        // The first empty entry from the home bucket on; there is one, as at most half are used.
        var home = Home(key & AddressBits);
        var bucket = home;
        int empty;
        while ((empty = Matches(ref Unsafe.Add(ref Words, bucket * BucketWords), 0)) == 0)
        {
            bucket = (bucket + 1) & _bucketMask;
        }

        // Overflow counts first, so a reader that finds the key has passed buckets that told it to go on.
        for (var passed = home; passed != bucket; passed = (passed + 1) & _bucketMask)
        {
            _overflow[passed]++;
        }

        var entry = _origin + (bucket * BucketWords) + BitOperations.TrailingZeroCount(empty);
        _words[entry + Ways] = (ulong)now;

        // Release: counts and stamp are visible before the key that makes the entry findable.
        Volatile.Write(ref _words[entry], key);
        Volatile.Write(ref _writer.Count, _writer.Count + 1);
        _writer.NextExpiry = Math.Min(_writer.NextExpiry, ExpiryOf(now));
        _writer.Learned++;
        return MacLearnResult.Learned;
    }

    private int RemoveWhere<TMatch>(TMatch match)
        where TMatch : struct, IEntryMatch
    {
        var removed = 0;
        for (var bucket = 0; bucket <= _bucketMask; bucket++)
        {
            var at = _origin + (bucket * BucketWords);
            for (var way = 0; way < Ways; way++)
            {
                var key = _words[at + way];
                if (key == 0 || !match.Matches(key, (long)_words[at + Ways + way]))
                {
                    continue;
                }

                // Empty the entry (release), then lower the counts its insertion raised.
                Volatile.Write(ref _words[at + way], 0UL);
                for (var passed = Home(key & AddressBits); passed != bucket; passed = (passed + 1) & _bucketMask)
                {
                    _overflow[passed]--;
                }

                removed++;
            }
        }

        Volatile.Write(ref _writer.Count, _writer.Count - removed);
        return removed;
    }

    private static void ThrowPort(int port) =>
        throw new ArgumentOutOfRangeException(nameof(port), port, $"a port is 0 to {MaxPort}");

    private interface IEntryMatch
    {
        bool Matches(ulong key, long lastSeen);
    }

    /// <summary>
    /// State only the writer changes, in its own 128-byte block: readers of the buckets and of the
    /// fields fixed at creation never share a cache line with the counters it updates per frame.
    /// </summary>
    [StructLayout(LayoutKind.Explicit, Size = 3 * 128)]
    private struct WriterState
    {
        [FieldOffset(128)]
        public int Count;

        [FieldOffset(136)]
        public long NextExpiry;

        [FieldOffset(144)]
        public long Learned;

        [FieldOffset(152)]
        public long Moved;

        [FieldOffset(160)]
        public long Refused;

        [FieldOffset(168)]
        public long InvalidSources;

        [FieldOffset(176)]
        public long Aged;

        [FieldOffset(184)]
        public long Flushed;
    }

    private readonly struct AgedOut(long now, long aging) : IEntryMatch
    {
        public bool Matches(ulong key, long lastSeen) => now - lastSeen >= aging;
    }

    private readonly struct OnPort(ulong portPlusOne) : IEntryMatch
    {
        public bool Matches(ulong key, long lastSeen) => key >> PortShift == portPlusOne;
    }
}
