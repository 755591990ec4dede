using System.Diagnostics;
using Rings.Chains;
using Rings.Linux.Net;
using Rings.Split;

namespace Rings.Tool.Commands;

/// <summary>
/// One split ring in one process: a driver thread transmits frames, a device thread consumes
/// them and returns the buffers. Shows what batching and notification suppression do to the
/// number of doorbells per packet.
/// </summary>
internal static class InProcessLoopback
{
    /// <param name="Features">Features both sides use (EVENT_IDX).</param>
    /// <param name="Wait">Block sleeps on a doorbell when idle; poll (and adaptive, here) spins.</param>
    public sealed record Options(double Seconds, int QueueSize, int Burst, int FrameSize, VirtioFeatures Features, WaitStrategy Wait)
    {
        public bool EventIndex => (Features & VirtioFeatures.EventIndex) != 0;

        public bool Block => Wait == WaitStrategy.Block;

        public string? Validate()
        {
            if (!(Seconds > 0 && Seconds <= 86400))
            {
                return "--seconds must be between 0 and 86400";
            }

            if (!RingFormat.Split.IsValidSize(QueueSize))
            {
                return $"--queue-size must be {RingFormat.Split.SizeRule}";
            }

            if (Burst < 1 || Burst > QueueSize)
            {
                return $"--burst must be between 1 and the queue size ({QueueSize})";
            }

            if (FrameSize < 60 || FrameSize > 65535)
            {
                return "--frame-size must be between 60 and 65535";
            }

            return null;
        }
    }

    public static int Run(Options o, TextWriter output, string? metrics = null)
    {
        using var monitoring = Monitoring.Start("loopback", metrics, output, Console.Error);
        if (monitoring is null)
        {
            return 3;
        }

        var slot = (o.FrameSize + 63) & ~63;
        using var pair = RingPair.Create(RingFormat.Split, o.QueueSize, (ulong)slot * (ulong)o.QueueSize, o.Features & VirtioFeatures.EventIndex);

        // The sides by their classes, so the loops below call them directly (sealed: no dispatch).
        var driver = (SplitDriverRing)pair.Driver;
        var device = (SplitDeviceRing)pair.Device;
        using var watchedDriver = monitoring.Metrics.AddQueue("in-process driver", () => [Linux.Diagnostics.PortQueue.Of("transmitq", pair.Driver)]);
        using var watchedDevice = monitoring.Metrics.AddQueue("in-process device", () => [Linux.Diagnostics.PortQueue.Of("transmitq", pair.Device)]);

        using var kick = new SemaphoreSlim(0);
        using var call = new SemaphoreSlim(0);
        var stop = 0;
        long corrupted = 0;

        var driverThread = new Thread(() =>
        {
            // Buffer slot i belongs to whichever buffer id holds it; ids are unique while outstanding.
            var freeSlots = new int[o.QueueSize];
            var slotOfId = new int[o.QueueSize];
            var freeCount = o.QueueSize;
            for (var i = 0; i < o.QueueSize; i++)
            {
                freeSlots[i] = i;
            }

            ulong sequence = 0;
            var idle = new IdlePolicy(WaitStrategy.Poll);
            if (!o.Block)
            {
                driver.DisableUsedNotifications();
            }

            // Burst calls: one ring call takes back a burst, one adds a burst.
            var used = new UsedElement[o.QueueSize];
            var segments = new BufferSegment[o.Burst];
            var ids = new ushort[o.Burst];
            while (Volatile.Read(ref stop) == 0 && !driver.IsBroken)
            {
                var taken = driver.TakeUsed(used);
                for (var i = 0; i < taken; i++)
                {
                    freeSlots[freeCount++] = slotOfId[used[i].Id];
                }

                // Frames in the free slots from the top of the stack down, numbered in that order.
                var ready = Math.Min(o.Burst, freeCount);
                for (var i = 0; i < ready; i++)
                {
                    var address = pair.BufferAddress + ((ulong)freeSlots[freeCount - 1 - i] * (ulong)slot);
                    BitConverter.TryWriteBytes(pair.Span(address, o.FrameSize), sequence + (ulong)i);
                    segments[i] = new BufferSegment(address, (uint)o.FrameSize);
                }

                var added = driver.TryAddBurst(segments.AsSpan(0, ready), false, ids);
                for (var i = 0; i < added; i++)
                {
                    slotOfId[ids[i]] = freeSlots[--freeCount];
                }

                sequence += (ulong)added;

                if (added > 0)
                {
                    driver.Publish();
                    if (driver.KickNeeded())
                    {
                        kick.Release();
                    }
                }
                else if (o.Block)
                {
                    if (!driver.EnableUsedNotifications())
                    {
                        call.Wait(100);
                    }

                    driver.DisableUsedNotifications();
                }
                else
                {
                    idle.IdleShouldSleep();
                }
            }
        })
        { Name = "driver", IsBackground = true };

        var deviceThread = new Thread(() =>
        {
            var tokens = new ChainToken[o.Burst];
            var chains = new PoppedChain[o.Burst];
            var segments = new ChainSegment[o.Burst]; // the driver above adds one-segment buffers
            ulong expected = 0;
            var idle = new IdlePolicy(WaitStrategy.Poll);
            if (!o.Block)
            {
                device.DisableAvailNotifications();
            }

            while (Volatile.Read(ref stop) == 0 && !device.IsBroken)
            {
                var n = device.PopBurst(chains, segments);
                for (var i = 0; i < n; i++)
                {
                    // The device reads what the driver wrote: the frame's sequence number.
                    var seq = BitConverter.ToUInt64(chains[i].Readable(segments)[0].Span);
                    if (seq != expected)
                    {
                        corrupted++;
                    }

                    expected = seq + 1;
                    tokens[i] = chains[i].Token;
                }

                if (n > 0)
                {
                    device.PushUsedBurst(tokens.AsSpan(0, n), default);
                    device.PublishUsed();
                    if (device.CallNeeded())
                    {
                        call.Release();
                    }
                }
                else if (o.Block)
                {
                    if (!device.EnableAvailNotifications())
                    {
                        kick.Wait(100);
                    }

                    device.DisableAvailNotifications();
                }
                else
                {
                    idle.IdleShouldSleep();
                }
            }
        })
        { Name = "device", IsBackground = true };

        output.WriteLine($"rings loopback: one split ring in one process, queue {o.QueueSize}, burst {o.Burst}, frame {o.FrameSize} B, EVENT_IDX {(o.EventIndex ? "on" : "off")}, wait {(o.Block ? "block" : "poll")}, {o.Seconds:0.#} s");
        var gcBefore = GC.CollectionCount(0);
        var clock = Stopwatch.StartNew();
        driverThread.Start();
        deviceThread.Start();
        long lastPackets = 0;
        var lastTime = 0.0;
        var cancelled = false;
        using var signalled = new ManualResetEventSlim();
        using var signals = StopSignals.Install(_ =>
        {
            Volatile.Write(ref cancelled, true);
            signalled.Set();
        });
        while (clock.Elapsed.TotalSeconds < o.Seconds && !Volatile.Read(ref cancelled) && !driver.IsBroken && !device.IsBroken)
        {
            signalled.Wait(TimeSpan.FromSeconds(Math.Min(1, Math.Max(0.01, o.Seconds - clock.Elapsed.TotalSeconds))));
            var now = clock.Elapsed.TotalSeconds;
            var packets = device.Counters.Packets;
            output.WriteLine($"  {now,6:0.0} s  {(packets - lastPackets) / (now - lastTime) / 1e6,8:0.000} Mpps");
            lastPackets = packets;
            lastTime = now;
        }

        Volatile.Write(ref stop, 1);
        kick.Release();
        call.Release();
        driverThread.Join();
        deviceThread.Join();
        var elapsed = clock.Elapsed.TotalSeconds;
        var gcAfter = GC.CollectionCount(0);

        var d = driver.Counters;
        var v = device.Counters;
        var total = Math.Max(1, v.Packets);
        output.WriteLine();
        output.WriteLine($"  packets            {v.Packets,14:N0}");
        output.WriteLine($"  rate               {v.Packets / elapsed / 1e6,14:0.000} Mpps");
        output.WriteLine($"  throughput         {v.Packets * (double)o.FrameSize * 8 / elapsed / 1e9,14:0.000} Gbit/s");
        output.WriteLine($"  kicks per packet   {(double)d.NotificationsSent / total,14:0.0000}   (sent {d.NotificationsSent:N0}, suppressed {d.NotificationsSuppressed:N0})");
        output.WriteLine($"  calls per packet   {(double)v.NotificationsSent / total,14:0.0000}   (sent {v.NotificationsSent:N0}, suppressed {v.NotificationsSuppressed:N0})");
        output.WriteLine($"  mean burst         {d.MeanBurst,14:0.0} driver, {v.MeanBurst:0.0} device");
        output.WriteLine($"  out of sequence    {corrupted,14:N0}");
        output.WriteLine($"  gen0 collections   {gcAfter - gcBefore,14:N0}");
        if (driver.IsBroken || device.IsBroken)
        {
            output.WriteLine($"  broken             driver {driver.BrokenReason}, device {device.BrokenReason}");
            return 1;
        }

        return corrupted == 0 ? 0 : 1;
    }
}
