using System.Runtime.CompilerServices;

namespace Rings.Chains;

/// <summary>
/// What a device's burst pop writes for each buffer, beside its segments: the whole record
/// (<see cref="PoppedChainRecords"/>, for <see cref="IDeviceRing.PopBurst"/>) or only the token
/// (<see cref="TokenRecords"/>, for <see cref="IDeviceRing.PopSingles"/>). The rings' pop loops are
/// generic over it, so each pop has one loop, specialized by the JIT for each (a struct type
/// argument), and the token-only pop writes no more than it returns.
/// </summary>
/// <typeparam name="TRecord">The record written per buffer.</typeparam>
internal interface IPopRecords<TRecord>
    where TRecord : struct
{
    /// <summary>True when only buffers of one segment may be popped (the pop stops before any other).</summary>
    static abstract bool SingleSegmentOnly { get; }

    /// <summary>The record of a buffer that is one direct descriptor.</summary>
    /// <param name="token">The buffer's token.</param>
    /// <param name="segment">Its segment's index in the caller's segment span.</param>
    /// <param name="length">The descriptor's length.</param>
    /// <param name="writable">Whether the descriptor is device-writable.</param>
    /// <param name="before">The ring's position before the pop.</param>
    /// <returns>The record.</returns>
    static abstract TRecord Direct(ChainToken token, int segment, uint length, bool writable, RingPosition before);

    /// <summary>The record of a buffer the general walk took.</summary>
    /// <param name="token">The buffer's token.</param>
    /// <param name="firstSegment">Its first segment's index in the caller's segment span.</param>
    /// <param name="count">Its segments.</param>
    /// <param name="readable">How many of them are device-readable.</param>
    /// <param name="readBytes">Its device-readable bytes.</param>
    /// <param name="writeBytes">Its device-writable bytes.</param>
    /// <param name="before">The ring's position before the pop.</param>
    /// <returns>The record.</returns>
    static abstract TRecord Walked(ChainToken token, int firstSegment, int count, int readable, ulong readBytes, ulong writeBytes, RingPosition before);
}

/// <summary>A <see cref="PoppedChain"/> per buffer, of any length (<see cref="IDeviceRing.PopBurst"/>).</summary>
internal readonly struct PoppedChainRecords : IPopRecords<PoppedChain>
{
    public static bool SingleSegmentOnly => false;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static PoppedChain Direct(ChainToken token, int segment, uint length, bool writable, RingPosition before) =>
        new(token, segment, 1, writable ? 0 : 1, writable ? 0UL : length, writable ? length : 0UL, before);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static PoppedChain Walked(ChainToken token, int firstSegment, int count, int readable, ulong readBytes, ulong writeBytes, RingPosition before) =>
        new(token, firstSegment, count, readable, readBytes, writeBytes, before);
}

/// <summary>
/// The token alone, per buffer of one segment (<see cref="IDeviceRing.PopSingles"/>): the segment
/// says the rest (its length, whether it is writable), and the token is what the device returns.
/// </summary>
internal readonly struct TokenRecords : IPopRecords<ChainToken>
{
    public static bool SingleSegmentOnly => true;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ChainToken Direct(ChainToken token, int segment, uint length, bool writable, RingPosition before) => token;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ChainToken Walked(ChainToken token, int firstSegment, int count, int readable, ulong readBytes, ulong writeBytes, RingPosition before) => token;
}
