using FsCheck;

namespace Rings.Tests.Conformance;

/// <summary>
/// How to build a ring of one format for the format-independent tests (model, hostile,
/// wake-up). Split and packed rings each implement this once; the properties are written
/// against <see cref="IDriverRing"/> and <see cref="IDeviceRing"/> only.
/// </summary>
public interface IRingFormat
{
    /// <summary>Name shown in test output.</summary>
    string Name { get; }

    /// <summary>Queue sizes to test, weighted towards small ones, with a few large.</summary>
    Gen<int> Sizes { get; }

    /// <summary>Whether the format accepts <paramref name="size"/>.</summary>
    bool IsValidSize(int size);

    /// <summary>Guest bytes <see cref="Create"/> allocates for <paramref name="setup"/> (with alignment slack).</summary>
    ulong RingBytes(RingSetup setup);

    /// <summary>
    /// Lays out a ring in <paramref name="memory"/> and returns its driver and device sides,
    /// both positioned at <see cref="RingSetup.Start"/>, as after a device restore.
    /// </summary>
    RingSides Create(GuardedMemory memory, RingSetup setup);

    /// <summary>Ring descriptors a buffer of <paramref name="segments"/> segments occupies.</summary>
    int DescriptorsFor(int segments, RingSetup setup);
}

/// <summary>What a ring is made with.</summary>
/// <param name="Size">Queue size.</param>
/// <param name="Features">Negotiated ring features.</param>
/// <param name="Start">
/// Where both sides start: split, the free-running avail/used index; packed, a position the
/// format maps to a descriptor slot and wrap counters.
/// </param>
/// <param name="IndirectEntries">Entries per indirect table the driver may use (0: none).</param>
public readonly record struct RingSetup(int Size, VirtioFeatures Features, ushort Start, int IndirectEntries)
{
    /// <summary>Whether the driver builds indirect tables.</summary>
    public bool DriverUsesIndirect => IndirectEntries >= 2 && (Features & VirtioFeatures.IndirectDescriptors) != 0;

    /// <inheritdoc/>
    public override string ToString() => $"size {Size}, {Features}, start {Start}, indirect entries {IndirectEntries}";
}

/// <summary>A piece of ring memory, by guest address.</summary>
/// <param name="Name">What it is (for messages).</param>
/// <param name="Address">Guest-physical address.</param>
/// <param name="Length">Bytes.</param>
/// <param name="HoldsDescriptors">True for 16-byte descriptor arrays (descriptor table, indirect tables, packed ring).</param>
public readonly record struct MemoryArea(string Name, ulong Address, int Length, bool HoldsDescriptors = false);

/// <summary>The two sides of one ring and the memory each side writes.</summary>
public class RingSides
{
    /// <param name="driver">The driver side.</param>
    /// <param name="device">The device side.</param>
    /// <param name="driverWritten">Memory the driver writes: hostile input for the device.</param>
    /// <param name="deviceWritten">Memory the device writes: hostile input for the driver.</param>
    public RingSides(IDriverRing driver, IDeviceRing device, IReadOnlyList<MemoryArea> driverWritten, IReadOnlyList<MemoryArea> deviceWritten)
    {
        Driver = driver;
        Device = device;
        DriverWritten = driverWritten;
        DeviceWritten = deviceWritten;
    }

    /// <summary>The driver side.</summary>
    public IDriverRing Driver { get; }

    /// <summary>The device side.</summary>
    public IDeviceRing Device { get; }

    /// <summary>Memory the driver writes (descriptors, driver area, indirect tables).</summary>
    public IReadOnlyList<MemoryArea> DriverWritten { get; }

    /// <summary>Memory the device writes (device area; for packed, also the descriptors).</summary>
    public IReadOnlyList<MemoryArea> DeviceWritten { get; }
}
