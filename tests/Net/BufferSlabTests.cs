using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using Rings.Linux.Driver;
using Rings.Memory;

namespace Rings.Tests.Net;

/// <summary>
/// The buffer slab against a model: a stack (last in, first out) or a queue (first in, first out)
/// of free buffer indices, every buffer handed out at most once, and bad returns refused.
/// </summary>
public sealed class BufferSlabTests : IDisposable
{
    private const ulong Base = 0x7000_0000;
    private readonly NativeRegion _region = new(1 << 20, Base);

    public void Dispose() => _region.Dispose();

    [Property(MaxTest = 200)]
    public Property TakesAndReturnsFollowTheModel(bool firstInFirstOut) =>
        Prop.ForAll(
            Gen.Choose(1, 16).SelectMany(count => Gen.ListOf(Gen.Choose(0, 3)).Select(ops => (count, ops))).ToArbitrary(),
            t =>
            {
                var (count, ops) = t;
                var slab = new BufferSlab(new GuestMemory(_region.Region), Base, count, 64, firstInFirstOut);
                var free = new LinkedList<int>();
                for (var i = 0; i < count; i++)
                {
                    // As built: the stack's top (the list's last) is buffer 0; the queue's front (its first) is the highest.
                    free.AddLast(count - 1 - i);
                }

                var held = new List<int>();
                foreach (var op in ops)
                {
                    if (op < 2)
                    {
                        var took = slab.TryTake(out var index);
                        Assert.Equal(free.Count > 0, took);
                        if (took)
                        {
                            // Model: the stack's top is the list's last, the queue's front its first.
                            var expected = firstInFirstOut ? free.First!.Value : free.Last!.Value;
                            if (firstInFirstOut)
                            {
                                free.RemoveFirst();
                            }
                            else
                            {
                                free.RemoveLast();
                            }

                            Assert.Equal(expected, index);
                            held.Add(index);
                        }
                    }
                    else if (op == 3)
                    {
                        // A burst take hands out what as many single takes would, in that order.
                        var slots = new int[(held.Count % 5) + 1];
                        var took = slab.TakeBurst(slots);
                        Assert.Equal(Math.Min(slots.Length, free.Count), took);
                        for (var k = 0; k < took; k++)
                        {
                            var expected = firstInFirstOut ? free.First!.Value : free.Last!.Value;
                            if (firstInFirstOut)
                            {
                                free.RemoveFirst();
                            }
                            else
                            {
                                free.RemoveLast();
                            }

                            Assert.Equal(expected, slots[k]);
                            held.Add(slots[k]);
                        }
                    }
                    else if (held.Count > 0)
                    {
                        var index = held[0];
                        held.RemoveAt(0);
                        slab.Return(index);
                        free.AddLast(index);
                    }

                    Assert.Equal(free.Count, slab.FreeCount);

                    // PeekFree(k) names the buffer the k-th next take hands out.
                    var next = firstInFirstOut ? free.ToList() : free.Reverse().ToList();
                    for (var k = 0; k <= next.Count; k++)
                    {
                        Assert.Equal(k < next.Count ? next[k] : -1, slab.PeekFree(k));
                    }
                }

                Assert.Throws<ArgumentOutOfRangeException>(() => slab.Return(count));
                if (held.Count == 0)
                {
                    Assert.Throws<ArgumentOutOfRangeException>(() => slab.Return(0));
                }
            });

    [Fact]
    public void AQueueGivesBuffersBackInTheOrderTheyCameHomeRoundTheArray()
    {
        var slab = new BufferSlab(new GuestMemory(_region.Region), Base, 4, 64, firstInFirstOut: true);
        var order = new List<int>();
        for (var round = 0; round < 10; round++)
        {
            Assert.True(slab.TryTake(out var a));
            Assert.True(slab.TryTake(out var b));
            Assert.True(slab.TryTake(out var c));
            slab.Return(b);
            slab.Return(a);
            slab.Return(c);
            order.AddRange([a, b, c]);
        }

        // The fourth buffer, never returned out of turn, comes out every fourth take.
        Assert.Equal(4, order.Distinct().Count());
        Assert.Equal(4, slab.FreeCount);
    }
}
