using System.Runtime.CompilerServices;
using Rings.Chains;

namespace Rings.Benchmarks;

/// <summary>
/// The burst round trip both <c>RingRoundTripBenchmarks</c> and <c>bench/Alternate</c> measure (this
/// file is compiled into each): the driver adds a burst of one-segment buffers and publishes, the
/// device pops them (with <c>PopBurst</c>, a full record per buffer, or <c>PopSingles</c>, its segment
/// and token), returns them (one used entry per buffer, or one per burst under IN_ORDER) and
/// publishes, the driver takes them back. Holds the burst's scratch spans.
/// </summary>
internal sealed class BurstRoundTrip
{
    private readonly BufferSegment[] _segments;
    private readonly ushort[] _ids;
    private readonly PoppedChain[] _chains;
    private readonly ChainSegment[] _chainSegments;
    private readonly ChainToken[] _tokens;
    private readonly UsedElement[] _used;

    /// <summary>Creates the scratch for bursts of <paramref name="burst"/> copies of <paramref name="segment"/>.</summary>
    /// <param name="segment">The buffer each add makes available.</param>
    /// <param name="burst">Buffers per publish.</param>
    public BurstRoundTrip(BufferSegment segment, int burst)
    {
        _segments = Enumerable.Repeat(segment, burst).ToArray();
        _ids = new ushort[burst];
        _chains = new PoppedChain[burst];
        _chainSegments = new ChainSegment[burst];
        _tokens = new ChainToken[burst];
        _used = new UsedElement[burst];
    }

    /// <summary>
    /// Moves <paramref name="packets"/> packets round, a burst at a time. Inlined into each caller
    /// with the sealed ring types known, so the ring calls are direct (shared generic code over
    /// classes alone would dispatch through the interfaces).
    /// </summary>
    /// <param name="driver">The driver side.</param>
    /// <param name="device">The device side of the same ring.</param>
    /// <param name="inOrder">Whether VIRTIO_F_IN_ORDER is negotiated (one used entry per burst).</param>
    /// <param name="packets">Packets to move, a multiple of the burst.</param>
    /// <typeparam name="TDriver">The driver ring's type.</typeparam>
    /// <typeparam name="TDevice">The device ring's type.</typeparam>
    /// <typeparam name="TPop">How the device pops: <see cref="BurstPops"/> or <see cref="SinglePops"/>.</typeparam>
    /// <returns>A checksum of the ids taken back.</returns>
    /// <exception cref="InvalidOperationException">A burst did not come back whole.</exception>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public long Run<TDriver, TDevice, TPop>(TDriver driver, TDevice device, bool inOrder, int packets)
        where TDriver : IDriverRing
        where TDevice : IDeviceRing
        where TPop : struct, IBurstPop
    {
        var segments = _segments.AsSpan();
        var ids = _ids.AsSpan();
        var chains = _chains.AsSpan();
        var chainSegments = _chainSegments.AsSpan();
        var tokens = _tokens.AsSpan();
        var used = _used.AsSpan();
        long sum = 0;
        for (var done = 0; done < packets; done += segments.Length)
        {
            driver.TryAddBurst(segments, false, ids);
            driver.Publish();
            var popped = TPop.Pop(device, chains, chainSegments, tokens, inOrder);
            if (popped == 0)
            {
                throw new InvalidOperationException("a round trip lost packets: none popped");
            }

            if (inOrder)
            {
                device.PushUsedInOrderBatch(tokens[popped - 1], 0, popped);
            }
            else
            {
                device.PushUsedBurst(tokens[..popped], default);
            }

            device.PublishUsed();
            var taken = driver.TakeUsed(used);
            if (taken != popped || popped != segments.Length)
            {
                throw new InvalidOperationException($"a round trip lost packets: {segments.Length} added, {popped} popped, {taken} taken back");
            }

            sum += Checksum(used[..taken]);
        }

        return sum;
    }

    /// <summary>
    /// The ids' sum, in a method of its own: inlined into the round trip's long body the JIT kept
    /// the running sum on the stack, and each add waited for the last one's store (a tenth of the
    /// split round trip's samples, none of it ring work).
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static long Checksum(ReadOnlySpan<UsedElement> used)
    {
        long sum = 0;
        foreach (var element in used)
        {
            sum += element.Id;
        }

        return sum;
    }
}

/// <summary>How <see cref="BurstRoundTrip"/>'s device pops a burst and gets the tokens to return.</summary>
/// <remarks>A struct type argument, so each round trip is compiled with its own pop call only (and a
/// build of the library without PopSingles still runs the PopBurst round trip).</remarks>
internal interface IBurstPop
{
    /// <summary>Pops a burst into <paramref name="segments"/> and puts the tokens to return in <paramref name="tokens"/>.</summary>
    /// <param name="device">The device ring.</param>
    /// <param name="chains">Scratch for PopBurst's records.</param>
    /// <param name="segments">The burst's segments.</param>
    /// <param name="tokens">Receives the tokens (under IN_ORDER only the last one is needed).</param>
    /// <param name="inOrder">Whether VIRTIO_F_IN_ORDER is negotiated.</param>
    /// <typeparam name="TDevice">The device ring's type.</typeparam>
    /// <returns>Buffers popped.</returns>
    static abstract int Pop<TDevice>(TDevice device, Span<PoppedChain> chains, Span<ChainSegment> segments, Span<ChainToken> tokens, bool inOrder)
        where TDevice : IDeviceRing;
}

/// <summary>PopBurst: a full record per buffer, whose tokens are then gathered.</summary>
internal readonly struct BurstPops : IBurstPop
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int Pop<TDevice>(TDevice device, Span<PoppedChain> chains, Span<ChainSegment> segments, Span<ChainToken> tokens, bool inOrder)
        where TDevice : IDeviceRing
    {
        var popped = device.PopBurst(chains, segments);
        if (!inOrder)
        {
            for (var i = 0; i < popped; i++)
            {
                tokens[i] = chains[i].Token;
            }
        }
        else if (popped > 0)
        {
            tokens[popped - 1] = chains[popped - 1].Token;
        }

        return popped;
    }
}

/// <summary>PopSingles: the segment and the token per buffer, the tokens ready to be returned.</summary>
internal readonly struct SinglePops : IBurstPop
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int Pop<TDevice>(TDevice device, Span<PoppedChain> chains, Span<ChainSegment> segments, Span<ChainToken> tokens, bool inOrder)
        where TDevice : IDeviceRing => device.PopSingles(segments, tokens);
}
