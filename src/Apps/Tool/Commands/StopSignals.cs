using System.Runtime.InteropServices;
using Rings.Linux.Plumbing;

namespace Rings.Tool.Commands;

/// <summary>
/// How every long-running command takes SIGINT and SIGTERM: both call one stop action, and the
/// command then prints its closing figures and returns. Started from a terminal, a script or a
/// supervisor alike: a background job inherits SIGINT as ignored, so that is undone first (and
/// <c>Program.Main</c> undoes it before the console is first used, after which it would be too late).
/// </summary>
internal sealed class StopSignals : IDisposable
{
    private readonly PosixSignalRegistration _interrupt;
    private readonly PosixSignalRegistration _terminate;
    private int _received;

    private StopSignals(Action<PosixSignal> stop)
    {
        _interrupt = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => Handle(c, stop));
        _terminate = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => Handle(c, stop));
    }

    /// <summary>The first signal received, or null.</summary>
    public PosixSignal? Received => Volatile.Read(ref _received) is var s and not 0 ? (PosixSignal)s : null;

    /// <summary>Installs both handlers; <paramref name="stop"/> runs on a signal thread for each signal.</summary>
    public static StopSignals Install(Action<PosixSignal> stop)
    {
        ProcessSignals.StopIgnoringInterrupt();
        return new StopSignals(stop);
    }

    /// <summary>The signal's name as the closing line prints it.</summary>
    public static string Name(PosixSignal signal) => signal == PosixSignal.SIGINT ? "SIGINT" : "SIGTERM";

    public void Dispose()
    {
        _interrupt.Dispose();
        _terminate.Dispose();
    }

    private void Handle(PosixSignalContext context, Action<PosixSignal> stop)
    {
        context.Cancel = true;
        Interlocked.CompareExchange(ref _received, (int)context.Signal, 0);
        stop(context.Signal);
    }
}
