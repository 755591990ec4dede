using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Rings.Chains;
using Rings.Linux.Device;
using Rings.Linux.Driver;
using Rings.Linux.Net;
using Rings.Memory;
using Rings.Split;

namespace Rings.Fuzz.Targets;

/// <summary>
/// Target (e): the virtio-net driver's receive path (header, MRG_RXBUF reassembly; virtio 1.2
/// section 5.1.6.4) against a hostile device. The fuzzer's bytes decide what the "device" writes:
/// well-formed frames, or raw used ids and lengths, bad <c>num_buffers</c> and header fields, and
/// scribbles over the used ring and the buffers. Always: nothing throws, a received frame never
/// reaches outside the receive slab, buffers are never duplicated, errors only grow. While the device
/// behaves: every frame arrives whole, in order, with no error counted.
/// </summary>
/// <remarks>
/// Input: byte 0 = receive queue size exponent (bits 0-1, +1), MRG_RXBUF (bit 2), buffer size
/// (bits 3-4: 32, 64, 96 or 128 bytes), extra slab buffers (bits 5-6), EVENT_IDX (bit 7); then
/// operations, one byte each (<see cref="Op"/>, modulo the count) followed by its argument bytes.
/// </remarks>
public static class NetReceiveTarget
{
    /// <summary>Guest-physical address of the region.</summary>
    public const ulong BaseAddress = 0x10_0000;

    /// <summary>Most operations one input runs.</summary>
    public const int MaxOperations = 2048;

    private const int TxSize = 2;
    private const int TxBuffer = 64;
    private const int RegionBytes = 64 * 1024;
    private const int DestinationBytes = 2048;
    private const int Canary = 64;

    [ThreadStatic]
    private static GuardedRegion? t_region;

    [ThreadStatic]
    private static byte[]? t_destination;

    /// <summary>The operations, in input order.</summary>
    public enum Op : byte
    {
        /// <summary>
        /// Device delivers a frame. Args: mode byte (bit 0 raw num_buffers, bit 1 raw used length,
        /// bit 2 publish now), u16 payload length, flags byte, u16 csum_start, then a u16 num_buffers
        /// and/or u32 length when raw.
        /// </summary>
        Deliver,

        /// <summary>Device publishes its used index.</summary>
        PublishUsed,

        /// <summary>Raw used element: slot byte, u32 id, u32 length, written over the used ring.</summary>
        RawUsedElement,

        /// <summary>Raw used index (u16), written over used.idx.</summary>
        RawUsedIndex,

        /// <summary>Four raw bytes over a receive buffer: buffer byte, offset byte, the bytes.</summary>
        ScribbleBuffer,

        /// <summary>Driver copies the next frame out. Arg: destination size byte (x8).</summary>
        Receive,

        /// <summary>Driver lends the next one-buffer frame in place (held until <see cref="Release"/>).</summary>
        ReceiveInPlace,

        /// <summary>Driver gives the held frame back.</summary>
        Release,

        /// <summary>Driver posts free buffers.</summary>
        Refill,
    }

    /// <summary>Runs one input.</summary>
    /// <param name="data">The fuzzer's bytes.</param>
    public static unsafe void Run(ReadOnlySpan<byte> data)
    {
        var input = new FuzzInput(data);
        var config = input.Byte();
        var size = 2 << (config & 3);
        var mergeable = (config & 4) != 0;
        var bufferSize = 32 * (((config >> 3) & 3) + 1);
        var count = size + ((config >> 5) & 3);
        var features = (config & 128) != 0 ? VirtioFeatures.EventIndex : VirtioFeatures.None;

        var region = t_region ??= new GuardedRegion(RegionBytes, BaseAddress, 4096);
        region.Bytes.Clear();
        var memory = new GuestMemory(region.Region);
        var txLayout = RingFormat.Split.Layout(TxSize);
        var rxLayout = RingFormat.Split.Layout(size);
        var txAt = txLayout.At(BaseAddress);
        var rxAt = rxLayout.At(BaseAddress + (ulong)txLayout.TotalBytes);
        var slabs = BaseAddress + (ulong)(txLayout.TotalBytes + rxLayout.TotalBytes);
        var txSlab = new BufferSlab(memory, slabs, TxSize, TxBuffer);
        var rxBase = slabs + BufferSlab.BytesFor(TxSize, TxBuffer);
        var rxSlab = new BufferSlab(memory, rxBase, count, bufferSize);
        var driver = new NetDriverPath<SplitDriverRing, SplitDriverRing>(
            new SplitDriverRing(memory, txAt, TxSize, features), new SplitDriverRing(memory, rxAt, size, features), txSlab, rxSlab, mergeable);
        var device = new SplitDeviceRing(memory, rxAt, size, features);
        var rxHost = region.HostAddress + (nint)(rxBase - BaseAddress);
        var slabBytes = count * bufferSize;
        var used = region.Bytes.Slice((int)(rxAt.DeviceArea - BaseAddress), rxLayout.DeviceAreaBytes);
        var destination = t_destination ??= new byte[DestinationBytes + Canary];
        var maxFrame = NetForwarder.MaxMergedBuffers * bufferSize;

        driver.RefillReceive();
        var hostile = false;          // the device broke a rule: only safety properties hold
        var published = new Queue<(uint Seq, int Length, int Buffers)>(); // frames the driver can see
        var pushed = new List<(uint Seq, int Length, int Buffers)>();     // pushed, not yet published
        uint seq = 0;
        ReceivedFrame held = default;
        var holding = false;
        long errors = 0;
        Span<(ushort Id, ushort Count, int Written)> taken = stackalloc (ushort, ushort, int)[NetForwarder.MaxMergedBuffers];

        for (var step = 0; step < MaxOperations && !input.IsEmpty; step++)
        {
            var op = (Op)(input.Byte() % 9);
            FuzzTrace.Writer?.WriteLine($"{step}: {op} (driver posted {driver.Receive.Outstanding}, free {rxSlab.FreeCount}, errors {driver.ReceiveErrors}, broken {driver.Receive.BrokenReason}; device at {device.Position.AvailIndex}; hostile {hostile}, holding {holding})");
            switch (op)
            {
                case Op.Deliver:
                    {
                        var mode = input.Byte();
                        var payload = input.UInt16() % (size * bufferSize);
                        var flags = input.Byte();
                        var csumStart = input.UInt16();
                        var rawBuffers = (mode & 1) != 0 ? input.UInt16() : (ushort)0;
                        var rawLength = (mode & 2) != 0 ? input.UInt32() : 0u;
                        if (!mergeable)
                        {
                            payload = Math.Min(payload, bufferSize - VirtioNetHeader.Size);
                        }

                        var buffers = (VirtioNetHeader.Size + payload + bufferSize - 1) / bufferSize;
                        var before = device.Position;
                        var popped = 0;
                        var offset = -VirtioNetHeader.Size;
                        while (popped < buffers && device.TryPop(out var chain))
                        {
                            // The driver posts one device-writable segment of a whole buffer.
                            FuzzViolation.Check(chain.Segments.Length == 1 && chain.ReadableCount == 0 && chain.WritableBytes == (ulong)bufferSize,
                                "the driver posted a receive buffer of the wrong shape");
                            DeviceChainChecks.CheckInside(chain.Segments[0].Span, [region]);
                            var span = chain.Segments[0].Span;
                            var written = 0;
                            if (popped == 0)
                            {
                                var header = new VirtioNetHeader
                                {
                                    Flags = flags,
                                    CsumStart = csumStart,
                                    CsumOffset = 6,
                                    NumBuffers = (mode & 1) != 0 ? rawBuffers : (ushort)buffers,
                                };
                                header.TryWrite(span);
                                written = VirtioNetHeader.Size;
                                offset = 0;
                            }

                            while (written < bufferSize && offset < payload)
                            {
                                span[written++] = PayloadByte(seq, offset++);
                            }

                            taken[popped++] = (chain.Token.Id, chain.Token.DescriptorCount, written);
                        }

                        // A device that lied in the used ring (raw ids) makes the driver repost buffers the
                        // device still holds, and its own ring then breaks: only an honest device may expect a clean ring.
                        FuzzViolation.Check(hostile || !device.IsBroken, $"the driver's receive ring broke the device: {device.BrokenReason}");
                        if (popped < buffers)
                        {
                            device.UndoPops(before); // not enough buffers posted: the frame waits
                            break;
                        }

                        for (var i = 0; i < popped; i++)
                        {
                            var length = i == 0 && (mode & 2) != 0 ? rawLength : (uint)taken[i].Written;
                            device.PushUsed(new ChainToken(taken[i].Id, taken[i].Count), length);
                        }

                        hostile |= (mode & 3) != 0;
                        pushed.Add((seq, payload, buffers));
                        seq++;
                        if ((mode & 4) != 0)
                        {
                            Publish(device, pushed, published);
                        }

                        break;
                    }

                case Op.PublishUsed:
                    Publish(device, pushed, published);
                    break;

                case Op.RawUsedElement:
                    {
                        var slot = input.Byte() & (size - 1);
                        BinaryPrimitives.WriteUInt32LittleEndian(used[(4 + (8 * slot))..], input.UInt32());
                        BinaryPrimitives.WriteUInt32LittleEndian(used[(8 + (8 * slot))..], input.UInt32());
                        hostile = true;
                        break;
                    }

                case Op.RawUsedIndex:
                    BinaryPrimitives.WriteUInt16LittleEndian(used[2..], input.UInt16());
                    hostile = true;
                    break;

                case Op.ScribbleBuffer:
                    {
                        var buffer = input.Byte() % count;
                        var at = input.Byte() % bufferSize;
                        var bytes = input.Take(Math.Min(4, bufferSize - at));
                        bytes.CopyTo(rxSlab.Span(buffer)[at..]);
                        hostile = true;
                        break;
                    }

                case Op.Receive:
                    {
                        var n = Math.Min(input.Byte() * 8, DestinationBytes);
                        destination.AsSpan(n).Fill(0xCC);
                        if (driver.TryReceive(destination.AsSpan(0, n), out var length))
                        {
                            FuzzViolation.Check(length >= 0 && length <= maxFrame, $"received a {length}-byte frame from {bufferSize}-byte buffers");
                            FuzzViolation.Check(destination.AsSpan(n).IndexOfAnyExcept((byte)0xCC) < 0, "wrote past the destination");
                            if (!hostile)
                            {
                                FuzzViolation.Check(published.Count > 0, "received a frame the device never published");
                                var (s, l, _) = published.Dequeue();
                                FuzzViolation.Check(length == l, $"frame {s}: received {length} bytes, sent {l}");
                                for (var i = 0; i < Math.Min(n, length); i++)
                                {
                                    FuzzViolation.Check(destination[i] == PayloadByte(s, i), $"frame {s}: byte {i} differs");
                                }
                            }
                        }
                        else if (!hostile)
                        {
                            FuzzViolation.Check(published.Count == 0, $"{published.Count} published frames not received");
                        }

                        break;
                    }

                case Op.ReceiveInPlace:
                    {
                        if (holding)
                        {
                            break;
                        }

                        if (driver.TryReceiveInPlace(out held))
                        {
                            holding = true;
                            CheckInSlab(held.Data, rxHost, slabBytes, bufferSize);
                            if (!hostile)
                            {
                                FuzzViolation.Check(published.Count > 0 && published.Peek().Buffers == 1, "lent a frame that is not the next one-buffer frame");
                                var (s, l, _) = published.Dequeue();
                                FuzzViolation.Check(held.Data.Length == l, $"frame {s}: lent {held.Data.Length} bytes, sent {l}");
                                for (var i = 0; i < l; i++)
                                {
                                    FuzzViolation.Check(held.Data[i] == PayloadByte(s, i), $"frame {s}: byte {i} differs");
                                }
                            }
                        }
                        else if (!hostile)
                        {
                            FuzzViolation.Check(published.Count == 0 || published.Peek().Buffers > 1, "a one-buffer frame was not lent");
                        }

                        break;
                    }

                case Op.Release:
                    if (holding)
                    {
                        CheckInSlab(held.Data, rxHost, slabBytes, bufferSize);
                        driver.Release(held);
                        holding = false;
                    }

                    break;

                case Op.Refill:
                    driver.RefillReceive();
                    break;
            }

            FuzzViolation.Check(driver.ReceiveErrors >= errors, "the error count went down");
            errors = driver.ReceiveErrors;
            FuzzViolation.Check(hostile || (errors == 0 && !driver.Receive.IsBroken), $"a well-behaved device caused {errors} errors, broken: {driver.Receive.BrokenReason}");

            // Every buffer is in exactly one place: free, posted, lent, or gathered for a frame.
            var accounted = rxSlab.FreeCount + driver.Receive.Outstanding + (holding ? 1 : 0);
            FuzzViolation.Check(accounted <= count, $"{accounted} buffers accounted for in a slab of {count}");
        }
    }

    private static void Publish(SplitDeviceRing device, List<(uint Seq, int Length, int Buffers)> pushed, Queue<(uint Seq, int Length, int Buffers)> published)
    {
        device.PublishUsed();
        foreach (var p in pushed)
        {
            published.Enqueue(p);
        }

        pushed.Clear();
    }

    private static byte PayloadByte(uint seq, int offset) => (byte)((seq * 131) + (uint)(offset * 7) + 1);

    // A lent frame lies inside one receive buffer, right after its header.
    private static unsafe void CheckInSlab(Span<byte> frame, nint slab, int slabBytes, int bufferSize)
    {
        var start = (long)(nint)Unsafe.AsPointer(ref MemoryMarshal.GetReference(frame)) - slab;
        FuzzViolation.Check(start >= 0 && start + frame.Length <= slabBytes, $"a lent frame at slab offset {start} (+{frame.Length}) is outside the slab");
        FuzzViolation.Check(start % bufferSize == VirtioNetHeader.Size && (start % bufferSize) + frame.Length <= bufferSize,
            $"a lent frame at slab offset {start} (+{frame.Length}) crosses its buffer");
    }
}
