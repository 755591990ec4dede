using System.Buffers.Binary;
using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using Rings.Linux.Net;
using Rings.Linux.Ports;
using Rings.Linux.Runtime;
using Rings.Tests.Net.Offloads;

namespace Rings.Tests.Runtime;

/// <summary>
/// GSO frames through a pipeline (5.1.6.2): to a port that did not negotiate their segmentation
/// offload they arrive cut into complete, MSS-sized frames (checked by <see cref="SegmentChecker"/>,
/// which shares no parsing with the library); to a port that did, unchanged.
/// </summary>
public sealed class SoftwareSegmentationTests : IDisposable
{
    // Room for a 64 KiB GSO frame per slot, and for the 256 segments one frame may become.
    private const int SlotBytes = FrameBurst.MaxFrameLength;
    private const int Slots = 300;
    private const PortOffloads Everything = PortOffloads.Checksum | PortOffloads.Tso4 | PortOffloads.Tso6 | PortOffloads.Ecn | PortOffloads.Uso;

    private readonly InMemoryPort _source = new("source", 8, SlotBytes);
    private readonly InMemoryPort _plain = new("plain", Slots, SlotBytes);
    private readonly InMemoryPort _offloading = new("offloading", Slots, SlotBytes) { AcceptedOffloads = Everything };
    private readonly Pipeline _pipeline;
    private readonly byte[] _taken = new byte[SlotBytes];

    public SoftwareSegmentationTests()
    {
        _source.Open();
        _plain.Open();
        _offloading.Open();
        _pipeline = new Pipeline([_source, _plain, _offloading], new FloodProcessor());
    }

    public void Dispose()
    {
        _pipeline.Dispose();
        _source.Dispose();
        _plain.Dispose();
        _offloading.Dispose();
    }

    [Property(MaxTest = 150)]
    public Property ARandomGsoFrameArrivesSegmentedWhereTheOffloadIsMissingAndUnchangedWhereItIsNot() =>
        Prop.ForAll(GsoFrames.Specs.ToArbitrary(), spec =>
        {
            var frame = GsoFrames.Build(spec);
            var segmentedBefore = _plain.Counters.SoftwareSegmented;
            var refusedBefore = _plain.Counters.Drops(DropReason.OffloadUnsupported);
            Assert.True(_source.TryInject(frame.Bytes, frame.Header));
            _pipeline.RunOnce();

            // The worker's scratch takes up to 256 segments in 256 KiB (each on a 64-byte line);
            // beyond that the frame is refused whole and counted.
            Assert.Equal(OffloadStatus.Ok, GsoSegmenter.Measure(frame.Bytes, frame.Header, out _, out var longest));
            var fits = frame.ExpectedSegments <= FrameBurst.MaxCapacity && frame.ExpectedSegments * (long)((longest + 63) & ~63) <= 256 << 10;
            var plain = TakeAll(_plain);
            if (fits)
            {
                Assert.All(plain, s => Assert.Equal(default, s.Header));
                SegmentChecker.Check(frame, [.. plain.Select(s => s.Bytes)]);
                Assert.Equal(segmentedBefore + 1, _plain.Counters.SoftwareSegmented);
            }
            else
            {
                Assert.Empty(plain);
                Assert.Equal(refusedBefore + 1, _plain.Counters.Drops(DropReason.OffloadUnsupported));
            }

            // UFO (gso_type UDP) is never negotiated: the offloading port gets IP fragments too.
            var offloading = TakeAll(_offloading);
            if (spec.Transport == Transport.UdpFragments)
            {
                Assert.Equal(fits ? frame.ExpectedSegments : 0, offloading.Count);
            }
            else
            {
                var only = Assert.Single(offloading);
                Assert.Equal(frame.Header, only.Header);
                Assert.Equal(frame.Bytes, only.Bytes);
            }
        });

    [Fact]
    public void SegmentsTakeTheGsoFramesPlaceAmongTheOtherFramesOfItsBurst()
    {
        var gso = GsoFrames.Build(TcpSpec(payload: 10_000, mss: 1448));
        var before = GsoFrames.Build(TcpSpec(payload: 100, mss: 1448) with { Sequence = 1 });
        var after = GsoFrames.Build(TcpSpec(payload: 200, mss: 1448) with { Sequence = 2 });
        Assert.True(_source.TryInject(before.Bytes, default));
        Assert.True(_source.TryInject(gso.Bytes, gso.Header));
        Assert.True(_source.TryInject(after.Bytes, default));
        _pipeline.RunOnce();

        var plain = TakeAll(_plain);
        Assert.Equal(gso.ExpectedSegments + 2, plain.Count);
        Assert.Equal(before.Bytes, plain[0].Bytes);
        Assert.Equal(after.Bytes, plain[^1].Bytes);
        SegmentChecker.Check(gso, [.. plain.Skip(1).SkipLast(1).Select(s => s.Bytes)]);
        Assert.All(plain.Skip(1).SkipLast(2), s => Assert.Equal(14 + 20 + 20 + 1448, s.Bytes.Length));
        Assert.Equal(3, TakeAll(_offloading).Count);
        Assert.Equal(0, _plain.Counters.TotalDrops);
    }

    [Fact]
    public void ADestinationWithRoomForSomeSegmentsGetsThoseAndTheRestAreCountedAsDestinationFull()
    {
        var gso = GsoFrames.Build(TcpSpec(payload: 10 * 1000, mss: 1000));
        _plain.TransmitBudget = 4;
        Assert.True(_source.TryInject(gso.Bytes, gso.Header));
        _pipeline.RunOnce();

        var plain = TakeAll(_plain);
        Assert.Equal(4, plain.Count);
        for (var s = 0; s < 4; s++)
        {
            Assert.Equal(unchecked(gso.Spec.Sequence + (uint)(s * 1000)), BinaryPrimitives.ReadUInt32BigEndian(plain[s].Bytes.AsSpan(gso.L4 + 4)));
        }

        Assert.Equal(6, _plain.Counters.Drops(DropReason.DestinationFull));
        Assert.Equal(1, _plain.Counters.SoftwareSegmented);

        // Nothing is received again: the frame was half delivered, so it was not held.
        _plain.TransmitBudget = -1;
        _pipeline.RunOnce();
        Assert.Empty(TakeAll(_plain));
    }

    [Fact]
    public void AGsoFrameWithBrokenHeadersIsDroppedAsOffloadUnsupportedAndNeverThrows()
    {
        var gso = GsoFrames.Build(TcpSpec(payload: 5000, mss: 1448));
        var bytes = gso.Bytes.ToArray();
        BinaryPrimitives.WriteUInt16BigEndian(bytes.AsSpan(gso.L3 + 2), 9000); // IPv4 total length beyond the frame
        Assert.True(_source.TryInject(bytes, gso.Header));
        Assert.True(_source.TryInject(gso.Bytes, gso.Header with { GsoSize = 0 }));
        _pipeline.RunOnce();

        Assert.Empty(TakeAll(_plain));
        Assert.Equal(2, _plain.Counters.Drops(DropReason.OffloadUnsupported));
        Assert.Equal(0, _plain.Counters.SoftwareSegmented);
        Assert.Equal(2, TakeAll(_offloading).Count);
        Assert.Equal(0, _pipeline.Errors);
    }

    [Fact]
    public void SegmentingInTheWorkerAllocatesNothing()
    {
        var gso = GsoFrames.Build(TcpSpec(payload: 60_000, mss: 1448));
        var header = gso.Header;
        void Round()
        {
            _source.TryInject(gso.Bytes, header);
            _pipeline.RunOnce();
            while (_plain.TryTake(_taken, out _, out _))
            {
            }

            while (_offloading.TryTake(_taken, out _, out _))
            {
            }
        }

        for (var i = 0; i < 20; i++)
        {
            Round();
        }

        var allocated = GC.GetAllocatedBytesForCurrentThread();
        for (var i = 0; i < 100; i++)
        {
            Round();
        }

        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - allocated);
        Assert.Equal(120, _plain.Counters.SoftwareSegmented);
        Assert.Equal(120 * gso.ExpectedSegments, _plain.Counters.TxFrames);
    }

    private static GsoSpec TcpSpec(int payload, int mss) => new(
        Vlan: false, Ipv6: false, Transport: Transport.Tcp, Ipv4OptionWords: 0, TcpOptionWords: 0, PayloadLength: payload,
        GsoSize: mss, IpId: 7, DontFragment: true, Sequence: 1000, TcpFlags: GsoFrames.TcpPsh, Ecn: false, PayloadSeed: payload, HeaderLengthHint: 0, Flow: 1);

    private List<(byte[] Bytes, VirtioNetHeader Header)> TakeAll(InMemoryPort port)
    {
        var frames = new List<(byte[], VirtioNetHeader)>();
        while (port.TryTake(_taken, out var length, out var header))
        {
            frames.Add((_taken.AsSpan(0, length).ToArray(), header));
        }

        return frames;
    }

    /// <summary>Every frame to every other port that is up.</summary>
    private sealed class FloodProcessor : FrameProcessor
    {
        public override string Name => "flood";

        public override void Process(FrameBurst burst)
        {
            for (var i = 0; i < burst.Count; i++)
            {
                burst.Flood(i);
            }
        }
    }
}
