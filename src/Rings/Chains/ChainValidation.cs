using System.Runtime.CompilerServices;
using Rings.Memory;

namespace Rings.Chains;

/// <summary>The per-descriptor checks and bookkeeping both device rings apply while walking a chain.</summary>
internal static class ChainValidation
{
    /// <summary>
    /// Checks one descriptor of a chain as a hostile driver wrote it and appends it: device-readable
    /// segments must come before device-writable ones (2.7.4.2, 2.8.17), and the whole range must
    /// translate through the memory table.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static BrokenReason AddSegment(
        GuestMemory memory, ChainSegment[] segments, ulong address, uint length, bool writable,
        ref int count, ref int readable, ref ulong readBytes, ref ulong writeBytes, ref bool seenWritable)
    {
        if (writable)
        {
            seenWritable = true;
        }
        else if (seenWritable)
        {
            return BrokenReason.ReadableAfterWritable;
        }

        if (length > int.MaxValue || !memory.TryTranslate(address, length, out var host))
        {
            return BrokenReason.AddressOutOfRange;
        }

        // The callers bound the chain by the queue size, which is the array's length.
        segments[count++] = new ChainSegment(host, length, writable);
        if (writable)
        {
            writeBytes += length;
        }
        else
        {
            readBytes += length;
            readable++;
        }

        return BrokenReason.None;
    }
}
