using Rings.Chains;

namespace Rings.Linux.Net;

/// <summary>A read or write position inside a run of chain segments.</summary>
internal ref struct SegmentCursor
{
    private readonly ReadOnlySpan<ChainSegment> _segments;
    private int _index;
    private int _offset;

    public SegmentCursor(ReadOnlySpan<ChainSegment> segments)
    {
        _segments = segments;
        _index = 0;
        _offset = 0;
        SkipEmpty();
    }

    public readonly bool AtEnd => _index >= _segments.Length;

    /// <summary>The contiguous bytes at the cursor (empty at the end).</summary>
    public readonly Span<byte> Current => AtEnd ? default : _segments[_index].Span[_offset..];

    public void Advance(int bytes)
    {
        _offset += bytes;
        if (_offset >= (int)_segments[_index].Length)
        {
            _index++;
            _offset = 0;
            SkipEmpty();
        }
    }

    /// <summary>Skips <paramref name="bytes"/> bytes; false when the segments end first.</summary>
    public bool Skip(int bytes)
    {
        while (bytes > 0)
        {
            if (AtEnd)
            {
                return false;
            }

            var n = Math.Min(bytes, Current.Length);
            Advance(n);
            bytes -= n;
        }

        return true;
    }

    /// <summary>Copies from <paramref name="source"/> into the segments at this cursor until either ends.</summary>
    public int CopyFrom(ref SegmentCursor source, long limit)
    {
        long copied = 0;
        while (copied < limit && !AtEnd && !source.AtEnd)
        {
            var dst = Current;
            var src = source.Current;
            var n = (int)Math.Min(Math.Min(dst.Length, src.Length), limit - copied);
            src[..n].CopyTo(dst);
            Advance(n);
            source.Advance(n);
            copied += n;
        }

        return (int)copied;
    }

    private void SkipEmpty()
    {
        while (_index < _segments.Length && _segments[_index].Length == 0)
        {
            _index++;
        }
    }
}
