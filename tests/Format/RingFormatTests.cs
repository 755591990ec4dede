using System.Numerics;
using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using Rings.Chains;
using Rings.Memory;
using Rings.Packed;
using Rings.Split;
using Rings.Tests.Conformance;
using Rings.Tests.Split;

namespace Rings.Tests.Format;

/// <summary>
/// <see cref="RingFormat"/>: the queue-size rule, the layout of the three areas, building rings,
/// the vhost-user base encoding with wrap counters, and the format as a typed option.
/// </summary>
public sealed class RingFormatTests
{
    private static readonly Gen<RingFormat> Formats = Gen.Elements(RingFormat.Split, RingFormat.Packed);

    // Sizes around every power of two and the ends of the range, and anything in between.
    private static readonly Gen<int> Sizes = Gen.OneOf(
        Gen.Choose(-2, 70000),
        Gen.Choose(0, 16).SelectMany(k => Gen.Choose(-1, 1).Select(d => (1 << k) + d)));

    private static readonly Gen<RingPosition> Positions =
        from avail in Gen.Choose(0, 0x7FFF)
        from availWrap in Gen.Elements(false, true)
        from used in Gen.Choose(0, 0x7FFF)
        from usedWrap in Gen.Elements(false, true)
        select new RingPosition((ushort)avail, availWrap, (ushort)used, usedWrap);

    // ---- The size rule --------------------------------------------------------------------

    [Property(MaxTest = 2000)]
    public Property Split_sizes_are_powers_of_two_up_to_32768_and_packed_sizes_any_up_to_32768() =>
        Prop.ForAll(Sizes.ToArbitrary(), n =>
        {
            var inRange = n >= 1 && n <= 32768;
            Assert.Equal(inRange && BitOperations.PopCount((uint)n) == 1, RingFormat.Split.IsValidSize(n));
            Assert.Equal(inRange, RingFormat.Packed.IsValidSize(n));
        });

    [Theory]
    [InlineData(0L)]
    [InlineData(-1L)]
    [InlineData(32769L)]
    [InlineData(65536L)]
    [InlineData(1L << 32)]
    [InlineData((1L << 32) + 1)]
    [InlineData(long.MinValue)]
    public void No_format_takes_a_size_outside_1_to_32768_even_one_that_narrows_into_it(long size)
    {
        Assert.All(RingFormat.All, f => Assert.False(f.IsValidSize(size)));
        if (size is >= int.MinValue and <= int.MaxValue)
        {
            Assert.All(RingFormat.All, f => Assert.Throws<ArgumentOutOfRangeException>(() => f.Layout((int)size)));
        }
    }

    [Property(MaxTest = 500)]
    public Property Layout_refuses_exactly_the_sizes_the_rule_refuses() =>
        Prop.ForAll(Formats.ToArbitrary(), Sizes.ToArbitrary(), (f, n) =>
        {
            if (f.IsValidSize(n))
            {
                Assert.Equal(n, f.Layout(n).Size);
            }
            else
            {
                var e = Assert.Throws<ArgumentOutOfRangeException>(() => f.Layout(n));
                Assert.Contains(f.SizeRule, e.Message, StringComparison.Ordinal);
            }
        });

    // ---- Layout -----------------------------------------------------------------------------

    [Property(MaxTest = 1000)]
    public Property Areas_are_aligned_in_order_disjoint_and_tightly_packed() =>
        Prop.ForAll(Formats.ToArbitrary(), Gen.Choose(1, 32768).ToArbitrary(), (f, n) =>
        {
            if (!f.IsValidSize(n))
            {
                n = (int)BitOperations.RoundUpToPowerOf2((uint)n);
            }

            var l = f.Layout(n);
            Assert.Equal(f, l.Format);

            // Spec sizes: 2.7.5/2.8.13 descriptors; 2.7.6 avail, 2.7.8 used; 2.8.14 event suppression.
            Assert.Equal(16 * n, l.DescriptorAreaBytes);
            Assert.Equal(f == RingFormat.Split ? 2 + 2 + (2 * n) + 2 : 4, l.DriverAreaBytes);
            Assert.Equal(f == RingFormat.Split ? 2 + 2 + (8 * n) + 2 : 4, l.DeviceAreaBytes);

            // Each area 64-byte aligned, after the one before it, with less than 64 bytes of gap.
            Assert.Equal(0, l.DescriptorAreaOffset);
            Assert.All(new[] { l.DriverAreaOffset, l.DeviceAreaOffset, l.TotalBytes }, o => Assert.Equal(0, o % RingFormat.AreaAlignment));
            Assert.InRange(l.DriverAreaOffset - l.DescriptorAreaBytes, 0, RingFormat.AreaAlignment - 1);
            Assert.InRange(l.DeviceAreaOffset - (l.DriverAreaOffset + l.DriverAreaBytes), 0, RingFormat.AreaAlignment - 1);
            Assert.InRange(l.TotalBytes - (l.DeviceAreaOffset + l.DeviceAreaBytes), 0, RingFormat.AreaAlignment - 1);

            // Laid anywhere, the areas keep those offsets.
            var at = l.At(0x7_0000_0040);
            Assert.Equal(new RingAreas(0x7_0000_0040, 0x7_0000_0040 + (ulong)l.DriverAreaOffset, 0x7_0000_0040 + (ulong)l.DeviceAreaOffset), at);
        });

    [Theory]
    [InlineData("split", 256, 4096, 4672, 6784)]
    [InlineData("split", 1, 64, 128, 192)]
    [InlineData("packed", 3, 64, 128, 192)]
    [InlineData("packed", 256, 4096, 4160, 4224)]
    [InlineData("packed", 32768, 524288, 524352, 524416)]
    public void Offsets_worked_by_hand(string format, int n, int driver, int device, int total)
    {
        var l = RingFormat.Parse(format).Layout(n);
        Assert.Equal((driver, device, total), (l.DriverAreaOffset, l.DeviceAreaOffset, l.TotalBytes));
    }

    // ---- Building rings ---------------------------------------------------------------------

    [Fact]
    public void Each_format_builds_its_own_rings_over_its_own_layout()
    {
        using var memory = new GuardedMemory(1 << 16);
        foreach (var f in RingFormat.All)
        {
            var areas = f.Layout(8).At(memory.Allocate((ulong)f.Layout(8).TotalBytes, RingFormat.AreaAlignment));
            var driver = f.CreateDriver(memory.Memory, areas, 8, VirtioFeatures.EventIndex);
            var device = f.CreateDevice(memory.Memory, memory.Memory, areas, 8, VirtioFeatures.EventIndex, new RingPosition(0));
            Assert.IsType(f == RingFormat.Split ? typeof(SplitDriverRing) : typeof(PackedDriverRing), driver);
            Assert.IsType(f == RingFormat.Split ? typeof(SplitDeviceRing) : typeof(PackedDeviceRing), device);

            // The default factories build the same from a setup, and the pair works.
            var viaSetup = RingFormat.DeviceFactory(new DeviceRingSetup(f, memory.Memory, memory.Memory, areas, 8, VirtioFeatures.EventIndex, new RingPosition(0)));
            Assert.Equal(device.GetType(), viaSetup.GetType());
            Assert.True(driver.TryAdd(new BufferSegment(memory.Base + 0x8000, 64), false, out var id));
            driver.Publish();
            Assert.True(device.TryPop(out var chain));
            device.PushUsed(chain.Token, 0);
            device.PublishUsed();
            Assert.True(driver.TryTakeUsed(out var used));
            Assert.Equal(id, used.Id);
        }
    }

    [Fact]
    public void A_device_ring_refuses_a_position_its_ring_cannot_hold()
    {
        using var memory = new GuardedMemory(1 << 16);
        var areas = RingFormat.Packed.Layout(4).At(memory.Allocate(4096, 64));
        var e = Assert.Throws<ArgumentException>(() => RingFormat.Packed.CreateDevice(memory.Memory, memory.Memory, areas, 4, VirtioFeatures.None, new RingPosition(4)));
        Assert.Contains("packed base", e.Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentOutOfRangeException>(() => RingFormat.Split.CreateDriver(memory.Memory, areas, 3, VirtioFeatures.None));
    }

    // ---- The vhost-user base encoding -------------------------------------------------------

    [Property(MaxTest = 1000)]
    public Property Split_base_is_the_avail_index() =>
        Prop.ForAll(Gen.Choose(0, 65535).ToArbitrary(), v =>
        {
            var p = new RingPosition((ushort)v);
            Assert.Equal((uint)v, RingFormat.Split.EncodeBase(p));
            Assert.Equal(p, RingFormat.Split.DecodeBase(RingFormat.Split.EncodeBase(p)));
            Assert.True(RingFormat.Split.IsValidBase((uint)v, 8));
        });

    [Fact]
    public void Split_base_ignores_the_upper_bits_and_a_device_restores_to_it()
    {
        Assert.Equal(new RingPosition(0xBEEF), RingFormat.Split.DecodeBase(0x1234_BEEF));
        Assert.False(RingFormat.Split.IsValidBase(0x1_0000, RingFormat.MaxSize));
        using var memory = new GuardedMemory(64 * 1024);
        var pair = SplitFormat.CreateSplit(memory, new RingSetup(8, VirtioFeatures.None, 65534, 0));
        Assert.True(pair.Driver.TryAdd(new BufferSegment(memory.Base + 60000, 4), false, out _));
        Assert.True(pair.Driver.TryAdd(new BufferSegment(memory.Base + 60000, 4), false, out _));
        pair.Driver.Publish();
        Assert.True(pair.Device.TryPop(out _));
        var saved = RingFormat.Split.EncodeBase(pair.Device.Position);
        Assert.Equal(65535u, saved);

        // A new device (a backend restart) picks up from the saved base and pops the second buffer.
        var device = RingFormat.Split.CreateDevice(memory.Memory, memory.Memory, pair.Addresses, 8, VirtioFeatures.None, RingFormat.Split.DecodeBase(saved));
        Assert.True(device.TryPop(out var chain));
        Assert.Equal(1, chain.Token.Id);
        Assert.False(device.TryPop(out _));
    }

    [Property(MaxTest = 2000)]
    public Property Packed_positions_round_trip_with_both_wrap_counters() =>
        Prop.ForAll(Positions.ToArbitrary(), p =>
        {
            var wire = RingFormat.Packed.EncodeBase(p);
            Assert.Equal(p.AvailIndex | (p.AvailWrapCounter ? 0x8000u : 0), wire & 0xFFFF);
            Assert.Equal(p.UsedIndex | (p.UsedWrapCounter ? 0x8000u : 0), wire >> 16);
            var back = RingFormat.Packed.DecodeBase(wire);
            if (p.UsedIndex != 0 || p.UsedWrapCounter)
            {
                Assert.Equal(p, back);
            }
            else
            {
                // Used position 0 with wrap counter 0 encodes as a zero high half, which is also
                // what a peer sending only the avail half (DPDK) sends: read as used = avail.
                Assert.Equal(p with { UsedIndex = p.AvailIndex, UsedWrapCounter = p.AvailWrapCounter }, back);
            }
        });

    [Property(MaxTest = 2000)]
    public Property Every_packed_base_value_decodes_and_encodes_back() =>
        Prop.ForAll(
            Gen.OneOf(Gen.Choose(int.MinValue, int.MaxValue).Select(v => (uint)v), Gen.Choose(0, 0xFFFF).Select(v => (uint)v)).ToArbitrary(),
            v =>
            {
                var back = RingFormat.Packed.EncodeBase(RingFormat.Packed.DecodeBase(v));
                Assert.Equal((v >> 16) != 0 ? v : v | (v << 16), back);
            });

    [Fact]
    public void Packed_bit_positions()
    {
        // Bits 0-14 avail position, 15 avail wrap counter, 16-30 used position, 31 used wrap counter.
        var f = RingFormat.Packed;
        Assert.Equal(0x0007_8005u, f.EncodeBase(new RingPosition(5, true, 7, false)));
        Assert.Equal(0x8007_0005u, f.EncodeBase(new RingPosition(5, false, 7, true)));
        Assert.Equal(0xFFFF_FFFFu, f.EncodeBase(new RingPosition(0x7FFF, true, 0x7FFF, true)));
        Assert.Equal(new RingPosition(0x1234, false, 0x0123, true), f.DecodeBase(0x8123_1234));
        Assert.Equal(0x8000_8000u, f.EncodeBase(new RingPosition(0))); // a fresh packed ring: wrap counters 1
    }

    [Fact]
    public void A_packed_base_with_only_the_avail_half_means_used_equals_avail()
    {
        // DPDK's GET/SET_VRING_BASE carries the avail position and wrap counter only.
        Assert.Equal(new RingPosition(0, true, 0, true), RingFormat.Packed.DecodeBase(0x8000));
        Assert.Equal(new RingPosition(5, false, 5, false), RingFormat.Packed.DecodeBase(5));
        Assert.Equal(new RingPosition(0, false, 0, false), RingFormat.Packed.DecodeBase(0));
    }

    [Property(MaxTest = 1000)]
    public Property A_packed_base_is_valid_exactly_when_both_positions_are_in_the_ring() =>
        Prop.ForAll(Positions.ToArbitrary(), Gen.Choose(1, 32768).ToArbitrary(), (p, size) =>
        {
            var wire = RingFormat.Packed.EncodeBase(p);
            var back = RingFormat.Packed.DecodeBase(wire);
            Assert.Equal(back.AvailIndex < size && back.UsedIndex < size, RingFormat.Packed.IsValidBase(wire, size));
        });

    // ---- The format as a value and an option ------------------------------------------------

    [Fact]
    public void Names_parse_back_and_the_default_is_split()
    {
        Assert.Equal(RingFormat.Split, default);
        Assert.Equal(["split", "packed"], RingFormat.All.Select(f => f.ToString()));
        foreach (var f in RingFormat.All)
        {
            Assert.Equal(f, RingFormat.Parse(f.Name));
            Assert.Equal(f, RingFormat.Parse(f.Name.ToUpperInvariant()));
            Assert.True(RingFormat.TryParse(f.ToString(), out var parsed) && parsed == f);
        }

        Assert.False(RingFormat.TryParse("ring", out _));
        Assert.False(RingFormat.TryParse(null, out _));
        Assert.False(RingFormat.TryParse(string.Empty, out _));
        Assert.Throws<FormatException>(() => RingFormat.Parse("splat"));
        Assert.NotEqual(RingFormat.Split, RingFormat.Packed);
        Assert.True(RingFormat.Split != RingFormat.Packed);
        Assert.NotEqual(RingFormat.Split.GetHashCode(), RingFormat.Packed.GetHashCode());
    }

    [Property(MaxTest = 500)]
    public Property The_format_follows_RING_PACKED_in_the_features() =>
        Prop.ForAll(Gen.Choose(int.MinValue, int.MaxValue).Two().Select(t => ((ulong)(uint)t.Item1 << 32) | (uint)t.Item2).ToArbitrary(), word =>
        {
            var features = (VirtioFeatures)word;
            var expected = (word & (1UL << 34)) != 0 ? RingFormat.Packed : RingFormat.Split;
            Assert.Equal(expected, RingFormat.Of(features));
            Assert.Equal(expected.Feature, features & VirtioFeatures.RingPacked);
            Assert.All(RingFormat.All, f => Assert.Equal(f, RingFormat.Of(features & ~VirtioFeatures.RingPacked | f.Feature)));
        });

    [Fact]
    public void Feature_bits_have_the_spec_numbers()
    {
        (VirtioFeatures Feature, int Bit)[] bits =
        [
            (VirtioFeatures.NetCsum, 0), (VirtioFeatures.NetGuestCsum, 1), (VirtioFeatures.NetMtu, 3), (VirtioFeatures.NetMac, 5),
            (VirtioFeatures.NetGuestTso4, 7), (VirtioFeatures.NetGuestTso6, 8), (VirtioFeatures.NetHostTso4, 11), (VirtioFeatures.NetHostTso6, 12),
            (VirtioFeatures.NetMergeRxBuffers, 15), (VirtioFeatures.NetStatus, 16), (VirtioFeatures.NetControlQueue, 17), (VirtioFeatures.NetMultiqueue, 22),
            (VirtioFeatures.IndirectDescriptors, 28), (VirtioFeatures.EventIndex, 29), (VirtioFeatures.Version1, 32), (VirtioFeatures.RingPacked, 34),
            (VirtioFeatures.InOrder, 35), (VirtioFeatures.NotificationData, 38),
            (VirtioFeatures.NetGuestEcn, 9), (VirtioFeatures.NetGuestUfo, 10), (VirtioFeatures.NetGuestUso4, 54), (VirtioFeatures.NetGuestUso6, 55),
            (VirtioFeatures.NetHostEcn, 13), (VirtioFeatures.NetHostUso, 56),
        ];
        Assert.All(bits, b => Assert.Equal(1UL << b.Bit, (ulong)b.Feature));
        Assert.Equal(bits.Length, Enum.GetValues<VirtioFeatures>().Length - 1);
    }
}
