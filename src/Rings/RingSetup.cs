using Rings.Memory;

namespace Rings;

/// <summary>Everything needed to build the device side of one ring (what a vhost-user back-end learns per vring).</summary>
/// <param name="Format">The ring format (packed when RING_PACKED was negotiated).</param>
/// <param name="RingMemory">Translates the ring areas (under vhost-user, the front-end's user addresses).</param>
/// <param name="BufferMemory">Translates descriptor addresses (guest-physical).</param>
/// <param name="Areas">The ring areas, in <paramref name="RingMemory"/>'s address space.</param>
/// <param name="Size">Queue size.</param>
/// <param name="Features">The negotiated features.</param>
/// <param name="Position">Where the device resumes (from SET_VRING_BASE).</param>
public readonly record struct DeviceRingSetup(RingFormat Format, GuestMemory RingMemory, GuestMemory BufferMemory, RingAreas Areas, int Size, VirtioFeatures Features, RingPosition Position);

/// <summary>Everything needed to build the driver side of one ring over zeroed ring memory.</summary>
/// <param name="Format">The ring format.</param>
/// <param name="Memory">The driver's memory, keyed by guest-physical address.</param>
/// <param name="Areas">The ring areas, guest-physical.</param>
/// <param name="Size">Queue size.</param>
/// <param name="Features">The negotiated features.</param>
/// <param name="Indirect">Where indirect tables live, if the driver uses them.</param>
public readonly record struct DriverRingSetup(RingFormat Format, GuestMemory Memory, RingAreas Areas, int Size, VirtioFeatures Features, IndirectArea? Indirect = null);

/// <summary>
/// Builds the device side of a ring; <see cref="RingFormat.DeviceFactory"/> is the default. Throws
/// <see cref="ArgumentException"/> when an area is misaligned or outside memory.
/// </summary>
/// <param name="setup">The ring's setup.</param>
/// <returns>The device ring, positioned at <see cref="DeviceRingSetup.Position"/>.</returns>
public delegate IDeviceRing DeviceRingFactory(in DeviceRingSetup setup);

/// <summary>Builds the driver side of a ring over zeroed ring memory; <see cref="RingFormat.DriverFactory"/> is the default.</summary>
/// <param name="setup">The ring's setup.</param>
/// <returns>The driver ring.</returns>
public delegate IDriverRing DriverRingFactory(in DriverRingSetup setup);
