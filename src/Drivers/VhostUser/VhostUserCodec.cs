using System.Buffers.Binary;

namespace Rings.Linux.VhostUser;

/// <summary>
/// Encodes and decodes vhost-user messages (QEMU docs/interop/vhost-user.rst, native byte order,
/// which is little-endian on every platform Rings runs on). Decoding is a pure function of the
/// bytes and the number of descriptors that arrived with them: it checks every size, count and
/// reserved bit against the request's row in <see cref="VhostUserRequests"/> and never throws,
/// whatever the input.
/// </summary>
public static class VhostUserCodec
{
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
    /// <param name="message">The message when the result is no error; otherwise as much of the header as was read.</param>
    /// <returns>None, or why the message is malformed.</returns>
    public static VhostUserError DecodeRequest(ReadOnlySpan<byte> bytes, int fdCount, out VhostUserMessage message) =>
        Decode(bytes, fdCount, reply: false, out message);

    /// <summary>
    /// Decodes a back-end reply to <paramref name="bytes"/>' request. Replies to GET_* carry their
    /// body; replies to anything else are the REPLY_ACK u64. Replies carry no descriptors.
    /// </summary>
    /// <param name="bytes">The whole message.</param>
    /// <param name="fdCount">How many descriptors came with it.</param>
    /// <param name="message">The decoded reply.</param>
    /// <returns>None, or why the reply is malformed.</returns>
    public static VhostUserError DecodeReply(ReadOnlySpan<byte> bytes, int fdCount, out VhostUserMessage message) =>
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
            case VhostUserPayload.Inflight:
                var inflight = message.Inflight;
                BinaryPrimitives.WriteUInt64LittleEndian(p, inflight.MmapSize);
                BinaryPrimitives.WriteUInt64LittleEndian(p[8..], inflight.MmapOffset);
                BinaryPrimitives.WriteUInt16LittleEndian(p[16..], inflight.NumQueues);
                BinaryPrimitives.WriteUInt16LittleEndian(p[18..], inflight.QueueSize);
                BinaryPrimitives.WriteUInt32LittleEndian(p[20..], 0);
                break;
            case VhostUserPayload.Config:
                if (message.Config is { } access)
                {
                    BinaryPrimitives.WriteUInt32LittleEndian(p, access.Offset);
                    BinaryPrimitives.WriteUInt32LittleEndian(p[4..], (uint)access.Data.Length);
                    BinaryPrimitives.WriteUInt32LittleEndian(p[8..], access.Flags);
                    access.Data.CopyTo(p[VhostUserConstants.ConfigHeaderBytes..]);
                }

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

    private static VhostUserError Decode(ReadOnlySpan<byte> bytes, int fdCount, bool reply, out VhostUserMessage message)
    {
        message = default;
        if (!TryReadHeader(bytes, out var request, out var flags, out var size))
        {
            return new VhostUserError(VhostUserErrorCode.Truncated, "message shorter than its header");
        }

        message = new VhostUserMessage { Request = request, Flags = flags };
        var payload = bytes[VhostUserConstants.HeaderBytes..];
        if (size != (uint)payload.Length)
        {
            return Error(VhostUserErrorCode.SizeMismatch, request, "header size does not match the payload");
        }

        if ((flags & VhostUserConstants.VersionMask) != VhostUserConstants.Version)
        {
            return Error(VhostUserErrorCode.BadVersion, request, "protocol version is not 1");
        }

        if (((flags & VhostUserConstants.ReplyFlag) != 0) != reply)
        {
            return Error(VhostUserErrorCode.BadReplyFlag, request, "REPLY flag wrong for the direction");
        }

        if (VhostUserRequests.Find(request) is not { } info)
        {
            return Error(VhostUserErrorCode.UnknownRequest, request, "unknown or unsupported request");
        }

        var shape = reply ? info.ReplyPayload : info.Payload;
        message = message with { Payload = shape };
        switch (shape)
        {
            case VhostUserPayload.None:
                if (payload.Length != 0)
                {
                    return BadPayloadSize(request);
                }

                break;
            case VhostUserPayload.U64:
                if (payload.Length != 8)
                {
                    return BadPayloadSize(request);
                }

                message = message with { Value = BinaryPrimitives.ReadUInt64LittleEndian(payload) };
                break;
            case VhostUserPayload.VringState:
                if (payload.Length != 8)
                {
                    return BadPayloadSize(request);
                }

                message = message with
                {
                    State = new VringState(BinaryPrimitives.ReadUInt32LittleEndian(payload), BinaryPrimitives.ReadUInt32LittleEndian(payload[4..])),
                };
                break;
            case VhostUserPayload.VringAddress:
                if (payload.Length != VhostUserConstants.VringAddressBytes)
                {
                    return BadPayloadSize(request);
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
                    return BadPayloadSize(request);
                }

                message = message with { Region = ReadRegion(payload[8..]) };
                break;
            case VhostUserPayload.Inflight:
                if (payload.Length is not (VhostUserConstants.InflightBytes or VhostUserConstants.InflightPackedBytes))
                {
                    return BadPayloadSize(request);
                }

                message = message with
                {
                    Inflight = new InflightDescription(
                        BinaryPrimitives.ReadUInt64LittleEndian(payload),
                        BinaryPrimitives.ReadUInt64LittleEndian(payload[8..]),
                        BinaryPrimitives.ReadUInt16LittleEndian(payload[16..]),
                        BinaryPrimitives.ReadUInt16LittleEndian(payload[18..])),
                };
                break;
            case VhostUserPayload.Config:
                // A reply with an empty body is a failed GET_CONFIG (vhost-user.rst); a request never is.
                if (reply && payload.Length == 0)
                {
                    break;
                }

                if (payload.Length < VhostUserConstants.ConfigHeaderBytes)
                {
                    return BadPayloadSize(request);
                }

                var configSize = BinaryPrimitives.ReadUInt32LittleEndian(payload[4..]);
                if (configSize > VhostUserConstants.MaxConfigBytes)
                {
                    return Error(VhostUserErrorCode.ValueOutOfRange, request, $"config access of {configSize} bytes; at most {VhostUserConstants.MaxConfigBytes} allowed");
                }

                if (payload.Length != VhostUserConstants.ConfigHeaderBytes + (int)configSize)
                {
                    return Error(VhostUserErrorCode.BadPayloadSize, request, $"config access of {configSize} bytes carries {payload.Length - VhostUserConstants.ConfigHeaderBytes}");
                }

                message = message with
                {
                    Config = new VhostUserConfigAccess(
                        BinaryPrimitives.ReadUInt32LittleEndian(payload),
                        configSize,
                        BinaryPrimitives.ReadUInt32LittleEndian(payload[8..]),
                        payload[VhostUserConstants.ConfigHeaderBytes..].ToArray()),
                };
                break;
            case VhostUserPayload.MemoryTable:
                if (payload.Length < 8)
                {
                    return BadPayloadSize(request);
                }

                var count = BinaryPrimitives.ReadUInt32LittleEndian(payload);
                if (count > VhostUserConstants.MaxMemTableRegions)
                {
                    return Error(VhostUserErrorCode.TooManyRegions, request, $"{count} memory regions, at most {VhostUserConstants.MaxMemTableRegions} allowed");
                }

                // Exactly the regions listed, or the whole fixed-size table some front-ends send.
                var exact = 8 + ((int)count * VhostUserConstants.RegionBytes);
                if (payload.Length != exact && payload.Length != VhostUserConstants.MaxSupportedPayloadBytes)
                {
                    return BadPayloadSize(request);
                }

                var regions = new MemoryRegionDescription[count];
                for (var i = 0; i < regions.Length; i++)
                {
                    regions[i] = ReadRegion(payload[(8 + (i * VhostUserConstants.RegionBytes))..]);
                }

                message = message with { Regions = regions };
                break;
        }

        if (reply)
        {
            // Only an explicit body may carry descriptors (GET_INFLIGHT_FD's region); an ack never does.
            var expected = info.Reply == VhostUserReplyRule.Always ? info.ReplyDescriptors : 0;
            return fdCount == expected ? VhostUserError.None
                : fdCount > expected ? Error(VhostUserErrorCode.UnexpectedDescriptor, request, $"a reply carries {fdCount} file descriptors, {expected} expected")
                : Error(VhostUserErrorCode.MissingDescriptor, request, $"a reply carries {fdCount} file descriptors, {expected} expected");
        }

        if (info.Descriptors == VhostUserDescriptorRule.OneUnlessNoFdBit && (message.Value & ~(VhostUserConstants.VringIndexMask | VhostUserConstants.VringNoFdFlag)) != 0)
        {
            return Error(VhostUserErrorCode.ReservedBitsSet, request, $"reserved bits above 8 set in 0x{message.Value:x}");
        }

        return info.CheckDescriptors(message, fdCount);
    }

    private static VhostUserError Error(VhostUserErrorCode code, VhostUserRequest request, string detail) => new(code, request, detail);

    private static VhostUserError BadPayloadSize(VhostUserRequest request) =>
        Error(VhostUserErrorCode.BadPayloadSize, request, "payload size wrong for the request");

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
}
