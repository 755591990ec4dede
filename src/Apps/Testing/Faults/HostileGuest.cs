using System.Buffers.Binary;
using System.Diagnostics;
using Rings.Chains;
using Rings.Linux.Driver;
using Rings.Linux.Net;
using Rings.Linux.Plumbing;
using Rings.Linux.VhostUser;
using Rings.Split;
using Rings.Testing.Traffic;

namespace Rings.Testing.Faults;

/// <summary>What a <see cref="HostileGuest"/> does and to whom.</summary>
/// <param name="Socket">The back-end's socket.</param>
/// <param name="Kind">One of <see cref="HostileGuest.Kinds"/>.</param>
/// <param name="Ring">The ring format.</param>
/// <param name="Wait">How the traffic beside the attack waits when idle.</param>
/// <param name="QueueSize">Descriptors per ring.</param>
/// <param name="FrameSize">Bytes per test frame.</param>
/// <param name="Burst">Most frames per burst.</param>
/// <param name="MemoryMiB">Shared memory to create, MiB.</param>
public sealed record HostileGuestOptions(string Socket, string Kind, RingFormat Ring = default, WaitStrategy Wait = WaitStrategy.Poll, int QueueSize = 256, int FrameSize = 64, int Burst = 32, int MemoryMiB = 64);

/// <summary>
/// A front-end that sets up like any other, then attacks the back-end the way a buggy or hostile
/// guest could, and checks that the back-end reacted as it must: the queue reported broken (device
/// status NEEDS_RESET), a bad request refused, the connection served on or closed cleanly.
/// It keeps its own vhost-user channel (the front-end is built over it) to send what a
/// well-behaved front-end never would. <see cref="Run"/> returns 0 when the back-end held, 1 when it did not.
/// </summary>
/// <remarks>
/// Kinds: <c>scribble</c> (random bytes over the driver-written parts of its rings while traffic
/// runs), <c>loop</c> (a descriptor chain that loops, split rings), <c>outside</c> (a buffer that
/// reaches past the end of its memory), <c>flood</c> (kicks as fast as it can with nothing new),
/// <c>disconnect</c> (drops the connection mid-burst), <c>malformed</c> (malformed vhost-user
/// messages after setup, while traffic runs).
/// </remarks>
public static class HostileGuest
{
    /// <summary>The kinds of misbehaviour.</summary>
    public static readonly string[] Kinds = ["scribble", "loop", "outside", "flood", "disconnect", "malformed"];

    // How long the back-end may take to notice a broken ring (generous: a loaded machine is slow).
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(10);

    /// <summary>Runs one kind of misbehaviour against the back-end at <see cref="HostileGuestOptions.Socket"/>.</summary>
    /// <param name="o">What to do.</param>
    /// <param name="output">Progress and findings.</param>
    /// <param name="error">Why it could not run.</param>
    /// <returns>0 when the back-end held, 1 when it did not, 2 for a bad option, 3 when setup failed.</returns>
    public static int Run(HostileGuestOptions o, TextWriter output, TextWriter error)
    {
        ArgumentNullException.ThrowIfNull(o);
        ArgumentNullException.ThrowIfNull(output);
        ArgumentNullException.ThrowIfNull(error);
        if (Array.IndexOf(Kinds, o.Kind) < 0)
        {
            error.WriteLine($"hostile guest: unknown kind {o.Kind}; one of {string.Join(", ", Kinds)}");
            return 2;
        }

        if (o.Kind == "loop" && o.Ring != RingFormat.Split)
        {
            error.WriteLine("hostile guest: loop needs a split ring: packed chains run forward through the ring and cannot loop");
            return 2;
        }

        // The connection is this guest's own: the front-end is built over it and never closes it.
        VhostUserChannel channel;
        VirtioNetDriver net;
        try
        {
            channel = new VhostUserChannel(UnixSocket.Connect(o.Socket));
        }
        catch (Exception e) when (e is IOException or System.Net.Sockets.SocketException)
        {
            error.WriteLine($"hostile guest: cannot connect to {o.Socket}: {e.Message}");
            return 3;
        }

        using (channel)
        {
            try
            {
                net = Connect(channel, o);
            }
            catch (Exception e) when (e is IOException or ArgumentException or InvalidOperationException)
            {
                error.WriteLine($"hostile guest: cannot set up with the back-end at {o.Socket}: {e.Message}");
                return 3;
            }

            using (net)
            {
                output.WriteLine($"hostile guest: connected to {o.Socket}, ring {o.Ring}, misbehaving: {o.Kind}");
                var attack = new Attack(net, channel, o, output);
                var ok = o.Kind switch
                {
                    "scribble" => attack.Scribble(),
                    "loop" => attack.Loop(),
                    "outside" => attack.Outside(),
                    "flood" => attack.Flood(),
                    "disconnect" => attack.Disconnect(),
                    _ => attack.Malformed(),
                };
                output.WriteLine(ok ? "hostile guest: the back-end held" : "hostile guest: the back-end did NOT react as it must");
                return ok ? 0 : 1;
            }
        }
    }

    private static VirtioNetDriver Connect(VhostUserChannel channel, HostileGuestOptions o)
    {
        var options = new VhostUserFrontendOptions
        {
            MemoryBytes = (ulong)o.MemoryMiB << 20,
            QueueSize = o.QueueSize,
            Features = new VhostUserFrontendOptions().Features | VirtioFeatures.NetMac | o.Ring.Feature,
        };
        var frontend = VhostUserFrontend.Connect(channel, options);
        try
        {
            return new VirtioNetDriver(frontend, o.FrameSize);
        }
        catch
        {
            frontend.Dispose();
            throw;
        }
    }

    private sealed class Attack
    {
        private readonly VhostUserFrontend _frontend;
        private readonly VhostUserChannel _channel;
        private readonly HostileGuestOptions _o;
        private readonly INetDriverPath _path;
        private readonly FrontendQueue _rx;
        private readonly FrontendQueue _tx;
        private readonly TextWriter _output;
        private readonly List<FileDescriptor> _replyFds = [];
        private readonly int _seed = Environment.TickCount;
        private TrafficGenerator? _generator;
        private Thread? _thread;
        private TrafficFigures? _figures;
        private string? _failure;

        public Attack(VirtioNetDriver net, VhostUserChannel channel, HostileGuestOptions o, TextWriter output)
        {
            _frontend = net.Frontend;
            _channel = channel;
            _o = o;
            _rx = net.Receive;
            _tx = net.Transmit;
            _path = net.Path;
            _output = output;
        }

        /// <summary>Random bytes over the descriptor and driver areas of both rings while frames flow, until the back-end says NEEDS_RESET.</summary>
        public bool Scribble()
        {
            var random = new Random(_seed);
            var areas = new List<(ulong Address, ulong Bytes)>();
            foreach (var q in _frontend.Queues)
            {
                var layout = q.Format.Layout(q.Size);
                areas.Add((q.GuestAreas.DescriptorArea, (ulong)layout.DescriptorAreaBytes));
                areas.Add((q.GuestAreas.DriverArea, (ulong)layout.DriverAreaBytes));
            }

            StartTraffic(30);
            Thread.Sleep(200);
            var clock = Stopwatch.StartNew();
            var writes = 0;
            var broken = false;
            while (!broken && clock.Elapsed < Patience)
            {
                for (var i = 0; i < 8; i++)
                {
                    if (_thread is { IsAlive: false })
                    {
                        // The scribbles broke this guest's own rings (the packed ring shares its
                        // descriptors with the device's used ones) and traffic stopped, so the device
                        // looks at nothing new: make random descriptors available where it looks next.
                        ScribbleNext(_tx, random);
                        ScribbleNext(_rx, random);
                    }
                    else
                    {
                        var (address, bytes) = areas[random.Next(areas.Count)];
                        var length = (int)Math.Min(8, bytes);
                        random.NextBytes(_frontend.GuestSpan(address + (ulong)random.NextInt64((long)(bytes - (ulong)length + 1)), length));
                    }

                    writes++;
                }

                _tx.Kick.Signal();
                _rx.Kick.Signal();
                if (writes % 64 == 0)
                {
                    broken = NeedsReset();
                }

                Thread.Sleep(1);
            }

            StopTraffic();
            _output.WriteLine($"scribble: {writes:N0} random writes (seed {_seed}) over the rings in {clock.Elapsed.TotalMilliseconds:0} ms; back-end {(broken ? "set NEEDS_RESET" : "did not report a broken queue")}");
            return broken;
        }

        /// <summary>Two transmit descriptors rewritten into a cycle (2.7.5.3.1: a chain must end).</summary>
        public bool Loop()
        {
            RunTraffic(0.2);
            var ring = (SplitDriverRing)_tx.Ring!;
            var segment = new BufferSegment(_frontend.BufferAddress, (uint)(VirtioNetHeader.Size + _o.FrameSize));
            if (!ring.TryAdd(segment, deviceWritable: false, out var a) || !ring.TryAdd(segment, deviceWritable: false, out var b))
            {
                _output.WriteLine("loop: no free transmit descriptors");
                return false;
            }

            Link(a, b);
            Link(b, a);
            ring.Publish();
            _tx.Kick.Signal();
            var broken = WaitForNeedsReset();
            _output.WriteLine($"loop: published chain {a} -> {b} -> {a}; back-end {(broken ? "set NEEDS_RESET" : "did not report a broken queue")}");
            return broken;
        }

        /// <summary>A transmit buffer that starts inside the memory and ends past it.</summary>
        public bool Outside()
        {
            RunTraffic(0.2);
            var end = _frontend.BufferAddress + _frontend.BufferBytes;
            var length = (uint)(VirtioNetHeader.Size + _o.FrameSize);
            var inside = new BufferSegment(end - length, length);
            if (!_tx.Ring!.TryAdd(inside, deviceWritable: false, out _))
            {
                _output.WriteLine("outside: no free transmit descriptors");
                return false;
            }

            // The driver ring refuses a buffer outside its memory, so the descriptor is rewritten
            // in place before it is published: address first in both formats (2.7.5, 2.8.13).
            var segment = new BufferSegment(end - 16, length);
            var table = _frontend.GuestSpan(_tx.GuestAreas.DescriptorArea, _tx.Format.Layout(_tx.Size).DescriptorAreaBytes);
            for (var at = 0; at + 16 <= table.Length; at += 16)
            {
                if (BinaryPrimitives.ReadUInt64LittleEndian(table[at..]) == inside.Address && BinaryPrimitives.ReadUInt32LittleEndian(table[(at + 8)..]) == length)
                {
                    BinaryPrimitives.WriteUInt64LittleEndian(table[at..], segment.Address);
                    break;
                }
            }

            _tx.Ring.Publish();
            _tx.Kick.Signal();
            var broken = WaitForNeedsReset();
            _output.WriteLine($"outside: published a buffer at 0x{segment.Address:x}+{segment.Length}, memory ends at 0x{end:x}; back-end {(broken ? "set NEEDS_RESET" : "did not report a broken queue")}");
            return broken;
        }

        /// <summary>Kicks both queues as fast as possible with nothing new; the queue must stay healthy and carry frames afterwards.</summary>
        public bool Flood()
        {
            if (_path.RefillReceive())
            {
                _rx.Kick.Signal();
            }

            var clock = Stopwatch.StartNew();
            long kicks = 0;
            while (clock.ElapsedMilliseconds < 1500)
            {
                _tx.Kick.Signal();
                _rx.Kick.Signal();
                kicks += 2;
            }

            var status = Status();
            var healthy = status is { } s && (s & DeviceStatus.NeedsReset) == 0;
            var after = RunTraffic(0.3);
            var clean = after is { Received: > 0, Lost: 0, Corrupted: 0, Duplicated: 0 };
            _output.WriteLine($"flood: {kicks:N0} kicks in {clock.Elapsed.TotalSeconds:0.0} s with nothing new; device status {(status is null ? "no answer" : $"0x{status:x}")}; then {after?.Received ?? 0:N0} of {after?.Sent ?? 0:N0} frames back{(clean ? string.Empty : " (NOT clean)")}");
            return healthy && clean;
        }

        /// <summary>Closes the connection while frames are in flight, and keeps writing its rings for a while.</summary>
        public bool Disconnect()
        {
            StartTraffic(30);
            Thread.Sleep(300);
            var sent = Volatile.Read(ref _generator!.Sent);
            _channel.Dispose();
            Thread.Sleep(300);
            StopTraffic();
            _output.WriteLine($"disconnect: dropped the connection after {sent:N0} frames, with traffic still running");
            return _failure is null;
        }

        /// <summary>Malformed and refused requests while traffic runs: each must be NACKed, the last (an oversized header) must end the connection.</summary>
        public bool Malformed()
        {
            var channel = _channel;
            StartTraffic(30);
            Thread.Sleep(200);
            var generator = _generator!;
            var receivedBefore = Volatile.Read(ref generator.Received);
            using var call = EventFd.Create();
            using var file = SharedMemory.Create(4096, "rings-hostile");
            var nacked = 0;
            var cases = Requests(call.Handle, file.Handle!);
            foreach (var (what, bytes, fds) in cases)
            {
                channel.SendRaw(bytes, fds);
                var answer = ReadAck(channel);
                nacked += answer == "NACK" ? 1 : 0;
                _output.WriteLine($"malformed: {what}: {answer}");
            }

            var flowing = SpinWait.SpinUntil(() => Volatile.Read(ref generator.Received) > receivedBefore, Patience);

            // Last: a header announcing far more payload than any request has.
            var header = new byte[VhostUserConstants.HeaderBytes];
            Header(header, (uint)VhostUserRequest.SetFeatures, VhostUserConstants.Version | VhostUserConstants.NeedReplyFlag, 1u << 20);
            channel.SendRaw(header);
            var status = channel.Receive(_replyFds, 2000);
            CloseReplyFds();
            var closed = status is ReceiveStatus.PeerClosed or ReceiveStatus.Error;
            StopTraffic();
            _output.WriteLine($"malformed: header announcing a 1 MiB payload: {(closed ? "connection closed" : status.ToString())}");
            _output.WriteLine($"malformed: {nacked} of {cases.Count} NACKed, traffic {(flowing ? "kept flowing" : "stopped")} meanwhile");
            return nacked == cases.Count && closed && flowing;
        }

        private List<(string What, byte[] Bytes, FileDescriptor[] Fds)> Requests(FileDescriptor eventFd, FileDescriptor memoryFile)
        {
            const uint Flags = VhostUserConstants.Version | VhostUserConstants.NeedReplyFlag;
            var list = new List<(string, byte[], FileDescriptor[])>();
            var unknown = new byte[VhostUserConstants.HeaderBytes];
            Header(unknown, 99, Flags, 0);
            list.Add(("unknown request 99", unknown, []));

            var shortPayload = new byte[VhostUserConstants.HeaderBytes + 4];
            Header(shortPayload, (uint)VhostUserRequest.SetFeatures, Flags, 4);
            list.Add(("SET_FEATURES with a 4-byte payload", shortPayload, []));

            list.Add(("SET_FEATURES with a feature never offered", Encode(VhostUserMessage.WithU64(VhostUserRequest.SetFeatures, 1UL << 63, true)), []));
            list.Add(("SET_VRING_NUM for vring 200", Encode(VhostUserMessage.WithState(VhostUserRequest.SetVringNum, 200, 256, true)), []));
            list.Add(("SET_VRING_NUM resizing running vring 0", Encode(VhostUserMessage.WithState(VhostUserRequest.SetVringNum, 0, 1024, true)), []));
            list.Add(("SET_VRING_ADDR moving running vring 1 outside memory", Encode(VhostUserMessage.WithAddress(new VringAddress(1, 0, 0x7000_0000_0000, 0x7000_0000_1000, 0x7000_0000_2000, 0), true)), []));
            list.Add(("SET_VRING_ENABLE 7", Encode(VhostUserMessage.WithState(VhostUserRequest.SetVringEnable, 0, 7, true)), []));
            list.Add(("SET_VRING_KICK announcing an fd that is not there", Encode(VhostUserMessage.WithFile(VhostUserRequest.SetVringKick, 0, hasFd: true, true)), []));
            list.Add(("SET_VRING_CALL for vring 200 with an eventfd", Encode(VhostUserMessage.WithFile(VhostUserRequest.SetVringCall, 200, hasFd: true, true)), [eventFd]));

            var reserved = Encode(VhostUserMessage.WithFile(VhostUserRequest.SetVringCall, 0, hasFd: false, true));
            BinaryPrimitives.WriteUInt64LittleEndian(reserved.AsSpan(VhostUserConstants.HeaderBytes), VhostUserConstants.VringNoFdFlag | 0x8000);
            list.Add(("SET_VRING_CALL with reserved bits set", reserved, []));

            // u32 count, u32 padding, then the regions: nine announced, one more than the protocol allows.
            var table = new byte[VhostUserConstants.HeaderBytes + 8 + (9 * VhostUserConstants.RegionBytes)];
            Header(table, (uint)VhostUserRequest.SetMemTable, Flags, (uint)(table.Length - VhostUserConstants.HeaderBytes));
            BinaryPrimitives.WriteUInt32LittleEndian(table.AsSpan(VhostUserConstants.HeaderBytes), 9);
            list.Add(("SET_MEM_TABLE with nine regions", table, []));

            list.Add(("ADD_MEM_REG reaching past the end of its 4 KiB file", Encode(VhostUserMessage.WithRegion(VhostUserRequest.AddMemReg, new MemoryRegionDescription(1UL << 40, 1UL << 20, 1UL << 40, 0), true)), [memoryFile]));
            var mine = _frontend.Memory;
            list.Add(("ADD_MEM_REG overlapping the memory already there", Encode(VhostUserMessage.WithRegion(VhostUserRequest.AddMemReg, new MemoryRegionDescription(4096, 4096, (ulong)mine.HostAddress + 4096, 0), true)), [memoryFile]));
            return list;
        }

        private string ReadAck(VhostUserChannel channel)
        {
            var status = channel.Receive(_replyFds, 2000);
            CloseReplyFds();
            if (status != ReceiveStatus.Message)
            {
                return status == ReceiveStatus.Timeout ? "no answer" : "connection closed";
            }

            var reply = channel.Received;
            VhostUserCodec.TryReadHeader(reply, out _, out var flags, out var size);
            if ((flags & VhostUserConstants.ReplyFlag) == 0 || size != 8)
            {
                return $"unexpected reply (flags 0x{flags:x}, {size} bytes)";
            }

            return BinaryPrimitives.ReadUInt64LittleEndian(reply[VhostUserConstants.HeaderBytes..]) != 0 ? "NACK" : "accepted";
        }

        // Random descriptors made available where the device looks next.
        private void ScribbleNext(FrontendQueue q, Random random)
        {
            const ushort Avail = 1 << 7, Used = 1 << 15, NextWriteIndirect = 7; // 2.8.1, 2.7.5
            if (q.Ring is Rings.Packed.PackedDriverRing packed)
            {
                // Where the device stands, and in which lap, this side cannot see (its ring may be
                // empty or full): fill the whole ring, each descriptor available in a random lap
                // (2.8.1), so every round it is available to the device with even odds.
                for (var i = 0; i < q.Size; i++)
                {
                    var d = _frontend.GuestSpan(q.GuestAreas.DescriptorArea + ((ulong)i * 16), 16);
                    random.NextBytes(d[..14]);
                    BinaryPrimitives.WriteUInt16LittleEndian(d[14..], (ushort)((random.Next() & NextWriteIndirect) | (random.Next(2) == 0 ? Avail : Used)));
                }

                return;
            }

            // Split: the device reads the avail ring from its position up to avail.idx, so one more
            // entry, naming a random descriptor, is enough.
            var avail = _frontend.GuestSpan(q.GuestAreas.DriverArea, 4 + (2 * q.Size));
            var index = BinaryPrimitives.ReadUInt16LittleEndian(avail[2..]);
            var head = (ushort)random.Next(q.Size);
            random.NextBytes(_frontend.GuestSpan(q.GuestAreas.DescriptorArea + ((ulong)head * RingLayout.DescriptorBytes), RingLayout.DescriptorBytes));
            BinaryPrimitives.WriteUInt16LittleEndian(avail[(4 + (2 * (index % q.Size)))..], head);

            // The entry before the index that publishes it (2.7.13), as a driver would.
            Interlocked.MemoryBarrier();
            BinaryPrimitives.WriteUInt16LittleEndian(avail[2..], (ushort)(index + 1));
        }

        private void Link(ushort from, ushort to)
        {
            var d = _frontend.GuestSpan(_tx.GuestAreas.DescriptorArea + ((ulong)from * RingLayout.DescriptorBytes), RingLayout.DescriptorBytes);
            BinaryPrimitives.WriteUInt16LittleEndian(d[12..], 1); // VIRTQ_DESC_F_NEXT, device-readable
            BinaryPrimitives.WriteUInt16LittleEndian(d[14..], to);
        }

        private bool WaitForNeedsReset()
        {
            var clock = Stopwatch.StartNew();
            while (clock.Elapsed < Patience)
            {
                if (NeedsReset())
                {
                    return true;
                }

                Thread.Sleep(10);
            }

            return false;
        }

        private bool NeedsReset() => Status() is { } s && (s & DeviceStatus.NeedsReset) != 0;

        /// <summary>GET_STATUS: the back-end sets NEEDS_RESET once one of the rings broke.</summary>
        private ulong? Status()
        {
            var channel = _channel;
            channel.Send(VhostUserMessage.Empty(VhostUserRequest.GetStatus));
            var status = channel.Receive(_replyFds, 2000);
            CloseReplyFds();
            if (status != ReceiveStatus.Message ||
                VhostUserCodec.DecodeReply(channel.Received, 0, out var reply).IsError ||
                reply.Request != VhostUserRequest.GetStatus)
            {
                return null;
            }

            return reply.Value;
        }

        private void StartTraffic(double seconds, double drainSeconds = 1)
        {
            var traffic = new TrafficOptions(_o.FrameSize, _o.Burst, 0, TimeSpan.FromSeconds(seconds), _o.Wait);
            var generator = TrafficGenerator.Create(_path, _tx.Kick, _rx.Kick, _rx.Call, traffic);
            _generator = generator;
            _figures = null;
            _thread = new Thread(() =>
            {
                try
                {
                    _figures = generator.Run(TimeSpan.FromSeconds(drainSeconds));
                }
                catch (Exception e)
                {
                    // This guest's own rings are being trampled; report, do not crash.
                    _failure = $"{e.GetType().Name}: {e.Message}";
                }
            })
            { Name = "hostile guest traffic", IsBackground = true };
            _thread.Start();
        }

        private TrafficFigures? StopTraffic()
        {
            _generator?.Stop();
            return JoinTraffic();
        }

        // Sends for a while and waits for every frame to return (the drain only ends early when all have).
        private TrafficFigures? RunTraffic(double seconds)
        {
            StartTraffic(seconds, drainSeconds: 10);
            var figures = JoinTraffic();
            _path.ReclaimTransmit();
            return figures;
        }

        private TrafficFigures? JoinTraffic()
        {
            _thread?.Join();
            _thread = null;
            var f = _figures;
            if (f is not null)
            {
                _output.WriteLine($"traffic: sent {f.Sent:N0}, received {f.Received:N0}, lost {f.Lost:N0}, bad {f.Corrupted:N0}{(_tx.Ring!.IsBroken || _rx.Ring!.IsBroken ? $", own rings broken: tx {_tx.Ring.BrokenReason}, rx {_rx.Ring!.BrokenReason}" : string.Empty)}");
            }

            if (_failure is not null)
            {
                _output.WriteLine($"traffic failed: {_failure}");
            }

            return f;
        }

        private void CloseReplyFds()
        {
            foreach (var fd in _replyFds)
            {
                fd.Dispose();
            }

            _replyFds.Clear();
        }

        private static byte[] Encode(in VhostUserMessage message) => VhostUserCodec.Encode(message);

        private static void Header(Span<byte> destination, uint request, uint flags, uint size)
        {
            BinaryPrimitives.WriteUInt32LittleEndian(destination, request);
            BinaryPrimitives.WriteUInt32LittleEndian(destination[4..], flags);
            BinaryPrimitives.WriteUInt32LittleEndian(destination[8..], size);
        }
    }
}
