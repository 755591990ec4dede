using System.Runtime.CompilerServices;

namespace Rings;

/// <summary>The EVENT_IDX notification decision (virtio 1.2 section 2.7.7.2 and 2.7.10).</summary>
public static class EventIndex
{
    /// <summary>
    /// Whether moving an index from <paramref name="oldIndex"/> to <paramref name="newIndex"/>
    /// crossed the peer's <paramref name="eventIndex"/>: the spec's
    /// <c>(u16)(new - event - 1) &lt; (u16)(new - old)</c>, exact for free-running u16 indices.
    /// </summary>
    /// <param name="eventIndex">The peer's used_event or avail_event.</param>
    /// <param name="newIndex">The index just published.</param>
    /// <param name="oldIndex">The index at the previous notification decision.</param>
    /// <returns>True when the peer asked to be notified.</returns>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool NeedsNotification(ushort eventIndex, ushort newIndex, ushort oldIndex) =>
        (ushort)(newIndex - eventIndex - 1) < (ushort)(newIndex - oldIndex);
}
