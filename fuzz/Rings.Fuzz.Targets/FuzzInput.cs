using System.Buffers.Binary;

namespace Rings.Fuzz.Targets;

/// <summary>
/// Reads a fuzz input front to back. Past the end every read yields zero and <see cref="IsEmpty"/>
/// turns true, so a target can decode any input, however short, without bounds checks of its own.
/// </summary>
public ref struct FuzzInput
{
    private readonly ReadOnlySpan<byte> _data;
    private int _position;

    /// <summary>Starts at the first byte of <paramref name="data"/>.</summary>
    /// <param name="data">The input.</param>
    public FuzzInput(ReadOnlySpan<byte> data)
    {
        _data = data;
        _position = 0;
    }

    /// <summary>True once every byte has been read.</summary>
    public readonly bool IsEmpty => _position >= _data.Length;

    /// <summary>Bytes not read yet.</summary>
    public readonly ReadOnlySpan<byte> Rest => IsEmpty ? default : _data[_position..];

    /// <summary>Next byte, or 0 past the end.</summary>
    /// <returns>The byte.</returns>
    public byte Byte() => _position < _data.Length ? _data[_position++] : Skip(1);

    /// <summary>Next little-endian u16, or 0 past the end.</summary>
    /// <returns>The value.</returns>
    public ushort UInt16()
    {
        if (_data.Length - _position >= 2)
        {
            var v = BinaryPrimitives.ReadUInt16LittleEndian(_data[_position..]);
            _position += 2;
            return v;
        }

        return (ushort)(Byte() | (Byte() << 8));
    }

    /// <summary>Next little-endian u32, or 0 past the end.</summary>
    /// <returns>The value.</returns>
    public uint UInt32() => UInt16() | ((uint)UInt16() << 16);

    /// <summary>Takes up to <paramref name="count"/> bytes (fewer at the end).</summary>
    /// <param name="count">Bytes wanted.</param>
    /// <returns>The bytes.</returns>
    public ReadOnlySpan<byte> Take(int count)
    {
        var rest = Rest;
        var n = Math.Min(count, rest.Length);
        _position += count;
        return rest[..n];
    }

    private byte Skip(int count)
    {
        _position += count;
        return 0;
    }
}
