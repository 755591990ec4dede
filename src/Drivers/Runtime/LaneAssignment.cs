namespace Rings.Linux.Runtime;

/// <summary>
/// How a <see cref="Pipeline"/> deals the lanes of its ports (<see cref="Ports.Port.Lanes"/>:
/// queue pairs) to workers: every lane of every port, in port order then lane order, goes to the
/// next worker in turn. So each lane has exactly one worker, the workers' lane counts differ by at
/// most one, and a port with at least as many lanes as there are workers has a lane on every
/// worker (frames between two such ports never cross workers). The worker that owns a port's
/// lane 0 is the port's home: it takes frames for the port from workers that cannot transmit to
/// it themselves.
/// </summary>
public static class LaneAssignment
{
    /// <summary>Workers a pipeline runs: as many as asked, at most one per lane.</summary>
    /// <param name="lanes">Lanes of each port (each at least 1).</param>
    /// <param name="workers">Workers asked for (at least 1).</param>
    /// <returns>The worker count.</returns>
    public static int WorkerCount(IReadOnlyList<int> lanes, int workers)
    {
        ArgumentNullException.ThrowIfNull(lanes);
        ArgumentOutOfRangeException.ThrowIfLessThan(workers, 1);
        var total = 0;
        foreach (var l in lanes)
        {
            ArgumentOutOfRangeException.ThrowIfLessThan(l, 1);
            total += l;
        }

        return Math.Max(1, Math.Min(workers, total));
    }

    /// <summary>Deals the lanes: result[port][lane] is the worker that owns that lane.</summary>
    /// <param name="lanes">Lanes of each port (each at least 1).</param>
    /// <param name="workers">Workers asked for (at least 1); <see cref="WorkerCount"/> of them are used.</param>
    /// <returns>The owner of each lane of each port.</returns>
    public static int[][] Deal(IReadOnlyList<int> lanes, int workers)
    {
        var count = WorkerCount(lanes, workers);
        var result = new int[lanes.Count][];
        var next = 0;
        for (var p = 0; p < lanes.Count; p++)
        {
            result[p] = new int[lanes[p]];
            for (var l = 0; l < lanes[p]; l++)
            {
                result[p][l] = next;
                next = (next + 1) % count;
            }
        }

        return result;
    }

    /// <summary>Which worker serves a port, for a startup line: <c>worker 1</c>, or each pair's worker when they differ (<c>pair 0 on worker 0, pair 1 on worker 1</c>).</summary>
    /// <param name="laneWorkers">The port's lanes' workers (<see cref="Ports.Port.LaneWorkers"/>).</param>
    /// <returns>The description.</returns>
    public static string Describe(IReadOnlyList<int> laneWorkers)
    {
        ArgumentNullException.ThrowIfNull(laneWorkers);
        return laneWorkers.Distinct().Count() == 1
            ? $"worker {laneWorkers[0]}"
            : string.Join(", ", laneWorkers.Select((w, lane) => $"pair {lane} on worker {w}"));
    }
}
