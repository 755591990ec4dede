using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using Rings.Linux.Device;
using Rings.Linux.Plumbing;
using Rings.Linux.VhostUser;
using Rings.Tests.Linux;

namespace Rings.Tests.VhostUser;

/// <summary>
/// Random message sequences against the socket-free session: plausible messages with random
/// fields, real memory files and doorbells. Nothing throws, every reply decodes, the data path
/// of whatever ring starts survives hostile ring contents, and disposing releases every descriptor.
/// </summary>
[Collection(FdCountCollection.Name)]
public class RandomSequenceTests
{
    private const int Kinds = 22;

    [Property(MaxTest = 150)]
    public Property RandomSequencesNeverThrowAndLeakNothing() =>
        Prop.ForAll(
            Gen.ListOf(Step(), 80).ToArbitrary(),
            steps =>
            {
                var before = FdCount.Snapshot();
                using (var memory = SharedMemory.Create(256 << 10))
                using (var doorbell = EventFd.Create())
                {
                    var options = new VhostUserBackendOptions { MaxQueuePairs = 2 };
                    var session = new VhostUserSession(options);
                    var started = new List<VhostQueue>();
                    session.QueueStarted += (_, e) => started.Add(e.Queue);
                    session.QueueStopped += (_, e) => started.Remove(e.Queue);
                    var user = (ulong)memory.HostAddress;
                    var handedOver = new List<FileDescriptor>();
                    try
                    {
                        // A valid opening (REPLY_ACK on, memory mapped) so the random part reaches ring setup.
                        (int, ulong, uint, bool)[] opening = [(3, 1, 1, true), (1, 0, 1, true), (6, 0, 4, true)];
                        foreach (var (kind, a, b, needReply) in opening.Concat(steps))
                        {
                            var (message, fds) = Make(kind, a, b, needReply, memory, doorbell, user);
                            var given = fds.ToArray();
                            var outcome = session.Handle(VhostUserCodec.Encode(message), fds);

                            // Every descriptor handed over is closed now, but for the one a doorbell
                            // or back-end channel request keeps (closed when the session ends, below).
                            var open = given.Where(f => !f.IsClosed).ToArray();
                            Assert.True(open.Length <= Keeps(message.Request), $"{message.Request} ({outcome.Error}) left {open.Length} of {given.Length} descriptors open");
                            handedOver.AddRange(given);
                            if (outcome.Reply is { } replyMessage)
                            {
                                var reply = VhostUserCodec.Encode(replyMessage);
                                Assert.True(VhostUserCodec.TryReadHeader(reply, out var request, out var flags, out var size));
                                Assert.Equal(message.Request, request);
                                Assert.Equal(VhostUserConstants.Version | VhostUserConstants.ReplyFlag, flags);
                                Assert.Equal((uint)reply.Length - 12, size);
                            }

                            // Whatever ring runs, its device side survives whatever the ring memory holds.
                            foreach (var q in started)
                            {
                                for (var i = 0; i < 4 && q.Ring.TryPop(out var chain); i++)
                                {
                                    q.Ring.PushUsed(chain.Token, 0);
                                }

                                q.Ring.PublishUsed();
                            }

                            if (outcome.Close)
                            {
                                break;
                            }
                        }
                    }
                    finally
                    {
                        session.Dispose();
                    }

                    Assert.Empty(started);
                    Assert.All(handedOver, f => Assert.True(f.IsClosed, "the session ended without closing a descriptor it kept"));
                }

                Assert.Empty(FdCount.OpenedSince(before));
            });

    // Descriptors a request may keep: a doorbell or back-end channel that was accepted, even when
    // what followed failed (a kick is kept although the ring it completes cannot start).
    private static int Keeps(VhostUserRequest request) =>
        request is VhostUserRequest.SetVringKick or VhostUserRequest.SetVringCall or VhostUserRequest.SetVringErr or VhostUserRequest.SetBackendReqFd ? 1 : 0;

    private static Gen<(int Kind, ulong A, uint B, bool NeedReply)> Step() =>
        from kind in Gen.Frequency(
            (3, Gen.Choose(0, Kinds - 1)),

            // Ring setup more often, so rings actually start and run under the random traffic.
            (4, Gen.Elements(7, 8, 9, 11, 12, 15)))
        from a in ArbMap.Default.GeneratorFor<ulong>()
        from b in ArbMap.Default.GeneratorFor<uint>()
        from r in Gen.Choose(0, 15)
        select (kind, a, b, r != 0);

    private static (VhostUserMessage Message, List<FileDescriptor> Fds) Make(int kind, ulong a, uint b, bool needReply, SharedMemory memory, EventFd doorbell, ulong user)
    {
        var index = (a + b) % 8 < 6 ? (uint)((a + b) % 2) : (uint)((a + b) % 5); // mostly 0 and 1; 4 vrings, sometimes one past
        var size = 1u << (int)(b % 9);
        List<FileDescriptor> Fd(int n) => Enumerable.Range(0, n).Select(_ => (a & 1) == 0 ? memory.Handle!.Duplicate() : doorbell.Handle.Duplicate()).ToList();
        var region = new MemoryRegionDescription(a % 3 == 0 ? a : 0x1000_0000, (b % 4) switch { 0 => memory.Length, 1 => 4096, 2 => b, _ => memory.Length * 2 }, b % 5 == 0 ? a : user, b % 7 == 0 ? b : 0);
        switch (kind)
        {
            case 0: return (VhostUserMessage.Empty(VhostUserRequest.GetFeatures), []);
            case 1: return (VhostUserMessage.WithU64(VhostUserRequest.SetFeatures, b % 3 == 0 ? a : (ulong)(VirtioFeatures.Version1 | ((a & 1) != 0 ? VirtioFeatures.RingPacked : 0) | VhostUserConstants.ProtocolFeaturesBit), needReply), []);
            case 2: return (VhostUserMessage.Empty(VhostUserRequest.GetProtocolFeatures), []);
            case 3: return (VhostUserMessage.WithU64(VhostUserRequest.SetProtocolFeatures, b % 3 == 0 ? a : 0x1_8009, needReply), []);
            case 4: return (VhostUserMessage.Empty(VhostUserRequest.SetOwner, needReply), []);
            case 5: return (VhostUserMessage.Empty(VhostUserRequest.ResetOwner, needReply), []);
            case 6: return (VhostUserMessage.WithMemTable([region], needReply), Fd(1));
            case 7: return (VhostUserMessage.WithState(VhostUserRequest.SetVringNum, index, b % 2 == 0 ? size : b, needReply), []);
            case 8:
                {
                    var offset = (a >> 8) % 3 == 0 ? a : (index * 0x8000) + (b % 64);
                    var baseAddress = user + offset;
                    var areas = RingFormat.Split.Layout(8).At(baseAddress & ~15UL);
                    return (VhostUserMessage.WithAddress(new VringAddress(index, b & 3, areas.DescriptorArea, areas.DeviceArea, areas.DriverArea, 0), needReply), []);
                }

            case 9: return (VhostUserMessage.WithState(VhostUserRequest.SetVringBase, index, b % 2 == 0 ? b % 16 : b, needReply), []);
            case 10: return (VhostUserMessage.WithState(VhostUserRequest.GetVringBase, index, 0), []);
            case 11: return (VhostUserMessage.WithFile(VhostUserRequest.SetVringKick, index, (b & 1) == 0, needReply), Fd((b & 1) == 0 ? 1 : 0));
            case 12: return (VhostUserMessage.WithFile(VhostUserRequest.SetVringCall, index, (b & 1) == 0, needReply), Fd((b & 1) == 0 ? 1 : 0));
            case 13: return (VhostUserMessage.WithFile(VhostUserRequest.SetVringErr, index, (b & 1) == 0, needReply), Fd((b & 1) == 0 ? 1 : 0));
            case 14: return (VhostUserMessage.Empty(VhostUserRequest.GetQueueNum), []);
            case 15: return (VhostUserMessage.WithState(VhostUserRequest.SetVringEnable, index, b % 3, needReply), []);
            case 16: return (VhostUserMessage.WithU64(VhostUserRequest.SetStatus, b % 4 == 0 ? a : b % 16, needReply), []);
            case 17: return (VhostUserMessage.Empty(VhostUserRequest.GetStatus), []);
            case 18: return (VhostUserMessage.WithRegion(VhostUserRequest.AddMemReg, region, needReply), Fd(1));
            case 19: return (VhostUserMessage.WithRegion(VhostUserRequest.RemMemReg, region, needReply), Fd((int)(b % 2)));
            case 20: return (VhostUserMessage.Empty(VhostUserRequest.ResetDevice, needReply), []);
            default:
                {
                    // Scribble on ring memory as a hostile driver would.
                    var span = memory.Slice(0, (int)memory.Length);
                    var rnd = new Random((int)b);
                    for (var i = 0; i < 64; i++)
                    {
                        span[rnd.Next(0x20000)] = (byte)rnd.Next(256);
                    }

                    return (VhostUserMessage.Empty(VhostUserRequest.GetMaxMemSlots), []);
                }
        }
    }
}
