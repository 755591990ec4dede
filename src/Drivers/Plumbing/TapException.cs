namespace Rings.Linux.Plumbing;

/// <summary>Why a TAP device could not be opened or configured.</summary>
public enum TapError
{
    /// <summary>The clone device (/dev/net/tun) does not exist or its driver is not loaded.</summary>
    CloneDeviceMissing,

    /// <summary>Not allowed: creating a device needs CAP_NET_ADMIN, attaching needs it or ownership of the device.</summary>
    PermissionDenied,

    /// <summary>The name is not a valid interface name (1 to 15 bytes, no '/', ':' or white space).</summary>
    InvalidName,

    /// <summary>An interface of that name exists and is not a TAP device (a TUN device, a veth, ...).</summary>
    WrongDeviceType,

    /// <summary>The TAP device is open in another process.</summary>
    Busy,

    /// <summary>Creation was asked for and an interface of that name exists.</summary>
    AlreadyExists,

    /// <summary>Attaching was asked for and no interface of that name exists in this network namespace.</summary>
    NotFound,

    /// <summary>The device is not in this process's network namespace (it was moved), so it cannot be configured from here.</summary>
    NotInThisNamespace,

    /// <summary>The device was deleted while open; the descriptor is dead.</summary>
    Deleted,

    /// <summary>The kernel refused a setting (an MTU out of range, offloads it does not know).</summary>
    Refused,
}

/// <summary>A TAP device could not be opened or configured; <see cref="Error"/> says why in terms a caller can act on.</summary>
public sealed class TapException : IOException
{
    /// <summary>Creates the exception.</summary>
    /// <param name="error">Why.</param>
    /// <param name="deviceName">The interface name involved.</param>
    /// <param name="errno">The errno behind it (0 when none).</param>
    /// <param name="message">What happened and what to do about it.</param>
    public TapException(TapError error, string deviceName, int errno, string message)
        : base(message, errno)
    {
        Error = error;
        DeviceName = deviceName;
        Errno = errno;
    }

    /// <summary>Why.</summary>
    public TapError Error { get; }

    /// <summary>The interface name involved.</summary>
    public string DeviceName { get; }

    /// <summary>The errno behind the error (0 when none).</summary>
    public int Errno { get; }
}
