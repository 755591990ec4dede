using System.Buffers.Binary;
using Rings.Fuzz.Targets;
using NetOp = Rings.Fuzz.Targets.NetReceiveTarget.Op;
using Op = Rings.Fuzz.Targets.SplitRingOpsTarget.Op;

namespace Rings.Fuzz;

/// <summary>
/// The hand-made seed corpora, built from the targets' input formats so each seed means something:
/// a valid chain, an indirect chain, a loop, an index wrap, a hostile length. Written once into
/// fuzz/corpus/ with <c>--seeds</c>; the files are what the repository keeps and the tests replay.
/// </summary>
internal static class Seeds
{
    private const ushort Next = 1;
    private const ushort Write = 2;
    private const ushort Indirect = 4;

    public static IEnumerable<(string Target, string Name, byte[] Bytes)> All()
    {
        foreach (var (name, bytes) in SplitChain())
        {
            yield return ("split-chain", name, bytes);
        }

        foreach (var (name, bytes) in PackedChain())
        {
            yield return ("packed-chain", name, bytes);
        }

        foreach (var (name, bytes) in SplitOps())
        {
            yield return ("split-ops", name, bytes);
        }

        foreach (var (name, bytes) in NetReceive())
        {
            yield return ("net-rx", name, bytes);
        }

        foreach (var (name, bytes) in VhostUserSeeds.All())
        {
            yield return ("vhost-user", name, bytes);
        }

        foreach (var (name, bytes) in ForwardSeeds.All())
        {
            yield return ("forward", name, bytes);
        }
    }

    private static IEnumerable<(string, byte[])> SplitChain()
    {
        var s = new ChainSeed(2);
        s.Desc(0, 0x100, 64, Next, 1).Desc(1, 0x200, 128, Write, 0).Avail(1, 0);
        yield return ("valid-readable-writable", s.ToArray());

        s = new ChainSeed(2);
        s.Desc(0, 0x100, 14, 0, 0).Desc(1, 0x200, 1526, Write, 0).Desc(2, 0x800, 12, Next, 3).Desc(3, 0x900, 100, 0, 0).Avail(3, 0, 1, 2);
        yield return ("three-chains", s.ToArray());

        s = new ChainSeed(2, inOrder: true, behaviour: (byte)DrainBehaviour.WriteBuffers);
        s.Desc(0, 0x100, 14, Next, 1).Desc(1, 0x200, 64, Write, 0).Desc(2, 0x300, 64, Write, 0).Avail(2, 0, 2);
        yield return ("in-order", s.ToArray());

        s = new ChainSeed(2, indirect: true);
        s.Desc(0, 0x400, 48, Indirect, 0).Avail(1, 0);
        s.Table(0x400, 0, 0x100, 12, Next, 1).Table(0x400, 1, 0x200, 64, Write | Next, 2).Table(0x400, 2, 0x300, 64, Write, 0);
        yield return ("indirect", s.ToArray());

        s = new ChainSeed(3, indirect: true);
        s.Desc(0, 0x100, 12, Next, 5).Desc(5, 0x400, 32, Indirect, 0).Desc(1, 0x400, 8, 0, 0).Avail(2, 0, 1);
        s.Table(0x400, 0, 0x200, 16, Write | Next, 1).Table(0x400, 1, 0x300, 16, Write, 0);
        yield return ("direct-then-indirect", s.ToArray());

        s = new ChainSeed(2);
        s.Desc(0, 0x100, 8, Next, 1).Desc(1, 0x200, 8, Next, 0).Avail(1, 0);
        yield return ("loop", s.ToArray());

        s = new ChainSeed(2, indirect: true);
        s.Desc(0, 0x400, 32, Indirect, 0).Avail(1, 0);
        s.Table(0x400, 0, 0x100, 8, Next, 1).Table(0x400, 1, 0x200, 8, Next, 0);
        yield return ("indirect-loop", s.ToArray());

        s = new ChainSeed(2, indirect: true);
        s.Desc(0, 0x400, 16, Indirect, 0).Avail(1, 0);
        s.Table(0x400, 0, 0x500, 16, Indirect, 0);
        yield return ("nested-indirect", s.ToArray());

        s = new ChainSeed(2);
        s.Desc(0, 0x400, 16, Indirect, 0).Avail(1, 0);
        yield return ("indirect-not-negotiated", s.ToArray());

        s = new ChainSeed(2, indirect: true);
        s.Desc(0, 0x400, 20, Indirect, 0).Avail(1, 0);
        yield return ("indirect-misaligned", s.ToArray());

        s = new ChainSeed(2);
        s.Desc(0, 0x1FF8, 16, 0, 0).Avail(1, 0);
        yield return ("address-crosses-region-end", s.ToArray());

        s = new ChainSeed(2);
        s.Desc(0, 0xFFFF_FFFF_FFFF_FFF0, 32, 0, 0).Avail(1, 0);
        yield return ("address-wraps", s.ToArray());

        s = new ChainSeed(2);
        s.Desc(0, 0x100, 8, Write | Next, 1).Desc(1, 0x200, 8, 0, 0).Avail(1, 0);
        yield return ("readable-after-writable", s.ToArray());

        s = new ChainSeed(2);
        s.Desc(0, 0x100, 8, Next, 9).Avail(1, 0);
        yield return ("next-out-of-range", s.ToArray());

        s = new ChainSeed(2);
        s.Avail(1, 7);
        yield return ("head-out-of-range", s.ToArray());

        s = new ChainSeed(2);
        s.Desc(0, 0x100, 8, 0, 0).Avail(5, 0, 0, 0, 0);
        yield return ("avail-too-far-ahead", s.ToArray());

        s = new ChainSeed(2, start: 0xFFFE);
        s.Desc(0, 0x100, 8, 0, 0).Desc(1, 0x200, 8, Write, 0).Desc(2, 0x300, 8, 0, 0).Avail(0x0001, 0, 1, 2, 0);
        yield return ("index-wrap", s.ToArray());

        s = new ChainSeed(2, behaviour: (byte)(DrainBehaviour.WriteBuffers | DrainBehaviour.PublishEachPop));
        s.Desc(0, SplitChainTarget.AvailAddress + 4, 8, Write, 0).Desc(1, SplitChainTarget.DescriptorAddress, 64, Write, 0).Desc(2, 0x300, 8, 0, 0).Avail(3, 0, 1, 2);
        yield return ("writes-alias-ring", s.ToArray());

        s = new ChainSeed(2, eventIndex: true, behaviour: 4 | 8);
        s.Desc(0, 0x100, 8, 0, 0).Avail(1, 0);
        yield return ("event-index", s.ToArray());

        s = new ChainSeed(4);
        for (var i = 0; i < 16; i++)
        {
            s.Desc(i, 0x100 + (ulong)(i * 0x40), 0x40, (ushort)(i % 4 == 3 ? Write : Next | (i % 4 == 2 ? Write : 0)), (ushort)(i + 1));
        }

        s.Avail(4, 0, 4, 8, 12);
        yield return ("full-ring-of-16", s.ToArray());

        s = new ChainSeed(3);
        for (var i = 0; i < 8; i++)
        {
            s.Desc(i, 0x100, 8, Next, (ushort)(i + 1));
        }

        s.Desc(7, 0x100, 8, Next, 0).Avail(1, 0);
        yield return ("queue-long-chain-loops-back", s.ToArray());

        s = new ChainSeed(0);
        s.Desc(0, 0x100, 0, 0, 0).Avail(1, 0);
        yield return ("size-one-empty-segment", s.ToArray());
    }

    private static IEnumerable<(string, byte[])> PackedChain()
    {
        // Sizes index PackedChainTarget.Sizes: 3 = 4 descriptors, 5 = 8, 6 = 17.
        const ushort Avail = 1 << 7;
        const ushort Used = 1 << 15;
        var s = new PackedSeed(3);
        s.Desc(0, 0x100, 64, 0, Avail);
        yield return ("single-readable", s.ToArray());

        s = new PackedSeed(3);
        s.Desc(0, 0x100, 14, 0, Avail | Next).Desc(1, 0x200, 1526, 0, Avail | Write | Next).Desc(2, 0x800, 64, 2, Avail | Write).Desc(3, 0x900, 8, 3, Avail);
        yield return ("list-then-single", s.ToArray());

        s = new PackedSeed(3, indirect: true);
        s.Desc(0, 0x400, 48, 1, Avail | Indirect).Desc(1, 0x300, 8, 0, Avail);
        s.Table(0x400, 0, 0x100, 12, 0).Table(0x400, 1, 0x200, 64, Write).Table(0x400, 2, 0x300, 64, Write);
        yield return ("indirect", s.ToArray());

        s = new PackedSeed(3, start: 3);
        s.Desc(3, 0x100, 8, 0, Avail | Next).Desc(0, 0x200, 8, 1, Used | Write).Desc(1, 0x300, 8, 2, Used);
        yield return ("list-across-the-wrap", s.ToArray());

        s = new PackedSeed(3, start: 0x8000);
        s.Desc(0, 0x100, 8, 0, Used).Desc(1, 0x200, 8, 1, Used | Write);
        yield return ("wrap-counter-zero", s.ToArray());

        s = new PackedSeed(3);
        s.Desc(0, 0x100, 8, 9, Avail);
        yield return ("buffer-id-out-of-range", s.ToArray());

        s = new PackedSeed(3);
        s.Desc(0, 0x100, 8, 1, Avail).Desc(1, 0x200, 8, 1, Avail);
        yield return ("buffer-id-reused-after-push", s.ToArray());

        s = new PackedSeed(3);
        s.Desc(0, 0x100, 8, 0, Avail | Next).Desc(1, 0x200, 8, 1, 0);
        yield return ("list-member-not-available", s.ToArray());

        s = new PackedSeed(3);
        for (var i = 0; i < 4; i++)
        {
            s.Desc(i, 0x100, 8, (ushort)i, Avail | Next);
        }

        yield return ("list-longer-than-ring", s.ToArray());

        s = new PackedSeed(3, indirect: true);
        s.Desc(0, 0x400, 16, 0, Avail | Indirect);
        s.Table(0x400, 0, 0x500, 16, Indirect);
        yield return ("nested-indirect", s.ToArray());

        s = new PackedSeed(3, indirect: true);
        s.Desc(0, 0x400, 16, 0, Avail | Indirect | Next).Desc(1, 0x200, 8, 1, Avail);
        yield return ("indirect-with-next", s.ToArray());

        s = new PackedSeed(3);
        s.Desc(0, 0x400, 16, 0, Avail | Indirect);
        yield return ("indirect-not-negotiated", s.ToArray());

        s = new PackedSeed(3, indirect: true);
        s.Desc(0, 0x400, 24, 0, Avail | Indirect);
        yield return ("indirect-misaligned", s.ToArray());

        s = new PackedSeed(3);
        s.Desc(0, 0x100, 8, 0, Avail | Write | Next).Desc(1, 0x200, 8, 1, Avail);
        yield return ("readable-after-writable", s.ToArray());

        s = new PackedSeed(3);
        s.Desc(0, 0x1FF8, 16, 0, Avail);
        yield return ("address-crosses-region-end", s.ToArray());

        s = new PackedSeed(3, behaviour: (byte)(DrainBehaviour.WriteBuffers | DrainBehaviour.PublishEachPop));
        s.Desc(0, PackedChainTarget.DescriptorAddress + 16, 48, 0, Avail | Write).Desc(1, 0x200, 8, 1, Avail).Desc(2, 0x300, 8, 2, Avail);
        yield return ("writes-alias-ring", s.ToArray());

        s = new PackedSeed(6, inOrder: true);
        for (var i = 0; i < 17; i++)
        {
            s.Desc(i, 0x100 + (ulong)(i * 0x40), 0x40, (ushort)i, (ushort)(Avail | (i % 3 == 2 ? Write : 0)));
        }

        yield return ("in-order-full-ring-of-17", s.ToArray());

        s = new PackedSeed(0, eventIndex: true, behaviour: 4 | 8);
        s.Desc(0, 0x100, 8, 0, Avail);
        yield return ("size-one-event-index", s.ToArray());
    }

    private static IEnumerable<(string, byte[])> SplitOps()
    {
        var s = new OpsSeed(2, false, false, 0);
        s.Add(1, 0, (1, 63)).Add(0, 1, (2, 127)).Op(Op.Publish).Op(Op.Kick).Pop().Pop().Push(0, 0).Push(0, 100).Op(Op.PublishUsed).Op(Op.Call).Op(Op.Take).Op(Op.Take);
        yield return ("fifo", s.ToArray());

        s = new OpsSeed(3, true, false, 0);
        s.Add(2, 2, (1, 11), (2, 99), (3, 63), (4, 63)).Add(1, 1, (5, 13), (6, 200)).Add(3, 3, (1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (6, 6));
        s.Op(Op.Publish).Pop(true).Pop(true).Pop(true).Push(2, 9).Push(0, 500).Push(0, 1).Op(Op.PublishUsed).Op(Op.Take).Op(Op.Take).Op(Op.Take);
        yield return ("indirect-and-direct", s.ToArray());

        s = new OpsSeed(2, false, true, 0xFFF0);
        for (var i = 0; i < 24; i++)
        {
            s.Add(1, 1, (1, 10), (2, 20)).Op(Op.Publish).Op(Op.Kick).Pop().Push(0, 20).Op(Op.PublishUsed).Op(Op.Call).Op(Op.Take);
        }

        yield return ("wrap-event-index", s.ToArray());

        s = new OpsSeed(2, false, true, 0x7FFE);
        s.Notify(Op.DriverNotifications, true).Notify(Op.DeviceNotifications, true).Add(0, 1, (1, 40)).Op(Op.Publish).Op(Op.Kick)
            .Notify(Op.DeviceNotifications, false).Notify(Op.DeviceNotifications, true).Pop().Push(0, 40).Op(Op.PublishUsed).Op(Op.Call)
            .Notify(Op.DriverNotifications, false).Notify(Op.DriverNotifications, true).Op(Op.Take);
        yield return ("notifications", s.ToArray());

        s = new OpsSeed(2, false, false, 0);
        s.Add(1, 0, (1, 8)).Add(1, 0, (2, 8)).Add(1, 0, (3, 8)).Op(Op.Publish).Op(Op.Mark).Pop().Pop().Op(Op.Undo).Pop().Pop().Pop().Push(1, 0).Push(0, 0).Push(0, 0).Op(Op.PublishUsed).Op(Op.Take).Op(Op.Take).Op(Op.Take);
        yield return ("undo", s.ToArray());

        s = new OpsSeed(2, false, false, 0);
        s.Add(1, 0, (1, 8)).Add(1, 0, (2, 8)).Add(1, 0, (3, 8)).Add(1, 0, (4, 8)).Add(1, 0, (5, 8)).Op(Op.Publish).Pop().Pop().Pop().Pop().Pop()
            .Push(3, 0).Push(0, 0).Op(Op.PublishUsed).Op(Op.Take).Add(1, 0, (6, 8)).Op(Op.Take).Add(0, 3, (1, 1), (2, 2), (3, 3)).Add(0, 2, (1, 1), (2, 2));
        yield return ("full-ring", s.ToArray());

        s = new OpsSeed(2, false, false, 0);
        s.Add(1, 1, (1, 8), (2, 8)).Op(Op.Publish).Corrupt(14, 0x00, 0x00).Pop().Pop();
        yield return ("corrupt-next", s.ToArray());

        s = new OpsSeed(2, false, false, 0);
        s.Add(1, 0, (1, 8)).Op(Op.Publish).Pop().Push(0, 0).Op(Op.PublishUsed).Corrupt((ushort)(RingFormat.Split.Layout(4).DeviceAreaOffset + 4), 3, 0, 0, 0, 0xFF, 0xFF, 0, 0).Op(Op.Take).Op(Op.Take);
        yield return ("corrupt-used-element", s.ToArray());

        s = new OpsSeed(2, false, false, 0);
        s.Add(1, 0, (1, 8)).Op(Op.Publish).Corrupt((ushort)(RingFormat.Split.Layout(4).DriverAreaOffset + 2), 0x40, 0x00).Pop().Pop().Reset(0x1234)
            .Add(1, 0, (1, 8)).Op(Op.Publish).Pop().Push(0, 0).Op(Op.PublishUsed).Op(Op.Take);
        yield return ("corrupt-avail-then-reset", s.ToArray());

        s = new OpsSeed(7, true, true, 0xFF00);
        for (var i = 0; i < 40; i++)
        {
            s.Add((byte)(i % 3), (byte)(1 + (i % 2)), (1, 8), (2, 8), (3, 8), (4, 8));
        }

        s.Op(Op.Publish);
        for (var i = 0; i < 40; i++)
        {
            s.Pop(true).Push(0, 16);
        }

        s.Op(Op.PublishUsed);
        for (var i = 0; i < 40; i++)
        {
            s.Op(Op.Take);
        }

        yield return ("size-128-burst", s.ToArray());

        // IN_ORDER: single returns, then a batch of two returned with one used element.
        s = new OpsSeed(3, false, true, 0xFFFC, inOrder: true);
        for (var i = 0; i < 5; i++)
        {
            s.Add(1, 1, ((byte)(i + 1), 16), ((byte)(i + 10), 64));
        }

        s.Op(Op.Publish).Op(Op.Kick).Pop().Pop(true).Pop().Pop().Pop().Push(0, 10).Push(0, 64).Op(Op.PublishUsed).Op(Op.Call).Op(Op.Take).Op(Op.Take)
            .Push(1 << 4, 5).Op(Op.PublishUsed).Op(Op.Take).Op(Op.Take).Op(Op.Take).Notify(Op.DriverNotifications, true);
        yield return ("in-order-batch", s.ToArray());

        // IN_ORDER with indirect tables, across the u16 wrap, descriptors freed in ring order.
        s = new OpsSeed(2, true, false, 0xFFFE, inOrder: true);
        for (var i = 0; i < 6; i++)
        {
            s.Add(2, 1, (1, 8), (2, 8), (3, 32)).Add(1, 0, (4, 8)).Op(Op.Publish).Pop().Pop().Push(1 << 4, 32).Op(Op.PublishUsed).Op(Op.Take).Op(Op.Take);
        }

        yield return ("in-order-indirect-wrap", s.ToArray());

        // IN_ORDER, then a scribble over the used ring: a batch naming a buffer out of order.
        s = new OpsSeed(2, false, false, 0, inOrder: true);
        s.Add(1, 0, (1, 8)).Add(1, 0, (2, 8)).Op(Op.Publish).Pop().Pop().Push(0, 0).Op(Op.PublishUsed)
            .Corrupt((ushort)(RingFormat.Split.Layout(4).DeviceAreaOffset + 4), 7, 1, 0, 0, 0, 0, 0, 0).Op(Op.Take).Op(Op.Take);
        yield return ("in-order-scribbled-used", s.ToArray());
    }

    private static IEnumerable<(string, byte[])> NetReceive()
    {
        // Config: size exponent bits 0-1 (+1), MRG_RXBUF bit 2, buffer size bits 3-4, extra buffers bits 5-6, EVENT_IDX bit 7.
        var s = new NetSeed(2 | (3 << 3));
        s.Deliver(4, 60).Deliver(4, 100).Deliver(4, 0).Receive(255).Receive(4).Receive(255).Op(NetOp.Refill).Receive(255);
        yield return ("single-buffer-frames", s.ToArray());

        s = new NetSeed(2 | 4 | (1 << 3));
        s.Deliver(0, 150).Deliver(0, 20).Op(NetOp.PublishUsed).Receive(255).Receive(255).Op(NetOp.Refill).Deliver(4, 300).Receive(255);
        yield return ("mergeable-frames", s.ToArray());

        s = new NetSeed(1 | 4 | (1 << 3) | (1 << 5) | 128);
        s.Deliver(4, 40).Op(NetOp.ReceiveInPlace).Deliver(4, 100).Op(NetOp.ReceiveInPlace).Op(NetOp.Release).Op(NetOp.ReceiveInPlace).Receive(255).Op(NetOp.Refill).Op(NetOp.Release);
        yield return ("in-place", s.ToArray());

        s = new NetSeed(2 | 4 | (1 << 3));
        s.Deliver(4 | 1, 30, numBuffers: 0).Deliver(4 | 1, 30, numBuffers: 1000).Deliver(4 | 1, 30, numBuffers: 3).Receive(255).Receive(255).Receive(255);
        yield return ("bad-num-buffers", s.ToArray());

        s = new NetSeed(2 | (3 << 3));
        s.Deliver(4 | 2, 30, length: 5).Deliver(4 | 2, 30, length: 0xFFFF_FFFF).Deliver(4 | 2, 30, length: 12).Receive(255).Receive(255).Receive(255);
        yield return ("bad-used-length", s.ToArray());

        s = new NetSeed(2 | 4 | (1 << 3));
        s.Deliver(0, 30).RawUsedElement(0, 99, 40).RawUsedIndex(1).Receive(255).Deliver(4, 30).Receive(255);
        yield return ("raw-used-ring", s.ToArray());

        s = new NetSeed(2 | 4 | (1 << 3));
        s.Deliver(4, 30).Scribble(0, 10, 0xFF, 0xFF).Scribble(3, 10, 0x02, 0x00).Receive(255).Op(NetOp.ReceiveInPlace).Op(NetOp.Release);
        yield return ("scribbled-header", s.ToArray());

        s = new NetSeed(0 | 4);
        s.Deliver(4, 100).Receive(255).Op(NetOp.Refill).Deliver(4, 40).Receive(2);
        yield return ("starved-and-truncated", s.ToArray());
    }

    private sealed class ChainSeed
    {
        private readonly int _size;
        private readonly byte[] _header;
        private readonly byte[] _desc;
        private readonly byte[] _avail;
        private readonly byte[] _data = new byte[SplitChainTarget.DataBytes];

        public ChainSeed(int shift, bool indirect = false, bool eventIndex = false, ushort start = 0, byte behaviour = 0, bool inOrder = false)
        {
            _size = 1 << shift;
            _header = new byte[SplitChainTarget.HeaderBytes];
            _header[0] = (byte)(shift | (indirect ? 8 : 0) | (eventIndex ? 16 : 0) | (inOrder ? 32 : 0));
            BinaryPrimitives.WriteUInt16LittleEndian(_header.AsSpan(1), start);
            BinaryPrimitives.WriteUInt16LittleEndian(_header.AsSpan(3), start);
            _header[5] = behaviour;
            _desc = new byte[16 * _size];
            _avail = new byte[6 + (2 * _size)];
        }

        public ChainSeed Desc(int index, ulong address, uint length, ushort flags, ushort next)
        {
            Descriptor(_desc.AsSpan(index * 16), address, length, flags, next);
            return this;
        }

        public ChainSeed Table(ulong tableAddress, int index, ulong address, uint length, ushort flags, ushort next)
        {
            Descriptor(_data.AsSpan((int)(tableAddress - SplitChainTarget.DataAddress) + (index * 16)), address, length, flags, next);
            return this;
        }

        public ChainSeed Avail(ushort index, params ushort[] heads)
        {
            BinaryPrimitives.WriteUInt16LittleEndian(_avail.AsSpan(2), index);
            var start = BinaryPrimitives.ReadUInt16LittleEndian(_header.AsSpan(1));
            for (var i = 0; i < heads.Length; i++)
            {
                BinaryPrimitives.WriteUInt16LittleEndian(_avail.AsSpan(4 + (((start + i) & (_size - 1)) * 2)), heads[i]);
            }

            return this;
        }

        public byte[] ToArray()
        {
            var data = _data.AsSpan(0, _data.AsSpan().LastIndexOfAnyExcept((byte)0) + 1);
            return [.. _header, .. _desc, .. _avail, .. data];
        }

        private static void Descriptor(Span<byte> d, ulong address, uint length, ushort flags, ushort next)
        {
            BinaryPrimitives.WriteUInt64LittleEndian(d, address);
            BinaryPrimitives.WriteUInt32LittleEndian(d[8..], length);
            BinaryPrimitives.WriteUInt16LittleEndian(d[12..], flags);
            BinaryPrimitives.WriteUInt16LittleEndian(d[14..], next);
        }
    }

    private sealed class PackedSeed
    {
        private readonly byte[] _header = new byte[PackedChainTarget.HeaderBytes];
        private readonly byte[] _desc;
        private readonly byte[] _driverArea = new byte[4];
        private readonly byte[] _data = new byte[PackedChainTarget.DataBytes];

        public PackedSeed(int pick, bool indirect = false, bool eventIndex = false, bool inOrder = false, ushort start = 0, byte behaviour = 0)
        {
            _header[0] = (byte)(pick | (indirect ? 8 : 0) | (eventIndex ? 16 : 0) | (inOrder ? 32 : 0));
            BinaryPrimitives.WriteUInt16LittleEndian(_header.AsSpan(1), start);
            _header[3] = behaviour;
            _desc = new byte[16 * PackedChainTarget.Sizes[pick]];
        }

        public PackedSeed Desc(int index, ulong address, uint length, ushort id, int flags)
        {
            Descriptor(_desc.AsSpan(index * 16), address, length, id, (ushort)flags);
            return this;
        }

        public PackedSeed Table(ulong tableAddress, int index, ulong address, uint length, int flags)
        {
            Descriptor(_data.AsSpan((int)(tableAddress - PackedChainTarget.DataAddress) + (index * 16)), address, length, 0, (ushort)flags);
            return this;
        }

        public byte[] ToArray()
        {
            var data = _data.AsSpan(0, _data.AsSpan().LastIndexOfAnyExcept((byte)0) + 1);
            return [.. _header, .. _desc, .. _driverArea, .. data];
        }

        private static void Descriptor(Span<byte> d, ulong address, uint length, ushort id, ushort flags)
        {
            BinaryPrimitives.WriteUInt64LittleEndian(d, address);
            BinaryPrimitives.WriteUInt32LittleEndian(d[8..], length);
            BinaryPrimitives.WriteUInt16LittleEndian(d[12..], id);
            BinaryPrimitives.WriteUInt16LittleEndian(d[14..], flags);
        }
    }

    private sealed class OpsSeed
    {
        private readonly List<byte> _bytes = [];

        public OpsSeed(int shift, bool indirect, bool eventIndex, ushort start, bool inOrder = false)
        {
            _bytes.Add((byte)(shift | (indirect ? 8 : 0) | (eventIndex ? 16 : 0) | (inOrder ? 32 : 0)));
            U16(start);
        }

        public OpsSeed Op(Op op)
        {
            _bytes.Add((byte)op);
            return this;
        }

        public OpsSeed Add(byte readable, byte writable, params (byte Offset, byte Length)[] segments)
        {
            Op(Targets.SplitRingOpsTarget.Op.Add);
            _bytes.Add((byte)(readable | (writable << 2)));
            foreach (var (offset, length) in segments.AsSpan(0, Math.Max(1, readable + writable)))
            {
                _bytes.Add(offset);
                _bytes.Add(length);
            }

            return this;
        }

        public OpsSeed Pop(bool write = false)
        {
            Op(Targets.SplitRingOpsTarget.Op.Pop);
            _bytes.Add(write ? (byte)1 : (byte)0);
            return this;
        }

        public OpsSeed Push(byte which, ushort written)
        {
            Op(Targets.SplitRingOpsTarget.Op.Push);
            _bytes.Add(which);
            U16(written);
            return this;
        }

        public OpsSeed Notify(Op op, bool enable)
        {
            Op(op);
            _bytes.Add(enable ? (byte)1 : (byte)0);
            return this;
        }

        public OpsSeed Corrupt(ushort offset, params byte[] bytes)
        {
            Op(Targets.SplitRingOpsTarget.Op.Corrupt);
            U16(offset);
            _bytes.Add((byte)(bytes.Length - 1));
            _bytes.AddRange(bytes);
            return this;
        }

        public OpsSeed Reset(ushort start)
        {
            Op(Targets.SplitRingOpsTarget.Op.Reset);
            U16(start);
            return this;
        }

        public byte[] ToArray() => [.. _bytes];

        private void U16(ushort v)
        {
            _bytes.Add((byte)v);
            _bytes.Add((byte)(v >> 8));
        }
    }

    private sealed class NetSeed
    {
        private readonly List<byte> _bytes = [];

        public NetSeed(int config) => _bytes.Add((byte)config);

        public NetSeed Op(NetOp op)
        {
            _bytes.Add((byte)op);
            return this;
        }

        public NetSeed Deliver(byte mode, ushort payload, ushort numBuffers = 0, uint length = 0)
        {
            Op(NetOp.Deliver);
            _bytes.Add(mode);
            U16(payload);
            _bytes.Add(0); // flags
            U16(0);        // csum_start
            if ((mode & 1) != 0)
            {
                U16(numBuffers);
            }

            if ((mode & 2) != 0)
            {
                U16((ushort)length);
                U16((ushort)(length >> 16));
            }

            return this;
        }

        public NetSeed Receive(byte size)
        {
            Op(NetOp.Receive);
            _bytes.Add(size);
            return this;
        }

        public NetSeed RawUsedElement(byte slot, uint id, uint length)
        {
            Op(NetOp.RawUsedElement);
            _bytes.Add(slot);
            U16((ushort)id);
            U16((ushort)(id >> 16));
            U16((ushort)length);
            U16((ushort)(length >> 16));
            return this;
        }

        public NetSeed RawUsedIndex(ushort index)
        {
            Op(NetOp.RawUsedIndex);
            U16(index);
            return this;
        }

        public NetSeed Scribble(byte buffer, byte offset, params byte[] bytes)
        {
            Op(NetOp.ScribbleBuffer);
            _bytes.Add(buffer);
            _bytes.Add(offset);
            _bytes.AddRange(bytes);
            _bytes.AddRange(new byte[4 - bytes.Length]);
            return this;
        }

        public byte[] ToArray() => [.. _bytes];

        private void U16(ushort v)
        {
            _bytes.Add((byte)v);
            _bytes.Add((byte)(v >> 8));
        }
    }
}
