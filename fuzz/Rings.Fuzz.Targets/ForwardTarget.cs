using System.Buffers.Binary;
using Rings.Chains;
using Rings.Linux.Device;
using Rings.Linux.Net;
using Rings.Linux.Plumbing;
using Rings.Linux.Ports;
using Rings.Linux.Runtime;
using Rings.Linux.VhostUser;

namespace Rings.Fuzz.Targets;

/// <summary>
/// (f) The forwarding path of the runtime: two guests, each behind a <c>vhost-user</c> port (its
/// rings attached as a vhost-user session would attach them), and an in-memory port, joined by a
/// learning switch in a pipeline driven round by round. The fuzzer plays both guests' drivers:
/// it sends frames, posts receive buffers, takes what comes back, and scribbles over a guest's
/// memory (rings, frames in flight, posted buffers) between rounds.
/// </summary>
/// <remarks>
/// Input: byte 0 = guest A packed (bit 0), guest B packed (bit 1), MRG_RXBUF (bit 2), EVENT_IDX
/// (bit 3), IN_ORDER (bit 4), queue size 4 &lt;&lt; bits 5-6; then operations (<see cref="Op"/>,
/// modulo the count) with their argument bytes.
/// Always: no exception, no error counted by the worker; a guest that scribbled only harms itself:
/// the other guest's rings (driver and device side) never break. While no guest has scribbled:
/// every frame a port delivers is one that was sent (by its sequence number), byte for byte, to a
/// port other than the one it came in on, at most once per port, and no ring breaks at all.
/// </remarks>
public static class ForwardTarget
{
    /// <summary>Bytes of each guest's memory: two rings, then transmit and receive slots.</summary>
    public const int GuestBytes = 192 << 10;

    /// <summary>Most operations one input runs.</summary>
    public const int MaxOperations = 2048;

    private const int SlotBytes = 2048;
    private const int TxSlots = 0x4000;
    private const int RxSlots = 0x4000 + (32 * SlotBytes);
    private const int Guests = 2;
    private const int MemoryPort = 2;

    /// <summary>The operations.</summary>
    public enum Op : byte
    {
        /// <summary>A guest sends a frame. Args: guest (bit 0) and destination (bits 1-3: A, B, the in-memory port, broadcast, unknown), payload length byte (x 8).</summary>
        Send,

        /// <summary>A guest posts receive buffers. Args: guest (bit 0) and count (bits 1-7), buffer size byte (64 x (1 + b % 32)).</summary>
        Post,

        /// <summary>The pipeline runs rounds. Arg: rounds (1-4).</summary>
        Round,

        /// <summary>A guest takes back what the device returned: transmit completions and received frames. Arg: guest (bit 0).</summary>
        Take,

        /// <summary>Random bytes over a guest's memory. Args: guest (bit 0) and length (bits 1-5, +1), u32 offset, the bytes.</summary>
        Scribble,

        /// <summary>A frame into the in-memory port. Args: destination (bits 0-2 as for Send), payload length byte.</summary>
        Inject,
    }

    /// <summary>Runs one input.</summary>
    /// <param name="data">The fuzzer's bytes.</param>
    public static void Run(ReadOnlySpan<byte> data)
    {
        var input = new FuzzInput(data);
        var config = input.Byte();
        var size = 4 << ((config >> 5) & 3);
        var features = VirtioFeatures.Version1;
        features |= (config & 4) != 0 ? VirtioFeatures.NetMergeRxBuffers : 0;
        features |= (config & 8) != 0 ? VirtioFeatures.EventIndex : 0;
        features |= (config & 16) != 0 ? VirtioFeatures.InOrder : 0;

        var guests = new Guest[Guests];
        var ports = new Port[Guests + 1];
        for (var g = 0; g < Guests; g++)
        {
            var format = (config & (1 << g)) != 0 ? RingFormat.Packed : RingFormat.Split;
            guests[g] = new Guest(g, format, size, features | format.Feature);
            ports[g] = guests[g].Port;
        }

        var memoryPort = new InMemoryPort("memory", slots: 64);
        memoryPort.Open();
        ports[MemoryPort] = memoryPort;
        var sent = new Dictionary<uint, (int Ingress, byte[] Frame)>();
        var delivered = new HashSet<(uint, int)>();
        var scribbled = new bool[Guests];
        var frame = new byte[FrameBurst.MaxFrameLength];
        uint sequence = 0;
        using (var pipeline = new Pipeline(ports, new LearningSwitch(), new PipelineOptions { Workers = 1, Burst = 8, HoldMilliseconds = 0 }))
        {
            for (var step = 0; step < MaxOperations && !input.IsEmpty; step++)
            {
                var op = (Op)(input.Byte() % 6);
                switch (op)
                {
                    case Op.Send:
                        {
                            var a = input.Byte();
                            var length = Frame(frame, Destination(a >> 1), Mac(a & 1), ++sequence, input.Byte() * 8);
                            if (guests[a & 1].Send(frame.AsSpan(0, length)))
                            {
                                sent[sequence] = (a & 1, frame.AsSpan(0, length).ToArray());
                            }

                            break;
                        }

                    case Op.Post:
                        {
                            var a = input.Byte();
                            guests[a & 1].Post(1 + (a >> 1), (uint)(64 * (1 + (input.Byte() % 32))));
                            break;
                        }

                    case Op.Round:
                        {
                            var rounds = 1 + (input.Byte() % 4);
                            for (var r = 0; r < rounds; r++)
                            {
                                pipeline.RunOnce();
                            }

                            FuzzViolation.Check(pipeline.Errors == 0, $"the worker caught {pipeline.Errors} exceptions on the data path");
                            break;
                        }

                    case Op.Take:
                        {
                            var g = input.Byte() & 1;
                            while (guests[g].TryReceive(frame, out var length))
                            {
                                Delivered(frame.AsSpan(0, length), g);
                            }

                            break;
                        }

                    case Op.Scribble:
                        {
                            var a = input.Byte();
                            var offset = (int)(input.UInt32() % GuestBytes);
                            var bytes = input.Take(Math.Min(1 + ((a >> 1) & 31), GuestBytes - offset));
                            bytes.CopyTo(guests[a & 1].Bytes.Slice((ulong)offset, bytes.Length));
                            scribbled[a & 1] = true;
                            break;
                        }

                    case Op.Inject:
                        {
                            var a = input.Byte();
                            var length = Frame(frame, Destination(a), Mac(MemoryPort), ++sequence, input.Byte() * 8);
                            if (memoryPort.TryInject(frame.AsSpan(0, length)))
                            {
                                sent[sequence] = (MemoryPort, frame.AsSpan(0, length).ToArray());
                            }

                            break;
                        }
                }

                while (memoryPort.TryTake(frame, out var taken, out _))
                {
                    Delivered(frame.AsSpan(0, taken), MemoryPort);
                }

                for (var g = 0; g < Guests; g++)
                {
                    // A guest that scribbled may break its own rings; never the other guest's.
                    var broken = guests[g].AnyBroken(out var why);
                    FuzzViolation.Check(scribbled[g] || !broken, $"guest {g}'s rings broke though it wrote nothing wrong: {why}");
                }
            }
        }

        if (FuzzTrace.Writer is { } trace)
        {
            foreach (var p in ports)
            {
                var c = p.Counters.Snapshot();
                trace.WriteLine($"{p.Name}: rx {c.RxFrames}, tx {c.TxFrames}, drops [{string.Join(",", c.DropsByReason)}]");
            }
        }

        memoryPort.Dispose();
        foreach (var g in guests)
        {
            g.Dispose();
        }

        // A frame delivered to a port: one that was sent, not back where it came from, once; and
        // exactly as sent unless a guest scribbled (it may rewrite its own frames in flight).
        void Delivered(ReadOnlySpan<byte> bytes, int port)
        {
            if (bytes.Length < 18 || BinaryPrimitives.ReadUInt16BigEndian(bytes[12..]) != EtherType)
            {
                FuzzViolation.Check(scribbled[0] || scribbled[1], $"port {port} got a frame nobody sent ({bytes.Length} bytes)");
                return;
            }

            var seq = BinaryPrimitives.ReadUInt32LittleEndian(bytes[14..]);
            FuzzTrace.Writer?.WriteLine($"port {port} got frame {seq} ({bytes.Length} bytes)");
            if (!sent.TryGetValue(seq, out var origin))
            {
                FuzzViolation.Check(scribbled[0] || scribbled[1], $"port {port} got frame {seq}, which was never sent");
                return;
            }

            var clean = !scribbled[0] && !scribbled[1];
            FuzzViolation.Check(!clean || bytes.SequenceEqual(origin.Frame), $"frame {seq} arrived at port {port} changed ({bytes.Length} bytes, sent {origin.Frame.Length})");
            FuzzViolation.Check(!clean || origin.Ingress != port, $"frame {seq} went back out of port {port}, where it came in");
            FuzzViolation.Check(delivered.Add((seq, port)) || !clean, $"frame {seq} arrived twice at port {port}");
        }
    }

    private const ushort EtherType = 0x88B5;

    private static byte[] Mac(int port) => [0x02, 0, 0, 0, 0, (byte)(0x0A + port)];

    private static byte[] Destination(int choice) => (choice % 5) switch
    {
        0 => Mac(0),
        1 => Mac(1),
        2 => Mac(MemoryPort),
        3 => [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF],
        _ => [0x02, 0, 0, 0, 0, 0x7F],
    };

    /// <summary>Writes an Ethernet frame: destination, source, the local experimental EtherType, a sequence number, a pattern.</summary>
    private static int Frame(Span<byte> frame, ReadOnlySpan<byte> destination, ReadOnlySpan<byte> source, uint sequence, int payload)
    {
        destination.CopyTo(frame);
        source.CopyTo(frame[6..]);
        BinaryPrimitives.WriteUInt16BigEndian(frame[12..], EtherType);
        BinaryPrimitives.WriteUInt32LittleEndian(frame[14..], sequence);
        var length = 18 + payload;
        for (var i = 18; i < length; i++)
        {
            frame[i] = (byte)(sequence + (uint)i);
        }

        return length;
    }

    /// <summary>
    /// One guest: its memory (a sealed memory file, mapped as a vhost-user session maps a front-end's
    /// table), its driver rings (played by the fuzzer) and the port that serves their device sides.
    /// </summary>
    private sealed class Guest : IDisposable
    {
        private readonly VhostMemoryMap _map;
        private readonly ulong _base;
        private readonly IDriverRing _rx;
        private readonly IDriverRing _tx;
        private readonly IDeviceRing _rxDevice;
        private readonly IDeviceRing _txDevice;
        private readonly bool _mergeable;
        private readonly Slots _txSlots;
        private readonly Slots _rxSlots;

        public Guest(int index, RingFormat format, int size, VirtioFeatures features)
        {
            var file = SharedMemory.Create(GuestBytes, "rings-fuzz-guest");
            _base = 0x1000_0000 * (ulong)(index + 1);
            var mapped = new MappedRegion(new MemoryRegionDescription(_base, GuestBytes, _base, 0), file);
            if (VhostMemoryMap.TryBuild([mapped], out var map).IsError || map is null)
            {
                file.Dispose();
                throw new InvalidOperationException("the guest's memory map was refused");
            }

            _map = map;
            Bytes = file;
            _txSlots = new Slots(size);
            _rxSlots = new Slots(size);
            _mergeable = (features & VirtioFeatures.NetMergeRxBuffers) != 0;
            var memory = map.Physical;
            var rxAreas = format.Layout(size).At(_base);
            var txAreas = format.Layout(size).At(_base + 0x2000);
            _rx = format.CreateDriver(memory, rxAreas, size, features);
            _tx = format.CreateDriver(memory, txAreas, size, features);
            var start = new RingPosition(0);
            _rxDevice = format.CreateDevice(memory, memory, rxAreas, size, features, start);
            _txDevice = format.CreateDevice(memory, memory, txAreas, size, features, start);
            Port = new VhostUserPort(PortSpec.Parse($"vhost-user:guest-{index}"));
            var session = new object();
            Port.OnQueueStarted(session, new VhostQueue(0, _rxDevice, features, null, null, null, map, enabled: true));
            Port.OnQueueStarted(session, new VhostQueue(1, _txDevice, features, null, null, null, map, enabled: true));
        }

        /// <summary>The guest's memory, as the guest writes it.</summary>
        public SharedMemory Bytes { get; }

        public VhostUserPort Port { get; }

        public bool Send(ReadOnlySpan<byte> frame)
        {
            // Reclaim finished transmissions first: a slot is free again once its buffer is back.
            while (_tx.TryTakeUsed(out var done))
            {
                _txSlots.Free(done.Id);
            }

            if (!_txSlots.TryTake(out var slot))
            {
                return false;
            }

            var at = TxSlots + (slot * SlotBytes);
            var length = Math.Min(frame.Length, SlotBytes - VirtioNetHeader.Size);
            var bytes = Bytes.Slice((ulong)at, VirtioNetHeader.Size + length);
            bytes[..VirtioNetHeader.Size].Clear();
            frame[..length].CopyTo(bytes[VirtioNetHeader.Size..]);
            if (length != frame.Length || !_tx.TryAdd(new BufferSegment(_base + (ulong)at, (uint)bytes.Length), false, out var id))
            {
                _txSlots.Return(slot);
                return false;
            }

            _txSlots.Lend(id, slot);
            _tx.Publish();
            _tx.KickNeeded();
            return true;
        }

        public void Post(int count, uint bytes)
        {
            for (var i = 0; i < count && _rxSlots.TryTake(out var slot); i++)
            {
                if (!_rx.TryAdd(new BufferSegment(_base + (ulong)(RxSlots + (slot * SlotBytes)), bytes), true, out var id))
                {
                    _rxSlots.Return(slot);
                    break;
                }

                _rxSlots.Lend(id, slot);
            }

            _rx.Publish();
            _rx.KickNeeded();
        }

        /// <summary>Takes one received frame (reassembled from its buffers under MRG_RXBUF) into <paramref name="frame"/>.</summary>
        public bool TryReceive(Span<byte> frame, out int length)
        {
            length = 0;
            if (!_rx.TryTakeUsed(out var first))
            {
                return false;
            }

            var buffers = 1;
            var copied = Copy(first, frame, 0, out var numBuffers);
            if (_mergeable)
            {
                while (buffers < numBuffers && _rx.TryTakeUsed(out var more))
                {
                    copied += Copy(more, frame, copied, out _);
                    buffers++;
                }
            }

            length = copied;
            return true;
        }

        public void Dispose()
        {
            Port.Dispose();
            _map.Unmap();
        }

        public bool AnyBroken(out string why)
        {
            why = $"rx driver {_rx.BrokenReason}, tx driver {_tx.BrokenReason}, rx device {_rxDevice.BrokenReason}, tx device {_txDevice.BrokenReason}";
            return _rx.IsBroken || _tx.IsBroken || _rxDevice.IsBroken || _txDevice.IsBroken;
        }

        // The used buffer's bytes (after the header in a frame's first buffer), appended at 'at'.
        private int Copy(UsedElement used, Span<byte> frame, int at, out int numBuffers)
        {
            var slot = _rxSlots.Free(used.Id);
            Span<byte> bytes = Bytes.Slice((ulong)(RxSlots + (slot * SlotBytes)), (int)Math.Min(used.Length, SlotBytes));
            numBuffers = 1;
            if (at == 0)
            {
                if (!VirtioNetHeader.TryRead(bytes, out var header))
                {
                    return 0;
                }

                numBuffers = header.NumBuffers;
                bytes = bytes[VirtioNetHeader.Size..];
            }

            var n = Math.Min(bytes.Length, frame.Length - at);
            bytes[..n].CopyTo(frame[at..]);
            return n;
        }
    }

    /// <summary>Buffer slots of one ring: free ones, and which slot each outstanding buffer id holds.</summary>
    private sealed class Slots
    {
        private readonly Stack<int> _free;
        private readonly int[] _slotOf;

        public Slots(int count)
        {
            _free = new Stack<int>(Enumerable.Range(0, count));
            _slotOf = new int[count];
        }

        public bool TryTake(out int slot) => _free.TryPop(out slot);

        public void Return(int slot) => _free.Push(slot);

        public void Lend(ushort id, int slot) => _slotOf[id] = slot;

        /// <summary>The slot of a buffer the driver took back (the driver only hands back ids it lent).</summary>
        public int Free(ushort id)
        {
            var slot = _slotOf[id];
            _free.Push(slot);
            return slot;
        }
    }
}
