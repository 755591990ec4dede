namespace Rings.Linux.Runtime;

/// <summary>What the learning switch needs of a MAC table: one writer, lock-free readers.</summary>
internal interface IMacTable
{
    /// <summary>Entries held.</summary>
    int Count { get; }

    /// <summary>The live port of <paramref name="mac"/>, or -1 (any thread).</summary>
    int Lookup(ulong mac, long now);

    /// <summary>Learns or refreshes <paramref name="mac"/> on <paramref name="port"/> (the writer only).</summary>
    void Learn(ulong mac, int port, long now);

    /// <summary>Removes the entries naming <paramref name="port"/> (the writer only).</summary>
    int FlushPort(int port);

    /// <summary>Removes aged entries (the writer only).</summary>
    int Expire(long now);
}

/// <summary>
/// A small MAC table until the full one lands: open addressing over twice the capacity, the
/// address and port in one 64-bit word (one release store, one acquire load: nothing to tear),
/// the age stamp beside it. Removal empties slots and re-inserts the rest of their probe run; a
/// reader racing it may miss an entry for a moment and flood.
/// </summary>
internal sealed class InterimMacTable : IMacTable
{
    private const ulong AddressBits = (1UL << 48) - 1;
    private readonly ulong[] _keys;
    private readonly long[] _seen;
    private readonly int _mask;
    private readonly int _capacity;
    private readonly long _aging;
    private int _count;

    public InterimMacTable(int capacity, long aging)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(capacity, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(capacity, 1 << 24);
        var slots = (int)System.Numerics.BitOperations.RoundUpToPowerOf2((uint)capacity * 2);
        _keys = new ulong[slots];
        _seen = new long[slots];
        _mask = slots - 1;
        _capacity = capacity;
        _aging = aging;
    }

    public int Count => Volatile.Read(ref _count);

    public int Lookup(ulong mac, long now)
    {
        var i = Home(mac);
        for (var probes = 0; probes <= _mask; probes++)
        {
            var key = Volatile.Read(ref _keys[i]);
            if (key == 0)
            {
                return -1;
            }

            if ((key & AddressBits) == mac)
            {
                return now - Volatile.Read(ref _seen[i]) < _aging ? (int)(key >> 48) - 1 : -1;
            }

            i = (i + 1) & _mask;
        }

        return -1;
    }

    public void Learn(ulong mac, int port, long now)
    {
        var key = mac | ((ulong)(port + 1) << 48);
        var i = Home(mac);
        while (true)
        {
            var found = _keys[i];
            if (found == 0)
            {
                if (_count >= _capacity)
                {
                    return;
                }

                Volatile.Write(ref _seen[i], now);
                Volatile.Write(ref _keys[i], key);
                Volatile.Write(ref _count, _count + 1);
                return;
            }

            if ((found & AddressBits) == mac)
            {
                if (now > _seen[i])
                {
                    Volatile.Write(ref _seen[i], now);
                }

                if (found != key)
                {
                    Volatile.Write(ref _keys[i], key);
                }

                return;
            }

            i = (i + 1) & _mask;
        }
    }

    public int FlushPort(int port) => RemoveWhere((key, _) => (int)(key >> 48) - 1 == port);

    public int Expire(long now) => RemoveWhere((_, seen) => now - seen >= _aging);

    private int RemoveWhere(Func<ulong, long, bool> remove)
    {
        var removed = 0;
        for (var i = 0; i <= _mask; i++)
        {
            if (_keys[i] != 0 && remove(_keys[i], _seen[i]))
            {
                Volatile.Write(ref _keys[i], 0);
                removed++;
            }
        }

        if (removed == 0)
        {
            return 0;
        }

        // Re-insert every entry so no probe run has a hole.
        var keys = (ulong[])_keys.Clone();
        var seen = (long[])_seen.Clone();
        for (var i = 0; i <= _mask; i++)
        {
            if (keys[i] != 0 && Home(keys[i] & AddressBits) != i)
            {
                Volatile.Write(ref _keys[i], 0);
            }
        }

        _count = 0;
        for (var i = 0; i <= _mask; i++)
        {
            if (keys[i] != 0)
            {
                if (Home(keys[i] & AddressBits) == i)
                {
                    _count++;
                    continue;
                }

                Learn(keys[i] & AddressBits, (int)(keys[i] >> 48) - 1, seen[i]);
            }
        }

        return removed;
    }

    private int Home(ulong mac) => (int)((mac * 0x9E3779B97F4A7C15UL) >> 40) & _mask;
}
