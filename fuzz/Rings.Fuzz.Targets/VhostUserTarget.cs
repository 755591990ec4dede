using Rings.Linux.Device;
using Rings.Linux.Plumbing;
using Rings.Linux.VhostUser;


namespace Rings.Fuzz.Targets;

/// <summary>
/// (d) The vhost-user decoder and the back-end state machine. The input is a sequence of
/// messages, each <c>[u8 fds][u16 length][bytes]</c>: every message is decoded on its own (a
/// message that decodes must re-encode to the same request) and fed, with that many real
/// descriptors (eventfds, or a small memfd for every third one), to one socket-free session.
/// Nothing may throw; every descriptor handed over is kept or closed; every reply decodes as a
/// reply to its request; disposing the session releases everything.
/// </summary>
public static class VhostUserTarget
{
    private const int MaxMessages = 64;

    /// <summary>Runs one input.</summary>
    /// <param name="input">The fuzzer's bytes.</param>
    public static void Run(ReadOnlySpan<byte> input)
    {
        var options = new VhostUserBackendOptions { MaxQueuePairs = 2, MessageTimeoutMilliseconds = 100 };
        using var session = new VhostUserSession(options);
        var fds = new List<FileDescriptor>();
        var handedOver = new List<FileDescriptor>();
        var offset = 0;
        for (var n = 0; n < MaxMessages && offset + 3 <= input.Length; n++)
        {
            var fdCount = input[offset] % 10;
            var length = Math.Min(input[offset + 1] | (input[offset + 2] << 8), input.Length - offset - 3);
            var bytes = input.Slice(offset + 3, length);
            offset += 3 + length;

            // The decoder alone: a pure function that never throws; what it accepts re-encodes.
            if (!VhostUserCodec.DecodeRequest(bytes, fdCount, out var message).IsError)
            {
                var again = VhostUserCodec.Encode(message);
                FuzzViolation.Check(
                    !VhostUserCodec.DecodeRequest(again, fdCount, out var back).IsError && back.Request == message.Request,
                    $"{message.Request} decoded but does not survive re-encoding");
            }

            for (var i = 0; i < fdCount; i++)
            {
                fds.Add(i % 3 == 2 ? MemoryFile() : EventFd.Create().Handle);
            }

            var given = fds.ToArray();
            var outcome = session.Handle(bytes, fds);

            // Handle always empties the list: what counts is that every descriptor is closed, but
            // for the one a doorbell or back-end channel request may keep (closed with the session).
            var open = given.Count(f => !f.IsClosed);
            var keeps = VhostUserCodec.TryReadHeader(bytes, out var handled, out _, out _)
                && handled is VhostUserRequest.SetVringKick or VhostUserRequest.SetVringCall or VhostUserRequest.SetVringErr or VhostUserRequest.SetBackendReqFd ? 1 : 0;
            FuzzViolation.Check(open <= keeps, $"the session left {open} of {given.Length} descriptors open");
            handedOver.AddRange(given);
            if (outcome.Reply is { } replyMessage)
            {
                var reply = VhostUserCodec.Encode(replyMessage);
                FuzzViolation.Check(VhostUserCodec.TryReadHeader(reply, out _, out var flags, out var size), "a reply without a header");
                FuzzViolation.Check((flags & VhostUserConstants.ReplyFlag) != 0 && size == (uint)reply.Length - 12, "a malformed reply");
            }

            if (outcome.Close)
            {
                break;
            }
        }

        session.Dispose();
        FuzzViolation.Check(handedOver.TrueForAll(f => f.IsClosed), "the session ended without closing a descriptor it kept");
    }

    private static FileDescriptor MemoryFile()
    {
        // A real memory file for SET_MEM_TABLE and ADD_MEM_REG to map (or refuse).
        using var memory = SharedMemory.Create(64 << 10, "rings-fuzz");
        return memory.Handle!.Duplicate();
    }
}
