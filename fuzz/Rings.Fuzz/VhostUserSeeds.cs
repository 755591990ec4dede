using Rings.Chains;
using Rings.Fuzz.Targets;
using Rings.Linux.VhostUser;
using Rings.Memory;

namespace Rings.Fuzz;

/// <summary>
/// Seeds for the vhost-user target that get as far as a running data path: negotiation, a memory
/// table over the target's memory file, two started rings (receive 0, transmit 1), then the ring
/// memory a driver would have written (scribbles) and forwarding rounds; some then scribble over
/// the rings and forward again, or send descriptors of the wrong kind.
/// </summary>
internal static class VhostUserSeeds
{
    private const ulong GuestBase = 0x4000_0000;
    private const ulong UserBase = 0x7F00_0000_0000;
    private const int RingStride = 0x1000;
    private const int BufferOffset = 0x4000;
    private const int BufferBytes = 2048;
    private const int Size = 8;

    public static IEnumerable<(string, byte[])> All()
    {
        var basic = VirtioFeatures.Version1;
        yield return ("started-split-forward", Started(RingFormat.Split, basic).Frames(RingFormat.Split, basic, 3, 60).Forward(1).ToArray());
        yield return ("started-packed-forward", Started(RingFormat.Packed, basic).Frames(RingFormat.Packed, basic, 3, 60).Forward(1).ToArray());

        var rich = VirtioFeatures.Version1 | VirtioFeatures.EventIndex | VirtioFeatures.NetMergeRxBuffers | VirtioFeatures.IndirectDescriptors;
        yield return ("started-split-mergeable", Started(RingFormat.Split, rich).Frames(RingFormat.Split, rich, 2, 1400).Forward(2).ToArray());

        var inOrder = VirtioFeatures.Version1 | VirtioFeatures.InOrder | VirtioFeatures.EventIndex;
        yield return ("started-packed-in-order", Started(RingFormat.Packed, inOrder).Frames(RingFormat.Packed, inOrder, 4, 100).Forward(1).ToArray());

        // Forward, then a hostile driver rewrites its avail index and a descriptor; forward again.
        var split = RingFormat.Split.Layout(Size);
        var s = Started(RingFormat.Split, basic).Frames(RingFormat.Split, basic, 2, 60).Forward(1)
            .Scribble(RingStride + split.DriverAreaOffset + 2, 0x40, 0x00)
            .Scribble(RingStride + 16 * 2, 0xF0, 0xFF, 0xFF, 0x3F, 0, 0, 0, 0, 0xFF, 0xFF, 0, 0, 1, 0, 2, 0)
            .Forward(1);
        yield return ("started-split-scribbled", s.ToArray());

        // A packed ring whose next descriptor turns available with a NEXT loop over the whole ring.
        s = Started(RingFormat.Packed, basic).Frames(RingFormat.Packed, basic, 1, 60).Forward(1);
        for (var i = 0; i < Size; i++)
        {
            s.Scribble(RingStride + (16 * i) + 14, 0x81, 0x00);
        }

        yield return ("started-packed-scribbled", s.Forward(1).ToArray());

        // Memory where an eventfd is due and an eventfd where memory is due.
        s = Started(RingFormat.Split, basic)
            .Message(VhostUserMessage.WithFile(VhostUserRequest.SetVringCall, 1, true), 1, wrongKind: true)
            .Message(VhostUserMessage.WithFile(VhostUserRequest.SetVringKick, 0, true), 1, wrongKind: true)
            .Frames(RingFormat.Split, basic, 1, 60).Forward(1)
            .Message(VhostUserMessage.WithMemTable([Region]), 1, wrongKind: true);
        yield return ("wrong-descriptor-kinds", s.ToArray());

        // Stop a running ring, restart it at the base it reported, forward.
        s = Started(RingFormat.Split, basic).Frames(RingFormat.Split, basic, 2, 60)
            .Message(VhostUserMessage.WithState(VhostUserRequest.GetVringBase, 1, 0))
            .Message(VhostUserMessage.WithState(VhostUserRequest.SetVringBase, 1, 0))
            .Message(VhostUserMessage.WithAddress(new VringAddress(1, 0, UserBase + RingStride, UserBase + RingStride + (ulong)RingFormat.Split.Layout(Size).DeviceAreaOffset, UserBase + RingStride + (ulong)RingFormat.Split.Layout(Size).DriverAreaOffset, 0)))
            .Message(VhostUserMessage.WithFile(VhostUserRequest.SetVringKick, 1, true), 1)
            .Message(VhostUserMessage.WithState(VhostUserRequest.SetVringEnable, 1, 1))
            .Forward(1);
        yield return ("stop-restart-forward", s.ToArray());
    }

    private static MemoryRegionDescription Region => new(GuestBase, VhostUserTarget.MemoryBytes, UserBase, 0);

    private static Seed Negotiated(VirtioFeatures features) =>
        new Seed()
            .Message(VhostUserMessage.Empty(VhostUserRequest.GetFeatures))
            .Message(VhostUserMessage.Empty(VhostUserRequest.GetProtocolFeatures))
            .Message(VhostUserMessage.WithU64(VhostUserRequest.SetProtocolFeatures, (ulong)(VhostUserProtocolFeatures.ReplyAck | VhostUserProtocolFeatures.Multiqueue)))
            .Message(VhostUserMessage.Empty(VhostUserRequest.SetOwner))
            .Message(VhostUserMessage.WithU64(VhostUserRequest.SetFeatures, (ulong)(features | VhostUserConstants.ProtocolFeaturesBit)));

    private static Seed Started(RingFormat format, VirtioFeatures features)
    {
        var seed = Negotiated(features | format.Feature).Message(VhostUserMessage.WithMemTable([Region]), 1);
        var start = format == RingFormat.Packed ? new RingPosition(0, true, 0, true) : new RingPosition(0);
        for (var index = 0; index < 2; index++)
        {
            var a = format.Layout(Size).At(UserBase + (ulong)(index * RingStride));
            seed.Message(VhostUserMessage.WithState(VhostUserRequest.SetVringNum, (uint)index, Size))
                .Message(VhostUserMessage.WithState(VhostUserRequest.SetVringBase, (uint)index, format.EncodeBase(start)))
                .Message(VhostUserMessage.WithAddress(new VringAddress((uint)index, 0, a.DescriptorArea, a.DeviceArea, a.DriverArea, 0)))
                .Message(VhostUserMessage.WithFile(VhostUserRequest.SetVringCall, (uint)index, true), 1)
                .Message(VhostUserMessage.WithFile(VhostUserRequest.SetVringKick, (uint)index, true), 1)
                .Message(VhostUserMessage.WithState(VhostUserRequest.SetVringEnable, (uint)index, 1));
        }

        return seed;
    }

    private sealed class Seed
    {
        private readonly List<byte> _bytes = [];

        public Seed Message(VhostUserMessage message, int fds = 0, bool wrongKind = false) =>
            Record((byte)(fds | (wrongKind ? VhostUserTarget.WrongKind : 0)), VhostUserCodec.Encode(message));

        public Seed Scribble(int offset, params byte[] data) =>
            Record(VhostUserTarget.Scribble, [.. BitConverter.GetBytes((uint)offset), .. data]);

        public Seed Forward(int rounds) => Record((byte)(VhostUserTarget.Forward + rounds - 1), []);

        /// <summary>
        /// What a driver writes for <paramref name="frames"/> frames: receive buffers posted on ring
        /// 0, frames of <paramref name="frameBytes"/> behind a zero virtio-net header on ring 1, both
        /// published; laid out by the real driver rings in a copy of the memory file, then scribbled.
        /// </summary>
        public Seed Frames(RingFormat format, VirtioFeatures features, int frames, int frameBytes)
        {
            features &= ~VirtioFeatures.IndirectDescriptors;
            using var region = new NativeRegion(VhostUserTarget.MemoryBytes, GuestBase);
            var memory = new GuestMemory(region.Region);
            var rx = format.CreateDriver(memory, format.Layout(Size).At(GuestBase), Size, features);
            var tx = format.CreateDriver(memory, format.Layout(Size).At(GuestBase + RingStride), Size, features);
            for (var i = 0; i < Size; i++)
            {
                rx.TryAdd(new BufferSegment(GuestBase + BufferOffset + (ulong)(i * BufferBytes), BufferBytes), true, out _);
            }

            var length = 12 + frameBytes;
            for (var i = 0; i < frames; i++)
            {
                var at = BufferOffset + ((Size + i) * BufferBytes);
                var frame = region.Slice((ulong)at, length);
                frame.Clear();
                for (var b = 12; b < length; b++)
                {
                    frame[b] = (byte)(i + b);
                }

                tx.TryAdd(new BufferSegment(GuestBase + (ulong)at, (uint)length), false, out _);
            }

            rx.Publish();
            tx.Publish();
            Scribble(0, region.Slice(0, 2 * RingStride).ToArray());
            return Scribble(BufferOffset + (Size * BufferBytes), region.Slice((ulong)(BufferOffset + (Size * BufferBytes)), frames * BufferBytes).ToArray());
        }

        public byte[] ToArray() => [.. _bytes];

        private Seed Record(byte control, byte[] bytes)
        {
            _bytes.Add(control);
            _bytes.Add((byte)bytes.Length);
            _bytes.Add((byte)(bytes.Length >> 8));
            _bytes.AddRange(bytes);
            return this;
        }
    }
}
