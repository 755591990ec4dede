using System.Buffers.Binary;
using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using Rings.Packed;

namespace Rings.Tests.Packed;

public class PackedEventTests
{
    /// <summary>
    /// The decision against a model on a line of free-running positions: the window is
    /// [start - advanced, start) and the event names the one position of the last two laps with
    /// that offset and lap parity (wrap counter 1 on even laps, as both counters start at 1).
    /// </summary>
    [Property(MaxTest = 2000)]
    public Property Event_decision_matches_the_free_running_model() =>
        Prop.ForAll(
            Gen.Choose(1, 32768).SelectMany(size => Gen.Choose(0, 1_000_000).SelectMany(linear =>
                Gen.Choose(0, size - 1).SelectMany(advanced =>
                    Gen.Choose(0, size - 1).SelectMany(offset =>
                        Gen.Elements(true, false).Select(wrap => (size, linear, advanced, offset, wrap)))))).ToArbitrary(),
            t =>
            {
                var (size, linear, advanced, offset, wrap) = t;
                var position = linear % size;
                var newWrap = (linear / size) % 2 == 0;
                var lapStart = linear - position;

                // The event's line position: this lap when the wrap counters match, else the lap before.
                var eventLine = lapStart + offset - (wrap == newWrap ? 0 : size);
                var expected = eventLine >= linear - advanced && eventLine < linear;
                var offWrap = PackedEventIndex.OffWrap(offset, wrap);
                return PackedEventIndex.NeedsNotification(offWrap, position, newWrap, advanced, size) == expected;
            });

    [Fact]
    public void Event_decision_edges()
    {
        // Nothing published: never.
        Assert.False(PackedEventIndex.NeedsNotification(PackedEventIndex.OffWrap(0, true), 0, true, 0, 8));

        // A whole lap or more: always.
        Assert.True(PackedEventIndex.NeedsNotification(PackedEventIndex.OffWrap(5, false), 3, true, 8, 8));

        // The position just published is not yet crossed; the one before it is.
        Assert.False(PackedEventIndex.NeedsNotification(PackedEventIndex.OffWrap(3, true), 3, true, 2, 8));
        Assert.True(PackedEventIndex.NeedsNotification(PackedEventIndex.OffWrap(2, true), 3, true, 2, 8));
        Assert.False(PackedEventIndex.NeedsNotification(PackedEventIndex.OffWrap(0, true), 3, true, 2, 8));

        // Largest ring: the u16 arithmetic still holds.
        Assert.True(PackedEventIndex.NeedsNotification(PackedEventIndex.OffWrap(32767, true), 1, false, 2, 32768));
        Assert.False(PackedEventIndex.NeedsNotification(PackedEventIndex.OffWrap(32766, true), 1, false, 2, 32768));
    }

    [Fact]
    public void An_event_offset_from_the_previous_lap_is_crossed_when_the_window_wraps()
    {
        using var rig = new PackedRig(5, VirtioFeatures.EventIndex);
        Cycle(rig, 3);

        // The device asks for a kick at position 3 of the first lap.
        Assert.False(rig.Device.EnableAvailNotifications());
        Assert.Equal(PackedEventIndex.OffWrap(3, true), BinaryPrimitives.ReadUInt16LittleEndian(rig.DeviceEvent));
        Assert.Equal(2, BinaryPrimitives.ReadUInt16LittleEndian(rig.DeviceEvent[2..]));

        // Positions 3, 4, 0: the window crosses the ring end, the driver's wrap counter flips to 0.
        for (var i = 0; i < 3; i++)
        {
            Assert.True(rig.Driver.TryAdd(rig.Slot(i), false, out _));
        }

        rig.Driver.Publish();
        Assert.Equal(new RingPosition(1, false, 3, true), rig.Driver.Position);
        Assert.True(rig.Driver.KickNeeded());

        // Next burst: the stale event (3, wrap 1) lies behind the window.
        Assert.True(rig.Driver.TryAdd(rig.Slot(3), false, out _));
        rig.Driver.Publish();
        Assert.False(rig.Driver.KickNeeded());
        Assert.Equal(2, rig.Driver.Counters.NotificationsSent); // one in Cycle, flags ENABLE
        Assert.Equal(1, rig.Driver.Counters.NotificationsSuppressed);
    }

    [Fact]
    public void An_event_offset_in_the_new_lap_is_crossed_only_once_reached()
    {
        using var rig = new PackedRig(5, VirtioFeatures.EventIndex);
        Cycle(rig, 3);

        // Event at position 1 of the second lap (wrap counter 0), written as a device would.
        BinaryPrimitives.WriteUInt16LittleEndian(rig.DeviceEvent, PackedEventIndex.OffWrap(1, false));
        BinaryPrimitives.WriteUInt16LittleEndian(rig.DeviceEvent[2..], 2);
        for (var i = 0; i < 3; i++)
        {
            Assert.True(rig.Driver.TryAdd(rig.Slot(i), false, out _));
        }

        rig.Driver.Publish();
        Assert.False(rig.Driver.KickNeeded()); // published 3, 4, 0: position 1 not yet
        Assert.True(rig.Driver.TryAdd(rig.Slot(3), false, out _));
        rig.Driver.Publish();
        Assert.True(rig.Driver.KickNeeded()); // position 1 published now
    }

    [Fact]
    public void The_used_direction_wraps_the_same_way()
    {
        using var rig = new PackedRig(4, VirtioFeatures.EventIndex);
        Cycle(rig, 3);

        // The driver expects its next used descriptor at position 3, wrap 1.
        Assert.False(rig.Driver.EnableUsedNotifications());
        Assert.Equal(PackedEventIndex.OffWrap(3, true), BinaryPrimitives.ReadUInt16LittleEndian(rig.DriverEvent));
        Assert.Equal(2, BinaryPrimitives.ReadUInt16LittleEndian(rig.DriverEvent[2..]));
        for (var i = 0; i < 3; i++)
        {
            Assert.True(rig.Driver.TryAdd(rig.Slot(i), false, out _));
        }

        rig.Driver.Publish();
        var tokens = new List<Rings.Chains.ChainToken>();
        while (rig.Device.TryPop(out var c))
        {
            tokens.Add(c.Token);
        }

        rig.Device.PushUsed(tokens[0], 0);
        rig.Device.PushUsed(tokens[1], 0);
        rig.Device.PublishUsed();
        Assert.True(rig.Device.CallNeeded());     // used 3, 0: crossed 3
        rig.Device.PushUsed(tokens[2], 0);
        rig.Device.PublishUsed();
        Assert.False(rig.Device.CallNeeded());    // used 1: the driver has not asked again
        Assert.False(rig.Device.CallNeeded());    // nothing new: no decision
        Assert.Equal(2, rig.Device.Counters.NotificationsSent); // one in Cycle, flags ENABLE
        Assert.Equal(1, rig.Device.Counters.NotificationsSuppressed);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Flags_enable_and_disable_kicks_and_calls(bool eventIndex)
    {
        using var rig = new PackedRig(8, eventIndex ? VirtioFeatures.EventIndex : VirtioFeatures.None);
        rig.Device.DisableAvailNotifications();
        Assert.Equal(1, BinaryPrimitives.ReadUInt16LittleEndian(rig.DeviceEvent[2..]));
        Assert.True(rig.Driver.TryAdd(rig.Slot(0), false, out _));
        rig.Driver.Publish();
        Assert.False(rig.Driver.KickNeeded());
        Assert.True(rig.Device.EnableAvailNotifications()); // re-check finds the buffer
        Assert.True(rig.Driver.TryAdd(rig.Slot(1), false, out _));
        rig.Driver.Publish();

        // Under EVENT_IDX the device asked for position 0, already published: no kick; with flags, a kick.
        Assert.Equal(!eventIndex, rig.Driver.KickNeeded());

        rig.Driver.DisableUsedNotifications();
        Assert.Equal(1, BinaryPrimitives.ReadUInt16LittleEndian(rig.DriverEvent[2..]));
        Assert.True(rig.Device.TryPop(out var c));
        rig.Device.PushUsed(c.Token, 0);
        rig.Device.PublishUsed();
        Assert.False(rig.Device.CallNeeded());
        Assert.True(rig.Driver.EnableUsedNotifications()); // re-check finds the used buffer
        Assert.True(rig.Device.TryPop(out c));
        rig.Device.PushUsed(c.Token, 0);
        rig.Device.PublishUsed();

        // Under EVENT_IDX the driver asked for position 0, already passed: no call; with flags, a call.
        Assert.Equal(!eventIndex, rig.Device.CallNeeded());
    }

    [Fact]
    public void Without_event_index_desc_or_reserved_flags_mean_notify()
    {
        using var rig = new PackedRig(4);
        foreach (ushort flags in new ushort[] { 0, 2, 3 })
        {
            BinaryPrimitives.WriteUInt16LittleEndian(rig.DeviceEvent, PackedEventIndex.OffWrap(3, false));
            BinaryPrimitives.WriteUInt16LittleEndian(rig.DeviceEvent[2..], flags);
            Assert.True(rig.Driver.TryAdd(rig.Slot(0), false, out _));
            rig.Driver.Publish();
            Assert.True(rig.Driver.KickNeeded());
            Assert.True(rig.Device.TryPop(out var c));
            rig.Device.PushUsed(c.Token, 0);
            rig.Device.PublishUsed();
            Assert.True(rig.Driver.TryTakeUsed(out _));
        }
    }

    /// <summary>
    /// Whatever the order of the driver's publish-then-decide and the device's
    /// enable-then-recheck, the device is kicked or its re-check sees the buffer (no lost wakeup),
    /// at every position of a few laps, in both directions and both notification modes.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void A_sleeping_side_is_always_woken(bool eventIndex)
    {
        foreach (var order in new[] { 0, 1, 2 })
        {
            using var rig = new PackedRig(3, eventIndex ? VirtioFeatures.EventIndex : VirtioFeatures.None);
            rig.Device.DisableAvailNotifications();
            rig.Driver.DisableUsedNotifications();
            for (var step = 0; step < 12; step++)
            {
                // Avail direction: the device goes to sleep on an empty ring while the driver adds one.
                Assert.False(rig.Device.TryPop(out _));
                Assert.True(rig.Driver.TryAdd(rig.Slot(0), false, out _));
                bool kicked = false, sawWork = false;
                switch (order)
                {
                    case 0:
                        sawWork = rig.Device.EnableAvailNotifications();
                        rig.Driver.Publish();
                        kicked = rig.Driver.KickNeeded();
                        break;
                    case 1:
                        rig.Driver.Publish();
                        sawWork = rig.Device.EnableAvailNotifications();
                        kicked = rig.Driver.KickNeeded();
                        break;
                    default:
                        rig.Driver.Publish();
                        kicked = rig.Driver.KickNeeded();
                        sawWork = rig.Device.EnableAvailNotifications();
                        break;
                }

                Assert.True(kicked || sawWork, $"avail step {step} order {order}: the device would sleep through work");
                rig.Device.DisableAvailNotifications();
                Assert.True(rig.Device.TryPop(out var chain));

                // Used direction: the driver goes to sleep while the device returns the buffer.
                Assert.False(rig.Driver.TryTakeUsed(out _));
                rig.Device.PushUsed(chain.Token, 0);
                bool called = false, sawUsed = false;
                switch (order)
                {
                    case 0:
                        sawUsed = rig.Driver.EnableUsedNotifications();
                        rig.Device.PublishUsed();
                        called = rig.Device.CallNeeded();
                        break;
                    case 1:
                        rig.Device.PublishUsed();
                        sawUsed = rig.Driver.EnableUsedNotifications();
                        called = rig.Device.CallNeeded();
                        break;
                    default:
                        rig.Device.PublishUsed();
                        called = rig.Device.CallNeeded();
                        sawUsed = rig.Driver.EnableUsedNotifications();
                        break;
                }

                Assert.True(called || sawUsed, $"used step {step} order {order}: the driver would sleep through work");
                rig.Driver.DisableUsedNotifications();
                Assert.True(rig.Driver.TryTakeUsed(out _));
            }
        }
    }

    /// <summary>Runs <paramref name="count"/> one-descriptor buffers round the ring.</summary>
    internal static void Cycle(PackedRig rig, int count)
    {
        for (var i = 0; i < count; i++)
        {
            Assert.True(rig.Driver.TryAdd(rig.Slot(i), false, out _));
        }

        rig.Driver.Publish();
        rig.Driver.KickNeeded();
        for (var i = 0; i < count; i++)
        {
            Assert.True(rig.Device.TryPop(out var c));
            rig.Device.PushUsed(c.Token, 0);
        }

        rig.Device.PublishUsed();
        rig.Device.CallNeeded();
        for (var i = 0; i < count; i++)
        {
            Assert.True(rig.Driver.TryTakeUsed(out _));
        }
    }
}
