using System.Buffers.Binary;
using Rings.Chains;

namespace Rings.Tests.Packed;

/// <summary>
/// Many laps of random traffic on odd ring sizes against a plain model: the device pops exactly
/// what the driver added, in order, with the same segments; the driver takes back exactly what the
/// device returned, in the order it returned them, with the lengths it wrote.
/// </summary>
public class PackedModelTests
{
    [Theory]
    [InlineData(1, 20000, false)]
    [InlineData(3, 5000, false)]
    [InlineData(3, 5000, true)]
    [InlineData(255, 2000, false)]
    [InlineData(255, 1000, true)]
    [InlineData(1000, 1000, false)]
    public void Thousands_of_laps_against_a_fifo_model(int size, int laps, bool inOrder)
    {
        var features = VirtioFeatures.EventIndex | VirtioFeatures.IndirectDescriptors | (inOrder ? VirtioFeatures.InOrder : 0);
        using var rig = new PackedRig(size, features, indirectEntries: 2);
        var model = new Model(rig, new Random((size * 31) + laps + (inOrder ? 1 : 0)));
        var target = (long)laps * size;
        var guard = 0L;
        while (model.DescriptorsTaken < target)
        {
            Assert.True(++guard < target * 4, "no progress");
            model.Step();
        }

        Assert.False(rig.Driver.IsBroken);
        Assert.False(rig.Device.IsBroken);
        Assert.True(model.DescriptorsTaken >= target);
        // The driver counts a buffer made available, the device one returned.
        Assert.Equal(rig.Driver.Counters.Packets, rig.Device.Counters.Packets + model.Unpopped + model.InFlight);
    }

    private sealed class Model(PackedRig rig, Random random)
    {
        private readonly Queue<Sent> _added = new();         // made available, not yet popped
        private readonly List<(ChainToken Token, Sent Sent)> _inFlight = [];
        private readonly Queue<(Sent Sent, uint Written)> _returned = new(); // pushed, in push order
        private readonly Stack<int> _freeGroups = new(Enumerable.Range(0, rig.Size).Reverse());
        private readonly bool _inOrder = (rig.Features & VirtioFeatures.InOrder) != 0;
        private long _sequence;

        public long DescriptorsTaken { get; private set; }

        public int Unpopped => _added.Count;

        public int InFlight => _inFlight.Count;

        public void Step()
        {
            Add();
            Pop();
            Push();
            Take();
        }

        private void Add()
        {
            var burst = random.Next(1, Math.Min(rig.Size, 32) + 1);
            for (var b = 0; b < burst && _freeGroups.Count > 0; b++)
            {
                var segments = rig.Size >= 3 ? random.Next(1, 4) : 1;
                var readable = random.Next(segments + 1);
                var group = _freeGroups.Pop();
                var lengths = new uint[segments];
                var r = new BufferSegment[readable];
                var w = new BufferSegment[segments - readable];
                var seq = ++_sequence;
                for (var i = 0; i < segments; i++)
                {
                    lengths[i] = (uint)random.Next(8, PackedRig.SlotBytes + 1);
                    var slot = (group * PackedRig.SlotsPerId) + i;
                    var s = rig.Slot(slot, lengths[i]);
                    if (i < readable)
                    {
                        BinaryPrimitives.WriteInt64LittleEndian(rig.SlotBytesOf(slot), seq + i);
                        r[i] = s;
                    }
                    else
                    {
                        rig.SlotBytesOf(slot).Clear();
                        w[i - readable] = s;
                    }
                }

                if (!rig.Driver.TryAdd(r, w, out var id))
                {
                    Assert.True(rig.Driver.FreeDescriptors < segments, "TryAdd failed with room");
                    _freeGroups.Push(group);
                    break;
                }

                _added.Enqueue(new Sent(id, seq, group, lengths, readable));
            }

            rig.Driver.Publish();
            rig.Driver.KickNeeded();
        }

        private void Pop()
        {
            var want = random.Next(_added.Count + 2);
            for (var i = 0; i < want; i++)
            {
                if (!rig.Device.TryPop(out var chain))
                {
                    Assert.Empty(_added);
                    return;
                }

                var sent = _added.Dequeue();
                Assert.Equal(sent.Id, chain.Token.Id);
                Assert.Equal(sent.Lengths.Length, chain.Segments.Length);
                Assert.Equal(sent.Readable, chain.ReadableCount);
                for (var s = 0; s < sent.Lengths.Length; s++)
                {
                    var segment = chain.Segments[s];
                    Assert.Equal(sent.Lengths[s], segment.Length);
                    if (s < sent.Readable)
                    {
                        Assert.Equal(sent.Sequence + s, BinaryPrimitives.ReadInt64LittleEndian(segment.Span));
                    }
                    else
                    {
                        BinaryPrimitives.WriteInt64LittleEndian(segment.Span, -sent.Sequence);
                    }
                }

                // A list of n segments takes n ring descriptors, or one when it went indirect.
                var expected = sent.Lengths.Length <= rig.IndirectEntries ? 1 : sent.Lengths.Length;
                Assert.Equal(expected, chain.Token.DescriptorCount);
                _inFlight.Add((chain.Token, sent));
            }

            rig.Device.EnableAvailNotifications();
            rig.Device.DisableAvailNotifications();
        }

        private void Push()
        {
            if (_inFlight.Count == 0)
            {
                return;
            }

            if (_inOrder)
            {
                // Whole batches, in order, one used descriptor each, or one by one.
                var n = random.Next(1, _inFlight.Count + 1);
                if (random.Next(2) == 0)
                {
                    // The buffers before the last count as used completely (2.8.8).
                    var lastWritten = Written(_inFlight[n - 1].Sent);
                    for (var i = 0; i < n; i++)
                    {
                        var sent = _inFlight[i].Sent;
                        _returned.Enqueue((sent, i == n - 1 ? lastWritten : sent.WritableBytes));
                    }

                    rig.Device.PushUsedInOrderBatch(_inFlight[n - 1].Token, lastWritten, n);
                }
                else
                {
                    for (var i = 0; i < n; i++)
                    {
                        var written = Written(_inFlight[i].Sent);
                        rig.Device.PushUsed(_inFlight[i].Token, written);
                        _returned.Enqueue((_inFlight[i].Sent, written));
                    }
                }

                _inFlight.RemoveRange(0, n);
            }
            else
            {
                // Any order: the device completes out of order.
                var n = random.Next(_inFlight.Count + 1);
                for (var i = 0; i < n; i++)
                {
                    var pick = random.Next(_inFlight.Count);
                    var (token, sent) = _inFlight[pick];
                    _inFlight.RemoveAt(pick);
                    var written = Written(sent);
                    rig.Device.PushUsed(token, written);
                    _returned.Enqueue((sent, written));
                }
            }

            rig.Device.PublishUsed();
            rig.Device.CallNeeded();
        }

        private void Take()
        {
            rig.Driver.EnableUsedNotifications();
            rig.Driver.DisableUsedNotifications();
            while (rig.Driver.TryTakeUsed(out var used))
            {
                Assert.NotEmpty(_returned);
                var (sent, written) = _returned.Dequeue();
                Assert.Equal(sent.Id, used.Id);
                Assert.Equal(written, used.Length);
                if (sent.Readable < sent.Lengths.Length)
                {
                    var slot = (sent.Group * PackedRig.SlotsPerId) + sent.Readable;
                    Assert.Equal(-sent.Sequence, BinaryPrimitives.ReadInt64LittleEndian(rig.SlotBytesOf(slot)));
                }

                DescriptorsTaken += sent.Lengths.Length <= rig.IndirectEntries ? 1 : sent.Lengths.Length;
                _freeGroups.Push(sent.Group);
            }

            Assert.Empty(_returned);
            Assert.Equal(_added.Count + _inFlight.Count, rig.Driver.Outstanding);
        }

        private uint Written(Sent sent) => sent.WritableBytes == 0 ? 0 : (uint)random.Next((int)sent.WritableBytes + 1);
    }

    private sealed record Sent(ushort Id, long Sequence, int Group, uint[] Lengths, int Readable)
    {
        public uint WritableBytes => (uint)Lengths.Skip(Readable).Sum(l => l);
    }
}
