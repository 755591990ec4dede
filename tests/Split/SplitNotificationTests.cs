using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using Rings.Chains;
using Rings.Tests.Conformance;

namespace Rings.Tests.Split;

/// <summary>
/// Notification suppression of the split ring (virtio 1.2 sections 2.7.7 and 2.7.10): the
/// EVENT_IDX formula, and each side's kick/call decision following exactly what the peer wrote
/// in ring memory (avail_event / used_event under EVENT_IDX, the NO_NOTIFY / NO_INTERRUPT flag
/// without it).
/// </summary>
public sealed class SplitNotificationTests
{
    private static readonly Gen<ushort> AnyU16 = Gen.Choose(0, 65535).Select(v => (ushort)v);

    /// <summary>The spec's expression, written out with explicit 16-bit masking.</summary>
    private static bool SpecFormula(int eventIndex, int newIndex, int oldIndex) =>
        ((newIndex - eventIndex - 1) & 0xFFFF) < ((newIndex - oldIndex) & 0xFFFF);

    [Property(MaxTest = 20000)]
    public Property Event_index_decision_is_the_spec_formula() =>
        Prop.ForAll(
            Gen.Three(AnyU16).ToArbitrary(),
            t => EventIndex.NeedsNotification(t.Item1, t.Item2, t.Item3) == SpecFormula(t.Item1, t.Item2, t.Item3));

    [Property(MaxTest = 2000)]
    public Property Event_index_decision_near_the_window_edges()
    {
        // Triples where the event sits at, just inside or just outside [old, new), across the wrap.
        var gen =
            from old in AnyU16
            from distance in Gen.Frequency((3, Gen.Choose(0, 64)), (1, Gen.Choose(0, 65535)))
            from offset in Gen.Choose(-2, 2)
            from atNew in Gen.Elements(false, true)
            select (Event: (ushort)(old + (atNew ? distance : 0) + offset), New: (ushort)(old + distance), Old: old);
        return Prop.ForAll(gen.ToArbitrary(), t => EventIndex.NeedsNotification(t.Event, t.New, t.Old) == SpecFormula(t.Event, t.New, t.Old));
    }

    [Fact]
    public void Event_index_decision_is_the_spec_formula_exhaustively_over_every_window()
    {
        // Every distance new - old and every event offset for a few starting points, including
        // the wrap: the decision is "the event lies in [old, new)" in modulo-2^16 arithmetic.
        foreach (var old in new[] { 0, 1, 0x7FFF, 0x8000, 0xFFFE, 0xFFFF })
        {
            for (var distance = 0; distance < 65536; distance += 1)
            {
                var newIndex = (ushort)(old + distance);
                foreach (var eventOffset in new[] { 0, 1, distance - 1, distance, distance + 1, 0xFFFF, distance / 2 })
                {
                    var eventIndex = (ushort)(old + eventOffset);
                    var inWindow = ((eventIndex - old) & 0xFFFF) < distance;
                    var actual = EventIndex.NeedsNotification(eventIndex, newIndex, (ushort)old);
                    if (actual != SpecFormula(eventIndex, newIndex, old) || actual != inWindow)
                    {
                        Assert.Fail($"event {eventIndex}, new {newIndex}, old {old}: got {actual}");
                    }
                }
            }
        }
    }

    /// <summary>A decision scenario: first batch, then the peer writes its fields, then a second batch in one or two publishes.</summary>
    public sealed record Decision(bool EventIdx, int Size, ushort Start, int First, int SecondA, int SecondB, ushort PeerEvent, ushort PeerFlags)
    {
        public RingSetup Setup => new(Size, EventIdx ? VirtioFeatures.EventIndex : VirtioFeatures.None, Start, 0);

        public ushort Old => (ushort)(Start + First);

        public ushort New => (ushort)(Start + First + SecondA + SecondB);
    }

    private static Gen<Decision> Decisions =>
        from eventIdx in Gen.Elements(false, true)
        from size in Gen.Elements(1, 2, 4, 8, 16, 64, 256)
        from start in RingModel.Starts(size)
        from first in Gen.Choose(0, size)
        from a in Gen.Choose(0, size - first)
        from b in Gen.Choose(0, size - first - a)
        from peerEvent in Gen.Frequency(
            (4, Gen.Choose(-3, size + 3).Select(d => (ushort)(start + first + d))),
            (1, AnyU16))
        from peerFlags in Gen.Frequency((2, Gen.Elements<ushort>(0, 1)), (1, AnyU16))
        select new Decision(eventIdx, size, start, first, a, b, peerEvent, peerFlags);

    private static void AddAndPublish(IDriverRing driver, ulong buffer, int n)
    {
        for (var i = 0; i < n; i++)
        {
            Assert.True(driver.TryAdd(new BufferSegment(buffer, 64), true, out _));
        }

        driver.Publish();
    }

    [Property(MaxTest = 500)]
    public Property Driver_kicks_exactly_when_the_device_asked() =>
        Prop.ForAll(Decisions.ToArbitrary(), d =>
        {
            using var memory = new GuardedMemory(512 * 1024);
            var pair = SplitFormat.CreateSplit(memory, d.Setup);
            var driver = pair.Driver;
            var buffer = memory.Allocate(64);

            // First decision: a fresh ring asks for kicks (avail_event = start, flags 0).
            AddAndPublish(driver, buffer, d.First);
            Assert.Equal(d.First > 0, driver.KickNeeded());

            // The device writes its wishes; then the driver publishes more, maybe in two publishes.
            pair.View.AvailEvent = d.PeerEvent;
            pair.View.UsedFlags = d.PeerFlags;
            AddAndPublish(driver, buffer, d.SecondA);
            AddAndPublish(driver, buffer, d.SecondB);
            var expected = d.SecondA + d.SecondB > 0 && (d.EventIdx
                ? SpecFormula(d.PeerEvent, d.New, d.Old)   // 2.7.10: avail_event; flags ignored
                : (d.PeerFlags & 1) == 0);                  // 2.7.10: VRING_USED_F_NO_NOTIFY; avail_event ignored
            Assert.Equal(expected, driver.KickNeeded());

            // Nothing new published: never a kick, and the decision is not counted.
            Assert.False(driver.KickNeeded());
            var decisions = (d.First > 0 ? 1 : 0) + (d.SecondA + d.SecondB > 0 ? 1 : 0);
            Assert.Equal(decisions, driver.Counters.NotificationsSent + driver.Counters.NotificationsSuppressed);
            Assert.Equal((d.First > 0 ? 1 : 0) + (expected ? 1 : 0), driver.Counters.NotificationsSent);
        });

    [Property(MaxTest = 500)]
    public Property Device_calls_exactly_when_the_driver_asked() =>
        Prop.ForAll(Decisions.ToArbitrary(), d =>
        {
            using var memory = new GuardedMemory(512 * 1024);
            var pair = SplitFormat.CreateSplit(memory, d.Setup);
            var device = pair.Device;
            var buffer = memory.Allocate(64);
            var total = d.First + d.SecondA + d.SecondB;
            AddAndPublish(pair.Driver, buffer, total);
            var tokens = new Queue<ChainToken>();
            for (var i = 0; i < total; i++)
            {
                Assert.True(device.TryPop(out var chain));
                tokens.Enqueue(chain.Token);
            }

            void PushAndPublish(int n)
            {
                for (var i = 0; i < n; i++)
                {
                    device.PushUsed(tokens.Dequeue(), 1);
                }

                device.PublishUsed();
            }

            // First decision: a fresh ring asks for calls (used_event = start, flags 0).
            PushAndPublish(d.First);
            Assert.Equal(d.First > 0, device.CallNeeded());

            pair.View.UsedEvent = d.PeerEvent;
            pair.View.AvailFlags = d.PeerFlags;
            PushAndPublish(d.SecondA);
            PushAndPublish(d.SecondB);
            var expected = d.SecondA + d.SecondB > 0 && (d.EventIdx
                ? SpecFormula(d.PeerEvent, d.New, d.Old)   // 2.7.7.2: used_event; flags ignored
                : (d.PeerFlags & 1) == 0);                  // 2.7.7.1: VRING_AVAIL_F_NO_INTERRUPT
            Assert.Equal(expected, device.CallNeeded());
            Assert.False(device.CallNeeded());
            Assert.Equal((d.First > 0 ? 1 : 0) + (expected ? 1 : 0), device.Counters.NotificationsSent);
        });

    /// <summary>What each side writes when it enables or disables notifications, and what the peer then decides.</summary>
    public sealed record Toggle(bool EventIdx, int Size, ushort Start, int Before, int After, bool Enable);

    private static Gen<Toggle> Toggles =>
        from eventIdx in Gen.Elements(false, true)
        from size in Gen.Elements(1, 2, 4, 8, 32, 128)
        from start in RingModel.Starts(size)
        from before in Gen.Choose(0, size)
        from after in Gen.Choose(1, size)
        from enable in Gen.Elements(false, true)
        select new Toggle(eventIdx, size, start, before, after, enable);

    [Property(MaxTest = 300)]
    public Property Device_avail_notification_requests_steer_the_driver_kick() =>
        Prop.ForAll(Toggles.ToArbitrary(), t =>
        {
            using var memory = new GuardedMemory(512 * 1024);
            var pair = SplitFormat.CreateSplit(memory, new RingSetup(t.Size, t.EventIdx ? VirtioFeatures.EventIndex : VirtioFeatures.None, t.Start, 0));
            var (driver, device) = (pair.Driver, pair.Device);
            var buffer = memory.Allocate(64);

            // Some traffic first, all popped and returned, so the device is idle at start + before.
            AddAndPublish(driver, buffer, t.Before);
            driver.KickNeeded();
            for (var i = 0; i < t.Before; i++)
            {
                Assert.True(device.TryPop(out var c));
                device.PushUsed(c.Token, 0);
            }

            device.PublishUsed();
            while (driver.TryTakeUsed(out _))
            {
            }

            if (t.Enable)
            {
                device.DisableAvailNotifications();
                Assert.False(device.EnableAvailNotifications()); // idle: nothing to re-check
                if (t.EventIdx)
                {
                    Assert.Equal(device.Position.AvailIndex, pair.View.AvailEvent); // 2.7.10: kick when idx passes what we read
                }
                else
                {
                    Assert.Equal(0, pair.View.UsedFlags & 1);
                }
            }
            else
            {
                device.EnableAvailNotifications();
                device.DisableAvailNotifications();
                if (!t.EventIdx)
                {
                    Assert.Equal(1, pair.View.UsedFlags & 1);
                }
            }

            AddAndPublish(driver, buffer, t.After);
            var kick = driver.KickNeeded();
            if (t.Enable)
            {
                Assert.True(kick, "the device asked for a kick and the driver did not send one");
            }
            else if (!t.EventIdx)
            {
                Assert.False(kick, "the device said NO_NOTIFY and the driver kicked");
            }

            Assert.True(device.EnableAvailNotifications(), "the re-check must see the buffers just published");
        });

    [Property(MaxTest = 300)]
    public Property Driver_used_notification_requests_steer_the_device_call() =>
        Prop.ForAll(Toggles.ToArbitrary(), t =>
        {
            using var memory = new GuardedMemory(512 * 1024);
            var pair = SplitFormat.CreateSplit(memory, new RingSetup(t.Size, t.EventIdx ? VirtioFeatures.EventIndex : VirtioFeatures.None, t.Start, 0));
            var (driver, device) = (pair.Driver, pair.Device);
            var buffer = memory.Allocate(64);

            // Some traffic first, all returned and taken back, so the driver is idle at start + before.
            AddAndPublish(driver, buffer, t.Before);
            for (var i = 0; i < t.Before; i++)
            {
                Assert.True(device.TryPop(out var c));
                device.PushUsed(c.Token, 0);
            }

            device.PublishUsed();
            device.CallNeeded();
            while (driver.TryTakeUsed(out _))
            {
            }

            if (t.Enable)
            {
                driver.DisableUsedNotifications();
                Assert.False(driver.EnableUsedNotifications());
                if (t.EventIdx)
                {
                    Assert.Equal((ushort)(t.Start + t.Before), pair.View.UsedEvent); // 2.7.7.2: call when idx passes what we took
                }
                else
                {
                    Assert.Equal(0, pair.View.AvailFlags & 1);
                }
            }
            else
            {
                driver.EnableUsedNotifications();
                driver.DisableUsedNotifications();
                if (!t.EventIdx)
                {
                    Assert.Equal(1, pair.View.AvailFlags & 1);
                }
            }

            AddAndPublish(driver, buffer, t.After);
            for (var i = 0; i < t.After; i++)
            {
                Assert.True(device.TryPop(out var c));
                device.PushUsed(c.Token, 0);
            }

            device.PublishUsed();
            var call = device.CallNeeded();
            if (t.Enable)
            {
                Assert.True(call, "the driver asked for a call and the device did not send one");
            }
            else
            {
                // Without EVENT_IDX the flag forbids the call; with it, Disable moves used_event out of reach.
                Assert.False(call, "the driver disabled calls and the device called");
            }
        });
}
