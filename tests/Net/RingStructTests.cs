using System.Buffers.Binary;
using Rings.Chains;
using Rings.Linux.Device;
using Rings.Linux.Driver;
using Rings.Linux.Net;
using Rings.Memory;
using Rings.Packed;
using Rings.Split;
using Rings.Testing.Traffic;

namespace Rings.Tests.Net;

/// <summary>
/// The ring structs (<see cref="SplitDevice"/>, <see cref="SplitDriver"/>, <see cref="PackedDevice"/>,
/// <see cref="PackedDriver"/>) as type arguments of the driver path and the forwarder: every frame comes
/// back whole and in order, oversize frames are dropped and counted, and what the structs report is
/// what their rings report.
/// </summary>
public sealed class RingStructTests : IDisposable
{
    private const ulong Base = 0x5000_0000;
    private const int Size = 64;
    private readonly NativeRegion _region = new(8 << 20, Base);

    public void Dispose() => _region.Dispose();

    [Theory]
    [InlineData("split", 64, 2048, false)]
    [InlineData("split", 9000, 2048, true)]
    [InlineData("packed", 64, 2048, false)]
    [InlineData("packed", 9000, 2048, true)]
    public void ReflectedFramesComeBackWholeAndInOrderThroughTheStructs(string ring, int frameSize, int rxBuffer, bool mergeable)
    {
        var (txDriver, rxDriver, txDevice, rxDevice, txSlab, rxSlab) = Lay(RingFormat.Parse(ring), frameSize + VirtioNetHeader.Size, rxBuffer);
        var count = mergeable ? 2000 : 20000;
        if (txDriver is SplitDriverRing splitTx)
        {
            var path = new NetDriverPath<SplitDriver, SplitDriver>(new SplitDriver(splitTx), new SplitDriver((SplitDriverRing)rxDriver), txSlab, rxSlab, mergeable);
            Reflect(path, new SplitDevice((SplitDeviceRing)txDevice), new SplitDevice((SplitDeviceRing)rxDevice), frameSize, mergeable, count);
        }
        else
        {
            var path = new NetDriverPath<PackedDriver, PackedDriver>(new PackedDriver((PackedDriverRing)txDriver), new PackedDriver((PackedDriverRing)rxDriver), txSlab, rxSlab, mergeable);
            Reflect(path, new PackedDevice((PackedDeviceRing)txDevice), new PackedDevice((PackedDeviceRing)rxDevice), frameSize, mergeable, count);
        }

        Assert.Equal(count, txDevice.Counters.Packets);
        Assert.False(txDevice.IsBroken || rxDevice.IsBroken || txDriver.IsBroken || rxDriver.IsBroken);
    }

    [Theory]
    [InlineData("split", typeof(NetDriverPath<SplitDriver, SplitDriver>), typeof(TrafficGenerator<SplitDriver, SplitDriver>))]
    [InlineData("packed", typeof(NetDriverPath<PackedDriver, PackedDriver>), typeof(TrafficGenerator<PackedDriver, PackedDriver>))]
    public void PlainRingsGetAPathAndAGeneratorCompiledForTheirFormat(string ring, Type pathType, Type generatorType)
    {
        var (txDriver, rxDriver, txDevice, rxDevice, txSlab, rxSlab) = Lay(RingFormat.Parse(ring), 64 + VirtioNetHeader.Size, 2048);
        var path = NetDriverPath.ForRings(txDriver, rxDriver, txSlab, rxSlab, mergeable: false);
        Assert.IsType(pathType, path);
        Assert.Same(txDriver, path.Transmit);
        Assert.Same(rxDriver, path.Receive);
        using SemaphoreDoorbell kick = new(), call = new();
        var generator = TrafficGenerator.Create(path, kick, kick, call, new TrafficOptions(64, 8, 0, TimeSpan.FromSeconds(5), WaitStrategy.Poll, Frames: 16));
        Assert.IsType(generatorType, generator);

        // A ring that is not one of the plain classes (here the format's struct, boxed) keeps the interface path.
        IDriverRing wrapper = txDriver is SplitDriverRing split ? new SplitDriver(split) : new PackedDriver((PackedDriverRing)txDriver);
        var wrapped = NetDriverPath.ForRings(wrapper, rxDriver, txSlab, rxSlab, mergeable: false);
        Assert.IsType<NetDriverPath<IDriverRing, IDriverRing>>(wrapped);
        Assert.False(txDevice.IsBroken || rxDevice.IsBroken);
    }

    [Theory]
    [InlineData("split")]
    [InlineData("packed")]
    public void OversizeFrameThroughTheStructsIsDroppedAndCounted(string ring)
    {
        var (txDriver, rxDriver, txDevice, rxDevice, txSlab, rxSlab) = Lay(RingFormat.Parse(ring), 4096, 2048);
        ForwardResult r;
        if (txDriver is SplitDriverRing splitTx)
        {
            var path = new NetDriverPath<SplitDriver, SplitDriver>(new SplitDriver(splitTx), new SplitDriver((SplitDriverRing)rxDriver), txSlab, rxSlab, mergeable: false);
            r = SendOneOversize(path, new SplitDevice((SplitDeviceRing)txDevice), new SplitDevice((SplitDeviceRing)rxDevice));
        }
        else
        {
            var path = new NetDriverPath<PackedDriver, PackedDriver>(new PackedDriver((PackedDriverRing)txDriver), new PackedDriver((PackedDriverRing)rxDriver), txSlab, rxSlab, mergeable: false);
            r = SendOneOversize(path, new PackedDevice((PackedDeviceRing)txDevice), new PackedDevice((PackedDeviceRing)rxDevice));
        }

        Assert.Equal(new ForwardResult(0, 1, false), r);
        Assert.Equal(1, rxDevice.Counters.Drops);
        Assert.Equal(0, txDriver.Outstanding);
    }

    [Fact]
    public void StructsReportWhatTheirRingsReport()
    {
        var (txDriver, _, txDevice, _, _, _) = Lay(RingFormat.Split, 256, 2048);
        var driver = new SplitDriver((SplitDriverRing)txDriver);
        var device = new SplitDevice((SplitDeviceRing)txDevice);
        Assert.Same(txDriver, driver.Ring);
        Assert.Same(txDevice, device.Ring);
        Assert.True(driver.TryAdd(new BufferSegment(Base + 0x10_0000, 100), deviceWritable: false, out var id));
        driver.Publish();
        Assert.Equal(txDriver.FreeDescriptors, driver.FreeDescriptors);
        Assert.Equal(1, driver.Outstanding);
        Assert.True(device.HasAvailable);
        Assert.True(device.TryPop(out var chain));
        Assert.Equal(100u, chain.ReadableBytes);
        Assert.Equal(txDevice.Position, device.Position);
        device.PushUsed(chain.Token, 0);
        device.PublishUsed();
        Assert.True(driver.TryTakeUsed(out var used));
        Assert.Equal(id, used.Id);
        device.MarkBroken(BrokenReason.HeaderTooShort);
        Assert.True(txDevice.IsBroken);
        Assert.Equal(BrokenReason.HeaderTooShort, device.BrokenReason);
        Assert.Throws<ArgumentNullException>(() => new SplitDevice(null!));
        Assert.Throws<ArgumentNullException>(() => new PackedDriver(null!));
    }

    private (IDriverRing TxDriver, IDriverRing RxDriver, IDeviceRing TxDevice, IDeviceRing RxDevice, BufferSlab TxSlab, BufferSlab RxSlab) Lay(RingFormat format, int txBuffer, int rxBuffer)
    {
        var memory = new GuestMemory(_region.Region);
        var layout = format.Layout(Size);
        var txAt = layout.At(Base);
        var rxAt = layout.At(Base + (ulong)layout.TotalBytes);
        var slabs = Base + (2 * (ulong)layout.TotalBytes);
        var txSlab = new BufferSlab(memory, slabs, Size, txBuffer);
        var rxSlab = new BufferSlab(memory, slabs + BufferSlab.BytesFor(Size, txBuffer), Size, rxBuffer);
        var features = VirtioFeatures.EventIndex;
        return (format.CreateDriver(memory, txAt, Size, features), format.CreateDriver(memory, rxAt, Size, features),
            format.CreateDevice(memory, memory, txAt, Size, features, new RingPosition(0)), format.CreateDevice(memory, memory, rxAt, Size, features, new RingPosition(0)),
            txSlab, rxSlab);
    }

    private static ForwardResult SendOneOversize<TTxDriver, TRxDriver, TTx, TRx>(NetDriverPath<TTxDriver, TRxDriver> path, TTx tx, TRx rx)
        where TTxDriver : IDriverRing
        where TRxDriver : IDriverRing
        where TTx : IDeviceRing
        where TRx : IDeviceRing
    {
        path.RefillReceive();
        Assert.True(path.TrySend(new byte[3000]));
        path.FlushTransmit();
        var r = NetForwarder.Forward(tx, rx, 32, mergeable: false);
        Assert.Equal(1, path.ReclaimTransmit());
        return r;
    }

    /// <summary>Sends <paramref name="count"/> numbered frames through the path and the forwarder and checks each comes back whole and in order.</summary>
    internal static void Reflect<TTxDriver, TRxDriver, TTx, TRx>(NetDriverPath<TTxDriver, TRxDriver> d, TTx tx, TRx rx, int frameSize, bool mergeable, int count)
        where TTxDriver : IDriverRing
        where TRxDriver : IDriverRing
        where TTx : IDeviceRing
        where TRx : IDeviceRing
    {
        d.RefillReceive();
        var frame = new byte[frameSize];
        var back = new byte[frameSize];
        ulong sent = 0, received = 0;
        var idle = 0;
        while (received < (ulong)count)
        {
            var progress = false;
            while (sent < (ulong)count && sent - received < 48)
            {
                Fill(frame, sent);
                if (!d.TrySend(frame))
                {
                    break;
                }

                sent++;
                progress = true;
            }

            d.FlushTransmit();
            var r = NetForwarder.Forward(tx, rx, 32, mergeable);
            Assert.Equal(0, r.Dropped);
            progress |= r.Frames > 0;
            while (d.TryReceive(back, out var length))
            {
                Assert.Equal(frameSize, length);
                Assert.Equal(received, BinaryPrimitives.ReadUInt64LittleEndian(back));
                Assert.True(back.AsSpan(8).SequenceEqual(Expected(frameSize, received).AsSpan(8)), $"frame {received} corrupted");
                received++;
                progress = true;
            }

            d.ReclaimTransmit();
            d.RefillReceive();
            idle = progress ? 0 : idle + 1;
            Assert.True(idle < 10, $"stalled at sent {sent} received {received}");
        }

        Assert.Equal(0, d.ReceiveErrors);
    }

    private static void Fill(Span<byte> frame, ulong seq)
    {
        for (var i = 0; i < frame.Length; i++)
        {
            frame[i] = (byte)((seq * 31) + ((ulong)i * 7));
        }

        BinaryPrimitives.WriteUInt64LittleEndian(frame, seq);
    }

    private static byte[] Expected(int length, ulong seq)
    {
        var frame = new byte[length];
        Fill(frame, seq);
        return frame;
    }
}
