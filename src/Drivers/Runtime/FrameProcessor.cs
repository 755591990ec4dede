using Rings.Linux.Ports;

namespace Rings.Linux.Runtime;

/// <summary>
/// User code on the data path: sees each burst a port yields and decides, per frame, where it
/// goes (<see cref="FrameBurst.Forward"/>, <see cref="FrameBurst.Send"/>,
/// <see cref="FrameBurst.Flood"/>), whether to change it (<see cref="FrameBurst.Writable"/>) or
/// to drop it (<see cref="FrameBurst.Drop"/>). Frames left undecided are dropped and counted.
/// <para>
/// <see cref="Process"/> runs on worker threads, once per burst: with several workers it runs
/// on several threads at once, each with its own bursts (<see cref="FrameBurst.Worker"/> says
/// which). It must not allocate, lock or throw per frame. The other members run on control
/// threads.
/// </para>
/// </summary>
public abstract class FrameProcessor
{
    /// <summary>A short name for tables and logs.</summary>
    public virtual string Name => GetType().Name;

    /// <summary>
    /// Called once before the workers start, with every port of the pipeline (indexed by
    /// <see cref="Port.Index"/>) and the number of workers. Throw <see cref="ArgumentException"/>
    /// when the ports do not suit the processor (a patch needs exactly two).
    /// </summary>
    /// <param name="ports">The ports.</param>
    /// <param name="workers">How many workers will call <see cref="Process"/>.</param>
    public virtual void Attach(IReadOnlyList<Port> ports, int workers)
    {
    }

    /// <summary>Decides every frame of <paramref name="burst"/> (indices 0 to <see cref="FrameBurst.Count"/> - 1).</summary>
    /// <param name="burst">Frames from one ingress port.</param>
    public abstract void Process(FrameBurst burst);

    /// <summary>
    /// Called by each worker once per polling round, even when idle, so a processor can do
    /// background work on the data-path thread (for example apply learned addresses as their
    /// single writer). Cheap by default.
    /// </summary>
    /// <param name="worker">The worker index.</param>
    /// <param name="now">Milliseconds on the burst clock (<see cref="FrameBurst.Now"/>).</param>
    public virtual void Poll(int worker, long now)
    {
    }

    /// <summary>A port's link went up or down (on a control thread): forget what was learned about it.</summary>
    /// <param name="port">The port.</param>
    /// <param name="state">Its new state.</param>
    public virtual void OnLinkChanged(Port port, LinkState state)
    {
    }
}
