using System.Runtime.InteropServices;
using Rings.Memory;

namespace Rings.Tests.Conformance;

/// <summary>
/// Guest memory with guard bands: one <see cref="NativeRegion"/> of which only the middle is
/// declared in the memory table. The guards are filled with a canary (and, on Linux, can be
/// made inaccessible with mprotect so a stray read faults). A bump allocator hands out guest
/// addresses inside the declared part.
/// </summary>
public sealed unsafe class GuardedMemory : IDisposable
{
    /// <summary>Bytes of each guard band (one page, so it can be protected on its own).</summary>
    public const int GuardBytes = 4096;

    /// <summary>The byte the guards are filled with.</summary>
    public const byte Canary = 0xC5;

    private readonly NativeRegion _native;
    private readonly bool _protected;
    private ulong _next;

    /// <param name="declaredBytes">Bytes of guest memory to declare (rounded up to a page).</param>
    /// <param name="guestBase">Guest-physical address of the declared part (page aligned).</param>
    /// <param name="protectGuards">Also make the guard pages inaccessible (Linux only).</param>
    public GuardedMemory(ulong declaredBytes, ulong guestBase = 0x1_2340_0000, bool protectGuards = false)
    {
        Length = (declaredBytes + GuardBytes - 1) & ~(ulong)(GuardBytes - 1);
        if (Length == 0)
        {
            Length = GuardBytes;
        }

        _native = new NativeRegion(Length + (2 * GuardBytes));
        _native.Slice(0, GuardBytes).Fill(Canary);
        _native.Slice(GuardBytes + Length, GuardBytes).Fill(Canary);
        Base = guestBase;
        HostStart = _native.HostAddress + GuardBytes;
        Memory = new GuestMemory(new GuestMemoryRegion(Base, Length, HostStart));
        if (protectGuards && OperatingSystem.IsLinux())
        {
            _protected = SetGuardProtection(ProtNone);
        }
    }

    /// <summary>The memory table: the declared part only.</summary>
    public GuestMemory Memory { get; }

    /// <summary>Guest-physical address of the declared part.</summary>
    public ulong Base { get; }

    /// <summary>Bytes declared.</summary>
    public ulong Length { get; }

    /// <summary>Host address of the first declared byte.</summary>
    public nint HostStart { get; }

    /// <summary>Bytes handed out by <see cref="Allocate"/> so far.</summary>
    public ulong Allocated => _next;

    /// <summary>Hands out <paramref name="bytes"/> of declared memory; returns its guest address.</summary>
    public ulong Allocate(ulong bytes, ulong alignment = 64)
    {
        var start = (_next + alignment - 1) & ~(alignment - 1);
        if (start + bytes > Length)
        {
            throw new InvalidOperationException($"guarded memory of {Length} bytes cannot hold {bytes} more at {start}");
        }

        _next = start + bytes;
        return Base + start;
    }

    /// <summary>The declared bytes at guest address <paramref name="address"/> (throws when outside).</summary>
    public Span<byte> Bytes(ulong address, int length)
    {
        if (address < Base || address - Base > Length || (ulong)length > Length - (address - Base))
        {
            throw new ArgumentOutOfRangeException(nameof(address), $"0x{address:x}+{length} is outside the declared memory");
        }

        return new Span<byte>((byte*)HostStart + (address - Base), length);
    }

    /// <summary>Where guest address <paramref name="address"/> lives in this process.</summary>
    public nint HostOf(ulong address) => HostStart + (nint)(address - Base);

    /// <summary>Whether the host range [host, host + length) lies inside the declared part.</summary>
    public bool ContainsHost(nint host, ulong length)
    {
        var start = (ulong)HostStart;
        var h = (ulong)host;
        return h >= start && h - start <= Length && length <= Length - (h - start);
    }

    /// <summary>Whether a span lies inside the declared part.</summary>
    public bool Contains(ReadOnlySpan<byte> span)
    {
        fixed (byte* p = span)
        {
            // An empty span may carry a null pointer; it touches nothing.
            return span.Length == 0 || ContainsHost((nint)p, (ulong)span.Length);
        }
    }

    /// <summary>Number of guard bytes that no longer hold the canary.</summary>
    public int DamagedGuardBytes()
    {
        var unprotect = _protected && SetGuardProtection(ProtRead);
        try
        {
            var damaged = 0;
            foreach (var b in _native.Slice(0, GuardBytes))
            {
                damaged += b == Canary ? 0 : 1;
            }

            foreach (var b in _native.Slice(GuardBytes + Length, GuardBytes))
            {
                damaged += b == Canary ? 0 : 1;
            }

            return damaged;
        }
        finally
        {
            if (unprotect)
            {
                SetGuardProtection(ProtNone);
            }
        }
    }

    /// <summary>Fails when anything wrote into the guards.</summary>
    public void AssertGuardsIntact() =>
        Xunit.Assert.True(DamagedGuardBytes() == 0, "something wrote outside the declared guest memory");

    /// <inheritdoc/>
    public void Dispose()
    {
        if (_protected)
        {
            SetGuardProtection(ProtRead | ProtWrite);
        }

        _native.Dispose();
    }

    private const int ProtNone = 0;
    private const int ProtRead = 1;
    private const int ProtWrite = 2;

    private bool SetGuardProtection(int prot)
    {
        var all = (nuint)(Length + (2 * GuardBytes));
        var first = mprotect(_native.HostAddress, GuardBytes, prot);
        var last = mprotect(_native.HostAddress + (nint)(all - GuardBytes), GuardBytes, prot);
        return first == 0 && last == 0;
    }

    [DllImport("libc", SetLastError = true)]
    private static extern int mprotect(nint address, nuint length, int prot);
}
