using System.Runtime.CompilerServices;

namespace Rings.Linux.Ports;

/// <summary>
/// One worker's share of a port spread over workers (<see cref="Port.Lanes"/>, queue pairs): the
/// lanes it owns and its turn among them. A port keeps one per worker (a subclass adding its own
/// per-round fields), built in <see cref="Port.AssignLanes"/> and touched by that worker alone.
/// </summary>
internal class LaneState
{
    /// <summary>Creates the state of a worker that owns the lanes of <paramref name="lanes"/> (bit n: lane n).</summary>
    /// <param name="lanes">The lanes owned.</param>
    public LaneState(ulong lanes)
    {
        Lanes = lanes;
        var owned = new byte[System.Numerics.BitOperations.PopCount(lanes)];
        var n = 0;
        for (var lane = 0; lane < 64; lane++)
        {
            if ((lanes & (1UL << lane)) != 0)
            {
                owned[n++] = (byte)lane;
            }
        }

        Owned = owned;
    }

    /// <summary>Bit n: lane n is this worker's.</summary>
    public ulong Lanes { get; }

    /// <summary>The numbers of the lanes owned, in order.</summary>
    public byte[] Owned { get; }

    /// <summary>True for the owner of lane 0, which takes frames for the port from workers that have no running lane of it.</summary>
    public bool Home => (Lanes & 1) != 0;

    /// <summary>Where the next round's look for work starts (the port says over what: lane numbers or <see cref="Owned"/>).</summary>
    public int NextLane { get; set; }

    /// <summary>Whether lane <paramref name="lane"/> is this worker's.</summary>
    /// <param name="lane">The lane number.</param>
    /// <returns>True when owned.</returns>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool Owns(int lane) => (Lanes & (1UL << lane)) != 0;

    /// <summary>The mask of lanes 0 to <paramref name="lanes"/> - 1: what one worker owns of a port it serves whole.</summary>
    /// <param name="lanes">Lanes of the port (1 to 64).</param>
    /// <returns>The mask.</returns>
    public static ulong All(int lanes) => lanes >= 64 ? ulong.MaxValue : (1UL << lanes) - 1;

    /// <summary>The lanes worker <paramref name="worker"/> owns as <paramref name="laneWorkers"/> deals them (<see cref="Port.LaneWorkers"/>).</summary>
    /// <param name="laneWorkers">Each lane's worker.</param>
    /// <param name="worker">The worker.</param>
    /// <returns>The mask.</returns>
    public static ulong Of(IReadOnlyList<int> laneWorkers, int worker)
    {
        ulong lanes = 0;
        for (var lane = 0; lane < laneWorkers.Count; lane++)
        {
            lanes |= laneWorkers[lane] == worker ? 1UL << lane : 0;
        }

        return lanes;
    }

    /// <summary>Every worker's state as <paramref name="laneWorkers"/> deals the lanes (for <see cref="Port.AssignLanes"/>, before the workers run).</summary>
    /// <typeparam name="T">The port's state type.</typeparam>
    /// <param name="laneWorkers">Each lane's worker.</param>
    /// <param name="workers">Workers of the pipeline.</param>
    /// <param name="make">Makes one worker's state from its lanes.</param>
    /// <returns>The states, by worker.</returns>
    public static T[] ForWorkers<T>(IReadOnlyList<int> laneWorkers, int workers, Func<ulong, T> make)
        where T : LaneState
    {
        var states = new T[workers];
        for (var w = 0; w < workers; w++)
        {
            states[w] = make(Of(laneWorkers, w));
        }

        return states;
    }

    /// <summary>Worker <paramref name="worker"/>'s state; a worker outside the assignment (a port driven by hand, without a pipeline) is worker 0.</summary>
    /// <typeparam name="T">The port's state type.</typeparam>
    /// <param name="states">The states, by worker.</param>
    /// <param name="worker">The worker.</param>
    /// <returns>The state.</returns>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static T For<T>(T[] states, int worker)
        where T : LaneState => (uint)worker < (uint)states.Length ? states[worker] : states[0];
}
