using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Rings.Chains;

namespace Rings.Fuzz.Targets;

/// <summary>What a device does with each chain it pops while a target drains a ring.</summary>
[Flags]
public enum DrainBehaviour
{
    /// <summary>Pop, check and push used only.</summary>
    None = 0,

    /// <summary>Write a pattern into every device-writable segment (it may alias ring memory: the driver is hostile).</summary>
    WriteBuffers = 1,

    /// <summary>Publish the used ring and ask whether to call after every pop.</summary>
    PublishEachPop = 2,

    /// <summary>
    /// Pop with PopSingles, a few buffers at a time, each checked as a chain of one segment; a
    /// single pop takes a buffer of several segments, which PopSingles leaves.
    /// </summary>
    PopSingles = 16,
}

/// <summary>
/// The format-independent half of the chain-walking targets: pop every chain a device ring hands
/// out (bounded), and check each one against the memory it must come from. A split or packed target
/// only lays the fuzzer's bytes into ring memory, builds its device ring and calls <see cref="Drain"/>.
/// </summary>
public static class DeviceChainChecks
{
    // What a split device ring may name when the driver's input breaks it (SplitDeviceRing and
    // the chain checks it shares); owner-set reasons (HeaderTooShort, DataPathStuck) and the
    // driver side's (used ring) reasons are never a ring's own verdict on popping.
    private static readonly BrokenReason[] SplitReasons =
    [
        BrokenReason.AvailIndexTooFarAhead, BrokenReason.HeadOutOfRange, BrokenReason.NextOutOfRange, BrokenReason.ChainTooLong,
        BrokenReason.ChainLoop, BrokenReason.AddressOutOfRange, BrokenReason.IndirectNotNegotiated, BrokenReason.NestedIndirect,
        BrokenReason.IndirectWithNext, BrokenReason.IndirectTableMisaligned, BrokenReason.ReadableAfterWritable,
    ];

    // The same for a packed device ring (2.8).
    private static readonly BrokenReason[] PackedReasons =
    [
        BrokenReason.ChainTooLong, BrokenReason.AddressOutOfRange, BrokenReason.IndirectNotNegotiated, BrokenReason.NestedIndirect,
        BrokenReason.IndirectWithNext, BrokenReason.IndirectTableMisaligned, BrokenReason.ReadableAfterWritable,
        BrokenReason.BufferIdInvalid, BrokenReason.DescriptorNotAvailable, BrokenReason.RingOverrun,
    ];

    private static int s_sink;

    /// <summary>
    /// Checks a device ring's verdict after popping: healthy, or broken for a reason a device ring
    /// of its format gives for what a driver wrote, and the same reason it first broke for
    /// (<paramref name="first"/>, <see cref="BrokenReason.None"/> when it was not broken before).
    /// </summary>
    /// <typeparam name="TRing">The device ring type.</typeparam>
    /// <param name="ring">The ring.</param>
    /// <param name="first">The reason seen when it first broke, or None.</param>
    public static void CheckVerdict<TRing>(TRing ring, BrokenReason first)
        where TRing : IDeviceRing
    {
        var reason = ring.BrokenReason;
        if (reason == BrokenReason.None)
        {
            FuzzViolation.Check(first == BrokenReason.None, $"a ring broken for {first} became healthy by itself");
            return;
        }

        var allowed = ring is Packed.PackedDeviceRing ? PackedReasons : SplitReasons;
        FuzzViolation.Check(Array.IndexOf(allowed, reason) >= 0, $"a {(ring is Packed.PackedDeviceRing ? "packed" : "split")} device ring broke for {reason}, which popping cannot cause");
        FuzzViolation.Check(first == BrokenReason.None || first == reason, $"a ring broken for {first} now says {reason}");
    }

    /// <summary>
    /// Pops up to <paramref name="maxPops"/> chains, checks every one with <see cref="CheckChain"/>,
    /// returns them used, and checks that a broken ring stays broken and pops nothing more.
    /// </summary>
    /// <typeparam name="TRing">The device ring type.</typeparam>
    /// <param name="ring">The device ring over the fuzzer-written memory.</param>
    /// <param name="regions">Every region of the ring's memory table.</param>
    /// <param name="maxPops">Bound on the pops (a multiple of the queue size).</param>
    /// <param name="behaviour">What the device does with each chain.</param>
    /// <param name="onPop">Called with each chain's id, in order, for format-specific checks (may be null).</param>
    /// <returns>Chains popped.</returns>
    public static int Drain<TRing>(TRing ring, GuardedRegion[] regions, int maxPops, DrainBehaviour behaviour, Action<int, ChainToken>? onPop = null)
        where TRing : IDeviceRing
    {
        ReadOnlySpan<byte> pattern = [0xDE, 0xAD, 0xBE, 0xEF, 0x5A, 0xA5, 0x00, 0xFF];
        Span<byte> frame = stackalloc byte[64];
        for (var b = 0; b < frame.Length; b++)
        {
            frame[b] = pattern[b & 7];
        }

        var pops = 0;
        var first = ring.BrokenReason;
        Span<ChainSegment> singles = stackalloc ChainSegment[3];
        Span<ChainToken> tokens = stackalloc ChainToken[3];
        for (var i = 0; i < maxPops; i++)
        {
            var wasBroken = ring.IsBroken;
            if ((behaviour & DrainBehaviour.PopSingles) != 0)
            {
                var popped = ring.PopSingles(singles[..Math.Min(singles.Length, maxPops - i)], tokens);
                FuzzViolation.Check(!wasBroken || popped == 0, $"a ring broken for {ring.BrokenReason} popped a buffer of one segment");
                for (var k = 0; k < popped; k++)
                {
                    CheckSingle(singles[k], tokens[k], ring.Size, regions);
                    onPop?.Invoke(pops, tokens[k]);
                    pops++;
                    var length = 0u;
                    if ((behaviour & DrainBehaviour.WriteBuffers) != 0 && singles[k].IsWritable)
                    {
                        length = (uint)Math.Min(frame.Length, singles[k].Span.Length);
                        frame[..(int)length].CopyTo(singles[k].Span);
                    }

                    ring.PushUsed(tokens[k], length);
                }

                if (popped > 0)
                {
                    // Each buffer counts as one pop of the bound.
                    i += popped - 1;
                    continue;
                }

                // None: empty, broken, or a buffer of several segments next, which the single pop
                // below takes.
            }

            if (!ring.TryPop(out var chain))
            {
                // Broken: for a reason popping can give, the same one each time; it stays broken
                // and pops nothing more, however often it is asked.
                CheckVerdict(ring, first);
                if (!ring.IsBroken)
                {
                    break; // empty
                }

                first = ring.BrokenReason;
                FuzzViolation.Check(!ring.HasAvailable, "a broken ring says buffers are available");
                continue;
            }

            FuzzViolation.Check(!wasBroken, $"a ring broken for {ring.BrokenReason} popped a chain");
            CheckChain(chain, ring.Size, regions);
            onPop?.Invoke(pops, chain.Token);
            pops++;

            var written = 0;
            if ((behaviour & DrainBehaviour.WriteBuffers) != 0)
            {
                written = chain.CopyToWritable(frame);
            }

            ring.PushUsed(chain.Token, (uint)written);
            if ((behaviour & DrainBehaviour.PublishEachPop) != 0)
            {
                ring.PublishUsed();
                ring.CallNeeded();
            }
        }

        ring.PublishUsed();
        ring.CallNeeded();
        return pops;
    }

    /// <summary>
    /// Checks one popped chain: at least one and at most <paramref name="maxSegments"/> segments,
    /// readable ones first, totals that add up, a token in range, and every segment wholly inside one
    /// region of the memory table (touched at both ends, so a stray pointer faults on a guard page).
    /// </summary>
    /// <param name="chain">The chain.</param>
    /// <param name="maxSegments">Most segments a chain may have (the queue size).</param>
    /// <param name="regions">Every region of the memory table.</param>
    public static void CheckChain(in DescriptorChain chain, int maxSegments, GuardedRegion[] regions)
    {
        var segments = chain.Segments;
        FuzzViolation.Check(segments.Length >= 1 && segments.Length <= maxSegments, $"a chain of {segments.Length} segments (queue size {maxSegments})");
        FuzzViolation.Check(chain.ReadableCount >= 0 && chain.ReadableCount <= segments.Length, $"readable count {chain.ReadableCount} of {segments.Length}");
        FuzzViolation.Check(chain.Token.Id < maxSegments, $"token id {chain.Token.Id} not below the queue size {maxSegments}");
        FuzzViolation.Check(chain.Token.DescriptorCount >= 1 && chain.Token.DescriptorCount <= maxSegments, $"token descriptor count {chain.Token.DescriptorCount}");
        ulong readBytes = 0, writeBytes = 0;
        for (var i = 0; i < segments.Length; i++)
        {
            var s = segments[i];
            FuzzViolation.Check(s.IsWritable == (i >= chain.ReadableCount), $"segment {i} writability out of order");
            if (s.IsWritable)
            {
                writeBytes += s.Length;
            }
            else
            {
                readBytes += s.Length;
            }

            CheckInside(s.Span, regions);
        }

        FuzzViolation.Check(readBytes == chain.ReadableBytes, $"readable bytes {chain.ReadableBytes}, segments hold {readBytes}");
        FuzzViolation.Check(writeBytes == chain.WritableBytes, $"writable bytes {chain.WritableBytes}, segments hold {writeBytes}");
    }

    /// <summary>Checks one buffer PopSingles popped: a token of one descriptor, in range, and its segment inside one region.</summary>
    /// <param name="segment">The buffer's segment.</param>
    /// <param name="token">Its token.</param>
    /// <param name="size">The queue size.</param>
    /// <param name="regions">Every region of the memory table.</param>
    public static void CheckSingle(ChainSegment segment, ChainToken token, int size, GuardedRegion[] regions)
    {
        FuzzViolation.Check(token.Id < size, $"token id {token.Id} not below the queue size {size}");
        FuzzViolation.Check(token.DescriptorCount == 1, $"a buffer of one segment took {token.DescriptorCount} descriptors");
        CheckInside(segment.Span, regions);
    }

    /// <summary>Checks that <paramref name="span"/> lies wholly inside one region, and touches its first and last byte.</summary>
    /// <param name="span">The bytes.</param>
    /// <param name="regions">The regions.</param>
    public static unsafe void CheckInside(ReadOnlySpan<byte> span, GuardedRegion[] regions)
    {
        var pointer = (nint)Unsafe.AsPointer(ref MemoryMarshal.GetReference(span));
        var inside = false;
        foreach (var r in regions)
        {
            inside |= r.Contains(pointer, (ulong)span.Length);
        }

        FuzzViolation.Check(inside, $"{span.Length} bytes at 0x{pointer:x} are outside every region");
        if (!span.IsEmpty)
        {
            // Touch both ends: outside the regions this faults on a guard page.
            s_sink += Volatile.Read(in span[0]) + Volatile.Read(in span[^1]);
        }
    }
}
