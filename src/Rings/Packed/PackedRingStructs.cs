using Rings.Chains;

namespace Rings.Packed;

/// <summary>
/// A <see cref="PackedDeviceRing"/> as a struct, for type arguments of the generic data path: .NET compiles
/// generic code once per struct type argument (reference types share one instantiation), so a
/// loop over <c>PackedDevice</c> calls the sealed ring's methods directly and may inline them instead of
/// dispatching through <see cref="IDeviceRing"/>. Every member forwards to <see cref="Ring"/>.
/// </summary>
/// <param name="ring">The ring.</param>
public readonly struct PackedDevice(PackedDeviceRing ring) : IDeviceRing
{
    private readonly PackedDeviceRing _ring = ring ?? throw new ArgumentNullException(nameof(ring));

    /// <summary>The ring every member forwards to.</summary>
    public PackedDeviceRing Ring => _ring;

    /// <inheritdoc/>
    public int Size => _ring.Size;

    /// <inheritdoc/>
    public bool IsBroken => _ring.IsBroken;

    /// <inheritdoc/>
    public BrokenReason BrokenReason => _ring.BrokenReason;

    /// <inheritdoc/>
    public QueueCounters Counters => _ring.Counters;

    /// <inheritdoc/>
    public bool TryPop(out DescriptorChain chain) => _ring.TryPop(out chain);

    /// <inheritdoc/>
    public int PopBurst(Span<PoppedChain> chains, Span<ChainSegment> segments) => _ring.PopBurst(chains, segments);

    /// <inheritdoc/>
    public int PopSingles(Span<ChainSegment> segments, Span<ChainToken> tokens) => _ring.PopSingles(segments, tokens);

    /// <inheritdoc/>
    public void PushUsed(ChainToken token, uint written) => _ring.PushUsed(token, written);

    /// <inheritdoc/>
    public void PushUsedBurst(ReadOnlySpan<ChainToken> tokens, ReadOnlySpan<uint> written) => _ring.PushUsedBurst(tokens, written);

    /// <inheritdoc/>
    public void PushUsedInOrderBatch(ChainToken last, uint written, int buffers) => _ring.PushUsedInOrderBatch(last, written, buffers);

    /// <inheritdoc/>
    public void PublishUsed() => _ring.PublishUsed();

    /// <inheritdoc/>
    public bool CallNeeded() => _ring.CallNeeded();

    /// <inheritdoc/>
    public bool EnableAvailNotifications() => _ring.EnableAvailNotifications();

    /// <inheritdoc/>
    public void DisableAvailNotifications() => _ring.DisableAvailNotifications();

    /// <inheritdoc/>
    public bool HasAvailable => _ring.HasAvailable;

    /// <inheritdoc/>
    public bool InOrder => _ring.InOrder;

    /// <inheritdoc/>
    public void UndoPops(RingPosition before) => _ring.UndoPops(before);

    /// <inheritdoc/>
    public void UndoNewestPops(int buffers) => _ring.UndoNewestPops(buffers);

    /// <inheritdoc/>
    public void MarkBroken(BrokenReason reason) => _ring.MarkBroken(reason);

    /// <inheritdoc/>
    public RingPosition Position => _ring.Position;

    /// <inheritdoc/>
    public void Restore(RingPosition position) => _ring.Restore(position);
}

/// <summary>
/// A <see cref="PackedDriverRing"/> as a struct, for type arguments of the generic data path: .NET compiles
/// generic code once per struct type argument (reference types share one instantiation), so a
/// loop over <c>PackedDriver</c> calls the sealed ring's methods directly and may inline them instead of
/// dispatching through <see cref="IDriverRing"/>. Every member forwards to <see cref="Ring"/>.
/// </summary>
/// <param name="ring">The ring.</param>
public readonly struct PackedDriver(PackedDriverRing ring) : IDriverRing
{
    private readonly PackedDriverRing _ring = ring ?? throw new ArgumentNullException(nameof(ring));

    /// <summary>The ring every member forwards to.</summary>
    public PackedDriverRing Ring => _ring;

    /// <inheritdoc/>
    public int Size => _ring.Size;

    /// <inheritdoc/>
    public int FreeDescriptors => _ring.FreeDescriptors;

    /// <inheritdoc/>
    public int Outstanding => _ring.Outstanding;

    /// <inheritdoc/>
    public bool IsBroken => _ring.IsBroken;

    /// <inheritdoc/>
    public BrokenReason BrokenReason => _ring.BrokenReason;

    /// <inheritdoc/>
    public QueueCounters Counters => _ring.Counters;

    /// <inheritdoc/>
    public bool TryAdd(ReadOnlySpan<BufferSegment> readable, ReadOnlySpan<BufferSegment> writable, out ushort id) => _ring.TryAdd(readable, writable, out id);

    /// <inheritdoc/>
    public bool TryAdd(BufferSegment segment, bool deviceWritable, out ushort id) => _ring.TryAdd(segment, deviceWritable, out id);

    /// <inheritdoc/>
    public int TryAddBurst(ReadOnlySpan<BufferSegment> buffers, bool deviceWritable, Span<ushort> ids) => _ring.TryAddBurst(buffers, deviceWritable, ids);

    /// <inheritdoc/>
    public void Publish() => _ring.Publish();

    /// <inheritdoc/>
    public bool KickNeeded() => _ring.KickNeeded();

    /// <inheritdoc/>
    public bool TryTakeUsed(out UsedElement used) => _ring.TryTakeUsed(out used);

    /// <inheritdoc/>
    public int TakeUsed(Span<UsedElement> used) => _ring.TakeUsed(used);

    /// <inheritdoc/>
    public bool EnableUsedNotifications() => _ring.EnableUsedNotifications();

    /// <inheritdoc/>
    public void DisableUsedNotifications() => _ring.DisableUsedNotifications();

    /// <inheritdoc/>
    public void Reset() => _ring.Reset();

    /// <inheritdoc/>
    public RingPosition DevicePosition => _ring.DevicePosition;

    /// <inheritdoc/>
    public RingPosition PrepareDeviceRestart() => _ring.PrepareDeviceRestart();
}
