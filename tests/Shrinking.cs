namespace Rings.Tests;

/// <summary>Shrinking for the model properties, whose cases are sequences of steps.</summary>
public static class Shrinking
{
    /// <summary>Shorter sequences to try: each half, then the sequence without one of its first 64 steps.</summary>
    public static IEnumerable<T[]> DropSteps<T>(T[] steps)
    {
        if (steps.Length <= 1)
        {
            yield break;
        }

        yield return steps[..(steps.Length / 2)];
        yield return steps[(steps.Length / 2)..];
        for (var i = 0; i < Math.Min(steps.Length, 64); i++)
        {
            yield return [.. steps[..i], .. steps[(i + 1)..]];
        }
    }
}
