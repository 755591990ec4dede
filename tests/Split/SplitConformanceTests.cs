using Rings.Tests.Conformance;

namespace Rings.Tests.Split;

/// <summary>The format-independent model properties on the split ring.</summary>
public sealed class SplitModelTests : RingModelTests<SplitFormat>;

/// <summary>The format-independent hostile-memory properties on the split ring.</summary>
public sealed class SplitHostileTests : HostileRingTests<SplitFormat>;

/// <summary>The format-independent wake-up tests on the split ring.</summary>
public sealed class SplitWakeupTests : WakeupTests<SplitFormat>;

/// <summary>Burst calls against single calls on the split ring.</summary>
public sealed class SplitBurstEquivalenceTests : BurstEquivalenceTests<SplitFormat>;
