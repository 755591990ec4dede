using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using Rings.Memory;

namespace Rings.Chains;

/// <summary>
/// One piece of a buffer as the driver describes it: a guest-physical address and a length.
/// Whether the device reads or writes it is said by which list it is passed in.
/// </summary>
/// <param name="Address">Guest-physical address of the first byte.</param>
/// <param name="Length">Length in bytes.</param>
public readonly record struct BufferSegment(ulong Address, uint Length)
{
    /// <summary>
    /// What a buffer of these segments holds: device-readable bytes, and device-writable bytes
    /// (saturating at <see cref="uint.MaxValue"/>, the most a used length can say).
    /// </summary>
    /// <param name="readable">Segments the device reads.</param>
    /// <param name="writable">Segments the device writes.</param>
    /// <param name="readBytes">Total device-readable bytes.</param>
    /// <param name="writeBytes">Total device-writable bytes, saturated.</param>
    internal static void Totals(ReadOnlySpan<BufferSegment> readable, ReadOnlySpan<BufferSegment> writable, out ulong readBytes, out uint writeBytes)
    {
        readBytes = 0;
        writeBytes = 0;
        foreach (var s in readable)
        {
            readBytes += s.Length;
        }

        foreach (var s in writable)
        {
            writeBytes = writeBytes + s.Length < writeBytes ? uint.MaxValue : writeBytes + s.Length;
        }
    }

    /// <summary>
    /// Checks, when a driver adds a buffer, that it lies inside the driver's own memory table: a
    /// wrong address is the caller's error, reported at once, not a broken device later.
    /// </summary>
    /// <param name="memory">The memory table the ring was made with.</param>
    /// <param name="segment">The segment.</param>
    /// <exception cref="ArgumentOutOfRangeException">The segment is not inside one region.</exception>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void CheckInside(GuestMemory memory, in BufferSegment segment)
    {
        if (!memory.TryTranslate(segment.Address, segment.Length, out _))
        {
            ThrowOutside(memory, segment);
        }
    }

    /// <summary>
    /// Checks a buffer of several segments for <see cref="IDriverRing.TryAdd(ReadOnlySpan{BufferSegment}, ReadOnlySpan{BufferSegment}, out ushort)"/>
    /// of either format: at least one segment, every one inside the memory table.
    /// </summary>
    /// <param name="memory">The memory table the ring was made with.</param>
    /// <param name="readable">Segments the device reads.</param>
    /// <param name="writable">Segments the device writes.</param>
    /// <returns>The number of segments.</returns>
    internal static int CheckBuffer(GuestMemory memory, ReadOnlySpan<BufferSegment> readable, ReadOnlySpan<BufferSegment> writable)
    {
        var total = readable.Length + writable.Length;
        if (total == 0)
        {
            throw new ArgumentException("a buffer needs at least one segment");
        }

        foreach (var s in readable)
        {
            CheckInside(memory, s);
        }

        foreach (var s in writable)
        {
            CheckInside(memory, s);
        }

        return total;
    }

    /// <summary>
    /// Checks a burst for <see cref="IDriverRing.TryAddBurst"/>: an id for every buffer, and every
    /// segment inside the memory table, all before any is added.
    /// </summary>
    /// <param name="memory">The memory table the ring was made with.</param>
    /// <param name="buffers">One segment per buffer.</param>
    /// <param name="ids">Where the ids will go.</param>
    /// <remarks>Not inlined: it runs once per burst, and the burst loops keep their registers for themselves.</remarks>
    [MethodImpl(MethodImplOptions.NoInlining)]
    internal static void CheckBurst(GuestMemory memory, ReadOnlySpan<BufferSegment> buffers, Span<ushort> ids)
    {
        if (ids.Length < buffers.Length)
        {
            ThrowTooFewIds(ids.Length, buffers.Length);
        }

        // The usual burst lies in one region: one pass for the range all its segments span, and
        // one translation of that range, instead of a search of the table per segment. Every
        // segment inside a range that is inside one region is inside that region, so this passes
        // exactly the bursts the search below would; any other burst (segments in several
        // regions, an end past 2^64) gets the search, which also names the first bad segment.
        var low = ulong.MaxValue;
        var high = 0UL;
        var wrapped = false;
        foreach (var segment in buffers)
        {
            var end = segment.Address + segment.Length;
            wrapped |= end < segment.Address;
            low = Math.Min(low, segment.Address);
            high = Math.Max(high, end);
        }

        if (!wrapped && low <= high && memory.TryTranslate(low, high - low, out _))
        {
            return;
        }

        foreach (var segment in buffers)
        {
            CheckInside(memory, segment);
        }
    }

    // Apart, so the message's formatting is not part of every caller's frame.
    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void ThrowTooFewIds(int ids, int buffers) =>
        throw new ArgumentException($"{ids} ids for {buffers} buffers", nameof(ids));

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void ThrowOutside(GuestMemory memory, BufferSegment segment)
    {
        var regions = string.Join(", ", memory.Regions.ToArray().Select(r => $"0x{r.GuestPhysicalAddress:x}+0x{r.Length:x}"));
        throw new ArgumentOutOfRangeException(
            nameof(segment),
            $"buffer 0x{segment.Address:x}+{segment.Length} is outside the driver's memory ({regions}): a buffer must lie inside one region of the memory table the ring was made with");
    }
}
