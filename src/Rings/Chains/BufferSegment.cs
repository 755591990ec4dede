namespace Rings.Chains;

/// <summary>
/// One piece of a buffer as the driver describes it: a guest-physical address and a length.
/// Whether the device reads or writes it is said by which list it is passed in.
/// </summary>
/// <param name="Address">Guest-physical address of the first byte.</param>
/// <param name="Length">Length in bytes.</param>
public readonly record struct BufferSegment(ulong Address, uint Length);
