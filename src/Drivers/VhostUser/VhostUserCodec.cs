using System.Buffers.Binary;

namespace Rings.Linux.VhostUser;

/// <summary>Why a message could not be decoded.</summary>
public enum VhostUserDecodeError
{
    /// <summary>The message is well formed.</summary>
    None = 0,

    /// <summary>Fewer bytes than a header.</summary>
    Truncated,

    /// <summary>The header's size field does not match the bytes that follow it.</summary>
    SizeMismatch,

    /// <summary>The version bits are not 1.</summary>
    BadVersion,

    /// <summary>A request carries the REPLY flag, or a reply lacks it.</summary>
    BadReplyFlag,

    /// <summary>The request code is not one this codec knows.</summary>
    UnknownRequest,

    /// <summary>The payload size is wrong for the request.</summary>
    BadPayloadSize,

    /// <summary>A memory table lists more regions than the protocol allows.</summary>
    TooManyRegions,

    /// <summary>The number of file descriptors is wrong for the request.</summary>
    WrongFdCount,

    /// <summary>Bits that must be zero are set (SET_VRING_KICK/CALL/ERR above bit 8).</summary>
    ReservedBitsSet,
}

/// <summary>
/// Encodes and decodes vhost-user messages (QEMU docs/interop/vhost-user.rst, native byte order,
/// which is little-endian on every platform Rings runs on). Decoding is a pure function of the
/// bytes and the number of descriptors that arrived with them: it checks every size, count and
/// reserved bit and never throws, whatever the input.
/// </summary>
public static class VhostUserCodec
{
    private const int RequestTableSize = 41;

    private static readonly RequestInfo[] Requests = BuildTable();

    /// <summary>How descriptors must accompany a request.</summary>
    private enum FdRule : byte
    {
        None,
        Exactly1,
        OnePerRegion,
        OneUnlessNoFd,
        ZeroOrOne,
    }

    /// <summary>Whether the codec knows <paramref name="request"/>.</summary>
    /// <param name="request">The request code.</param>
    /// <returns>True when it can be decoded.</returns>
    public static bool IsKnown(VhostUserRequest request) => (uint)request < RequestTableSize && Requests[(int)request].Known;

    /// <summary>The payload a request carries.</summary>
    /// <param name="request">The request.</param>
    /// <returns>Its payload shape (None for unknown requests).</returns>
    public static VhostUserPayload RequestPayload(VhostUserRequest request) => IsKnown(request) ? Requests[(int)request].Request : VhostUserPayload.None;

    /// <summary>Whether a request always has a reply (GET_*), whatever REPLY_ACK says.</summary>
    /// <param name="request">The request.</param>
    /// <returns>True for requests with an explicit reply body.</returns>
    public static bool HasExplicitReply(VhostUserRequest request) => IsKnown(request) && Requests[(int)request].ExplicitReply;

    /// <summary>
    /// Reads a header. Never throws.
    /// </summary>
    /// <param name="header">At least 12 bytes.</param>
    /// <param name="request">The request code.</param>
    /// <param name="flags">The flags.</param>
    /// <param name="size">The payload size.</param>
    /// <returns>False when fewer than 12 bytes were given.</returns>
    public static bool TryReadHeader(ReadOnlySpan<byte> header, out VhostUserRequest request, out uint flags, out uint size)
    {
        if (header.Length < VhostUserConstants.HeaderBytes)
        {
            request = VhostUserRequest.None;
            flags = 0;
            size = 0;
            return false;
        }

        request = (VhostUserRequest)BinaryPrimitives.ReadUInt32LittleEndian(header);
        flags = BinaryPrimitives.ReadUInt32LittleEndian(header[4..]);
        size = BinaryPrimitives.ReadUInt32LittleEndian(header[8..]);
        return true;
    }

    /// <summary>
    /// Decodes a front-end request (header and payload) that arrived with <paramref name="fdCount"/>
    /// descriptors. Pure and total: every input gives a result, none throws.
    /// </summary>
    /// <param name="bytes">The whole message.</param>
    /// <param name="fdCount">How many descriptors came with it.</param>
    /// <param name="message">The message when the result is <see cref="VhostUserDecodeError.None"/>; otherwise as much of the header as was read.</param>
    /// <returns>The error, or None.</returns>
    public static VhostUserDecodeError DecodeRequest(ReadOnlySpan<byte> bytes, int fdCount, out VhostUserMessage message) =>
        Decode(bytes, fdCount, reply: false, out message);

    /// <summary>
    /// Decodes a back-end reply to <paramref name="bytes"/>' request. Replies to GET_* carry their
    /// body; replies to anything else are the REPLY_ACK u64. Replies carry no descriptors.
    /// </summary>
    /// <param name="bytes">The whole message.</param>
    /// <param name="fdCount">How many descriptors came with it.</param>
    /// <param name="message">The decoded reply.</param>
    /// <returns>The error, or None.</returns>
    public static VhostUserDecodeError DecodeReply(ReadOnlySpan<byte> bytes, int fdCount, out VhostUserMessage message) =>
        Decode(bytes, fdCount, reply: true, out message);

    /// <summary>Encodes a message into <paramref name="destination"/>.</summary>
    /// <param name="message">The message.</param>
    /// <param name="destination">At least 12 + payload bytes.</param>
    /// <returns>Bytes written.</returns>
    public static int Encode(in VhostUserMessage message, Span<byte> destination)
    {
        var payload = message.PayloadBytes;
        var total = VhostUserConstants.HeaderBytes + payload;
        if (destination.Length < total)
        {
            throw new ArgumentException($"need {total} bytes", nameof(destination));
        }

        BinaryPrimitives.WriteUInt32LittleEndian(destination, (uint)message.Request);
        BinaryPrimitives.WriteUInt32LittleEndian(destination[4..], message.Flags);
        BinaryPrimitives.WriteUInt32LittleEndian(destination[8..], (uint)payload);
        var p = destination.Slice(VhostUserConstants.HeaderBytes, payload);
        switch (message.Payload)
        {
            case VhostUserPayload.U64:
                BinaryPrimitives.WriteUInt64LittleEndian(p, message.Value);
                break;
            case VhostUserPayload.VringState:
                BinaryPrimitives.WriteUInt32LittleEndian(p, message.State.Index);
                BinaryPrimitives.WriteUInt32LittleEndian(p[4..], message.State.Num);
                break;
            case VhostUserPayload.VringAddress:
                var a = message.Address;
                BinaryPrimitives.WriteUInt32LittleEndian(p, a.Index);
                BinaryPrimitives.WriteUInt32LittleEndian(p[4..], a.Flags);
                BinaryPrimitives.WriteUInt64LittleEndian(p[8..], a.Descriptor);
                BinaryPrimitives.WriteUInt64LittleEndian(p[16..], a.Used);
                BinaryPrimitives.WriteUInt64LittleEndian(p[24..], a.Avail);
                BinaryPrimitives.WriteUInt64LittleEndian(p[32..], a.Log);
                break;
            case VhostUserPayload.MemoryRegion:
                BinaryPrimitives.WriteUInt64LittleEndian(p, 0);
                WriteRegion(p[8..], message.Region);
                break;
            case VhostUserPayload.MemoryTable:
                var regions = message.Regions ?? [];
                BinaryPrimitives.WriteUInt32LittleEndian(p, (uint)regions.Count);
                BinaryPrimitives.WriteUInt32LittleEndian(p[4..], 0);
                for (var i = 0; i < regions.Count; i++)
                {
                    WriteRegion(p[(8 + (i * VhostUserConstants.RegionBytes))..], regions[i]);
                }

                break;
        }

        return total;
    }

    /// <summary>Encodes a message into a new array.</summary>
    /// <param name="message">The message.</param>
    /// <returns>The bytes.</returns>
    public static byte[] Encode(in VhostUserMessage message)
    {
        var bytes = new byte[VhostUserConstants.HeaderBytes + message.PayloadBytes];
        Encode(message, bytes);
        return bytes;
    }

    /// <summary>A short description of a decode error for logs and NACK reasons.</summary>
    /// <param name="error">The error.</param>
    /// <returns>Text.</returns>
    public static string Describe(VhostUserDecodeError error) => error switch
    {
        VhostUserDecodeError.None => "ok",
        VhostUserDecodeError.Truncated => "message shorter than its header",
        VhostUserDecodeError.SizeMismatch => "header size does not match the payload",
        VhostUserDecodeError.BadVersion => "protocol version is not 1",
        VhostUserDecodeError.BadReplyFlag => "REPLY flag wrong for the direction",
        VhostUserDecodeError.UnknownRequest => "unknown or unsupported request",
        VhostUserDecodeError.BadPayloadSize => "payload size wrong for the request",
        VhostUserDecodeError.TooManyRegions => $"more than {VhostUserConstants.MaxMemTableRegions} memory regions",
        VhostUserDecodeError.WrongFdCount => "wrong number of file descriptors for the request",
        VhostUserDecodeError.ReservedBitsSet => "reserved bits set",
        _ => error.ToString(),
    };

    private static VhostUserDecodeError Decode(ReadOnlySpan<byte> bytes, int fdCount, bool reply, out VhostUserMessage message)
    {
        message = default;
        if (!TryReadHeader(bytes, out var request, out var flags, out var size))
        {
            return VhostUserDecodeError.Truncated;
        }

        message = new VhostUserMessage { Request = request, Flags = flags };
        var payload = bytes[VhostUserConstants.HeaderBytes..];
        if (size != (uint)payload.Length)
        {
            return VhostUserDecodeError.SizeMismatch;
        }

        if ((flags & VhostUserConstants.VersionMask) != VhostUserConstants.Version)
        {
            return VhostUserDecodeError.BadVersion;
        }

        if (((flags & VhostUserConstants.ReplyFlag) != 0) != reply)
        {
            return VhostUserDecodeError.BadReplyFlag;
        }

        if (!IsKnown(request))
        {
            return VhostUserDecodeError.UnknownRequest;
        }

        var info = Requests[(int)request];
        var shape = reply ? (info.ExplicitReply ? info.Reply : VhostUserPayload.U64) : info.Request;
        message = message with { Payload = shape };
        switch (shape)
        {
            case VhostUserPayload.None:
                if (payload.Length != 0)
                {
                    return VhostUserDecodeError.BadPayloadSize;
                }

                break;
            case VhostUserPayload.U64:
                if (payload.Length != 8)
                {
                    return VhostUserDecodeError.BadPayloadSize;
                }

                message = message with { Value = BinaryPrimitives.ReadUInt64LittleEndian(payload) };
                break;
            case VhostUserPayload.VringState:
                if (payload.Length != 8)
                {
                    return VhostUserDecodeError.BadPayloadSize;
                }

                message = message with
                {
                    State = new VringState(BinaryPrimitives.ReadUInt32LittleEndian(payload), BinaryPrimitives.ReadUInt32LittleEndian(payload[4..])),
                };
                break;
            case VhostUserPayload.VringAddress:
                if (payload.Length != VhostUserConstants.VringAddressBytes)
                {
                    return VhostUserDecodeError.BadPayloadSize;
                }

                message = message with
                {
                    Address = new VringAddress(
                        BinaryPrimitives.ReadUInt32LittleEndian(payload),
                        BinaryPrimitives.ReadUInt32LittleEndian(payload[4..]),
                        BinaryPrimitives.ReadUInt64LittleEndian(payload[8..]),
                        BinaryPrimitives.ReadUInt64LittleEndian(payload[16..]),
                        BinaryPrimitives.ReadUInt64LittleEndian(payload[24..]),
                        BinaryPrimitives.ReadUInt64LittleEndian(payload[32..])),
                };
                break;
            case VhostUserPayload.MemoryRegion:
                if (payload.Length != 8 + VhostUserConstants.RegionBytes)
                {
                    return VhostUserDecodeError.BadPayloadSize;
                }

                message = message with { Region = ReadRegion(payload[8..]) };
                break;
            case VhostUserPayload.MemoryTable:
                if (payload.Length < 8)
                {
                    return VhostUserDecodeError.BadPayloadSize;
                }

                var count = BinaryPrimitives.ReadUInt32LittleEndian(payload);
                if (count > VhostUserConstants.MaxMemTableRegions)
                {
                    return VhostUserDecodeError.TooManyRegions;
                }

                // Exactly the regions listed, or the whole fixed-size table some front-ends send.
                var exact = 8 + ((int)count * VhostUserConstants.RegionBytes);
                if (payload.Length != exact && payload.Length != VhostUserConstants.MaxSupportedPayloadBytes)
                {
                    return VhostUserDecodeError.BadPayloadSize;
                }

                var regions = new MemoryRegionDescription[count];
                for (var i = 0; i < regions.Length; i++)
                {
                    regions[i] = ReadRegion(payload[(8 + (i * VhostUserConstants.RegionBytes))..]);
                }

                message = message with { Regions = regions };
                break;
        }

        if (!reply && info.Fds == FdRule.OneUnlessNoFd && (message.Value & ~(VhostUserConstants.VringIndexMask | VhostUserConstants.VringNoFdFlag)) != 0)
        {
            return VhostUserDecodeError.ReservedBitsSet;
        }

        if (reply)
        {
            return fdCount == 0 ? VhostUserDecodeError.None : VhostUserDecodeError.WrongFdCount;
        }

        return FdCountMatches(message, fdCount) ? VhostUserDecodeError.None : VhostUserDecodeError.WrongFdCount;
    }

    /// <summary>Whether a request came with the number of descriptors its kind requires.</summary>
    /// <param name="message">The decoded request.</param>
    /// <param name="fdCount">How many descriptors came with it.</param>
    /// <returns>True when the count is right (false for unknown requests).</returns>
    public static bool FdCountMatches(in VhostUserMessage message, int fdCount)
    {
        if (!IsKnown(message.Request))
        {
            return false;
        }

        return Requests[(int)message.Request].Fds switch
        {
            FdRule.None => fdCount == 0,
            FdRule.Exactly1 => fdCount == 1,
            FdRule.OnePerRegion => fdCount == (message.Regions?.Count ?? 0),
            FdRule.OneUnlessNoFd => fdCount == (message.FileHasNoFd ? 0 : 1),

            // REM_MEM_REG: none expected, one tolerated (vhost-user.rst; it is closed unused).
            FdRule.ZeroOrOne => fdCount is 0 or 1,
            _ => false,
        };
    }

    private static MemoryRegionDescription ReadRegion(ReadOnlySpan<byte> p) => new(
        BinaryPrimitives.ReadUInt64LittleEndian(p),
        BinaryPrimitives.ReadUInt64LittleEndian(p[8..]),
        BinaryPrimitives.ReadUInt64LittleEndian(p[16..]),
        BinaryPrimitives.ReadUInt64LittleEndian(p[24..]));

    private static void WriteRegion(Span<byte> p, MemoryRegionDescription r)
    {
        BinaryPrimitives.WriteUInt64LittleEndian(p, r.GuestPhysicalAddress);
        BinaryPrimitives.WriteUInt64LittleEndian(p[8..], r.Size);
        BinaryPrimitives.WriteUInt64LittleEndian(p[16..], r.UserAddress);
        BinaryPrimitives.WriteUInt64LittleEndian(p[24..], r.MmapOffset);
    }

    private static RequestInfo[] BuildTable()
    {
        var t = new RequestInfo[RequestTableSize];
        void Add(VhostUserRequest r, VhostUserPayload request, FdRule fds, VhostUserPayload? reply = null) =>
            t[(int)r] = new RequestInfo(true, request, reply ?? VhostUserPayload.U64, reply is not null, fds);

        Add(VhostUserRequest.GetFeatures, VhostUserPayload.None, FdRule.None, VhostUserPayload.U64);
        Add(VhostUserRequest.SetFeatures, VhostUserPayload.U64, FdRule.None);
        Add(VhostUserRequest.SetOwner, VhostUserPayload.None, FdRule.None);
        Add(VhostUserRequest.ResetOwner, VhostUserPayload.None, FdRule.None);
        Add(VhostUserRequest.SetMemTable, VhostUserPayload.MemoryTable, FdRule.OnePerRegion);
        Add(VhostUserRequest.SetVringNum, VhostUserPayload.VringState, FdRule.None);
        Add(VhostUserRequest.SetVringAddr, VhostUserPayload.VringAddress, FdRule.None);
        Add(VhostUserRequest.SetVringBase, VhostUserPayload.VringState, FdRule.None);
        Add(VhostUserRequest.GetVringBase, VhostUserPayload.VringState, FdRule.None, VhostUserPayload.VringState);
        Add(VhostUserRequest.SetVringKick, VhostUserPayload.U64, FdRule.OneUnlessNoFd);
        Add(VhostUserRequest.SetVringCall, VhostUserPayload.U64, FdRule.OneUnlessNoFd);
        Add(VhostUserRequest.SetVringErr, VhostUserPayload.U64, FdRule.OneUnlessNoFd);
        Add(VhostUserRequest.GetProtocolFeatures, VhostUserPayload.None, FdRule.None, VhostUserPayload.U64);
        Add(VhostUserRequest.SetProtocolFeatures, VhostUserPayload.U64, FdRule.None);
        Add(VhostUserRequest.GetQueueNum, VhostUserPayload.None, FdRule.None, VhostUserPayload.U64);
        Add(VhostUserRequest.SetVringEnable, VhostUserPayload.VringState, FdRule.None);
        Add(VhostUserRequest.SetBackendReqFd, VhostUserPayload.None, FdRule.Exactly1);
        Add(VhostUserRequest.ResetDevice, VhostUserPayload.None, FdRule.None);
        Add(VhostUserRequest.GetMaxMemSlots, VhostUserPayload.None, FdRule.None, VhostUserPayload.U64);
        Add(VhostUserRequest.AddMemReg, VhostUserPayload.MemoryRegion, FdRule.Exactly1);
        Add(VhostUserRequest.RemMemReg, VhostUserPayload.MemoryRegion, FdRule.ZeroOrOne);
        Add(VhostUserRequest.SetStatus, VhostUserPayload.U64, FdRule.None);
        Add(VhostUserRequest.GetStatus, VhostUserPayload.None, FdRule.None, VhostUserPayload.U64);
        return t;
    }

    private readonly record struct RequestInfo(bool Known, VhostUserPayload Request, VhostUserPayload Reply, bool ExplicitReply, FdRule Fds);
}
