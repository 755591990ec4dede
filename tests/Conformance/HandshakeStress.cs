using System.Diagnostics;
using Rings.Chains;

namespace Rings.Tests.Conformance;

/// <summary>What a handshake stress run saw.</summary>
/// <param name="Rounds">Rounds run.</param>
/// <param name="Sleeps">Rounds where the consumer's re-check found the ring empty (it would block).</param>
/// <param name="Signals">Rounds where the producer decided to notify.</param>
/// <param name="LostWakeups">Rounds where the consumer would block and the producer did not notify, with one buffer published: a sleep on a non-empty ring.</param>
/// <param name="Elapsed">Wall time of the run.</param>
public readonly record struct HandshakeResult(long Rounds, long Sleeps, long Signals, long LostWakeups, TimeSpan Elapsed)
{
    /// <inheritdoc/>
    public override string ToString() =>
        $"{Rounds} rounds in {Elapsed.TotalSeconds:F2} s: {Sleeps} sleeps, {Signals} notifications, {LostWakeups} lost wake-ups";
}

/// <summary>
/// The notification handshake of one ring (virtio 1.2 2.7.10 / 2.7.7.2 split, 2.8.10 / 2.8.21.3
/// packed) raced by two threads in lockstep, round after round. Each round, with both threads
/// released together by a spin barrier, the producer publishes one buffer and decides whether to
/// notify while the consumer, which has emptied the ring, enables notifications and re-checks. This
/// is the store-buffering pattern: each side stores (the index or flags it publishes, the event
/// request) and then loads what the other stored. With the store-load fence on both sides at least
/// one of them sees the other's store, so either the consumer finds the buffer or the producer
/// notifies. Without either fence both loads can be served before the stores drain (x86 allows it),
/// and the consumer sleeps on a non-empty ring with no notification coming: a lost wake-up, counted.
/// </summary>
/// <remarks>
/// The threads are pinned to two CPUs when the process may use two, so they truly run at once.
/// Between the racing steps each round the consumer disables notifications and takes the buffer,
/// so every round starts from the same state. A delay before one side's racing step, tuned round by
/// round so that half the rounds find the ring empty, plus a jitter, keeps the two stores close
/// together, where a missing fence shows.
/// </remarks>
public static class HandshakeStress
{
    /// <summary>Most time a run may take whatever its budget: a thread that stops answering ends it there instead of hanging it.</summary>
    public static readonly TimeSpan HardLimit = TimeSpan.FromSeconds(60);

    /// <summary>
    /// Runs rounds until <paramref name="rounds"/> are done, or <paramref name="limit"/> has elapsed and
    /// at least <paramref name="minimumRounds"/> are done (a busy machine takes longer for those),
    /// and counts.
    /// </summary>
    /// <param name="format">Ring format.</param>
    /// <param name="features">Ring features (EVENT_IDX or not).</param>
    /// <param name="sleeper">The consumer: the device waiting for kicks, or the driver waiting for calls.</param>
    /// <param name="rounds">Most rounds to run.</param>
    /// <param name="limit">Time budget, once <paramref name="minimumRounds"/> are done.</param>
    /// <param name="minimumRounds">Rounds to run even past the budget (up to <see cref="HardLimit"/>).</param>
    /// <returns>The counts.</returns>
    public static HandshakeResult Run(RingFormat format, VirtioFeatures features, Sleeper sleeper, long rounds, TimeSpan limit, long minimumRounds = 10_000)
    {
        const int size = 256;
        const int slot = 64;
        using var pair = RingPair.Create(format, size, bufferBytes: size * slot, features: features);
        var driver = pair.Driver;
        var device = pair.Device;
        var step = new Lockstep(HardLimit);
        var budget = Stopwatch.StartNew();
        long sleeps = 0, signals = 0, lost = 0, done = 0;
        var consumerEmpty = new bool[1];
        var offset = new int[1]; // producer delay minus consumer delay, in spins: tuned so half the rounds sleep
        Exception? failure = null;

        BufferSegment Buffer(long i) => new(pair.BufferAddress + (ulong)(i % size * slot), slot);

        // The device-sleeps direction: the driver adds before the barrier and publishes after it.
        void DriverProducer()
        {
            long taken = 0;
            for (long r = 0; r < rounds && !step.Stopped; r++)
            {
                while (driver.TryTakeUsed(out _))
                {
                    taken++;
                }

                Check(driver.TryAdd(Buffer(r), false, out _), $"round {r}: the driver has no free descriptor ({taken} taken back)");
                if (!step.Arrive(Producer, 2 * r))
                {
                    return;
                }

                Delay(r, Producer, offset[0]);
                driver.Publish();
                var kick = driver.KickNeeded();
                if (!step.Arrive(Producer, (2 * r) + 1))
                {
                    return;
                }

                Tally(r, kick);
                if (r + 1 >= minimumRounds && budget.Elapsed > limit)
                {
                    step.Stop(); // the consumer leaves at its next barrier
                }
            }
        }

        void DeviceConsumer()
        {
            device.DisableAvailNotifications();
            for (long r = 0; r < rounds && !step.Stopped; r++)
            {
                if (!step.Arrive(Consumer, 2 * r))
                {
                    return;
                }

                Delay(r, Consumer, offset[0]);
                var work = device.EnableAvailNotifications();
                consumerEmpty[0] = !work;
                if (!step.Arrive(Consumer, (2 * r) + 1))
                {
                    return;
                }

                // The publish happened before the barrier: the buffer is there now.
                device.DisableAvailNotifications();
                Check(device.TryPop(out var chain), $"round {r}: the published buffer is not there");
                device.PushUsed(chain.Token, 0);
                device.PublishUsed();
            }
        }

        // The driver-sleeps direction: the driver keeps the device supplied; the device pushes
        // before the barrier and publishes after it.
        void DeviceProducer()
        {
            for (long r = 0; r < rounds && !step.Stopped; r++)
            {
                // The driver posted these rounds ago (it keeps half the ring posted).
                Check(device.TryPop(out var chain), $"round {r}: no posted buffer to return");
                device.PushUsed(chain.Token, 0);
                if (!step.Arrive(Producer, 2 * r))
                {
                    return;
                }

                Delay(r, Producer, offset[0]);
                device.PublishUsed();
                var call = device.CallNeeded();
                if (!step.Arrive(Producer, (2 * r) + 1))
                {
                    return;
                }

                Tally(r, call);
                if (r + 1 >= minimumRounds && budget.Elapsed > limit)
                {
                    step.Stop();
                }
            }
        }

        void DriverConsumer()
        {
            long posted = 0;
            void Post(int n)
            {
                for (var i = 0; i < n; i++, posted++)
                {
                    Check(driver.TryAdd(Buffer(posted), true, out _), "the driver has no free descriptor");
                }

                driver.Publish();
            }

            Post(size / 2);
            driver.DisableUsedNotifications();
            step.Ready();
            for (long r = 0; r < rounds && !step.Stopped; r++)
            {
                if (!step.Arrive(Consumer, 2 * r))
                {
                    return;
                }

                Delay(r, Consumer, offset[0]);
                var work = driver.EnableUsedNotifications();
                consumerEmpty[0] = !work;
                if (!step.Arrive(Consumer, (2 * r) + 1))
                {
                    return;
                }

                driver.DisableUsedNotifications();
                Check(driver.TryTakeUsed(out _), $"round {r}: the returned buffer is not there");
                Post(1);
            }
        }

        void Tally(long r, bool signalled)
        {
            // Read after the second barrier: the consumer wrote its verdict before arriving there.
            var empty = consumerEmpty[0];
            sleeps += empty ? 1 : 0;
            signals += signalled ? 1 : 0;
            lost += empty && !signalled ? 1 : 0;

            // The consumer found the buffer: the producer's store came first; hold the producer
            // back a little more next time (and the other way round). The races then centre on the
            // point where the two stores meet, where a missing fence shows.
            offset[0] = Math.Clamp(offset[0] + (empty ? -OffsetStep : OffsetStep), -MaxOffset, MaxOffset);
            done = r + 1;
        }

        void Check(bool condition, string why)
        {
            if (!condition)
            {
                throw new InvalidOperationException(why);
            }
        }

        Thread Start(Action body, int cpu)
        {
            var t = new Thread(() =>
            {
                try
                {
                    Pin(cpu);
                    body();
                }
                catch (Exception e)
                {
                    Interlocked.CompareExchange(ref failure, e, null);
                    step.Stop();
                }
            })
            { IsBackground = true };
            t.Start();
            return t;
        }

        var clock = Stopwatch.StartNew();
        Thread producer, consumer;
        if (sleeper == Sleeper.Device)
        {
            step.Ready();
            producer = Start(DriverProducer, 0);
            consumer = Start(DeviceConsumer, 1);
        }
        else
        {
            // The driver posts its first buffers before the device looks for them.
            consumer = Start(DriverConsumer, 1);
            step.WaitReady();
            producer = Start(DeviceProducer, 0);
        }

        var joined = producer.Join(limit + TimeSpan.FromSeconds(10)) & consumer.Join(TimeSpan.FromSeconds(10));
        clock.Stop();
        if (failure is not null)
        {
            throw new InvalidOperationException($"the stress run failed after {done} rounds", failure);
        }

        if (!joined)
        {
            throw new TimeoutException($"the stress threads did not finish ({done} rounds)");
        }

        return new HandshakeResult(done, sleeps, signals, lost, clock.Elapsed);
    }

    private const int Producer = 0;
    private const int Consumer = 1;

    private const int OffsetStep = 2;
    private const int MaxOffset = 4096;
    private const int Jitter = 8;

    private static readonly int[] SpinTarget = new int[1];

    /// <summary>
    /// Holds back one side's racing step: the producer by <paramref name="offset"/> plus a jitter
    /// that varies round by round (a negative total holds back the consumer instead), so the two
    /// windows slide across each other around the point where they meet.
    /// </summary>
    private static void Delay(long round, int side, int offset)
    {
        var jitter = (int)(((ulong)round * 0x9E3779B97F4A7C15) >> 60) - Jitter; // -8 to 7
        var total = offset + jitter;
        var spins = side == Producer ? total : -total;
        for (var i = 0; i < spins; i++)
        {
            // A load the JIT cannot drop: about a nanosecond a step.
            Volatile.Read(ref SpinTarget[0]);
        }
    }

    private static void Pin(int cpu)
    {
        // Two CPUs the process may use, so the threads run at the same time; otherwise leave it to the scheduler.
        if (Environment.ProcessorCount >= 2)
        {
            try
            {
                Rings.Linux.Plumbing.CpuAffinity.PinCurrentThread(cpu);
            }
            catch (IOException)
            {
            }
        }
    }

    /// <summary>
    /// A two-thread barrier: each side publishes the step it reached and spins until the other
    /// reaches it, so both leave together. A side that has spun for a while (the other is not
    /// running: the machine is busy) blocks on its semaphore instead, and the other wakes it, so
    /// a busy machine slows the rounds down instead of stalling them.
    /// </summary>
    private sealed class Lockstep(TimeSpan limit)
    {
        private const int SpinsBeforeBlocking = 1 << 14;

        // Each side's mark and waiting flag in its own 128-byte block (16 longs apart), so one
        // side's spinning reads do not share a cache line with the other's writes.
        private readonly long[] _marks = new long[64];
        private readonly SemaphoreSlim[] _wake = [new(0), new(0)]; // no wait handle is made: nothing to dispose
        private readonly Stopwatch _clock = Stopwatch.StartNew();
        private int _stopped;
        private int _ready;

        public bool Stopped => Volatile.Read(ref _stopped) != 0;

        public void Stop()
        {
            Volatile.Write(ref _stopped, 1);
            _wake[0].Release();
            _wake[1].Release();
        }

        public void Ready() => Volatile.Write(ref _ready, 1);

        public void WaitReady()
        {
            while (Volatile.Read(ref _ready) == 0 && !Stopped)
            {
                Thread.Yield();
            }
        }

        /// <summary>Marks step <paramref name="n"/> reached by <paramref name="side"/> and waits for the other side; false when the run stopped.</summary>
        public bool Arrive(int side, long n)
        {
            var mine = 16 + (32 * side);
            var other = 48 - (32 * side);

            // Marks hold n + 1, so 0 means nothing reached yet. The exchange is a full fence: the
            // mark is visible before we look whether the other side sleeps (and it does the same).
            Interlocked.Exchange(ref _marks[mine], n + 1);
            if (Volatile.Read(ref _marks[other + 8]) != 0)
            {
                _wake[1 - side].Release();
            }

            var spins = 0;
            while (Volatile.Read(ref _marks[other]) < n + 1)
            {
                if (++spins < SpinsBeforeBlocking)
                {
                    continue;
                }

                spins = 0;
                if (Stopped)
                {
                    return false;
                }

                if (_clock.Elapsed > limit)
                {
                    // Out of time: end the run where it is (the rounds run so far still count).
                    Stop();
                    return false;
                }

                // Announce the sleep, then re-check (both full fences), then sleep briefly: a
                // wake-up lost here costs a millisecond, never the run.
                Interlocked.Exchange(ref _marks[mine + 8], 1);
                if (Volatile.Read(ref _marks[other]) < n + 1)
                {
                    _wake[side].Wait(1);
                }

                Interlocked.Exchange(ref _marks[mine + 8], 0);
            }

            return !Stopped;
        }
    }
}
