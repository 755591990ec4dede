using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using Rings.Chains;
using Rings.Linux.Device;
using Rings.Linux.Plumbing;
using Rings.Linux.VhostUser;

namespace Rings.Tests.VhostUser;

/// <summary>
/// GET/SET_INFLIGHT_FD as a hostile front-end would use them: the region it hands back is checked
/// (negotiated, sizes, offset, seals) before it is mapped, and whatever it wrote into the region
/// never crashes the back-end or moves a ring outside its memory.
/// </summary>
public class InflightRegionTests
{
    private static readonly InflightDescription TwoQueuesOf8 = new(0, 0, 2, 8);

    /// <summary>
    /// A packed buffer of one descriptor recorded at once (<see cref="InflightQueueMemory.RecordSingle"/>)
    /// leaves the region byte for byte as the entry accessors' stores do, one by one, over any
    /// earlier contents, and names the same next free entry.
    /// </summary>
    [Property(MaxTest = 200)]
    public Property RecordingAOneDescriptorBufferAtOnceWritesWhatTheAccessorsWrite(byte[] noise, ushort head, ulong counter, ulong address, uint length, ushort id, ushort flags)
    {
        const int Entries = 16;
        using var once = InflightRegion.Create(RingFormat.Packed, 1, Entries);
        using var each = InflightRegion.Create(RingFormat.Packed, 1, Entries);
        var entry = head % Entries;
        Scribble(once, noise);
        Scribble(each, noise);

        var next = once.Queue(0).RecordSingle(entry, counter, address, length, id, flags);

        var q = each.Queue(0);
        q.SetNum(entry, 0);
        q.SetCounter(entry, counter);
        q.SetInflight(entry, true);
        q.SetDescriptor(entry, address, length, id, flags);
        q.SetNum(entry, (ushort)(q.Num(entry) + 1));
        q.SetLast(entry, (ushort)entry);
        return (next == q.Next(entry) && Bytes(once).AsSpan().SequenceEqual(Bytes(each))).ToProperty();

        static void Scribble(InflightRegion region, byte[] noise)
        {
            using var map = SharedMemory.Map(region.Handle!, 0, region.Length);
            var bytes = map.Slice(0, (int)region.Length);
            for (var i = 0; i < bytes.Length && noise.Length > 0; i++)
            {
                bytes[i] = noise[i % noise.Length];
            }
        }

        static byte[] Bytes(InflightRegion region)
        {
            using var map = SharedMemory.Map(region.Handle!, 0, region.Length);
            return map.Slice(0, (int)region.Length).ToArray();
        }
    }

    [Fact]
    public void GetInflightFdGivesASealedRegionOfTheSizeTheLayoutNeeds()
    {
        foreach (var format in RingFormat.All)
        {
            using var h = new SessionHarness();
            h.Negotiate(features: VirtioFeatures.Version1 | format.Feature);
            var reply = h.Ok(VhostUserMessage.WithInflight(VhostUserRequest.GetInflightFd, TwoQueuesOf8))!.Value;
            var region = h.Session.Inflight!;
            Assert.Equal(format, region.Format);
            Assert.Equal(2 * InflightRegion.QueueBytes(format, 8), reply.Inflight.MmapSize);
            Assert.Equal(format == RingFormat.Packed ? 2 * 320UL : 2 * 192UL, reply.Inflight.MmapSize);
            Assert.Equal((0UL, (ushort)2, (ushort)8), (reply.Inflight.MmapOffset, reply.Inflight.NumQueues, reply.Inflight.QueueSize));
            Assert.True(SharedMemory.IsShrinkSealed(region.Handle!));
            Assert.Equal(0, region.Queue(1).Version);
            Assert.Equal(8, region.Queue(1).DescNum);
        }
    }

    [Fact]
    public void SetInflightFdRefusesWhatDoesNotFitAndMapsNothing()
    {
        using var h = new SessionHarness();
        h.Negotiate();
        h.Ok(VhostUserMessage.WithInflight(VhostUserRequest.GetInflightFd, TwoQueuesOf8));
        var good = h.Session.Inflight!.Description;
        var fd = h.Session.Inflight!.Handle!;
        (InflightDescription Description, VhostUserErrorCode Code)[] bad =
        [
            (good with { MmapSize = good.MmapSize + 64 }, VhostUserErrorCode.BadRegion),
            (good with { MmapSize = 1UL << 40, QueueSize = 32768, NumQueues = 2 }, VhostUserErrorCode.BadRegion),
            (good with { MmapOffset = 64 }, VhostUserErrorCode.BadRegion),
            (good with { MmapOffset = 1UL << 30 }, VhostUserErrorCode.MapFailed),
            (good with { NumQueues = 3 }, VhostUserErrorCode.ValueOutOfRange),
            (good with { NumQueues = 0 }, VhostUserErrorCode.ValueOutOfRange),
            (good with { QueueSize = 0 }, VhostUserErrorCode.QueueSizeInvalid),
        ];
        foreach (var (description, code) in bad)
        {
            var outcome = h.Send(VhostUserMessage.WithInflight(VhostUserRequest.SetInflightFd, description, needReply: true), fd);
            Assert.Equal(code, outcome.Error.Code);
            Assert.False(outcome.Close);
        }

        // A file the front-end could shrink under us is refused.
        using var unsealed = Unsealed(good.MmapSize);
        Assert.Equal(VhostUserErrorCode.BadRegion, h.Send(VhostUserMessage.WithInflight(VhostUserRequest.SetInflightFd, good, needReply: true), unsealed).Error.Code);

        // And without INFLIGHT_SHMFD negotiated neither message is served.
        using var plain = new SessionHarness();
        plain.Negotiate(replyAck: true);
        plain.Ok(VhostUserMessage.WithU64(VhostUserRequest.SetProtocolFeatures, (ulong)VhostUserProtocolFeatures.ReplyAck));
        Assert.Equal(VhostUserErrorCode.NotNegotiated, plain.Send(VhostUserMessage.WithInflight(VhostUserRequest.SetInflightFd, good, needReply: true), fd).Error.Code);
        Assert.Null(plain.Session.Inflight);
    }

    [Fact]
    public void TheRegionCannotChangeUnderRunningRings()
    {
        using var h = new SessionHarness();
        h.Negotiate();
        h.SendMemTable();
        h.Ok(VhostUserMessage.WithInflight(VhostUserRequest.GetInflightFd, TwoQueuesOf8));
        h.SetupRing(0, 8);
        Assert.IsType<InflightDeviceRing>(h.Running[0].Ring);
        var outcome = h.Send(VhostUserMessage.WithInflight(VhostUserRequest.GetInflightFd, TwoQueuesOf8, needReply: true));
        Assert.Equal(VhostUserErrorCode.RingRunning, outcome.Error.Code);
    }

    /// <summary>
    /// Whatever bytes the front-end leaves in the region, a ring starts over it without an exception,
    /// resumes at a position of the ring, and serves what the driver makes available.
    /// </summary>
    [Property(MaxTest = 60)]
    public Property AScribbledRegionNeverCrashesAndTheRingStillServes() =>
        Prop.ForAll(
            (from bytes in ArbMap.Default.GeneratorFor<byte[]>()
             from packed in ArbMap.Default.GeneratorFor<bool>()
             from version in Gen.Elements<ushort>(0, 1, 7)
             select (bytes, packed, version)).ToArbitrary(),
            t =>
            {
                var format = t.packed ? RingFormat.Packed : RingFormat.Split;
                using var h = new SessionHarness();
                var features = h.Negotiate(features: VirtioFeatures.Version1 | format.Feature);
                h.SendMemTable();
                h.Ok(VhostUserMessage.WithInflight(VhostUserRequest.GetInflightFd, TwoQueuesOf8));
                var region = h.Session.Inflight!;

                // The front-end's scribbles, through its own mapping of the file.
                using (var mine = SharedMemory.Map(region.Handle!, 0, region.Length))
                {
                    var span = mine.Slice(0, (int)region.Length);
                    for (var i = 0; i < span.Length && t.bytes.Length > 0; i++)
                    {
                        span[i] = t.bytes[i % t.bytes.Length];
                    }

                    // desc_num right and the version set, so recovery reads the rest.
                    BitConverter.TryWriteBytes(span[8..], t.version);
                    BitConverter.TryWriteBytes(span[10..], (ushort)8);
                }

                h.SetupRing(1, 8, format: format);
                var ring = h.Running[1].Ring;
                Assert.True(ring.Position.AvailIndex < 8 || format == RingFormat.Split);

                // The driver (fresh ring, nothing in flight) makes one buffer available: it is served.
                var driver = format.CreateDriver(h.Guest, h.GuestAreas(1, 8, format), 8, features);
                if (ring is InflightDeviceRing tracked)
                {
                    tracked.CommitRecovery();
                }

                ring.Restore(new RingPosition(0));
                Assert.True(driver.TryAdd(new BufferSegment(h.BufferAddress(0), 60), false, out var id));
                driver.Publish();
                Assert.True(ring.TryPop(out var chain), ring.BrokenReason.ToString());
                Assert.Equal(id, chain.Token.Id);
                ring.PushUsed(chain.Token, 0);
                ring.PublishUsed();
                InflightDeviceRing.FinishPublish(ring);
                Assert.True(driver.TryTakeUsed(out var used));
                Assert.Equal(id, used.Id);
            });

    private static FileDescriptor Unsealed(ulong bytes)
    {
        var fd = new FileDescriptor(LibC.MemfdCreate("unsealed", LibC.MFD_CLOEXEC));
        Assert.False(fd.IsInvalid);
        Assert.Equal(0, LibC.Ftruncate(fd, (long)bytes));
        return fd;
    }
}
