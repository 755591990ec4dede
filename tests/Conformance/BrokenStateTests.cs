using Rings.Chains;
using Rings.Tests.Packed;
using Rings.Tests.Split;

namespace Rings.Tests.Conformance;

/// <summary>
/// A queue's health is its ring's: a break sticks through a counter clear, the first reason is
/// kept, and only the explicit way back (driver reset, device restore) makes the ring healthy.
/// </summary>
public abstract class BrokenStateTests<TFormat>
    where TFormat : IRingFormat, new()
{
    private static readonly TFormat Format = new();

    [Fact]
    public void A_device_break_survives_a_counter_clear_and_only_restore_heals_it()
    {
        using var memory = new GuardedMemory(1 << 20);
        var pair = Format.Create(memory, new RingSetup(8, VirtioFeatures.None, 0, 0));
        var buffer = memory.Allocate(4096, 64);
        Assert.True(pair.Driver.TryAdd(new BufferSegment(buffer, 64), false, out _));
        pair.Driver.Publish();

        pair.Device.MarkBroken(BrokenReason.HeaderTooShort);
        pair.Device.MarkBroken(BrokenReason.ChainLoop);
        Assert.True(pair.Device.IsBroken);
        Assert.Equal(BrokenReason.HeaderTooShort, pair.Device.BrokenReason);
        Assert.Equal(1, pair.Device.Counters.BrokenCount);

        pair.Device.Counters.Clear();
        Assert.Equal(0, pair.Device.Counters.BrokenCount);
        Assert.True(pair.Device.IsBroken);
        Assert.Equal(BrokenReason.HeaderTooShort, pair.Device.BrokenReason);
        Assert.False(pair.Device.HasAvailable);
        Assert.False(pair.Device.TryPop(out _), "a broken queue popped after its counters were cleared");

        pair.Device.Restore(pair.Device.Position);
        Assert.False(pair.Device.IsBroken);
        Assert.Equal(BrokenReason.None, pair.Device.BrokenReason);
        Assert.True(pair.Device.TryPop(out var chain));
        Assert.Equal(64UL, chain.ReadableBytes);
    }

    [Fact]
    public void A_driver_break_survives_a_counter_clear_and_only_reset_heals_it()
    {
        using var memory = new GuardedMemory(1 << 20);
        var pair = Format.Create(memory, new RingSetup(8, VirtioFeatures.None, 0, 0));
        var buffer = memory.Allocate(4096, 64);
        Assert.True(pair.Driver.TryAdd(new BufferSegment(buffer, 8), true, out _));
        pair.Driver.Publish();
        Assert.True(pair.Device.TryPop(out var chain));

        // The device claims to have written more than the buffer holds.
        pair.Device.PushUsed(chain.Token, 100);
        pair.Device.PublishUsed();
        Assert.False(pair.Driver.TryTakeUsed(out _));
        Assert.True(pair.Driver.IsBroken);
        Assert.Equal(BrokenReason.UsedLengthTooLarge, pair.Driver.BrokenReason);
        Assert.Equal(1, pair.Driver.Counters.BrokenCount);

        pair.Driver.Counters.Clear();
        Assert.True(pair.Driver.IsBroken);
        Assert.Equal(BrokenReason.UsedLengthTooLarge, pair.Driver.BrokenReason);
        Assert.False(pair.Driver.TryAdd(new BufferSegment(buffer, 8), true, out _), "a broken queue took a buffer after its counters were cleared");

        // The device reset that follows NEEDS_RESET: both sides start over.
        pair.Driver.Reset();
        pair.Device.Restore(new RingPosition(0));
        Assert.False(pair.Driver.IsBroken);
        Assert.Equal(BrokenReason.None, pair.Driver.BrokenReason);
        Assert.True(pair.Driver.TryAdd(new BufferSegment(buffer, 8), true, out var id));
        pair.Driver.Publish();
        Assert.True(pair.Device.TryPop(out chain));
        pair.Device.PushUsed(chain.Token, 8);
        pair.Device.PublishUsed();
        Assert.True(pair.Driver.TryTakeUsed(out var used));
        Assert.Equal((id, 8u), (used.Id, used.Length));
    }
}

/// <summary>Broken state on the split ring.</summary>
public sealed class SplitBrokenStateTests : BrokenStateTests<SplitFormat>;

/// <summary>Broken state on the packed ring.</summary>
public sealed class PackedBrokenStateTests : BrokenStateTests<PackedFormat>;
