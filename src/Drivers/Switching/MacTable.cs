using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
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

    /// <summary>A group address as source is never learned (it names no single station).</summary>
    MulticastSource,

    /// <summary>The table is full of live entries: the new address was not learned (frames to it flood).</summary>
    TableFull,
}

/// <summary>Counters of a <see cref="MacTable"/> since it was created.</summary>
/// <param name="Learned">New entries (including re-learned ones that had aged out).</param>
/// <param name="Moved">Stations seen on a different port than their entry named.</param>
/// <param name="Refused">New addresses not learned because the table was full.</param>
/// <param name="MulticastSources">Frames whose source was a group address (ignored).</param>
/// <param name="Aged">Entries removed because they had not been seen for the aging time.</param>
/// <param name="Flushed">Entries removed by <see cref="MacTable.FlushPort"/>.</param>
public readonly record struct MacTableCounters(long Learned, long Moved, long Refused, long MulticastSources, long Aged, long Flushed);

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
/// The scheme: open addressing with linear probing over a power-of-two array of slots, at most
/// half of them used. A slot's address and port share one 64-bit word (48 bits of address, 16 of
/// port + 1; zero is an empty slot), written by the writer with one release store and read by
/// readers with one acquire load, so a reader can never see the address of one entry with the
/// port of another: there is nothing to tear, and no sequence number or retry is needed. The age
/// stamp is a second word, stored before the key word it belongs to (release), so a reader that
/// sees a key sees a stamp at least as new. Removal shifts later entries of the probe run back
/// (no tombstones, so runs never lengthen); a reader racing a removal may miss an entry for that
/// moment and answer <see cref="Flood"/>, which delivers the frame anyway. Every port a reader
/// returns was the learned port of that address at some moment.
/// </para>
/// </remarks>
public sealed class MacTable
{
    /// <summary>What <see cref="Lookup"/> returns for a destination with no live entry, or a group address.</summary>
    public const int Flood = -1;

    /// <summary>The highest port number an entry can hold.</summary>
    public const int MaxPort = ushort.MaxValue - 1;

    /// <summary>The largest capacity (entries) a table can be created with.</summary>
    public const int MaxCapacity = 1 << 24;

    private const ulong AddressBits = (1UL << 48) - 1;
    private const int PortShift = 48;

    private readonly Slot[] _slots;
    private readonly int _mask;
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

        // At most half the slots used: linear probe runs stay short, and an empty slot always
        // ends a probe and a removal's shift.
        var slots = (int)BitOperations.RoundUpToPowerOf2((uint)capacity * 2);
        _slots = new Slot[slots];
        _mask = slots - 1;
        _shift = 64 - BitOperations.Log2((uint)slots);

        // Multiply-shift hashing with a random odd multiplier per table: a sender choosing its
        // source addresses cannot aim them at one probe run without knowing the multiplier.
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
        Volatile.Read(ref _writer.MulticastSources),
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
        if ((address & 1) != 0)
        {
            return Flood;
        }

        var slots = _slots;
        var mask = _mask;
        var i = Home(address);

        // Bounded even if the writer keeps changing the table under this reader.
        for (var probes = 0; probes <= mask; probes++)
        {
            ref var slot = ref slots[i];

            // Acquire: the age stamp read next is at least as new as this key (stored before it).
            var key = Volatile.Read(ref slot.Key);
            if (key == 0)
            {
                return Flood;
            }

            if ((key & AddressBits) == address)
            {
                return now - Volatile.Read(ref slot.LastSeen) < _aging ? (int)(key >> PortShift) - 1 : Flood;
            }

            i = (i + 1) & mask;
        }

        return Flood;
    }

    /// <summary>Learns that <paramref name="source"/> is reachable through <paramref name="port"/> (the writer thread only).</summary>
    /// <param name="source">The frame's source address.</param>
    /// <param name="port">The port the frame came in on (0 to <see cref="MaxPort"/>).</param>
    /// <param name="now">The current time in ticks.</param>
    /// <returns>What changed.</returns>
    public MacLearnResult Learn(MacAddress source, int port, long now)
    {
        if ((uint)port > MaxPort)
        {
            ThrowPort(port);
        }

        var address = source.Bits;
        if ((address & 1) != 0)
        {
            _writer.MulticastSources++;
            return MacLearnResult.MulticastSource;
        }

        var key = address | ((ulong)(port + 1) << PortShift);
        var slots = _slots;
        var i = Home(address);

        // Ends: at most half the slots are used, so an empty one comes.
        while (true)
        {
            ref var slot = ref slots[i];

            // Only this thread writes slots: plain reads of its own data.
            var found = slot.Key;
            if (found == 0)
            {
                return Insert(key, now);
            }

            if ((found & AddressBits) == address)
            {
                var lastSeen = slot.LastSeen;
                if (now - lastSeen >= _aging)
                {
                    // Aged out but not yet removed: learned afresh, in place. Stamp first, then the
                    // key (release), so a reader seeing the key sees the new stamp.
                    Volatile.Write(ref slot.LastSeen, now);
                    Volatile.Write(ref slot.Key, key);
                    _writer.Learned++;
                    return MacLearnResult.Learned;
                }

                // Stamps only move forward, so NextExpiry stays a lower bound of every expiry.
                if (now > lastSeen)
                {
                    Volatile.Write(ref slot.LastSeen, now);
                }

                if (found == key)
                {
                    return MacLearnResult.Refreshed;
                }

                // One release store swaps the port: a reader sees the old port or the new one.
                Volatile.Write(ref slot.Key, key);
                _writer.Moved++;
                return MacLearnResult.Moved;
            }

            i = (i + 1) & _mask;
        }
    }

    /// <summary>Removes every entry that has aged out by <paramref name="now"/> (the writer thread only).</summary>
    /// <param name="now">The current time in ticks.</param>
    /// <returns>How many entries were removed.</returns>
    public int Expire(long now)
    {
        var removed = RemoveWhere(new AgedOut(now, _aging));
        _writer.Aged += removed;

        var next = long.MaxValue;
        foreach (ref readonly var slot in _slots.AsSpan())
        {
            if (slot.Key != 0)
            {
                next = Math.Min(next, ExpiryOf(slot.LastSeen));
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

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private int Home(ulong address) => (int)((address * _multiplier) >> _shift);

    private long ExpiryOf(long lastSeen) => lastSeen > long.MaxValue - _aging ? long.MaxValue : lastSeen + _aging;

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

        // The address is not in the table (the caller's probe ended at an empty slot, and a sweep
        // only removes); probe again from its home, since a sweep may have shifted entries.
        var i = Home(key & AddressBits);
        while (_slots[i].Key != 0)
        {
            i = (i + 1) & _mask;
        }

        ref var slot = ref _slots[i];
        slot.LastSeen = now;

        // Release: the stamp is visible before the key that makes the slot findable.
        Volatile.Write(ref slot.Key, key);
        Volatile.Write(ref _writer.Count, _writer.Count + 1);
        _writer.NextExpiry = Math.Min(_writer.NextExpiry, ExpiryOf(now));
        _writer.Learned++;
        return MacLearnResult.Learned;
    }

    private int RemoveWhere<TMatch>(TMatch match)
        where TMatch : struct, ISlotMatch
    {
        var slots = _slots;
        var mask = _mask;

        // Scan from just after an empty slot (there always is one): no probe run then wraps past
        // the scan's start, and the entries a removal shifts back land at or after the position
        // being scanned, so each is looked at once.
        var start = 0;
        while (slots[start].Key != 0)
        {
            start++;
        }

        var removed = 0;
        var i = (start + 1) & mask;
        for (var scanned = 0; scanned < slots.Length;)
        {
            ref var slot = ref slots[i];
            if (slot.Key != 0 && match.Matches(slot.Key, slot.LastSeen))
            {
                RemoveAt(i);
                removed++;

                // Look at the same slot again: a later entry may have shifted into it.
                continue;
            }

            i = (i + 1) & mask;
            scanned++;
        }

        Volatile.Write(ref _writer.Count, _writer.Count - removed);
        return removed;
    }

    /// <summary>Empties slot <paramref name="hole"/>, shifting later entries of its probe run back (linear probing deletion without tombstones).</summary>
    private void RemoveAt(int hole)
    {
        var slots = _slots;
        var mask = _mask;
        var j = hole;
        while (true)
        {
            j = (j + 1) & mask;
            var key = slots[j].Key;
            if (key == 0)
            {
                break;
            }

            // The entry at j may fill the hole only if its home is at or before the hole in its
            // probe run; moved before its home, lookups starting there would not find it.
            var home = Home(key & AddressBits);
            if (((j - home) & mask) >= ((j - hole) & mask))
            {
                // Copy first (stamp, then key with release): for a moment the entry is in both
                // slots, which readers tolerate; then the old slot becomes the next hole.
                Volatile.Write(ref slots[hole].LastSeen, slots[j].LastSeen);
                Volatile.Write(ref slots[hole].Key, key);
                hole = j;
            }
        }

        Volatile.Write(ref slots[hole].Key, 0);
    }

    private static void ThrowPort(int port) =>
        throw new ArgumentOutOfRangeException(nameof(port), port, $"a port is 0 to {MaxPort}");

    private interface ISlotMatch
    {
        bool Matches(ulong key, long lastSeen);
    }

    /// <summary>One entry: address and port in one word, so readers load both at once.</summary>
    [StructLayout(LayoutKind.Sequential)]
    private struct Slot
    {
        /// <summary>Address in bits 0-47, port + 1 in bits 48-63; 0 when the slot is empty.</summary>
        public ulong Key;

        /// <summary>The tick the address was last seen as a source.</summary>
        public long LastSeen;
    }

    /// <summary>
    /// State only the writer changes, in its own 128-byte block: readers of the slots and of the
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
        public long MulticastSources;

        [FieldOffset(176)]
        public long Aged;

        [FieldOffset(184)]
        public long Flushed;
    }

    private readonly struct AgedOut(long now, long aging) : ISlotMatch
    {
        public bool Matches(ulong key, long lastSeen) => now - lastSeen >= aging;
    }

    private readonly struct OnPort(ulong portPlusOne) : ISlotMatch
    {
        public bool Matches(ulong key, long lastSeen) => key >> PortShift == portPlusOne;
    }
}
