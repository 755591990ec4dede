namespace Rings;

/// <summary>
/// Where a device stands in a ring: what vhost-user GET_VRING_BASE returns and SET_VRING_BASE
/// restores (<see cref="RingFormat.EncodeBase"/> and <see cref="RingFormat.DecodeBase"/> carry it).
/// For split rings only <see cref="AvailIndex"/> counts (the used index lives in ring memory);
/// packed rings carry both positions with their wrap counters.
/// </summary>
public readonly record struct RingPosition
{
    // One word, written with one store: a device's pop records a position per buffer.
    // Bits 0-15 the avail index, 16 its wrap counter, 32-47 the used index, 48 its wrap counter.
    private readonly ulong _value;

    /// <summary>Creates a position.</summary>
    /// <param name="availIndex">Next avail index (split) or descriptor position (packed) the device will read.</param>
    /// <param name="availWrapCounter">Packed: the device's avail wrap counter.</param>
    /// <param name="usedIndex">Packed: next descriptor position the device will write a used element to.</param>
    /// <param name="usedWrapCounter">Packed: the device's used wrap counter.</param>
    public RingPosition(ushort availIndex, bool availWrapCounter = true, ushort usedIndex = 0, bool usedWrapCounter = true) =>
        _value = availIndex | (availWrapCounter ? 1UL << 16 : 0) | ((ulong)usedIndex << 32) | (usedWrapCounter ? 1UL << 48 : 0);

    /// <summary>A position from its word (the layout above), for a run that moves only the avail index.</summary>
    internal RingPosition(ulong value) => _value = value;

    /// <summary>The position's word (the layout above).</summary>
    internal ulong Value => _value;

    /// <summary>Next avail index (split) or descriptor position (packed) the device will read.</summary>
    public ushort AvailIndex { get => (ushort)_value; init => _value = (_value & ~0xFFFFUL) | value; }

    /// <summary>Packed: the device's avail wrap counter.</summary>
    public bool AvailWrapCounter { get => (_value & (1UL << 16)) != 0; init => _value = (_value & ~(1UL << 16)) | (value ? 1UL << 16 : 0); }

    /// <summary>Packed: next descriptor position the device will write a used element to.</summary>
    public ushort UsedIndex { get => (ushort)(_value >> 32); init => _value = (_value & ~(0xFFFFUL << 32)) | ((ulong)value << 32); }

    /// <summary>Packed: the device's used wrap counter.</summary>
    public bool UsedWrapCounter { get => (_value & (1UL << 48)) != 0; init => _value = (_value & ~(1UL << 48)) | (value ? 1UL << 48 : 0); }

    /// <summary>The four parts.</summary>
    /// <param name="availIndex">The avail index or position.</param>
    /// <param name="availWrapCounter">The avail wrap counter.</param>
    /// <param name="usedIndex">The used position.</param>
    /// <param name="usedWrapCounter">The used wrap counter.</param>
    public void Deconstruct(out ushort availIndex, out bool availWrapCounter, out ushort usedIndex, out bool usedWrapCounter)
    {
        availIndex = AvailIndex;
        availWrapCounter = AvailWrapCounter;
        usedIndex = UsedIndex;
        usedWrapCounter = UsedWrapCounter;
    }
}
