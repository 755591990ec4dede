using Rings.Tool.Commands;

namespace Rings.Tests.Apps;

/// <summary>The steady rate a guest reports beside DPDK's figure: per-second rates after the first.</summary>
public class SteadyRateTests
{
    [Fact]
    public void TheFirstSecondIsLeftOutAndTheMedianOfTheRestIsTaken()
    {
        var perSecond = new List<(double, double)> { (1.0, 3.0), (2.0, 5.0), (3.0, 4.0), (4.0, 6.0), (5.0, 5.5) };

        Assert.Equal(5.25, RunReport.Steady(perSecond, 5));
    }

    [Fact]
    public void SecondsAfterSendingStoppedAreLeftOut()
    {
        // The drain after the last frame went out shows a falling rate: not part of the steady rate.
        var perSecond = new List<(double, double)> { (1.0, 3.0), (2.0, 5.0), (3.0, 5.2), (4.05, 0.4) };

        Assert.Equal(5.1, RunReport.Steady(perSecond, 3)!.Value, 6);
    }

    [Fact]
    public void ARunOfOneSecondHasNoSteadyRate()
    {
        Assert.Null(RunReport.Steady([(1.0, 3.0)], 1));
        Assert.Null(RunReport.Steady([], 3));
    }

    [Fact]
    public void WithoutATimeLimitEveryLaterSecondCounts()
    {
        var perSecond = new List<(double, double)> { (1.0, 1.0), (2.0, 2.0), (3.0, 3.0), (9.0, 4.0) };

        Assert.Equal(3.0, RunReport.Steady(perSecond, 0));
    }
}
