using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using Rings.Chains;

namespace Rings.Tests.Conformance;

/// <summary>Which side goes to sleep in a wake-up scenario.</summary>
public enum Sleeper
{
    /// <summary>The device sleeps on its kick doorbell; the driver publishes buffers and kicks when asked.</summary>
    Device,

    /// <summary>The driver sleeps on its call doorbell; the device returns buffers and calls when asked.</summary>
    Driver,
}

/// <summary>A deterministic interleaving of a producer and a sleeping consumer.</summary>
/// <param name="Setup">The ring.</param>
/// <param name="Sleeper">Which side sleeps.</param>
/// <param name="Items">Buffers to move in all.</param>
/// <param name="Bursts">Producer burst sizes, used in turn.</param>
/// <param name="Steps">Who moves next: true the producer, false the consumer.</param>
public sealed record WakeSchedule(RingSetup Setup, Sleeper Sleeper, int Items, int[] Bursts, bool[] Steps)
{
    /// <inheritdoc/>
    public override string ToString() =>
        $"{Setup}, {Sleeper} sleeps, {Items} items, bursts [{string.Join(',', Bursts)}], steps {new string(Steps.Select(s => s ? 'P' : 'c').ToArray())}";
}

/// <summary>
/// The sleeping side of a ring is always woken when work arrives, for any ring format. The
/// consumer's protocol: poll; enable notifications; if that re-check finds nothing, block on
/// the doorbell (a counting semaphore). The producer's: publish; signal only when
/// <see cref="IDriverRing.KickNeeded"/> / <see cref="IDeviceRing.CallNeeded"/> says so.
/// Every interleaving of those steps must move every item; a lost wake-up leaves the consumer
/// asleep on a non-empty ring, which the scheduler detects (no party can move).
/// </summary>
public static class Wakeup
{
    /// <summary>Generator of schedules.</summary>
    public static Gen<WakeSchedule> Schedules(IRingFormat format) =>
        from setup in RingModel.Setups(format)
        where setup.Size <= 64
        from sleeper in Gen.Elements(Sleeper.Device, Sleeper.Driver)
        from items in Gen.Choose(1, (3 * setup.Size) + 10)
        from bursts in Gen.ArrayOf(Gen.Frequency((3, Gen.Choose(1, 2)), (1, Gen.Choose(1, setup.Size))), 4)
        from n in Gen.Choose(0, 300)
        from steps in Gen.ArrayOf(Gen.Elements(false, true), n)
        select new WakeSchedule(setup, sleeper, items, bursts, steps);

    /// <summary>Shrinks a schedule by dropping steps and items.</summary>
    public static IEnumerable<WakeSchedule> Shrink(WakeSchedule s)
    {
        if (s.Items > 1)
        {
            yield return s with { Items = s.Items / 2 };
            yield return s with { Items = s.Items - 1 };
        }

        if (s.Steps.Length > 0)
        {
            yield return s with { Steps = s.Steps[..(s.Steps.Length / 2)] };
            for (var i = 0; i < Math.Min(s.Steps.Length, 40); i++)
            {
                yield return s with { Steps = [.. s.Steps[..i], .. s.Steps[(i + 1)..]] };
            }
        }
    }

    private enum Phase
    {
        Poll,
        Enable,
        Block,
        Asleep,
    }

    /// <summary>Runs a schedule, then lets both parties run to quiescence; fails if the consumer sleeps through work.</summary>
    public static void Run(IRingFormat format, WakeSchedule s)
    {
        using var memory = new GuardedMemory(format.RingBytes(s.Setup) + 4096);
        var pair = format.Create(memory, s.Setup);
        var buffer = memory.Allocate(64);
        var sim = new Simulation(pair, s, buffer);
        foreach (var producer in s.Steps)
        {
            if (producer)
            {
                sim.ProducerStep();
            }
            else
            {
                sim.ConsumerStep();
            }
        }

        // Fair finish: both move while they can. The consumer stops only when asleep with no doorbell.
        for (var round = 0; sim.Consumed < s.Items; round++)
        {
            Assert.True(round < 100_000, "the schedule did not settle");
            var moved = sim.ProducerStep() | sim.ConsumerStep();
            if (!moved)
            {
                Assert.Fail($"lost wake-up: the {s.Sleeper.ToString().ToLowerInvariant()} is asleep with no doorbell pending, "
                    + $"{sim.Consumed} of {s.Items} items consumed; recent: {string.Join(" ", sim.Trace.TakeLast(30))}");
            }
        }

        Assert.False(pair.Driver.IsBroken);
        Assert.False(pair.Device.IsBroken);
    }

    private sealed class Simulation(RingSides pair, WakeSchedule s, ulong buffer)
    {
        private readonly IDriverRing _driver = pair.Driver;
        private readonly IDeviceRing _device = pair.Device;
        private Phase _consumer = Phase.Poll;
        private bool _producerMustDecide;
        private int _doorbell;
        private int _burst;
        private int _sent;    // device sleeps: buffers published by the driver
        private int _posted;  // driver sleeps: buffers the driver made available for the device to return
        private bool _started;

        public int Consumed { get; private set; }

        public List<string> Trace { get; } = [];

        private bool DeviceSleeps => s.Sleeper == Sleeper.Device;

        private void Start()
        {
            if (_started)
            {
                return;
            }

            _started = true;
            if (DeviceSleeps)
            {
                _device.DisableAvailNotifications(); // the device starts out polling
            }
            else
            {
                _driver.DisableUsedNotifications();
                Post();
            }
        }

        // Driver sleeps: keep the device supplied with buffers (the device polls for them).
        private void Post()
        {
            var n = 0;
            while (_posted < s.Items && _driver.TryAdd(new BufferSegment(buffer, 64), true, out _))
            {
                _posted++;
                n++;
            }

            _driver.Publish();
            Trace.Add($"post{n}");
        }

        public bool ProducerStep()
        {
            Start();
            if (_producerMustDecide)
            {
                _producerMustDecide = false;
                var signal = DeviceSleeps ? _driver.KickNeeded() : _device.CallNeeded();
                if (signal)
                {
                    _doorbell++;
                }

                Trace.Add(signal ? "SIGNAL" : "quiet");
                return true;
            }

            var burst = s.Bursts[_burst++ % s.Bursts.Length];
            var n = 0;
            if (DeviceSleeps)
            {
                while (_driver.TryTakeUsed(out _))
                {
                }

                while (n < burst && _sent < s.Items && _driver.TryAdd(new BufferSegment(buffer, 64), false, out _))
                {
                    n++;
                    _sent++;
                }

                if (n > 0)
                {
                    _driver.Publish();
                }
            }
            else
            {
                while (n < burst && _device.TryPop(out var chain))
                {
                    _device.PushUsed(chain.Token, 0);
                    n++;
                }

                if (n > 0)
                {
                    _device.PublishUsed();
                }
            }

            if (n == 0)
            {
                return false; // nothing to produce now (done, ring full, or no buffers to return)
            }

            Trace.Add($"publish{n}");
            _producerMustDecide = true;
            return true;
        }

        public bool ConsumerStep()
        {
            Start();
            switch (_consumer)
            {
                case Phase.Poll:
                    var n = 0;
                    if (DeviceSleeps)
                    {
                        while (_device.TryPop(out var chain))
                        {
                            _device.PushUsed(chain.Token, 0);
                            n++;
                        }

                        _device.PublishUsed();
                    }
                    else
                    {
                        while (_driver.TryTakeUsed(out _))
                        {
                            n++;
                        }

                        Post();
                    }

                    Consumed += n;
                    Trace.Add($"poll{n}");
                    _consumer = Phase.Enable;
                    return true;
                case Phase.Enable:
                    var pending = DeviceSleeps ? _device.EnableAvailNotifications() : _driver.EnableUsedNotifications();
                    Trace.Add(pending ? "enable:work" : "enable:empty");
                    if (pending)
                    {
                        Disable();
                        _consumer = Phase.Poll;
                    }
                    else
                    {
                        _consumer = Phase.Block;
                    }

                    return true;
                default:
                    if (_doorbell > 0)
                    {
                        _doorbell--;
                        Trace.Add("wake");
                        Disable();
                        _consumer = Phase.Poll;
                        return true;
                    }

                    if (_consumer == Phase.Block)
                    {
                        Trace.Add("sleep");
                        _consumer = Phase.Asleep;
                        return true;
                    }

                    return false;
            }
        }

        private void Disable()
        {
            if (DeviceSleeps)
            {
                _device.DisableAvailNotifications();
            }
            else
            {
                _driver.DisableUsedNotifications();
            }
        }
    }

    /// <summary>
    /// Both sides on their own threads, each sleeping on a semaphore when it has nothing to do:
    /// the device when no buffer is available, the driver when the ring is full and nothing is used.
    /// A wait that outlasts <paramref name="waitLimit"/> fails the test instead of hanging it.
    /// </summary>
    public static void RunThreads(IRingFormat format, RingSetup setup, int items, int seed, TimeSpan waitLimit)
    {
        using var memory = new GuardedMemory(format.RingBytes(setup) + 4096);
        var pair = format.Create(memory, setup);
        var driver = pair.Driver;
        var device = pair.Device;

        // Buffer k uses slot k mod size: 8 readable bytes carrying k, 8 writable bytes for the
        // device's answer ~k. Completion is in order here, so a slot is free again before reuse.
        var slots = memory.Allocate((ulong)(16 * setup.Size));
        var seqOfId = new long[65536];
        using var kick = new SemaphoreSlim(0);
        using var call = new SemaphoreSlim(0);
        var stop = 0;
        string? failure = null;
        long driverSleeps = 0, deviceSleeps = 0;

        void Fail(string why)
        {
            Interlocked.CompareExchange(ref failure, why, null);
            Volatile.Write(ref stop, 1);
            kick.Release();
            call.Release();
        }

        var driverThread = new Thread(() =>
        {
            try
            {
                var random = new Random(seed);
                int sent = 0, reclaimed = 0;
                while (reclaimed < items && Volatile.Read(ref stop) == 0)
                {
                    while (driver.TryTakeUsed(out var used))
                    {
                        var k = seqOfId[used.Id];
                        var answer = BitConverter.ToInt64(memory.Bytes(slots + (ulong)(16 * (k % setup.Size)) + 8, 8));
                        if (k != reclaimed || used.Length != 8 || answer != ~k)
                        {
                            Fail($"driver took back buffer {k} (expected {reclaimed}), length {used.Length}, answer {answer:x}");
                            return;
                        }

                        reclaimed++;
                    }

                    var burst = random.Next(1, 9);
                    var n = 0;
                    while (n < burst && sent < items)
                    {
                        var slot = slots + (ulong)(16 * (sent % setup.Size));
                        BitConverter.TryWriteBytes(memory.Bytes(slot, 8), (long)sent);
                        memory.Bytes(slot + 8, 8).Clear();
                        if (!driver.TryAdd([new BufferSegment(slot, 8)], [new BufferSegment(slot + 8, 8)], out var id))
                        {
                            break;
                        }

                        seqOfId[id] = sent;
                        n++;
                        sent++;
                    }

                    if (n > 0)
                    {
                        driver.Publish();
                        if (driver.KickNeeded())
                        {
                            kick.Release();
                        }

                        continue;
                    }

                    if (reclaimed == items)
                    {
                        break;
                    }

                    // Nothing to add: wait for used buffers. Enable, re-check, and only then sleep.
                    if (driver.EnableUsedNotifications())
                    {
                        driver.DisableUsedNotifications();
                        continue;
                    }

                    driverSleeps++;
                    if (!call.Wait(waitLimit))
                    {
                        Fail($"driver slept {waitLimit.TotalSeconds} s with {reclaimed}/{items} reclaimed; used waiting: {driver.TryTakeUsed(out _)}");
                        return;
                    }

                    driver.DisableUsedNotifications();
                }

                if (driver.IsBroken)
                {
                    Fail($"driver broke: {driver.BrokenReason}");
                }
            }
            catch (Exception e)
            {
                Fail($"driver threw {e}");
            }
        });

        var deviceThread = new Thread(() =>
        {
            try
            {
                var random = new Random(seed + 1);
                var popped = 0;
                Span<byte> seq = stackalloc byte[8];
                while (popped < items && Volatile.Read(ref stop) == 0)
                {
                    var burst = random.Next(1, 9);
                    var n = 0;
                    while (n < burst && device.TryPop(out var chain))
                    {
                        // The bytes must be visible once the chain is: the driver's release, our acquire.
                        var k = chain.CopyReadableTo(seq) == 8 ? BitConverter.ToInt64(seq) : -1;
                        if (k != popped + n)
                        {
                            Fail($"device popped buffer {k}, expected {popped + n}");
                            return;
                        }

                        BitConverter.TryWriteBytes(seq, ~k);
                        device.PushUsed(chain.Token, (uint)chain.CopyToWritable(seq));
                        n++;
                    }

                    if (n > 0)
                    {
                        popped += n;
                        device.PublishUsed();
                        if (device.CallNeeded())
                        {
                            call.Release();
                        }

                        continue;
                    }

                    if (device.EnableAvailNotifications())
                    {
                        device.DisableAvailNotifications();
                        continue;
                    }

                    deviceSleeps++;
                    if (!kick.Wait(waitLimit))
                    {
                        Fail($"device slept {waitLimit.TotalSeconds} s with {popped}/{items} popped; available: {device.TryPop(out _)}");
                        return;
                    }

                    device.DisableAvailNotifications();
                }

                if (device.IsBroken)
                {
                    Fail($"device broke: {device.BrokenReason}");
                }
            }
            catch (Exception e)
            {
                Fail($"device threw {e}");
            }
        });

        driverThread.Start();
        deviceThread.Start();
        var overall = waitLimit * 6;
        var joined = driverThread.Join(overall) & deviceThread.Join(overall);
        if (!joined)
        {
            Fail("threads did not finish");
            driverThread.Join(waitLimit);
            deviceThread.Join(waitLimit);
        }

        Assert.True(failure is null, failure);
        Assert.Equal(0, driver.Outstanding);
        Assert.Equal(items, driver.Counters.Packets);
        Assert.Equal(items, device.Counters.Packets);
    }
}

/// <summary>The wake-up properties and tests for any ring format.</summary>
public abstract class WakeupTests<TFormat>
    where TFormat : IRingFormat, new()
{
    private static readonly TFormat Format = new();

    /// <summary>Every interleaving of producer and consumer steps moves every item.</summary>
    [Property(MaxTest = 1500)]
    public Property A_sleeping_side_is_always_woken() =>
        Prop.ForAll(Arb.From(Wakeup.Schedules(Format), Wakeup.Shrink), s => Wakeup.Run(Format, s));

    public static TheoryData<bool, ushort> Modes() => new()
    {
        { false, 0 }, { true, 0 }, { false, 65535 }, { true, 65534 },
    };

    private static RingSides Make(GuardedMemory memory, bool eventIdx, ushort start, int size = 8) =>
        Format.Create(memory, new RingSetup(size, eventIdx ? VirtioFeatures.EventIndex : VirtioFeatures.None, start, 0));

    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(10);

    /// <summary>Device: enable finds nothing, so it will sleep; the driver's next publish must kick, and the doorbell wakes it.</summary>
    [Theory]
    [MemberData(nameof(Modes))]
    public void Device_publish_after_enable_kicks(bool eventIdx, ushort start)
    {
        using var memory = new GuardedMemory(64 * 1024);
        var pair = Make(memory, eventIdx, start);
        var buffer = memory.Allocate(64);
        using var doorbell = new SemaphoreSlim(0);

        // Some traffic while the device polls (kicks suppressed), all consumed.
        pair.Device.DisableAvailNotifications();
        for (var round = 0; round < 3; round++)
        {
            Assert.True(pair.Driver.TryAdd(new BufferSegment(buffer, 8), false, out _));
            pair.Driver.Publish();
            if (pair.Driver.KickNeeded())
            {
                doorbell.Release();
            }

            Assert.True(pair.Device.TryPop(out var c));
            pair.Device.PushUsed(c.Token, 0);
            pair.Device.PublishUsed();
            Assert.True(pair.Driver.TryTakeUsed(out _));
        }

        while (doorbell.Wait(0))
        {
        }

        Assert.False(pair.Device.EnableAvailNotifications(), "nothing is available");

        // The driver publishes while the device is on its way to sleep.
        Assert.True(pair.Driver.TryAdd(new BufferSegment(buffer, 8), false, out var id));
        pair.Driver.Publish();
        Assert.True(pair.Driver.KickNeeded(), "the device asked for a kick");
        doorbell.Release();

        Assert.True(doorbell.Wait(Limit), "the device was not woken");
        pair.Device.DisableAvailNotifications();
        Assert.True(pair.Device.TryPop(out var chain));
        Assert.Equal(id, chain.Token.Id);
    }

    /// <summary>Device: the driver publishes while kicks are off; the device's enable re-check sees it and does not sleep.</summary>
    [Theory]
    [MemberData(nameof(Modes))]
    public void Device_publish_before_enable_is_seen_by_the_recheck(bool eventIdx, ushort start)
    {
        using var memory = new GuardedMemory(64 * 1024);
        var pair = Make(memory, eventIdx, start);
        var buffer = memory.Allocate(64);
        pair.Device.DisableAvailNotifications();
        Assert.True(pair.Driver.TryAdd(new BufferSegment(buffer, 8), false, out _));
        pair.Driver.Publish();
        pair.Driver.KickNeeded(); // first publish: may kick or not, the device is polling anyway
        Assert.True(pair.Device.TryPop(out var c));
        pair.Device.PushUsed(c.Token, 0);
        Assert.True(pair.Driver.TryAdd(new BufferSegment(buffer, 8), false, out var id));
        pair.Driver.Publish();
        var kicked = pair.Driver.KickNeeded();
        Assert.True(pair.Device.EnableAvailNotifications() || kicked, "neither the kick nor the re-check saw the buffer");
        Assert.True(pair.Device.EnableAvailNotifications(), "the re-check must see the published buffer");
        Assert.True(pair.Device.TryPop(out var chain));
        Assert.Equal(id, chain.Token.Id);
    }

    /// <summary>
    /// Device: the driver publishes between the device's enable and its re-check: the enable has
    /// already asked for a kick, so the kick is sent, and the re-check also sees the buffer.
    /// </summary>
    [Theory]
    [MemberData(nameof(Modes))]
    public void Device_publish_between_enable_and_recheck(bool eventIdx, ushort start)
    {
        using var memory = new GuardedMemory(64 * 1024);
        var pair = Make(memory, eventIdx, start);
        var buffer = memory.Allocate(64);
        using var doorbell = new SemaphoreSlim(0);
        pair.Device.DisableAvailNotifications();
        Assert.False(pair.Device.EnableAvailNotifications()); // the request is written
        Assert.True(pair.Driver.TryAdd(new BufferSegment(buffer, 8), false, out _));
        pair.Driver.Publish();                                // published before the re-check
        Assert.True(pair.Device.EnableAvailNotifications(), "the re-check must see the buffer");
        if (pair.Driver.KickNeeded())
        {
            doorbell.Release();
        }

        Assert.Equal(1, doorbell.CurrentCount); // the kick the device asked for is sent too
        Assert.True(pair.Device.TryPop(out _));
    }

    /// <summary>Driver: enable finds nothing, so it will sleep; the device's next publish must call, and the doorbell wakes it.</summary>
    [Theory]
    [MemberData(nameof(Modes))]
    public void Driver_publish_after_enable_calls(bool eventIdx, ushort start)
    {
        using var memory = new GuardedMemory(64 * 1024);
        var pair = Make(memory, eventIdx, start);
        var buffer = memory.Allocate(64);
        using var doorbell = new SemaphoreSlim(0);
        pair.Driver.DisableUsedNotifications();
        for (var i = 0; i < 4; i++)
        {
            Assert.True(pair.Driver.TryAdd(new BufferSegment(buffer, 64), true, out _));
        }

        pair.Driver.Publish();

        // Two buffers come back while the driver polls (calls suppressed).
        for (var i = 0; i < 2; i++)
        {
            Assert.True(pair.Device.TryPop(out var c));
            pair.Device.PushUsed(c.Token, 1);
            pair.Device.PublishUsed();
            if (pair.Device.CallNeeded())
            {
                doorbell.Release();
            }

            Assert.True(pair.Driver.TryTakeUsed(out _));
        }

        while (doorbell.Wait(0))
        {
        }

        Assert.False(pair.Driver.EnableUsedNotifications(), "nothing is used");
        Assert.True(pair.Device.TryPop(out var chain));
        pair.Device.PushUsed(chain.Token, 7);
        pair.Device.PublishUsed();
        Assert.True(pair.Device.CallNeeded(), "the driver asked for a call");
        doorbell.Release();

        Assert.True(doorbell.Wait(Limit), "the driver was not woken");
        pair.Driver.DisableUsedNotifications();
        Assert.True(pair.Driver.TryTakeUsed(out var used));
        Assert.Equal(new UsedElement(chain.Token.Id, 7), used);
    }

    /// <summary>Driver: the device publishes while calls are off; the driver's enable re-check sees it.</summary>
    [Theory]
    [MemberData(nameof(Modes))]
    public void Driver_publish_before_enable_is_seen_by_the_recheck(bool eventIdx, ushort start)
    {
        using var memory = new GuardedMemory(64 * 1024);
        var pair = Make(memory, eventIdx, start);
        var buffer = memory.Allocate(64);
        pair.Driver.DisableUsedNotifications();
        Assert.True(pair.Driver.TryAdd(new BufferSegment(buffer, 64), true, out _));
        Assert.True(pair.Driver.TryAdd(new BufferSegment(buffer, 64), true, out _));
        pair.Driver.Publish();
        Assert.True(pair.Device.TryPop(out var a));
        Assert.True(pair.Device.TryPop(out var b));
        pair.Device.PushUsed(a.Token, 1);
        pair.Device.PublishUsed();
        pair.Device.CallNeeded();
        Assert.True(pair.Driver.TryTakeUsed(out _));
        pair.Device.PushUsed(b.Token, 2);
        pair.Device.PublishUsed();
        var called = pair.Device.CallNeeded();
        Assert.True(pair.Driver.EnableUsedNotifications() || called, "neither the call nor the re-check saw the buffer");
        Assert.True(pair.Driver.EnableUsedNotifications(), "the re-check must see the used buffer");
        Assert.True(pair.Driver.TryTakeUsed(out var used));
        Assert.Equal(b.Token.Id, used.Id);
    }

    /// <summary>Driver: the device publishes between the driver's enable and its re-check.</summary>
    [Theory]
    [MemberData(nameof(Modes))]
    public void Driver_publish_between_enable_and_recheck(bool eventIdx, ushort start)
    {
        using var memory = new GuardedMemory(64 * 1024);
        var pair = Make(memory, eventIdx, start);
        var buffer = memory.Allocate(64);
        using var doorbell = new SemaphoreSlim(0);
        pair.Driver.DisableUsedNotifications();
        Assert.True(pair.Driver.TryAdd(new BufferSegment(buffer, 64), true, out _));
        pair.Driver.Publish();
        Assert.True(pair.Device.TryPop(out var chain));
        Assert.False(pair.Driver.EnableUsedNotifications()); // the request is written
        pair.Device.PushUsed(chain.Token, 3);
        pair.Device.PublishUsed();                            // published before the re-check
        Assert.True(pair.Driver.EnableUsedNotifications(), "the re-check must see the used buffer");
        if (pair.Device.CallNeeded())
        {
            doorbell.Release();
        }

        Assert.Equal(1, doorbell.CurrentCount);
        Assert.True(pair.Driver.TryTakeUsed(out _));
    }

    public static TheoryData<int, bool> StressModes() => new()
    {
        { 4, false }, { 4, true }, { 64, false }, { 64, true },
    };

    /// <summary>Two threads, both sleeping on doorbells: every buffer goes round, no side sleeps forever.</summary>
    [Theory]
    [MemberData(nameof(StressModes))]
    public void Two_threads_with_doorbells_move_every_buffer(int size, bool eventIdx)
    {
        var setup = new RingSetup(size, eventIdx ? VirtioFeatures.EventIndex : VirtioFeatures.None, (ushort)(65536 - (3 * size)), 0);
        Wakeup.RunThreads(Format, setup, 20_000, size * 31, TimeSpan.FromSeconds(10));
    }
}
