namespace Rings;

/// <summary>
/// Where a device stands in a ring: what vhost-user GET_VRING_BASE returns and SET_VRING_BASE
/// restores. For split rings only <see cref="AvailIndex"/> is carried (the used index lives in
/// ring memory); packed rings carry both positions with their wrap counters.
/// </summary>
/// <param name="AvailIndex">Next avail index (split) or descriptor position (packed) the device will read.</param>
/// <param name="AvailWrapCounter">Packed: the device's avail wrap counter.</param>
/// <param name="UsedIndex">Packed: next descriptor position the device will write a used element to.</param>
/// <param name="UsedWrapCounter">Packed: the device's used wrap counter.</param>
public readonly record struct RingPosition(ushort AvailIndex, bool AvailWrapCounter = true, ushort UsedIndex = 0, bool UsedWrapCounter = true)
{
    /// <summary>
    /// The vhost-user encoding: split rings carry the avail index; packed rings carry
    /// bits 0-14 avail position, bit 15 its wrap counter, bits 16-30 used position, bit 31 its wrap counter.
    /// </summary>
    /// <param name="packed">True for a packed ring.</param>
    /// <returns>The 32-bit value for the vring state's num field.</returns>
    public uint ToVhostBase(bool packed) => packed
        ? (uint)(AvailIndex & 0x7FFF) | (AvailWrapCounter ? 1u << 15 : 0) | ((uint)(UsedIndex & 0x7FFF) << 16) | (UsedWrapCounter ? 1u << 31 : 0)
        : AvailIndex;

    /// <summary>Decodes a vhost-user vring base.</summary>
    /// <param name="value">The 32-bit num field.</param>
    /// <param name="packed">True for a packed ring.</param>
    /// <returns>The position.</returns>
    public static RingPosition FromVhostBase(uint value, bool packed) => packed
        ? new RingPosition((ushort)(value & 0x7FFF), (value & (1u << 15)) != 0, (ushort)((value >> 16) & 0x7FFF), (value & (1u << 31)) != 0)
        : new RingPosition((ushort)value);
}
