using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;

namespace Rings.Tests.Conformance;

/// <summary>
/// The FIFO-model properties for any ring format: derive with the format's
/// <see cref="IRingFormat"/> to run them.
/// </summary>
public abstract class RingModelTests<TFormat>
    where TFormat : IRingFormat, new()
{
    private static readonly TFormat Format = new();

    /// <summary>Random interleavings, completion in order or shuffled, against the FIFO model.</summary>
    [Property(MaxTest = 800)]
    public Property Random_interleavings_agree_with_the_fifo_model() =>
        Prop.ForAll(RingModel.Arbitrary(Format), s => RingModel.Run(Format, s));

    /// <summary>Small rings with the indices started right below the u16 wrap, many laps.</summary>
    [Property(MaxTest = 300)]
    public Property Small_rings_wrapping_the_index_agree_with_the_fifo_model()
    {
        var gen =
            from setup in RingModel.Setups(Format)
            where setup.Size <= 16
            from k in Gen.Choose(0, 8)
            from s in RingModel.ScenarioFor(setup with { Start = (ushort)(65535 - k) }, 150, 500)
            select s;
        return Prop.ForAll(Arb.From(gen, RingModel.Shrink), s => RingModel.Run(Format, s));
    }
}
