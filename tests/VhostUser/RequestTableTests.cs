using System.Buffers.Binary;
using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using Rings.Linux.Device;
using Rings.Linux.Plumbing;
using Rings.Linux.VhostUser;

namespace Rings.Tests.VhostUser;

/// <summary>
/// The request table as the one source of truth: every row round-trips through the codec, every
/// descriptor rule refuses wrong counts with its code (closing what came), and every reply follows
/// the row's reply rule.
/// </summary>
public class RequestTableTests
{
    /// <summary>Requests the protocol defines that Rings does not serve (no row: decoded as unknown).</summary>
    private static readonly VhostUserRequest[] Unsupported =
        [VhostUserRequest.SetLogBase, VhostUserRequest.SetLogFd, VhostUserRequest.SendRarp, VhostUserRequest.NetSetMtu];

    public static TheoryData<VhostUserRequest> Requests => new(VhostUserRequests.All.Select(r => r.Id));

    [Fact]
    public void TheTableHoldsEachSupportedRequestOnceAndNothingElse()
    {
        var ids = VhostUserRequests.All.Select(r => r.Id).ToArray();
        Assert.Equal(ids.Distinct().Order(), ids);
        Assert.All(VhostUserRequests.All, r => Assert.Same(r, VhostUserRequests.Find(r.Id)));

        // Every defined request is either in the table or one of the few Rings does not serve.
        var defined = Enum.GetValues<VhostUserRequest>().Where(r => r != VhostUserRequest.None);
        Assert.Equal(defined.Except(Unsupported).Order(), ids);

        // What the table does not hold, the codec calls unknown; what it holds, it decodes.
        for (uint code = 0; code < 64; code++)
        {
            var request = (VhostUserRequest)code;
            var error = VhostUserCodec.DecodeRequest(Header(code, VhostUserConstants.Version, 0), 0, out _);
            Assert.Equal(VhostUserRequests.Find(request) is null, error.Code == VhostUserErrorCode.UnknownRequest);
        }
    }

    [Fact]
    public void TheRowsSayWhatTheProtocolSays()
    {
        // Spot checks against vhost-user.rst, one per column.
        var kick = VhostUserRequests.Find(VhostUserRequest.SetVringKick)!;
        Assert.Equal((VhostUserPayload.U64, VhostUserDescriptorRule.OneUnlessNoFdBit, VhostUserVringRule.Any, VhostUserReplyRule.AckIfAsked), (kick.Payload, kick.Descriptors, kick.Vring, kick.Reply));
        var getBase = VhostUserRequests.Find(VhostUserRequest.GetVringBase)!;
        Assert.Equal((VhostUserPayload.VringState, VhostUserReplyRule.Always, VhostUserPayload.VringState), (getBase.Payload, getBase.Reply, getBase.ReplyPayload));
        Assert.Equal(VhostUserVringRule.Stopped, VhostUserRequests.Find(VhostUserRequest.SetVringNum)!.Vring);
        Assert.Equal(VhostUserDescriptorRule.OnePerRegion, VhostUserRequests.Find(VhostUserRequest.SetMemTable)!.Descriptors);
        Assert.Equal(VhostUserDescriptorRule.Optional, VhostUserRequests.Find(VhostUserRequest.RemMemReg)!.Descriptors);

        // Every GET_* always replies, nothing else does; acks are u64.
        Assert.All(VhostUserRequests.All, r => Assert.Equal(r.Id.ToString().StartsWith("Get", StringComparison.Ordinal), r.Reply == VhostUserReplyRule.Always));
        Assert.All(VhostUserRequests.All.Where(r => r.Reply == VhostUserReplyRule.AckIfAsked), r => Assert.Equal(VhostUserPayload.U64, r.ReplyPayload));
    }

    [Property(MaxTest = 200)]
    public Property EveryRequestInTheTableRoundTripsThroughTheCodec() =>
        Prop.ForAll(
            (from a in ArbMap.Default.GeneratorFor<ulong>()
             from b in ArbMap.Default.GeneratorFor<uint>()
             from c in ArbMap.Default.GeneratorFor<uint>()
             from regions in Gen.Choose(0, VhostUserConstants.MaxMemTableRegions)
             from flags in Gen.Choose(0, 3)
             select (a, b, c, regions, flags)).ToArbitrary(),
            t =>
            {
                foreach (var row in VhostUserRequests.All)
                {
                    var needReply = (t.flags & 1) != 0;
                    var hasFd = (t.flags & 2) != 0;
                    var (message, fds) = Example(row, t.a, t.b, t.c, t.regions, needReply, hasFd);
                    var bytes = VhostUserCodec.Encode(message);
                    var error = VhostUserCodec.DecodeRequest(bytes, fds, out var decoded);
                    Assert.False(error.IsError, $"{row.Id}: {error}");
                    Assert.Equal(row.Payload, decoded.Payload);
                    if (row.Payload == VhostUserPayload.MemoryTable)
                    {
                        Assert.Equal(message.Regions, decoded.Regions);
                        Assert.Equal(message with { Regions = null }, decoded with { Regions = null });
                    }
                    else
                    {
                        Assert.Equal(message, decoded);
                    }

                    Assert.Equal(bytes, VhostUserCodec.Encode(decoded));

                    // Its reply (the explicit body or the ack) round-trips too.
                    var reply = row.ReplyPayload switch
                    {
                        VhostUserPayload.VringState => VhostUserMessage.ReplyState(row.Id, t.b, t.c),
                        VhostUserPayload.Inflight => VhostUserMessage.ReplyInflight(row.Id, new InflightDescription(t.a, t.c, (ushort)t.b, (ushort)t.c)),
                        VhostUserPayload.Config => VhostUserMessage.ReplyConfig(message.Config),
                        _ => VhostUserMessage.ReplyU64(row.Id, t.a),
                    };
                    Assert.False(VhostUserCodec.DecodeReply(VhostUserCodec.Encode(reply), row.ReplyDescriptors, out var back).IsError);
                    Assert.Equal(reply, back);

                    // A reply with other descriptors than its row says is refused.
                    Assert.True(VhostUserCodec.DecodeReply(VhostUserCodec.Encode(reply), row.ReplyDescriptors + 1, out _).IsError);
                }
            });

    [Theory]
    [MemberData(nameof(Requests))]
    public void EachDescriptorRuleRefusesWrongCountsWithItsCodeAndClosesTheDescriptors(VhostUserRequest request)
    {
        var row = VhostUserRequests.Find(request)!;
        foreach (var hasFd in new[] { true, false })
        {
            var (message, valid) = Example(row, 0x1234, 1, 2, regions: 2, needReply: true, hasFd);
            var wrong = new List<(int Count, VhostUserErrorCode Code)> { (valid + 1, VhostUserErrorCode.UnexpectedDescriptor), (valid + 3, VhostUserErrorCode.UnexpectedDescriptor) };
            if (row.Descriptors == VhostUserDescriptorRule.Optional)
            {
                wrong[0] = (2, VhostUserErrorCode.UnexpectedDescriptor);
            }

            if (valid > 0 && row.Descriptors != VhostUserDescriptorRule.Optional)
            {
                wrong.Add((valid - 1, VhostUserErrorCode.MissingDescriptor));
                wrong.Add((0, VhostUserErrorCode.MissingDescriptor));
            }

            foreach (var (count, code) in wrong)
            {
                // The codec names the fault.
                var bytes = VhostUserCodec.Encode(message);
                var decoded = VhostUserCodec.DecodeRequest(bytes, count, out _);
                Assert.Equal((code, request), (decoded.Code, decoded.Request));

                // The session refuses it, raw or decoded, and closes every descriptor that came;
                // with REPLY_ACK asked for, the refusal is a NACK and the session goes on.
                foreach (var raw in new[] { true, false })
                {
                    using var h = new SessionHarness();
                    h.Negotiate(replyAck: true);
                    var doorbells = Enumerable.Range(0, count).Select(_ => EventFd.Create()).ToArray();
                    var fds = doorbells.Select(d => d.Handle).ToList();
                    var given = fds.ToArray();
                    var outcome = raw ? h.Session.Handle(bytes, fds) : h.Session.Handle(message, fds);
                    Assert.Equal((code, request), (outcome.Error.Code, outcome.Error.Request));
                    Assert.All(given, fd => Assert.True(fd.IsClosed));
                    AssertReplyRule(row, outcome, needReply: true, replyAck: true);
                }
            }
        }
    }

    [Theory]
    [MemberData(nameof(Requests))]
    public void RepliesFollowTheReplyRule(VhostUserRequest request)
    {
        var row = VhostUserRequests.Find(request)!;
        foreach (var replyAck in new[] { true, false })
        {
            foreach (var needReply in new[] { true, false })
            {
                // A request that succeeds: its reply is due exactly when the row says so.
                using (var h = Prepared(row, replyAck, out var fds))
                {
                    var message = GoodRequest(h, row, needReply);
                    var outcome = h.Session.Handle(VhostUserCodec.Encode(message), fds);
                    Assert.True(outcome.Succeeded, $"{row.Id}: {outcome.Error}");
                    AssertReplyRule(row, outcome, needReply, replyAck);
                    if (outcome.Reply is { } reply)
                    {
                        var bytes = VhostUserCodec.Encode(reply);
                        Assert.Equal(row.ReplyDescriptors > 0, outcome.ReplyDescriptor is not null);
                        Assert.False(VhostUserCodec.DecodeReply(bytes, row.ReplyDescriptors, out var decoded).IsError);
                        Assert.Equal((request, row.ReplyPayload), (decoded.Request, decoded.Payload));
                        if (row.Reply == VhostUserReplyRule.AckIfAsked)
                        {
                            Assert.Equal(0UL, decoded.Value);
                        }
                    }
                }

                // A request that fails (a descriptor too many): NACKed only where an ack was due, else the connection closes.
                using (var h = Prepared(row, replyAck, out var fds))
                {
                    var message = GoodRequest(h, row, needReply);
                    using var extra = EventFd.Create();
                    fds.Add(extra.Handle.Duplicate());
                    if (row.Descriptors == VhostUserDescriptorRule.Optional)
                    {
                        fds.Add(extra.Handle.Duplicate());
                    }

                    var outcome = h.Session.Handle(VhostUserCodec.Encode(message), fds);
                    Assert.Equal(VhostUserErrorCode.UnexpectedDescriptor, outcome.Error.Code);
                    AssertReplyRule(row, outcome, needReply, replyAck);
                }
            }
        }
    }

    [Fact]
    public void AnUnknownRequestIsNackedWhenItAsksForAReply()
    {
        using var h = new SessionHarness();
        h.Negotiate(replyAck: true);
        var outcome = h.Session.Handle(Header(99, VhostUserConstants.Version | VhostUserConstants.NeedReplyFlag, 0), []);
        Assert.Equal((VhostUserErrorCode.UnknownRequest, (VhostUserRequest)99), (outcome.Error.Code, outcome.Error.Request));
        Assert.False(outcome.Close);
        Assert.Equal(VhostUserMessage.ReplyU64((VhostUserRequest)99, 1), outcome.Reply);
        Assert.Contains("request 99: UnknownRequest", outcome.Error.ToString(), StringComparison.Ordinal);

        outcome = h.Session.Handle(Header(99, VhostUserConstants.Version, 0), []);
        Assert.True(outcome.Close);
        Assert.Null(outcome.Reply);
    }

    /// <summary>
    /// Success: a reply iff the row says one is due. Failure: a NACK iff the row is an ack row and
    /// the ack was due; otherwise no reply and the connection closes.
    /// </summary>
    private static void AssertReplyRule(VhostUserRequestInfo row, VhostUserOutcome outcome, bool needReply, bool replyAck)
    {
        var due = row.ReplyDue(needReply, replyAck);
        if (outcome.Succeeded)
        {
            Assert.False(outcome.Close);
            Assert.Equal(due, outcome.Reply is not null);
            return;
        }

        if (row.Id == VhostUserRequest.GetConfig)
        {
            // vhost-user.rst: a GET_CONFIG the back-end cannot serve is answered with an empty payload.
            Assert.False(outcome.Close);
            Assert.Equal(VhostUserMessage.ReplyConfig(null), outcome.Reply);
            return;
        }

        var nack = due && row.Reply == VhostUserReplyRule.AckIfAsked;
        Assert.Equal(!nack, outcome.Close);
        Assert.Equal(nack ? VhostUserMessage.ReplyU64(row.Id, 1) : (VhostUserMessage?)null, outcome.Reply);
    }

    /// <summary>A session negotiated (REPLY_ACK as asked, BACKEND_REQ offered) and readied for <paramref name="row"/>'s request.</summary>
    private static SessionHarness Prepared(VhostUserRequestInfo row, bool replyAck, out List<FileDescriptor> fds)
    {
        var h = new SessionHarness(new VhostUserBackendOptions { ProtocolFeatures = VhostUserBackendOptions.SupportedProtocolFeatures });
        h.Negotiate(replyAck);
        if (row.Id == VhostUserRequest.RemMemReg)
        {
            h.Ok(VhostUserMessage.WithRegion(VhostUserRequest.AddMemReg, h.Region), h.Memory.Handle!);
        }

        fds = row.Descriptors switch
        {
            VhostUserDescriptorRule.One or VhostUserDescriptorRule.OneUnlessNoFdBit => [EventFd.Create().Handle],
            VhostUserDescriptorRule.OnePerRegion => [h.Memory.Handle!.Duplicate()],
            _ => [],
        };
        if (row.Id == VhostUserRequest.AddMemReg)
        {
            fds[0].Dispose();
            fds[0] = h.Memory.Handle!.Duplicate();
        }

        if (row.Id == VhostUserRequest.SetInflightFd)
        {
            // A region this back-end made (GET_INFLIGHT_FD), handed back.
            h.Ok(VhostUserMessage.WithInflight(VhostUserRequest.GetInflightFd, new InflightDescription(0, 0, 2, 8)));
            fds[0].Dispose();
            fds[0] = h.Session.Inflight!.Handle!.Duplicate();
        }

        return h;
    }

    /// <summary>A request of <paramref name="row"/> that succeeds on a <see cref="Prepared"/> session.</summary>
    private static VhostUserMessage GoodRequest(SessionHarness h, VhostUserRequestInfo row, bool needReply)
    {
        var m = row.Id switch
        {
            VhostUserRequest.SetFeatures => VhostUserMessage.WithU64(row.Id, (ulong)h.Session.Features),
            VhostUserRequest.SetProtocolFeatures => VhostUserMessage.WithU64(row.Id, (ulong)h.Session.ProtocolFeatures),
            VhostUserRequest.SetMemTable => VhostUserMessage.WithMemTable([h.Region]),
            VhostUserRequest.SetVringNum => VhostUserMessage.WithState(row.Id, 0, 8),
            VhostUserRequest.SetVringAddr => SessionHarness.Address(0, h.UserAreas(0, 8)),
            VhostUserRequest.SetVringEnable => VhostUserMessage.WithState(row.Id, 0, 1),
            VhostUserRequest.SetStatus => VhostUserMessage.WithU64(row.Id, 0x0B),
            VhostUserRequest.AddMemReg or VhostUserRequest.RemMemReg => VhostUserMessage.WithRegion(row.Id, h.Region),
            VhostUserRequest.GetInflightFd => VhostUserMessage.WithInflight(row.Id, new InflightDescription(0, 0, 2, 8)),
            VhostUserRequest.SetInflightFd => VhostUserMessage.WithInflight(row.Id, h.Session.Inflight!.Description),
            VhostUserRequest.GetConfig => VhostUserMessage.WithConfig(row.Id, 0, new byte[6]),
            VhostUserRequest.SetConfig => VhostUserMessage.WithConfig(row.Id, 0, ConfigBytes(h, 0, 6)),
            _ => row.Payload switch
            {
                VhostUserPayload.VringState => VhostUserMessage.WithState(row.Id, 0, 0),
                VhostUserPayload.U64 => VhostUserMessage.WithFile(row.Id, 0, hasFd: true),
                _ => VhostUserMessage.Empty(row.Id),
            },
        };
        return needReply ? m with { Flags = m.Flags | VhostUserConstants.NeedReplyFlag } : m;
    }

    /// <summary>A well-formed request of <paramref name="row"/> and the number of descriptors it must come with.</summary>
    private static (VhostUserMessage Message, int Fds) Example(VhostUserRequestInfo row, ulong a, uint b, uint c, int regions, bool needReply, bool hasFd)
    {
        var region = new MemoryRegionDescription(a, b, a ^ c, c);
        var message = row.Payload switch
        {
            VhostUserPayload.None => VhostUserMessage.Empty(row.Id, needReply),
            VhostUserPayload.U64 when row.Descriptors == VhostUserDescriptorRule.OneUnlessNoFdBit => VhostUserMessage.WithFile(row.Id, b, hasFd, needReply),
            VhostUserPayload.U64 => VhostUserMessage.WithU64(row.Id, a, needReply),
            VhostUserPayload.VringState => VhostUserMessage.WithState(row.Id, b, c, needReply),
            VhostUserPayload.VringAddress => VhostUserMessage.WithAddress(new VringAddress(b, c & 1, a, a + b, a + c, a ^ b), needReply),
            VhostUserPayload.MemoryRegion => VhostUserMessage.WithRegion(row.Id, region, needReply),
            VhostUserPayload.Inflight => VhostUserMessage.WithInflight(row.Id, new InflightDescription(a, c, (ushort)b, (ushort)c), needReply),
            VhostUserPayload.Config => VhostUserMessage.WithConfig(row.Id, b, BitConverter.GetBytes(a)[..(int)(c % 9)], c & 1, needReply),
            _ => VhostUserMessage.WithMemTable(Enumerable.Range(0, regions).Select(i => region with { GuestPhysicalAddress = a + (ulong)i }).ToArray(), needReply),
        };
        var fds = row.Descriptors switch
        {
            VhostUserDescriptorRule.One => 1,
            VhostUserDescriptorRule.OnePerRegion => regions,
            VhostUserDescriptorRule.OneUnlessNoFdBit => hasFd ? 1 : 0,
            VhostUserDescriptorRule.Optional => hasFd ? 1 : 0,
            _ => 0,
        };
        return (message, fds);
    }

    private static byte[] ConfigBytes(SessionHarness h, uint offset, uint size)
    {
        Assert.Null(h.Options.NetConfig.TryRead(offset, size, out var bytes));
        return bytes;
    }

    private static byte[] Header(uint request, uint flags, uint size)
    {
        var b = new byte[12 + size];
        BinaryPrimitives.WriteUInt32LittleEndian(b, request);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(4), flags);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(8), size);
        return b;
    }
}
