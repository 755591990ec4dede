using System.Runtime.InteropServices;

namespace Rings.Linux.Plumbing;

/// <summary>
/// A doorbell over an eventfd(2): the kick (driver to device) and call (device to driver) of
/// vhost-user. <see cref="Signal"/> adds one to the counter; the waiting side consumes the whole
/// counter at once, so any number of rings coalesce into one wake-up. No allocation per use.
/// Neither ringing nor consuming ever blocks, whatever mode the peer created the descriptor in.
/// </summary>
public sealed unsafe class EventFd : IDoorbell, IDisposable
{
    /// <summary>What the kernel calls an eventfd (<see cref="FileDescriptor.KernelName"/>).</summary>
    public const string KernelName = "anon_inode:[eventfd]";

    private readonly bool _nonBlocking;

    /// <summary>Wraps an eventfd (taking ownership); a descriptor from a peer goes through <see cref="FromPeer"/>, which checks its type.</summary>
    /// <param name="handle">An eventfd, in whatever blocking mode its creator chose.</param>
    public EventFd(FileDescriptor handle)
    {
        ArgumentNullException.ThrowIfNull(handle);
        Handle = handle;

        // The file status flags belong to the open file description, shared with the peer:
        // never change them, only read whether reads may block.
        var flags = LibC.Fcntl(handle, LibC.F_GETFL, 0);
        _nonBlocking = flags >= 0 && (flags & LibC.O_NONBLOCK) != 0;
    }

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
        return kind == KernelName ? new EventFd(handle) : null;
    }

    /// <summary>The descriptor, to pass to a peer or to poll.</summary>
    public FileDescriptor Handle { get; }

    /// <summary>Creates a new non-blocking, close-on-exec eventfd with counter 0.</summary>
    /// <returns>The doorbell.</returns>
    public static EventFd Create()
    {
        var fd = LibC.EventFd(0, LibC.EFD_CLOEXEC | LibC.EFD_NONBLOCK);
        if (fd < 0)
        {
            throw LibC.Error("eventfd");
        }

        return new EventFd(new FileDescriptor(fd));
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
        // first (POLLOUT is clear exactly when the counter cannot take 1). The file status flags
        // are shared with the peer and stay as it set them.
        if (!_nonBlocking && !Poll.IsWritable(Handle))
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

        // A peer's blocking eventfd is read only after poll says it is readable; only this
        // side reads it, so it stays readable until our read.
        if (!_nonBlocking && !Poll.WaitReadable(Handle, 0))
        {
            return false;
        }

        ulong value;
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

    /// <inheritdoc/>
    void IDoorbell.Ring() => Signal();

    /// <summary>Closes the descriptor.</summary>
    public void Dispose() => Handle.Dispose();
}
