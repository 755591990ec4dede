namespace Rings;

/// <summary>
/// A notification channel between the two sides of a queue: a kick (driver to device) or a call
/// (device to driver). Signals are level-like: several signals before a wait wake it once.
/// </summary>
public interface IDoorbell
{
    /// <summary>Signals the other side.</summary>
    void Ring();

    /// <summary>Waits for a signal and consumes it.</summary>
    /// <param name="timeoutMilliseconds">Longest wait; 0 polls, -1 waits forever.</param>
    /// <returns>True when a signal arrived, false on timeout.</returns>
    bool Wait(int timeoutMilliseconds);
}

/// <summary>An in-process doorbell for two threads of one process.</summary>
public sealed class SemaphoreDoorbell : IDoorbell, IDisposable
{
    private readonly SemaphoreSlim _semaphore = new(0, 1);
    private int _pending;

    /// <summary>Signals sent.</summary>
    public long Rings;

    /// <inheritdoc/>
    public void Ring()
    {
        Interlocked.Increment(ref Rings);

        // Collapse signals like an eventfd counter: only the first since the last wait releases.
        if (Interlocked.Exchange(ref _pending, 1) == 0)
        {
            _semaphore.Release();
        }
    }

    /// <inheritdoc/>
    public bool Wait(int timeoutMilliseconds)
    {
        if (!_semaphore.Wait(timeoutMilliseconds))
        {
            return false;
        }

        // Full fence: the caller re-checks its ring after this, and must see the work of any
        // signal that was folded into this wake-up.
        Interlocked.Exchange(ref _pending, 0);
        return true;
    }

    /// <inheritdoc/>
    public void Dispose() => _semaphore.Dispose();
}
