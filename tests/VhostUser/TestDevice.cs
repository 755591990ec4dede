using System.Buffers.Binary;
using Rings.Chains;
using Rings.Linux.Device;
using Rings.Linux.Driver;

namespace Rings.Tests.VhostUser;

/// <summary>
/// A minimal device data path for tests (the real worker comes with the net driver): keeps the
/// started queues, and injects frames into receive rings and takes frames from transmit rings,
/// one locked operation at a time, so a stop event never races a ring operation.
/// </summary>
internal sealed class TestDevice
{
    private readonly object _lock = new();
    private readonly Dictionary<int, VhostQueue> _queues = [];

    public TestDevice(VhostUserBackend backend)
    {
        backend.QueueStarted += (_, e) => Started(e.Queue);
        backend.QueueStopped += (_, e) => Stopped(e.Queue);
    }

    public TestDevice(VhostUserSession session)
    {
        session.QueueStarted += (_, e) => Started(e.Queue);
        session.QueueStopped += (_, e) => Stopped(e.Queue);
    }

    public int StartEvents { get; private set; }

    public int StopEvents { get; private set; }

    public List<VhostQueue> History { get; } = [];

    public VhostQueue? Queue(int index)
    {
        lock (_lock)
        {
            return _queues.GetValueOrDefault(index);
        }
    }

    /// <summary>Waits until the given vrings are all started (and enabled, if asked).</summary>
    public bool WaitForQueues(int count, int timeoutMilliseconds, bool enabled = true) =>
        Wait(() =>
        {
            lock (_lock)
            {
                return Enumerable.Range(0, count).All(i => _queues.TryGetValue(i, out var q) && (!enabled || q.Enabled));
            }
        }, timeoutMilliseconds);

    /// <summary>Writes a 12-byte virtio_net_hdr_v1 (num_buffers = 1) and the frame into the next receive buffer.</summary>
    public bool TryInject(int rxIndex, ReadOnlySpan<byte> frame)
    {
        lock (_lock)
        {
            if (!_queues.TryGetValue(rxIndex, out var q) || !q.Enabled || !q.Ring.TryPop(out var chain))
            {
                return false;
            }

            Span<byte> packet = stackalloc byte[12 + frame.Length];
            packet.Clear();
            BinaryPrimitives.WriteUInt16LittleEndian(packet[10..], 1);
            frame.CopyTo(packet[12..]);
            var written = chain.CopyToWritable(packet);
            q.Ring.PushUsed(chain.Token, (uint)written);
            q.Ring.PublishUsed();
            if (q.Ring.CallNeeded())
            {
                q.Call?.Signal();
            }

            return written == packet.Length;
        }
    }

    /// <summary>Takes the next transmitted buffer (header and frame) and returns it used.</summary>
    public bool TryTake(int txIndex, out byte[] packet)
    {
        lock (_lock)
        {
            packet = [];
            if (!_queues.TryGetValue(txIndex, out var q))
            {
                return false;
            }

            q.Kick?.TryConsume(out _);
            if (!q.Ring.TryPop(out var chain))
            {
                return false;
            }

            packet = new byte[chain.ReadableBytes];
            chain.CopyReadableTo(packet);
            q.Ring.PushUsed(chain.Token, 0);
            q.Ring.PublishUsed();
            if (q.Ring.CallNeeded())
            {
                q.Call?.Signal();
            }

            return true;
        }
    }

    /// <summary>Moves every transmitted frame of <paramref name="pair"/> into its receive ring (a loopback device).</summary>
    public int Echo(int pair)
    {
        var moved = 0;
        while (TryTake((2 * pair) + 1, out var packet))
        {
            if (TryInject(2 * pair, packet.AsSpan(12)))
            {
                moved++;
            }
        }

        return moved;
    }

    public static bool Wait(Func<bool> condition, int timeoutMilliseconds)
    {
        var deadline = Environment.TickCount64 + timeoutMilliseconds;
        while (!condition())
        {
            if (Environment.TickCount64 > deadline)
            {
                return false;
            }

            Thread.Sleep(5);
        }

        return true;
    }

    private void Started(VhostQueue q)
    {
        lock (_lock)
        {
            _queues[q.Index] = q;
            StartEvents++;
            History.Add(q);
        }
    }

    private void Stopped(VhostQueue q)
    {
        lock (_lock)
        {
            _queues.Remove(q.Index);
            StopEvents++;
        }
    }
}

/// <summary>Test frames: locally administered MACs, EtherType 0x88B5, a sequence number.</summary>
internal static class TestFrames
{
    public static byte[] Make(int sequence, int length = 64)
    {
        var frame = new byte[length];
        byte[] dst = [0x02, 0, 0, 0, 0, 0x02];
        byte[] src = [0x02, 0, 0, 0, 0, 0x01];
        dst.CopyTo(frame, 0);
        src.CopyTo(frame, 6);
        frame[12] = 0x88;
        frame[13] = 0xB5;
        BinaryPrimitives.WriteInt32BigEndian(frame.AsSpan(14), sequence);
        for (var i = 18; i < length; i++)
        {
            frame[i] = (byte)(sequence + i);
        }

        return frame;
    }

    public static int Sequence(ReadOnlySpan<byte> frame) => BinaryPrimitives.ReadInt32BigEndian(frame[14..]);
}

/// <summary>The driver side of a test: posts receive buffers, sends frames, takes received frames.</summary>
internal sealed class TestDriver
{
    private const int BufferBytes = 2048;
    private readonly VhostUserFrontend _frontend;
    private readonly Dictionary<ushort, ulong> _rxBuffers = [];
    private readonly Queue<ulong> _txFree = new();
    private readonly Dictionary<ushort, ulong> _txOutstanding = [];
    private int _nextSlot;

    public TestDriver(VhostUserFrontend frontend)
    {
        _frontend = frontend;
        for (var i = 0; i < 64; i++)
        {
            _txFree.Enqueue(NewBuffer());
        }
    }

    public int Kicks { get; private set; }

    public void PostReceiveBuffers(int rxIndex, int count)
    {
        var ring = _frontend.Queues[rxIndex].Ring!;
        for (var i = 0; i < count; i++)
        {
            var address = NewBuffer();
            if (!ring.TryAdd(new BufferSegment(address, BufferBytes), true, out var id))
            {
                break;
            }

            _rxBuffers[id] = address;
        }

        Publish(rxIndex);
    }

    /// <summary>Sends header (zeroed) and frame as one buffer.</summary>
    public bool Send(int txIndex, ReadOnlySpan<byte> frame)
    {
        var ring = _frontend.Queues[txIndex].Ring!;
        Reclaim(txIndex);
        if (!_txFree.TryDequeue(out var address))
        {
            return false;
        }

        var span = _frontend.GuestSpan(address, 12 + frame.Length);
        span[..12].Clear();
        frame.CopyTo(span[12..]);
        if (!ring.TryAdd(new BufferSegment(address, (uint)span.Length), false, out var id))
        {
            _txFree.Enqueue(address);
            return false;
        }

        _txOutstanding[id] = address;
        Publish(txIndex);
        return true;
    }

    /// <summary>Takes received frames (without their header) until <paramref name="count"/> arrived or time ran out; re-posts the buffers.</summary>
    public List<byte[]> Receive(int rxIndex, int count, int timeoutMilliseconds)
    {
        var q = _frontend.Queues[rxIndex];
        var frames = new List<byte[]>();
        var deadline = Environment.TickCount64 + timeoutMilliseconds;
        while (frames.Count < count && Environment.TickCount64 < deadline)
        {
            if (!q.Ring!.TryTakeUsed(out var used))
            {
                if (!q.Ring.EnableUsedNotifications())
                {
                    q.Call.Wait(20);
                }

                continue;
            }

            var address = _rxBuffers[used.Id];
            _rxBuffers.Remove(used.Id);
            var packet = _frontend.GuestSpan(address, (int)used.Length);
            frames.Add(packet[12..].ToArray());
            if (q.Ring.TryAdd(new BufferSegment(address, BufferBytes), true, out var id))
            {
                _rxBuffers[id] = address;
                Publish(rxIndex);
            }
        }

        return frames;
    }

    private void Reclaim(int txIndex)
    {
        var ring = _frontend.Queues[txIndex].Ring!;
        while (ring.TryTakeUsed(out var used))
        {
            _txFree.Enqueue(_txOutstanding[used.Id]);
            _txOutstanding.Remove(used.Id);
        }
    }

    private void Publish(int index)
    {
        var q = _frontend.Queues[index];
        q.Ring!.Publish();
        if (q.Ring.KickNeeded())
        {
            q.Kick.Signal();
            Kicks++;
        }
    }

    private ulong NewBuffer()
    {
        var address = _frontend.BufferAddress + ((ulong)_nextSlot++ * BufferBytes);
        if (address + BufferBytes > _frontend.BufferAddress + _frontend.BufferBytes)
        {
            throw new InvalidOperationException("buffer area exhausted");
        }

        return address;
    }
}
