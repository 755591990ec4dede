using System.Buffers.Binary;
using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text;
using Rings.Linux.Runtime;

namespace Rings.Linux.Diagnostics;

/// <summary>The file format of a <see cref="PacketCapture"/>.</summary>
public enum CaptureFormat
{
    /// <summary>pcapng: one interface, each packet's direction in its flags.</summary>
    PcapNg,

    /// <summary>The classic pcap format (no direction).</summary>
    Pcap,
}

/// <summary>
/// Frames of one port written to a pcapng or pcap file (Ethernet link type; virtio-net headers are
/// not part of a frame) without slowing the data path: the data path copies each frame, up to the
/// snap length, into a bounded single-producer single-consumer ring in native memory and goes on;
/// a writer thread empties the ring into the file. When the ring is full the frame is not
/// captured and counted in <see cref="Dropped"/>: the data path never waits and never allocates.
/// <para>
/// One producer per ring: a port's capture is fed by the workers that serve the port (set
/// <see cref="Ports.Port.Capture"/>), each into a ring of its own (a port whose queue pairs are
/// spread over workers has several), or by one thread calling <see cref="Record(ReadOnlySpan{byte}, bool)"/>.
/// The writer empties every ring; frames of different workers may reach the file slightly out of
/// time order (each carries its own timestamp). Stop the producers before <see cref="Dispose"/>,
/// which writes what is left and closes the file.
/// </para>
/// </summary>
public sealed unsafe class PacketCapture : IDisposable
{
    /// <summary>The default snap length: whole frames.</summary>
    public const int DefaultSnapLength = 65535;

    /// <summary>The default size of the ring between the data path and the writer.</summary>
    public const int DefaultBufferBytes = 8 << 20;

    private const int RecordHeader = 24; // size (4), original length (4), captured length (4), outbound (4), timestamp (8)
    private const int WrapMarker = -1;
    private const ushort LinkTypeEthernet = 1;

    private const int MaxProducers = 64;

    private readonly long _capacity;
    private readonly Ring?[] _rings = new Ring?[MaxProducers];
    private readonly FileStream _file;
    private readonly Thread _writer;
    private readonly ManualResetEventSlim _stop = new();
    private readonly long _startTimestamp;
    private readonly long _startMicroseconds;
    private readonly byte[] _scratch;
    private long _written;
    private int _disposed;

    private PacketCapture(string path, string interfaceName, int snapLength, int bufferBytes, CaptureFormat format, bool startWriter)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentOutOfRangeException.ThrowIfLessThan(snapLength, FrameBurst.MinFrameLength);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(snapLength, FrameBurst.MaxFrameLength);
        if (bufferBytes < 4 * (RecordHeader + snapLength) || (bufferBytes & (bufferBytes - 1)) != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(bufferBytes), bufferBytes, "a power of two holding at least four frames of the snap length");
        }

        Path = path;
        SnapLength = snapLength;
        Format = format;
        _capacity = bufferBytes;
        _scratch = new byte[Math.Max(1024, RecordHeader + 64 + snapLength)];
        _file = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.Read, 1 << 16);
        _rings[0] = new Ring(bufferBytes);
        _startTimestamp = Stopwatch.GetTimestamp();
        _startMicroseconds = (DateTime.UtcNow - DateTime.UnixEpoch).Ticks / 10;
        WriteFileHeader(interfaceName);
        _writer = new Thread(WriteLoop) { Name = $"capture {System.IO.Path.GetFileName(path)}", IsBackground = true };
        if (startWriter)
        {
            _writer.Start();
        }
    }

    /// <summary>The file.</summary>
    public string Path { get; }

    /// <summary>Most bytes kept of each frame (the rest is counted in its original length).</summary>
    public int SnapLength { get; }

    /// <summary>The file format.</summary>
    public CaptureFormat Format { get; }

    /// <summary>Frames copied into the ring.</summary>
    public long Captured => SumOverRings(static r => Volatile.Read(ref r.Captured));

    /// <summary>Frames not captured because the ring was full (the writer fell behind).</summary>
    public long Dropped => SumOverRings(static r => Volatile.Read(ref r.Dropped));

    /// <summary>Frames written to the file.</summary>
    public long Written => Volatile.Read(ref _written);

    /// <summary>
    /// Creates the file (replacing one of that name) and starts the writer. The format is pcap for
    /// a name ending in <c>.pcap</c>, pcapng otherwise, unless <paramref name="format"/> says.
    /// </summary>
    /// <param name="path">The file.</param>
    /// <param name="interfaceName">The interface name recorded in a pcapng file (the port's name).</param>
    /// <param name="snapLength">Most bytes kept of each frame, 14 to <see cref="FrameBurst.MaxFrameLength"/>.</param>
    /// <param name="bufferBytes">Bytes of the ring between data path and writer: a power of two.</param>
    /// <param name="format">The format, or null to choose by the file name.</param>
    /// <returns>The capture, writing.</returns>
    /// <exception cref="IOException">The file cannot be created.</exception>
    public static PacketCapture Create(string path, string interfaceName, int snapLength = DefaultSnapLength, int bufferBytes = DefaultBufferBytes, CaptureFormat? format = null) =>
        new(path, interfaceName, snapLength, bufferBytes, format ?? FormatOf(path), startWriter: true);

    /// <summary>A capture whose writer has not started (tests fill the ring to see drops counted).</summary>
    internal static PacketCapture CreateStopped(string path, int snapLength, int bufferBytes) =>
        new(path, "test", snapLength, bufferBytes, FormatOf(path), startWriter: false);

    /// <summary>The format a file name asks for: pcap for <c>.pcap</c>, pcapng otherwise.</summary>
    /// <param name="path">The file name.</param>
    /// <returns>The format.</returns>
    public static CaptureFormat FormatOf(string path) =>
        path.EndsWith(".pcap", StringComparison.OrdinalIgnoreCase) ? CaptureFormat.Pcap : CaptureFormat.PcapNg;

    /// <summary>Starts the writer of a capture made by <see cref="CreateStopped"/>.</summary>
    internal void StartWriter() => _writer.Start();

    /// <summary>Producer: copies one frame (Ethernet bytes) into the ring, or counts it dropped when the ring is full.</summary>
    /// <param name="frame">The frame.</param>
    /// <param name="outbound">True for a frame sent to the peer, false for one received from it.</param>
    public void Record(ReadOnlySpan<byte> frame, bool outbound)
    {
        var ring = _rings[0]!;
        var data = Reserve(ring, frame.Length, outbound, Stopwatch.GetTimestamp());
        if (data != null)
        {
            frame[..Math.Min(frame.Length, SnapLength)].CopyTo(new Span<byte>(data, Math.Min(frame.Length, SnapLength)));
            Publish(ring);
        }
    }

    /// <summary>Producer (a worker serving the port, <see cref="FrameBurst.Worker"/>): frames 0 to <paramref name="count"/> - 1 of a received burst.</summary>
    internal void RecordReceived(FrameBurst burst, int count)
    {
        var ring = RingOf(burst.Worker);
        var now = Stopwatch.GetTimestamp();
        for (var i = 0; i < count; i++)
        {
            RecordFrame(ring, burst, i, false, now);
        }

        Publish(ring);
    }

    /// <summary>Producer (a worker serving the port, <see cref="FrameBurst.Worker"/>): the frames of a burst handed to the peer.</summary>
    internal void RecordTransmitted(FrameBurst burst, ReadOnlySpan<byte> frames)
    {
        var ring = RingOf(burst.Worker);
        var now = Stopwatch.GetTimestamp();
        foreach (var i in frames)
        {
            RecordFrame(ring, burst, i, true, now);
        }

        Publish(ring);
    }

    /// <summary>Stops the writer once it has written everything captured, and closes the file.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        _stop.Set();
        if (_writer.ThreadState != System.Threading.ThreadState.Unstarted)
        {
            _writer.Join();
        }
        else
        {
            Drain();
        }

        _file.Dispose();
        _stop.Dispose();
        foreach (var ring in _rings)
        {
            ring?.Free();
        }

        GC.SuppressFinalize(this);
    }

    // Worker k's ring, made the first time worker k records (once per worker and capture, never
    // per frame). Only worker k installs slot k, so no two threads race for it; the writer reads
    // the slot with acquire and sees a complete ring or none.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private Ring RingOf(int worker)
    {
        var slot = (uint)worker < MaxProducers ? worker : 0;
        return Volatile.Read(ref _rings[slot]) ?? AddRing(slot);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private Ring AddRing(int slot)
    {
        var ring = new Ring(_capacity);

        // Release: the ring is complete before the writer can see it.
        Volatile.Write(ref _rings[slot], ring);
        return ring;
    }

    private long SumOverRings(Func<Ring, long> field)
    {
        long sum = 0;
        for (var k = 0; k < _rings.Length; k++)
        {
            if (Volatile.Read(ref _rings[k]) is { } r)
            {
                sum += field(r);
            }
        }

        return sum;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void RecordFrame(Ring ring, FrameBurst burst, int frame, bool outbound, long now)
    {
        var length = burst.Length(frame);
        var data = Reserve(ring, length, outbound, now);
        if (data != null)
        {
            burst.CopyTo(frame, new Span<byte>(data, Math.Min(length, SnapLength)));
        }
    }

    // Producer: room for one record after the reserved ones; its header written, its data pointer
    // returned (null when full, counted). Visible to the writer at Publish.
    private byte* Reserve(Ring ring, int length, bool outbound, long timestamp)
    {
        var captured = Math.Min(length, SnapLength);
        var size = Align(RecordHeader + captured);
        var at = ring.Producer.Reserved;
        var offset = at & (_capacity - 1);
        var tail = offset + size > _capacity ? _capacity - offset : 0;
        // Acquire: the writer has finished with everything below its position.
        if (at + tail + size - Volatile.Read(ref ring.Consumer.Position) > _capacity)
        {
            ring.Dropped++;
            return null;
        }

        if (tail > 0)
        {
            *(int*)(ring.Bytes + offset) = WrapMarker;
            at += tail;
            offset = 0;
        }

        var record = ring.Bytes + offset;
        *(int*)record = (int)size;
        *(int*)(record + 4) = length;
        *(int*)(record + 8) = captured;
        *(int*)(record + 12) = outbound ? 1 : 0;
        *(long*)(record + 16) = timestamp;
        ring.Producer.Reserved = at + size;
        ring.Captured++;
        return record + RecordHeader;
    }

    // Release: every record below the new position is complete before the writer can read it.
    private static void Publish(Ring ring) => Volatile.Write(ref ring.Producer.Position, ring.Producer.Reserved);

    private void WriteLoop()
    {
        while (true)
        {
            var stopping = _stop.IsSet;
            if (Drain() == 0)
            {
                if (stopping)
                {
                    break;
                }

                _file.Flush();
                _stop.Wait(5);
            }
        }

        _file.Flush();
    }

    // Consumer: writes every published record of every ring to the file; returns how many.
    private int Drain()
    {
        var n = 0;
        for (var k = 0; k < _rings.Length; k++)
        {
            // Acquire: a ring seen is complete (AddRing).
            if (Volatile.Read(ref _rings[k]) is { } ring)
            {
                n += Drain(ring);
            }
        }

        return n;
    }

    private int Drain(Ring ring)
    {
        // Acquire: records below the producer's position are complete.
        var end = Volatile.Read(ref ring.Producer.Position);
        var at = ring.Consumer.Position;
        var n = 0;
        while (at < end)
        {
            var offset = at & (_capacity - 1);
            var record = ring.Bytes + offset;
            var size = *(int*)record;
            if (size == WrapMarker)
            {
                at += _capacity - offset;
                continue;
            }

            WritePacket(*(int*)(record + 4), new ReadOnlySpan<byte>(record + RecordHeader, *(int*)(record + 8)), *(int*)(record + 12) != 0, *(long*)(record + 16));
            at += size;
            n++;
        }

        // Release: the writer is done with these bytes before the producer may reuse them.
        Volatile.Write(ref ring.Consumer.Position, at);
        Volatile.Write(ref _written, _written + n);
        return n;
    }

    private void WriteFileHeader(string interfaceName)
    {
        var h = _scratch.AsSpan();
        if (Format == CaptureFormat.Pcap)
        {
            BinaryPrimitives.WriteUInt32LittleEndian(h, 0xa1b2c3d4); // microsecond timestamps
            BinaryPrimitives.WriteUInt16LittleEndian(h[4..], 2);
            BinaryPrimitives.WriteUInt16LittleEndian(h[6..], 4);
            BinaryPrimitives.WriteInt32LittleEndian(h[8..], 0);
            BinaryPrimitives.WriteUInt32LittleEndian(h[12..], 0);
            BinaryPrimitives.WriteInt32LittleEndian(h[16..], SnapLength);
            BinaryPrimitives.WriteUInt32LittleEndian(h[20..], LinkTypeEthernet);
            _file.Write(h[..24]);
            return;
        }

        // Section header block: byte-order magic, version 1.0, section length unknown.
        BinaryPrimitives.WriteUInt32LittleEndian(h, 0x0A0D0D0A);
        BinaryPrimitives.WriteUInt32LittleEndian(h[4..], 28);
        BinaryPrimitives.WriteUInt32LittleEndian(h[8..], 0x1A2B3C4D);
        BinaryPrimitives.WriteUInt16LittleEndian(h[12..], 1);
        BinaryPrimitives.WriteUInt16LittleEndian(h[14..], 0);
        BinaryPrimitives.WriteInt64LittleEndian(h[16..], -1);
        BinaryPrimitives.WriteUInt32LittleEndian(h[24..], 28);
        _file.Write(h[..28]);

        // Interface description block: Ethernet, the snap length, if_name (option 2).
        var name = Encoding.UTF8.GetBytes(interfaceName.Length > 200 ? interfaceName[..200] : interfaceName);
        var options = 4 + Align4(name.Length) + 4;
        var length = 20 + options;
        BinaryPrimitives.WriteUInt32LittleEndian(h, 1);
        BinaryPrimitives.WriteInt32LittleEndian(h[4..], length);
        BinaryPrimitives.WriteUInt16LittleEndian(h[8..], LinkTypeEthernet);
        BinaryPrimitives.WriteUInt16LittleEndian(h[10..], 0);
        BinaryPrimitives.WriteInt32LittleEndian(h[12..], SnapLength);
        BinaryPrimitives.WriteUInt16LittleEndian(h[16..], 2);
        BinaryPrimitives.WriteUInt16LittleEndian(h[18..], (ushort)name.Length);
        h.Slice(20, Align4(name.Length)).Clear();
        name.CopyTo(h[20..]);
        var end = 20 + Align4(name.Length);
        BinaryPrimitives.WriteUInt32LittleEndian(h[end..], 0); // opt_endofopt
        BinaryPrimitives.WriteInt32LittleEndian(h[(end + 4)..], length);
        _file.Write(h[..length]);
    }

    private void WritePacket(int original, ReadOnlySpan<byte> data, bool outbound, long timestamp)
    {
        var micros = _startMicroseconds + ((timestamp - _startTimestamp) * 1_000_000 / Stopwatch.Frequency);
        var h = _scratch.AsSpan();
        if (Format == CaptureFormat.Pcap)
        {
            BinaryPrimitives.WriteUInt32LittleEndian(h, (uint)(micros / 1_000_000));
            BinaryPrimitives.WriteUInt32LittleEndian(h[4..], (uint)(micros % 1_000_000));
            BinaryPrimitives.WriteInt32LittleEndian(h[8..], data.Length);
            BinaryPrimitives.WriteInt32LittleEndian(h[12..], original);
            _file.Write(h[..16]);
            _file.Write(data);
            return;
        }

        // Enhanced packet block with epb_flags (option 2): direction 1 inbound, 2 outbound.
        var padded = Align4(data.Length);
        var length = 28 + padded + 12 + 4;
        BinaryPrimitives.WriteUInt32LittleEndian(h, 6);
        BinaryPrimitives.WriteInt32LittleEndian(h[4..], length);
        BinaryPrimitives.WriteUInt32LittleEndian(h[8..], 0);
        BinaryPrimitives.WriteUInt32LittleEndian(h[12..], (uint)((ulong)micros >> 32));
        BinaryPrimitives.WriteUInt32LittleEndian(h[16..], (uint)micros);
        BinaryPrimitives.WriteInt32LittleEndian(h[20..], data.Length);
        BinaryPrimitives.WriteInt32LittleEndian(h[24..], original);
        data.CopyTo(h[28..]);
        h.Slice(28 + data.Length, padded - data.Length).Clear();
        var o = 28 + padded;
        BinaryPrimitives.WriteUInt16LittleEndian(h[o..], 2);
        BinaryPrimitives.WriteUInt16LittleEndian(h[(o + 2)..], 4);
        BinaryPrimitives.WriteUInt32LittleEndian(h[(o + 4)..], outbound ? 2u : 1u);
        BinaryPrimitives.WriteUInt32LittleEndian(h[(o + 8)..], 0); // opt_endofopt
        BinaryPrimitives.WriteInt32LittleEndian(h[(o + 12)..], length);
        _file.Write(h[..length]);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static long Align(long bytes) => (bytes + 7) & ~7L;

    private static int Align4(int bytes) => (bytes + 3) & ~3;

    /// <summary>One producer's ring in native memory, with its positions and counts.</summary>
    private sealed class Ring
    {
        public readonly byte* Bytes;
        public readonly Padded Producer = new();
        public readonly Padded Consumer = new();
        public long Captured;
        public long Dropped;

        public Ring(long bytes)
        {
            Bytes = (byte*)NativeMemory.AlignedAlloc((nuint)bytes, 64);
        }

        public void Free() => NativeMemory.AlignedFree(Bytes);
    }

    /// <summary>A producer's positions on cache lines of their own, away from the consumer's.</summary>
    [StructLayout(LayoutKind.Explicit, Size = 256)]
    private sealed class Padded
    {
        [FieldOffset(128)]
        public long Position;

        [FieldOffset(136)]
        public long Reserved;
    }
}
