using Rings.Linux.Net;
using Rings.Linux.Switching;

namespace Rings.Tests.Switching;

/// <summary>
/// The MAC table's rules written plainly over a dictionary: what <see cref="MacTable"/> must do,
/// with none of its machinery (no hashing, no probing, no shifting, no sweep skipping).
/// </summary>
public sealed class MacTableModel(int capacity, long aging)
{
    private readonly Dictionary<MacAddress, (int Port, long LastSeen)> _entries = [];

    public int Count => _entries.Count;

    public MacTableCounters Counters { get; private set; }

    public int Lookup(MacAddress destination, long now) =>
        !destination.IsMulticast && _entries.TryGetValue(destination, out var e) && now - e.LastSeen < aging ? e.Port : MacTable.Flood;

    public MacLearnResult Learn(MacAddress source, int port, long now)
    {
        if (source.IsMulticast || source == default)
        {
            Counters = Counters with { InvalidSources = Counters.InvalidSources + 1 };
            return MacLearnResult.InvalidSource;
        }

        if (_entries.TryGetValue(source, out var e))
        {
            if (now - e.LastSeen >= aging)
            {
                _entries[source] = (port, now);
                Counters = Counters with { Learned = Counters.Learned + 1 };
                return MacLearnResult.Learned;
            }

            _entries[source] = (port, Math.Max(now, e.LastSeen));
            if (e.Port == port)
            {
                return MacLearnResult.Refreshed;
            }

            Counters = Counters with { Moved = Counters.Moved + 1 };
            return MacLearnResult.Moved;
        }

        if (_entries.Count >= capacity)
        {
            Expire(now);
            if (_entries.Count >= capacity)
            {
                Counters = Counters with { Refused = Counters.Refused + 1 };
                return MacLearnResult.TableFull;
            }
        }

        _entries[source] = (port, now);
        Counters = Counters with { Learned = Counters.Learned + 1 };
        return MacLearnResult.Learned;
    }

    public int Expire(long now)
    {
        var removed = RemoveWhere(e => now - e.LastSeen >= aging);
        Counters = Counters with { Aged = Counters.Aged + removed };
        return removed;
    }

    public int FlushPort(int port)
    {
        var removed = RemoveWhere(e => e.Port == port);
        Counters = Counters with { Flushed = Counters.Flushed + removed };
        return removed;
    }

    private int RemoveWhere(Func<(int Port, long LastSeen), bool> match)
    {
        var gone = _entries.Where(kv => match(kv.Value)).Select(kv => kv.Key).ToList();
        foreach (var key in gone)
        {
            _entries.Remove(key);
        }

        return gone.Count;
    }
}
