namespace Rings.Fuzz.Targets;

/// <summary>Where targets narrate what they do when a finding is being triaged (off while fuzzing).</summary>
public static class FuzzTrace
{
    /// <summary>The writer, or null for silence.</summary>
    public static TextWriter? Writer { get; set; }
}
