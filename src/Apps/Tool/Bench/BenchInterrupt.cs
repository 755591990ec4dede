using System.Diagnostics;

namespace Rings.Tool.Bench;

/// <summary>
/// Stops a sweep within a second of SIGINT or SIGTERM: the run in progress is cut short (its
/// children killed, an in-process baseline's loop ended) and not counted; what was measured
/// before it is written out.
/// </summary>
internal static class BenchInterrupt
{
    private static readonly HashSet<Process> Children = [];
    private static volatile bool _requested;

    /// <summary>True once the sweep was interrupted.</summary>
    public static bool Requested => _requested;

    /// <summary>Interrupts the sweep: kills every child running now and every one started later.</summary>
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
            process.Kill(entireProcessTree: true);
        }
        catch (InvalidOperationException)
        {
            // Already gone.
        }
    }
}
