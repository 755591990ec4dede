using System.Runtime.InteropServices;

namespace Rings.Linux.Plumbing;

/// <summary>
/// The few libc calls Rings needs, bound with source-generated P/Invoke. Every fd parameter is
/// a <see cref="SafeHandle"/> so the marshaller holds a reference for the duration of the call:
/// a descriptor closed by another thread can never be reused under a call in flight.
/// Struct layouts are those of LP64 Linux (x86-64 and arm64 agree on all of them).
/// </summary>
internal static unsafe partial class LibC
{
    private const string Lib = "libc";

    // errno values
    public const int EINTR = 4;
    public const int EAGAIN = 11;
    public const int ENOMEM = 12;
    public const int EINVAL = 22;
    public const int EPIPE = 32;
    public const int ECONNRESET = 104;

    // memfd_create(2), fcntl(2) seals
    public const uint MFD_CLOEXEC = 0x1;
    public const uint MFD_ALLOW_SEALING = 0x2;
    public const uint MFD_HUGETLB = 0x4;
    public const uint MFD_HUGE_SHIFT = 26;
    public const uint MFD_HUGE_2MB = 21u << (int)MFD_HUGE_SHIFT; // log2(2 MiB) in the size field (memfd_create(2))
    public const int F_GETFL = 3;
    public const int F_DUPFD_CLOEXEC = 1030;
    public const int F_ADD_SEALS = 1033;
    public const int F_GET_SEALS = 1034;
    public const int F_SEAL_SEAL = 0x1;
    public const int F_SEAL_SHRINK = 0x2;
    public const int F_SEAL_GROW = 0x4;
    public const int O_NONBLOCK = 0x800;

    // mmap(2)
    public const int PROT_READ = 0x1;
    public const int PROT_WRITE = 0x2;
    public const int MAP_SHARED = 0x1;
    public static readonly nint MAP_FAILED = -1;

    // statfs(2): f_type and f_bsize are the first two words of struct statfs on LP64 Linux.
    public const long HUGETLBFS_MAGIC = 0x958458f6;
    public const int StatfsBytes = 256;
    public const int StatfsTypeOffset = 0;
    public const int StatfsBlockSizeOffset = 8;

    // eventfd(2)
    public const int EFD_CLOEXEC = 0x80000;
    public const int EFD_NONBLOCK = 0x800;

    // poll(2)
    public const short POLLIN = 0x1;
    public const short POLLOUT = 0x4;
    public const short POLLERR = 0x8;
    public const short POLLHUP = 0x10;
    public const short POLLNVAL = 0x20;

    // socket(2), sendmsg(2), recvmsg(2), unix(7)
    public const int AF_UNIX = 1;
    public const int SOCK_STREAM = 1;
    public const int SOCK_CLOEXEC = 0x80000;
    public const int SOL_SOCKET = 1;
    public const int SCM_RIGHTS = 1;
    public const int MSG_CTRUNC = 0x8;
    public const int MSG_NOSIGNAL = 0x4000;
    public const int MSG_CMSG_CLOEXEC = 0x40000000;
    public const int SO_PEERCRED = 17;
    public const int SO_SNDTIMEO = 21;
    public const int SunPathLength = 108;

    // statx(2)
    public const int AT_EMPTY_PATH = 0x1000;
    public const uint STATX_SIZE = 0x200;
    public const int StatxSizeOffset = 40;
    public const int StatxBytes = 256;
    public const int StatxModeOffset = 28;
    public const uint STATX_TYPE = 0x1;
    public const int AT_FDCWD = -100;
    public const int AT_SYMLINK_NOFOLLOW = 0x100;
    public const int S_IFMT = 0xF000;
    public const int S_IFSOCK = 0xC000;

    [LibraryImport(Lib, EntryPoint = "memfd_create", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int MemfdCreate(string name, uint flags);

    [LibraryImport(Lib, EntryPoint = "ftruncate", SetLastError = true)]
    public static partial int Ftruncate(SafeHandle fd, long length);

    [LibraryImport(Lib, EntryPoint = "fcntl", SetLastError = true)]
    public static partial int Fcntl(SafeHandle fd, int command, int argument);

    [LibraryImport(Lib, EntryPoint = "mmap", SetLastError = true)]
    public static partial nint Mmap(nint address, nuint length, int protection, int flags, SafeHandle fd, long offset);

    [LibraryImport(Lib, EntryPoint = "fstatfs", SetLastError = true)]
    public static partial int Fstatfs(SafeHandle fd, byte* buffer);

    [LibraryImport(Lib, EntryPoint = "munmap", SetLastError = true)]
    public static partial int Munmap(nint address, nuint length);

    [LibraryImport(Lib, EntryPoint = "statx", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int Statx(SafeHandle fd, string path, int flags, uint mask, byte* buffer);

    [LibraryImport(Lib, EntryPoint = "statx", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int StatxPath(int directoryFd, string path, int flags, uint mask, byte* buffer);

    [LibraryImport(Lib, EntryPoint = "eventfd", SetLastError = true)]
    public static partial int EventFd(uint initialValue, int flags);

    [LibraryImport(Lib, EntryPoint = "read", SetLastError = true)]
    public static partial nint Read(SafeHandle fd, void* buffer, nuint count);

    [LibraryImport(Lib, EntryPoint = "write", SetLastError = true)]
    public static partial nint Write(SafeHandle fd, void* buffer, nuint count);

    // preadv2(2): RWF_NOWAIT makes one read non-blocking whatever the file's flags (eventfd: Linux 5.12).
    public const int RWF_NOWAIT = 0x8;
    public const int EOPNOTSUPP = 95;

    [LibraryImport(Lib, EntryPoint = "preadv2", SetLastError = true)]
    public static partial nint Preadv2(SafeHandle fd, IoVec* iov, int count, long offset, int flags);

    [LibraryImport(Lib, EntryPoint = "getsockopt", SetLastError = true)]
    public static partial int GetSockOpt(SafeHandle fd, int level, int name, void* value, uint* length);

    [LibraryImport(Lib, EntryPoint = "setsockopt", SetLastError = true)]
    public static partial int SetSockOpt(SafeHandle fd, int level, int name, void* value, uint length);

    [LibraryImport(Lib, EntryPoint = "readlink", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial nint Readlink(string path, byte* buffer, nuint size);

    [LibraryImport(Lib, EntryPoint = "close", SetLastError = true)]
    public static partial int Close(int fd);

    [LibraryImport(Lib, EntryPoint = "poll", SetLastError = true)]
    public static partial int Poll(PollFd* fds, nuint count, int timeoutMilliseconds);

    [LibraryImport(Lib, EntryPoint = "socket", SetLastError = true)]
    public static partial int Socket(int domain, int type, int protocol);

    [LibraryImport(Lib, EntryPoint = "bind", SetLastError = true)]
    public static partial int Bind(SafeHandle fd, SockAddrUn* address, uint length);

    [LibraryImport(Lib, EntryPoint = "listen", SetLastError = true)]
    public static partial int Listen(SafeHandle fd, int backlog);

    [LibraryImport(Lib, EntryPoint = "accept4", SetLastError = true)]
    public static partial int Accept4(SafeHandle fd, void* address, void* length, int flags);

    [LibraryImport(Lib, EntryPoint = "connect", SetLastError = true)]
    public static partial int Connect(SafeHandle fd, SockAddrUn* address, uint length);

    [LibraryImport(Lib, EntryPoint = "fchmod", SetLastError = true)]
    public static partial int Fchmod(SafeHandle fd, uint mode);

    [LibraryImport(Lib, EntryPoint = "chmod", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int Chmod(string path, uint mode);

    [LibraryImport(Lib, EntryPoint = "sigaction", SetLastError = true)]
    public static partial int Sigaction(int signal, void* action, void* old);

    [LibraryImport(Lib, EntryPoint = "signal", SetLastError = true)]
    public static partial nint Signal(int signal, nint handler);

    [LibraryImport(Lib, EntryPoint = "sched_setaffinity", SetLastError = true)]
    public static partial int SchedSetAffinity(int pid, nuint size, ulong* mask);

    [LibraryImport(Lib, EntryPoint = "sched_getaffinity", SetLastError = true)]
    public static partial int SchedGetAffinity(int pid, nuint size, ulong* mask);

    [LibraryImport(Lib, EntryPoint = "sendmsg", SetLastError = true)]
    public static partial nint SendMsg(SafeHandle fd, MsgHdr* message, int flags);

    [LibraryImport(Lib, EntryPoint = "recvmsg", SetLastError = true)]
    public static partial nint RecvMsg(SafeHandle fd, MsgHdr* message, int flags);

    /// <summary>Bytes of a control message carrying <paramref name="dataBytes"/> of data, aligned (CMSG_SPACE).</summary>
    public static int CmsgSpace(int dataBytes) => CmsgHdr.Size + ((dataBytes + 7) & ~7);

    /// <summary>The cmsg_len value for <paramref name="dataBytes"/> of data (CMSG_LEN).</summary>
    public static int CmsgLen(int dataBytes) => CmsgHdr.Size + dataBytes;

    /// <summary>Throws for the errno of the call just made.</summary>
    public static IOException Error(string what)
    {
        var errno = Marshal.GetLastPInvokeError();
        return new IOException($"{what} failed: {Marshal.GetPInvokeErrorMessage(errno)} (errno {errno})", errno);
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct PollFd
    {
        public int Fd;
        public short Events;
        public short Revents;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct IoVec
    {
        public void* Base;
        public nuint Length;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct MsgHdr
    {
        public void* Name;
        public uint NameLength;
        public IoVec* Iov;
        public nuint IovLength;
        public void* Control;
        public nuint ControlLength;
        public int Flags;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct CmsgHdr
    {
        public const int Size = 16;
        public nuint Length;
        public int Level;
        public int Type;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct SockAddrUn
    {
        public ushort Family;
        public fixed byte Path[SunPathLength];
    }
}
