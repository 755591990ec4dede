using Rings.Memory;

namespace Rings;

/// <summary>
/// Both sides of one virtqueue in one block of this process's memory, made in one call: the ring
/// of the chosen format, then a buffer area for the memory the driver's buffers describe. For two
/// threads of a process passing buffers, and for tests; between processes a vhost-user front-end
/// and back-end share a ring the same way over shared memory. Addresses are guest-physical, from
/// <see cref="BaseAddress"/>; <see cref="Span"/> reaches the bytes behind them.
/// </summary>
/// <example>
/// <code>
/// using var pair = RingPair.Create(RingFormat.Split, 256, bufferBytes: 256 * 2048);
/// var buffer = new BufferSegment(pair.BufferAddress, 64);
/// pair.Span(buffer.Address, 64).Fill(0xAB);
/// pair.Driver.TryAdd(buffer, deviceWritable: false, out var id);
/// pair.Driver.Publish();
/// pair.Device.TryPop(out var chain);           // the device side sees the 64 bytes
/// pair.Device.PushUsed(chain.Token, 0);
/// pair.Device.PublishUsed();
/// pair.Driver.TryTakeUsed(out var used);       // used.Id == id
/// </code>
/// </example>
public sealed class RingPair : IDisposable
{
    /// <summary>Guest-physical address of the region's first byte: the ring; the buffer area follows it.</summary>
    public const ulong BaseAddress = 0x1_0000_0000;

    private readonly NativeRegion _region;

    private RingPair(NativeRegion region, RingFormat format, int size, VirtioFeatures features, ulong ringBytes, ulong bufferBytes)
    {
        _region = region;
        Format = format;
        Size = size;
        Features = features;
        Memory = new GuestMemory(region.Region);
        Areas = format.Layout(size).At(BaseAddress);
        BufferAddress = BaseAddress + ringBytes;
        BufferBytes = bufferBytes;
        Driver = format.CreateDriver(Memory, Areas, size, features);
        Device = format.CreateDevice(Memory, Memory, Areas, size, features, new RingPosition(0));
    }

    /// <summary>The ring format.</summary>
    public RingFormat Format { get; }

    /// <summary>Queue size.</summary>
    public int Size { get; }

    /// <summary>The features both sides run with (INDIRECT_DESC aside: no indirect tables are laid out, so buffers go direct).</summary>
    public VirtioFeatures Features { get; }

    /// <summary>The region as a memory table: ring and buffer area.</summary>
    public GuestMemory Memory { get; }

    /// <summary>Where the ring's three areas lie.</summary>
    public RingAreas Areas { get; }

    /// <summary>Guest-physical address of the buffer area (cache-line aligned, zeroed).</summary>
    public ulong BufferAddress { get; }

    /// <summary>Bytes in the buffer area.</summary>
    public ulong BufferBytes { get; }

    /// <summary>The driver side: add buffers, publish, take used buffers back. One thread at a time.</summary>
    public IDriverRing Driver { get; }

    /// <summary>The device side: pop buffers, push them used, publish. One thread at a time.</summary>
    public IDeviceRing Device { get; }

    /// <summary>
    /// Allocates one zeroed region for a ring of <paramref name="format"/> and <paramref name="size"/>
    /// followed by <paramref name="bufferBytes"/> of buffer area, and builds both sides over it.
    /// </summary>
    /// <param name="format">Split or packed.</param>
    /// <param name="size">Queue size (see <see cref="RingFormat.SizeRule"/>).</param>
    /// <param name="bufferBytes">Bytes of buffer area after the ring.</param>
    /// <param name="features">Features both sides use (EVENT_IDX, IN_ORDER).</param>
    /// <returns>The pair; dispose it (after both sides are done) to free the memory.</returns>
    /// <exception cref="ArgumentOutOfRangeException">The size is not valid for the format.</exception>
    public static RingPair Create(RingFormat format, int size, ulong bufferBytes = 0, VirtioFeatures features = VirtioFeatures.None)
    {
        var ringBytes = (ulong)format.Layout(size).TotalBytes;
        var region = new NativeRegion(ringBytes + bufferBytes, BaseAddress);
        try
        {
            return new RingPair(region, format, size, features, ringBytes, bufferBytes);
        }
        catch
        {
            region.Dispose();
            throw;
        }
    }

    /// <summary>The bytes at guest-physical <paramref name="address"/>, in the ring or the buffer area.</summary>
    /// <param name="address">Guest-physical address.</param>
    /// <param name="length">Bytes.</param>
    /// <returns>A span over the region.</returns>
    /// <exception cref="ArgumentOutOfRangeException">The bytes are not all in the region.</exception>
    public Span<byte> Span(ulong address, int length)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        if (!Memory.TryGetSpan(address, (uint)length, out var span))
        {
            throw new ArgumentOutOfRangeException(nameof(address), $"0x{address:x}+{length} is outside the ring pair's memory");
        }

        return span;
    }

    /// <summary>Frees the memory; neither side may be used afterwards.</summary>
    public void Dispose() => _region.Dispose();
}
