using Rings.Linux.Net;
using Rings.Linux.Ports;
using Rings.Linux.Switching;

namespace Rings.Linux.Runtime;

/// <summary>
/// An L2 learning switch (IEEE 802.1D transparent bridging without spanning tree): learns each
/// unicast source address on the port it arrived on, sends a frame for a learned address out of
/// that port only, and floods broadcast, multicast and unknown destinations to every other port
/// whose link is up, never back to the ingress port. A frame for a station learned on its own
/// ingress port is filtered (<see cref="DropReason.Filtered"/>). A multicast source is never
/// learned. Entries age out; a port that goes down has its entries flushed.
/// <para>
/// The MAC table has one writer and lock-free readers. With one worker that worker learns
/// directly. With several, worker 0 is the writer: the others queue what they saw (new or moved
/// stations, and age refreshes at most a few times per aging period per station) on a
/// single-producer single-consumer queue that worker 0 drains every round; a full queue loses a
/// refresh, never a frame. Link-down flushes are requested from control threads and applied by
/// worker 0 too; until then lookups that name a down port flood instead. The queues are per
/// worker, not per port: when the pipeline spreads one port's queue pairs over several workers,
/// each of them receives from that port and learns through its own queue, so every queue still
/// has one producer, and worker 0 stays the table's only writer. Readers need no lock: the
/// table's entries are published by the writer with release and read with acquire (MacTable).
/// </para>
/// </summary>
public sealed class LearningSwitch : FrameProcessor
{
    /// <summary>Entries the table holds by default.</summary>
    public const int DefaultCapacity = 4096;

    /// <summary>Default aging time: 300 s, as IEEE 802.1D recommends.</summary>
    public const long DefaultAgingMilliseconds = 300_000;

    private const int LearnQueueSize = 1024;
    private const int RecentSlots = 256;

    private readonly MacTable _table;
    private readonly long _aging;
    private readonly long _refresh;
    private LearnQueue[] _queues = [];
    private long[][] _recentKeys = [];
    private long[][] _recentTimes = [];
    private ulong _flushRequests;
    private long _nextExpire;

    /// <summary>Creates a switch.</summary>
    /// <param name="capacity">Most stations the table holds; new ones beyond flood until entries age out.</param>
    /// <param name="agingMilliseconds">How long an entry lives without a frame from its station.</param>
    public LearningSwitch(int capacity = DefaultCapacity, long agingMilliseconds = DefaultAgingMilliseconds)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(agingMilliseconds, 1);
        _table = new MacTable(capacity, agingMilliseconds);
        _aging = agingMilliseconds;
        _refresh = Math.Max(1, agingMilliseconds / 4);
    }

    /// <inheritdoc/>
    public override string Name => "switch";

    /// <summary>Stations in the table (aged ones not yet removed included).</summary>
    public int Stations => _table.Count;

    /// <summary>The MAC table (its counters: learned, moved, refused, aged, flushed).</summary>
    public MacTable Table => _table;

    /// <summary>Learn events lost because a worker's queue to the writer was full.</summary>
    public long LostLearnEvents
    {
        get
        {
            long sum = 0;
            foreach (var q in _queues)
            {
                sum += Volatile.Read(ref q.Lost);
            }

            return sum;
        }
    }

    /// <summary>The port the table names for <paramref name="mac"/> now, or <see cref="MacTable.Flood"/> (-1) (any thread).</summary>
    /// <param name="mac">The address, six octets.</param>
    /// <returns>The port index or -1.</returns>
    public int Lookup(ReadOnlySpan<byte> mac) => _table.Lookup(MacAddress.Read(mac), Environment.TickCount64);

    /// <inheritdoc/>
    public override void Attach(IReadOnlyList<Port> ports, int workers)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(workers, 1);
        _queues = new LearnQueue[workers];
        _recentKeys = new long[workers][];
        _recentTimes = new long[workers][];
        for (var w = 0; w < workers; w++)
        {
            _queues[w] = new LearnQueue();
            _recentKeys[w] = new long[RecentSlots];
            _recentTimes[w] = new long[RecentSlots];
        }
    }

    /// <inheritdoc/>
    public override void Process(FrameBurst burst)
    {
        var ingress = burst.IngressIndex;
        var flood = burst.FloodMask.Bits;
        var now = burst.Now;
        var writer = burst.Worker == 0 || _queues.Length <= 1;
        for (var i = 0; i < burst.Count; i++)
        {
            var head = burst.Head(i);
            var destination = MacAddress.Read(head);
            var source = MacAddress.Read(head[6..]);
            if (!source.IsMulticast && ingress >= 0)
            {
                if (writer)
                {
                    _table.Learn(source, ingress, now);
                }
                else
                {
                    Queue(burst.Worker, source, ingress, now);
                }
            }

            var port = _table.Lookup(destination, now);
            if (port == MacTable.Flood)
            {
                burst.Flood(i);
            }
            else if (port == ingress)
            {
                burst.Drop(i, DropReason.Filtered);
            }
            else if ((flood & (1UL << port)) != 0)
            {
                burst.Forward(i, port);
            }
            else
            {
                // Learned on a port that is down and not yet flushed.
                burst.Flood(i);
            }
        }
    }

    /// <inheritdoc/>
    public override void Poll(int worker, long now)
    {
        if (worker != 0)
        {
            return;
        }

        for (var w = 1; w < _queues.Length; w++)
        {
            var q = _queues[w];
            while (q.TryDequeue(out var mac, out var port, out var seen))
            {
                _table.Learn(mac, port, seen);
            }
        }

        var flush = Volatile.Read(ref _flushRequests);
        if (flush != 0)
        {
            flush = Interlocked.Exchange(ref _flushRequests, 0);
            foreach (var p in new PortMask(flush))
            {
                _table.FlushPort(p);
            }
        }

        if (now >= _nextExpire)
        {
            _nextExpire = now + Math.Min(1000, _aging);
            _table.Expire(now);
        }
    }

    /// <inheritdoc/>
    public override void OnLinkChanged(Port port, LinkState state)
    {
        ArgumentNullException.ThrowIfNull(port);
        if (state == LinkState.Down && port.Index >= 0)
        {
            // Applied by the writer (worker 0) in its next round.
            Interlocked.Or(ref _flushRequests, 1UL << port.Index);
        }
    }

    private void Queue(int worker, MacAddress mac, int port, long now)
    {
        // A small direct-mapped memory of what this worker sent lately, so a busy station costs
        // the writer a few refreshes per aging period, not one per frame.
        var keys = _recentKeys[worker];
        var times = _recentTimes[worker];
        var slot = (int)((mac.Bits * 0x9E3779B97F4A7C15UL) >> 56);
        var tag = (long)(mac.Bits | ((ulong)(port + 1) << 48));
        if (keys[slot] == tag && now - times[slot] < _refresh && _table.Lookup(mac, now) == port)
        {
            return;
        }

        if (_queues[worker].TryEnqueue(mac, port, now))
        {
            keys[slot] = tag;
            times[slot] = now;
        }
    }

    /// <summary>A worker's learn events for the writer: single producer, single consumer.</summary>
    private sealed class LearnQueue
    {
        private readonly MacAddress[] _macs = new MacAddress[LearnQueueSize];
        private readonly int[] _ports = new int[LearnQueueSize];
        private readonly long[] _times = new long[LearnQueueSize];
        private readonly long[] _positions = new long[32]; // [0]: head (producer), [16]: tail (consumer), a cache line and more apart
        public long Lost;

        public bool TryEnqueue(MacAddress mac, int port, long now)
        {
            var head = _positions[0];
            if (head - Volatile.Read(ref _positions[16]) >= LearnQueueSize)
            {
                Lost++;
                return false;
            }

            var i = (int)(head & (LearnQueueSize - 1));
            _macs[i] = mac;
            _ports[i] = port;
            _times[i] = now;

            // Release: the entry is written before the writer sees it.
            Volatile.Write(ref _positions[0], head + 1);
            return true;
        }

        public bool TryDequeue(out MacAddress mac, out int port, out long now)
        {
            var tail = _positions[16];

            // Acquire: entries below head are written.
            if (tail == Volatile.Read(ref _positions[0]))
            {
                mac = default;
                port = 0;
                now = 0;
                return false;
            }

            var i = (int)(tail & (LearnQueueSize - 1));
            mac = _macs[i];
            port = _ports[i];
            now = _times[i];
            Volatile.Write(ref _positions[16], tail + 1);
            return true;
        }
    }
}
