using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using Rings.Chains;
using Rings.Memory;

namespace Rings.Tests.Conformance;

/// <summary>
/// A device counts a buffer's readable bytes when it pops it. A pop given back (UndoPops,
/// UndoNewestPops, as a forwarder does for frames its receive queue has no room for) is popped
/// again later, so its bytes must come off the counter when it is given back: after any mix of
/// pops and undos, each by any of the pop calls, the counter holds every buffer's bytes once.
/// </summary>
public sealed class UndoCountersTests
{
    private const int Size = 64;
    private const ulong Guest = 0x10_0000;
    private const ulong Data = Guest + (64 * 1024);

    /// <summary>One round: how many to pop (at most), with which call, then how many of the newest pops to give back.</summary>
    public sealed record Round(int Pop, int Call, int Undo, bool ByPosition);

    /// <summary>The buffers (segments each), the features, the rounds.</summary>
    public sealed record Case(int[] Segments, int[] Lengths, bool Packed, bool InOrder, Round[] Rounds)
    {
        /// <inheritdoc/>
        public override string ToString() =>
            $"{(Packed ? "packed" : "split")}{(InOrder ? " in-order" : "")} segments {string.Join(",", Segments)} rounds {string.Join(" ", Rounds.Select(r => $"{r.Pop}/{r.Call}/{r.Undo}{(r.ByPosition ? "p" : "")}"))}";
    }

    private static Arbitrary<Case> Cases =>
        (from n in Gen.Choose(1, 40)
         from segments in Gen.Frequency((4, Gen.Constant(1)), (1, Gen.Choose(2, 3))).ArrayOf(n)
         from lengths in Gen.Choose(1, 200).ArrayOf(n)
         from packed in Gen.Elements(false, true)
         from inOrder in Gen.Elements(false, true)
         from rounds in (from pop in Gen.Choose(0, 40)
                         from call in Gen.Choose(0, 2)
                         from undo in Gen.Choose(0, 40)
                         from byPosition in Gen.Elements(false, true)
                         select new Round(pop, call, undo, byPosition)).ArrayOf().Select(r => r.Take(6).ToArray())
         select new Case(segments, lengths, packed, inOrder, rounds)).ToArbitrary();

    [Property(MaxTest = 300)]
    public Property Undone_pops_are_counted_once() =>
        Prop.ForAll(Cases, Run);

    private static void Run(Case c)
    {
        using var native = new NativeRegion(256 * 1024, Guest);
        var memory = new GuestMemory(native.Region);
        var format = c.Packed ? RingFormat.Packed : RingFormat.Split;
        var features = c.InOrder ? VirtioFeatures.InOrder : VirtioFeatures.None;
        var areas = format.Layout(Size).At(Guest);
        var driver = format.CreateDriver(memory, areas, Size, features);
        var device = format.CreateDevice(memory, memory, areas, Size, features, new RingPosition(0));

        // Each buffer readable, of 1 to 3 segments (lists on both rings: no indirect tables), its
        // bytes split over them.
        ulong expected = 0;
        var added = 0;
        for (var i = 0; i < c.Segments.Length; i++)
        {
            var parts = new BufferSegment[c.Segments[i]];
            for (var s = 0; s < parts.Length; s++)
            {
                parts[s] = new BufferSegment(Data + (ulong)(((i * 3) + s) * 256), (uint)(c.Lengths[i] + s));
            }

            if (!driver.TryAdd(parts, [], out _))
            {
                break;
            }

            expected += (ulong)parts.Sum(p => (long)p.Length);
            added++;
        }

        driver.Publish();

        var chains = new PoppedChain[Size];
        var segments = new ChainSegment[Size];
        var tokens = new ChainToken[Size];
        var befores = new Stack<RingPosition>();
        foreach (var round in c.Rounds)
        {
            var want = Math.Min(round.Pop, Size);
            var popped = 0;
            switch (round.Call)
            {
                case 0:
                    while (popped < want)
                    {
                        var before = device.Position;
                        if (!device.TryPop(out _))
                        {
                            break;
                        }

                        befores.Push(before);
                        popped++;
                    }

                    break;
                case 1:
                    popped = device.PopBurst(chains.AsSpan(0, want), segments);
                    for (var i = 0; i < popped; i++)
                    {
                        befores.Push(chains[i].Before);
                    }

                    break;
                default:
                    // Each buffer of one descriptor: the position before each is one further on.
                    var start = device.Position;
                    popped = device.PopSingles(segments.AsSpan(0, want), tokens.AsSpan(0, want));
                    for (var i = 0; i < popped; i++)
                    {
                        befores.Push(c.Packed ? PackedAdvance(start, i) : new RingPosition((ushort)(start.AvailIndex + i)));
                    }

                    break;
            }

            var undo = Math.Min(round.Undo, befores.Count);
            if (undo == 0)
            {
                continue;
            }

            if (round.ByPosition)
            {
                RingPosition before = default;
                for (var i = 0; i < undo; i++)
                {
                    before = befores.Pop();
                }

                device.UndoPops(before);
            }
            else
            {
                for (var i = 0; i < undo; i++)
                {
                    befores.Pop();
                }

                device.UndoNewestPops(undo);
            }
        }

        // The rest, one at a time: every buffer popped once more than it was given back.
        while (device.TryPop(out _))
        {
        }

        Assert.False(device.IsBroken);
        Assert.Equal(0, device.Counters.Packets); // counted when returned, and none was
        Assert.Equal((long)expected, device.Counters.Bytes);
    }

    private static RingPosition PackedAdvance(RingPosition start, int descriptors)
    {
        var index = start.AvailIndex + descriptors;
        var wrap = start.AvailWrapCounter;
        if (index >= Size)
        {
            index -= Size;
            wrap = !wrap;
        }

        return new RingPosition((ushort)index, wrap, start.UsedIndex, start.UsedWrapCounter);
    }
}
