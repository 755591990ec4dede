using System.Buffers.Binary;
using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using Rings.Linux.VhostUser;

namespace Rings.Tests.VhostUser;

public class CodecTests
{
    private static readonly VhostUserRequest[] U64Requests =
        [VhostUserRequest.SetFeatures, VhostUserRequest.SetProtocolFeatures, VhostUserRequest.SetStatus];

    private static readonly VhostUserRequest[] StateRequests =
        [VhostUserRequest.SetVringNum, VhostUserRequest.SetVringBase, VhostUserRequest.GetVringBase, VhostUserRequest.SetVringEnable];

    private static readonly VhostUserRequest[] EmptyRequests =
        [VhostUserRequest.GetFeatures, VhostUserRequest.SetOwner, VhostUserRequest.ResetOwner, VhostUserRequest.GetProtocolFeatures,
         VhostUserRequest.GetQueueNum, VhostUserRequest.ResetDevice, VhostUserRequest.GetMaxMemSlots, VhostUserRequest.GetStatus];

    [Property]
    public void U64RequestsRoundTrip(ulong value, bool needReply, byte pick)
    {
        var request = U64Requests[pick % U64Requests.Length];
        var m = VhostUserMessage.WithU64(request, value, needReply);
        Assert.Equal(m, RoundTrip(m, 0));
    }

    [Property]
    public void StateRequestsRoundTrip(uint index, uint num, bool needReply, byte pick)
    {
        var m = VhostUserMessage.WithState(StateRequests[pick % StateRequests.Length], index, num, needReply);
        Assert.Equal(m, RoundTrip(m, 0));
    }

    [Property]
    public void EmptyRequestsRoundTrip(bool needReply, byte pick)
    {
        var m = VhostUserMessage.Empty(EmptyRequests[pick % EmptyRequests.Length], needReply);
        Assert.Equal(m, RoundTrip(m, 0));
    }

    [Property]
    public void AddressRoundTrips(uint index, bool log, ulong desc, ulong used, ulong avail, ulong logAddress)
    {
        var m = VhostUserMessage.WithAddress(new VringAddress(index, log ? 1u : 0u, desc, used, avail, logAddress));
        Assert.Equal(m, RoundTrip(m, 0));
    }

    [Property]
    public void FileRequestsRoundTripWithAndWithoutDescriptor(byte index, bool hasFd, byte pick)
    {
        VhostUserRequest[] requests = [VhostUserRequest.SetVringKick, VhostUserRequest.SetVringCall, VhostUserRequest.SetVringErr];
        var m = VhostUserMessage.WithFile(requests[pick % 3], index, hasFd);
        var decoded = RoundTrip(m, hasFd ? 1 : 0);
        Assert.Equal(index, (byte)decoded.FileIndex);
        Assert.Equal(!hasFd, decoded.FileHasNoFd);
    }

    [Property]
    public Property MemoryTablesRoundTrip() =>
        Prop.ForAll(
            Gen.Choose(0, 8).SelectMany(n => Gen.ArrayOf(RegionGen(), n)).ToArbitrary(),
            regions =>
            {
                var m = VhostUserMessage.WithMemTable(regions);
                var d = RoundTrip(m, regions.Length);
                Assert.Equal(regions, d.Regions);
                Assert.Equal(VhostUserPayload.MemoryTable, d.Payload);
            });

    [Property]
    public Property SingleRegionsRoundTrip() =>
        Prop.ForAll(RegionGen().ToArbitrary(), region =>
        {
            var add = VhostUserMessage.WithRegion(VhostUserRequest.AddMemReg, region);
            Assert.Equal(add, RoundTrip(add, 1));
            var rem = VhostUserMessage.WithRegion(VhostUserRequest.RemMemReg, region);
            Assert.Equal(rem, RoundTrip(rem, 0));
        });

    [Property]
    public void RepliesRoundTrip(ulong value, uint index, uint num)
    {
        var u = VhostUserMessage.ReplyU64(VhostUserRequest.GetFeatures, value);
        Assert.Equal(VhostUserErrorCode.None, VhostUserCodec.DecodeReply(VhostUserCodec.Encode(u), 0, out var du).Code);
        Assert.Equal(u, du);
        var s = VhostUserMessage.ReplyState(VhostUserRequest.GetVringBase, index, num);
        Assert.Equal(VhostUserErrorCode.None, VhostUserCodec.DecodeReply(VhostUserCodec.Encode(s), 0, out var ds).Code);
        Assert.Equal(s, ds);

        // An ack to a message without an explicit reply is a u64.
        var ack = VhostUserMessage.ReplyU64(VhostUserRequest.SetMemTable, 0);
        Assert.Equal(VhostUserErrorCode.None, VhostUserCodec.DecodeReply(VhostUserCodec.Encode(ack), 0, out var da).Code);
        Assert.Equal(ack, da);
    }

    [Property(MaxTest = 2000)]
    public void DecodingArbitraryBytesNeverThrows(byte[] bytes, byte fds)
    {
        var fdCount = fds % 12;
        VhostUserCodec.DecodeRequest(bytes, fdCount, out _);
        VhostUserCodec.DecodeReply(bytes, fdCount, out _);
    }

    [Property(MaxTest = 2000)]
    public void DecodingArbitraryPayloadsBehindValidHeadersNeverThrows(byte request, bool needReply, byte[] payload, byte fds)
    {
        var bytes = new byte[12 + payload.Length];
        BinaryPrimitives.WriteUInt32LittleEndian(bytes, request % 45u);
        BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan(4), needReply ? 9u : 1u);
        BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan(8), (uint)payload.Length);
        payload.CopyTo(bytes, 12);
        var error = VhostUserCodec.DecodeRequest(bytes, fds % 10, out var m);
        if (!error.IsError)
        {
            // Whatever decodes re-encodes to the same bytes, except the shorter forms the decoder
            // also accepts: a memory table of fewer than the maximum regions, and the 20-byte
            // inflight description of a peer that packs the C struct. Those re-encode in the
            // form Rings writes (full-size table, 24-byte description), with the same content.
            if (m.PayloadBytes == payload.Length)
            {
                Assert.Equal(bytes, VhostUserCodec.Encode(m));
            }
            else if (m.Payload == VhostUserPayload.Inflight)
            {
                Assert.Equal(VhostUserConstants.InflightPackedBytes, payload.Length);
                Assert.False(VhostUserCodec.DecodeRequest(VhostUserCodec.Encode(m), fds % 10, out var again).IsError);
                Assert.Equal(m.Inflight, again.Inflight);
            }
            else
            {
                Assert.Equal(VhostUserPayload.MemoryTable, m.Payload);
            }
        }
    }

    [Property]
    public void EveryTruncationOfAValidMessageIsRejected(ulong desc, byte cut)
    {
        var bytes = VhostUserCodec.Encode(VhostUserMessage.WithAddress(new VringAddress(0, 0, desc, 2, 3, 0)));
        var length = cut % bytes.Length;
        var error = VhostUserCodec.DecodeRequest(bytes.AsSpan(0, length), 0, out _);
        Assert.Equal(length < 12 ? VhostUserErrorCode.Truncated : VhostUserErrorCode.SizeMismatch, error.Code);
    }

    [Fact]
    public void HeaderIsRequestFlagsSizeInNativeOrder()
    {
        var bytes = VhostUserCodec.Encode(VhostUserMessage.WithState(VhostUserRequest.SetVringNum, 1, 256, needReply: true));
        Assert.Equal(new byte[] { 8, 0, 0, 0, 9, 0, 0, 0, 8, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0 }, bytes);
        var reply = VhostUserCodec.Encode(VhostUserMessage.ReplyU64(VhostUserRequest.GetFeatures, 0x1_0000_0000));

        // Replies carry exactly version | REPLY (peers such as DPDK compare the flags for equality).
        Assert.Equal(5u, BinaryPrimitives.ReadUInt32LittleEndian(reply.AsSpan(4)));
    }

    [Theory]
    [InlineData(VhostUserErrorCode.Truncated, new byte[] { 1, 0, 0, 0, 1, 0, 0 }, 0)]
    [InlineData(VhostUserErrorCode.SizeMismatch, new byte[] { 1, 0, 0, 0, 1, 0, 0, 0, 8, 0, 0, 0 }, 0)]
    [InlineData(VhostUserErrorCode.BadVersion, new byte[] { 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0 }, 0)]
    [InlineData(VhostUserErrorCode.BadReplyFlag, new byte[] { 1, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0 }, 0)]
    [InlineData(VhostUserErrorCode.UnknownRequest, new byte[] { 99, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0 }, 0)]
    [InlineData(VhostUserErrorCode.UnknownRequest, new byte[] { 6, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0 }, 0)]
    [InlineData(VhostUserErrorCode.BadPayloadSize, new byte[] { 1, 0, 0, 0, 1, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0 }, 0)]
    [InlineData(VhostUserErrorCode.BadPayloadSize, new byte[] { 2, 0, 0, 0, 1, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0 }, 0)]
    [InlineData(VhostUserErrorCode.TooManyRegions, new byte[] { 5, 0, 0, 0, 1, 0, 0, 0, 8, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0 }, 9)]
    [InlineData(VhostUserErrorCode.BadPayloadSize, new byte[] { 5, 0, 0, 0, 1, 0, 0, 0, 8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0 }, 1)]
    [InlineData(VhostUserErrorCode.UnexpectedDescriptor, new byte[] { 3, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0 }, 1)]
    [InlineData(VhostUserErrorCode.MissingDescriptor, new byte[] { 12, 0, 0, 0, 1, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 }, 0)]
    [InlineData(VhostUserErrorCode.UnexpectedDescriptor, new byte[] { 13, 0, 0, 0, 1, 0, 0, 0, 8, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0 }, 1)]
    [InlineData(VhostUserErrorCode.ReservedBitsSet, new byte[] { 12, 0, 0, 0, 1, 0, 0, 0, 8, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0 }, 0)]
    [InlineData(VhostUserErrorCode.MissingDescriptor, new byte[] { 37, 0, 0, 0, 1, 0, 0, 0, 40, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 }, 0)]
    public void MalformedMessagesGetTheirError(VhostUserErrorCode expected, byte[] bytes, int fds)
    {
        var error = VhostUserCodec.DecodeRequest(bytes, fds, out _);
        Assert.Equal(expected, error.Code);
        Assert.False(string.IsNullOrEmpty(error.Detail));

        // The error names the request whenever the header could be read.
        var request = bytes.Length >= 12 ? (VhostUserRequest)BinaryPrimitives.ReadUInt32LittleEndian(bytes) : VhostUserRequest.None;
        Assert.Equal(request, error.Request);
    }

    [Fact]
    public void MemoryTableFdCountMustMatchRegionCount()
    {
        var regions = new[] { new MemoryRegionDescription(0, 4096, 0x7000_0000, 0), new MemoryRegionDescription(0x10000, 4096, 0x7100_0000, 0) };
        var bytes = VhostUserCodec.Encode(VhostUserMessage.WithMemTable(regions));
        Assert.Equal(VhostUserErrorCode.None, VhostUserCodec.DecodeRequest(bytes, 2, out _).Code);
        Assert.Equal(VhostUserErrorCode.MissingDescriptor, VhostUserCodec.DecodeRequest(bytes, 1, out _).Code);
        Assert.Equal(VhostUserErrorCode.UnexpectedDescriptor, VhostUserCodec.DecodeRequest(bytes, 3, out _).Code);

        // Some front-ends send the whole fixed-size table; the count still rules.
        var full = new byte[12 + VhostUserConstants.MaxSupportedPayloadBytes];
        bytes.CopyTo(full, 0);
        BinaryPrimitives.WriteUInt32LittleEndian(full.AsSpan(8), (uint)VhostUserConstants.MaxSupportedPayloadBytes);
        Assert.Equal(VhostUserErrorCode.None, VhostUserCodec.DecodeRequest(full, 2, out var m).Code);
        Assert.Equal(regions, m.Regions);
    }

    private static VhostUserMessage RoundTrip(in VhostUserMessage m, int fds)
    {
        var bytes = VhostUserCodec.Encode(m);
        Assert.Equal(12 + m.PayloadBytes, bytes.Length);
        var error = VhostUserCodec.DecodeRequest(bytes, fds, out var decoded);
        Assert.Equal(VhostUserErrorCode.None, error.Code);
        return decoded;
    }

    private static Gen<MemoryRegionDescription> RegionGen() =>
        from gpa in ArbMap.Default.GeneratorFor<ulong>()
        from size in ArbMap.Default.GeneratorFor<ulong>()
        from user in ArbMap.Default.GeneratorFor<ulong>()
        from offset in ArbMap.Default.GeneratorFor<ulong>()
        select new MemoryRegionDescription(gpa, size, user, offset);
}
