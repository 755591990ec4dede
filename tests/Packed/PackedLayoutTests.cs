using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using Rings.Memory;
using Rings.Packed;

namespace Rings.Tests.Packed;

public class PackedLayoutTests
{
    [Theory]
    [InlineData(0)]
    [InlineData(-1)]
    [InlineData(32769)]
    [InlineData(65536)]
    public void Rejects_sizes_outside_1_to_32768(int size)
    {
        Assert.False(RingFormat.Packed.IsValidSize(size));
        Assert.Throws<ArgumentOutOfRangeException>(() => RingFormat.Packed.Layout(size));
    }

    [Property(MaxTest = 200)]
    public Property Any_size_from_1_to_32768_lays_out_aligned_disjoint_parts() =>
        Prop.ForAll(Gen.Choose(1, 32768).ToArbitrary(), size =>
        {
            var l = RingFormat.Packed.Layout(size);
            return RingFormat.Packed.IsValidSize(size)
                && l.DescriptorAreaOffset == 0
                && l.DescriptorAreaBytes == 16 * size
                && l.DriverAreaOffset % 64 == 0
                && l.DeviceAreaOffset % 64 == 0
                && l.TotalBytes % 64 == 0
                && l.DriverAreaOffset >= l.DescriptorAreaBytes
                && l.DeviceAreaOffset >= l.DriverAreaOffset + 4
                && l.TotalBytes >= l.DeviceAreaOffset + 4;
        });

    [Fact]
    public void At_offsets_the_parts_from_the_base()
    {
        var l = RingFormat.Packed.Layout(3);
        var a = l.At(0x1000);
        Assert.Equal(new RingAreas(0x1000, 0x1000 + 64, 0x1000 + 128), a);
        Assert.Equal(192, l.TotalBytes);
    }

    [Fact]
    public void Rings_reject_misaligned_or_unmapped_parts()
    {
        using var region = new NativeRegion(4096, 0x10000);
        var memory = new GuestMemory(region.Region);
        var good = RingFormat.Packed.Layout(8).At(0x10000);
        _ = new PackedDriverRing(memory, good, 8, VirtioFeatures.None);
        _ = new PackedDeviceRing(memory, good, 8, VirtioFeatures.None);
        Assert.Throws<ArgumentException>(() => new PackedDriverRing(memory, good with { DescriptorArea = 0x10008 }, 8, VirtioFeatures.None));
        Assert.Throws<ArgumentException>(() => new PackedDeviceRing(memory, good with { DriverArea = 0x10002 }, 8, VirtioFeatures.None));
        Assert.Throws<ArgumentException>(() => new PackedDeviceRing(memory, good with { DeviceArea = 0x20000 }, 8, VirtioFeatures.None));
        Assert.Throws<ArgumentException>(() => new PackedDriverRing(memory, good, 1024, VirtioFeatures.None));
        Assert.Throws<ArgumentOutOfRangeException>(() => new PackedDeviceRing(memory, good, 0, VirtioFeatures.None));
    }
}
