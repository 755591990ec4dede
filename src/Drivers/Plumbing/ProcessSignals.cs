namespace Rings.Linux.Plumbing;

/// <summary>Signal dispositions a long-running command needs to see for itself.</summary>
public static unsafe class ProcessSignals
{
    private const int SigInt = 2;
    private const nint SigDefault = 0;
    private const nint SigIgnore = 1;

    /// <summary>
    /// A shell starts a background job with SIGINT ignored, and the runtime then leaves it
    /// ignored, so <c>kill -INT</c> would never reach a <see cref="System.Runtime.InteropServices.PosixSignalRegistration"/>.
    /// A command whose contract is "Ctrl-C stops it cleanly" calls this first: an ignored SIGINT
    /// goes back to its default, so the registration made next takes it. A handler already
    /// installed is left alone.
    /// </summary>
    /// <returns>True when SIGINT was ignored and no longer is.</returns>
    public static bool StopIgnoringInterrupt()
    {
        // struct sigaction is 152 bytes on x86-64 and arm64 glibc; sa_handler comes first.
        var old = stackalloc byte[256];
        if (LibC.Sigaction(SigInt, null, old) != 0 || *(nint*)old != SigIgnore)
        {
            return false;
        }

        return LibC.Signal(SigInt, SigDefault) == SigIgnore;
    }
}
