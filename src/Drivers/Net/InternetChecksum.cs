using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Rings.Linux.Net;

/// <summary>
/// The Internet checksum (RFC 1071): ones' complement sum of 16-bit big-endian words. Sums the
/// widest vector the hardware accelerates (512, 256 or 128 bits), then narrower vectors and a
/// scalar tail; any length and alignment.
/// </summary>
/// <remarks>
/// The vector paths load words in the machine's byte order and swap the folded sum once at the
/// end (RFC 1071 section 2(B): the sum is byte-order independent). Every addition is exact (no
/// lane ever wraps), so the folded result is 0 only when all the data is 0, exactly as the
/// word-by-word definition gives.
/// </remarks>
public static class InternetChecksum
{
    // Vectors summed into 32-bit lanes before they are reduced: each vector adds at most
    // 2 x 0xFFFF to a lane, so 16384 of them, however spread over the accumulators, stay below
    // 2^31 even once the accumulators are added together.
    private const int BlockVectors = 16384;

    /// <summary>The folded checksum of <paramref name="data"/> (not inverted).</summary>
    /// <param name="data">The bytes; an odd last byte is padded with zero.</param>
    /// <param name="initial">A partial sum to continue from (e.g. a pseudo-header's).</param>
    /// <returns>The 16-bit ones' complement sum.</returns>
    public static ushort Sum(ReadOnlySpan<byte> data, uint initial = 0)
    {
        ref var p = ref MemoryMarshal.GetReference(data);
        var n = (nuint)data.Length;
        nuint i = 0;
        ulong native = 0;

        // IsHardwareAccelerated is a JIT-time constant: the paths the hardware lacks vanish.
        if (Vector512.IsHardwareAccelerated && n >= 64)
        {
            native += Blocks512(ref p, n, ref i);
        }

        if (Vector256.IsHardwareAccelerated && n - i >= 32)
        {
            native += Blocks256(ref p, n, ref i);
        }

        if (Vector128.IsHardwareAccelerated && n - i >= 16)
        {
            native += Blocks128(ref p, n, ref i);
        }

        native += Rest(ref p, n, i);
        return Finish(native, initial);
    }

    /// <summary>The checksum field value for <paramref name="data"/>: the inverted sum.</summary>
    /// <param name="data">The bytes.</param>
    /// <returns>The value to store so the whole sums to 0xFFFF.</returns>
    public static ushort Compute(ReadOnlySpan<byte> data) => (ushort)~Sum(data);

    /// <summary>
    /// The sum of two adjacent runs of bytes from their separate sums: the second run's sum is
    /// byte-swapped when the first run has an odd length, because its words then straddle the
    /// boundary (RFC 1071 section 2(B)).
    /// </summary>
    /// <param name="first">The sum of the first run.</param>
    /// <param name="second">The sum of the run that follows it.</param>
    /// <param name="firstLength">The first run's length in bytes.</param>
    /// <returns>The sum of the two runs together.</returns>
    public static ushort Combine(ushort first, ushort second, int firstLength)
    {
        uint b = (firstLength & 1) != 0 ? BinaryPrimitives.ReverseEndianness(second) : second;
        return (ushort)Fold(first + (ulong)b);
    }

    /// <summary>Adds 16 bits to a sum (ones' complement).</summary>
    /// <param name="sum">A folded sum.</param>
    /// <param name="value">The 16-bit word to add.</param>
    /// <returns>The folded sum.</returns>
    public static ushort Add(ushort sum, ushort value) => (ushort)Fold(sum + (ulong)value);

    /// <summary>
    /// The word-by-word RFC 1071 definition, one big-endian 16-bit word per step: the reference
    /// the vector paths are tested and measured against.
    /// </summary>
    internal static ushort SumScalar(ReadOnlySpan<byte> data, uint initial = 0)
    {
        ulong sum = initial;
        var i = 0;
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

    /// <summary>
    /// The sum using vectors no wider than <paramref name="widestBits"/> (512, 256, 128 or 0 for
    /// scalar only), so each path can be tested and measured on hardware that has a wider one.
    /// </summary>
    internal static ushort SumWith(ReadOnlySpan<byte> data, int widestBits, uint initial = 0)
    {
        ref var p = ref MemoryMarshal.GetReference(data);
        var n = (nuint)data.Length;
        nuint i = 0;
        ulong native = 0;
        if (widestBits >= 512 && n >= 64)
        {
            native += Blocks512(ref p, n, ref i);
        }

        if (widestBits >= 256 && n - i >= 32)
        {
            native += Blocks256(ref p, n, ref i);
        }

        if (widestBits >= 128 && n - i >= 16)
        {
            native += Blocks128(ref p, n, ref i);
        }

        native += Rest(ref p, n, i);
        return Finish(native, initial);
    }

    // Each Blocks method sums whole vectors from i on, advancing i, and returns a sum of
    // native-order 16-bit words (not folded). A 32-bit lane holds two words: adding the low and
    // high halves separately keeps every addition exact without widening shuffles.
    private static ulong Blocks512(ref byte p, nuint n, ref nuint i)
    {
        var low = Vector512.Create(0xFFFFu);
        ulong total = 0;
        while (n - i >= 64)
        {
            var end = i + Math.Min(n - i, (nuint)(BlockVectors * 64));
            Vector512<uint> a0 = default, a1 = default, a2 = default, a3 = default;
            for (; end - i >= 256; i += 256)
            {
                var v0 = Vector512.LoadUnsafe(ref p, i).AsUInt32();
                var v1 = Vector512.LoadUnsafe(ref p, i + 64).AsUInt32();
                var v2 = Vector512.LoadUnsafe(ref p, i + 128).AsUInt32();
                var v3 = Vector512.LoadUnsafe(ref p, i + 192).AsUInt32();
                a0 += (v0 & low) + Vector512.ShiftRightLogical(v0, 16);
                a1 += (v1 & low) + Vector512.ShiftRightLogical(v1, 16);
                a2 += (v2 & low) + Vector512.ShiftRightLogical(v2, 16);
                a3 += (v3 & low) + Vector512.ShiftRightLogical(v3, 16);
            }

            for (; end - i >= 64; i += 64)
            {
                var v = Vector512.LoadUnsafe(ref p, i).AsUInt32();
                a0 += (v & low) + Vector512.ShiftRightLogical(v, 16);
            }

            var a = (a0 + a1) + (a2 + a3);
            total += Vector512.Sum((a & low) + Vector512.ShiftRightLogical(a, 16));
        }

        return total;
    }

    private static ulong Blocks256(ref byte p, nuint n, ref nuint i)
    {
        var low = Vector256.Create(0xFFFFu);
        ulong total = 0;
        while (n - i >= 32)
        {
            var end = i + Math.Min(n - i, (nuint)(BlockVectors * 32));
            Vector256<uint> a0 = default, a1 = default, a2 = default, a3 = default;
            for (; end - i >= 128; i += 128)
            {
                var v0 = Vector256.LoadUnsafe(ref p, i).AsUInt32();
                var v1 = Vector256.LoadUnsafe(ref p, i + 32).AsUInt32();
                var v2 = Vector256.LoadUnsafe(ref p, i + 64).AsUInt32();
                var v3 = Vector256.LoadUnsafe(ref p, i + 96).AsUInt32();
                a0 += (v0 & low) + Vector256.ShiftRightLogical(v0, 16);
                a1 += (v1 & low) + Vector256.ShiftRightLogical(v1, 16);
                a2 += (v2 & low) + Vector256.ShiftRightLogical(v2, 16);
                a3 += (v3 & low) + Vector256.ShiftRightLogical(v3, 16);
            }

            for (; end - i >= 32; i += 32)
            {
                var v = Vector256.LoadUnsafe(ref p, i).AsUInt32();
                a0 += (v & low) + Vector256.ShiftRightLogical(v, 16);
            }

            var a = (a0 + a1) + (a2 + a3);
            total += Vector256.Sum((a & low) + Vector256.ShiftRightLogical(a, 16));
        }

        return total;
    }

    private static ulong Blocks128(ref byte p, nuint n, ref nuint i)
    {
        var low = Vector128.Create(0xFFFFu);
        ulong total = 0;
        while (n - i >= 16)
        {
            var end = i + Math.Min(n - i, (nuint)(BlockVectors * 16));
            Vector128<uint> a0 = default, a1 = default;
            for (; end - i >= 32; i += 32)
            {
                var v0 = Vector128.LoadUnsafe(ref p, i).AsUInt32();
                var v1 = Vector128.LoadUnsafe(ref p, i + 16).AsUInt32();
                a0 += (v0 & low) + Vector128.ShiftRightLogical(v0, 16);
                a1 += (v1 & low) + Vector128.ShiftRightLogical(v1, 16);
            }

            for (; end - i >= 16; i += 16)
            {
                var v = Vector128.LoadUnsafe(ref p, i).AsUInt32();
                a0 += (v & low) + Vector128.ShiftRightLogical(v, 16);
            }

            var a = a0 + a1;
            total += Vector128.Sum((a & low) + Vector128.ShiftRightLogical(a, 16));
        }

        return total;
    }

    // Native-order words from i to the end, 8 bytes at a time: a 32-bit half is congruent to the
    // sum of its two words modulo 0xFFFF, so the halves are added whole.
    private static ulong Rest(ref byte p, nuint n, nuint i)
    {
        ulong sum = 0;
        for (; n - i >= 8; i += 8)
        {
            var x = Unsafe.ReadUnaligned<ulong>(ref Unsafe.Add(ref p, i));
            sum += (uint)x + (x >> 32);
        }

        if (n - i >= 4)
        {
            sum += Unsafe.ReadUnaligned<uint>(ref Unsafe.Add(ref p, i));
            i += 4;
        }

        if (n - i >= 2)
        {
            sum += Unsafe.ReadUnaligned<ushort>(ref Unsafe.Add(ref p, i));
            i += 2;
        }

        if (n - i >= 1)
        {
            // A last odd byte is the high half of a big-endian word padded with zero.
            uint last = Unsafe.Add(ref p, i);
            sum += BitConverter.IsLittleEndian ? last : last << 8;
        }

        return sum;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ushort Finish(ulong native, uint initial)
    {
        var folded = (ushort)Fold(native);
        if (BitConverter.IsLittleEndian)
        {
            folded = BinaryPrimitives.ReverseEndianness(folded);
        }

        return (ushort)Fold(folded + (ulong)initial);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ulong Fold(ulong sum)
    {
        sum = (sum & 0xFFFF_FFFF) + (sum >> 32);
        sum = (sum & 0xFFFF) + (sum >> 16);
        sum = (sum & 0xFFFF) + (sum >> 16);
        return (sum & 0xFFFF) + (sum >> 16);
    }
}
