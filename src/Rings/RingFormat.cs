using System.Diagnostics.CodeAnalysis;
using Rings.Memory;
using Rings.Packed;
using Rings.Split;

namespace Rings;

/// <summary>
/// The virtqueue format: split (virtio 1.2 section 2.7) or packed (section 2.8, negotiated with
/// VIRTIO_F_RING_PACKED). The one owner of everything that differs between the two outside the
/// rings themselves: which queue sizes are valid, how the three areas are laid out, building
/// driver and device rings over guest memory, and the vhost-user encoding of a device's position.
/// </summary>
/// <remarks>
/// A small value over a two-valued enum rather than a class per format: the spec closes the set,
/// a two-way branch is cheaper than a virtual call and needs no object, <c>default</c> is split
/// (the format when RING_PACKED is not negotiated), and an option or record holding it can never
/// be null. Equality, parsing and <see cref="ToString"/> (<c>split</c>, <c>packed</c>) make it
/// the typed form of the command line's <c>--ring</c>.
/// </remarks>
public readonly struct RingFormat : IEquatable<RingFormat>
{
    /// <summary>Largest queue size of either format (2.7: a power of two up to 32768; 2.8: up to 2^15).</summary>
    public const int MaxSize = 32768;

    /// <summary>
    /// Alignment Rings gives each area (the spec needs at most 16): a multiple of the cache line, so
    /// the areas the driver writes and those the device writes never share one.
    /// </summary>
    public const int AreaAlignment = 64;

    private readonly Kind _kind;

    private RingFormat(Kind kind) => _kind = kind;

    private enum Kind : byte
    {
        Split = 0,
        Packed = 1,
    }

    /// <summary>The split virtqueue (2.7): queue sizes are powers of two.</summary>
    public static RingFormat Split => default;

    /// <summary>The packed virtqueue (2.8): any queue size from 1 to 32768.</summary>
    public static RingFormat Packed => new(Kind.Packed);

    /// <summary>Both formats, split first.</summary>
    public static IReadOnlyList<RingFormat> All { get; } = [Split, Packed];

    /// <summary>
    /// The default device-ring factory: builds the ring of <see cref="DeviceRingSetup.Format"/>
    /// with <see cref="CreateDevice"/>.
    /// </summary>
    public static DeviceRingFactory DeviceFactory { get; } =
        static (in DeviceRingSetup s) => s.Format.CreateDevice(s.RingMemory, s.BufferMemory, s.Areas, s.Size, s.Features, s.Position);

    /// <summary>
    /// The default driver-ring factory: builds the ring of <see cref="DriverRingSetup.Format"/>
    /// with <see cref="CreateDriver"/>.
    /// </summary>
    public static DriverRingFactory DriverFactory { get; } =
        static (in DriverRingSetup s) => s.Format.CreateDriver(s.Memory, s.Areas, s.Size, s.Features, s.Indirect);

    /// <summary>The format's name as the command line spells it: <c>split</c> or <c>packed</c>.</summary>
    public string Name => _kind == Kind.Packed ? "packed" : "split";

    /// <summary>The feature bit that selects this format: RING_PACKED for packed, none for split.</summary>
    public VirtioFeatures Feature => _kind == Kind.Packed ? VirtioFeatures.RingPacked : VirtioFeatures.None;

    /// <summary>The queue sizes this format accepts, in words (for error messages).</summary>
    public string SizeRule => _kind == Kind.Packed ? "from 1 to 32768" : "a power of two from 1 to 32768";

    /// <summary>Compares two formats.</summary>
    /// <param name="left">One format.</param>
    /// <param name="right">The other.</param>
    /// <returns>True when they are the same format.</returns>
    public static bool operator ==(RingFormat left, RingFormat right) => left._kind == right._kind;

    /// <summary>Compares two formats.</summary>
    /// <param name="left">One format.</param>
    /// <param name="right">The other.</param>
    /// <returns>True when they differ.</returns>
    public static bool operator !=(RingFormat left, RingFormat right) => left._kind != right._kind;

    /// <summary>The format a negotiated feature word selects (2.8: packed when RING_PACKED is in it).</summary>
    /// <param name="negotiated">The negotiated features.</param>
    /// <returns>Packed or split.</returns>
    public static RingFormat Of(VirtioFeatures negotiated) =>
        (negotiated & VirtioFeatures.RingPacked) != 0 ? Packed : Split;

    /// <summary>Parses <c>split</c> or <c>packed</c> (any letter case).</summary>
    /// <param name="value">The text.</param>
    /// <returns>The format.</returns>
    /// <exception cref="FormatException">The text names no format.</exception>
    public static RingFormat Parse(string value) =>
        TryParse(value, out var format) ? format : throw new FormatException($"'{value}' is not a ring format (split or packed)");

    /// <summary>Parses <c>split</c> or <c>packed</c> (any letter case).</summary>
    /// <param name="value">The text.</param>
    /// <param name="format">The format, when the text names one.</param>
    /// <returns>True when the text names a format.</returns>
    public static bool TryParse([NotNullWhen(true)] string? value, out RingFormat format)
    {
        foreach (var f in All)
        {
            if (string.Equals(value, f.Name, StringComparison.OrdinalIgnoreCase))
            {
                format = f;
                return true;
            }
        }

        format = default;
        return false;
    }

    /// <summary>
    /// Whether <paramref name="size"/> is a queue size of this format: from 1 to 32768, and for split
    /// rings a power of two (2.7; 2.8.10.1 lifts that for packed rings). The one statement of the rule.
    /// </summary>
    /// <param name="size">The size (wide, so a value off the wire is checked before any narrowing).</param>
    /// <returns>True when valid.</returns>
    public bool IsValidSize(long size) =>
        size is >= 1 and <= MaxSize && (_kind == Kind.Packed || (size & (size - 1)) == 0);

    /// <summary>
    /// The byte layout of a ring of <paramref name="size"/> descriptors: descriptor area, driver area
    /// and device area one after another, each <see cref="AreaAlignment"/>-aligned.
    /// </summary>
    /// <param name="size">Queue size.</param>
    /// <returns>The layout.</returns>
    /// <exception cref="ArgumentOutOfRangeException">The size is not valid for this format.</exception>
    public RingLayout Layout(int size)
    {
        if (!IsValidSize(size))
        {
            throw new ArgumentOutOfRangeException(nameof(size), size, $"a {Name} queue size is {SizeRule}");
        }

        return _kind == Kind.Packed
            ? new RingLayout(this, size, RingLayout.DescriptorBytes * size, PackedRingMemory.EventSuppressionBytes, PackedRingMemory.EventSuppressionBytes)
            : new RingLayout(this, size, RingLayout.DescriptorBytes * size, SplitRingMemory.AvailBytes(size), SplitRingMemory.UsedBytes(size));
    }

    /// <summary>Builds the driver side of a ring of this format over zeroed ring memory.</summary>
    /// <param name="memory">The memory table holding the ring (and the indirect area, if any).</param>
    /// <param name="areas">Guest-physical addresses of the three areas.</param>
    /// <param name="size">Queue size.</param>
    /// <param name="features">Negotiated features; the ring uses INDIRECT_DESC, EVENT_IDX and IN_ORDER.</param>
    /// <param name="indirect">Where indirect tables live, for INDIRECT_DESC to be used.</param>
    /// <returns>The driver ring.</returns>
    /// <exception cref="ArgumentException">An area is misaligned or outside the memory table, or the size is invalid.</exception>
    public IDriverRing CreateDriver(GuestMemory memory, RingAreas areas, int size, VirtioFeatures features, IndirectArea? indirect = null) =>
        _kind == Kind.Packed
            ? new PackedDriverRing(memory, areas, size, features, indirect)
            : new SplitDriverRing(memory, areas, size, features, indirect);

    /// <summary>Builds the device side of a ring of this format, positioned at <paramref name="position"/>.</summary>
    /// <param name="ringMemory">Translates the area addresses (under vhost-user, the front-end's user addresses).</param>
    /// <param name="bufferMemory">Translates descriptor addresses (guest-physical).</param>
    /// <param name="areas">The three areas, in <paramref name="ringMemory"/>'s address space.</param>
    /// <param name="size">Queue size.</param>
    /// <param name="features">Negotiated features; the ring uses INDIRECT_DESC, EVENT_IDX and IN_ORDER.</param>
    /// <param name="position">Where the device resumes (vhost-user SET_VRING_BASE; <c>new RingPosition(0)</c> for a fresh ring).</param>
    /// <returns>The device ring.</returns>
    /// <exception cref="ArgumentException">An area is misaligned or outside memory, the size is invalid, or the position is not one of this ring.</exception>
    public IDeviceRing CreateDevice(GuestMemory ringMemory, GuestMemory bufferMemory, RingAreas areas, int size, VirtioFeatures features, RingPosition position)
    {
        IDeviceRing ring = _kind == Kind.Packed
            ? new PackedDeviceRing(ringMemory, bufferMemory, areas, size, features)
            : new SplitDeviceRing(ringMemory, bufferMemory, areas, size, features);
        try
        {
            ring.Restore(position);
        }
        catch (ArgumentOutOfRangeException e)
        {
            throw new ArgumentException($"{Name} base {position} is not a position in a ring of {size}: {e.Message}", nameof(position));
        }

        return ring;
    }

    /// <summary>
    /// The vhost-user vring base (the <c>num</c> of GET/SET_VRING_BASE) for a device position. Split
    /// rings carry the avail index; packed rings carry bits 0-14 the avail position, bit 15 its wrap
    /// counter, bits 16-30 the used position and bit 31 its wrap counter.
    /// </summary>
    /// <param name="position">The device's position.</param>
    /// <returns>The 32-bit base.</returns>
    public uint EncodeBase(RingPosition position) => _kind == Kind.Packed
        ? Half(position.AvailIndex, position.AvailWrapCounter) | ((uint)Half(position.UsedIndex, position.UsedWrapCounter) << 16)
        : position.AvailIndex;

    /// <summary>
    /// Decodes a vhost-user vring base. Split: the low 16 bits are the avail index. Packed: as
    /// <see cref="EncodeBase"/> writes it; a peer that sends only the low half (DPDK) means the used
    /// position equals the avail position, as it does for a stopped ring, so a zero high half is
    /// read that way (a used position of 0 with wrap counter 0 then reads as the avail position).
    /// </summary>
    /// <param name="value">The 32-bit base.</param>
    /// <returns>The position.</returns>
    public RingPosition DecodeBase(uint value)
    {
        if (_kind != Kind.Packed)
        {
            return new RingPosition((ushort)value);
        }

        var avail = (ushort)(value & 0x7FFF);
        var availWrap = (value & 0x8000) != 0;
        var high = value >> 16;
        return high == 0
            ? new RingPosition(avail, availWrap, avail, availWrap)
            : new RingPosition(avail, availWrap, (ushort)(high & 0x7FFF), (high & 0x8000) != 0);
    }

    /// <summary>
    /// Whether <paramref name="value"/> is a vring base this format can carry for a ring of
    /// <paramref name="size"/>: split, one that fits 16 bits; packed, one whose positions are below the size.
    /// </summary>
    /// <param name="value">The 32-bit base.</param>
    /// <param name="size">Queue size (<see cref="MaxSize"/> when it is not known yet).</param>
    /// <returns>True when <see cref="DecodeBase"/> yields a position of such a ring.</returns>
    public bool IsValidBase(uint value, int size)
    {
        if (_kind != Kind.Packed)
        {
            return value <= ushort.MaxValue;
        }

        var p = DecodeBase(value);
        return p.AvailIndex < size && p.UsedIndex < size;
    }

    /// <inheritdoc/>
    public bool Equals(RingFormat other) => _kind == other._kind;

    /// <inheritdoc/>
    public override bool Equals(object? obj) => obj is RingFormat other && Equals(other);

    /// <inheritdoc/>
    public override int GetHashCode() => (int)_kind;

    /// <summary>The format's name: <c>split</c> or <c>packed</c>.</summary>
    /// <returns><see cref="Name"/>.</returns>
    public override string ToString() => Name;

    private static ushort Half(ushort position, bool wrapCounter) => (ushort)((position & 0x7FFF) | (wrapCounter ? 0x8000 : 0));
}
