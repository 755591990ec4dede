namespace Rings.Linux.Plumbing;

/// <summary>Waiting on several descriptors at once with poll(2).</summary>
public static unsafe class Poll
{
    /// <summary>Most descriptors one wait takes (they live on the stack).</summary>
    public const int MaxDescriptors = 64;

    /// <summary>
    /// Waits until at least one descriptor is readable, has hung up or has an error, or the time runs out.
    /// EINTR is retried with the remaining time.
    /// </summary>
    /// <param name="fds">The descriptors (at most <see cref="MaxDescriptors"/>).</param>
    /// <param name="timeoutMilliseconds">-1 to wait forever, 0 to check without waiting.</param>
    /// <param name="ready">Receives true for each descriptor that is ready (same length as <paramref name="fds"/>).</param>
    /// <returns>How many are ready; 0 on timeout.</returns>
    public static int WaitReadable(ReadOnlySpan<FileDescriptor> fds, int timeoutMilliseconds, Span<bool> ready)
    {
        if (fds.Length > MaxDescriptors)
        {
            throw new ArgumentOutOfRangeException(nameof(fds), fds.Length, $"at most {MaxDescriptors} descriptors");
        }

        if (ready.Length < fds.Length)
        {
            throw new ArgumentException("ready must be as long as fds", nameof(ready));
        }

        var entries = stackalloc LibC.PollFd[fds.Length];
        var added = 0;
        try
        {
            for (; added < fds.Length; added++)
            {
                var success = false;
                fds[added].DangerousAddRef(ref success);
                entries[added] = new LibC.PollFd { Fd = (int)fds[added].DangerousGetHandle(), Events = LibC.POLLIN };
            }

            var deadline = timeoutMilliseconds > 0 ? Environment.TickCount64 + timeoutMilliseconds : 0;
            var remaining = timeoutMilliseconds;
            while (true)
            {
                var n = LibC.Poll(entries, (nuint)fds.Length, remaining);
                if (n >= 0)
                {
                    for (var i = 0; i < fds.Length; i++)
                    {
                        ready[i] = entries[i].Revents != 0;
                    }

                    return n;
                }

                if (System.Runtime.InteropServices.Marshal.GetLastPInvokeError() != LibC.EINTR)
                {
                    throw LibC.Error("poll");
                }

                if (timeoutMilliseconds > 0)
                {
                    remaining = (int)Math.Max(0, deadline - Environment.TickCount64);
                }
            }
        }
        finally
        {
            for (var i = 0; i < added; i++)
            {
                fds[i].DangerousRelease();
            }
        }
    }

    /// <summary>Whether a write to <paramref name="fd"/> would go through now (POLLOUT), without waiting.</summary>
    /// <param name="fd">The descriptor.</param>
    /// <returns>True when writable (or in error, so the write reports it), false when a write would block.</returns>
    public static bool IsWritable(FileDescriptor fd)
    {
        ArgumentNullException.ThrowIfNull(fd);
        var added = false;
        fd.DangerousAddRef(ref added);
        try
        {
            var entry = new LibC.PollFd { Fd = (int)fd.DangerousGetHandle(), Events = LibC.POLLOUT };
            while (true)
            {
                var n = LibC.Poll(&entry, 1, 0);
                if (n >= 0)
                {
                    return n > 0;
                }

                if (System.Runtime.InteropServices.Marshal.GetLastPInvokeError() != LibC.EINTR)
                {
                    throw LibC.Error("poll");
                }
            }
        }
        finally
        {
            if (added)
            {
                fd.DangerousRelease();
            }
        }
    }

    /// <summary>Waits until one descriptor is readable (or hung up).</summary>
    /// <param name="fd">The descriptor.</param>
    /// <param name="timeoutMilliseconds">-1 to wait forever, 0 to check without waiting.</param>
    /// <returns>True when it is ready, false on timeout.</returns>
    public static bool WaitReadable(FileDescriptor fd, int timeoutMilliseconds)
    {
        ArgumentNullException.ThrowIfNull(fd);
        Span<bool> ready = stackalloc bool[1];
        return WaitReadable([fd], timeoutMilliseconds, ready) > 0;
    }
}
