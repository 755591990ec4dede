namespace Rings.Linux.Net;

/// <summary>How an idle side of a queue waits for work.</summary>
public enum WaitStrategy
{
    /// <summary>Busy-poll: never sleep, never ask for notifications. Lowest latency, one core each.</summary>
    Poll,

    /// <summary>Spin for a short while after the last work, then sleep until notified.</summary>
    Adaptive,

    /// <summary>Sleep until notified as soon as there is no work.</summary>
    Block,
}

/// <summary>Counts idle rounds and says when an adaptive or blocking side should go to sleep.</summary>
public struct IdlePolicy
{
    /// <summary>Idle rounds an adaptive side spins before it sleeps (about 20 to 50 microseconds).</summary>
    public const int AdaptiveSpins = 2000;

    private readonly WaitStrategy _strategy;
    private int _idle;

    /// <summary>Creates the policy.</summary>
    /// <param name="strategy">The strategy.</param>
    public IdlePolicy(WaitStrategy strategy)
    {
        _strategy = strategy;
        _idle = 0;
    }

    /// <summary>Call after a round that did work.</summary>
    public void Worked() => _idle = 0;

    /// <summary>Call after a round that found nothing; true when the caller should now sleep.</summary>
    /// <returns>True when it is time to enable notifications and block.</returns>
    public bool IdleShouldSleep()
    {
        switch (_strategy)
        {
            case WaitStrategy.Block:
                return true;
            case WaitStrategy.Adaptive:
                if (++_idle >= AdaptiveSpins)
                {
                    _idle = 0;
                    return true;
                }

                // Spin, but yield now and then, as busy-poll does: a spinner that never yields
                // can hold the core its peer needs to produce the very work it waits for.
                if ((_idle & 63) == 0)
                {
                    Thread.Yield();
                }
                else
                {
                    Thread.SpinWait(10);
                }

                return false;
            default:
                // Busy-poll, but give the core away now and then: on a machine with fewer cores
                // than spinning threads, a poller that never yields starves its own peer. Between
                // polls one short pause (tens of nanoseconds), not ten: a busy-poll side found
                // idle is usually waiting for a burst already on its way, and a long pause is
                // added to every hand-over; the yield comes after about as long as before.
                if ((++_idle & 511) == 0)
                {
                    Thread.Yield();
                }
                else
                {
                    Thread.SpinWait(1);
                }

                return false;
        }
    }
}
