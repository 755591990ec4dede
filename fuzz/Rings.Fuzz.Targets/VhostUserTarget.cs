using System.Buffers.Binary;
using Rings.Linux.Device;
using Rings.Linux.Plumbing;
using Rings.Linux.VhostUser;

namespace Rings.Fuzz.Targets;

/// <summary>
/// (d) The vhost-user decoder, the back-end state machine and the data path behind it. The input
/// is a sequence of records <c>[u8 control][u16 length][bytes]</c>:
/// <list type="bullet">
/// <item>control below 0xF0: a message. Bits 0-3 give the descriptor count (mod 9); the descriptors
/// are real: a shared memory file (sealed, <see cref="MemoryBytes"/> long, the same file each time)
/// for the requests that carry memory (SET_MEM_TABLE, ADD_MEM_REG, SET_LOG_BASE, SET_INFLIGHT_FD),
/// eventfds for the others; bit 4 swaps the two kinds (a memory file as a kick, an eventfd as memory).</item>
/// <item>0xF0-0xF7: a scribble: <c>[u32 offset][data]</c> written into the memory file at offset
/// (mod its length), as a front-end (or a hostile guest) writes its rings and buffers.</item>
/// <item>0xF8-0xFF: a forwarding round: for every queue pair with both rings started, the vhost-net
/// path moves up to 8 x (control - 0xF7) frames from the transmit ring into the receive ring
/// (reflect mode), then asks both rings whether to call and re-arms the transmit ring's kicks.</item>
/// </list>
/// Each message is also decoded on its own (what decodes must re-encode to the same request).
/// Nothing may throw; every reply decodes as a reply to its request; a broken ring pops nothing;
/// once the session is disposed, every descriptor handed to it is closed.
/// </summary>
public static class VhostUserTarget
{
    /// <summary>Bytes of the shared memory file every memory descriptor refers to.</summary>
    public const int MemoryBytes = 64 << 10;

    /// <summary>First control byte of a scribble record.</summary>
    public const byte Scribble = 0xF0;

    /// <summary>First control byte of a forwarding record.</summary>
    public const byte Forward = 0xF8;

    /// <summary>Control bit that swaps memory files and eventfds.</summary>
    public const byte WrongKind = 0x10;

    private const int MaxRecords = 96;

    /// <summary>Runs one input.</summary>
    /// <param name="input">The fuzzer's bytes.</param>
    public static void Run(ReadOnlySpan<byte> input)
    {
        var options = new VhostUserBackendOptions { MaxQueuePairs = 2, MessageTimeoutMilliseconds = 100 };
        var handedOver = new List<(int Fd, string? What)>();
        using (var memory = SharedMemory.Create(MemoryBytes, "rings-fuzz"))
        using (var session = new VhostUserSession(options))
        {
            Drive(input, session, memory, handedOver);
        }

        // Disposing the session must have closed every descriptor it was given: kept ones at
        // dispose, refused ones at once. A number may have been reused meanwhile (the fuzzing
        // harness reads /proc on a thread of its own, and in the test process other tests open files
        // in parallel), so an open number is a leak only when it still names the same file (the
        // same memory file's inode, the same eventfd's id).
        foreach (var (fd, what) in handedOver)
        {
            FuzzViolation.Check(Describe(fd) is not { } now || now != what, $"descriptor {fd} ({what}) handed to the session is still open after dispose");
        }
    }

    private static void Drive(ReadOnlySpan<byte> input, VhostUserSession session, SharedMemory memory, List<(int Fd, string? What)> handedOver)
    {
        var fds = new List<FileDescriptor>();
        var offset = 0;
        for (var n = 0; n < MaxRecords && offset + 3 <= input.Length; n++)
        {
            var control = input[offset];
            var length = Math.Min(input[offset + 1] | (input[offset + 2] << 8), input.Length - offset - 3);
            var bytes = input.Slice(offset + 3, length);
            offset += 3 + length;
            if (control >= Forward)
            {
                ForwardRound(session, 8 * (control - Forward + 1));
                continue;
            }

            if (control >= Scribble)
            {
                Write(memory, bytes);
                continue;
            }

            var fdCount = (control & 0x0F) % 9;

            // The decoder alone: a pure function that never throws; what it accepts re-encodes.
            if (!VhostUserCodec.DecodeRequest(bytes, fdCount, out var message).IsError)
            {
                var again = VhostUserCodec.Encode(message);
                FuzzViolation.Check(
                    !VhostUserCodec.DecodeRequest(again, fdCount, out var back).IsError && back.Request == message.Request,
                    $"{message.Request} decoded but does not survive re-encoding");
            }

            var request = bytes.Length >= 4 ? BinaryPrimitives.ReadUInt32LittleEndian(bytes) : 0;
            var memoryKind = CarriesMemory(request) != ((control & WrongKind) != 0);
            for (var i = 0; i < fdCount; i++)
            {
                var fd = memoryKind ? memory.Handle!.Duplicate() : EventFd.Create().Handle;
                handedOver.Add((fd.Value, Describe(fd.Value)));
                fds.Add(fd);
            }

            var given = fds.ToArray();
            var outcome = session.Handle(bytes, fds);

            // Handle always empties the list: what counts is that every descriptor is closed, but
            // for the one a doorbell or back-end channel request may keep (closed with the session).
            var open = given.Count(f => !f.IsClosed);
            var keeps = VhostUserCodec.TryReadHeader(bytes, out var handled, out _, out _)
                && handled is VhostUserRequest.SetVringKick or VhostUserRequest.SetVringCall or VhostUserRequest.SetVringErr or VhostUserRequest.SetBackendReqFd ? 1 : 0;
            FuzzViolation.Check(open <= keeps, $"the session left {open} of {given.Length} descriptors open");
            FuzzTrace.Writer?.WriteLine($"{n}: request {request} with {fdCount} {(memoryKind ? "memory files" : "eventfds")}: {(outcome.Error.IsError ? outcome.Error.ToString() : "ok")}{(outcome.Close ? ", close" : "")}");
            if (outcome.Reply is { } replyMessage)
            {
                var reply = VhostUserCodec.Encode(replyMessage);
                FuzzViolation.Check(VhostUserCodec.TryReadHeader(reply, out var replyTo, out var flags, out var size), "a reply without a header");
                FuzzViolation.Check((flags & VhostUserConstants.ReplyFlag) != 0 && size == (uint)reply.Length - 12, "a malformed reply");
                FuzzViolation.Check(replyTo == (VhostUserRequest)request, $"a reply to {replyTo} for request {request}");
            }

            fds.Clear();
            if (outcome.Close)
            {
                break;
            }
        }
    }

    /// <summary>The requests whose descriptors are memory files (vhost-user.rst).</summary>
    private static bool CarriesMemory(uint request) => request is 5 or 6 or 32 or 37;

    private static void Write(SharedMemory memory, ReadOnlySpan<byte> record)
    {
        if (record.Length < 4)
        {
            return;
        }

        var at = (int)(BinaryPrimitives.ReadUInt32LittleEndian(record) % MemoryBytes);
        var data = record[4..];
        var n = Math.Min(data.Length, MemoryBytes - at);
        data[..n].CopyTo(memory.Slice((ulong)at, n));
    }

    private static void ForwardRound(VhostUserSession session, int burst)
    {
        var mergeable = (session.Features & VirtioFeatures.NetMergeRxBuffers) != 0;
        for (var pair = 0; 2 * pair + 1 < session.QueueCount; pair++)
        {
            if (session.StartedQueue(2 * pair) is not { } rx || session.StartedQueue((2 * pair) + 1) is not { } tx)
            {
                continue;
            }

            if (!rx.Enabled || !tx.Enabled)
            {
                continue;
            }

            var result = NetForwarder.Forward(tx.Ring, rx.Ring, burst, mergeable);
            FuzzTrace.Writer?.WriteLine($"forward pair {pair}: {result}; rx {rx.Ring.BrokenReason}, tx {tx.Ring.BrokenReason}");
            FuzzViolation.Check(result.Frames + result.Dropped <= burst, $"{result.Frames + result.Dropped} frames moved in a burst of {burst}");
            rx.Ring.CallNeeded();
            tx.Ring.CallNeeded();
            if (tx.Ring.EnableAvailNotifications())
            {
                tx.Ring.DisableAvailNotifications();
            }

            // A broken ring hands out nothing more until it is restored.
            FuzzViolation.Check(!tx.Ring.IsBroken || !tx.Ring.TryPop(out _), $"broken ring {tx.Index} ({tx.Ring.BrokenReason}) popped a chain");
            FuzzViolation.Check(!rx.Ring.IsBroken || !rx.Ring.TryPop(out _), $"broken ring {rx.Index} ({rx.Ring.BrokenReason}) popped a chain");
        }
    }

    /// <summary>
    /// What an open descriptor names (null when it is closed), precisely enough that a reused
    /// number is told apart: the link target alone is the same for every eventfd (one anonymous
    /// inode), so the kernel's per-file lines from fdinfo are added (the inode of a memory file,
    /// the id of an eventfd).
    /// </summary>
    private static string? Describe(int fd)
    {
        try
        {
            var target = new FileInfo($"/proc/self/fd/{fd}").LinkTarget;
            if (target is null)
            {
                return null;
            }

            var identity = new System.Text.StringBuilder(target);
            foreach (var line in File.ReadLines($"/proc/self/fdinfo/{fd}"))
            {
                if (line.StartsWith("ino:", StringComparison.Ordinal) || line.StartsWith("eventfd-id:", StringComparison.Ordinal))
                {
                    identity.Append(' ').Append(line.Replace('\t', ' '));
                }
            }

            return identity.ToString();
        }
        catch (IOException)
        {
            return null;
        }
        catch (UnauthorizedAccessException)
        {
            return null;
        }
    }
}
