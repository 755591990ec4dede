using FsCheck;
using FsCheck.Fluent;
using Rings.Chains;
using Rings.Packed;
using Rings.Split;
using Rings.Tests.Conformance;

namespace Rings.Tests.Packed;

/// <summary>The packed ring (2.8) as a conformance-suite format.</summary>
public sealed class PackedFormat : IRingFormat
{
    /// <inheritdoc/>
    public string Name => "packed";

    /// <summary>Any size is valid for packed rings: odd ones wrap at the ring end mid-burst.</summary>
    public Gen<int> Sizes => Gen.Frequency(
        (12, Gen.Elements(1, 2, 3, 5, 7, 16)),
        (5, Gen.Elements(31, 64, 100, 255)),
        (2, Gen.Elements(1000, 1023, 4096)),
        (1, Gen.Elements(8191, 32768)));

    /// <inheritdoc/>
    public bool IsValidSize(int size) => RingFormat.Packed.IsValidSize(size);

    /// <inheritdoc/>
    public ulong RingBytes(RingSetup setup)
    {
        var layout = RingFormat.Packed.Layout(setup.Size);
        var indirect = setup.DriverUsesIndirect ? new IndirectArea(0, setup.IndirectEntries).BytesFor(setup.Size) : 0;
        return (ulong)layout.TotalBytes + indirect + 512;
    }

    /// <inheritdoc/>
    public RingSides Create(GuardedMemory memory, RingSetup setup)
    {
        var layout = RingFormat.Packed.Layout(setup.Size);
        var addresses = layout.At(memory.Allocate((ulong)layout.TotalBytes, RingFormat.AreaAlignment));
        IndirectArea? indirect = null;
        if (setup.DriverUsesIndirect)
        {
            var area = new IndirectArea(0, setup.IndirectEntries);
            indirect = area with { Address = memory.Allocate(area.BytesFor(setup.Size), 64) };
        }

        var driver = new PackedDriverRing(memory.Memory, addresses, setup.Size, setup.Features, indirect);
        var device = new PackedDeviceRing(memory.Memory, addresses, setup.Size, setup.Features);

        // Packed positions live below the ring size with wrap counters; a start index is reached
        // by going round that many single buffers, which crosses the ring end (and flips both
        // wrap counters) whenever the start is past the size.
        var laps = setup.Start % (2 * setup.Size);
        if (laps > 0)
        {
            var scratch = memory.Allocate(64, 64);
            for (var i = 0; i < laps; i++)
            {
                if (!driver.TryAdd(new BufferSegment(scratch, 16), false, out _))
                {
                    throw new InvalidOperationException("a fresh packed ring refused a buffer");
                }

                driver.Publish();
                if (!device.TryPop(out var chain))
                {
                    throw new InvalidOperationException("a fresh packed ring lost a buffer");
                }

                device.PushUsed(chain.Token, 0);
                device.PublishUsed();
                if (!driver.TryTakeUsed(out _))
                {
                    throw new InvalidOperationException("a fresh packed ring lost a used buffer");
                }
            }

            driver.KickNeeded();
            device.CallNeeded();
            driver.Counters.Clear();
            device.Counters.Clear();
        }

        var driverWritten = new List<MemoryArea>
        {
            new("descriptor ring", addresses.DescriptorArea, layout.DescriptorAreaBytes, true),
            new("driver event suppression", addresses.DriverArea, PackedRingMemory.EventSuppressionBytes),
        };
        if (indirect is { } ia)
        {
            driverWritten.Add(new("indirect tables", ia.Address, (int)ia.BytesFor(setup.Size), true));
        }

        var deviceWritten = new List<MemoryArea>
        {
            new("descriptor ring", addresses.DescriptorArea, layout.DescriptorAreaBytes, true),
            new("device event suppression", addresses.DeviceArea, PackedRingMemory.EventSuppressionBytes),
        };
        return new RingSides(driver, device, driverWritten, deviceWritten);
    }

    /// <inheritdoc/>
    public int DescriptorsFor(int segments, RingSetup setup) =>
        setup.DriverUsesIndirect && segments >= 2 && segments <= setup.IndirectEntries ? 1 : segments;
}

/// <summary>The format-independent model properties on the packed ring.</summary>
public sealed class PackedConformanceModelTests : RingModelTests<PackedFormat>;

/// <summary>The format-independent hostile-memory properties on the packed ring.</summary>
public sealed class PackedConformanceHostileTests : HostileRingTests<PackedFormat>;

/// <summary>The format-independent wake-up tests on the packed ring.</summary>
public sealed class PackedConformanceWakeupTests : WakeupTests<PackedFormat>;

/// <summary>Burst calls against single calls on the packed ring.</summary>
public sealed class PackedBurstEquivalenceTests : BurstEquivalenceTests<PackedFormat>;
