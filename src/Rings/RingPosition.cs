namespace Rings;

/// <summary>
/// Where a device stands in a ring: what vhost-user GET_VRING_BASE returns and SET_VRING_BASE
/// restores (<see cref="RingFormat.EncodeBase"/> and <see cref="RingFormat.DecodeBase"/> carry it).
/// For split rings only <see cref="AvailIndex"/> counts (the used index lives in ring memory);
/// packed rings carry both positions with their wrap counters.
/// </summary>
/// <param name="AvailIndex">Next avail index (split) or descriptor position (packed) the device will read.</param>
/// <param name="AvailWrapCounter">Packed: the device's avail wrap counter.</param>
/// <param name="UsedIndex">Packed: next descriptor position the device will write a used element to.</param>
/// <param name="UsedWrapCounter">Packed: the device's used wrap counter.</param>
public readonly record struct RingPosition(ushort AvailIndex, bool AvailWrapCounter = true, ushort UsedIndex = 0, bool UsedWrapCounter = true);
