using System.Runtime.InteropServices;

namespace Rings.Linux.Plumbing;

/// <summary>
/// An owned Linux file descriptor. Closed exactly once, on <see cref="SafeHandle.Dispose()"/> or
/// finalization; while any system call is using it (the interop marshaller adds a reference)
/// the number cannot be closed and reused under that call.
/// </summary>
public sealed class FileDescriptor : SafeHandle
{
    /// <summary>Creates an invalid descriptor (used by the interop marshaller).</summary>
    public FileDescriptor()
        : base(-1, ownsHandle: true)
    {
    }

    /// <summary>Takes ownership of <paramref name="fd"/>.</summary>
    /// <param name="fd">An open descriptor; it is closed when this object is disposed.</param>
    public FileDescriptor(int fd)
        : base(-1, ownsHandle: true)
    {
        SetHandle(fd);
    }

    /// <inheritdoc/>
    public override bool IsInvalid => handle < 0;

    /// <summary>The descriptor number, for logs and tests (-1 once closed or when invalid).</summary>
    public int Value => IsClosed ? -1 : (int)handle;

    /// <summary>A new descriptor for the same open file (close-on-exec), owned by the caller.</summary>
    /// <returns>The duplicate.</returns>
    public FileDescriptor Duplicate()
    {
        var fd = LibC.Fcntl(this, LibC.F_DUPFD_CLOEXEC, 0);
        if (fd < 0)
        {
            throw LibC.Error("fcntl(F_DUPFD_CLOEXEC)");
        }

        return new FileDescriptor(fd);
    }

    /// <summary>
    /// What the kernel calls the open file: the target of its /proc/self/fd link, such as
    /// <c>anon_inode:[eventfd]</c>, <c>pipe:[1234]</c>, <c>socket:[1234]</c> or a path
    /// (<c>/memfd:name (deleted)</c>). Null when it cannot be read (no /proc, or closed).
    /// </summary>
    /// <returns>The name, or null.</returns>
    public unsafe string? KernelName()
    {
        var added = false;
        DangerousAddRef(ref added);
        try
        {
            // 256 bytes hold every anonymous-inode, pipe and socket name; a longer path is cut,
            // which is fine for telling kinds apart and for logs.
            var buffer = stackalloc byte[256];
            var n = LibC.Readlink($"/proc/self/fd/{(int)handle}", buffer, 256);
            return n < 0 ? null : System.Text.Encoding.UTF8.GetString(buffer, (int)n);
        }
        finally
        {
            if (added)
            {
                DangerousRelease();
            }
        }
    }

    /// <inheritdoc/>
    protected override bool ReleaseHandle() => LibC.Close((int)handle) == 0;

    /// <inheritdoc/>
    public override string ToString() => $"fd {Value}";
}
