using FsCheck;
using FsCheck.Fluent;
using Rings.Split;
using Rings.Tests.Conformance;

namespace Rings.Tests.Split;

/// <summary>The split virtqueue for the format-independent conformance tests.</summary>
public sealed class SplitFormat : IRingFormat
{
    /// <inheritdoc/>
    public string Name => "split";

    /// <inheritdoc/>
    public Gen<int> Sizes => Gen.Frequency(
        (12, Gen.Elements(1, 2, 4, 8, 16)),
        (5, Gen.Elements(32, 64, 128, 256)),
        (2, Gen.Elements(512, 1024, 2048, 4096)),
        (1, Gen.Elements(8192, 16384, 32768)));

    /// <inheritdoc/>
    public bool IsValidSize(int size) => RingFormat.Split.IsValidSize(size);

    /// <inheritdoc/>
    public ulong RingBytes(RingSetup setup)
    {
        var layout = RingFormat.Split.Layout(setup.Size);
        var indirect = setup.DriverUsesIndirect ? new IndirectArea(0, setup.IndirectEntries).BytesFor(setup.Size) : 0;
        return (ulong)layout.TotalBytes + indirect + 256;
    }

    /// <inheritdoc/>
    public RingSides Create(GuardedMemory memory, RingSetup setup) => CreateSplit(memory, setup);

    /// <summary><see cref="Create"/> with the split types and addresses.</summary>
    public static SplitRingPair CreateSplit(GuardedMemory memory, RingSetup setup)
    {
        var layout = RingFormat.Split.Layout(setup.Size);
        var addresses = layout.At(memory.Allocate((ulong)layout.TotalBytes, RingFormat.AreaAlignment));
        IndirectArea? indirect = null;
        if (setup.DriverUsesIndirect)
        {
            var area = new IndirectArea(0, setup.IndirectEntries);
            indirect = area with { Address = memory.Allocate(area.BytesFor(setup.Size), 64) };
        }

        var driver = new SplitDriverRing(memory.Memory, addresses, setup.Size, setup.Features, indirect);
        driver.StartAt(setup.Start);
        var device = new SplitDeviceRing(memory.Memory, addresses, setup.Size, setup.Features);
        device.Restore(new RingPosition(setup.Start));

        var driverWritten = new List<MemoryArea>
        {
            new("descriptor table", addresses.DescriptorArea, layout.DescriptorAreaBytes, true),
            new("avail ring", addresses.DriverArea, layout.DriverAreaBytes),
        };
        if (indirect is { } ia)
        {
            driverWritten.Add(new("indirect tables", ia.Address, (int)ia.BytesFor(setup.Size), true));
        }

        var deviceWritten = new List<MemoryArea> { new("used ring", addresses.DeviceArea, layout.DeviceAreaBytes) };
        return new SplitRingPair(driver, device, driverWritten, deviceWritten, layout, addresses, indirect, new SplitRingView(memory, layout, addresses));
    }

    /// <inheritdoc/>
    public int DescriptorsFor(int segments, RingSetup setup) =>
        setup.DriverUsesIndirect && segments >= 2 && segments <= setup.IndirectEntries ? 1 : segments;
}

/// <summary>A split ring pair with its layout and a raw view of its memory.</summary>
public sealed class SplitRingPair : RingSides
{
    internal SplitRingPair(
        SplitDriverRing driver,
        SplitDeviceRing device,
        IReadOnlyList<MemoryArea> driverWritten,
        IReadOnlyList<MemoryArea> deviceWritten,
        RingLayout layout,
        RingAreas addresses,
        IndirectArea? indirect,
        SplitRingView view)
        : base(driver, device, driverWritten, deviceWritten)
    {
        SplitDriver = driver;
        SplitDevice = device;
        Layout = layout;
        Addresses = addresses;
        Indirect = indirect;
        View = view;
    }

    /// <summary>The driver side.</summary>
    public SplitDriverRing SplitDriver { get; }

    /// <summary>The device side.</summary>
    public SplitDeviceRing SplitDevice { get; }

    /// <summary>The layout.</summary>
    public RingLayout Layout { get; }

    /// <summary>The part addresses.</summary>
    public RingAreas Addresses { get; }

    /// <summary>The driver's indirect area, if any.</summary>
    public IndirectArea? Indirect { get; }

    /// <summary>Raw access to the ring's fields, as a misbehaving peer would write them.</summary>
    public SplitRingView View { get; }
}
