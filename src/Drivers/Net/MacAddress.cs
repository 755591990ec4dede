using System.Buffers.Binary;
using System.Globalization;

namespace Rings.Linux.Net;

/// <summary>
/// A 48-bit Ethernet (IEEE 802) address, held in one 64-bit value so it is read from a frame
/// with two loads and compared, hashed and stored as a number. The octets are kept in wire
/// order from the low byte up, so the group (multicast) bit, bit 0 of the first octet, is bit 0.
/// </summary>
public readonly struct MacAddress : IEquatable<MacAddress>
{
    /// <summary>Octets in an address.</summary>
    public const int Size = 6;

    /// <summary>The 48 bits of an address within <see cref="Bits"/>.</summary>
    internal const ulong Mask = (1UL << 48) - 1;

    private MacAddress(ulong bits) => Bits = bits;

    /// <summary>ff:ff:ff:ff:ff:ff.</summary>
    public static MacAddress Broadcast => new(Mask);

    /// <summary>Octet 0 in bits 0-7 up to octet 5 in bits 40-47 (a little-endian load of the six octets).</summary>
    internal ulong Bits { get; }

    /// <summary>Group address (multicast or broadcast): bit 0 of the first octet.</summary>
    public bool IsMulticast => (Bits & 1) != 0;

    /// <summary>ff:ff:ff:ff:ff:ff.</summary>
    public bool IsBroadcast => Bits == Mask;

    /// <summary>Locally administered (not from a vendor's block): bit 1 of the first octet.</summary>
    public bool IsLocallyAdministered => (Bits & 2) != 0;

    /// <summary>Reads the six octets at the start of <paramref name="octets"/> (a frame's destination, or <c>frame[6..]</c> for its source).</summary>
    /// <param name="octets">At least six bytes.</param>
    /// <returns>The address.</returns>
    public static MacAddress Read(ReadOnlySpan<byte> octets) =>
        new(BinaryPrimitives.ReadUInt32LittleEndian(octets) | ((ulong)BinaryPrimitives.ReadUInt16LittleEndian(octets[4..]) << 32));

    /// <summary>The address whose octets are the low 48 bits of <paramref name="value"/>, most significant first (0x02_00_00_00_00_01 is 02:00:00:00:00:01).</summary>
    /// <param name="value">The address as a number; bits above 47 must be zero.</param>
    /// <returns>The address.</returns>
    public static MacAddress FromUInt64(ulong value)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThan(value, Mask);
        return new(BinaryPrimitives.ReverseEndianness(value) >> 16);
    }

    /// <summary>The address as a number, first octet most significant (the inverse of <see cref="FromUInt64"/>).</summary>
    /// <returns>A value below 2^48.</returns>
    public ulong ToUInt64() => BinaryPrimitives.ReverseEndianness(Bits << 16);

    /// <summary>Parses six hexadecimal octets separated by ':' or '-'.</summary>
    /// <param name="text">Such as <c>02:52:49:4e:47:01</c>.</param>
    /// <param name="address">The address when the text is one.</param>
    /// <returns>False when it is not.</returns>
    public static bool TryParse(ReadOnlySpan<char> text, out MacAddress address)
    {
        address = default;
        if (text.Length != 17)
        {
            return false;
        }

        Span<byte> octets = stackalloc byte[Size];
        for (var i = 0; i < Size; i++)
        {
            if (i > 0 && text[(3 * i) - 1] is not (':' or '-'))
            {
                return false;
            }

            if (!byte.TryParse(text.Slice(3 * i, 2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out octets[i]))
            {
                return false;
            }
        }

        address = Read(octets);
        return true;
    }

    /// <summary>Parses six hexadecimal octets separated by ':' or '-'.</summary>
    /// <param name="text">Such as <c>02:52:49:4e:47:01</c>.</param>
    /// <returns>The address.</returns>
    /// <exception cref="FormatException">The text is not an address.</exception>
    public static MacAddress Parse(string text) =>
        TryParse(text, out var address) ? address : throw new FormatException($"'{text}' is not a MAC address (six hexadecimal octets separated by ':')");

    /// <summary>Writes the six octets to the start of <paramref name="destination"/>.</summary>
    /// <param name="destination">At least six bytes.</param>
    public void WriteTo(Span<byte> destination)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(destination, (uint)Bits);
        BinaryPrimitives.WriteUInt16LittleEndian(destination[4..], (ushort)(Bits >> 32));
    }

    /// <inheritdoc/>
    public bool Equals(MacAddress other) => Bits == other.Bits;

    /// <inheritdoc/>
    public override bool Equals(object? obj) => obj is MacAddress other && Equals(other);

    /// <inheritdoc/>
    public override int GetHashCode() => Bits.GetHashCode();

    /// <summary>Lower-case octets separated by ':'.</summary>
    /// <returns>Such as <c>02:52:49:4e:47:01</c>.</returns>
    public override string ToString() => string.Create(17, Bits, static (chars, bits) =>
    {
        for (var i = 0; i < Size; i++)
        {
            var octet = (byte)(bits >> (8 * i));
            if (i > 0)
            {
                chars[(3 * i) - 1] = ':';
            }

            octet.TryFormat(chars.Slice(3 * i, 2), out _, "x2", CultureInfo.InvariantCulture);
        }
    });

    /// <summary>Same address.</summary>
    /// <param name="left">One address.</param>
    /// <param name="right">The other.</param>
    /// <returns>True when equal.</returns>
    public static bool operator ==(MacAddress left, MacAddress right) => left.Equals(right);

    /// <summary>Different addresses.</summary>
    /// <param name="left">One address.</param>
    /// <param name="right">The other.</param>
    /// <returns>True when different.</returns>
    public static bool operator !=(MacAddress left, MacAddress right) => !left.Equals(right);
}
