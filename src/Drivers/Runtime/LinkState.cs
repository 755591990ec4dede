namespace Rings.Linux.Runtime;

/// <summary>Whether a port can move frames now.</summary>
public enum LinkState
{
    /// <summary>No peer, or the peer's queues are stopped: frames sent to the port are dropped and counted <see cref="DropReason.LinkDown"/>.</summary>
    Down,

    /// <summary>The peer is attached and its queues run.</summary>
    Up,
}

/// <summary>Carries a port's new link state.</summary>
public sealed class LinkChangedEventArgs : EventArgs
{
    /// <summary>Creates the arguments.</summary>
    /// <param name="state">The new state.</param>
    /// <param name="reason">Why, for logs (for example "front-end disconnected").</param>
    public LinkChangedEventArgs(LinkState state, string reason)
    {
        State = state;
        Reason = reason;
    }

    /// <summary>The new state.</summary>
    public LinkState State { get; }

    /// <summary>Why, for logs.</summary>
    public string Reason { get; }
}
