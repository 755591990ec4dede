using System.Buffers.Binary;
using System.Net;
using FsCheck;
using FsCheck.Xunit;
using Rings.Linux.Net;
using Rings.Testing.Traffic;

namespace Rings.Tests.Net;

/// <summary>
/// The flow hash that spreads frames over queue pairs: the published Toeplitz verification
/// vectors for the Microsoft key (IPv4 and IPv6, with and without ports), frames hashed as RSS
/// hashes them, stability, spread over pairs, and the test frames' flows landing on their pairs.
/// </summary>
public class FlowHashTests
{
    // Microsoft's "Verifying the RSS hash calculation" table: destination, source, then the hash of
    // the addresses alone and of addresses and ports. The input is source address, destination
    // address, source port, destination port.
    public static TheoryData<string, int, string, int, uint, uint> Vectors => new()
    {
        { "161.142.100.80", 1766, "66.9.149.187", 2794, 0x323e8fc2, 0x51ccc178 },
        { "65.69.140.83", 4739, "199.92.111.2", 14230, 0xd718262a, 0xc626b0ea },
        { "12.22.207.184", 38024, "24.19.198.95", 12898, 0xd2d0a5de, 0x5c2b394a },
        { "209.142.163.6", 2217, "38.27.205.30", 48228, 0x82989176, 0xafc7327f },
        { "202.188.127.2", 1303, "153.39.163.191", 44251, 0x5d1809c5, 0x10e828a2 },
        { "3ffe:2501:200:3::1", 1766, "3ffe:2501:200:1fff::7", 2794, 0x2cc18cd5, 0x40207d3d },
        { "ff02::1", 4739, "3ffe:501:8::260:97ff:fe40:efab", 14230, 0x0f0c461c, 0xdde51bbf },
        { "fe80::200:f8ff:fe21:67cf", 38024, "3ffe:1900:4545:3:200:f8ff:fe21:67cf", 44251, 0x4b61e985, 0x02d1feef },
    };

    [Theory]
    [MemberData(nameof(Vectors))]
    public void ToeplitzMatchesThePublishedVectors(string destination, int destinationPort, string source, int sourcePort, uint addressesOnly, uint withPorts)
    {
        var src = IPAddress.Parse(source).GetAddressBytes();
        var dst = IPAddress.Parse(destination).GetAddressBytes();
        byte[] addresses = [.. src, .. dst];
        var ports = new byte[4];
        BinaryPrimitives.WriteUInt16BigEndian(ports, (ushort)sourcePort);
        BinaryPrimitives.WriteUInt16BigEndian(ports.AsSpan(2), (ushort)destinationPort);
        Assert.Equal(addressesOnly, FlowHash.Toeplitz(FlowHash.MicrosoftKey, addresses));
        Assert.Equal(withPorts, FlowHash.Toeplitz(FlowHash.MicrosoftKey, [.. addresses, .. ports]));
    }

    [Theory]
    [MemberData(nameof(Vectors))]
    public void FramesHashLikeRss(string destination, int destinationPort, string source, int sourcePort, uint addressesOnly, uint withPorts)
    {
        var src = IPAddress.Parse(source);
        var dst = IPAddress.Parse(destination);

        // TCP and UDP hash with their ports; another protocol, or a fragment, by the addresses alone.
        Assert.Equal(withPorts, FlowHash.OfFrame(Frame(src, dst, 6, sourcePort, destinationPort)));
        Assert.Equal(withPorts, FlowHash.OfFrame(Frame(src, dst, 17, sourcePort, destinationPort)));
        Assert.Equal(withPorts, FlowHash.OfFrame(Frame(src, dst, 17, sourcePort, destinationPort, vlan: true)));
        Assert.Equal(addressesOnly, FlowHash.OfFrame(Frame(src, dst, 1, sourcePort, destinationPort)));
        if (src.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork)
        {
            Assert.Equal(addressesOnly, FlowHash.OfFrame(Frame(src, dst, 17, sourcePort, destinationPort, fragment: true)));
        }
    }

    [Property(MaxTest = 300)]
    public bool EveryFrameOfAFlowHashesAlike(byte[] payload, ushort sourcePort, ushort destinationPort, uint source, uint destination, bool tcp)
    {
        // The hash reads only the flow's fields: any payload, any length, the same pair.
        var a = new IPAddress(source);
        var b = new IPAddress(destination);
        var first = Frame(a, b, tcp ? 6 : 17, sourcePort, destinationPort);
        byte[] second = [.. first, .. payload];
        second[first.Length - 1] ^= 0xFF;
        return FlowHash.OfFrame(first) == FlowHash.OfFrame(second);
    }

    [Property(MaxTest = 200)]
    public bool PairOfStaysInRange(uint hash, PositiveInt pairs)
    {
        var n = ((pairs.Get - 1) % FlowHash.IndirectionEntries) + 1;
        var pair = FlowHash.PairOf(hash, n);
        return pair >= 0 && pair < n;
    }

    [Theory]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    [InlineData(8)]
    public void ManyFlowsSpreadOverEveryPair(int pairs)
    {
        // 4,096 UDP flows with random addresses and ports: every pair gets a fair share (within 25 %).
        var random = new Random(12);
        var counts = new int[pairs];
        const int Flows = 4096;
        for (var i = 0; i < Flows; i++)
        {
            var frame = Frame(new IPAddress((uint)random.Next()), new IPAddress((uint)random.Next()), 17, random.Next(65536), random.Next(65536));
            counts[FlowHash.PairOf(FlowHash.OfFrame(frame), pairs)]++;
        }

        var fair = Flows / pairs;
        Assert.All(counts, c => Assert.InRange(c, fair * 3 / 4, fair * 5 / 4));
    }

    [Fact]
    public void TestFramesOfEachPairsFlowLandOnThatPair()
    {
        var frame = new byte[64];
        foreach (var pairs in new[] { 1, 2, 3, 4, 7, 8, 16, 64, 128 })
        {
            var flows = new HashSet<ushort>();
            for (var pair = 0; pair < pairs; pair++)
            {
                var flow = TestFrame.FlowFor(pair, pairs);
                flows.Add(flow);
                TestFrame.Write(frame, (ulong)pair, 0, flow);
                Assert.Equal(pair, FlowHash.PairOf(FlowHash.OfFrame(frame), pairs));
                Assert.True(TestFrame.TryRead(frame, out var sequence, out _) && sequence == (ulong)pair, "the frame still checks out");
            }

            Assert.Equal(pairs, flows.Count);
        }
    }

    [Fact]
    public void ShortAndOddFramesDoNotThrow()
    {
        Assert.Equal(0u, FlowHash.OfFrame([]));
        Assert.Equal(0u, FlowHash.OfFrame(new byte[13]));

        // An IPv4 EtherType with a truncated header falls back to the MAC addresses.
        var truncated = new byte[20];
        truncated[12] = 0x08;
        truncated[14] = 0x45;
        Assert.Equal(FlowHash.Toeplitz(FlowHash.MicrosoftKey, truncated.AsSpan(0, 12)), FlowHash.OfFrame(truncated));
        Assert.Throws<ArgumentException>(() => FlowHash.Toeplitz(FlowHash.MicrosoftKey, new byte[37]));
    }

    // An Ethernet frame carrying IPv4 or IPv6 and the first 4 bytes of a transport header (ports).
    private static byte[] Frame(IPAddress source, IPAddress destination, int protocol, int sourcePort, int destinationPort, bool vlan = false, bool fragment = false)
    {
        var v6 = source.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6;
        var l3 = vlan ? 18 : 14;
        var ipBytes = v6 ? 40 : 20;
        var frame = new byte[l3 + ipBytes + 8];
        frame[0] = 0x02;
        frame[6] = 0x02;
        if (vlan)
        {
            BinaryPrimitives.WriteUInt16BigEndian(frame.AsSpan(12), 0x8100);
            BinaryPrimitives.WriteUInt16BigEndian(frame.AsSpan(14), 7);
        }

        BinaryPrimitives.WriteUInt16BigEndian(frame.AsSpan(l3 - 2), v6 ? (ushort)0x86DD : (ushort)0x0800);
        var ip = frame.AsSpan(l3);
        if (v6)
        {
            ip[0] = 0x60;
            ip[6] = (byte)protocol;
            source.GetAddressBytes().CopyTo(ip[8..]);
            destination.GetAddressBytes().CopyTo(ip[24..]);
        }
        else
        {
            ip[0] = 0x45;
            ip[9] = (byte)protocol;
            if (fragment)
            {
                BinaryPrimitives.WriteUInt16BigEndian(ip[6..], 0x2000); // more fragments
            }

            source.GetAddressBytes().CopyTo(ip[12..]);
            destination.GetAddressBytes().CopyTo(ip[16..]);
        }

        BinaryPrimitives.WriteUInt16BigEndian(ip[ipBytes..], (ushort)sourcePort);
        BinaryPrimitives.WriteUInt16BigEndian(ip[(ipBytes + 2)..], (ushort)destinationPort);
        return frame;
    }
}
