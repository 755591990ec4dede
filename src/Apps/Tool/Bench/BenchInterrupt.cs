using System.Diagnostics;
using System.Runtime.InteropServices;

namespace Rings.Tool.Bench;

/// <summary>
/// Stops a sweep within a second of SIGINT or SIGTERM: the run in progress is cut short (its
/// children told to stop, an in-process baseline's loop ended) and not counted; what was measured
/// before it is written out.
/// </summary>
internal static partial class BenchInterrupt
{
    private static readonly HashSet<Process> Children = [];
    private static volatile bool _requested;

    /// <summary>True once the sweep was interrupted.</summary>
    public static bool Requested => _requested;

    /// <summary>
    /// Interrupts the sweep: tells every child running now, and every one started later, to stop
    /// (SIGTERM: a loopback passes it to its guest and its host follows; timeout passes it to
    /// testpmd). Nobody waits for them: their runs are not counted.
    /// </summary>
    public static void Request()
    {
        _requested = true;
        lock (Children)
        {
            foreach (var p in Children)
            {
                Kill(p);
            }
        }
    }

    /// <summary>Follows a started child until <see cref="Untrack"/>; killed at once if the sweep was already interrupted.</summary>
    public static void Track(Process process)
    {
        lock (Children)
        {
            Children.Add(process);
            if (_requested)
            {
                Kill(process);
            }
        }
    }

    /// <summary>Stops following a child (it has exited or is being disposed).</summary>
    public static void Untrack(Process process)
    {
        lock (Children)
        {
            Children.Remove(process);
        }
    }

    private static void Kill(Process process)
    {
        try
        {
            _ = KillPid(process.Id, 15);
        }
        catch (InvalidOperationException)
        {
            // Already gone.
        }
    }

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static partial int KillPid(int pid, int signal);
}
