using Rings.Linux.Net;
using Rings.Linux.Plumbing;

namespace Rings.Linux.Device;

/// <summary>
/// One direction of the vhost-net data path as a loop: forwards a source driver's transmit queue
/// into a destination driver's receive queue (the same driver when reflecting), calls each
/// driver only when it asked, and waits by the chosen strategy when idle. Runs until stopped or
/// until a queue breaks; never throws for anything a driver writes. <see cref="Stop"/> wakes it
/// through a doorbell of its own, never by writing to a descriptor a driver controls.
/// </summary>
/// <typeparam name="TTx">Device side of the source's transmit queue.</typeparam>
/// <typeparam name="TRx">Device side of the destination's receive queue.</typeparam>
public sealed class NetWorker<TTx, TRx> : IDisposable
    where TTx : IDeviceRing
    where TRx : IDeviceRing
{
    private readonly EventFd _wake = EventFd.Create();
    private readonly TTx _tx;
    private readonly TRx _rx;
    private readonly IDoorbell _txKick;
    private readonly IDoorbell _txCall;
    private readonly IDoorbell _rxKick;
    private readonly IDoorbell _rxCall;
    private volatile bool _stop;

    /// <summary>Creates the loop.</summary>
    /// <param name="tx">Source transmit queue (device side).</param>
    /// <param name="txKick">Kicks from the source for its transmit queue.</param>
    /// <param name="txCall">Calls to the source for its transmit queue.</param>
    /// <param name="rx">Destination receive queue (device side).</param>
    /// <param name="rxKick">Kicks from the destination for its receive queue.</param>
    /// <param name="rxCall">Calls to the destination for its receive queue.</param>
    /// <param name="burst">Most frames per round.</param>
    /// <param name="mergeable">True when MRG_RXBUF was negotiated with the destination.</param>
    /// <param name="wait">How to wait when idle.</param>
    public NetWorker(TTx tx, IDoorbell txKick, IDoorbell txCall, TRx rx, IDoorbell rxKick, IDoorbell rxCall, int burst, bool mergeable, WaitStrategy wait)
    {
        ArgumentNullException.ThrowIfNull(tx);
        ArgumentNullException.ThrowIfNull(rx);
        ArgumentOutOfRangeException.ThrowIfLessThan(burst, 1);
        _tx = tx;
        _rx = rx;
        _txKick = txKick;
        _txCall = txCall;
        _rxKick = rxKick;
        _rxCall = rxCall;
        Burst = burst;
        Mergeable = mergeable;
        Wait = wait;
    }

    /// <summary>Most frames per round.</summary>
    public int Burst { get; }

    /// <summary>True when the destination merges receive buffers.</summary>
    public bool Mergeable { get; }

    /// <summary>The wait strategy.</summary>
    public WaitStrategy Wait { get; }

    /// <summary>Frames forwarded.</summary>
    public long Frames;

    /// <summary>Frames dropped (too large for the destination's buffers).</summary>
    public long Dropped;

    /// <summary>Times the loop went to sleep.</summary>
    public long Sleeps;

    /// <summary>Asks the loop to stop; a sleeping loop wakes at once (one waiting on an in-process doorbell, within its wait timeout).</summary>
    public void Stop()
    {
        _stop = true;
        _wake.Signal();

        // In-process doorbells belong to no peer: ringing them wakes a loop that waits on one.
        foreach (var kick in (ReadOnlySpan<IDoorbell>)[_txKick, _rxKick])
        {
            if (kick is not EventFd)
            {
                kick.Ring();
            }
        }
    }

    /// <summary>Closes the loop's own wake-up doorbell; call once the thread running it has returned.</summary>
    public void Dispose() => _wake.Dispose();

    /// <summary>Runs the loop on the calling thread until <see cref="Stop"/> or a broken queue.</summary>
    /// <param name="sleepTimeoutMilliseconds">Longest single sleep, so a stop or a dead peer is noticed.</param>
    public void Run(int sleepTimeoutMilliseconds = 100)
    {
        var idle = new IdlePolicy(Wait);
        if (Wait == WaitStrategy.Poll)
        {
            _tx.DisableAvailNotifications();
            _rx.DisableAvailNotifications();
        }

        while (!_stop && !_tx.IsBroken && !_rx.IsBroken)
        {
            var r = NetForwarder.Forward(_tx, _rx, Burst, Mergeable);
            if (_rx.CallNeeded())
            {
                _rxCall.Ring();
            }

            if (_tx.CallNeeded())
            {
                _txCall.Ring();
            }

            if (r.Frames + r.Dropped > 0)
            {
                Frames += r.Frames;
                Dropped += r.Dropped;
                idle.Worked();
                if (!r.ReceiveFull)
                {
                    continue;
                }
            }

            if (!idle.IdleShouldSleep())
            {
                continue;
            }

            // Going to sleep: ask for the kick we need, fence, re-check (docs/ARCHITECTURE.md: every lost
            // wake-up lives here). Waiting for receive buffers when the destination is full,
            // else for transmitted frames.
            if (r.ReceiveFull)
            {
                if (!_rx.EnableAvailNotifications())
                {
                    Sleeps++;
                    Sleep(_rxKick, sleepTimeoutMilliseconds);
                }

                _rx.DisableAvailNotifications();
            }
            else
            {
                if (!_tx.EnableAvailNotifications())
                {
                    Sleeps++;
                    Sleep(_txKick, sleepTimeoutMilliseconds);
                }

                _tx.DisableAvailNotifications();
            }
        }
    }

    // Waits for the kick or for Stop, whichever comes first.
    private void Sleep(IDoorbell kick, int timeoutMilliseconds)
    {
        if (kick is not EventFd doorbell)
        {
            kick.Wait(timeoutMilliseconds);
            return;
        }

        Span<bool> ready = stackalloc bool[2];
        if (Poll.WaitReadable([doorbell.Handle, _wake.Handle], timeoutMilliseconds, ready) > 0 && ready[0])
        {
            doorbell.TryConsume(out _);
        }
    }
}
