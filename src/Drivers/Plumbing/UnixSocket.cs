using System.Runtime.InteropServices;
using System.Text;

namespace Rings.Linux.Plumbing;

/// <summary>
/// An AF_UNIX SOCK_STREAM socket that can pass file descriptors (SCM_RIGHTS), done by hand so
/// every descriptor is accounted for: received ones arrive close-on-exec (MSG_CMSG_CLOEXEC), a
/// truncated control message (MSG_CTRUNC) is an error, and whatever the caller does not keep is
/// closed by the caller through <see cref="FileDescriptor"/>.
/// </summary>
public sealed unsafe class UnixSocket : IDisposable
{
    /// <summary>Most descriptors one received message may carry; more is a protocol error.</summary>
    public const int MaxDescriptorsPerMessage = 16;

    /// <summary>Most descriptors one sent message may carry.</summary>
    public const int MaxSendDescriptors = 64;

    private readonly string? _listenPath;

    private UnixSocket(FileDescriptor handle, string? listenPath)
    {
        Handle = handle;
        _listenPath = listenPath;
    }

    /// <summary>The socket descriptor (to poll it).</summary>
    public FileDescriptor Handle { get; }

    /// <summary>
    /// Creates a listening socket at <paramref name="path"/> with permissions 0600 (owner only),
    /// replacing a stale socket file (one nobody listens on; any other kind of file is left alone
    /// and the bind fails). The mode is set on the socket before bind, so the file is never
    /// visible with wider permissions.
    /// </summary>
    /// <param name="path">Filesystem path of the socket.</param>
    /// <param name="backlog">Pending connections the kernel queues.</param>
    /// <returns>The listening socket; disposing it removes the file.</returns>
    public static UnixSocket Listen(string path, int backlog = 4)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        var address = MakeAddress(path);
        var fd = NewSocket();
        try
        {
            // Linux gives the bound file the socket inode's mode (masked by umask), so fchmod
            // before bind makes the file owner-only from its first moment.
            if (LibC.Fchmod(fd, Convert.ToUInt32("600", 8)) != 0)
            {
                throw LibC.Error("fchmod");
            }

            RemoveStaleSocket(path);

            if (LibC.Bind(fd, &address, (uint)sizeof(LibC.SockAddrUn)) != 0)
            {
                throw LibC.Error($"bind({path})");
            }

            if (LibC.Chmod(path, Convert.ToUInt32("600", 8)) != 0)
            {
                throw LibC.Error("chmod");
            }

            if (LibC.Listen(fd, backlog) != 0)
            {
                throw LibC.Error("listen");
            }

            return new UnixSocket(fd, path);
        }
        catch
        {
            fd.Dispose();
            throw;
        }
    }

    /// <summary>Connects to a listening socket at <paramref name="path"/>.</summary>
    /// <param name="path">Filesystem path of the socket.</param>
    /// <returns>The connected socket.</returns>
    public static UnixSocket Connect(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        var address = MakeAddress(path);
        var fd = NewSocket();
        try
        {
            while (LibC.Connect(fd, &address, (uint)sizeof(LibC.SockAddrUn)) != 0)
            {
                if (Marshal.GetLastPInvokeError() != LibC.EINTR)
                {
                    throw LibC.Error($"connect({path})");
                }
            }

            return new UnixSocket(fd, null);
        }
        catch
        {
            fd.Dispose();
            throw;
        }
    }

    /// <summary>Accepts one pending connection on a listening socket.</summary>
    /// <param name="timeoutMilliseconds">How long to wait for a connection; -1 forever.</param>
    /// <returns>The accepted connection, or null on timeout.</returns>
    public UnixSocket? Accept(int timeoutMilliseconds)
    {
        if (!Poll.WaitReadable(Handle, timeoutMilliseconds))
        {
            return null;
        }

        var fd = LibC.Accept4(Handle, null, null, LibC.SOCK_CLOEXEC);
        if (fd < 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            if (errno is LibC.EINTR or LibC.EAGAIN)
            {
                return null;
            }

            throw LibC.Error("accept4");
        }

        return new UnixSocket(new FileDescriptor(fd), null);
    }

    /// <summary>
    /// Sends all of <paramref name="data"/>, with <paramref name="fds"/> attached to its first byte.
    /// </summary>
    /// <param name="data">Bytes to send (not empty).</param>
    /// <param name="fds">Descriptors to pass (at most <see cref="MaxSendDescriptors"/>); the caller keeps its own copies.</param>
    public void Send(ReadOnlySpan<byte> data, ReadOnlySpan<FileDescriptor> fds = default)
    {
        if (data.IsEmpty)
        {
            throw new ArgumentException("nothing to send", nameof(data));
        }

        if (fds.Length > MaxSendDescriptors)
        {
            throw new ArgumentOutOfRangeException(nameof(fds), fds.Length, $"at most {MaxSendDescriptors} descriptors");
        }

        var controlBytes = fds.IsEmpty ? 0 : LibC.CmsgSpace(fds.Length * sizeof(int));
        var control = stackalloc byte[Math.Max(controlBytes, 1)];
        var added = 0;
        try
        {
            if (!fds.IsEmpty)
            {
                new Span<byte>(control, controlBytes).Clear();
                var header = (LibC.CmsgHdr*)control;
                header->Length = (nuint)LibC.CmsgLen(fds.Length * sizeof(int));
                header->Level = LibC.SOL_SOCKET;
                header->Type = LibC.SCM_RIGHTS;
                var slots = (int*)(control + LibC.CmsgHdr.Size);
                for (; added < fds.Length; added++)
                {
                    var success = false;
                    fds[added].DangerousAddRef(ref success);
                    slots[added] = (int)fds[added].DangerousGetHandle();
                }
            }

            fixed (byte* bytes = data)
            {
                var sent = 0;
                while (sent < data.Length)
                {
                    var iov = new LibC.IoVec { Base = bytes + sent, Length = (nuint)(data.Length - sent) };
                    var message = new LibC.MsgHdr { Iov = &iov, IovLength = 1 };

                    // Descriptors ride with the first byte only.
                    if (sent == 0 && controlBytes > 0)
                    {
                        message.Control = control;
                        message.ControlLength = (nuint)controlBytes;
                    }

                    var n = LibC.SendMsg(Handle, &message, LibC.MSG_NOSIGNAL);
                    if (n < 0)
                    {
                        if (Marshal.GetLastPInvokeError() == LibC.EINTR)
                        {
                            continue;
                        }

                        throw LibC.Error("sendmsg");
                    }

                    sent += (int)n;
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

    /// <summary>
    /// Receives up to <paramref name="buffer"/>.Length bytes (at least one unless the peer closed),
    /// appending any descriptors that came with them to <paramref name="fds"/>. A control message
    /// that did not fit (MSG_CTRUNC) throws after closing what did arrive.
    /// </summary>
    /// <param name="buffer">Where to put the bytes.</param>
    /// <param name="fds">Receives the descriptors, owned by the caller from now on.</param>
    /// <returns>Bytes received; 0 when the peer closed the connection.</returns>
    public int Receive(Span<byte> buffer, List<FileDescriptor> fds)
    {
        ArgumentNullException.ThrowIfNull(fds);
        var controlBytes = LibC.CmsgSpace(MaxDescriptorsPerMessage * sizeof(int));
        var control = stackalloc byte[controlBytes];
        fixed (byte* bytes = buffer)
        {
            while (true)
            {
                var iov = new LibC.IoVec { Base = bytes, Length = (nuint)buffer.Length };
                var message = new LibC.MsgHdr { Iov = &iov, IovLength = 1, Control = control, ControlLength = (nuint)controlBytes };
                var n = LibC.RecvMsg(Handle, &message, LibC.MSG_CMSG_CLOEXEC);
                if (n < 0)
                {
                    if (Marshal.GetLastPInvokeError() == LibC.EINTR)
                    {
                        continue;
                    }

                    throw LibC.Error("recvmsg");
                }

                var before = fds.Count;
                CollectDescriptors(&message, fds);
                if ((message.Flags & LibC.MSG_CTRUNC) != 0)
                {
                    // The kernel closed what did not fit; close what did so nothing leaks.
                    for (var i = fds.Count - 1; i >= before; i--)
                    {
                        fds[i].Dispose();
                        fds.RemoveAt(i);
                    }

                    throw new IOException($"more than {MaxDescriptorsPerMessage} descriptors in one message (MSG_CTRUNC)");
                }

                return (int)n;
            }
        }
    }

    /// <summary>The process and user on the other end, as the kernel recorded them at connect (SO_PEERCRED).</summary>
    /// <returns>The peer's process id, user id and group id.</returns>
    public (int Pid, uint Uid, uint Gid) PeerCredentials()
    {
        // struct ucred { pid_t pid; uid_t uid; gid_t gid; }
        var credentials = stackalloc int[3];
        var length = (uint)(3 * sizeof(int));
        if (LibC.GetSockOpt(Handle, LibC.SOL_SOCKET, LibC.SO_PEERCRED, credentials, &length) != 0)
        {
            throw LibC.Error("getsockopt(SO_PEERCRED)");
        }

        return (credentials[0], (uint)credentials[1], (uint)credentials[2]);
    }

    /// <summary>
    /// Bounds how long <see cref="Send"/> may wait for room in the peer's receive buffer (SO_SNDTIMEO):
    /// a peer that stops reading makes a send fail instead of blocking the sender forever.
    /// </summary>
    /// <param name="milliseconds">The limit; 0 for none.</param>
    public void SetSendTimeout(int milliseconds)
    {
        // struct timeval { time_t tv_sec; suseconds_t tv_usec; } (LP64)
        var value = stackalloc long[2];
        value[0] = milliseconds / 1000;
        value[1] = milliseconds % 1000 * 1000L;
        if (LibC.SetSockOpt(Handle, LibC.SOL_SOCKET, LibC.SO_SNDTIMEO, value, 2 * sizeof(long)) != 0)
        {
            throw LibC.Error("setsockopt(SO_SNDTIMEO)");
        }
    }

    /// <summary>Closes the socket; a listening socket also removes its file.</summary>
    public void Dispose()
    {
        Handle.Dispose();
        if (_listenPath is not null)
        {
            try
            {
                File.Delete(_listenPath);
            }
            catch (IOException)
            {
            }
            catch (UnauthorizedAccessException)
            {
            }
        }
    }

    private static void CollectDescriptors(LibC.MsgHdr* message, List<FileDescriptor> fds)
    {
        if (message->Control == null || message->ControlLength < LibC.CmsgHdr.Size)
        {
            return;
        }

        var control = (byte*)message->Control;
        var end = control + message->ControlLength;
        var header = (LibC.CmsgHdr*)control;
        while (header != null)
        {
            var length = header->Length;
            if (length < LibC.CmsgHdr.Size || (byte*)header + length > end)
            {
                break;
            }

            if (header->Level == LibC.SOL_SOCKET && header->Type == LibC.SCM_RIGHTS)
            {
                var count = (int)((length - LibC.CmsgHdr.Size) / sizeof(int));
                var slots = (int*)((byte*)header + LibC.CmsgHdr.Size);
                for (var i = 0; i < count; i++)
                {
                    fds.Add(new FileDescriptor(slots[i]));
                }
            }

            // CMSG_NXTHDR: advance by the aligned length; stop when the next header would not fit.
            var next = (byte*)header + ((length + 7) & ~(nuint)7);
            header = next + LibC.CmsgHdr.Size <= end ? (LibC.CmsgHdr*)next : null;
        }
    }

    private static void RemoveStaleSocket(string path)
    {
        var buffer = stackalloc byte[LibC.StatxBytes];
        if (LibC.StatxPath(LibC.AT_FDCWD, path, LibC.AT_SYMLINK_NOFOLLOW, LibC.STATX_TYPE, buffer) != 0)
        {
            return; // nothing there (or not reachable): bind decides
        }

        var mode = *(ushort*)(buffer + LibC.StatxModeOffset);
        if ((mode & LibC.S_IFMT) != LibC.S_IFSOCK)
        {
            return;
        }

        bool listening;
        try
        {
            using (Connect(path))
            {
            }

            listening = true;
        }
        catch (IOException)
        {
            listening = false;
        }

        if (listening)
        {
            throw new IOException($"{path} is in use: something listens on it");
        }

        File.Delete(path);
    }

    private static FileDescriptor NewSocket()
    {
        var fd = LibC.Socket(LibC.AF_UNIX, LibC.SOCK_STREAM | LibC.SOCK_CLOEXEC, 0);
        if (fd < 0)
        {
            throw LibC.Error("socket");
        }

        return new FileDescriptor(fd);
    }

    private static LibC.SockAddrUn MakeAddress(string path)
    {
        var bytes = Encoding.UTF8.GetBytes(path);
        if (bytes.Length >= LibC.SunPathLength)
        {
            throw new ArgumentException($"socket path longer than {LibC.SunPathLength - 1} bytes: {path}", nameof(path));
        }

        var address = new LibC.SockAddrUn { Family = LibC.AF_UNIX };
        for (var i = 0; i < bytes.Length; i++)
        {
            address.Path[i] = bytes[i];
        }

        return address;
    }
}
