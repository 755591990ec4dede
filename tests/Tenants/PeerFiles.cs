using System.Runtime.InteropServices;
using Rings.Linux.Plumbing;

namespace Rings.Tests.Tenants;

/// <summary>
/// Descriptors a hostile front-end hands a back-end instead of what the protocol asks for: pipes,
/// sockets, unsealed or sparse memory files, eventfds it later blocks. Made here with plain libc
/// calls, because the library only makes the well-behaved kinds.
/// </summary>
internal static unsafe partial class PeerFiles
{
    private const int O_NONBLOCK = 0x800;
    private const int O_CLOEXEC = 0x80000;
    private const int F_GETFL = 3;
    private const int F_SETFL = 4;
    private const int EAGAIN = 11;
    private const uint MFD_CLOEXEC = 0x1;
    private const uint MFD_ALLOW_SEALING = 0x2;

    /// <summary>A pipe (read end, write end), both blocking.</summary>
    public static (FileDescriptor Read, FileDescriptor Write) Pipe()
    {
        var fds = stackalloc int[2];
        Check(Pipe2(fds, O_CLOEXEC), "pipe2");
        return (new FileDescriptor(fds[0]), new FileDescriptor(fds[1]));
    }

    /// <summary>A connected pair of Unix stream sockets.</summary>
    public static (FileDescriptor A, FileDescriptor B) SocketPair()
    {
        var fds = stackalloc int[2];
        Check(SocketPair(1 /* AF_UNIX */, 1 | 0x80000 /* SOCK_STREAM | SOCK_CLOEXEC */, 0, fds), "socketpair");
        return (new FileDescriptor(fds[0]), new FileDescriptor(fds[1]));
    }

    /// <summary>Fills a pipe until a write would block, then leaves its write end blocking (the file status flags are shared with whoever receives it).</summary>
    public static int Fill(FileDescriptor writeEnd)
    {
        SetBlocking(writeEnd, false);
        var chunk = stackalloc byte[4096];
        var total = 0;
        while (true)
        {
            var n = Write(writeEnd, chunk, 4096);
            if (n > 0)
            {
                total += (int)n;
                continue;
            }

            Assert.Equal(EAGAIN, Marshal.GetLastPInvokeError());
            break;
        }

        SetBlocking(writeEnd, true);
        return total;
    }

    /// <summary>Sets or clears O_NONBLOCK on the open file description (shared with every holder of it).</summary>
    public static void SetBlocking(FileDescriptor fd, bool blocking)
    {
        var flags = Fcntl(fd, F_GETFL, 0);
        Check(flags, "fcntl(F_GETFL)");
        Check(Fcntl(fd, F_SETFL, blocking ? flags & ~O_NONBLOCK : flags | O_NONBLOCK), "fcntl(F_SETFL)");
    }

    /// <summary>True when reads and writes on the description block.</summary>
    public static bool IsBlocking(FileDescriptor fd) => (Fcntl(fd, F_GETFL, 0) & O_NONBLOCK) == 0;

    /// <summary>A blocking eventfd (as a careless or hostile front-end might make it).</summary>
    public static FileDescriptor BlockingEventFd()
    {
        var fd = EventFd(0, O_CLOEXEC);
        Check(fd, "eventfd");
        return new FileDescriptor(fd);
    }

    /// <summary>Adds <paramref name="value"/> to an eventfd's counter (0xffff_ffff_ffff_fffe fills it: any further write would block).</summary>
    public static void AddToCounter(FileDescriptor eventFd, ulong value) => Assert.Equal(8, (int)Write(eventFd, &value, 8));

    /// <summary>Reads (and so clears) an eventfd's counter; 0 when it was empty (non-blocking descriptors only).</summary>
    public static ulong TakeCounter(FileDescriptor eventFd)
    {
        ulong value = 0;
        return Read(eventFd, &value, 8) == 8 ? value : 0;
    }

    /// <summary>A memory file of <paramref name="bytes"/> (sparse: nothing is allocated), sealable or not, never sealed here.</summary>
    public static FileDescriptor Memfd(ulong bytes, string name, bool allowSealing = false)
    {
        var fd = MemfdCreate(name, MFD_CLOEXEC | (allowSealing ? MFD_ALLOW_SEALING : 0));
        Check(fd, "memfd_create");
        var handle = new FileDescriptor(fd);
        Truncate(handle, bytes);
        return handle;
    }

    /// <summary>Sets a file's size (a front-end shrinking its memory under its back-end).</summary>
    public static void Truncate(FileDescriptor fd, ulong bytes) => Check(Ftruncate(fd, (long)bytes), "ftruncate");

    /// <summary>How many of this process's descriptors refer to the same file as <paramref name="fd"/> (by /proc/self/fd link).</summary>
    public static int OpenCopies(FileDescriptor fd)
    {
        var target = Link(fd.Value);
        var n = 0;
        foreach (var entry in Directory.GetFileSystemEntries("/proc/self/fd"))
        {
            try
            {
                if (new FileInfo(entry).LinkTarget == target)
                {
                    n++;
                }
            }
            catch (IOException)
            {
                // Closed while listing.
            }
        }

        return n;
    }

    /// <summary>What /proc/self/fd/N says the descriptor is (pipe:[...], socket:[...], anon_inode:[eventfd], /memfd:...).</summary>
    public static string Link(int fd) => new FileInfo($"/proc/self/fd/{fd}").LinkTarget!;

    /// <summary>This process's real user id (what SO_PEERCRED reports to a back-end it connects to).</summary>
    public static uint Uid() => GetUid();

    private static void Check(int result, string what)
    {
        if (result < 0)
        {
            throw new IOException($"{what} failed: errno {Marshal.GetLastPInvokeError()}");
        }
    }

    [LibraryImport("libc", EntryPoint = "getuid")]
    private static partial uint GetUid();

    [LibraryImport("libc", EntryPoint = "pipe2", SetLastError = true)]
    private static partial int Pipe2(int* fds, int flags);

    [LibraryImport("libc", EntryPoint = "socketpair", SetLastError = true)]
    private static partial int SocketPair(int domain, int type, int protocol, int* fds);

    [LibraryImport("libc", EntryPoint = "fcntl", SetLastError = true)]
    private static partial int Fcntl(SafeHandle fd, int command, int argument);

    [LibraryImport("libc", EntryPoint = "write", SetLastError = true)]
    private static partial nint Write(SafeHandle fd, void* buffer, nuint count);

    [LibraryImport("libc", EntryPoint = "read", SetLastError = true)]
    private static partial nint Read(SafeHandle fd, void* buffer, nuint count);

    [LibraryImport("libc", EntryPoint = "eventfd", SetLastError = true)]
    private static partial int EventFd(uint initial, int flags);

    [LibraryImport("libc", EntryPoint = "memfd_create", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int MemfdCreate(string name, uint flags);

    [LibraryImport("libc", EntryPoint = "ftruncate", SetLastError = true)]
    private static partial int Ftruncate(SafeHandle fd, long length);
}
