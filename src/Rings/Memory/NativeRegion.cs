using System.Runtime.InteropServices;

namespace Rings.Memory;

/// <summary>
/// Zeroed, page-aligned native memory owned by this process: the in-process stand-in for a
/// shared-memory mapping (tests, benchmarks and the one-process demo). Freed on dispose.
/// </summary>
public sealed unsafe class NativeRegion : IDisposable
{
    private void* _pointer;

    /// <summary>Allocates <paramref name="length"/> zeroed bytes aligned to 4096.</summary>
    /// <param name="length">Bytes to allocate; must be positive.</param>
    /// <param name="guestPhysicalAddress">The guest-physical address this memory stands for.</param>
    public NativeRegion(ulong length, ulong guestPhysicalAddress = 0)
    {
        ArgumentOutOfRangeException.ThrowIfZero(length);
        _pointer = NativeMemory.AlignedAlloc((nuint)length, 4096);
        NativeMemory.Clear(_pointer, (nuint)length);
        Length = length;
        GuestPhysicalAddress = guestPhysicalAddress;
    }

    /// <summary>Length in bytes.</summary>
    public ulong Length { get; }

    /// <summary>The guest-physical address of the first byte.</summary>
    public ulong GuestPhysicalAddress { get; }

    /// <summary>Host address of the first byte.</summary>
    public nint HostAddress
    {
        get
        {
            ObjectDisposedException.ThrowIf(_pointer == null, this);
            return (nint)_pointer;
        }
    }

    /// <summary>This memory as a memory-table region.</summary>
    public GuestMemoryRegion Region => new(GuestPhysicalAddress, Length, HostAddress);

    /// <summary>
    /// The bytes at [offset, offset + length) of this region.
    /// </summary>
    /// <param name="offset">Offset from the start.</param>
    /// <param name="length">Number of bytes.</param>
    /// <returns>A span over the bytes.</returns>
    public Span<byte> Slice(ulong offset, int length)
    {
        ObjectDisposedException.ThrowIf(_pointer == null, this);
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        if (offset > Length || (ulong)length > Length - offset)
        {
            throw new ArgumentOutOfRangeException(nameof(offset), $"[{offset}, +{length}) is outside a region of {Length} bytes");
        }

        return new Span<byte>((byte*)_pointer + offset, length);
    }

    /// <summary>Frees the memory.</summary>
    public void Dispose()
    {
        if (_pointer != null)
        {
            NativeMemory.AlignedFree(_pointer);
            _pointer = null;
        }
    }
}
