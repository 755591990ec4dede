using System.Runtime.CompilerServices;

namespace Rings.Packed;

/// <summary>
/// The EVENT_IDX decision of a packed ring (virtio 1.2 sections 2.8.10 and 2.8.14): whether moving
/// a ring position forward crossed the descriptor the peer named in its event suppression
/// structure with <c>RING_EVENT_FLAGS_DESC</c>.
/// </summary>
public static class PackedEventIndex
{
    /// <summary>
    /// Encodes a ring position and wrap counter as an event suppression <c>off_wrap</c> word:
    /// bits 0-14 the descriptor offset, bit 15 the wrap counter.
    /// </summary>
    /// <param name="position">Descriptor offset in the ring (below 32768).</param>
    /// <param name="wrapCounter">The wrap counter the offset belongs to.</param>
    /// <returns>The <c>off_wrap</c> value.</returns>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ushort OffWrap(int position, bool wrapCounter) =>
        (ushort)((position & 0x7FFF) | (wrapCounter ? PackedFlags.EventWrap : 0));

    /// <summary>
    /// Whether the descriptors in the window that ends at <paramref name="newPosition"/> (wrap
    /// counter <paramref name="newWrapCounter"/>) and spans <paramref name="advanced"/> descriptors
    /// include the one named by <paramref name="offWrap"/>. The peer's position is never ahead of
    /// ours, so an event whose wrap counter differs from ours lies one lap back; both ends are
    /// then laid on one line and the split ring's u16 test applies, as Linux's
    /// <c>virtqueue_kick_prepare_packed</c> does.
    /// </summary>
    /// <param name="offWrap">The peer's <c>off_wrap</c> word.</param>
    /// <param name="newPosition">The position just published (next descriptor not yet made available/used).</param>
    /// <param name="newWrapCounter">The wrap counter that goes with <paramref name="newPosition"/>.</param>
    /// <param name="advanced">Descriptors published since the previous decision.</param>
    /// <param name="size">Queue size.</param>
    /// <returns>True when the peer asked to be notified.</returns>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool NeedsNotification(ushort offWrap, int newPosition, bool newWrapCounter, int advanced, int size)
    {
        if (advanced <= 0)
        {
            return false;
        }

        // A whole lap or more went by: every offset was crossed.
        if (advanced >= size)
        {
            return true;
        }

        int eventPosition = offWrap & 0x7FFF;
        if (((offWrap & PackedFlags.EventWrap) != 0) != newWrapCounter)
        {
            eventPosition -= size;
        }

        // old = new - advanced may be negative (the previous lap): u16 arithmetic keeps it exact
        // because every distance involved is below 2^16.
        return EventIndex.NeedsNotification((ushort)eventPosition, (ushort)newPosition, (ushort)(newPosition - advanced));
    }
}
