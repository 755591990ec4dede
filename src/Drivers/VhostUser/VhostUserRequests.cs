using Rings.Linux.Plumbing;
using static Rings.Linux.VhostUser.VhostUserReplyRule;
using static Rings.Linux.VhostUser.VhostUserRequest;
using Fds = Rings.Linux.VhostUser.VhostUserDescriptorRule;
using Payload = Rings.Linux.VhostUser.VhostUserPayload;
using Ring = Rings.Linux.VhostUser.VhostUserVringRule;

namespace Rings.Linux.VhostUser;

/// <summary>How descriptors (SCM_RIGHTS) must accompany a request.</summary>
public enum VhostUserDescriptorRule
{
    /// <summary>None.</summary>
    None,

    /// <summary>Exactly one.</summary>
    One,

    /// <summary>One per region of the memory table.</summary>
    OnePerRegion,

    /// <summary>One, or none when bit 8 of the u64 payload (the no-fd bit 0x100) is set: SET_VRING_KICK/CALL/ERR.</summary>
    OneUnlessNoFdBit,

    /// <summary>None expected, one tolerated and closed unused (REM_MEM_REG, vhost-user.rst).</summary>
    Optional,
}

/// <summary>Whether a request addresses a vring, and in which state the vring must be.</summary>
public enum VhostUserVringRule
{
    /// <summary>The request addresses no vring.</summary>
    None,

    /// <summary>The request addresses a vring (by the index in its payload), running or not.</summary>
    Any,

    /// <summary>The request addresses a vring that must be stopped (<see cref="VhostUserErrorCode.RingRunning"/> otherwise).</summary>
    Stopped,
}

/// <summary>When the back-end answers a request.</summary>
public enum VhostUserReplyRule
{
    /// <summary>
    /// Only with REPLY_ACK: when that protocol feature is negotiated and the request sets
    /// NEED_REPLY, a u64 that is 0 on success and non-zero on failure; otherwise nothing.
    /// </summary>
    AckIfAsked,

    /// <summary>Always, with an explicit body (the GET_* requests), whatever NEED_REPLY says.</summary>
    Always,
}

/// <summary>One row of the request table: everything the protocol says about one request.</summary>
public sealed class VhostUserRequestInfo
{
    internal VhostUserRequestInfo(
        VhostUserRequest id,
        VhostUserPayload payload,
        VhostUserDescriptorRule descriptors,
        VhostUserVringRule vring,
        VhostUserReplyRule reply,
        VhostUserPayload replyPayload,
        VhostUserHandler handler,
        int replyDescriptors = 0)
    {
        ReplyDescriptors = replyDescriptors;
        Id = id;
        Payload = payload;
        Descriptors = descriptors;
        Vring = vring;
        Reply = reply;
        ReplyPayload = reply == Always ? replyPayload : VhostUserPayload.U64;
        Handler = handler;
    }

    /// <summary>The request code.</summary>
    public VhostUserRequest Id { get; }

    /// <summary>The payload the request carries.</summary>
    public VhostUserPayload Payload { get; }

    /// <summary>The descriptors that must come with it.</summary>
    public VhostUserDescriptorRule Descriptors { get; }

    /// <summary>Whether it addresses a vring, and whether that vring must be stopped.</summary>
    public VhostUserVringRule Vring { get; }

    /// <summary>When the back-end answers it.</summary>
    public VhostUserReplyRule Reply { get; }

    /// <summary>The payload of its reply: the explicit body, or the REPLY_ACK u64.</summary>
    public VhostUserPayload ReplyPayload { get; }

    /// <summary>Descriptors that ride along with the explicit reply (1 for GET_INFLIGHT_FD's region, else 0).</summary>
    public int ReplyDescriptors { get; }

    /// <summary>The back-end's handler.</summary>
    internal VhostUserHandler Handler { get; }

    /// <summary>Whether the back-end answers this request.</summary>
    /// <param name="needReply">The request sets NEED_REPLY.</param>
    /// <param name="replyAckNegotiated">REPLY_ACK is negotiated.</param>
    /// <returns>True when a reply follows.</returns>
    public bool ReplyDue(bool needReply, bool replyAckNegotiated) => Reply == Always || (needReply && replyAckNegotiated);

    /// <summary>
    /// The vring a request addresses (meaningful when <see cref="Vring"/> is not None): the index
    /// of a vring state or address, or bits 0-7 of SET_VRING_KICK/CALL/ERR.
    /// </summary>
    /// <param name="message">The request.</param>
    /// <returns>The vring index, unchecked.</returns>
    public static uint VringIndex(in VhostUserMessage message) => message.Payload switch
    {
        VhostUserPayload.VringState => message.State.Index,
        VhostUserPayload.VringAddress => message.Address.Index,
        _ => message.FileIndex,
    };

    /// <summary>
    /// The checks the row alone decides: the payload has the row's shape, the descriptors follow
    /// <see cref="Descriptors"/>, and an addressed vring is below <paramref name="vringCount"/>.
    /// </summary>
    /// <param name="message">The request.</param>
    /// <param name="descriptors">How many descriptors came with it.</param>
    /// <param name="vringCount">How many vrings the device has.</param>
    /// <returns>None, or the first check that failed.</returns>
    public VhostUserError Check(in VhostUserMessage message, int descriptors, int vringCount)
    {
        if (message.Payload != Payload || (Payload == VhostUserPayload.MemoryTable && message.Regions is null))
        {
            return new VhostUserError(VhostUserErrorCode.BadPayloadSize, Id, "payload shape does not match the request");
        }

        var error = CheckDescriptors(message, descriptors);
        if (!error.IsError && Vring != VhostUserVringRule.None && VringIndex(message) >= (uint)vringCount)
        {
            error = new VhostUserError(VhostUserErrorCode.RingIndexOutOfRange, Id, $"vring index {VringIndex(message)} out of range (the device has {vringCount})");
        }

        return error;
    }

    /// <summary>Checks the number of descriptors that came with a request against <see cref="Descriptors"/>.</summary>
    /// <param name="message">The request (its region count and no-fd bit matter).</param>
    /// <param name="count">How many descriptors came with it.</param>
    /// <returns>None, <see cref="VhostUserErrorCode.MissingDescriptor"/> or <see cref="VhostUserErrorCode.UnexpectedDescriptor"/>.</returns>
    public VhostUserError CheckDescriptors(in VhostUserMessage message, int count)
    {
        var (least, most) = Descriptors switch
        {
            Fds.One => (1, 1),
            Fds.OnePerRegion => (message.Regions?.Count ?? 0, message.Regions?.Count ?? 0),
            Fds.OneUnlessNoFdBit => message.FileHasNoFd ? (0, 0) : (1, 1),
            Fds.Optional => (0, 1),
            _ => (0, 0),
        };
        if (count < least)
        {
            return new VhostUserError(VhostUserErrorCode.MissingDescriptor, Id, $"{count} file descriptors, {least} needed");
        }

        return count > most
            ? new VhostUserError(VhostUserErrorCode.UnexpectedDescriptor, Id, $"{count} file descriptors, at most {most} allowed")
            : VhostUserError.None;
    }
}

/// <summary>
/// The vhost-user request table (QEMU docs/interop/vhost-user.rst): one row per supported
/// request with its payload, descriptor rule, vring rule, reply rule and back-end handler. The
/// codec, the back-end session and the front-end all read it; a request not in it is unknown.
/// </summary>
public static class VhostUserRequests
{
    private static readonly VhostUserRequestInfo[] Rows =
    [
        // Request             Payload               Descriptors           Vring         Reply (body)
        Row(GetFeatures,         Payload.None,         Fds.None,             Ring.None,    Always, Payload.U64, static (d, ref c) => d.GetFeatures(ref c)),
        Row(SetFeatures,         Payload.U64,          Fds.None,             Ring.None,    AckIfAsked, static (d, ref c) => d.SetFeatures(ref c)),
        Row(SetOwner,            Payload.None,         Fds.None,             Ring.None,    AckIfAsked, static (d, ref c) => d.SetOwner(ref c)),
        Row(ResetOwner,          Payload.None,         Fds.None,             Ring.None,    AckIfAsked, static (d, ref c) => d.ResetOwner(ref c)),
        Row(SetMemTable,         Payload.MemoryTable,  Fds.OnePerRegion,     Ring.None,    AckIfAsked, static (d, ref c) => d.SetMemTable(ref c)),
        Row(SetVringNum,         Payload.VringState,   Fds.None,             Ring.Stopped, AckIfAsked, static (d, ref c) => d.SetVringNum(ref c)),
        Row(SetVringAddr,        Payload.VringAddress, Fds.None,             Ring.Stopped, AckIfAsked, static (d, ref c) => d.SetVringAddr(ref c)),
        Row(SetVringBase,        Payload.VringState,   Fds.None,             Ring.Stopped, AckIfAsked, static (d, ref c) => d.SetVringBase(ref c)),
        Row(GetVringBase,        Payload.VringState,   Fds.None,             Ring.Any,     Always, Payload.VringState, static (d, ref c) => d.GetVringBase(ref c)),
        Row(SetVringKick,        Payload.U64,          Fds.OneUnlessNoFdBit, Ring.Any,     AckIfAsked, static (d, ref c) => d.SetVringFile(ref c)),
        Row(SetVringCall,        Payload.U64,          Fds.OneUnlessNoFdBit, Ring.Any,     AckIfAsked, static (d, ref c) => d.SetVringFile(ref c)),
        Row(SetVringErr,         Payload.U64,          Fds.OneUnlessNoFdBit, Ring.Any,     AckIfAsked, static (d, ref c) => d.SetVringFile(ref c)),
        Row(GetProtocolFeatures, Payload.None,         Fds.None,             Ring.None,    Always, Payload.U64, static (d, ref c) => d.GetProtocolFeatures(ref c)),
        Row(SetProtocolFeatures, Payload.U64,          Fds.None,             Ring.None,    AckIfAsked, static (d, ref c) => d.SetProtocolFeatures(ref c)),
        Row(GetQueueNum,         Payload.None,         Fds.None,             Ring.None,    Always, Payload.U64, static (d, ref c) => d.GetQueueNum(ref c)),
        Row(SetVringEnable,      Payload.VringState,   Fds.None,             Ring.Any,     AckIfAsked, static (d, ref c) => d.SetVringEnable(ref c)),
        Row(SetBackendReqFd,     Payload.None,         Fds.One,              Ring.None,    AckIfAsked, static (d, ref c) => d.SetBackendReqFd(ref c)),
        Row(GetConfig,           Payload.Config,       Fds.None,             Ring.None,    Always, Payload.Config, static (d, ref c) => d.GetConfig(ref c)),
        Row(SetConfig,           Payload.Config,       Fds.None,             Ring.None,    AckIfAsked, static (d, ref c) => d.SetConfig(ref c)),
        Row(GetInflightFd,       Payload.Inflight,     Fds.None,             Ring.None,    Always, Payload.Inflight, static (d, ref c) => d.GetInflightFd(ref c), replyDescriptors: 1),
        Row(SetInflightFd,       Payload.Inflight,     Fds.One,              Ring.None,    AckIfAsked, static (d, ref c) => d.SetInflightFd(ref c)),
        Row(ResetDevice,         Payload.None,         Fds.None,             Ring.None,    AckIfAsked, static (d, ref c) => d.ResetDevice(ref c)),
        Row(GetMaxMemSlots,      Payload.None,         Fds.None,             Ring.None,    Always, Payload.U64, static (d, ref c) => d.GetMaxMemSlots(ref c)),
        Row(AddMemReg,           Payload.MemoryRegion, Fds.One,              Ring.None,    AckIfAsked, static (d, ref c) => d.AddMemReg(ref c)),
        Row(RemMemReg,           Payload.MemoryRegion, Fds.Optional,         Ring.None,    AckIfAsked, static (d, ref c) => d.RemMemReg(ref c)),
        Row(SetStatus,           Payload.U64,          Fds.None,             Ring.None,    AckIfAsked, static (d, ref c) => d.SetStatus(ref c)),
        Row(GetStatus,           Payload.None,         Fds.None,             Ring.None,    Always, Payload.U64, static (d, ref c) => d.GetStatus(ref c)),
    ];

    private static readonly VhostUserRequestInfo?[] ById = IndexById(Rows);

    /// <summary>Every supported request, in request-code order.</summary>
    public static IReadOnlyList<VhostUserRequestInfo> All => Rows;

    /// <summary>The row of <paramref name="request"/>.</summary>
    /// <param name="request">The request code.</param>
    /// <returns>The row, or null when the request is unknown or not supported.</returns>
    public static VhostUserRequestInfo? Find(VhostUserRequest request) =>
        (uint)request < (uint)ById.Length ? ById[(int)request] : null;

    private static VhostUserRequestInfo Row(VhostUserRequest id, VhostUserPayload payload, VhostUserDescriptorRule descriptors, VhostUserVringRule vring, VhostUserReplyRule reply, VhostUserHandler handler) =>
        new(id, payload, descriptors, vring, reply, Payload.U64, handler);

    private static VhostUserRequestInfo Row(VhostUserRequest id, VhostUserPayload payload, VhostUserDescriptorRule descriptors, VhostUserVringRule vring, VhostUserReplyRule reply, VhostUserPayload replyPayload, VhostUserHandler handler, int replyDescriptors = 0) =>
        new(id, payload, descriptors, vring, reply, replyPayload, handler, replyDescriptors);

    private static VhostUserRequestInfo?[] IndexById(VhostUserRequestInfo[] rows)
    {
        var size = 0;
        foreach (var row in rows)
        {
            size = Math.Max(size, (int)row.Id + 1);
        }

        var byId = new VhostUserRequestInfo?[size];
        foreach (var row in rows)
        {
            byId[(int)row.Id] = byId[(int)row.Id] is null ? row : throw new InvalidOperationException($"{row.Id} is in the request table twice");
        }

        return byId;
    }
}

/// <summary>What a back-end handler gets: the request, its descriptors, the vring it addresses, and room for its reply.</summary>
internal ref struct VhostUserCall
{
    public VhostUserCall(in VhostUserMessage message, List<FileDescriptor> fds, int vring)
    {
        Message = ref message;
        Fds = fds;
        Vring = vring;
    }

    /// <summary>The request, decoded and checked against its row.</summary>
    public readonly ref readonly VhostUserMessage Message;

    /// <summary>
    /// The descriptors, count already checked against the row; a handler removes those it keeps,
    /// the rest are closed after it returns.
    /// </summary>
    public readonly List<FileDescriptor> Fds;

    /// <summary>The vring index, checked against the device's vrings (-1 when the row addresses none).</summary>
    public readonly int Vring;

    /// <summary>The reply body; handlers of <see cref="VhostUserReplyRule.Always"/> rows set it.</summary>
    public VhostUserMessage? Reply;

    /// <summary>A descriptor to send with the reply (rows with <see cref="VhostUserRequestInfo.ReplyDescriptors"/>); the back-end keeps owning it.</summary>
    public FileDescriptor? ReplyFd;
}

/// <summary>A back-end handler of one request.</summary>
/// <param name="device">The back-end.</param>
/// <param name="call">The request and room for the reply.</param>
/// <returns>None, or why the request failed.</returns>
internal delegate VhostUserError VhostUserHandler(IVhostUserHandlers device, ref VhostUserCall call);

/// <summary>The back-end's handlers, one per row of <see cref="VhostUserRequests"/>.</summary>
internal interface IVhostUserHandlers
{
    VhostUserError GetFeatures(ref VhostUserCall call);

    VhostUserError SetFeatures(ref VhostUserCall call);

    VhostUserError SetOwner(ref VhostUserCall call);

    VhostUserError ResetOwner(ref VhostUserCall call);

    VhostUserError SetMemTable(ref VhostUserCall call);

    VhostUserError SetVringNum(ref VhostUserCall call);

    VhostUserError SetVringAddr(ref VhostUserCall call);

    VhostUserError SetVringBase(ref VhostUserCall call);

    VhostUserError GetVringBase(ref VhostUserCall call);

    VhostUserError SetVringFile(ref VhostUserCall call);

    VhostUserError GetProtocolFeatures(ref VhostUserCall call);

    VhostUserError SetProtocolFeatures(ref VhostUserCall call);

    VhostUserError GetQueueNum(ref VhostUserCall call);

    VhostUserError SetVringEnable(ref VhostUserCall call);

    VhostUserError SetBackendReqFd(ref VhostUserCall call);

    VhostUserError GetConfig(ref VhostUserCall call);

    VhostUserError SetConfig(ref VhostUserCall call);

    VhostUserError GetInflightFd(ref VhostUserCall call);

    VhostUserError SetInflightFd(ref VhostUserCall call);

    VhostUserError ResetDevice(ref VhostUserCall call);

    VhostUserError GetMaxMemSlots(ref VhostUserCall call);

    VhostUserError AddMemReg(ref VhostUserCall call);

    VhostUserError RemMemReg(ref VhostUserCall call);

    VhostUserError SetStatus(ref VhostUserCall call);

    VhostUserError GetStatus(ref VhostUserCall call);
}
