namespace Rings.Linux.Plumbing;

/// <summary>The run-time check that stands in for a platform attribute on the assembly (see AssemblyInfo.cs).</summary>
internal static class LinuxOnly
{
    /// <summary>Throws on any system but Linux; free on Linux (the JIT folds the test to a constant).</summary>
    /// <param name="what">What needs Linux, for the message.</param>
    /// <exception cref="PlatformNotSupportedException">Not Linux.</exception>
    public static void Check(string what)
    {
        if (!OperatingSystem.IsLinux())
        {
            throw new PlatformNotSupportedException($"{what} needs Linux (memfd, eventfd, AF_UNIX with SCM_RIGHTS, TAP); this is {System.Runtime.InteropServices.RuntimeInformation.OSDescription}");
        }
    }
}
