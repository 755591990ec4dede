namespace Rings.Fuzz.Targets;

/// <summary>Runs a fuzz target over one input; anything thrown is a finding.</summary>
/// <param name="input">The fuzzer's bytes.</param>
public delegate void FuzzTargetAction(ReadOnlySpan<byte> input);

/// <summary>A fuzz target as the runner and the replay tests know it.</summary>
/// <param name="Name">The name on the command line and of its corpus folder (fuzz/corpus/NAME).</param>
/// <param name="Description">One line on what it covers.</param>
/// <param name="Run">The target, or null while the code it covers does not exist yet.</param>
public sealed record FuzzTarget(string Name, string Description, FuzzTargetAction? Run);

/// <summary>Every fuzz target, by name.</summary>
public static class FuzzTargets
{
    /// <summary>The targets, runnable ones and those still waiting for their code.</summary>
    public static IReadOnlyList<FuzzTarget> All { get; } =
    [
        new("split-chain", "split device-side chain walking, direct and indirect, over guarded memory", SplitChainTarget.Run),
        new("packed-chain", "packed device-side chain walking, direct and indirect, over guarded memory", PackedChainTarget.Run),
        new("split-ops", "random driver and device operations on a split ring with memory corruption, against a FIFO model", SplitRingOpsTarget.Run),
        new("vhost-user", "vhost-user message decoder and the back-end state machine over random message sequences with real descriptors", VhostUserTarget.Run),
        new("net-rx", "virtio-net receive path (header, MRG_RXBUF reassembly) against a hostile device", NetReceiveTarget.Run),
        new("forward", "the runtime's forwarding path: hostile guests behind vhost-user ports, a learning switch, an in-memory port", ForwardTarget.Run),
    ];

    /// <summary>The target called <paramref name="name"/>, or null.</summary>
    /// <param name="name">The name.</param>
    /// <returns>The target.</returns>
    public static FuzzTarget? Find(string name)
    {
        foreach (var t in All)
        {
            if (t.Name == name)
            {
                return t;
            }
        }

        return null;
    }
}
