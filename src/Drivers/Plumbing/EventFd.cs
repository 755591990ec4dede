using System.Runtime.InteropServices;

namespace Rings.Linux.Plumbing;

/// <summary>
/// A doorbell over an eventfd(2): the kick (driver to device) and call (device to driver) of
/// vhost-user. <see cref="Signal"/> adds one to the counter; the waiting side consumes the whole
/// counter at once, so any number of rings coalesce into one wake-up. No allocation per use.
/// A doorbell shared with a peer (<see cref="FromPeer"/>, <see cref="CreateForPeer"/>) is guarded:
/// ringing and consuming it never block, whatever the peer does to it later (its file status
/// flags, O_NONBLOCK among them, are shared with the peer, who can change them at any time).
/// </summary>
public sealed unsafe class EventFd : IDoorbell, IDisposable
{
    /// <summary>What the kernel calls an eventfd (<see cref="FileDescriptor.KernelName"/>).</summary>
    public const string KernelName = "anon_inode:[eventfd]";

    // Poll before every write and read: the descriptor's blocking mode cannot be trusted.
    private readonly bool _guarded;

    /// <summary>Wraps an eventfd (taking ownership); a descriptor from a peer goes through <see cref="FromPeer"/>, which checks its type.</summary>
    /// <param name="handle">An eventfd, in whatever blocking mode its creator chose.</param>
    public EventFd(FileDescriptor handle)
        : this(handle, guarded: false)
    {
    }

    private EventFd(FileDescriptor handle, bool guarded)
    {
        ArgumentNullException.ThrowIfNull(handle);
        Handle = handle;

        // The file status flags belong to the open file description, shared with whoever holds
        // it: never change them. A blocking one is guarded even if no peer holds it.
        var flags = LibC.Fcntl(handle, LibC.F_GETFL, 0);
        _guarded = guarded || flags < 0 || (flags & LibC.O_NONBLOCK) == 0;
    }

    /// <summary>True when every ring and consume polls first, because a peer shares the descriptor (or it is blocking).</summary>
    public bool Guarded => _guarded;

    /// <summary>
    /// Takes a descriptor a peer sent as a doorbell if, and only if, it is an eventfd. The type is
    /// read from the descriptor's /proc link, the kernel's own name for the file: fstat cannot tell
    /// an eventfd from the other anonymous-inode files (they share one inode), and the link names
    /// the kind in one call, with no text file to open and parse as fdinfo would need. A name that
    /// a peer chooses (a memfd's, a path) never takes this form.
    /// </summary>
    /// <param name="handle">The descriptor; owned by the result on success, left to the caller otherwise.</param>
    /// <param name="kind">What the descriptor is (its kernel name), for the refusal.</param>
    /// <returns>The doorbell, or null when the descriptor is not an eventfd.</returns>
    public static EventFd? FromPeer(FileDescriptor handle, out string kind)
    {
        ArgumentNullException.ThrowIfNull(handle);
        kind = handle.KernelName() ?? "a descriptor whose type cannot be read";
        return kind == KernelName ? new EventFd(handle, guarded: true) : null;
    }

    /// <summary>The descriptor, to pass to a peer or to poll.</summary>
    public FileDescriptor Handle { get; }

    /// <summary>Creates a new non-blocking, close-on-exec eventfd with counter 0.</summary>
    /// <returns>The doorbell.</returns>
    public static EventFd Create() => new(NewDescriptor());

    /// <summary>
    /// Creates a non-blocking eventfd to hand to a peer (a kick or call sent with SET_VRING_KICK or
    /// SET_VRING_CALL): guarded, because the peer may make it blocking once it holds it.
    /// </summary>
    /// <returns>The doorbell.</returns>
    public static EventFd CreateForPeer() => new(NewDescriptor(), guarded: true);

    private static FileDescriptor NewDescriptor()
    {
        var fd = LibC.EventFd(0, LibC.EFD_CLOEXEC | LibC.EFD_NONBLOCK);
        if (fd < 0)
        {
            throw LibC.Error("eventfd");
        }

        return new FileDescriptor(fd);
    }

    /// <summary>
    /// Rings the doorbell (adds 1 to the counter) without blocking. A counter at its maximum
    /// (2^64-2) cannot take the 1, but then the other side has a wake-up pending already, which is
    /// all ringing is for: that counts as rung.
    /// </summary>
    /// <returns>False only if the descriptor refused the write for another reason.</returns>
    public bool Signal()
    {
        // A descriptor the peer made blocking would block the write on a full counter: ask poll
        // first (POLLOUT is clear exactly when the counter cannot take 1). The peer can still fill
        // the counter between the poll and the write; a writer stuck so is released by
        // Unblock (the stop deadline's last resort).
        if (_guarded && !Poll.IsWritable(Handle))
        {
            return true;
        }

        // The system call orders everything before it: ring stores published before Signal are
        // visible to the side woken by it, so no extra fence is needed here.
        ulong one = 1;
        while (true)
        {
            var n = LibC.Write(Handle, &one, 8);
            if (n == 8)
            {
                return true;
            }

            var errno = n < 0 ? Marshal.GetLastPInvokeError() : 0;
            if (errno == LibC.EINTR)
            {
                continue;
            }

            return errno == LibC.EAGAIN;
        }
    }

    /// <summary>Takes the counter if it is non-zero, without blocking.</summary>
    /// <param name="count">How many signals were pending.</param>
    /// <returns>True when at least one signal was pending.</returns>
    public bool TryConsume(out ulong count)
    {
        count = 0;
        ulong value;
        if (_guarded)
        {
            // RWF_NOWAIT: this one read does not block even if the peer made the descriptor
            // blocking or drains the counter first. Older kernels refuse the flag: poll, then read
            // (a peer that drains the counter in between is released by Unblock).
            switch (ReadNoWait(&value))
            {
                case > 0:
                    count = value;
                    return true;
                case 0:
                    return false;
            }

            if (!Poll.WaitReadable(Handle, 0))
            {
                return false;
            }
        }

        while (true)
        {
            var n = LibC.Read(Handle, &value, 8);
            if (n == 8)
            {
                count = value;
                return true;
            }

            if (n < 0 && Marshal.GetLastPInvokeError() == LibC.EINTR)
            {
                continue;
            }

            return false;
        }
    }

    // 1 read, 0 nothing pending (or an error), -1 the kernel cannot read without waiting on request.
    private int ReadNoWait(ulong* value)
    {
        var iov = new LibC.IoVec { Base = value, Length = 8 };
        while (true)
        {
            var n = LibC.Preadv2(Handle, &iov, 1, -1, LibC.RWF_NOWAIT);
            if (n == 8)
            {
                return 1;
            }

            var errno = n < 0 ? Marshal.GetLastPInvokeError() : 0;
            if (errno == LibC.EINTR)
            {
                continue;
            }

            return errno is LibC.EOPNOTSUPP or LibC.EINVAL ? -1 : 0;
        }
    }

    /// <summary>Takes the counter and returns how many signals were pending (0 when none).</summary>
    /// <returns>The pending count.</returns>
    public ulong TryConsume() => TryConsume(out var count) ? count : 0;

    /// <summary>Waits until the doorbell rings or the time runs out, and consumes it.</summary>
    /// <param name="timeoutMilliseconds">-1 to wait forever, 0 to only check.</param>
    /// <returns>True when it rang.</returns>
    public bool Wait(int timeoutMilliseconds)
    {
        var deadline = timeoutMilliseconds > 0 ? Environment.TickCount64 + timeoutMilliseconds : 0;
        while (true)
        {
            var remaining = timeoutMilliseconds <= 0 ? timeoutMilliseconds : (int)Math.Max(0, deadline - Environment.TickCount64);
            if (!Poll.WaitReadable(Handle, remaining))
            {
                return false;
            }

            if (TryConsume(out _))
            {
                return true;
            }

            if (timeoutMilliseconds == 0 || (timeoutMilliseconds > 0 && Environment.TickCount64 >= deadline))
            {
                return false;
            }
        }
    }

    /// <summary>
    /// Releases a thread of this process stuck writing to this eventfd because the peer filled
    /// the counter right after the poll that <see cref="Signal"/> makes: takes the counter, so the
    /// write goes through. The peer loses the wake-ups taken, so this is only for a queue that is
    /// being torn down. Never blocks (RWF_NOWAIT; on older kernels a poll comes first).
    /// </summary>
    public void Unblock()
    {
        ulong value;
        if (ReadNoWait(&value) < 0 && Poll.WaitReadable(Handle, 0))
        {
            _ = LibC.Read(Handle, &value, 8);
        }
    }

    /// <inheritdoc/>
    void IDoorbell.Ring() => Signal();

    /// <summary>Closes the descriptor.</summary>
    public void Dispose() => Handle.Dispose();
}
