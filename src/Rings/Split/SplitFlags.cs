namespace Rings.Split;

/// <summary>Flag values of the split virtqueue (virtio 1.2 section 2.7).</summary>
internal static class SplitFlags
{
    public const ushort DescNext = 1;
    public const ushort DescWrite = 2;
    public const ushort DescIndirect = 4;

    /// <summary>avail.flags: VRING_AVAIL_F_NO_INTERRUPT (2.7.7).</summary>
    public const ushort AvailNoInterrupt = 1;

    /// <summary>used.flags: VRING_USED_F_NO_NOTIFY (2.7.10).</summary>
    public const ushort UsedNoNotify = 1;
}
