namespace Rings.Fuzz.Targets;

/// <summary>
/// A property a target checks did not hold. Escaping a target, it is what AFL++ records as a crash
/// (like any other exception).
/// </summary>
public sealed class FuzzViolation : Exception
{
    /// <summary>Creates the violation.</summary>
    /// <param name="message">What did not hold.</param>
    public FuzzViolation(string message)
        : base(message)
    {
    }

    /// <summary>Throws a <see cref="FuzzViolation"/> when <paramref name="condition"/> is false.</summary>
    /// <param name="condition">The property.</param>
    /// <param name="message">What it says.</param>
    public static void Check(bool condition, string message)
    {
        if (!condition)
        {
            throw new FuzzViolation(message);
        }
    }
}
