using System.Runtime.InteropServices;
using System.Text;
using Rings.Linux.Net;

namespace Rings.Linux.Plumbing;

/// <summary>
/// A Linux TAP device (tuntap(4)): Ethernet frames between this process and the kernel's network
/// stack through one non-blocking descriptor, opened with <c>IFF_TAP | IFF_NO_PI | IFF_VNET_HDR</c>
/// so every frame read or written starts with a 12-byte <c>virtio_net_hdr_v1</c> (virtio 1.2
/// 5.1.6) and checksum and segmentation offloads pass through as they do on a virtio-net queue.
/// </summary>
/// <remarks>
/// <para>
/// A device this object created (<see cref="Created"/>) is not persistent: the kernel removes it
/// when the descriptor closes, so only what was created here goes away. An attached device
/// (created beforehand with <c>ip tuntap add NAME mode tap</c>) stays.
/// </para>
/// <para>
/// The data path (<see cref="Receive(Span{byte}, out int)"/>, <see cref="Transmit(ReadOnlySpan{byte})"/>,
/// <see cref="ReceiveBurst"/>, <see cref="TransmitBurst"/>) is one system call per frame, allocates
/// nothing and never throws for what the kernel or the other side does: a deleted device, a link
/// that is down, a refused frame come back as a <see cref="TapStatus"/> and as
/// <see cref="LinkState"/>. One thread at a time uses the data path.
/// </para>
/// <para>
/// MTU and link flags are set by name in this process's network namespace; after the device was
/// moved to another namespace they fail with <see cref="TapError.NotInThisNamespace"/>, while
/// frames, offloads and the MAC address (set through the descriptor) keep working.
/// </para>
/// </remarks>
public sealed unsafe class TapDevice : IDisposable
{
    /// <summary>The TUN/TAP clone device.</summary>
    public const string CloneDevicePath = "/dev/net/tun";

    /// <summary>Bytes of the virtio-net header before every frame (<c>virtio_net_hdr_v1</c>, set with TUNSETVNETHDRSZ).</summary>
    public const int HeaderSize = VirtioNetHeader.Size;

    /// <summary>Longest interface name in bytes (IFNAMSIZ less its terminating NUL).</summary>
    public const int MaxNameLength = LibC.IfNameSize - 1;

    private TapLinkState _linkState;
    private long _receivedFrames;
    private long _receivedBytes;
    private long _transmittedFrames;
    private long _transmittedBytes;
    private long _receiveDropped;
    private long _transmitRefused;
    private long _linkDownErrors;

    private TapDevice(FileDescriptor handle, string name, bool created, int interfaceIndex, TapLinkState linkState)
    {
        Handle = handle;
        Name = name;
        Created = created;
        InterfaceIndex = interfaceIndex;
        _linkState = linkState;
    }

    /// <summary>The interface name (chosen by the kernel when an empty name was given).</summary>
    public string Name { get; }

    /// <summary>True when this object created the device (it goes away on <see cref="Dispose"/>); false when it attached to an existing one (which stays).</summary>
    public bool Created { get; }

    /// <summary>The interface index in the network namespace the device was opened in.</summary>
    public int InterfaceIndex { get; }

    /// <summary>The descriptor, to poll for readable frames (POLLERR once the device is deleted).</summary>
    public FileDescriptor Handle { get; }

    /// <summary>The offloads set with <see cref="SetOffloads"/> (none after opening).</summary>
    public TapOffloads Offloads { get; private set; }

    /// <summary>The link as last seen: by the data path (EIO is down, EBADFD is deleted, a frame that passes is up) or by <see cref="RefreshLinkState"/>.</summary>
    public TapLinkState LinkState => _linkState;

    /// <summary>The data path's counters.</summary>
    public TapCounters Counters => new(
        _receivedFrames, _receivedBytes, _transmittedFrames, _transmittedBytes, _receiveDropped, _transmitRefused, _linkDownErrors);

    /// <summary>
    /// Opens the TAP device <paramref name="name"/>: creates it (not persistent, down, with a
    /// random locally administered MAC) or attaches to an existing one, as <paramref name="mode"/>
    /// allows. The descriptor is non-blocking and close-on-exec, the virtio-net header is 12 bytes,
    /// and no offloads are on.
    /// </summary>
    /// <param name="name">Interface name (1 to 15 bytes, no '/', ':' or white space); empty lets the kernel choose (tapN) when creating.</param>
    /// <param name="mode">Create, attach, or either.</param>
    /// <param name="cloneDevice">The clone device, <see cref="CloneDevicePath"/> unless the system puts it elsewhere.</param>
    /// <returns>The open device.</returns>
    /// <exception cref="TapException">It cannot be opened; <see cref="TapException.Error"/> says why.</exception>
    /// <exception cref="PlatformNotSupportedException">Not Linux.</exception>
    public static TapDevice Open(string name, TapOpenMode mode = TapOpenMode.CreateOrAttach, string cloneDevice = CloneDevicePath)
    {
        LinuxOnly.Check("a TAP device");
        ArgumentNullException.ThrowIfNull(name);
        ArgumentException.ThrowIfNullOrEmpty(cloneDevice);
        ValidateName(name, mode);

        var fd = OpenClone(cloneDevice, name);
        try
        {
            bool created;
            string actual;
            if (mode == TapOpenMode.Attach)
            {
                if (!Exists(name))
                {
                    throw new TapException(TapError.NotFound, name, LibC.ENODEV, $"there is no interface '{name}' in this network namespace to attach to (create one with: ip tuntap add {name} mode tap)");
                }

                var errno = SetInterface(fd, name, exclusive: false, out actual);
                if (errno != 0)
                {
                    throw AttachError(name, errno);
                }

                // An attachable TAP device is persistent; a device that is not was just created by
                // the call above (the name vanished meanwhile) and goes away when fd closes.
                if (!IsPersistent(fd))
                {
                    throw new TapException(TapError.NotFound, name, LibC.ENODEV, $"interface '{name}' disappeared before it could be attached");
                }

                created = false;
            }
            else
            {
                // IFF_TUN_EXCL makes creation atomic: EBUSY means the name was taken, and nothing
                // that exists is ever mistaken for something created here.
                var errno = SetInterface(fd, name, exclusive: true, out actual);
                if (errno == 0)
                {
                    created = true;
                }
                else if (errno == LibC.EBUSY && mode == TapOpenMode.Create)
                {
                    throw new TapException(TapError.AlreadyExists, name, errno, $"an interface named '{name}' already exists");
                }
                else if (errno == LibC.EBUSY)
                {
                    errno = SetInterface(fd, name, exclusive: false, out actual);
                    if (errno != 0)
                    {
                        throw AttachError(name, errno);
                    }

                    created = false;
                }
                else
                {
                    throw errno is LibC.EPERM or LibC.EACCES
                        ? new TapException(TapError.PermissionDenied, name, errno, $"creating TAP device '{name}' needs CAP_NET_ADMIN (run as root, or attach to a persistent TAP device owned by this user: ip tuntap add {name} mode tap user USER)")
                        : Refused(name, errno, "creating the TAP device");
                }
            }

            var headerSize = HeaderSize;
            if (LibC.Ioctl(fd, LibC.TUNSETVNETHDRSZ, &headerSize) != 0)
            {
                throw Refused(actual, Marshal.GetLastPInvokeError(), "setting the virtio-net header size (TUNSETVNETHDRSZ)");
            }

            // An attached device keeps the offloads of its previous user: start from none, so
            // frames arrive complete until the caller opts in.
            if (LibC.IoctlValue(fd, LibC.TUNSETOFFLOAD, 0) != 0)
            {
                throw Refused(actual, Marshal.GetLastPInvokeError(), "clearing offloads (TUNSETOFFLOAD)");
            }

            var request = Request(actual);
            InterfaceControl(actual, LibC.SIOCGIFINDEX, ref request, "reading the interface index");
            var index = request.Value;
            request = Request(actual);
            InterfaceControl(actual, LibC.SIOCGIFFLAGS, ref request, "reading the interface flags");
            var state = (request.Flags & LibC.IFF_UP) != 0 ? TapLinkState.Up : TapLinkState.Down;
            return new TapDevice(fd, actual, created, index, state);
        }
        catch
        {
            fd.Dispose();
            throw;
        }
    }

    /// <summary>Reads one frame (header and frame) into <paramref name="buffer"/>.</summary>
    /// <param name="buffer">At least <see cref="HeaderSize"/> bytes; a longer frame is dropped and counted.</param>
    /// <param name="length">Bytes read, header included, when <see cref="TapStatus.Done"/>.</param>
    /// <returns>What happened.</returns>
    public TapStatus Receive(Span<byte> buffer, out int length)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(buffer.Length, HeaderSize, nameof(buffer));
        fixed (byte* p = buffer)
        {
            return ReadOne(p, buffer.Length, out length);
        }
    }

    /// <summary>Reads one frame with its header placed apart from it (into a receive buffer of another ring, say).</summary>
    /// <param name="header">Exactly <see cref="HeaderSize"/> bytes for the virtio-net header.</param>
    /// <param name="frame">Room for the Ethernet frame; a longer frame is dropped and counted.</param>
    /// <param name="frameLength">Bytes of the frame (header excluded) when <see cref="TapStatus.Done"/>.</param>
    /// <returns>What happened.</returns>
    public TapStatus Receive(Span<byte> header, Span<byte> frame, out int frameLength)
    {
        ArgumentOutOfRangeException.ThrowIfNotEqual(header.Length, HeaderSize, nameof(header));
        fixed (byte* h = header)
        fixed (byte* f = frame)
        {
            var vectors = stackalloc LibC.IoVec[2];
            vectors[0] = new LibC.IoVec { Base = h, Length = HeaderSize };
            vectors[1] = new LibC.IoVec { Base = f, Length = (nuint)frame.Length };
            var status = ReadVectors(vectors, 2, HeaderSize + frame.Length, out var length);
            frameLength = status == TapStatus.Done ? length - HeaderSize : 0;
            return status;
        }
    }

    /// <summary>Writes one frame that starts with its virtio-net header.</summary>
    /// <param name="headerAndFrame">The 12-byte header, then the Ethernet frame.</param>
    /// <returns>What happened.</returns>
    public TapStatus Transmit(ReadOnlySpan<byte> headerAndFrame)
    {
        fixed (byte* p = headerAndFrame)
        {
            var vector = new LibC.IoVec { Base = p, Length = (nuint)headerAndFrame.Length };
            return WriteVectors(&vector, 1, headerAndFrame.Length);
        }
    }

    /// <summary>Writes one frame whose header lies apart from it (one writev, no copy).</summary>
    /// <param name="header">The 12-byte virtio-net header.</param>
    /// <param name="frame">The Ethernet frame.</param>
    /// <returns>What happened.</returns>
    public TapStatus Transmit(ReadOnlySpan<byte> header, ReadOnlySpan<byte> frame)
    {
        ArgumentOutOfRangeException.ThrowIfNotEqual(header.Length, HeaderSize, nameof(header));
        fixed (byte* h = header)
        fixed (byte* f = frame)
        {
            var vectors = stackalloc LibC.IoVec[2];
            vectors[0] = new LibC.IoVec { Base = h, Length = HeaderSize };
            vectors[1] = new LibC.IoVec { Base = f, Length = (nuint)frame.Length };
            return WriteVectors(vectors, 2, HeaderSize + frame.Length);
        }
    }

    /// <summary>
    /// Reads up to a burst's capacity of frames, stopping when none is waiting, the link is down
    /// or the device was deleted (see <see cref="LinkState"/>). Dropped frames are counted and skipped.
    /// </summary>
    /// <param name="burst">Receives the frames; its <see cref="TapBurst.Count"/> is set.</param>
    /// <returns>Frames read.</returns>
    public int ReceiveBurst(TapBurst burst)
    {
        ArgumentNullException.ThrowIfNull(burst);
        var count = 0;
        var slot = burst.SlotBytes;
        var lengths = burst.Lengths;
        fixed (byte* buffer = burst.Buffer)
        {
            // A dropped frame uses up an attempt, so the loop is bounded by the capacity.
            for (var attempt = 0; attempt < burst.Capacity; attempt++)
            {
                var status = ReadOne(buffer + ((nint)count * slot), slot, out var length);
                if (status == TapStatus.Done)
                {
                    lengths[count++] = length;
                }
                else if (status != TapStatus.Dropped)
                {
                    break;
                }
            }
        }

        burst.Count = count;
        return count;
    }

    /// <summary>
    /// Writes the frames of a burst in order, stopping at the first the kernel cannot take (the
    /// link is down, the device was deleted, or it would block). Frames the kernel refuses as
    /// malformed are counted in <see cref="TapCounters.TransmitRefused"/> and skipped.
    /// </summary>
    /// <param name="burst">The frames, <see cref="TapBurst.Count"/> of them.</param>
    /// <returns>Frames done with (written or refused); the rest are still the caller's to retry or drop.</returns>
    public int TransmitBurst(TapBurst burst)
    {
        ArgumentNullException.ThrowIfNull(burst);
        var slot = burst.SlotBytes;
        var lengths = burst.Lengths;
        var done = 0;
        fixed (byte* buffer = burst.Buffer)
        {
            for (; done < burst.Count; done++)
            {
                var vector = new LibC.IoVec { Base = buffer + ((nint)done * slot), Length = (nuint)lengths[done] };
                var status = WriteVectors(&vector, 1, lengths[done]);
                if (status is not (TapStatus.Done or TapStatus.Dropped))
                {
                    break;
                }
            }
        }

        return done;
    }

    /// <summary>Sets what this side accepts from the kernel (TUNSETOFFLOAD).</summary>
    /// <param name="offloads">The offloads; TSO and USO need <see cref="TapOffloads.Checksum"/>.</param>
    /// <exception cref="TapException">The device was deleted, or the kernel does not take that combination.</exception>
    public void SetOffloads(TapOffloads offloads)
    {
        if (offloads != TapOffloads.None && (offloads & TapOffloads.Checksum) == 0)
        {
            throw new ArgumentException("segmentation offloads need TapOffloads.Checksum as well", nameof(offloads));
        }

        if (LibC.IoctlValue(Handle, LibC.TUNSETOFFLOAD, (nuint)offloads) != 0)
        {
            throw DeviceError(Marshal.GetLastPInvokeError(), $"setting offloads {offloads} (TUNSETOFFLOAD)");
        }

        Offloads = offloads;
    }

    /// <summary>The device's MAC address (the kernel side's address), read through the descriptor.</summary>
    /// <returns>The address.</returns>
    public MacAddress GetMacAddress()
    {
        var request = Request(Name);
        if (LibC.Ioctl(Handle, LibC.SIOCGIFHWADDR, &request) != 0)
        {
            throw DeviceError(Marshal.GetLastPInvokeError(), "reading the MAC address");
        }

        return MacAddress.Read(new ReadOnlySpan<byte>(request.HardwareAddress, MacAddress.Size));
    }

    /// <summary>Sets the device's MAC address through the descriptor (works wherever the device is).</summary>
    /// <param name="address">A unicast address (locally administered ones are for addresses made up locally).</param>
    public void SetMacAddress(MacAddress address)
    {
        if (address.IsMulticast)
        {
            throw new ArgumentException($"{address} is a group address; an interface needs a unicast one", nameof(address));
        }

        var request = Request(Name);
        request.HardwareFamily = LibC.ARPHRD_ETHER;
        address.WriteTo(new Span<byte>(request.HardwareAddress, MacAddress.Size));
        if (LibC.Ioctl(Handle, LibC.SIOCSIFHWADDR, &request) != 0)
        {
            throw DeviceError(Marshal.GetLastPInvokeError(), $"setting the MAC address to {address}");
        }
    }

    /// <summary>The MTU (SIOCGIFMTU, in this network namespace).</summary>
    /// <returns>Bytes of IP packet the link carries.</returns>
    public int GetMtu()
    {
        var name = CurrentName();
        var request = Request(name);
        InterfaceControl(name, LibC.SIOCGIFMTU, ref request, "reading the MTU");
        return request.Value;
    }

    /// <summary>Sets the MTU (SIOCSIFMTU, in this network namespace; needs CAP_NET_ADMIN).</summary>
    /// <param name="mtu">68 to 65,521 for a TAP device.</param>
    public void SetMtu(int mtu)
    {
        var name = CurrentName();
        var request = Request(name);
        request.Value = mtu;
        InterfaceControl(name, LibC.SIOCSIFMTU, ref request, $"setting the MTU to {mtu}");
    }

    /// <summary>Brings the link up or down (IFF_UP through SIOCSIFFLAGS, in this network namespace; needs CAP_NET_ADMIN).</summary>
    /// <param name="up">True for up.</param>
    public void SetLinkUp(bool up)
    {
        var name = CurrentName();
        var request = Request(name);
        InterfaceControl(name, LibC.SIOCGIFFLAGS, ref request, "reading the interface flags");
        request.Flags = up ? (short)(request.Flags | LibC.IFF_UP) : (short)(request.Flags & ~LibC.IFF_UP);
        InterfaceControl(name, LibC.SIOCSIFFLAGS, ref request, up ? "bringing the link up" : "bringing the link down");
        _linkState = up ? TapLinkState.Up : TapLinkState.Down;
    }

    /// <summary>
    /// Asks the kernel for the link's state: <see cref="TapLinkState.Deleted"/> if the device is
    /// gone (TUNGETIFF answers EBADFD), else up or down by IFF_UP when the device is in this network
    /// namespace; in another namespace the state last seen by the data path stays.
    /// </summary>
    /// <returns>The state, also in <see cref="LinkState"/>.</returns>
    public TapLinkState RefreshLinkState()
    {
        if (_linkState == TapLinkState.Deleted)
        {
            return _linkState;
        }

        LibC.IfReq request = default;
        if (LibC.Ioctl(Handle, LibC.TUNGETIFF, &request) != 0)
        {
            if (Marshal.GetLastPInvokeError() == LibC.EBADFD)
            {
                _linkState = TapLinkState.Deleted;
            }

            return _linkState;
        }

        var name = NameOf(ref request);
        request = Request(name);
        if (TryInterfaceControl(LibC.SIOCGIFFLAGS, ref request) == 0)
        {
            _linkState = (request.Flags & LibC.IFF_UP) != 0 ? TapLinkState.Up : TapLinkState.Down;
        }

        return _linkState;
    }

    /// <summary>Closes the descriptor; a device created here goes away with it.</summary>
    public void Dispose() => Handle.Dispose();

    /// <inheritdoc/>
    public override string ToString() => $"tap {Name} ({(Created ? "created" : "attached")}, {_linkState})";

    /// <summary>Throws <see cref="TapException"/> (<see cref="TapError.InvalidName"/>) for a name the kernel would refuse or cut short.</summary>
    internal static void ValidateName(string name, TapOpenMode mode)
    {
        // The kernel's dev_valid_name; it would silently cut a long name to 15 bytes instead.
        var bytes = Encoding.UTF8.GetByteCount(name);
        string? problem = bytes > MaxNameLength ? $"is {bytes} bytes long; an interface name has at most {MaxNameLength}"
            : name.Length == 0 && mode == TapOpenMode.Attach ? "is empty; attaching needs the name of an existing device"
            : name is "." or ".." ? "is not allowed"
            : name.AsSpan().IndexOfAny("/: \t\n\v\f\r") >= 0 ? "contains '/', ':' or white space"
            : null;
        if (problem is not null)
        {
            throw new TapException(TapError.InvalidName, name, 0, $"interface name '{name}' {problem}");
        }
    }

    private static FileDescriptor OpenClone(string cloneDevice, string name)
    {
        var fd = LibC.Open(cloneDevice, LibC.O_RDWR | LibC.O_NONBLOCK | LibC.O_CLOEXEC, 0);
        if (fd >= 0)
        {
            return new FileDescriptor(fd);
        }

        var errno = Marshal.GetLastPInvokeError();
        throw errno switch
        {
            LibC.ENOENT => new TapException(TapError.CloneDeviceMissing, name, errno, $"{cloneDevice} does not exist: load the tun driver (modprobe tun) or create the node (mknod {cloneDevice} c 10 200)"),
            LibC.ENODEV or LibC.ENXIO => new TapException(TapError.CloneDeviceMissing, name, errno, $"{cloneDevice} has no driver behind it: load the tun driver (modprobe tun)"),
            LibC.EACCES or LibC.EPERM => new TapException(TapError.PermissionDenied, name, errno, $"no permission to open {cloneDevice} (a container may need it passed in, e.g. --device /dev/net/tun)"),
            _ => new TapException(TapError.CloneDeviceMissing, name, errno, $"cannot open {cloneDevice}: {Marshal.GetPInvokeErrorMessage(errno)} (errno {errno})"),
        };
    }

    private static int SetInterface(FileDescriptor fd, string name, bool exclusive, out string actual)
    {
        var request = Request(name);
        request.Flags = (short)(LibC.IFF_TAP | LibC.IFF_NO_PI | LibC.IFF_VNET_HDR | (exclusive ? LibC.IFF_TUN_EXCL : 0));
        if (LibC.Ioctl(fd, LibC.TUNSETIFF, &request) != 0)
        {
            actual = name;
            return Marshal.GetLastPInvokeError();
        }

        actual = NameOf(ref request);
        return 0;
    }

    private static TapException AttachError(string name, int errno) => errno switch
    {
        LibC.EINVAL => new TapException(TapError.WrongDeviceType, name, errno, $"an interface named '{name}' exists and is not a TAP device (a TUN device or another kind of link); choose another name"),
        LibC.EBUSY => new TapException(TapError.Busy, name, errno, $"TAP device '{name}' is open in another process (a single-queue TAP device has one user)"),
        LibC.EPERM or LibC.EACCES => new TapException(TapError.PermissionDenied, name, errno, $"attaching to TAP device '{name}' needs CAP_NET_ADMIN or ownership of the device (ip tuntap add {name} mode tap user USER)"),
        _ => Refused(name, errno, "attaching to the TAP device"),
    };

    private static TapException Refused(string name, int errno, string what) =>
        new(TapError.Refused, name, errno, $"{what} '{name}' failed: {Marshal.GetPInvokeErrorMessage(errno)} (errno {errno})");

    private static bool IsPersistent(FileDescriptor fd)
    {
        LibC.IfReq request = default;
        return LibC.Ioctl(fd, LibC.TUNGETIFF, &request) == 0 && (request.Flags & LibC.IFF_PERSIST) != 0;
    }

    private static bool Exists(string name)
    {
        var request = Request(name);
        return TryInterfaceControl(LibC.SIOCGIFINDEX, ref request) == 0;
    }

    private static LibC.IfReq Request(string name)
    {
        LibC.IfReq request = default;
        Encoding.UTF8.GetBytes(name, new Span<byte>(request.Name, MaxNameLength));
        return request;
    }

    private static string NameOf(ref LibC.IfReq request)
    {
        fixed (byte* name = request.Name)
        {
            var bytes = new ReadOnlySpan<byte>(name, LibC.IfNameSize);
            var end = bytes.IndexOf((byte)0);
            return Encoding.UTF8.GetString(end < 0 ? bytes : bytes[..end]);
        }
    }

    /// <summary>An interface ioctl on a datagram socket of this network namespace; 0 or the errno.</summary>
    private static int TryInterfaceControl(nuint command, ref LibC.IfReq request)
    {
        var socket = LibC.Socket(LibC.AF_INET, LibC.SOCK_DGRAM | LibC.SOCK_CLOEXEC, 0);
        if (socket < 0)
        {
            return Marshal.GetLastPInvokeError();
        }

        using var fd = new FileDescriptor(socket);
        fixed (LibC.IfReq* p = &request)
        {
            return LibC.Ioctl(fd, command, p) == 0 ? 0 : Marshal.GetLastPInvokeError();
        }
    }

    private static void InterfaceControl(string name, nuint command, ref LibC.IfReq request, string what)
    {
        var errno = TryInterfaceControl(command, ref request);
        if (errno == 0)
        {
            return;
        }

        throw errno switch
        {
            LibC.ENODEV => new TapException(TapError.NotInThisNamespace, name, errno, $"{what}: interface '{name}' is not in this network namespace (moved or deleted)"),
            LibC.EPERM or LibC.EACCES => new TapException(TapError.PermissionDenied, name, errno, $"{what} of '{name}' needs CAP_NET_ADMIN"),
            _ => Refused(name, errno, what),
        };
    }

    /// <summary>The current name (a device can be renamed), or a clear error if the device is gone.</summary>
    private string CurrentName()
    {
        LibC.IfReq request = default;
        if (LibC.Ioctl(Handle, LibC.TUNGETIFF, &request) != 0)
        {
            throw DeviceError(Marshal.GetLastPInvokeError(), "reading the interface name (TUNGETIFF)");
        }

        return NameOf(ref request);
    }

    private TapException DeviceError(int errno, string what)
    {
        if (errno == LibC.EBADFD)
        {
            _linkState = TapLinkState.Deleted;
            return new TapException(TapError.Deleted, Name, errno, $"{what}: TAP device '{Name}' was deleted");
        }

        return errno is LibC.EPERM or LibC.EACCES
            ? new TapException(TapError.PermissionDenied, Name, errno, $"{what} of '{Name}' needs CAP_NET_ADMIN")
            : Refused(Name, errno, what);
    }

    private TapStatus ReadOne(byte* buffer, int capacity, out int length)
    {
        var vector = new LibC.IoVec { Base = buffer, Length = (nuint)capacity };
        return ReadVectors(&vector, 1, capacity, out length);
    }

    /// <summary>Reads into <paramref name="count"/> vectors (room for one more after them) holding <paramref name="capacity"/> bytes.</summary>
    private TapStatus ReadVectors(LibC.IoVec* vectors, int count, int capacity, out int length)
    {
        // One byte more than the caller's buffers: the kernel copies what fits of a longer frame
        // and drops the rest without a word, so a byte landing here is the only sign of it.
        byte overflow = 0;
        LibC.IoVec* all = stackalloc LibC.IoVec[count + 1];
        for (var i = 0; i < count; i++)
        {
            all[i] = vectors[i];
        }

        all[count] = new LibC.IoVec { Base = &overflow, Length = 1 };
        while (true)
        {
            var n = LibC.Readv(Handle, all, count + 1);
            if (n >= 0)
            {
                length = 0;
                if (n > capacity || n < HeaderSize)
                {
                    _receiveDropped++;
                    return TapStatus.Dropped;
                }

                length = (int)n;
                _receivedFrames++;
                _receivedBytes += n;
                return Passed();
            }

            var errno = Marshal.GetLastPInvokeError();
            if (errno == LibC.EINTR)
            {
                continue;
            }

            length = 0;
            if (errno is not (LibC.EAGAIN or LibC.EBADFD or LibC.EIO))
            {
                _receiveDropped++;
            }

            return Failed(errno);
        }
    }

    /// <summary>Writes one frame gathered from <paramref name="count"/> vectors (its header first) in one writev; for ports writing frames where they lie.</summary>
    internal TapStatus TransmitVectors(LibC.IoVec* vectors, int count, int total) => WriteVectors(vectors, count, total);

    private TapStatus WriteVectors(LibC.IoVec* vectors, int count, int total)
    {
        while (true)
        {
            var n = LibC.Writev(Handle, vectors, count);
            if (n >= 0)
            {
                _transmittedFrames++;
                _transmittedBytes += total;
                return Passed();
            }

            var errno = Marshal.GetLastPInvokeError();
            if (errno == LibC.EINTR)
            {
                continue;
            }

            if (errno == LibC.EIO)
            {
                _linkDownErrors++;
            }
            else if (errno is not (LibC.EAGAIN or LibC.EBADFD))
            {
                // A malformed header or frame (EINVAL, EFAULT...): this frame never passes.
                _transmitRefused++;
            }

            return Failed(errno);
        }
    }

    /// <summary>A frame passed, so the link is up.</summary>
    private TapStatus Passed()
    {
        if (_linkState == TapLinkState.Down)
        {
            _linkState = TapLinkState.Up;
        }

        return TapStatus.Done;
    }

    /// <summary>Maps a data-path errno to a status and the link state it shows.</summary>
    private TapStatus Failed(int errno)
    {
        switch (errno)
        {
            case LibC.EAGAIN:
                return TapStatus.WouldBlock;
            case LibC.EBADFD:
                // The device was deleted (ip link del): the kernel detached this descriptor for good.
                _linkState = TapLinkState.Deleted;
                return TapStatus.Deleted;
            case LibC.EIO:
                // The kernel refuses frames to an interface that is down.
                if (_linkState != TapLinkState.Deleted)
                {
                    _linkState = TapLinkState.Down;
                }

                return TapStatus.LinkDown;
            default:
                return TapStatus.Dropped;
        }
    }
}
