using System.Buffers.Binary;
using Rings.Linux.Net;
using Rings.Linux.Ports;
using Rings.Linux.Runtime;

namespace Rings.Tests.Runtime;

/// <summary>A partial checksum sent to a port that did not negotiate the offload is completed on the way (5.1.6.2).</summary>
public class SoftwareChecksumTests
{
    private const int UdpLength = 8 + 20;
    private const int FrameLength = 14 + 20 + UdpLength;

    // Ethernet, IPv4 (169.254.1.1 -> 169.254.1.2), UDP with the pseudo-header sum seeded in its
    // checksum field, as a driver that sets NEEDS_CSUM leaves it.
    private static byte[] PartialUdp()
    {
        var f = new byte[FrameLength];
        byte[] dst = [0x02, 0, 0, 0, 0, 2], src = [0x02, 0, 0, 0, 0, 1];
        dst.CopyTo(f, 0);
        src.CopyTo(f, 6);
        BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(12), 0x0800);
        var ip = f.AsSpan(14, 20);
        ip[0] = 0x45;
        BinaryPrimitives.WriteUInt16BigEndian(ip[2..], 20 + UdpLength);
        ip[8] = 64;
        ip[9] = 17;
        byte[] a = [169, 254, 1, 1], b = [169, 254, 1, 2];
        a.CopyTo(ip[12..]);
        b.CopyTo(ip[16..]);
        var udp = f.AsSpan(34, UdpLength);
        BinaryPrimitives.WriteUInt16BigEndian(udp, 5000);
        BinaryPrimitives.WriteUInt16BigEndian(udp[2..], 9);
        BinaryPrimitives.WriteUInt16BigEndian(udp[4..], UdpLength);
        for (var i = 8; i < UdpLength; i++)
        {
            udp[i] = (byte)(i * 7);
        }

        uint pseudo = 0xA9FE + 0x0101 + 0xA9FE + 0x0102 + 17 + UdpLength;
        pseudo = (pseudo & 0xFFFF) + (pseudo >> 16);
        BinaryPrimitives.WriteUInt16BigEndian(udp[6..], (ushort)pseudo);
        return f;
    }

    // Ones' complement sum of the pseudo-header and the whole datagram: 0xFFFF when the checksum is right.
    private static uint Verify(ReadOnlySpan<byte> frame)
    {
        uint sum = 0xA9FE + 0x0101 + 0xA9FE + 0x0102 + 17 + UdpLength;
        var udp = frame.Slice(34, UdpLength);
        for (var i = 0; i < udp.Length; i += 2)
        {
            sum += BinaryPrimitives.ReadUInt16BigEndian(udp[i..]);
        }

        while (sum > 0xFFFF)
        {
            sum = (sum & 0xFFFF) + (sum >> 16);
        }

        return sum;
    }

    [Fact]
    public void APartialChecksumIsCompletedForAPortWithoutTheOffloadAndTheSourceIsNotWritten()
    {
        using var a = new InMemoryPort("a");
        using var b = new InMemoryPort("b");
        a.Open();
        b.Open();
        using var pipeline = new Pipeline([a, b], new PatchProcessor());
        var frame = PartialUdp();
        Assert.NotEqual(0xFFFFu, Verify(frame));
        Assert.True(a.TryInject(frame, new VirtioNetHeader { Flags = VirtioNetHeader.FlagNeedsCsum, CsumStart = 34, CsumOffset = 6 }));
        pipeline.RunOnce();

        var got = new byte[2048];
        Assert.True(b.TryTake(got, out var length, out var header));
        Assert.Equal(FrameLength, length);
        Assert.Equal(0xFFFFu, Verify(got.AsSpan(0, length)));
        Assert.Equal(0, header.Flags);
        Assert.Equal(0, header.CsumStart);
        Assert.Equal(0, header.CsumOffset);

        // Only the checksum field changed.
        Assert.True(got.AsSpan(0, 40).SequenceEqual(frame.AsSpan(0, 40)));
        Assert.True(got.AsSpan(42, length - 42).SequenceEqual(frame.AsSpan(42)));
        Assert.Equal(0, b.Counters.TotalDrops);
    }

    [Fact]
    public void AChecksumFieldOutsideTheFrameIsDroppedAsOffloadUnsupported()
    {
        using var a = new InMemoryPort("a");
        using var b = new InMemoryPort("b");
        a.Open();
        b.Open();
        using var pipeline = new Pipeline([a, b], new PatchProcessor());
        Assert.True(a.TryInject(PartialUdp(), new VirtioNetHeader { Flags = VirtioNetHeader.FlagNeedsCsum, CsumStart = 34, CsumOffset = UdpLength - 1 }));
        Assert.True(a.TryInject(PartialUdp(), new VirtioNetHeader { Flags = VirtioNetHeader.FlagNeedsCsum, CsumStart = FrameLength, CsumOffset = 0 }));
        pipeline.RunOnce();

        Assert.False(b.TryTake(new byte[2048], out _, out _));
        Assert.Equal(2, b.Counters.Drops(DropReason.OffloadUnsupported));
        Assert.Equal(2, b.Counters.TotalDrops);
    }
}
