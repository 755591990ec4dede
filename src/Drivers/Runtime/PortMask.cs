using System.Numerics;
using System.Runtime.CompilerServices;

namespace Rings.Linux.Runtime;

/// <summary>
/// A set of ports of one pipeline, by <see cref="Ports.Port.Index"/>: one bit per port, so a
/// pipeline has at most <see cref="MaxPorts"/> ports. A value type with no allocation; the
/// destination set of a frame.
/// </summary>
public readonly struct PortMask : IEquatable<PortMask>
{
    /// <summary>Most ports one pipeline may have.</summary>
    public const int MaxPorts = 64;

    /// <summary>Creates a mask from its bits (bit k = port k).</summary>
    /// <param name="bits">The bits.</param>
    public PortMask(ulong bits)
    {
        Bits = bits;
    }

    /// <summary>The empty set.</summary>
    public static PortMask None => default;

    /// <summary>The bits (bit k = port k).</summary>
    public ulong Bits { get; }

    /// <summary>True when no port is in the set.</summary>
    public bool IsEmpty => Bits == 0;

    /// <summary>How many ports are in the set.</summary>
    public int Count => BitOperations.PopCount(Bits);

    /// <summary>The set holding only <paramref name="port"/>.</summary>
    /// <param name="port">A port index, 0 to 63.</param>
    /// <returns>The set.</returns>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static PortMask Of(int port) => new(1UL << port);

    /// <summary>The ports 0 to <paramref name="count"/> - 1.</summary>
    /// <param name="count">Number of ports, 0 to 64.</param>
    /// <returns>The set.</returns>
    public static PortMask FirstN(int count)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(count, MaxPorts);
        return new(count == MaxPorts ? ulong.MaxValue : (1UL << count) - 1);
    }

    /// <summary>True when <paramref name="port"/> is in the set.</summary>
    /// <param name="port">A port index.</param>
    /// <returns>True when present.</returns>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool Contains(int port) => (uint)port < MaxPorts && (Bits & (1UL << port)) != 0;

    /// <summary>This set plus <paramref name="port"/>.</summary>
    /// <param name="port">A port index.</param>
    /// <returns>The new set.</returns>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public PortMask With(int port) => new(Bits | (1UL << port));

    /// <summary>This set without <paramref name="port"/>.</summary>
    /// <param name="port">A port index.</param>
    /// <returns>The new set.</returns>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public PortMask Without(int port) => new(Bits & ~(1UL << port));

    /// <summary>The lowest port in the set, or -1 when empty.</summary>
    public int First => Bits == 0 ? -1 : BitOperations.TrailingZeroCount(Bits);

    /// <summary>Union.</summary>
    /// <param name="a">One set.</param>
    /// <param name="b">The other.</param>
    /// <returns>Ports in either.</returns>
    public static PortMask operator |(PortMask a, PortMask b) => new(a.Bits | b.Bits);

    /// <summary>Intersection.</summary>
    /// <param name="a">One set.</param>
    /// <param name="b">The other.</param>
    /// <returns>Ports in both.</returns>
    public static PortMask operator &(PortMask a, PortMask b) => new(a.Bits & b.Bits);

    /// <summary>Complement (all 64 port indices not in the set).</summary>
    /// <param name="a">The set.</param>
    /// <returns>Ports not in it.</returns>
    public static PortMask operator ~(PortMask a) => new(~a.Bits);

    /// <summary>Equality.</summary>
    /// <param name="a">One set.</param>
    /// <param name="b">The other.</param>
    /// <returns>True when equal.</returns>
    public static bool operator ==(PortMask a, PortMask b) => a.Bits == b.Bits;

    /// <summary>Inequality.</summary>
    /// <param name="a">One set.</param>
    /// <param name="b">The other.</param>
    /// <returns>True when different.</returns>
    public static bool operator !=(PortMask a, PortMask b) => a.Bits != b.Bits;

    /// <inheritdoc/>
    public bool Equals(PortMask other) => Bits == other.Bits;

    /// <inheritdoc/>
    public override bool Equals(object? obj) => obj is PortMask m && Equals(m);

    /// <inheritdoc/>
    public override int GetHashCode() => Bits.GetHashCode();

    /// <summary>Enumerates the ports in the set, lowest first, without allocating.</summary>
    /// <returns>The enumerator.</returns>
    public Enumerator GetEnumerator() => new(Bits);

    /// <inheritdoc/>
    public override string ToString()
    {
        var parts = new List<string>();
        foreach (var p in this)
        {
            parts.Add(p.ToString(System.Globalization.CultureInfo.InvariantCulture));
        }

        return $"{{{string.Join(',', parts)}}}";
    }

    /// <summary>Walks the set bits of a mask.</summary>
    public struct Enumerator
    {
        private ulong _rest;

        internal Enumerator(ulong bits)
        {
            _rest = bits;
            Current = -1;
        }

        /// <summary>The current port index.</summary>
        public int Current { get; private set; }

        /// <summary>Moves to the next port.</summary>
        /// <returns>False at the end.</returns>
        public bool MoveNext()
        {
            if (_rest == 0)
            {
                return false;
            }

            Current = BitOperations.TrailingZeroCount(_rest);
            _rest &= _rest - 1;
            return true;
        }
    }
}
