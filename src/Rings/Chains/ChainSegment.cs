namespace Rings.Chains;

/// <summary>
/// One validated piece of a chain as the device sees it: already translated through the
/// memory table, so <see cref="Span"/> is always inside a region. Only the device rings make these.
/// </summary>
public readonly unsafe struct ChainSegment
{
    private readonly byte* _host;

    internal ChainSegment(nint host, uint length, bool writable)
    {
        _host = (byte*)host;
        Length = length;
        IsWritable = writable;
    }

    /// <summary>Length in bytes.</summary>
    public uint Length { get; }

    /// <summary>True when the device may write this segment (VIRTQ_DESC_F_WRITE).</summary>
    public bool IsWritable { get; }

    /// <summary>The bytes of the segment in this process.</summary>
    public Span<byte> Span => new(_host, (int)Length);
}
