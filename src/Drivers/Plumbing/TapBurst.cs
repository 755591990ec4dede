namespace Rings.Linux.Plumbing;

/// <summary>
/// Buffers for a burst of TAP frames, made once and reused: <see cref="Capacity"/> slots of
/// <see cref="SlotBytes"/> each, every one holding a 12-byte virtio-net header followed by the
/// frame, as the TAP device reads and writes them. Nothing is allocated per frame.
/// </summary>
public sealed class TapBurst
{
    private readonly byte[] _buffer;
    private readonly int[] _lengths;
    private int _count;

    /// <summary>Creates the buffers.</summary>
    /// <param name="capacity">Frames in one burst.</param>
    /// <param name="slotBytes">
    /// Bytes per frame, header included: the header plus the MTU and 14 bytes of Ethernet header
    /// (plus 4 for a VLAN tag) without receive offloads; 12 + 65,550 with TSO, whose frames reach 64 KiB.
    /// </param>
    public TapBurst(int capacity, int slotBytes)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(capacity, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(slotBytes, TapDevice.HeaderSize + 14);
        _buffer = GC.AllocateUninitializedArray<byte>(checked(capacity * slotBytes), pinned: true);
        _lengths = new int[capacity];
        Capacity = capacity;
        SlotBytes = slotBytes;
    }

    /// <summary>Frames a burst holds at most.</summary>
    public int Capacity { get; }

    /// <summary>Bytes per slot, header included.</summary>
    public int SlotBytes { get; }

    /// <summary>Frames held: set by a receive, or by the caller (<see cref="Add"/>) before a transmit.</summary>
    public int Count
    {
        get => _count;
        set
        {
            ArgumentOutOfRangeException.ThrowIfNegative(value);
            ArgumentOutOfRangeException.ThrowIfGreaterThan(value, Capacity);
            _count = value;
        }
    }

    /// <summary>The whole slot <paramref name="index"/> (header and room for the frame).</summary>
    /// <param name="index">0 to <see cref="Capacity"/> - 1.</param>
    /// <returns>The slot's bytes.</returns>
    public Span<byte> Slot(int index) => _buffer.AsSpan(checked(index * SlotBytes), SlotBytes);

    /// <summary>Bytes held in slot <paramref name="index"/>, header included.</summary>
    /// <param name="index">0 to <see cref="Capacity"/> - 1.</param>
    /// <returns>The length.</returns>
    public int Length(int index) => _lengths[index];

    /// <summary>Sets the bytes held in slot <paramref name="index"/>, header included.</summary>
    /// <param name="index">0 to <see cref="Capacity"/> - 1.</param>
    /// <param name="length"><see cref="TapDevice.HeaderSize"/> to <see cref="SlotBytes"/>.</param>
    public void SetLength(int index, int length)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(length, TapDevice.HeaderSize);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(length, SlotBytes);
        _lengths[index] = length;
    }

    /// <summary>The virtio-net header of frame <paramref name="index"/> (<c>virtio_net_hdr_v1</c>, 12 bytes).</summary>
    /// <param name="index">0 to <see cref="Capacity"/> - 1.</param>
    /// <returns>The header bytes.</returns>
    public Span<byte> Header(int index) => Slot(index)[..TapDevice.HeaderSize];

    /// <summary>The Ethernet frame <paramref name="index"/> (after its header, up to its length).</summary>
    /// <param name="index">0 to <see cref="Capacity"/> - 1.</param>
    /// <returns>The frame bytes.</returns>
    public Span<byte> Frame(int index) => Slot(index)[TapDevice.HeaderSize.._lengths[index]];

    /// <summary>Appends a frame with its header (copied) for the next transmit.</summary>
    /// <param name="header">The 12-byte virtio-net header.</param>
    /// <param name="frame">The Ethernet frame.</param>
    /// <returns>False when the burst is full or the frame does not fit a slot.</returns>
    public bool Add(ReadOnlySpan<byte> header, ReadOnlySpan<byte> frame)
    {
        if (_count == Capacity || header.Length != TapDevice.HeaderSize || TapDevice.HeaderSize + frame.Length > SlotBytes)
        {
            return false;
        }

        var slot = Slot(_count);
        header.CopyTo(slot);
        frame.CopyTo(slot[TapDevice.HeaderSize..]);
        _lengths[_count] = TapDevice.HeaderSize + frame.Length;
        _count++;
        return true;
    }

    /// <summary>The buffer behind the slots (pinned for its lifetime).</summary>
    internal byte[] Buffer => _buffer;

    /// <summary>The lengths of the slots.</summary>
    internal int[] Lengths => _lengths;
}
