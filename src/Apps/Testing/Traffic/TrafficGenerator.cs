using System.Diagnostics;
using Rings.Linux.Driver;
using Rings.Linux.Net;

namespace Rings.Testing.Traffic;

/// <summary>Settings of a <see cref="TrafficGenerator{TTx, TRx}"/> run.</summary>
/// <param name="FrameSize">Bytes per frame (at least <see cref="TestFrame.MinSize"/>).</param>
/// <param name="Burst">Most frames sent per publish.</param>
/// <param name="Rate">Frames per second to offer; 0 for as fast as possible.</param>
/// <param name="Duration">How long to send.</param>
/// <param name="Wait">How to wait when idle.</param>
/// <param name="Frames">Stop after this many frames (0: no limit).</param>
/// <param name="Window">
/// Most frames in flight (sent and not yet back): 0 (the default) as many as the posted receive
/// buffers hold, -1 no limit, as <c>--window</c> of the guest command says. A device may drop a
/// frame when the receive queue has no buffer for it (virtio 1.2 section 5.1.6.4), so a window no
/// larger than the receive buffers posted means no frame is ever lost for want of one.
/// </param>
/// <param name="Flow">
/// The flow the frames belong to: the last two bytes of their source MAC address (see
/// <see cref="TestFrame.Write(Span{byte}, ulong, long, ushort)"/>), so a generator per queue pair
/// can send frames whose flow hash picks its own pair (<see cref="TestFrame.FlowFor"/>).
/// </param>
/// <param name="GsoSize">
/// 0 to send test frames; otherwise the MSS of TCP/IPv4 GSO frames sent instead
/// (<see cref="TestFrame.WriteTcpGso"/>), for a device that negotiated CSUM and HOST_TSO4.
/// </param>
/// <param name="Verify">How much of every frame is written and checked (<see cref="Verification"/>).</param>
public sealed record TrafficOptions(int FrameSize, int Burst, double Rate, TimeSpan Duration, WaitStrategy Wait, long Frames = 0, int Window = 0, ushort Flow = TestFrame.DefaultFlow, int GsoSize = 0, Verification Verify = Verification.Full);

/// <summary>How much of each test frame the generator writes and checks.</summary>
public enum Verification
{
    /// <summary>
    /// Every frame is written whole (fill and checksum) and checked whole when it comes back: any
    /// damaged byte is counted. What the tests use.
    /// </summary>
    Full,

    /// <summary>
    /// Every frame carries and is checked for its sequence number, EtherType and length (so loss,
    /// duplication and reordering are still seen on every frame); only one frame in
    /// <see cref="TestFrame.SampleEvery"/> is written and checked whole. The other frames get only
    /// their buffer's first cache line, streamed whole (the header, the frame's head, zero after
    /// it; <c>NetDriverPath.SubmitLine</c>); the rest of their fill is what their buffer last held,
    /// and the guest never touches it: at 64 bytes a frame behind its 12-byte header spans two
    /// cache lines, and sampling leaves the second to the device alone, as a packet generator that
    /// builds only headers does. For measuring the rings, not the guest.
    /// </summary>
    Sample,
}

/// <summary>What a traffic run counted.</summary>
public sealed record TrafficFigures
{
    /// <summary>Frames sent.</summary>
    public long Sent { get; init; }

    /// <summary>Frames received intact and in sequence.</summary>
    public long Received { get; init; }

    /// <summary>Frames sent that never came back.</summary>
    public long Lost { get; init; }

    /// <summary>Frames that came back more than once.</summary>
    public long Duplicated { get; init; }

    /// <summary>Frames that came back damaged (bad checksum, EtherType or length).</summary>
    public long Corrupted { get; init; }

    /// <summary>Frame bytes sent.</summary>
    public long BytesSent { get; init; }

    /// <summary>Frame bytes received intact.</summary>
    public long BytesReceived { get; init; }

    /// <summary>Seconds spent sending.</summary>
    public double Seconds { get; init; }

    /// <summary>Median sampled round-trip time, microseconds.</summary>
    public double LatencyP50Microseconds { get; init; }

    /// <summary>99th percentile sampled round-trip time, microseconds.</summary>
    public double LatencyP99Microseconds { get; init; }

    /// <summary>Latency samples taken.</summary>
    public int LatencySamples { get; init; }

    /// <summary>Times the generator went to sleep waiting for a call.</summary>
    public long Sleeps { get; init; }

    /// <summary>
    /// The figures of runs side by side (one per queue pair): counts add up, the time is the
    /// longest run's, and the latency percentiles are the worst run's (samples of different pairs
    /// are not merged, so these bound the combined percentiles from above).
    /// </summary>
    /// <param name="runs">The runs, at least one.</param>
    /// <returns>The combined figures.</returns>
    public static TrafficFigures Combine(IReadOnlyList<TrafficFigures> runs)
    {
        ArgumentNullException.ThrowIfNull(runs);
        ArgumentOutOfRangeException.ThrowIfZero(runs.Count);
        var all = new TrafficFigures();
        foreach (var r in runs)
        {
            all = all with
            {
                Sent = all.Sent + r.Sent,
                Received = all.Received + r.Received,
                Lost = all.Lost + r.Lost,
                Duplicated = all.Duplicated + r.Duplicated,
                Corrupted = all.Corrupted + r.Corrupted,
                BytesSent = all.BytesSent + r.BytesSent,
                BytesReceived = all.BytesReceived + r.BytesReceived,
                Seconds = Math.Max(all.Seconds, r.Seconds),
                LatencyP50Microseconds = Math.Max(all.LatencyP50Microseconds, r.LatencyP50Microseconds),
                LatencyP99Microseconds = Math.Max(all.LatencyP99Microseconds, r.LatencyP99Microseconds),
                LatencySamples = all.LatencySamples + r.LatencySamples,
                Sleeps = all.Sleeps + r.Sleeps,
            };
        }

        return all;
    }
}

/// <summary>
/// The guest side's traffic engine: sends numbered, checksummed test frames through a virtio-net
/// driver path at a given rate and burst, takes back what returns, and counts lost, duplicated
/// and corrupted frames and round-trip latency. No allocation per frame. <see cref="Create"/>
/// makes one compiled for the path's ring types (<see cref="TrafficGenerator{TTx, TRx}"/>).
/// </summary>
public abstract class TrafficGenerator
{
    private volatile bool _stop;
    private volatile bool _stopSending;

    private protected TrafficGenerator()
    {
    }

    /// <summary>Frames sent so far (readable from any thread).</summary>
    public long Sent;

    /// <summary>Frames received intact so far (readable from any thread).</summary>
    public long Received;

    /// <summary>Frames lost so far (gaps in the returning sequence).</summary>
    public long Lost;

    /// <summary>Duplicated frames so far.</summary>
    public long Duplicated;

    /// <summary>Corrupted frames so far.</summary>
    public long Corrupted;

    /// <summary>Times the generator went to sleep.</summary>
    public long Sleeps;

    /// <summary>True once <see cref="Stop"/> was called.</summary>
    public bool StopRequested => _stopSending;

    /// <summary>True once a second <see cref="Stop"/> asked to stop at once.</summary>
    private protected bool StopNow => _stop;

    /// <summary>
    /// A generator over <paramref name="path"/>, compiled for its ring types (the ring structs
    /// when the path has them, see <see cref="NetDriverPath.ForRings"/>).
    /// </summary>
    /// <param name="path">The driver's queue pair.</param>
    /// <param name="txKick">Kicks to the device for the transmit queue.</param>
    /// <param name="rxKick">Kicks to the device for the receive queue.</param>
    /// <param name="rxCall">Calls from the device for the receive queue.</param>
    /// <param name="options">The settings.</param>
    /// <returns>The generator.</returns>
    public static TrafficGenerator Create(INetDriverPath path, IDoorbell txKick, IDoorbell rxKick, IDoorbell rxCall, TrafficOptions options)
    {
        ArgumentNullException.ThrowIfNull(path);
        return path.Accept(new Factory(txKick, rxKick, rxCall, options));
    }

    /// <summary>
    /// Ends the run early (for example on Ctrl-C): the first call stops sending and lets the frames
    /// in flight come back (up to the drain time); a second call stops at once.
    /// </summary>
    public void Stop()
    {
        if (_stopSending)
        {
            _stop = true;
        }

        _stopSending = true;
    }

    /// <summary>
    /// Runs on the calling thread: sends for the configured duration, then waits up to
    /// <paramref name="drain"/> for frames still in flight.
    /// </summary>
    /// <param name="drain">Longest wait for the last frames to return.</param>
    /// <param name="peerAlive">Polled about every 100 ms; when it returns false the run ends.</param>
    /// <returns>The figures.</returns>
    public abstract TrafficFigures Run(TimeSpan drain, Func<bool>? peerAlive = null);

    private sealed class Factory(IDoorbell txKick, IDoorbell rxKick, IDoorbell rxCall, TrafficOptions options) : INetDriverPathVisitor<TrafficGenerator>
    {
        public TrafficGenerator Visit<TTx, TRx>(NetDriverPath<TTx, TRx> path)
            where TTx : IDriverRing
            where TRx : IDriverRing => new TrafficGenerator<TTx, TRx>(path, txKick, rxKick, rxCall, options);
    }
}

/// <summary>A <see cref="TrafficGenerator"/> compiled for the ring types of its path.</summary>
/// <typeparam name="TTx">Driver side of the transmit queue.</typeparam>
/// <typeparam name="TRx">Driver side of the receive queue.</typeparam>
public sealed class TrafficGenerator<TTx, TRx> : TrafficGenerator
    where TTx : IDriverRing
    where TRx : IDriverRing
{
    private const int LatencyCapacity = 1 << 16;
    private const int LatencyEvery = 64;

    private readonly NetDriverPath<TTx, TRx> _path;
    private readonly IDoorbell _txKick;
    private readonly IDoorbell _rxKick;
    private readonly IDoorbell _rxCall;
    private readonly TrafficOptions _options;
    private readonly bool _sampled;
    private readonly long[] _latency = new long[LatencyCapacity];
    private readonly byte[] _receiveBuffer = new byte[65536];
    private long _latencyCount;
    private long _lastStamp;
    private ulong _expected;

    /// <summary>Creates the generator.</summary>
    /// <param name="path">The driver's queue pair.</param>
    /// <param name="txKick">Kicks to the device for the transmit queue.</param>
    /// <param name="rxKick">Kicks to the device for the receive queue.</param>
    /// <param name="rxCall">Calls from the device for the receive queue.</param>
    /// <param name="options">The settings.</param>
    public TrafficGenerator(NetDriverPath<TTx, TRx> path, IDoorbell txKick, IDoorbell rxKick, IDoorbell rxCall, TrafficOptions options)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentOutOfRangeException.ThrowIfLessThan(options.FrameSize, TestFrame.MinSize, nameof(options));
        ArgumentOutOfRangeException.ThrowIfGreaterThan(options.FrameSize, path.MaxFrameSize, nameof(options));
        ArgumentOutOfRangeException.ThrowIfLessThan(options.Burst, 1, nameof(options));
        _path = path;
        _txKick = txKick;
        _rxKick = rxKick;
        _rxCall = rxCall;
        _options = options;
        _sampled = options.Verify == Verification.Sample && options.GsoSize == 0;
    }

    /// <inheritdoc/>
    public override TrafficFigures Run(TimeSpan drain, Func<bool>? peerAlive = null)
    {
        var o = _options;
        var idle = new IdlePolicy(o.Wait);
        var rx = _path.Receive;
        var buffersPerFrame = _path.Mergeable ? (VirtioNetHeader.Size + o.FrameSize + _path.ReceiveBufferSize - 1) / _path.ReceiveBufferSize : 1;
        var window = o.Window switch
        {
            -1 => 0,
            0 => Math.Max(1, rx.Size / buffersPerFrame),
            _ => o.Window,
        };
        if (o.Wait == WaitStrategy.Poll)
        {
            rx.DisableUsedNotifications();
        }

        // Transmit completions are reclaimed when buffers run short; no calls wanted for them.
        _path.Transmit.DisableUsedNotifications();
        if (_path.RefillReceive())
        {
            _rxKick.Ring();
        }

        var clock = Stopwatch.StartNew();
        var duration = o.Duration.Ticks == 0 ? long.MaxValue : (long)(o.Duration.TotalSeconds * Stopwatch.Frequency);
        var ticksPerFrame = o.Rate > 0 ? Stopwatch.Frequency / o.Rate : 0;
        var nextAliveCheck = Stopwatch.Frequency / 10;
        long sendEnd = 0;
        var sending = true;
        long bytesSent = 0, bytesReceived = 0;
        long now = 0;
        var rounds = 0;
        var slept = true;
        while (!StopNow)
        {
            // The clock is read every 16 rounds, and on every round when a rate is set or after a
            // sleep: a read costs about as much as building a few frames (more inside a virtual
            // machine, where it goes through the hypervisor's clock page), and ending a run or
            // checking the peer a few microseconds late costs nothing.
            if (ticksPerFrame > 0 || slept || (++rounds & 15) == 0)
            {
                now = clock.ElapsedTicks;
                slept = false;
            }

            if (now >= nextAliveCheck)
            {
                nextAliveCheck = now + (Stopwatch.Frequency / 10);
                if (peerAlive is not null && !peerAlive())
                {
                    break;
                }
            }

            if (sending && (now >= duration || (o.Frames > 0 && Sent >= o.Frames) || StopRequested))
            {
                sending = false;
                sendEnd = now;
            }

            if (!sending && (Received + Lost >= Sent || now - sendEnd > drain.TotalSeconds * Stopwatch.Frequency))
            {
                break;
            }

            var received = ReceiveBurst(ref bytesReceived);
            var sent = 0;
            if (sending)
            {
                var allowed = o.Burst;
                if (ticksPerFrame > 0)
                {
                    allowed = (int)Math.Min(allowed, Math.Max(0, (now / ticksPerFrame) + 1 - Sent));
                }

                if (o.Frames > 0)
                {
                    allowed = (int)Math.Min(allowed, o.Frames - Sent);
                }

                if (window > 0)
                {
                    // Frames come back in order on one queue: every sequence number below
                    // _expected is back or lost, so Sent - _expected are still out there.
                    allowed = (int)Math.Min(allowed, Math.Max(0, window - (Sent - (long)_expected)));
                }

                sent = SendBurst(allowed);
                if (sent > 0)
                {
                    bytesSent += (long)sent * o.FrameSize;
                    if (_path.FlushTransmit())
                    {
                        _txKick.Ring();
                    }
                }
            }

            if (_path.Transmit.IsBroken || rx.IsBroken)
            {
                break;
            }

            if (received + sent > 0)
            {
                idle.Worked();
                continue;
            }

            if (!idle.IdleShouldSleep())
            {
                continue;
            }

            // Sleep until frames come back, or until the next frame is due at a given rate.
            var timeout = 100;
            if (sending && ticksPerFrame > 0)
            {
                var due = (long)((Sent * ticksPerFrame) - clock.ElapsedTicks);
                timeout = (int)Math.Clamp(due * 1000 / Stopwatch.Frequency, 0, 100);
                if (timeout == 0)
                {
                    continue;
                }
            }

            if (!_path.HasPendingReceive && !rx.EnableUsedNotifications())
            {
                Sleeps++;
                _rxCall.Wait(timeout);
                slept = true;
            }

            rx.DisableUsedNotifications();
        }

        var seconds = (sending ? clock.ElapsedTicks : sendEnd) / (double)Stopwatch.Frequency;
        Lost = Sent - Received - Corrupted;
        var (p50, p99, samples) = Percentiles();
        return new TrafficFigures
        {
            Sent = Sent,
            Received = Received,
            Lost = Math.Max(0, Lost),
            Duplicated = Duplicated,
            Corrupted = Corrupted,
            BytesSent = bytesSent,
            BytesReceived = bytesReceived,
            Seconds = seconds,
            LatencyP50Microseconds = p50,
            LatencyP99Microseconds = p99,
            LatencySamples = samples,
            Sleeps = Sleeps,
        };
    }

    // Builds up to <allowed> frames in transmit buffers and submits them (published by the
    // caller's flush). A method of its own, so the JIT compiles it as the hot loop it is rather
    // than as part of Run's long-running body (entered once, and so only ever recompiled in place).
    private int SendBurst(int allowed)
    {
        var o = _options;
        var sent = 0;

        // Full verification builds every frame whole in its buffer, and asks for the buffers'
        // lines first; sampled frames but one in SampleEvery are heads built in registers and
        // streamed whole into their line (SubmitLine), which needs no line taken back first.
        if (!_sampled)
        {
            _path.PrepareTransmit(allowed);
        }

        // The clock is read only for the frames whose round trip is sampled (one in
        // LatencyEvery): a read costs as much as building a few small frames. The frames between
        // carry the last sampled frame's stamp, which nothing reads.
        var stamp = _lastStamp;
        while (sent < allowed && _path.TryLeaseTransmit(out var lease))
        {
            if ((Sent % LatencyEvery) == 0)
            {
                stamp = _lastStamp = Stopwatch.GetTimestamp();
            }

            bool accepted;
            if (o.GsoSize > 0)
            {
                TestFrame.WriteTcpGso(lease.Frame[..o.FrameSize], (ulong)Sent, stamp, o.GsoSize, out var header);
                accepted = _path.Submit(lease, o.FrameSize, header);
            }
            else if (_sampled && (Sent % TestFrame.SampleEvery) != 0)
            {
                TestFrame.HeadLine((ulong)Sent, stamp, o.Flow, out var low, out var high);
                accepted = _path.SubmitLine(lease, o.FrameSize, low, high);
            }
            else
            {
                TestFrame.Write(lease.Frame[..o.FrameSize], (ulong)Sent, stamp, o.Flow);
                accepted = _path.Submit(lease, o.FrameSize);
            }

            if (!accepted)
            {
                break;
            }

            Sent++;
            sent++;
        }

        return sent;
    }

    // Checks a frame that came back as the run's verification says (whole, or sampled).
    private bool TryRead(ReadOnlySpan<byte> frame, out ulong sequence, out long sentAt) =>
        _sampled ? TestFrame.TryReadSampled(frame, out sequence, out sentAt) : TestFrame.TryRead(frame, out sequence, out sentAt);

    private int ReceiveBurst(ref long bytes)
    {
        var n = 0;
        while (n < _options.Burst * 2)
        {
            // Frames in one buffer are checked where they lie (zero copy); merged ones are copied out.
            int length;
            bool intact;
            ulong seq = 0;
            long sentAt = 0;
            if (_path.TryReceiveInPlace(out var frame))
            {
                length = frame.Data.Length;
                intact = length == _options.FrameSize && TryRead(frame.Data, out seq, out sentAt);
                _path.Release(frame);
            }
            else if (_path.TryReceive(_receiveBuffer, out length))
            {
                intact = length == _options.FrameSize && TryRead(_receiveBuffer.AsSpan(0, length), out seq, out sentAt);
            }
            else
            {
                break;
            }

            n++;
            if (!intact)
            {
                Corrupted++;
                continue;
            }

            if (seq < _expected)
            {
                // Already seen: a duplicate.
                Duplicated++;
                continue;
            }

            // Frames on one queue come back in order; a jump means the skipped ones are lost.
            Lost += (long)(seq - _expected);
            _expected = seq + 1;
            Received++;
            bytes += length;
            if ((seq % LatencyEvery) == 0)
            {
                _latency[_latencyCount++ & (LatencyCapacity - 1)] = Stopwatch.GetTimestamp() - sentAt;
            }
        }

        if (n > 0 && _path.RefillReceive())
        {
            _rxKick.Ring();
        }

        return n;
    }

    private (double P50, double P99, int Samples) Percentiles()
    {
        var count = (int)Math.Min(_latencyCount, LatencyCapacity);
        if (count == 0)
        {
            return (0, 0, 0);
        }

        var samples = _latency.AsSpan(0, count).ToArray();
        Array.Sort(samples);
        double ToMicroseconds(long ticks) => ticks * 1e6 / Stopwatch.Frequency;
        return (ToMicroseconds(samples[(count - 1) / 2]), ToMicroseconds(samples[(int)((count - 1) * 0.99)]), count);
    }
}
