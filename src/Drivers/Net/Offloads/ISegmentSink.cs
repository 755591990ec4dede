namespace Rings.Linux.Net;

/// <summary>
/// Where <see cref="GsoSegmenter"/> writes the frames it cuts. A struct (or ref struct) passed by
/// reference, so the calls are direct and nothing is allocated per frame: a switch implements it
/// over the buffers it took from the destination's receive queue.
/// </summary>
public interface ISegmentSink
{
    /// <summary>
    /// Asked once, before anything is written: can the sink take <paramref name="segments"/> frames,
    /// none longer than <paramref name="maxSegmentLength"/> bytes? False refuses the whole frame
    /// (<see cref="OffloadStatus.NoRoom"/>), so a frame is either cut whole or not at all.
    /// </summary>
    /// <param name="segments">How many frames follow.</param>
    /// <param name="maxSegmentLength">The longest of them, in bytes.</param>
    /// <returns>True when the sink has the room.</returns>
    bool TryReserve(int segments, int maxSegmentLength);

    /// <summary>The buffer for the next frame, at least <paramref name="length"/> bytes long.</summary>
    /// <param name="length">The frame's length.</param>
    /// <returns>The buffer (its first <paramref name="length"/> bytes are written).</returns>
    Span<byte> Take(int length);

    /// <summary>The frame written into the last buffer is complete, <paramref name="length"/> bytes long.</summary>
    /// <param name="length">The frame's length.</param>
    void Commit(int length);
}
