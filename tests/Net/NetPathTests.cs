using FsCheck.Xunit;
using System.Buffers.Binary;
using Rings.Linux.Device;
using Rings.Linux.Driver;
using Rings.Linux.Net;
using Rings.Memory;
using Rings.Split;

namespace Rings.Tests.Net;

/// <summary>The virtio-net driver path and the vhost-net forwarder, in one process over split rings.</summary>
public sealed class NetPathTests : IDisposable
{
    private const ulong Base = 0x4000_0000;
    private readonly NativeRegion _region;

    public NetPathTests()
    {
        _region = new NativeRegion(8 << 20, Base);
    }

    public void Dispose() => _region.Dispose();

    private sealed record Pair(NetDriverPath<SplitDriverRing, SplitDriverRing> Driver, SplitDeviceRing Tx, SplitDeviceRing Rx, BufferSlab TxSlab);

    // The slabs go right behind the rings, or at slabsAfterRings bytes past the page that follows them.
    private Pair Create(int size, int txBuffer, int rxBuffer, bool mergeable, VirtioFeatures features = VirtioFeatures.EventIndex, int rxCount = 0, int? slabsAfterRings = null)
    {
        var memory = new GuestMemory(_region.Region);
        var layout = RingFormat.Split.Layout(size);
        var txAt = layout.At(Base);
        var rxAt = layout.At(Base + (ulong)layout.TotalBytes);
        var slabs = Base + (2 * (ulong)layout.TotalBytes);
        if (slabsAfterRings is { } shift)
        {
            slabs = ((slabs + 4095) & ~4095UL) + (ulong)shift;
        }

        var txSlab = new BufferSlab(memory, slabs, size, txBuffer);
        var rxSlab = new BufferSlab(memory, slabs + BufferSlab.BytesFor(size, txBuffer), rxCount > 0 ? rxCount : size, rxBuffer);
        var driver = new NetDriverPath<SplitDriverRing, SplitDriverRing>(
            new SplitDriverRing(memory, txAt, size, features), new SplitDriverRing(memory, rxAt, size, features), txSlab, rxSlab, mergeable);
        return new Pair(driver, new SplitDeviceRing(memory, txAt, size, features), new SplitDeviceRing(memory, rxAt, size, features), txSlab);
    }

    private static void Fill(Span<byte> frame, ulong seq)
    {
        for (var i = 0; i < frame.Length; i++)
        {
            frame[i] = (byte)(seq * 31 + (ulong)i * 7);
        }

        BinaryPrimitives.WriteUInt64LittleEndian(frame, seq);
    }

    private static bool Check(ReadOnlySpan<byte> frame, ulong seq)
    {
        if (BinaryPrimitives.ReadUInt64LittleEndian(frame) != seq)
        {
            return false;
        }

        for (var i = 8; i < frame.Length; i++)
        {
            if (frame[i] != (byte)(seq * 31 + (ulong)i * 7))
            {
                return false;
            }
        }

        return true;
    }

    [Theory]
    [InlineData(64, 2048, false, 20000)]
    [InlineData(1514, 2048, false, 5000)]
    [InlineData(9000, 2048, true, 2000)]
    [InlineData(9000, 9100, false, 1000)]
    [InlineData(60, 64, true, 5000)]
    public void ReflectedFramesComeBackWholeAndInOrder(int frameSize, int rxBuffer, bool mergeable, int count)
    {
        var p = Create(64, frameSize + VirtioNetHeader.Size, rxBuffer, mergeable);
        var d = p.Driver;
        RingStructTests.Reflect(d, p.Tx, p.Rx, frameSize, mergeable, count);
        Assert.False(p.Tx.IsBroken || p.Rx.IsBroken || d.Transmit.IsBroken || d.Receive.IsBroken);
        Assert.Equal(0, d.ReceiveErrors);
        Assert.Equal((long)count, p.Tx.Counters.Packets);
    }

    [Theory]
    [InlineData(32)]
    [InlineData(1)]
    public unsafe void UnderInOrderTheForwarderReturnsATransmitBurstWithOneUsedEntry(int frames)
    {
        const int size = 64;
        var p = Create(size, 64 + VirtioNetHeader.Size, 2048, mergeable: false, VirtioFeatures.InOrder | VirtioFeatures.EventIndex);
        var used = RingFormat.Split.Layout(size).At(Base).DeviceArea;
        Assert.True(new GuestMemory(_region.Region).TryTranslate(used, 4 + (8 * size), out var host));
        var usedRing = new ReadOnlySpan<byte>((void*)host, 4 + (8 * size));
        p.Driver.RefillReceive();
        for (var round = 0; round < 3; round++)
        {
            var frame = new byte[64];
            for (var s = 0; s < frames; s++)
            {
                Fill(frame, (ulong)((round * frames) + s));
                Assert.True(p.Driver.TrySend(frame));
            }

            p.Driver.FlushTransmit();
            var r = NetForwarder.Forward(p.Tx, p.Rx, 32, mergeable: false);
            Assert.Equal(new ForwardResult(frames, 0, false), r);

            // used.idx moved by the whole burst; one entry written, at the burst's first slot (2.7.9).
            var first = round * frames;
            Assert.Equal((ushort)(first + frames), BinaryPrimitives.ReadUInt16LittleEndian(usedRing[2..]));
            for (var k = 1; k < frames; k++)
            {
                Assert.Equal(0UL, BinaryPrimitives.ReadUInt64LittleEndian(usedRing[(4 + (8 * ((first + k) % size)))..]));
            }

            Assert.Equal(frames, p.Driver.ReclaimTransmit());
            var back = new byte[2048];
            for (var s = 0; s < frames; s++)
            {
                Assert.True(p.Driver.TryReceive(back, out var length));
                Assert.True(Check(back.AsSpan(0, length), (ulong)(first + s)));
            }

            p.Driver.RefillReceive();
        }

        Assert.False(p.Tx.IsBroken || p.Rx.IsBroken || p.Driver.Transmit.IsBroken || p.Driver.Receive.IsBroken);
    }

    [Fact]
    public void PreparingTransmitBuffersWritesThePlainHeaderAndChangesNothingElse()
    {
        var p = Create(16, 64 + VirtioNetHeader.Size, 2048, mergeable: false);
        p.Driver.RefillReceive();

        // Every transmit buffer's header made dirty, then the next four prepared.
        var memory = new GuestMemory(_region.Region);
        var slabs = Base + (2 * (ulong)RingFormat.Split.Layout(16).TotalBytes);
        Span<byte> Header(int i) => memory.TryGetSpan(slabs + (ulong)(i * (64 + VirtioNetHeader.Size)), 8, out var span) ? span : throw new InvalidOperationException("outside memory");
        for (var i = 0; i < 16; i++)
        {
            Header(i).Fill(0xEE);
        }

        p.Driver.PrepareTransmit(4);
        var prepared = 0;
        for (var i = 0; i < 16; i++)
        {
            prepared += Header(i).IndexOfAnyExcept((byte)0) < 0 ? 1 : 0;
        }

        Assert.Equal(4, prepared);
        Assert.Equal(16, p.Driver.Transmit.FreeDescriptors);

        // The frames sent after it go and come back as ever.
        var frame = new byte[64];
        for (var s = 0; s < 6; s++)
        {
            Fill(frame, (ulong)s);
            Assert.True(p.Driver.TrySend(frame));
        }

        p.Driver.FlushTransmit();
        Assert.Equal(new ForwardResult(6, 0, false), NetForwarder.Forward(p.Tx, p.Rx, 32, mergeable: false));
        var back = new byte[2048];
        for (var s = 0; s < 6; s++)
        {
            Assert.True(p.Driver.TryReceive(back, out var length));
            Assert.True(Check(back.AsSpan(0, length), (ulong)s));
        }
    }

    [Fact]
    public void OversizeFrameWithoutMergeableIsDroppedAndCounted()
    {
        var p = Create(16, 9000 + VirtioNetHeader.Size, 2048, mergeable: false);
        p.Driver.RefillReceive();
        Assert.True(p.Driver.TrySend(new byte[9000]));
        Assert.True(p.Driver.TrySend(new byte[100]));
        p.Driver.FlushTransmit();
        var r = NetForwarder.Forward(p.Tx, p.Rx, 32, mergeable: false);
        Assert.Equal(1, r.Frames);
        Assert.Equal(1, r.Dropped);
        Assert.Equal(1, p.Rx.Counters.Drops);
        Assert.True(p.Driver.TryReceive(new byte[2048], out var len));
        Assert.Equal(100, len);
    }

    [Fact]
    public void ForwarderBacksOffWhenReceiveQueueIsEmptyAndLosesNothing()
    {
        var p = Create(8, 256, 256, mergeable: false);
        var d = p.Driver;
        for (ulong i = 0; i < 8; i++)
        {
            var f = new byte[100];
            Fill(f, i);
            Assert.True(d.TrySend(f));
        }

        d.FlushTransmit();
        var r = NetForwarder.Forward(p.Tx, p.Rx, 32, false);
        Assert.True(r.ReceiveFull);
        Assert.Equal(0, r.Frames);
        d.RefillReceive();
        r = NetForwarder.Forward(p.Tx, p.Rx, 32, false);
        Assert.Equal(8, r.Frames);
        var back = new byte[256];
        for (ulong i = 0; i < 8; i++)
        {
            Assert.True(d.TryReceive(back, out var len));
            Assert.True(Check(back.AsSpan(0, len), i));
        }
    }

    [Fact]
    public void MergedFrameWaitsForEnoughBuffersThenCompletes()
    {
        // Five 2048-byte receive buffers: one 9000-byte frame needs all five.
        var p = Create(8, 9100, 2048, mergeable: true, rxCount: 5);
        var d = p.Driver;
        var f = new byte[9000];
        for (ulong i = 0; i < 2; i++)
        {
            Fill(f, i);
            Assert.True(d.TrySend(f));
        }

        d.FlushTransmit();
        d.RefillReceive();
        var r = NetForwarder.Forward(p.Tx, p.Rx, 32, true);
        Assert.Equal(1, r.Frames);
        Assert.True(r.ReceiveFull);
        var back = new byte[9100];
        Assert.True(d.TryReceive(back, out var len));
        Assert.Equal(9000, len);
        Assert.True(Check(back.AsSpan(0, len), 0));
        Assert.False(d.TryReceive(back, out _));
        d.RefillReceive();
        r = NetForwarder.Forward(p.Tx, p.Rx, 32, true);
        Assert.Equal(1, r.Frames);
        Assert.True(d.TryReceive(back, out len));
        Assert.True(Check(back.AsSpan(0, len), 1));
    }

    [Fact]
    public void MergedFrameLargerThanTheWholeReceiveRingIsDropped()
    {
        var p = Create(4, 9100, 2048, mergeable: true);
        p.Driver.RefillReceive();
        Assert.True(p.Driver.TrySend(new byte[9000]));
        p.Driver.FlushTransmit();
        var r = NetForwarder.Forward(p.Tx, p.Rx, 32, true);
        Assert.Equal(1, r.Dropped);
        Assert.Equal(1, p.Rx.Counters.Drops);
        Assert.False(p.Rx.IsBroken);
    }

    [Fact]
    public void ZeroCopyLeaseAndInPlaceReceive()
    {
        var p = Create(16, 2048, 2048, mergeable: true);
        var d = p.Driver;
        d.RefillReceive();
        Assert.True(d.TryLeaseTransmit(out var lease));
        Fill(lease.Frame[..128], 42);
        Assert.True(d.Submit(lease, 128));
        d.FlushTransmit();
        Assert.Equal(1, NetForwarder.Forward(p.Tx, p.Rx, 32, true).Frames);
        Assert.True(d.TryReceiveInPlace(out var frame));
        Assert.Equal(128, frame.Data.Length);
        Assert.True(Check(frame.Data, 42));
        d.Release(frame);
    }

    // A transmit and a receive queue of 8 descriptors with no driver path over them: both sides
    // of each, for tests that place buffers by hand.
    private (SplitDriverRing Tx, SplitDriverRing Rx, SplitDeviceRing TxDevice, SplitDeviceRing RxDevice, GuestMemory Memory) RawRings(VirtioFeatures features)
    {
        var memory = new GuestMemory(_region.Region);
        var layout = RingFormat.Split.Layout(8);
        var txAt = layout.At(Base);
        var rxAt = layout.At(Base + (ulong)layout.TotalBytes);
        return (new SplitDriverRing(memory, txAt, 8, features), new SplitDriverRing(memory, rxAt, 8, features),
            new SplitDeviceRing(memory, txAt, 8, features), new SplitDeviceRing(memory, rxAt, 8, features), memory);
    }

    [Fact]
    public void TransmitWithoutRoomForTheHeaderBreaksOnlyThatQueue()
    {
        var (tx, rx, txDevice, rxDevice, _) = RawRings(VirtioFeatures.None);
        Assert.True(rx.TryAdd(new Chains.BufferSegment(Base + 0x10000, 2048), true, out _));
        rx.Publish();
        Assert.True(tx.TryAdd(new Chains.BufferSegment(Base + 0x20000, 11), false, out _));
        tx.Publish();
        var r = NetForwarder.Forward(txDevice, rxDevice, 32, false);
        Assert.Equal(0, r.Frames);
        Assert.Equal(BrokenReason.HeaderTooShort, txDevice.BrokenReason);
        Assert.False(rxDevice.IsBroken);
    }

    // Every frame length the burst copy's vector path and its edges meet (a whole frame of 32 to
    // 96 bytes with its header, and either side of that), any bytes in the transmitted header
    // and frame, receive buffers of several sizes, and a receive buffer that is the transmit
    // buffer itself: the receive buffer holds a fresh header (num_buffers 1, the rest zero) and
    // the frame, nothing past it is written, and the used length says so.
    [Property(MaxTest = 400)]
    public void A_forwarded_frame_arrives_whole_under_a_fresh_header_and_nothing_past_it_changes(byte seed, bool sameBuffer)
    {
        var random = new Random(seed * 7919);
        foreach (var length in new[] { 12, 13, 31, 32, 33, 43, 44, 45, 63, 64, 65, 76, 95, 96, 97, 128, 12 + random.Next(0, 200) })
        {
            var (tx, rx, txDevice, rxDevice, memory) = RawRings(VirtioFeatures.InOrder);
            const ulong txBuffer = Base + 0x10000;
            var rxBuffer = sameBuffer ? txBuffer : Base + 0x20000;
            var rxLength = sameBuffer ? length : length + random.Next(0, 40);
            Assert.True(memory.TryGetSpan(Base + 0x10000, 0x20000, out var buffers));
            buffers.Fill(0xEE);
            Assert.True(memory.TryGetSpan(txBuffer, (uint)length, out var sent));
            random.NextBytes(sent);
            var expected = sent.ToArray();
            expected.AsSpan(0, VirtioNetHeader.Size).Clear();
            expected[VirtioNetHeader.NumBuffersOffset] = 1;

            Assert.True(rx.TryAdd(new Chains.BufferSegment(rxBuffer, (uint)rxLength), true, out _));
            rx.Publish();
            Assert.True(tx.TryAdd(new Chains.BufferSegment(txBuffer, (uint)length), false, out _));
            tx.Publish();
            Assert.Equal(new ForwardResult(1, 0, false), NetForwarder.Forward(txDevice, rxDevice, 32, false));
            Assert.True(rx.TryTakeUsed(out var used));
            Assert.Equal((uint)length, used.Length);
            Assert.True(memory.TryGetSpan(rxBuffer, (uint)rxLength + 64, out var arrived));
            Assert.True(arrived[..length].SequenceEqual(expected), $"length {length}: the frame or its header differs");
            Assert.True(arrived[length..].IndexOfAnyExcept((byte)0xEE) < 0, $"length {length}: bytes past the frame were written");
        }
    }

    [Theory]
    [InlineData(0)]
    [InlineData(8)]
    public void SubmitHeadWritesTheHeadersLineAndLeavesTheRestOfTheFrame(int misalignment)
    {
        // The slabs on a page, then moved off a line boundary when asked: a misaligned buffer is
        // written the ordinary way, with the same result.
        const int size = 8;
        var p = Create(size, 2048, 2048, mergeable: false, VirtioFeatures.None, slabsAfterRings: misalignment);
        for (var i = 0; i < size; i++)
        {
            p.TxSlab.Span(i).Fill(0xEE);
        }

        var (driver, tx, rx) = (p.Driver, p.Tx, p.Rx);
        driver.RefillReceive();

        // A long head, then a shorter one: what the first left past the second's end is zero again.
        foreach (var headLength in new[] { NetDriverPath<SplitDriverRing, SplitDriverRing>.StreamedHeadSize, 32, 10, 0 })
        {
            var head = new byte[headLength];
            for (var i = 0; i < head.Length; i++)
            {
                head[i] = (byte)(i + 1);
            }

            Assert.True(driver.TryLeaseTransmit(out var lease));
            Assert.True(driver.SubmitHead(lease, 100, head));
            driver.FlushTransmit();
            Assert.Equal(1, NetForwarder.Forward(tx, rx, 32, mergeable: false).Frames);
            Assert.True(driver.TryReceiveInPlace(out var frame));
            var data = frame.Data.ToArray();
            driver.Release(frame);
            driver.ReclaimTransmit();

            Assert.Equal(100, data.Length);
            Assert.True(data.AsSpan(0, headLength).SequenceEqual(head), $"head {headLength}: the head differs");
            Assert.True(data.AsSpan(headLength, BufferSlab.LineSize - VirtioNetHeader.Size - headLength).IndexOfAnyExcept((byte)0) < 0, $"head {headLength}: the line past the head is not zero");
            Assert.True(data.AsSpan(BufferSlab.LineSize - VirtioNetHeader.Size).IndexOfAnyExcept((byte)0xEE) < 0, $"head {headLength}: bytes past the line were written");
        }

        Assert.Throws<ArgumentOutOfRangeException>(() =>
        {
            Assert.True(driver.TryLeaseTransmit(out var lease));
            driver.SubmitHead(lease, 100, new byte[NetDriverPath<SplitDriverRing, SplitDriverRing>.StreamedHeadSize + 1]);
        });
    }

    [Fact]
    public void SubmitLinePutsThePlainHeaderInTheLinesFirstBytes()
    {
        var p = Create(8, 2048, 2048, mergeable: false);
        var d = p.Driver;
        d.RefillReceive();
        Assert.True(d.TryLeaseTransmit(out var lease));

        // Every byte of the line set: the header's 12 must arrive as the plain header (all zero),
        // which the device reads as no checksum to finish and no segmentation.
        var low = System.Runtime.Intrinsics.Vector256.Create((byte)0xAB);
        var high = System.Runtime.Intrinsics.Vector256.Create((byte)0xCD);
        Assert.True(d.SubmitLine(lease, 60, low, high));
        d.FlushTransmit();
        Assert.True(p.Tx.TryPop(out var chain));
        var sent = chain.Segments[0].Span;
        Assert.Equal(12 + 60, sent.Length);
        Assert.True(sent[..12].IndexOfAnyExcept((byte)0) < 0);
        Assert.True(sent[12..32].IndexOfAnyExcept((byte)0xAB) < 0);
        Assert.True(sent[32..64].IndexOfAnyExcept((byte)0xCD) < 0);
    }

    [Fact]
    public void SubmitHeadFitsABufferSmallerThanALine()
    {
        // 40-byte transmit buffers: 28 bytes of frame behind the header, and never streamed.
        var p = Create(8, 40, 2048, mergeable: false);
        var d = p.Driver;
        d.RefillReceive();
        Assert.True(d.TryLeaseTransmit(out var lease));
        Assert.True(d.SubmitHead(lease, 28, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]));
        d.FlushTransmit();
        Assert.Equal(1, NetForwarder.Forward(p.Tx, p.Rx, 32, mergeable: false).Frames);
        Assert.True(d.TryReceiveInPlace(out var frame));
        Assert.Equal([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 0, 0, 0, 0, 0, 0, 0, 0], frame.Data.ToArray());
        d.Release(frame);

        Assert.True(d.TryLeaseTransmit(out var another));
        try
        {
            d.SubmitHead(another, 28, new byte[29]);
            Assert.Fail("a head longer than the buffer's frame was taken");
        }
        catch (ArgumentOutOfRangeException)
        {
        }
    }

    [Fact]
    public void StreamedLineIsWrittenWholeOnlyAtALineBoundary()
    {
        var memory = new GuestMemory(_region.Region);
        var line = Enumerable.Range(1, BufferSlab.LineSize).Select(i => (byte)i).ToArray();
        var aligned = new BufferSlab(memory, Base, 2, 128);
        var misaligned = new BufferSlab(memory, Base + 0x1008, 2, 128);
        aligned.Span(1).Fill(0xEE);
        misaligned.Span(1).Fill(0xEE);

        // Streams where the CPU can (x86 with AVX), and then writes the line and nothing else.
        var streamed = aligned.TryStreamLine(1, line);
        Assert.Equal(System.Runtime.Intrinsics.X86.Avx.IsSupported, streamed);
        BufferSlab.StoreFence();
        Assert.True(streamed ? aligned.Span(1)[..BufferSlab.LineSize].SequenceEqual(line) : aligned.Span(1).IndexOfAnyExcept((byte)0xEE) < 0);
        Assert.True(aligned.Span(1)[BufferSlab.LineSize..].IndexOfAnyExcept((byte)0xEE) < 0);

        // Off a line boundary it writes nothing (the caller writes the ordinary way).
        Assert.False(misaligned.TryStreamLine(1, line));
        Assert.True(misaligned.Span(1).IndexOfAnyExcept((byte)0xEE) < 0);
        Assert.Throws<ArgumentException>(() => aligned.TryStreamLine(0, line.AsSpan(1)));
        Assert.Throws<ArgumentOutOfRangeException>(() => aligned.TryStreamLine(2, line));
    }
}
