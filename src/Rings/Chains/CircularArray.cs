using System.Runtime.CompilerServices;

namespace Rings.Chains;

/// <summary>
/// Writes runs into a ring's private circular arrays (bookkeeping, never shared memory): one copy,
/// two where the run passes the array's end, instead of a bounds-checked store per entry.
/// </summary>
internal static class CircularArray
{
    /// <summary>Copies <paramref name="values"/> into <paramref name="ring"/> from index <paramref name="at"/>, wrapping at its end.</summary>
    /// <returns>The index after the last value written (0 when the run ends at the array's end).</returns>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int Write<T>(T[] ring, int at, ReadOnlySpan<T> values)
    {
        var room = ring.Length - at;
        if (values.Length < room)
        {
            values.CopyTo(ring.AsSpan(at));
            return at + values.Length;
        }

        values[..room].CopyTo(ring.AsSpan(at));
        values[room..].CopyTo(ring);
        return values.Length - room;
    }
}
