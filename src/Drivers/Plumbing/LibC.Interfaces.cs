using System.Runtime.InteropServices;

namespace Rings.Linux.Plumbing;

/// <summary>
/// The calls and constants of network interfaces and the TUN/TAP driver (tuntap(4) and
/// netdevice(7); linux/if_tun.h, linux/sockios.h). The ioctl numbers are the generic Linux
/// encoding, the same on x86-64 and arm64.
/// </summary>
internal static unsafe partial class LibC
{
    // errno values
    public const int EPERM = 1;
    public const int ENOENT = 2;
    public const int EIO = 5;
    public const int ENXIO = 6;
    public const int EACCES = 13;
    public const int EBUSY = 16;
    public const int ENODEV = 19;
    public const int EBADFD = 77;

    // open(2)
    public const int O_RDWR = 0x2;
    public const int O_CLOEXEC = 0x80000;

    // socket(2)
    public const int AF_INET = 2;
    public const int SOCK_DGRAM = 2;

    // TUN/TAP ioctls on the clone device's descriptor
    public const nuint TUNSETIFF = 0x400454ca;
    public const nuint TUNSETOFFLOAD = 0x400454d0;
    public const nuint TUNGETIFF = 0x800454d2;
    public const nuint TUNSETVNETHDRSZ = 0x400454d8;

    // TUNSETIFF flags
    public const short IFF_TAP = 0x0002;
    public const short IFF_NO_PI = 0x1000;
    public const short IFF_VNET_HDR = 0x4000;
    public const short IFF_TUN_EXCL = unchecked((short)0x8000);
    public const short IFF_PERSIST = 0x0800;

    // Interface ioctls (netdevice(7)); SIOCGIFHWADDR and SIOCSIFHWADDR also work on a TAP descriptor
    public const nuint SIOCGIFFLAGS = 0x8913;
    public const nuint SIOCSIFFLAGS = 0x8914;
    public const nuint SIOCGIFMTU = 0x8921;
    public const nuint SIOCSIFMTU = 0x8922;
    public const nuint SIOCSIFHWADDR = 0x8924;
    public const nuint SIOCGIFHWADDR = 0x8927;
    public const nuint SIOCGIFINDEX = 0x8933;

    // Interface flags (SIOCGIFFLAGS)
    public const short IFF_UP = 0x1;
    public const short IFF_RUNNING = 0x40;

    // ARPHRD_ETHER: the sa_family of an Ethernet hardware address
    public const ushort ARPHRD_ETHER = 1;

    // IFNAMSIZ, with the terminating NUL
    public const int IfNameSize = 16;

    [LibraryImport(Lib, EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int Open(string path, int flags, uint mode);

    /// <summary>ioctl(2) with a pointer argument (variadic in C; passed as the third integer argument on LP64 Linux).</summary>
    [LibraryImport(Lib, EntryPoint = "ioctl", SetLastError = true)]
    public static partial int Ioctl(SafeHandle fd, nuint request, void* argument);

    /// <summary>ioctl(2) with an integer argument.</summary>
    [LibraryImport(Lib, EntryPoint = "ioctl", SetLastError = true)]
    public static partial int IoctlValue(SafeHandle fd, nuint request, nuint argument);

    [LibraryImport(Lib, EntryPoint = "readv", SetLastError = true)]
    public static partial nint Readv(SafeHandle fd, IoVec* vectors, int count);

    [LibraryImport(Lib, EntryPoint = "writev", SetLastError = true)]
    public static partial nint Writev(SafeHandle fd, IoVec* vectors, int count);

    /// <summary><c>struct ifreq</c>: a name and one union member (40 bytes on LP64).</summary>
    [StructLayout(LayoutKind.Explicit, Size = 40)]
    public struct IfReq
    {
        [FieldOffset(0)]
        public fixed byte Name[IfNameSize];

        [FieldOffset(16)]
        public short Flags;

        [FieldOffset(16)]
        public int Value;

        [FieldOffset(16)]
        public ushort HardwareFamily;

        [FieldOffset(18)]
        public fixed byte HardwareAddress[14];
    }
}
