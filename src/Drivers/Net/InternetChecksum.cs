using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Rings.Linux.Net;

/// <summary>
/// The Internet checksum (RFC 1071): ones' complement sum of 16-bit big-endian words. Sums a
/// vector at a time where the hardware has vectors, with a scalar tail.
/// </summary>
public static class InternetChecksum
{
    /// <summary>The folded checksum of <paramref name="data"/> (not inverted).</summary>
    /// <param name="data">The bytes; an odd last byte is padded with zero.</param>
    /// <param name="initial">A partial sum to continue from (e.g. a pseudo-header's).</param>
    /// <returns>The 16-bit ones' complement sum.</returns>
    public static ushort Sum(ReadOnlySpan<byte> data, uint initial = 0)
    {
        ulong sum = initial;
        var i = 0;
        if (Vector256.IsHardwareAccelerated && data.Length >= 64)
        {
            // Widen 16-bit words to 32-bit lanes and add; each lane can take 2^16 additions
            // before it could overflow, far beyond any frame.
            var acc = Vector256<uint>.Zero;
            ref var start = ref MemoryMarshal.GetReference(data);
            for (; i + 32 <= data.Length; i += 32)
            {
                var v = Vector256.LoadUnsafe(ref Unsafe.Add(ref start, i)).AsUInt16();
                var (lo, hi) = Vector256.Widen(v);
                acc += lo + hi;
            }

            // The words were loaded little-endian; swapping the folded sum's bytes gives the
            // big-endian sum (RFC 1071 section 2(B): byte order independence).
            ulong le = 0;
            for (var k = 0; k < Vector256<uint>.Count; k++)
            {
                le += acc.GetElement(k);
            }

            le = Fold(le);
            sum += (ushort)((le >> 8) | ((le & 0xFF) << 8));
        }

        if (Vector128.IsHardwareAccelerated && data.Length - i >= 16)
        {
            // Small frames (and the tail of large ones) 16 bytes at a time, the same way.
            var acc = Vector128<uint>.Zero;
            ref var start = ref MemoryMarshal.GetReference(data);
            for (; i + 16 <= data.Length; i += 16)
            {
                var v = Vector128.LoadUnsafe(ref Unsafe.Add(ref start, i)).AsUInt16();
                var (lo, hi) = Vector128.Widen(v);
                acc += lo + hi;
            }

            var le = Fold(Vector128.Sum(acc.AsUInt64() & Vector128.Create(0xFFFF_FFFFUL)) + Vector128.Sum(acc.AsUInt64() >>> 32));
            sum += (ushort)((le >> 8) | ((le & 0xFF) << 8));
        }

        for (; i + 1 < data.Length; i += 2)
        {
            sum += BinaryPrimitives.ReadUInt16BigEndian(data[i..]);
        }

        if (i < data.Length)
        {
            sum += (uint)data[i] << 8;
        }

        return (ushort)Fold(sum);
    }

    /// <summary>The checksum field value for <paramref name="data"/>: the inverted sum.</summary>
    /// <param name="data">The bytes.</param>
    /// <returns>The value to store so the whole sums to 0xFFFF.</returns>
    public static ushort Compute(ReadOnlySpan<byte> data) => (ushort)~Sum(data);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ulong Fold(ulong sum)
    {
        while ((sum >> 16) != 0)
        {
            sum = (sum & 0xFFFF) + (sum >> 16);
        }

        return sum;
    }
}
