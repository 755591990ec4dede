using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using Rings.Chains;
using Rings.Memory;

namespace Rings.Tests.Conformance;

/// <summary>
/// The device's burst pop translates a run of direct descriptors against the memory table's
/// largest region alone and leaves any other buffer to its general walk, which searches the whole
/// table. Over a table of two regions, the larger one not first by address, a burst of buffers in
/// either region (in any mix, writable or not, IN_ORDER or not, both ring formats) must pop whole,
/// each segment pointing at the right bytes; a buffer in memory the driver has and the device does
/// not must break the queue there, with everything before it popped. PopSingles, whose run and walk
/// are the same code with a smaller record, must do the same.
/// </summary>
public sealed class PopRegionsTests
{
    private const int Size = 64;
    private const ulong Block = 64 * 1024;
    private const ulong Large = 0x40_0000;     // 2 blocks: the rings, then buffers
    private const ulong Small = 0x10_0000;     // 1 block, below the large one
    private const ulong DriverOnly = 0x80_0000; // 1 block the device does not map

    /// <summary>A burst: where each buffer lies (0 large, 1 small), one outside the device's table or none, writable, features.</summary>
    public sealed record Burst(int[] Places, int Outside, bool Writable, bool InOrder, bool Packed, int PopSpan, bool Singles)
    {
        /// <inheritdoc/>
        public override string ToString() =>
            $"{(Packed ? "packed" : "split")}{(InOrder ? " in-order" : "")}{(Writable ? " writable" : "")} places {string.Join("", Places)} outside at {Outside} pop span {PopSpan}{(Singles ? " singles" : "")}";
    }

    private static Arbitrary<Burst> Bursts =>
        (from n in Gen.Choose(1, Size)
         from places in Gen.Frequency((3, Gen.Constant(0)), (1, Gen.Constant(1))).ArrayOf(n)
         from outside in Gen.Frequency((3, Gen.Constant(-1)), (1, Gen.Choose(0, n - 1)))
         from writable in Gen.Elements(false, true)
         from inOrder in Gen.Elements(false, true)
         from packed in Gen.Elements(false, true)
         from popSpan in Gen.Choose(1, Size)
         from singles in Gen.Elements(false, true)
         select new Burst(places, outside, writable, inOrder, packed, popSpan, singles)).ToArbitrary();

    [Property(MaxTest = 400)]
    public Property A_burst_pops_buffers_from_every_region_and_breaks_at_one_outside() =>
        Prop.ForAll(Bursts, Run);

    private static unsafe void Run(Burst burst)
    {
        using var native = new NativeRegion(4 * Block);
        var host = native.HostAddress;
        var large = new GuestMemoryRegion(Large, 2 * Block, host);
        var small = new GuestMemoryRegion(Small, Block, host + (nint)(2 * Block));
        var driverOnly = new GuestMemoryRegion(DriverOnly, Block, host + (nint)(3 * Block));
        var driverMemory = new GuestMemory([large, small, driverOnly]);
        var deviceMemory = new GuestMemory([small, large]);

        var format = burst.Packed ? RingFormat.Packed : RingFormat.Split;
        var features = burst.InOrder ? VirtioFeatures.InOrder : VirtioFeatures.None;
        var areas = format.Layout(Size).At(Large);
        var driver = format.CreateDriver(driverMemory, areas, Size, features);
        var device = format.CreateDevice(deviceMemory, deviceMemory, areas, Size, features, new RingPosition(0));

        // Buffer i at slot i of its region (64-byte slots, a length that differs per buffer).
        var n = burst.Places.Length;
        var buffers = new BufferSegment[n];
        var expected = new nint[n];
        for (var i = 0; i < n; i++)
        {
            var (guest, mapped) = i == burst.Outside ? (DriverOnly, host + (nint)(3 * Block))
                : burst.Places[i] == 0 ? (Large + Block, host + (nint)Block)
                : (Small, host + (nint)(2 * Block));
            buffers[i] = new BufferSegment(guest + (ulong)(i * 64), (uint)(1 + i));
            expected[i] = mapped + (i * 64);
        }

        var ids = new ushort[n];
        Assert.Equal(n, driver.TryAddBurst(buffers, burst.Writable, ids));
        driver.Publish();

        // Pop in calls of PopSpan chains until the device stops.
        var chains = new PoppedChain[burst.PopSpan];
        var segments = new ChainSegment[burst.PopSpan];
        var tokens = new ChainToken[burst.PopSpan];
        var popped = 0;
        while (popped < n)
        {
            var got = burst.Singles ? device.PopSingles(segments, tokens) : device.PopBurst(chains, segments);
            for (var c = 0; c < got; c++)
            {
                var i = popped + c;
                var segment = segments[c];
                if (burst.Singles)
                {
                    Assert.Equal(new ChainToken(ids[i], 1), tokens[c]);
                }
                else
                {
                    var chain = chains[c];
                    Assert.Equal(ids[i], chain.Token.Id);
                    Assert.Equal(1, chain.SegmentCount);
                    Assert.Equal(c, chain.FirstSegment);
                    Assert.Equal(burst.Writable ? 0UL : buffers[i].Length, chain.ReadableBytes);
                    Assert.Equal(burst.Writable ? buffers[i].Length : 0UL, chain.WritableBytes);
                }

                Assert.Equal(expected[i], (nint)Unsafe.AsPointer(ref MemoryMarshal.GetReference(segment.Span)));
                Assert.Equal(buffers[i].Length, segment.Length);
                Assert.Equal(burst.Writable, segment.IsWritable);
            }

            popped += got;
            if (got == 0)
            {
                break;
            }
        }

        if (burst.Outside < 0)
        {
            Assert.Equal(n, popped);
            Assert.False(device.IsBroken);
        }
        else
        {
            Assert.Equal(burst.Outside, popped);
            Assert.True(device.IsBroken);
            Assert.Equal(BrokenReason.AddressOutOfRange, device.BrokenReason);
        }
    }
}
