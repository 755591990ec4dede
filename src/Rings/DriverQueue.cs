using Rings.Chains;

namespace Rings;

/// <summary>
/// The driver side of a ring with a token of the caller's on every buffer, as Linux's
/// <c>virtqueue_add_*</c> carries a data pointer: <see cref="TryAdd(BufferSegment, bool, TToken)"/>
/// stores it by buffer id and <see cref="TryTakeUsed"/> hands it back with the used length, so no
/// caller keeps an id-to-buffer table of its own. The tokens live in one array of the queue size:
/// nothing is allocated per buffer. One thread at a time, like the ring.
/// </summary>
/// <typeparam name="TToken">What the caller wants back with each used buffer (a slot number, a struct, an object).</typeparam>
public sealed class DriverQueue<TToken>
{
    private readonly IDriverRing _ring;
    private readonly TToken[] _tokens;

    /// <summary>Wraps the driver side of a ring; the ring must be used only through this queue from now on.</summary>
    /// <param name="ring">The driver ring (for example <see cref="RingPair.Driver"/>).</param>
    public DriverQueue(IDriverRing ring)
    {
        ArgumentNullException.ThrowIfNull(ring);
        _ring = ring;
        _tokens = new TToken[ring.Size];
    }

    /// <summary>The ring underneath (size, free descriptors, counters, broken state).</summary>
    public IDriverRing Ring => _ring;

    /// <summary>Adds a one-segment buffer carrying <paramref name="token"/>; the device sees it at <see cref="Publish"/>.</summary>
    /// <param name="segment">The buffer.</param>
    /// <param name="deviceWritable">True when the device writes it (receive), false when it reads it (transmit).</param>
    /// <param name="token">Handed back by <see cref="TryTakeUsed"/> when the device has used the buffer.</param>
    /// <returns>False when the ring is full (or broken).</returns>
    /// <exception cref="ArgumentOutOfRangeException">The buffer is not inside the memory table the ring was made with.</exception>
    public bool TryAdd(BufferSegment segment, bool deviceWritable, TToken token)
    {
        if (!_ring.TryAdd(segment, deviceWritable, out var id))
        {
            return false;
        }

        _tokens[id] = token;
        return true;
    }

    /// <summary>Adds a buffer of device-readable then device-writable segments carrying <paramref name="token"/>.</summary>
    /// <param name="readable">Segments the device reads, in order.</param>
    /// <param name="writable">Segments the device writes, in order.</param>
    /// <param name="token">Handed back by <see cref="TryTakeUsed"/> when the device has used the buffer.</param>
    /// <returns>False when there is no room (or the ring is broken).</returns>
    /// <exception cref="ArgumentException">No segment was given, or one is not inside the memory table the ring was made with.</exception>
    public bool TryAdd(ReadOnlySpan<BufferSegment> readable, ReadOnlySpan<BufferSegment> writable, TToken token)
    {
        if (!_ring.TryAdd(readable, writable, out var id))
        {
            return false;
        }

        _tokens[id] = token;
        return true;
    }

    /// <summary>Makes the buffers added since the last publish visible to the device at once.</summary>
    public void Publish() => _ring.Publish();

    /// <summary>After <see cref="Publish"/>: whether the device asked to be kicked.</summary>
    /// <returns>True when the caller must kick.</returns>
    public bool KickNeeded() => _ring.KickNeeded();

    /// <summary>Takes the next used buffer back with its token.</summary>
    /// <param name="token">The token the buffer was added with.</param>
    /// <param name="length">Bytes the device wrote into the buffer.</param>
    /// <returns>False when none is ready (or the device broke a rule: see <see cref="IDriverRing.IsBroken"/>).</returns>
    public bool TryTakeUsed(out TToken token, out uint length)
    {
        if (!_ring.TryTakeUsed(out var used))
        {
            token = default!;
            length = 0;
            return false;
        }

        // The slot is cleared so a reference token does not outlive its buffer.
        token = _tokens[used.Id];
        _tokens[used.Id] = default!;
        length = used.Length;
        return true;
    }
}
