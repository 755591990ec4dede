using System.Runtime.InteropServices;

namespace Rings.Linux.Plumbing;

/// <summary>
/// A doorbell over an eventfd(2): the kick (driver to device) and call (device to driver) of
/// vhost-user. <see cref="Signal"/> adds one to the counter; the waiting side consumes the whole
/// counter at once, so any number of rings coalesce into one wake-up. No allocation per use.
/// </summary>
public sealed unsafe class EventFd : IDoorbell, IDisposable
{
    private readonly bool _nonBlocking;

    /// <summary>Wraps a descriptor received from a peer (taking ownership).</summary>
    /// <param name="handle">An eventfd, in whatever blocking mode the peer created it.</param>
    public EventFd(FileDescriptor handle)
    {
        ArgumentNullException.ThrowIfNull(handle);
        Handle = handle;

        // The file status flags belong to the open file description, shared with the peer:
        // never change them, only read whether reads may block.
        var flags = LibC.Fcntl(handle, LibC.F_GETFL, 0);
        _nonBlocking = flags >= 0 && (flags & LibC.O_NONBLOCK) != 0;
    }

    /// <summary>The descriptor, to pass to a peer or to poll.</summary>
    public FileDescriptor Handle { get; }

    /// <summary>Creates a new non-blocking, close-on-exec eventfd with counter 0.</summary>
    /// <returns>The doorbell.</returns>
    /// <exception cref="PlatformNotSupportedException">Not Linux.</exception>
    public static EventFd Create()
    {
        LinuxOnly.Check("an eventfd");
        var fd = LibC.EventFd(0, LibC.EFD_CLOEXEC | LibC.EFD_NONBLOCK);
        if (fd < 0)
        {
            throw LibC.Error("eventfd");
        }

        return new EventFd(new FileDescriptor(fd));
    }

    /// <summary>Rings the doorbell (adds 1 to the counter). Never blocks in practice: the counter saturates at 2^64-2.</summary>
    /// <returns>False if the descriptor refused the write.</returns>
    public bool Signal()
    {
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

            if (n < 0 && Marshal.GetLastPInvokeError() == LibC.EINTR)
            {
                continue;
            }

            return false;
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
