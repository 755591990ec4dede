using Rings.Linux.Net;

namespace Rings.Tests.Net.Offloads;

public class OffloadPlannerTests
{
    private const GuestOffloads All =
        GuestOffloads.Csum | GuestOffloads.Tso4 | GuestOffloads.Tso6 | GuestOffloads.Ecn | GuestOffloads.Ufo | GuestOffloads.Uso4 | GuestOffloads.Uso6;

    [Fact]
    public void FeatureBitsMapToGuestOffloads()
    {
        // Bit numbers from virtio 1.2 section 5.1.3.
        var features = (VirtioFeatures)((1UL << 1) | (1UL << 7) | (1UL << 8) | (1UL << 9) | (1UL << 10) | (1UL << 54) | (1UL << 55));
        Assert.Equal(All, OffloadPlanner.FromFeatures(features));
        Assert.Equal(GuestOffloads.None, OffloadPlanner.FromFeatures(VirtioFeatures.NetCsum | VirtioFeatures.NetHostTso4 | VirtioFeatures.Version1));
        Assert.Equal(GuestOffloads.Csum | GuestOffloads.Tso6, OffloadPlanner.FromFeatures(VirtioFeatures.NetGuestCsum | VirtioFeatures.NetGuestTso6));
    }

    [Theory]
    [InlineData(VirtioNetGso.None, 0, GuestOffloads.None, OffloadAction.Deliver)]
    [InlineData(VirtioNetGso.None, VirtioNetHeader.FlagNeedsCsum, GuestOffloads.None, OffloadAction.CompleteChecksum)]
    [InlineData(VirtioNetGso.None, VirtioNetHeader.FlagNeedsCsum, GuestOffloads.Csum, OffloadAction.Deliver)]
    [InlineData(VirtioNetGso.TcpV4, VirtioNetHeader.FlagNeedsCsum, GuestOffloads.Csum | GuestOffloads.Tso4, OffloadAction.Deliver)]
    [InlineData(VirtioNetGso.TcpV4, VirtioNetHeader.FlagNeedsCsum, GuestOffloads.Csum | GuestOffloads.Tso6, OffloadAction.Segment)]
    [InlineData(VirtioNetGso.TcpV4, VirtioNetHeader.FlagNeedsCsum, GuestOffloads.Tso4, OffloadAction.Segment)]
    [InlineData(VirtioNetGso.TcpV4 | VirtioNetGso.Ecn, VirtioNetHeader.FlagNeedsCsum, GuestOffloads.Csum | GuestOffloads.Tso4, OffloadAction.Segment)]
    [InlineData(VirtioNetGso.TcpV4 | VirtioNetGso.Ecn, VirtioNetHeader.FlagNeedsCsum, GuestOffloads.Csum | GuestOffloads.Tso4 | GuestOffloads.Ecn, OffloadAction.Deliver)]
    [InlineData(VirtioNetGso.TcpV6, VirtioNetHeader.FlagNeedsCsum, All, OffloadAction.Deliver)]
    [InlineData(VirtioNetGso.Udp, VirtioNetHeader.FlagNeedsCsum, GuestOffloads.Csum | GuestOffloads.Tso4 | GuestOffloads.Tso6, OffloadAction.Segment)]
    [InlineData(VirtioNetGso.Udp, VirtioNetHeader.FlagNeedsCsum, GuestOffloads.Csum | GuestOffloads.Ufo, OffloadAction.Deliver)]
    [InlineData(VirtioNetGso.UdpL4, VirtioNetHeader.FlagNeedsCsum, GuestOffloads.Csum | GuestOffloads.Uso6, OffloadAction.Segment)]
    [InlineData(VirtioNetGso.UdpL4, VirtioNetHeader.FlagNeedsCsum, GuestOffloads.Csum | GuestOffloads.Uso4, OffloadAction.Deliver)]
    [InlineData(2, VirtioNetHeader.FlagNeedsCsum, All, OffloadAction.Segment)]
    public void DecidesPerDestination(byte gsoType, byte flags, GuestOffloads destination, OffloadAction expected)
    {
        var frame = GsoFrames.Build(new GsoSpec(false, false, Transport.UdpSegments, 0, 0, 100, 1000, 1, false, 1, 0, false, 1, 0, 1));
        var header = new VirtioNetHeader { Flags = flags, GsoType = gsoType, GsoSize = 1000 };
        Assert.Equal(expected, OffloadPlanner.Decide(frame.Bytes, header, destination));
    }

    [Theory]
    [InlineData(false, GuestOffloads.Csum | GuestOffloads.Uso6, OffloadAction.Segment)]
    [InlineData(true, GuestOffloads.Csum | GuestOffloads.Uso6, OffloadAction.Deliver)]
    [InlineData(true, GuestOffloads.Csum | GuestOffloads.Uso4, OffloadAction.Segment)]
    public void UsoLooksAtTheIpVersionBehindAVlanTag(bool ipv6, GuestOffloads destination, OffloadAction expected)
    {
        var frame = GsoFrames.Build(new GsoSpec(true, ipv6, Transport.UdpSegments, 0, 0, 100, 1000, 1, false, 1, 0, false, 1, 0, 1));
        Assert.Equal(expected, OffloadPlanner.Decide(frame.Bytes, frame.Header, destination));
    }

    [Fact]
    public void TheReceiveHeaderKeepsOffloadFieldsButNeverDataValid()
    {
        var sent = new VirtioNetHeader
        {
            Flags = VirtioNetHeader.FlagNeedsCsum | VirtioNetHeader.FlagDataValid,
            GsoType = VirtioNetGso.TcpV6,
            HeaderLength = 74,
            GsoSize = 1440,
            CsumStart = 54,
            CsumOffset = 16,
            NumBuffers = 9,
        };
        var received = OffloadPlanner.ReceiveHeader(sent);
        Assert.Equal(VirtioNetHeader.FlagNeedsCsum, received.Flags);
        Assert.Equal((sent.GsoType, sent.HeaderLength, sent.GsoSize, sent.CsumStart, sent.CsumOffset), (received.GsoType, received.HeaderLength, received.GsoSize, received.CsumStart, received.CsumOffset));
        Assert.Equal(0, received.NumBuffers);
    }

    [Fact]
    public void FramesDoneInSoftwareAreMarkedValidOnlyForGuestCsum()
    {
        Assert.Equal(default, OffloadPlanner.CompletedHeader(GuestOffloads.None));
        Assert.Equal(default, OffloadPlanner.CompletedHeader(GuestOffloads.Tso4));
        var valid = OffloadPlanner.CompletedHeader(GuestOffloads.Csum | GuestOffloads.Tso6);
        Assert.Equal(VirtioNetHeader.FlagDataValid, valid.Flags);
        Assert.Equal(VirtioNetGso.None, valid.GsoType);
        Assert.Equal((0, 0, 0, 0), (valid.HeaderLength, valid.GsoSize, valid.CsumStart, valid.CsumOffset));
    }
}
