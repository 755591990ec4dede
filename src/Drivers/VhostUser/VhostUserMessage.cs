namespace Rings.Linux.VhostUser;

/// <summary>The shape of a message's payload.</summary>
public enum VhostUserPayload
{
    /// <summary>No payload.</summary>
    None,

    /// <summary>A single u64.</summary>
    U64,

    /// <summary>A vring state {u32 index; u32 num}.</summary>
    VringState,

    /// <summary>A vring address description.</summary>
    VringAddress,

    /// <summary>A memory table {u32 count; u32 padding; region[count]}.</summary>
    MemoryTable,

    /// <summary>A single memory region {u64 padding; region}.</summary>
    MemoryRegion,

    /// <summary>An inflight description {u64 mmap size; u64 mmap offset; u16 queues; u16 queue size}.</summary>
    Inflight,

    /// <summary>A config access {u32 offset; u32 size; u32 flags; u8 payload[size]} (GET/SET_CONFIG); a failed GET_CONFIG is answered with an empty body.</summary>
    Config,
}

/// <summary>
/// A device configuration space access (GET/SET_CONFIG): where in the space, how many bytes, the
/// flags (0: a front-end access, 1: live migration) and the bytes themselves (in a GET_CONFIG
/// request as many as asked for, their values unused).
/// </summary>
/// <param name="Offset">Byte offset into the config space.</param>
/// <param name="Size">Bytes accessed; the payload carries this many.</param>
/// <param name="Flags">VHOST_SET_CONFIG_TYPE_FRONTEND (0) or VHOST_SET_CONFIG_TYPE_MIGRATION (1).</param>
/// <param name="Data">The bytes (<paramref name="Size"/> of them).</param>
public readonly record struct VhostUserConfigAccess(uint Offset, uint Size, uint Flags, byte[] Data)
{
    /// <summary>Equal when every field and every byte is.</summary>
    /// <param name="other">The other access.</param>
    /// <returns>True when equal.</returns>
    public bool Equals(VhostUserConfigAccess other) =>
        Offset == other.Offset && Size == other.Size && Flags == other.Flags && (Data ?? []).AsSpan().SequenceEqual(other.Data ?? []);

    /// <summary>A hash of the fields and the bytes.</summary>
    /// <returns>The hash.</returns>
    public override int GetHashCode()
    {
        var hash = new HashCode();
        hash.Add(Offset);
        hash.Add(Size);
        hash.Add(Flags);
        hash.AddBytes(Data ?? []);
        return hash.ToHashCode();
    }
}

/// <summary>
/// An inflight description (GET/SET_INFLIGHT_FD): where the shared inflight region is in its file,
/// and for how many virtqueues of which size it was made.
/// </summary>
/// <param name="MmapSize">Bytes of the region (0 in the GET request).</param>
/// <param name="MmapOffset">Offset of the region in its file (0 in the GET request).</param>
/// <param name="NumQueues">Virtqueues the region tracks.</param>
/// <param name="QueueSize">Descriptors per virtqueue.</param>
public readonly record struct InflightDescription(ulong MmapSize, ulong MmapOffset, ushort NumQueues, ushort QueueSize);

/// <summary>A vring state description: which ring and a number (size, base, or enable).</summary>
/// <param name="Index">The vring index.</param>
/// <param name="Num">The number.</param>
public readonly record struct VringState(uint Index, uint Num);

/// <summary>
/// A vring address description. Ring addresses are in the front-end's user (virtual) address
/// space; <see cref="Log"/> is a guest address for dirty logging (unused here).
/// For a packed ring, <see cref="Descriptor"/> is the descriptor ring, <see cref="Avail"/> the
/// driver event suppression area and <see cref="Used"/> the device event suppression area.
/// </summary>
/// <param name="Index">The vring index.</param>
/// <param name="Flags">VHOST_VRING_F_LOG (bit 0) or 0.</param>
/// <param name="Descriptor">Descriptor table (ring).</param>
/// <param name="Used">Used ring (device area).</param>
/// <param name="Avail">Avail ring (driver area).</param>
/// <param name="Log">Guest address of the used ring for logging.</param>
public readonly record struct VringAddress(uint Index, uint Flags, ulong Descriptor, ulong Used, ulong Avail, ulong Log);

/// <summary>One memory region: where it is for the guest, for the front-end process, and in the file.</summary>
/// <param name="GuestPhysicalAddress">Guest-physical address of the first byte (descriptor addresses use it).</param>
/// <param name="Size">Bytes in the region.</param>
/// <param name="UserAddress">The front-end's virtual address of the first byte (ring addresses use it).</param>
/// <param name="MmapOffset">Offset of the region in the memory file.</param>
public readonly record struct MemoryRegionDescription(ulong GuestPhysicalAddress, ulong Size, ulong UserAddress, ulong MmapOffset);

/// <summary>
/// One decoded vhost-user message: header fields and the payload its request carries.
/// Plain data: build one with the factory methods, encode it with <see cref="VhostUserCodec"/>.
/// </summary>
public readonly record struct VhostUserMessage
{
    /// <summary>The request code.</summary>
    public VhostUserRequest Request { get; init; }

    /// <summary>The header flags (version, REPLY, NEED_REPLY).</summary>
    public uint Flags { get; init; }

    /// <summary>Which payload field is meaningful.</summary>
    public VhostUserPayload Payload { get; init; }

    /// <summary>The u64 payload.</summary>
    public ulong Value { get; init; }

    /// <summary>The vring state payload.</summary>
    public VringState State { get; init; }

    /// <summary>The vring address payload.</summary>
    public VringAddress Address { get; init; }

    /// <summary>The single-region payload (ADD/REM_MEM_REG).</summary>
    public MemoryRegionDescription Region { get; init; }

    /// <summary>The inflight description payload (GET/SET_INFLIGHT_FD and the GET reply).</summary>
    public InflightDescription Inflight { get; init; }

    /// <summary>The config access payload (GET/SET_CONFIG and the GET reply); null in a failed GET_CONFIG's empty reply.</summary>
    public VhostUserConfigAccess? Config { get; init; }

    /// <summary>The memory table payload (SET_MEM_TABLE).</summary>
    public IReadOnlyList<MemoryRegionDescription>? Regions { get; init; }

    /// <summary>True when the sender set NEED_REPLY.</summary>
    public bool NeedsReply => (Flags & VhostUserConstants.NeedReplyFlag) != 0;

    /// <summary>True when this is a reply.</summary>
    public bool IsReply => (Flags & VhostUserConstants.ReplyFlag) != 0;

    /// <summary>For SET_VRING_KICK/CALL/ERR: the vring index (bits 0-7).</summary>
    public uint FileIndex => (uint)(Value & VhostUserConstants.VringIndexMask);

    /// <summary>For SET_VRING_KICK/CALL/ERR: true when no fd is attached (bit 8).</summary>
    public bool FileHasNoFd => (Value & VhostUserConstants.VringNoFdFlag) != 0;

    /// <summary>Payload bytes this message encodes to.</summary>
    public int PayloadBytes => Payload switch
    {
        VhostUserPayload.None => 0,
        VhostUserPayload.U64 or VhostUserPayload.VringState => 8,
        VhostUserPayload.VringAddress => VhostUserConstants.VringAddressBytes,
        VhostUserPayload.MemoryRegion => 8 + VhostUserConstants.RegionBytes,
        VhostUserPayload.MemoryTable => 8 + ((Regions?.Count ?? 0) * VhostUserConstants.RegionBytes),
        VhostUserPayload.Inflight => VhostUserConstants.InflightBytes,
        VhostUserPayload.Config => Config is { } c ? VhostUserConstants.ConfigHeaderBytes + c.Data.Length : 0,
        _ => 0,
    };

    /// <summary>A request with no payload.</summary>
    /// <param name="request">The request.</param>
    /// <param name="needReply">Set NEED_REPLY.</param>
    /// <returns>The message.</returns>
    public static VhostUserMessage Empty(VhostUserRequest request, bool needReply = false) =>
        new() { Request = request, Flags = RequestFlags(needReply), Payload = VhostUserPayload.None };

    /// <summary>A request carrying a u64.</summary>
    /// <param name="request">The request.</param>
    /// <param name="value">The value.</param>
    /// <param name="needReply">Set NEED_REPLY.</param>
    /// <returns>The message.</returns>
    public static VhostUserMessage WithU64(VhostUserRequest request, ulong value, bool needReply = false) =>
        new() { Request = request, Flags = RequestFlags(needReply), Payload = VhostUserPayload.U64, Value = value };

    /// <summary>A request carrying a vring state.</summary>
    /// <param name="request">The request.</param>
    /// <param name="index">The vring index.</param>
    /// <param name="num">The number.</param>
    /// <param name="needReply">Set NEED_REPLY.</param>
    /// <returns>The message.</returns>
    public static VhostUserMessage WithState(VhostUserRequest request, uint index, uint num, bool needReply = false) =>
        new() { Request = request, Flags = RequestFlags(needReply), Payload = VhostUserPayload.VringState, State = new VringState(index, num) };

    /// <summary>SET_VRING_ADDR.</summary>
    /// <param name="address">The addresses.</param>
    /// <param name="needReply">Set NEED_REPLY.</param>
    /// <returns>The message.</returns>
    public static VhostUserMessage WithAddress(VringAddress address, bool needReply = false) =>
        new() { Request = VhostUserRequest.SetVringAddr, Flags = RequestFlags(needReply), Payload = VhostUserPayload.VringAddress, Address = address };

    /// <summary>SET_MEM_TABLE (send one fd per region with it).</summary>
    /// <param name="regions">The regions.</param>
    /// <param name="needReply">Set NEED_REPLY.</param>
    /// <returns>The message.</returns>
    public static VhostUserMessage WithMemTable(IReadOnlyList<MemoryRegionDescription> regions, bool needReply = false) =>
        new() { Request = VhostUserRequest.SetMemTable, Flags = RequestFlags(needReply), Payload = VhostUserPayload.MemoryTable, Regions = regions };

    /// <summary>ADD_MEM_REG or REM_MEM_REG.</summary>
    /// <param name="request">The request.</param>
    /// <param name="region">The region.</param>
    /// <param name="needReply">Set NEED_REPLY.</param>
    /// <returns>The message.</returns>
    public static VhostUserMessage WithRegion(VhostUserRequest request, MemoryRegionDescription region, bool needReply = false) =>
        new() { Request = request, Flags = RequestFlags(needReply), Payload = VhostUserPayload.MemoryRegion, Region = region };

    /// <summary>GET_INFLIGHT_FD or SET_INFLIGHT_FD (send the region's fd with the latter).</summary>
    /// <param name="request">The request.</param>
    /// <param name="inflight">The description.</param>
    /// <param name="needReply">Set NEED_REPLY.</param>
    /// <returns>The message.</returns>
    public static VhostUserMessage WithInflight(VhostUserRequest request, InflightDescription inflight, bool needReply = false) =>
        new() { Request = request, Flags = RequestFlags(needReply), Payload = VhostUserPayload.Inflight, Inflight = inflight };

    /// <summary>A reply carrying an inflight description (GET_INFLIGHT_FD; the region's fd rides along).</summary>
    /// <param name="request">The request answered.</param>
    /// <param name="inflight">The description.</param>
    /// <returns>The message.</returns>
    public static VhostUserMessage ReplyInflight(VhostUserRequest request, InflightDescription inflight) =>
        new() { Request = request, Flags = VhostUserConstants.Version | VhostUserConstants.ReplyFlag, Payload = VhostUserPayload.Inflight, Inflight = inflight };

    /// <summary>GET_CONFIG or SET_CONFIG: a config access; GET_CONFIG carries as many zero bytes as it wants read.</summary>
    /// <param name="request">The request.</param>
    /// <param name="offset">Byte offset into the config space.</param>
    /// <param name="data">The bytes (for GET_CONFIG, as many zeros as wanted).</param>
    /// <param name="flags">0 for a front-end access, 1 for live migration.</param>
    /// <param name="needReply">Set NEED_REPLY.</param>
    /// <returns>The message.</returns>
    public static VhostUserMessage WithConfig(VhostUserRequest request, uint offset, byte[] data, uint flags = 0, bool needReply = false) =>
        new() { Request = request, Flags = RequestFlags(needReply), Payload = VhostUserPayload.Config, Config = new VhostUserConfigAccess(offset, (uint)data.Length, flags, data) };

    /// <summary>A GET_CONFIG reply: the access with the bytes read, or null for the empty body that says it failed.</summary>
    /// <param name="access">The access answered, its bytes filled in; null when refused.</param>
    /// <returns>The message.</returns>
    public static VhostUserMessage ReplyConfig(VhostUserConfigAccess? access) =>
        new() { Request = VhostUserRequest.GetConfig, Flags = VhostUserConstants.Version | VhostUserConstants.ReplyFlag, Payload = VhostUserPayload.Config, Config = access };

    /// <summary>SET_VRING_KICK/CALL/ERR: index plus the no-fd bit when no descriptor rides along.</summary>
    /// <param name="request">The request.</param>
    /// <param name="index">The vring index (0-255).</param>
    /// <param name="hasFd">True when a descriptor is attached.</param>
    /// <param name="needReply">Set NEED_REPLY.</param>
    /// <returns>The message.</returns>
    public static VhostUserMessage WithFile(VhostUserRequest request, uint index, bool hasFd, bool needReply = false) =>
        WithU64(request, (index & VhostUserConstants.VringIndexMask) | (hasFd ? 0 : VhostUserConstants.VringNoFdFlag), needReply);

    /// <summary>A reply carrying a u64 (also the REPLY_ACK form: 0 success, non-zero failure).</summary>
    /// <param name="request">The request answered.</param>
    /// <param name="value">The value.</param>
    /// <returns>The message.</returns>
    public static VhostUserMessage ReplyU64(VhostUserRequest request, ulong value) =>
        new() { Request = request, Flags = VhostUserConstants.Version | VhostUserConstants.ReplyFlag, Payload = VhostUserPayload.U64, Value = value };

    /// <summary>A reply carrying a vring state (GET_VRING_BASE).</summary>
    /// <param name="request">The request answered.</param>
    /// <param name="index">The vring index.</param>
    /// <param name="num">The number.</param>
    /// <returns>The message.</returns>
    public static VhostUserMessage ReplyState(VhostUserRequest request, uint index, uint num) =>
        new() { Request = request, Flags = VhostUserConstants.Version | VhostUserConstants.ReplyFlag, Payload = VhostUserPayload.VringState, State = new VringState(index, num) };

    private static uint RequestFlags(bool needReply) => VhostUserConstants.Version | (needReply ? VhostUserConstants.NeedReplyFlag : 0);
}
