using System.Buffers.Binary;
using FsCheck.Xunit;
using Rings.Linux.Device;
using Rings.Linux.Net;
using Rings.Linux.VhostUser;

namespace Rings.Tests.VhostUser;

/// <summary>
/// The virtio-net config space (virtio 1.2 section 5.1.4) as GET_CONFIG answers it: the layout,
/// every access inside the space served byte for byte, every other refused with the empty reply
/// vhost-user.rst prescribes (never a closed connection or a read outside the space), and
/// SET_CONFIG refused for anything that would change a field.
/// </summary>
public class ConfigSpaceTests
{
    private static readonly MacAddress Mac = MacAddress.Parse("02:11:22:33:44:55");

    [Fact]
    public void TheSpaceIsLaidOutAs514Says()
    {
        var config = new VirtioNetConfig(Mac, VirtioNetConfig.LinkUp, 4, 9000);
        var bytes = new byte[VirtioNetConfig.Size];
        config.Encode(bytes);
        Assert.Equal(new byte[] { 0x02, 0x11, 0x22, 0x33, 0x44, 0x55 }, bytes[..6]);
        Assert.Equal(1, BinaryPrimitives.ReadUInt16LittleEndian(bytes.AsSpan(VirtioNetConfig.StatusOffset)));
        Assert.Equal(4, BinaryPrimitives.ReadUInt16LittleEndian(bytes.AsSpan(VirtioNetConfig.MaxVirtqueuePairsOffset)));
        Assert.Equal(9000, BinaryPrimitives.ReadUInt16LittleEndian(bytes.AsSpan(VirtioNetConfig.MtuOffset)));
        Assert.Equal(uint.MaxValue, BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(12)));
        Assert.Equal(0xFF, bytes[16]);
    }

    [Property(MaxTest = 500)]
    public bool AnAccessIsServedExactlyWhenItLiesInsideTheSpace(uint offset, uint size, ushort pairs, ushort mtu)
    {
        // Small values most of the time, so both sides of the boundary are exercised.
        offset = offset > 0xF000_0000 ? offset : offset % 24;
        size = size > 0xF000_0000 ? size : size % 24;
        var config = new VirtioNetConfig(Mac, 0, pairs, mtu);
        var whole = new byte[VirtioNetConfig.Size];
        config.Encode(whole);
        var error = config.TryRead(offset, size, out var bytes);
        var inside = size > 0 && (ulong)offset + size <= VirtioNetConfig.Size;
        return inside
            ? error is null && bytes.AsSpan().SequenceEqual(whole.AsSpan((int)offset, (int)size))
            : error is not null && bytes.Length == 0;
    }

    [Fact]
    public void GetConfigReadsMaxVirtqueuePairsAndTheMac()
    {
        using var h = new SessionHarness(new VhostUserBackendOptions { MaxQueuePairs = 4, Mac = Mac, Mtu = 1500 });
        var features = h.Negotiate(features: VirtioFeatures.Version1 | VirtioFeatures.NetMultiqueue);
        Assert.NotEqual(VirtioFeatures.None, features & VirtioFeatures.NetMultiqueue);
        Assert.True(h.Session.ProtocolFeatures.HasFlag(VhostUserProtocolFeatures.Config));

        var pairs = h.Ok(VhostUserMessage.WithConfig(VhostUserRequest.GetConfig, VirtioNetConfig.MaxVirtqueuePairsOffset, new byte[2]))!.Value;
        Assert.Equal(new VhostUserConfigAccess(VirtioNetConfig.MaxVirtqueuePairsOffset, 2, 0, [4, 0]), pairs.Config);
        var mac = h.Ok(VhostUserMessage.WithConfig(VhostUserRequest.GetConfig, 0, new byte[6]))!.Value;
        Assert.Equal(new byte[] { 0x02, 0x11, 0x22, 0x33, 0x44, 0x55 }, mac.Config!.Value.Data);
    }

    [Theory]
    [InlineData(0u, 0u, 0u)]
    [InlineData(0u, 18u, 0u)]
    [InlineData(17u, 1u, 0u)]
    [InlineData(16u, 2u, 0u)]
    [InlineData(uint.MaxValue, 2u, 0u)]
    [InlineData(0xFFFF_FFF0u, 0x20u, 0u)]
    [InlineData(0u, 6u, 2u)]
    public void HostileAccessesGetTheEmptyReplyAndTheConnectionStays(uint offset, uint size, uint flags)
    {
        using var h = new SessionHarness(new VhostUserBackendOptions { MaxQueuePairs = 4 });
        h.Negotiate(replyAck: false);
        var outcome = h.Send(VhostUserMessage.WithConfig(VhostUserRequest.GetConfig, offset, new byte[size], flags));
        Assert.False(outcome.Close, outcome.Error.ToString());
        Assert.True(outcome.Error.IsError);
        Assert.Equal(VhostUserRequest.GetConfig, outcome.Error.Request);
        Assert.False(string.IsNullOrEmpty(outcome.Error.Detail));

        // The empty reply: a header with size 0, which the codec reads back as no access.
        Assert.Equal(12, outcome.Reply!.Length);
        Assert.Equal(0u, BinaryPrimitives.ReadUInt32LittleEndian(outcome.Reply.AsSpan(8)));
        Assert.False(VhostUserCodec.DecodeReply(outcome.Reply, 0, out var reply).IsError);
        Assert.Null(reply.Config);

        // The session goes on serving.
        Assert.Equal(4UL, h.Ok(VhostUserMessage.Empty(VhostUserRequest.GetQueueNum))!.Value.Value);
    }

    [Fact]
    public void MalformedConfigPayloadsAreRefusedByTheCodec()
    {
        // A size field that disagrees with the bytes, one above the 256-byte limit, and a body shorter than its header.
        var good = VhostUserCodec.Encode(VhostUserMessage.WithConfig(VhostUserRequest.GetConfig, 0, new byte[4]));
        var lying = good.ToArray();
        BinaryPrimitives.WriteUInt32LittleEndian(lying.AsSpan(12 + 4), 5);
        Assert.Equal(VhostUserErrorCode.BadPayloadSize, VhostUserCodec.DecodeRequest(lying, 0, out _).Code);

        var huge = new byte[12 + 12 + 257];
        BinaryPrimitives.WriteUInt32LittleEndian(huge, (uint)VhostUserRequest.GetConfig);
        BinaryPrimitives.WriteUInt32LittleEndian(huge.AsSpan(4), VhostUserConstants.Version);
        BinaryPrimitives.WriteUInt32LittleEndian(huge.AsSpan(8), 12 + 257);
        BinaryPrimitives.WriteUInt32LittleEndian(huge.AsSpan(12 + 4), 257);
        Assert.Equal(VhostUserErrorCode.ValueOutOfRange, VhostUserCodec.DecodeRequest(huge, 0, out _).Code);

        var stub = good[..(12 + 8)];
        BinaryPrimitives.WriteUInt32LittleEndian(stub.AsSpan(8), 8);
        Assert.Equal(VhostUserErrorCode.BadPayloadSize, VhostUserCodec.DecodeRequest(stub, 0, out _).Code);

        // Sent to a session, each is answered with the empty reply; the connection stays.
        using var h = new SessionHarness();
        h.Negotiate();
        foreach (var bytes in new[] { lying, huge, stub })
        {
            var outcome = h.SendRaw(bytes);
            Assert.False(outcome.Close, outcome.Error.ToString());
            Assert.Equal(12, outcome.Reply!.Length);
        }
    }

    [Fact]
    public void WithoutTheConfigProtocolFeatureGetConfigIsRefused()
    {
        using var h = new SessionHarness(new VhostUserBackendOptions { ProtocolFeatures = VhostUserBackendOptions.DefaultProtocolFeatures & ~VhostUserProtocolFeatures.Config });
        h.Negotiate();
        var outcome = h.Send(VhostUserMessage.WithConfig(VhostUserRequest.GetConfig, 0, new byte[6]));
        Assert.Equal(VhostUserErrorCode.NotNegotiated, outcome.Error.Code);
        Assert.False(outcome.Close);
        Assert.Equal(12, outcome.Reply!.Length);
    }

    [Fact]
    public void SetConfigIsRefusedForAnyChangeAndNackedWithReplyAck()
    {
        using var h = new SessionHarness(new VhostUserBackendOptions { MaxQueuePairs = 2 });
        h.Negotiate(replyAck: true);
        var nack = h.Send(VhostUserMessage.WithConfig(VhostUserRequest.SetConfig, VirtioNetConfig.MaxVirtqueuePairsOffset, [8, 0], needReply: true));
        Assert.Equal(VhostUserErrorCode.Refused, nack.Error.Code);
        Assert.False(nack.Close);
        Assert.False(VhostUserCodec.DecodeReply(nack.Reply!, 0, out var reply).IsError);
        Assert.NotEqual(0UL, reply.Value);

        // Outside the space: refused as such.
        Assert.Equal(VhostUserErrorCode.ValueOutOfRange, h.Send(VhostUserMessage.WithConfig(VhostUserRequest.SetConfig, 16, [1, 2], needReply: true)).Error.Code);

        // Writing what is there changes nothing: accepted, and the space reads the same.
        Assert.True(h.Send(VhostUserMessage.WithConfig(VhostUserRequest.SetConfig, VirtioNetConfig.MaxVirtqueuePairsOffset, [2, 0], needReply: true)).Succeeded);
        Assert.Equal(new byte[] { 2, 0 }, h.Ok(VhostUserMessage.WithConfig(VhostUserRequest.GetConfig, VirtioNetConfig.MaxVirtqueuePairsOffset, new byte[2]))!.Value.Config!.Value.Data);
    }

    [Fact]
    public void TheFrontEndReadsTheConfigSpaceAndLearnsOfARefusal()
    {
        var path = Rings.Tests.Linux.TestPaths.Socket();
        using var backend = new VhostUserBackend(new VhostUserBackendOptions { SocketPath = path, MaxQueuePairs = 4, Mac = Mac });
        backend.Start();
        using var frontend = Rings.Linux.Driver.VhostUserFrontend.Connect(new Rings.Linux.Driver.VhostUserFrontendOptions
        {
            SocketPath = path,
            QueuePairs = 2,
            ProtocolFeatures = new Rings.Linux.Driver.VhostUserFrontendOptions().ProtocolFeatures | VhostUserProtocolFeatures.Config,
        });
        Assert.Equal(4UL, frontend.BackendQueuePairs);
        Assert.Equal(4, frontend.Queues.Count);
        Assert.Equal(new byte[] { 4, 0 }, frontend.ReadConfig(VirtioNetConfig.MaxVirtqueuePairsOffset, 2));
        Assert.Equal(new byte[] { 0x02, 0x11, 0x22, 0x33, 0x44, 0x55, 1, 0 }, frontend.ReadConfig(0, 8));
        var refused = Assert.Throws<VhostUserException>(() => frontend.ReadConfig(16, 4));
        Assert.Equal(VhostUserErrorCode.Refused, refused.Error.Code);

        // The connection stays: the rings still answer.
        Assert.True(frontend.IsConnected);
        frontend.StopQueue(2);
        frontend.StartQueue(2);
    }

    [Fact]
    public void OneQueuePairOffersNoMqAndMoreDo()
    {
        Assert.Equal(VirtioFeatures.None, new VhostUserBackendOptions().OfferedFeatures & VirtioFeatures.NetMultiqueue);
        Assert.NotEqual(VirtioFeatures.None, new VhostUserBackendOptions { MaxQueuePairs = 2 }.OfferedFeatures & VirtioFeatures.NetMultiqueue);
        Assert.Equal(2, new VhostUserBackendOptions { MaxQueuePairs = 2 }.NetConfig.MaxVirtqueuePairs);
    }
}
