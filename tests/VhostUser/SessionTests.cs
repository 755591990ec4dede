using System.Buffers.Binary;
using Rings.Chains;
using Rings.Linux.Device;
using Rings.Linux.Plumbing;
using Rings.Linux.VhostUser;

namespace Rings.Tests.VhostUser;

public class SessionTests
{
    [Fact]
    public void OfferListsProtocolFeaturesAndPackedUnlessLeftOut()
    {
        using var h = new SessionHarness();
        var features = (VirtioFeatures)h.Ok(VhostUserMessage.Empty(VhostUserRequest.GetFeatures))!.Value.Value;
        Assert.Equal(VhostUserBackendOptions.DefaultNetFeatures | VhostUserConstants.ProtocolFeaturesBit, features);
        var protocol = (VhostUserProtocolFeatures)h.Ok(VhostUserMessage.Empty(VhostUserRequest.GetProtocolFeatures))!.Value.Value;
        Assert.True(protocol.HasFlag(VhostUserProtocolFeatures.Multiqueue));
        Assert.True(protocol.HasFlag(VhostUserProtocolFeatures.ReplyAck));
        Assert.True(protocol.HasFlag(VhostUserProtocolFeatures.Status));
        Assert.True(protocol.HasFlag(VhostUserProtocolFeatures.ConfigureMemSlots));
        Assert.Equal(1UL, h.Ok(VhostUserMessage.Empty(VhostUserRequest.GetQueueNum))!.Value.Value);

        Assert.NotEqual(VirtioFeatures.None, features & VirtioFeatures.RingPacked);
        using var withoutPacked = new SessionHarness(new VhostUserBackendOptions { DeviceFeatures = VhostUserBackendOptions.DefaultNetFeatures & ~VirtioFeatures.RingPacked });
        var splitOnly = (VirtioFeatures)withoutPacked.Ok(VhostUserMessage.Empty(VhostUserRequest.GetFeatures))!.Value.Value;
        Assert.Equal(VirtioFeatures.None, splitOnly & VirtioFeatures.RingPacked);
    }

    [Fact]
    public void FullSetupStartsBothRingsAndBuffersFlowThroughThem()
    {
        using var h = new SessionHarness();
        var features = h.Negotiate();
        h.SendMemTable();
        var rx = h.DriverRing(0, 64, features);
        var tx = h.DriverRing(1, 64, features);
        h.SetupRing(0, 64);
        h.SetupRing(1, 64);
        Assert.Equal(["start 0", "enable 0 True", "start 1", "enable 1 True"], h.Events);
        Assert.True(h.Running[0].Enabled);
        Assert.Same(h.Running[1].Kick, h.Running[1].Kick);
        Assert.NotNull(h.Running[1].Kick);
        Assert.NotNull(h.Running[1].Call);

        // Driver transmits through ring 1 (guest-physical addresses); device reads it through the session's maps.
        var frame = Enumerable.Range(0, 100).Select(i => (byte)i).ToArray();
        var txAddress = h.BufferAddress(0);
        frame.CopyTo(h.Buffer(txAddress, frame.Length));
        Assert.True(tx.TryAdd(new BufferSegment(txAddress, (uint)frame.Length), false, out var txId));
        tx.Publish();
        Assert.True(tx.KickNeeded());
        h.Kicks[1].Signal();

        var device = h.Running[1];
        Assert.True(device.Kick!.TryConsume(out _));
        Assert.True(device.Ring.TryPop(out var chain));
        var copy = new byte[chain.ReadableBytes];
        chain.CopyReadableTo(copy);
        Assert.Equal(frame, copy);
        device.Ring.PushUsed(chain.Token, 0);
        device.Ring.PublishUsed();
        Assert.True(device.Ring.CallNeeded());
        device.Call!.Signal();
        Assert.True(h.Calls[1].TryConsume(out _));
        Assert.True(tx.TryTakeUsed(out var used));
        Assert.Equal(txId, used.Id);

        // Device receives into ring 0.
        var rxAddress = h.BufferAddress(1);
        Assert.True(rx.TryAdd(new BufferSegment(rxAddress, 2048), true, out var rxId));
        rx.Publish();
        Assert.True(h.Running[0].Ring.TryPop(out var rxChain));
        Assert.Equal(100, rxChain.CopyToWritable(frame));
        h.Running[0].Ring.PushUsed(rxChain.Token, 100);
        h.Running[0].Ring.PublishUsed();
        Assert.True(rx.TryTakeUsed(out var got));
        Assert.Equal((rxId, 100u), (got.Id, got.Length));
        Assert.Equal(frame, h.Buffer(rxAddress, 100).ToArray());
    }

    [Theory]
    [InlineData("num base addr kick mem")]
    [InlineData("mem kick addr base num")]
    [InlineData("base mem num kick addr")]
    [InlineData("kick num mem addr base")]
    public void ARingStartsOnlyOnceItHasSizeAddressesKickBaseAndMemory(string order)
    {
        using var h = new SessionHarness();
        h.Negotiate();
        var steps = order.Split(' ');
        for (var i = 0; i < steps.Length; i++)
        {
            Assert.Empty(h.Events);
            switch (steps[i])
            {
                case "num": h.Ok(VhostUserMessage.WithState(VhostUserRequest.SetVringNum, 0, 32)); break;
                case "base": h.Ok(VhostUserMessage.WithState(VhostUserRequest.SetVringBase, 0, 0)); break;

                // Before the memory table the address cannot be checked yet; it is at start.
                case "addr": h.Ok(SessionHarness.Address(0, h.UserAreas(0, 32))); break;
                case "kick": h.Ok(VhostUserMessage.WithFile(VhostUserRequest.SetVringKick, 0, true), h.Kicks[0].Handle); break;
                case "mem": h.SendMemTable(); break;
            }
        }

        Assert.Equal(["start 0"], h.Events);
        Assert.False(h.Running[0].Enabled); // PROTOCOL_FEATURES negotiated: rings start disabled
        h.Ok(VhostUserMessage.WithState(VhostUserRequest.SetVringEnable, 0, 1));
        Assert.Equal(["start 0", "enable 0 True"], h.Events);
        Assert.True(h.Running[0].Enabled);
    }

    [Fact]
    public void WithoutProtocolFeaturesRingsStartEnabledAndKickCanBePolled()
    {
        using var h = new SessionHarness();
        h.Ok(VhostUserMessage.WithU64(VhostUserRequest.SetFeatures, (ulong)VirtioFeatures.Version1));
        h.SendMemTable();
        h.Ok(VhostUserMessage.WithState(VhostUserRequest.SetVringNum, 0, 16));
        h.Ok(VhostUserMessage.WithState(VhostUserRequest.SetVringBase, 0, 0));
        h.Ok(SessionHarness.Address(0, h.UserAreas(0, 16)));
        h.Ok(VhostUserMessage.WithFile(VhostUserRequest.SetVringKick, 0, hasFd: false));
        Assert.True(h.Running[0].Enabled);
        Assert.Null(h.Running[0].Kick);
        Assert.Null(h.Running[0].Call);
    }

    [Fact]
    public void GetVringBaseStopsTheRingAndARestartResumesFromIt()
    {
        using var h = new SessionHarness();
        var features = h.Negotiate(features: VirtioFeatures.Version1);
        h.SendMemTable();
        var tx = h.DriverRing(1, 16, features);
        h.SetupRing(1, 16);
        for (var round = 0; round < 3; round++)
        {
            for (var i = 0; i < 5; i++)
            {
                Assert.True(tx.TryAdd(new BufferSegment(h.BufferAddress(i), 64), false, out _));
            }

            tx.Publish();
            var ring = h.Running[1].Ring;
            for (var i = 0; i < 5; i++)
            {
                Assert.True(ring.TryPop(out var c));
                ring.PushUsed(c.Token, 0);
            }

            ring.PublishUsed();
            while (tx.TryTakeUsed(out _))
            {
            }

            var reply = h.Ok(VhostUserMessage.WithState(VhostUserRequest.GetVringBase, 1, 0))!.Value;
            Assert.Equal(new VringState(1, (uint)(5 * (round + 1))), reply.State);
            Assert.Empty(h.Running);
            Assert.Equal("stop 1", h.Events[^1]);

            // Restart: QEMU and DPDK send NUM, BASE, ADDR, KICK again.
            h.SetupRing(1, 16, reply.State.Num, enable: false);
            Assert.Equal(reply.State.Num, h.Running[1].Ring.Position.AvailIndex);
        }
    }

    [Fact]
    public void ChangingTheCallOfARunningRingPausesAndResumesTheSameRing()
    {
        using var h = new SessionHarness();
        h.Negotiate();
        h.SendMemTable();
        h.SetupRing(0, 8);
        var before = h.Running[0];
        using var newCall = EventFd.Create();
        h.Ok(VhostUserMessage.WithFile(VhostUserRequest.SetVringCall, 0, true), newCall.Handle);
        Assert.Equal(["start 0", "enable 0 True", "stop 0", "start 0"], h.Events);
        Assert.Same(before.Ring, h.Running[0].Ring);
        Assert.NotSame(before.Call, h.Running[0].Call);
        Assert.True(before.Call!.Handle.IsClosed);
        h.Running[0].Call!.Signal();
        Assert.True(newCall.TryConsume(out _));
    }

    [Fact]
    public void ANewMemoryTableRebuildsRunningRingsAtTheirPosition()
    {
        using var h = new SessionHarness();
        var features = h.Negotiate(features: VirtioFeatures.Version1);
        h.SendMemTable();
        var tx = h.DriverRing(1, 8, features);
        h.SetupRing(1, 8);
        Assert.True(tx.TryAdd(new BufferSegment(h.BufferAddress(0), 10), false, out _));
        Assert.True(tx.TryAdd(new BufferSegment(h.BufferAddress(1), 10), false, out _));
        tx.Publish();
        Assert.True(h.Running[1].Ring.TryPop(out _));
        var oldRing = h.Running[1].Ring;

        // The same memory sent again (as a hot-plug would): new mappings, same positions.
        h.SendMemTable();
        Assert.Equal(["start 1", "enable 1 True", "stop 1", "start 1"], h.Events);
        Assert.NotSame(oldRing, h.Running[1].Ring);
        Assert.Equal(1, h.Running[1].Ring.Position.AvailIndex);
        Assert.True(h.Running[1].Ring.TryPop(out var second));
        Assert.Equal(10UL, second.ReadableBytes);
    }

    [Fact]
    public void MemorySlotsAddAndRemoveRegions()
    {
        using var h = new SessionHarness();
        h.Negotiate();
        Assert.Equal(32UL, h.Ok(VhostUserMessage.Empty(VhostUserRequest.GetMaxMemSlots))!.Value.Value);
        using var second = SharedMemory.Create(65536);
        var secondRegion = new MemoryRegionDescription(0x9000_0000, 65536, (ulong)second.HostAddress, 0);
        h.Ok(VhostUserMessage.WithRegion(VhostUserRequest.AddMemReg, h.Region), h.Memory.Handle!);
        h.Ok(VhostUserMessage.WithRegion(VhostUserRequest.AddMemReg, secondRegion), second.Handle!);
        Assert.Equal(2, h.Session.Memory!.Regions.Count);
        Assert.True(h.Session.Memory.Physical.TryTranslate(0x9000_0000 + 100, 8, out _));
        Assert.True(h.Session.Memory.User.TryTranslate(h.UserBase + 100, 8, out _));

        h.SetupRing(0, 8);
        h.Ok(VhostUserMessage.WithRegion(VhostUserRequest.RemMemReg, secondRegion));
        Assert.Single(h.Session.Memory!.Regions);
        Assert.False(h.Session.Memory.Physical.TryTranslate(0x9000_0000 + 100, 8, out _));
        Assert.True(h.Running.ContainsKey(0));

        // Removing what is not there is an error (NACK).
        var outcome = h.Send(VhostUserMessage.WithRegion(VhostUserRequest.RemMemReg, secondRegion, needReply: true));
        AssertNack(outcome);
    }

    [Fact]
    public void ARegionAddedAgainIsAckedAndRemovedAsOftenAsAdded()
    {
        // QEMU 7.2 with several queue pairs has a vhost device per pair, and each adds every region.
        using var h = new SessionHarness();
        h.Negotiate();
        h.Ok(VhostUserMessage.WithRegion(VhostUserRequest.AddMemReg, h.Region), h.Memory.Handle!);
        h.SetupRing(0, 8);
        var mapped = h.Session.Memory;
        h.Ok(VhostUserMessage.WithRegion(VhostUserRequest.AddMemReg, h.Region, needReply: true), h.Memory.Handle!);
        Assert.Same(mapped, h.Session.Memory);
        Assert.Single(h.Session.Memory!.Regions);

        // A region overlapping it that is not the same one is still refused.
        var overlapping = new MemoryRegionDescription(h.Region.GuestPhysicalAddress + 4096, 4096, h.Region.UserAddress + 4096, 4096);
        AssertNack(h.Send(VhostUserMessage.WithRegion(VhostUserRequest.AddMemReg, overlapping, needReply: true), h.Memory.Handle!));

        // Two adds, two removes: the first leaves it mapped and the ring running, the second unmaps it.
        h.Ok(VhostUserMessage.WithRegion(VhostUserRequest.RemMemReg, h.Region, needReply: true));
        Assert.Same(mapped, h.Session.Memory);
        Assert.True(h.Running.ContainsKey(0));
        h.Ok(VhostUserMessage.WithRegion(VhostUserRequest.RemMemReg, h.Region, needReply: true));
        Assert.Null(h.Session.Memory);
        AssertNack(h.Send(VhostUserMessage.WithRegion(VhostUserRequest.RemMemReg, h.Region, needReply: true)));
    }

    [Fact]
    public void StatusIsKeptAndABrokenRingAsksForAReset()
    {
        using var h = new SessionHarness();
        var features = h.Negotiate(features: VirtioFeatures.Version1);
        h.SendMemTable();
        h.Ok(VhostUserMessage.WithU64(VhostUserRequest.SetStatus, 0x0B));
        Assert.Equal(0x0BUL, h.Ok(VhostUserMessage.Empty(VhostUserRequest.GetStatus))!.Value.Value);
        var tx = h.DriverRing(1, 8, features);
        h.SetupRing(1, 8);

        // A hostile driver publishes a head index past the ring.
        var avail = h.Memory.Slice(SessionHarness.RingOffset(1) + (ulong)(h.GuestAreas(1, 8).DriverArea - h.GuestAreas(1, 8).DescriptorArea), 8);
        BinaryPrimitives.WriteUInt16LittleEndian(avail[4..], 200);
        BinaryPrimitives.WriteUInt16LittleEndian(avail[2..], 1);
        Assert.False(h.Running[1].Ring.TryPop(out _));
        Assert.True(h.Running[1].Ring.IsBroken);
        Assert.Equal(0x0BUL | DeviceStatus.NeedsReset, h.Ok(VhostUserMessage.Empty(VhostUserRequest.GetStatus))!.Value.Value);

        // Status 0 resets: rings stop.
        h.Ok(VhostUserMessage.WithU64(VhostUserRequest.SetStatus, 0));
        Assert.Empty(h.Running);
    }

    [Fact]
    public void ResetDeviceStopsRingsAndForgetsThem()
    {
        using var h = new SessionHarness();
        h.Negotiate();
        h.SendMemTable();
        h.SetupRing(0, 8);
        h.SetupRing(1, 8);
        h.Ok(VhostUserMessage.Empty(VhostUserRequest.ResetDevice));
        Assert.Empty(h.Running);
        Assert.Equal(VirtioFeatures.None, h.Session.Features);

        // A kick alone does not restart a reset ring.
        h.Ok(VhostUserMessage.WithFile(VhostUserRequest.SetVringKick, 0, true), h.Kicks[0].Handle);
        Assert.Empty(h.Running);
    }

    [Fact]
    public void PackedBasesCarryWrapCountersToTheRingFactory()
    {
        DeviceRingSetup? seen = null;
        var options = new VhostUserBackendOptions
        {
            RingFactory = (in DeviceRingSetup s) =>
            {
                seen = s;
                return RingFormat.DeviceFactory(s);
            },
        };
        using var h = new SessionHarness(options);
        var features = h.Negotiate(features: VirtioFeatures.Version1 | VirtioFeatures.RingPacked);
        Assert.NotEqual(VirtioFeatures.None, features & VirtioFeatures.RingPacked);
        h.SendMemTable();

        // Packed sizes need not be powers of two; DPDK sends only the avail half of the base.
        h.SetupRing(0, 100, baseValue: 0x8000, format: RingFormat.Packed);
        Assert.Equal(new RingPosition(0, true, 0, true), seen!.Value.Position);
        Assert.Equal(RingFormat.Packed, seen.Value.Format);
        Assert.Equal(100, seen.Value.Size);
        Assert.Equal(h.UserAreas(0, 100, RingFormat.Packed), seen.Value.Areas);
        Assert.Equal(RingFormat.Packed, h.Running[0].Format);

        // QEMU sends both halves: avail 5 wrap 0 (second lap), used 98 wrap 1 (first lap): 7 in flight.
        var reply = h.Ok(VhostUserMessage.WithState(VhostUserRequest.GetVringBase, 0, 0))!.Value;
        Assert.Equal(0x8000u, reply.State.Num & 0xFFFF);
        h.SetupRing(0, 100, baseValue: 5 | (98u << 16) | (1u << 31), format: RingFormat.Packed);
        Assert.Equal(new RingPosition(5, false, 98, true), seen.Value.Position);

        // A base past the ring is refused.
        h.Ok(VhostUserMessage.WithState(VhostUserRequest.GetVringBase, 0, 0));
        h.Ok(VhostUserMessage.WithState(VhostUserRequest.SetVringBase, 0, 100 | 0x8000));
        AssertNack(h.Send(VhostUserMessage.WithFile(VhostUserRequest.SetVringKick, 0, true, needReply: true), h.Kicks[0].Handle));
    }

    [Fact]
    public void DisposeStopsEveryRing()
    {
        var h = new SessionHarness();
        h.Negotiate();
        h.SendMemTable();
        h.SetupRing(0, 8);
        h.SetupRing(1, 8);
        var queues = h.Running.Values.ToArray();
        h.Dispose();
        Assert.Empty(h.Running);
        Assert.All(queues, q => Assert.True(q.Kick!.Handle.IsClosed && q.Call!.Handle.IsClosed));
    }

    public static TheoryData<string> BadMessages => new(BadMessageCatalog.Names);

    [Theory]
    [MemberData(nameof(BadMessages))]
    public void EveryBadMessageIsNackedWithReplyAckAndTheSessionGoesOn(string name)
    {
        using var h = new SessionHarness();
        var features = h.Negotiate(replyAck: true, features: VirtioFeatures.Version1);
        h.SendMemTable();
        var outcome = BadMessageCatalog.Send(h, name, needReply: true);
        AssertNack(outcome);
        Assert.Equal(BadMessageCatalog.Code(name), outcome.Error.Code);
        Assert.Contains(name.Split(':')[0], outcome.Error.Detail!, StringComparison.OrdinalIgnoreCase);

        // The session still works: a ring can be set up and used.
        var tx = h.DriverRing(1, 8, features);
        h.SetupRing(1, 8);
        Assert.True(tx.TryAdd(new BufferSegment(h.BufferAddress(0), 10), false, out _));
        tx.Publish();
        Assert.True(h.Running[1].Ring.TryPop(out _));
    }

    [Theory]
    [MemberData(nameof(BadMessages))]
    public void EveryBadMessageClosesTheConnectionWithoutReplyAck(string name)
    {
        using var h = new SessionHarness();
        h.Negotiate(replyAck: false, features: VirtioFeatures.Version1);
        h.SendMemTable();
        var outcome = BadMessageCatalog.Send(h, name, needReply: false);
        Assert.True(outcome.Close);
        Assert.Null(outcome.Reply);
        Assert.Equal(BadMessageCatalog.Code(name), outcome.Error.Code);
        Assert.False(string.IsNullOrEmpty(outcome.Error.Detail));
    }

    private static void AssertNack(HarnessOutcome outcome)
    {
        Assert.False(outcome.Close, outcome.Error.ToString());
        Assert.True(outcome.Error.IsError);
        Assert.NotNull(outcome.Reply);

        // Decoded by hand: the NACK of an unknown request names a request no codec table knows.
        Assert.Equal(20, outcome.Reply.Length);
        Assert.Equal(VhostUserConstants.Version | VhostUserConstants.ReplyFlag, BinaryPrimitives.ReadUInt32LittleEndian(outcome.Reply.AsSpan(4)));
        Assert.Equal(8u, BinaryPrimitives.ReadUInt32LittleEndian(outcome.Reply.AsSpan(8)));
        Assert.NotEqual(0UL, BinaryPrimitives.ReadUInt64LittleEndian(outcome.Reply.AsSpan(12)));
    }
}

/// <summary>
/// One of each kind of bad message, keyed by a name whose first word appears in the error's
/// detail, with the code the back-end gives it.
/// </summary>
internal static class BadMessageCatalog
{
    private static readonly (string Name, VhostUserErrorCode Code)[] Entries =
    [
        ("unknown: request 6 (log base)", VhostUserErrorCode.UnknownRequest),
        ("unknown: request 99", VhostUserErrorCode.UnknownRequest),
        ("payload: SET_FEATURES with 4 bytes", VhostUserErrorCode.BadPayloadSize),
        ("payload: SET_OWNER with a payload", VhostUserErrorCode.BadPayloadSize),
        ("regions: 9 regions", VhostUserErrorCode.TooManyRegions),
        ("overlap: two overlapping regions", VhostUserErrorCode.BadRegion),
        ("empty: no regions", VhostUserErrorCode.BadRegion),
        ("size 0: empty region", VhostUserErrorCode.BadRegion),
        ("end of a: region past the end of its file", VhostUserErrorCode.MapFailed),
        ("outside every region: ring address", VhostUserErrorCode.BadRingAddress),
        ("out of range: vring index 2", VhostUserErrorCode.RingIndexOutOfRange),
        ("out of range: kick index 200", VhostUserErrorCode.RingIndexOutOfRange),
        ("file descriptors: kick without fd", VhostUserErrorCode.MissingDescriptor),
        ("file descriptors: owner with fd", VhostUserErrorCode.UnexpectedDescriptor),
        ("not offered: feature bit 63", VhostUserErrorCode.NotOffered),
        ("not offered: protocol feature CROSS_ENDIAN", VhostUserErrorCode.NotOffered),
        ("queue size: 0", VhostUserErrorCode.QueueSizeInvalid),
        ("power of two: split size 3", VhostUserErrorCode.QueueSizeInvalid),
        ("queue size: 65536", VhostUserErrorCode.QueueSizeInvalid),
        ("enable: value 2", VhostUserErrorCode.ValueOutOfRange),
        ("status: 0x100", VhostUserErrorCode.ValueOutOfRange),
        ("16 bits: split base 0x10000", VhostUserErrorCode.RingBaseInvalid),
        ("flags: vring address flag 2", VhostUserErrorCode.ReservedBitsSet),
        ("reserved: kick bits above 8", VhostUserErrorCode.ReservedBitsSet),
        ("negotiated: backend request fd", VhostUserErrorCode.NotNegotiated),
    ];

    public static readonly string[] Names = Entries.Select(e => e.Name).ToArray();

    public static VhostUserErrorCode Code(string name) => Entries[Array.IndexOf(Names, name)].Code;

    public static HarnessOutcome Send(SessionHarness h, string name, bool needReply)
    {
        var r = needReply ? VhostUserConstants.NeedReplyFlag : 0;
        VhostUserMessage M(VhostUserMessage m) => m with { Flags = m.Flags | r };
        byte[] Raw(uint request, params byte[] payload)
        {
            var b = new byte[12 + payload.Length];
            BinaryPrimitives.WriteUInt32LittleEndian(b, request);
            BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(4), 1 | r);
            BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(8), (uint)payload.Length);
            payload.CopyTo(b, 12);
            return b;
        }

        var region = h.Region;
        switch (Array.IndexOf(Names, name))
        {
            case 0: return h.SendRaw(Raw(6, new byte[8]));
            case 1: return h.SendRaw(Raw(99));
            case 2: return h.SendRaw(Raw(2, 1, 0, 0, 0));
            case 3: return h.SendRaw(Raw(3, new byte[8]));
            case 4:
                {
                    var b = Raw(5, new byte[8 + (9 * 32)]);
                    b[12] = 9;
                    return h.SendRaw(b, Enumerable.Repeat(h.Memory.Handle!, 9).ToArray());
                }

            case 5:
                {
                    var overlapping = region with { GuestPhysicalAddress = region.GuestPhysicalAddress + 4096, UserAddress = region.UserAddress + 0x1000_0000 };
                    return h.Send(M(VhostUserMessage.WithMemTable([region, overlapping])), h.Memory.Handle!, h.Memory.Handle!);
                }

            case 6: return h.Send(M(VhostUserMessage.WithMemTable([])));
            case 7: return h.Send(M(VhostUserMessage.WithMemTable([region with { Size = 0 }])), h.Memory.Handle!);
            case 8: return h.Send(M(VhostUserMessage.WithMemTable([region with { MmapOffset = 4096 }])), h.Memory.Handle!);
            case 9:
                {
                    h.Ok(VhostUserMessage.WithState(VhostUserRequest.SetVringNum, 0, 8));
                    var a = h.UserAreas(0, 8);
                    return h.Send(M(SessionHarness.Address(0, a with { DeviceArea = h.UserBase + h.Memory.Length - 8 })));
                }

            case 10: return h.Send(M(VhostUserMessage.WithState(VhostUserRequest.SetVringNum, 2, 8)));
            case 11: return h.Send(M(VhostUserMessage.WithFile(VhostUserRequest.SetVringKick, 200, true)), h.Kicks[0].Handle);
            case 12: return h.Send(M(VhostUserMessage.WithFile(VhostUserRequest.SetVringKick, 0, true)));
            case 13: return h.Send(M(VhostUserMessage.Empty(VhostUserRequest.SetOwner)), h.Kicks[0].Handle);
            case 14: return h.Send(M(VhostUserMessage.WithU64(VhostUserRequest.SetFeatures, 1UL << 63)));
            case 15: return h.Send(M(VhostUserMessage.WithU64(VhostUserRequest.SetProtocolFeatures, 1UL << 6)));
            case 16: return h.Send(M(VhostUserMessage.WithState(VhostUserRequest.SetVringNum, 0, 0)));
            case 17: return h.Send(M(VhostUserMessage.WithState(VhostUserRequest.SetVringNum, 0, 3)));
            case 18: return h.Send(M(VhostUserMessage.WithState(VhostUserRequest.SetVringNum, 0, 65536)));
            case 19: return h.Send(M(VhostUserMessage.WithState(VhostUserRequest.SetVringEnable, 0, 2)));
            case 20: return h.Send(M(VhostUserMessage.WithU64(VhostUserRequest.SetStatus, 0x100)));
            case 21: return h.Send(M(VhostUserMessage.WithState(VhostUserRequest.SetVringBase, 0, 0x10000)));
            case 22: return h.Send(M(VhostUserMessage.WithAddress(new VringAddress(0, 2, 0, 0, 0, 0))));
            case 23: return h.Send(M(VhostUserMessage.WithU64(VhostUserRequest.SetVringKick, 0x1100)));
            case 24: return h.Send(M(VhostUserMessage.Empty(VhostUserRequest.SetBackendReqFd)), h.Kicks[0].Handle);
            default: throw new ArgumentException(name);
        }
    }
}
