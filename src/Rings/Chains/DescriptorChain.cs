namespace Rings.Chains;

/// <summary>
/// A buffer popped by a device ring: its id, its validated segments (device-readable first,
/// then device-writable) and their totals. The segments live in the ring's scratch space and
/// are valid until the next pop; keep <see cref="Token"/> to return the buffer later.
/// </summary>
public readonly ref struct DescriptorChain
{
    internal DescriptorChain(ReadOnlySpan<ChainSegment> segments, int readableCount, ulong readableBytes, ulong writableBytes, ChainToken token)
    {
        Segments = segments;
        ReadableCount = readableCount;
        ReadableBytes = readableBytes;
        WritableBytes = writableBytes;
        Token = token;
    }

    /// <summary>All segments, readable ones first.</summary>
    public ReadOnlySpan<ChainSegment> Segments { get; }

    /// <summary>How many of <see cref="Segments"/> are device-readable.</summary>
    public int ReadableCount { get; }

    /// <summary>Total device-readable bytes.</summary>
    public ulong ReadableBytes { get; }

    /// <summary>Total device-writable bytes.</summary>
    public ulong WritableBytes { get; }

    /// <summary>What the device passes back to <c>PushUsed</c> to return this buffer.</summary>
    public ChainToken Token { get; }

    /// <summary>The device-readable segments.</summary>
    public ReadOnlySpan<ChainSegment> Readable => Segments[..ReadableCount];

    /// <summary>The device-writable segments.</summary>
    public ReadOnlySpan<ChainSegment> Writable => Segments[ReadableCount..];

    /// <summary>Copies the device-readable bytes, in order, into <paramref name="destination"/>.</summary>
    /// <param name="destination">Where to copy; copying stops when it is full.</param>
    /// <returns>Bytes copied.</returns>
    public int CopyReadableTo(Span<byte> destination)
    {
        var copied = 0;
        foreach (var s in Readable)
        {
            var src = s.Span;
            var n = Math.Min(src.Length, destination.Length - copied);
            src[..n].CopyTo(destination[copied..]);
            copied += n;
            if (copied == destination.Length)
            {
                break;
            }
        }

        return copied;
    }

    /// <summary>Copies <paramref name="source"/> into the device-writable segments, in order.</summary>
    /// <param name="source">The bytes to write; copying stops when the writable space is full.</param>
    /// <returns>Bytes written.</returns>
    public int CopyToWritable(ReadOnlySpan<byte> source)
    {
        var copied = 0;
        foreach (var s in Writable)
        {
            if (copied == source.Length)
            {
                break;
            }

            var dst = s.Span;
            var n = Math.Min(dst.Length, source.Length - copied);
            source.Slice(copied, n).CopyTo(dst);
            copied += n;
        }

        return copied;
    }
}

/// <summary>
/// Identifies a popped buffer when the device returns it: the buffer id and how many
/// descriptors it occupied (the packed ring advances its used position by that count, 2.8.7).
/// </summary>
public readonly record struct ChainToken
{
    // One word (the id in the low half), so a token is stored and copied whole.
    private readonly uint _value;

    /// <summary>Creates a token.</summary>
    /// <param name="id">The buffer id (split: head descriptor index; packed: the driver's buffer id).</param>
    /// <param name="descriptorCount">Ring descriptors the buffer occupied (an indirect table counts as one).</param>
    public ChainToken(ushort id, ushort descriptorCount) => _value = id | ((uint)descriptorCount << 16);

    // From the one word (id in the low half), as PoppedChain keeps it.
    internal ChainToken(uint value) => _value = value;

    /// <summary>The buffer id (split: head descriptor index; packed: the driver's buffer id).</summary>
    public ushort Id { get => (ushort)_value; init => _value = (_value & 0xFFFF0000u) | value; }

    /// <summary>Ring descriptors the buffer occupied (an indirect table counts as one).</summary>
    public ushort DescriptorCount { get => (ushort)(_value >> 16); init => _value = (_value & 0xFFFFu) | ((uint)value << 16); }

    // The token as one word, for PoppedChain's packing.
    internal uint Value => _value;

    /// <summary>The two parts.</summary>
    /// <param name="id">The buffer id.</param>
    /// <param name="descriptorCount">Ring descriptors the buffer occupied.</param>
    public void Deconstruct(out ushort id, out ushort descriptorCount)
    {
        id = Id;
        descriptorCount = DescriptorCount;
    }

    /// <summary>Checks the lengths <see cref="IDeviceRing.PushUsedBurst"/> is given.</summary>
    /// <param name="tokens">The tokens.</param>
    /// <param name="written">Empty, or one length per token.</param>
    /// <exception cref="ArgumentException">Neither.</exception>
    internal static void CheckWritten(ReadOnlySpan<ChainToken> tokens, ReadOnlySpan<uint> written)
    {
        if (!written.IsEmpty && written.Length != tokens.Length)
        {
            ThrowWrittenMismatch(written.Length, tokens.Length);
        }
    }

    // Apart, so the message's formatting is not part of every caller's frame.
    [System.Diagnostics.CodeAnalysis.DoesNotReturn]
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private static void ThrowWrittenMismatch(int written, int tokens) =>
        throw new ArgumentException($"{written} written lengths for {tokens} buffers: give one per buffer, or none", nameof(written));
}

/// <summary>A buffer returned by the device, as the driver takes it back.</summary>
/// <param name="Id">The buffer id the driver got when it added the buffer.</param>
/// <param name="Length">Bytes the device wrote into the buffer's device-writable part.</param>
public readonly record struct UsedElement(ushort Id, uint Length);
