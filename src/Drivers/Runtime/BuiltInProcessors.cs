using Rings.Linux.Ports;

namespace Rings.Linux.Runtime;

/// <summary>Sends every frame back out of the port it came in on (what <c>rings host --mode reflect</c> does).</summary>
public sealed class ReflectProcessor : FrameProcessor
{
    /// <inheritdoc/>
    public override string Name => "reflect";

    /// <inheritdoc/>
    public override void Process(FrameBurst burst)
    {
        var ingress = burst.IngressIndex;
        for (var i = 0; i < burst.Count; i++)
        {
            burst.Forward(i, ingress);
        }
    }
}

/// <summary>Joins exactly two ports: every frame goes out of the other one (what <c>rings host --mode patch</c> does).</summary>
public sealed class PatchProcessor : FrameProcessor
{
    /// <inheritdoc/>
    public override string Name => "patch";

    /// <inheritdoc/>
    public override void Attach(IReadOnlyList<Port> ports, int workers)
    {
        ArgumentNullException.ThrowIfNull(ports);
        if (ports.Count != 2)
        {
            throw new ArgumentException($"patch joins exactly two ports, not {ports.Count}", nameof(ports));
        }
    }

    /// <inheritdoc/>
    public override void Process(FrameBurst burst)
    {
        // Ports 0 and 1: the other one is 1 - ingress.
        var other = 1 - burst.IngressIndex;
        for (var i = 0; i < burst.Count; i++)
        {
            burst.Forward(i, other);
        }
    }
}
