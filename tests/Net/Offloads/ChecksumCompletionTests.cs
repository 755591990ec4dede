using System.Buffers.Binary;
using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using Rings.Linux.Net;

namespace Rings.Tests.Net.Offloads;

public class ChecksumCompletionTests
{
    private const byte GuardByte = 0x5A;

    // Single (non-GSO) frames with a partial checksum, as a guest with VIRTIO_NET_F_CSUM sends them.
    private static Gen<GsoSpec> PartialFrames =>
        GsoFrames.Specs.Select(s => s with
        {
            PayloadLength = s.PayloadLength % 9001,
            Transport = s.Transport == Transport.UdpFragments ? Transport.UdpSegments : s.Transport,
        });

    [Property(MaxTest = 300)]
    public Property CompletedFramesVerifyAndTheHeaderSaysSo() =>
        Prop.ForAll(PartialFrames.ToArbitrary(), ArbMap.Default.ArbFor<bool>(), (spec, dataValid) =>
        {
            var (frame, header) = Partial(spec);
            Assert.Equal(OffloadStatus.Ok, ChecksumOffload.Complete(frame.Bytes, ref header, dataValid));
            Assert.Equal(dataValid ? VirtioNetHeader.FlagDataValid : 0, header.Flags);
            Assert.Equal(0, header.CsumStart);
            Assert.Equal(0, header.CsumOffset);
            var l4 = frame.Bytes.AsSpan(frame.L4);
            Assert.Equal(0xFFFF, Rfc1071.Sum(l4, Rfc1071.PseudoHeader(frame.Addresses, frame.Protocol, l4.Length)));
            if (frame.Protocol == 17)
            {
                Assert.NotEqual(0, BinaryPrimitives.ReadUInt16BigEndian(l4[6..]));
            }
        });

    [Property(MaxTest = 2)]
    public Property TsharkFindsCompletedChecksumsGood() =>
        Prop.ForAll(Gen.ArrayOf(PartialFrames, 150).ToArbitrary(), specs =>
        {
            var frames = specs.Select((s, i) => Partial(s with { Flow = i + 1 })).ToArray();
            foreach (var (frame, header) in frames)
            {
                var h = header;
                Assert.Equal(OffloadStatus.Ok, ChecksumOffload.Complete(frame.Bytes, ref h, markDataValid: false));
            }

            var rows = Tshark.Dissect(frames.Select(f => f.Frame.Bytes).ToArray(), "tcp.checksum.status", "udp.checksum.status", "_ws.expert.severity");
            for (var i = 0; i < frames.Length; i++)
            {
                var field = frames[i].Frame.Protocol == 6 ? "tcp.checksum.status" : "udp.checksum.status";
                Assert.True(rows[i][field] == Tshark.ChecksumGood, $"frame {i}: {frames[i].Frame.Spec}");
                Assert.DoesNotContain(Tshark.SeverityError, rows[i]["_ws.expert.severity"].Split(','));
            }
        });

    [Fact]
    public void AHeaderWithoutNeedsCsumLeavesFrameAndHeaderAlone()
    {
        var (frame, header) = Partial(GsoFrames.Build(Spec()).Spec);
        header.Flags = 0;
        var before = frame.Bytes.ToArray();
        var copy = header;
        Assert.Equal(OffloadStatus.Ok, ChecksumOffload.Complete(frame.Bytes, ref header, markDataValid: true));
        Assert.Equal(before, frame.Bytes);
        Assert.Equal(copy, header);
    }

    [Fact]
    public void OffsetsOutsideTheFrameAreNamed()
    {
        var frame = new byte[100];
        Assert.Equal(OffloadStatus.ChecksumStartBeyondFrame, ChecksumOffload.Complete(frame, 101, 0));
        Assert.Equal(OffloadStatus.ChecksumFieldBeyondFrame, ChecksumOffload.Complete(frame, 100, 0));
        Assert.Equal(OffloadStatus.ChecksumFieldBeyondFrame, ChecksumOffload.Complete(frame, 90, 9));
        Assert.Equal(OffloadStatus.ChecksumStartBeyondFrame, ChecksumOffload.Complete(frame, 0xFFFF, 0xFFFF));
        Assert.Equal(OffloadStatus.ChecksumFieldBeyondFrame, ChecksumOffload.Complete(frame, 0, 0xFFFF));
        Assert.Equal(OffloadStatus.Ok, ChecksumOffload.Complete(frame, 90, 8));
        Assert.All(frame.AsSpan(0, 98).ToArray(), b => Assert.Equal(0, b));

        // The sum of zeros is 0: its complement is stored as 0xFFFF.
        Assert.Equal(0xFFFF, BinaryPrimitives.ReadUInt16BigEndian(frame.AsSpan(98)));
    }

    [Fact]
    public void UdpNeverCarriesAZeroChecksumAndTcpKeepsThePlainComplement()
    {
        // Data whose sum is 0xFFFF: the complement is 0, sent as 0xFFFF for UDP (offset 6) only.
        var frame = new byte[20];
        frame[2] = 0xFF;
        frame[3] = 0xFF;
        Assert.Equal(OffloadStatus.Ok, ChecksumOffload.Complete(frame, 0, 6));
        Assert.Equal(0xFFFF, BinaryPrimitives.ReadUInt16BigEndian(frame.AsSpan(6)));
        frame.AsSpan(6, 2).Clear();
        Assert.Equal(OffloadStatus.Ok, ChecksumOffload.Complete(frame, 0, 16));
        Assert.Equal(0, BinaryPrimitives.ReadUInt16BigEndian(frame.AsSpan(16)));
    }

    [Property(MaxTest = 3000)]
    public void HostileOffsetsNeverWriteOutsideTheFrame(byte[] bytes, ushort start, ushort offset, bool near)
    {
        // Offsets near the frame's end half of the time, anywhere in 16 bits otherwise.
        if (near)
        {
            start = (ushort)(start % (bytes.Length + 3));
            offset = (ushort)(offset % 5);
        }

        var buffer = new byte[64 + bytes.Length + 64];
        Array.Fill(buffer, GuardByte);
        bytes.CopyTo(buffer, 64);
        var frame = buffer.AsSpan(64, bytes.Length);
        var header = new VirtioNetHeader { Flags = VirtioNetHeader.FlagNeedsCsum, CsumStart = start, CsumOffset = offset };
        var status = ChecksumOffload.Complete(frame, ref header, markDataValid: false);
        var fits = start + offset + 2 <= bytes.Length;
        Assert.Equal(fits, status == OffloadStatus.Ok);
        Assert.All(buffer.AsSpan(0, 64).ToArray(), b => Assert.Equal(GuardByte, b));
        Assert.All(buffer.AsSpan(64 + bytes.Length).ToArray(), b => Assert.Equal(GuardByte, b));
        if (!fits)
        {
            Assert.Equal(bytes, frame.ToArray());
            Assert.Equal(VirtioNetHeader.FlagNeedsCsum, header.Flags);
        }
        else
        {
            // Only the two checksum bytes may change.
            var field = start + offset;
            for (var i = 0; i < bytes.Length; i++)
            {
                if (i != field && i != field + 1)
                {
                    Assert.Equal(bytes[i], frame[i]);
                }
            }
        }
    }

    private static GsoSpec Spec() => new(
        Vlan: false, Ipv6: false, Transport.Tcp, 0, 0, 100, 1448, 1, false, 5, 0x18, false, 9, 0, 1);

    // The frame as one packet (gso_type NONE) with the pseudo-header sum in the checksum field.
    private static (GsoFrame Frame, VirtioNetHeader Header) Partial(GsoSpec spec)
    {
        var frame = GsoFrames.Build(spec);
        var header = frame.Header;
        header.GsoType = VirtioNetGso.None;
        header.GsoSize = 0;
        header.HeaderLength = 0;
        return (frame, header);
    }
}
