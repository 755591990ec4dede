namespace Rings.Tests;

/// <summary>Measures what code allocates once it runs steadily.</summary>
internal static class Allocations
{
    /// <summary>
    /// The bytes this thread allocates running <paramref name="body"/>, in the quietest of up to
    /// <paramref name="rounds"/> rounds (it stops at the first that allocates nothing). The runtime
    /// may allocate on the thread itself now and then while the code is still settling (a method
    /// moving up a tier); an allocation the code makes each time shows in every round.
    /// </summary>
    /// <param name="body">The code, already warmed up.</param>
    /// <param name="rounds">Most rounds to run.</param>
    /// <returns>The fewest bytes one round allocated.</returns>
    public static long Steady(Action body, int rounds = 5)
    {
        var least = long.MaxValue;
        for (var r = 0; r < rounds && least > 0; r++)
        {
            var before = GC.GetAllocatedBytesForCurrentThread();
            body();
            least = Math.Min(least, GC.GetAllocatedBytesForCurrentThread() - before);
        }

        return least;
    }
}
