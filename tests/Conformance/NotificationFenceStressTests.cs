using Xunit.Abstractions;

namespace Rings.Tests.Conformance;

/// <summary>Stress tests run alone: they need both CPUs, and would slow every test beside them.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class StressCollection
{
    /// <summary>The collection's name.</summary>
    public const string Name = "stress";
}

/// <summary>
/// The store-load fences of the notification handshake, seen by a test: for each ring format and
/// each direction (the device waiting for kicks, the driver waiting for calls), with and without
/// EVENT_IDX, two threads race the handshake in lockstep and no round may end with the consumer
/// asleep on a non-empty ring and no notification on its way. Removing any one of the eight
/// <see cref="Interlocked.MemoryBarrier"/> calls (split and packed; driver and device; publish side
/// and re-check side) makes this fail with thousands of lost wake-ups on a two-CPU x86 machine.
/// </summary>
[Collection(StressCollection.Name)]
public sealed class NotificationFenceStressTests(ITestOutputHelper output)
{
    /// <summary>Most rounds per case; the time budget usually ends a case first.</summary>
    private const long Rounds = 1_000_000;

    /// <summary>Time per case: half a second, or RINGS_STRESS_SECONDS (the mutation script gives it longer on a busy machine).</summary>
    private static readonly TimeSpan Budget = TimeSpan.FromSeconds(
        double.TryParse(Environment.GetEnvironmentVariable("RINGS_STRESS_SECONDS"), System.Globalization.CultureInfo.InvariantCulture, out var s) && s > 0 ? s : 0.5);

    /// <summary>Split ring, the device waiting for kicks: the fences of the device's EnableAvailNotifications and the driver's KickNeeded.</summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Split_device_waiting_for_kicks_is_never_left_asleep_on_a_non_empty_ring(bool eventIdx) => Race(RingFormat.Split, Sleeper.Device, eventIdx);

    /// <summary>Split ring, the driver waiting for calls: the fences of the driver's EnableUsedNotifications and the device's CallNeeded.</summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Split_driver_waiting_for_calls_is_never_left_asleep_on_a_non_empty_ring(bool eventIdx) => Race(RingFormat.Split, Sleeper.Driver, eventIdx);

    /// <summary>Packed ring, the device waiting for kicks.</summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Packed_device_waiting_for_kicks_is_never_left_asleep_on_a_non_empty_ring(bool eventIdx) => Race(RingFormat.Packed, Sleeper.Device, eventIdx);

    /// <summary>Packed ring, the driver waiting for calls.</summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Packed_driver_waiting_for_calls_is_never_left_asleep_on_a_non_empty_ring(bool eventIdx) => Race(RingFormat.Packed, Sleeper.Driver, eventIdx);

    private void Race(RingFormat format, Sleeper sleeper, bool eventIdx)
    {
        var result = HandshakeStress.Run(format, eventIdx ? VirtioFeatures.EventIndex : VirtioFeatures.None, sleeper, Rounds, Budget);
        output.WriteLine(result.ToString());

        // Ten thousand rounds at least (unless a starved machine hits the hard limit first), more
        // when the machine is free; a lost wake-up in any of them is a sleep on a non-empty ring
        // with no notification coming.
        Assert.True(result.Rounds > 0, result.ToString());
        Assert.True(result.LostWakeups == 0, $"lost wake-ups: {result}");
    }
}
