using Rings.Chains;
using Rings.Tests.Conformance;

namespace Rings.Tests.Split;

/// <summary>
/// The split driver skips rewriting a descriptor (or an avail entry) that already holds what it
/// would write, so a buffer going back to the descriptor it left costs the device's core no cache
/// line. These check that what the device reads is always what the driver added: after reuse,
/// and after a misbehaving device scribbled over the table.
/// </summary>
public sealed class SplitDescriptorRewriteTests : IDisposable
{
    private const int Size = 8;

    private readonly GuardedMemory _memory = new(256 * 1024, protectGuards: true);
    private readonly SplitRingPair _pair;
    private readonly ulong _buffers;

    public SplitDescriptorRewriteTests()
    {
        _pair = SplitFormat.CreateSplit(_memory, new RingSetup(Size, VirtioFeatures.None, 0, 0));
        _buffers = _memory.Allocate(64 * 1024);
    }

    public void Dispose()
    {
        _memory.AssertGuardsIntact();
        _memory.Dispose();
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void TheDeviceReadsWhatWasAddedWhenTheSameBufferReturnsToItsDescriptor(bool burst)
    {
        var driver = _pair.Driver;
        var device = _pair.Device;
        var used = new UsedElement[Size];
        for (var round = 0; round < 5; round++)
        {
            // Every round adds the same buffers, so the driver's entries are unchanged from round
            // to round, except after round 1, which scribbles over every descriptor and avail
            // entry as a device that breaks the rules might; round 4 adds device-writable buffers.
            var writable = round == 4;
            const uint length = 64;
            var ids = Add(driver, burst, writable, length);
            driver.Publish();
            for (var i = 0; i < ids.Length; i++)
            {
                Assert.True(device.TryPop(out var chain));
                Assert.Equal(ids[i], chain.Token.Id);
                Assert.Equal(1, chain.Segments.Length);
                var segment = chain.Segments[0];
                Assert.True(System.Runtime.CompilerServices.Unsafe.AreSame(
                    ref segment.Span[0], ref _memory.Bytes(_buffers + (ulong)(256 * i), 1)[0]));
                Assert.Equal(length, segment.Length);
                Assert.Equal(writable ? 0 : 1, chain.ReadableCount);
                device.PushUsed(chain.Token, 0);
            }

            device.PublishUsed();
            Assert.Equal(ids.Length, driver.TakeUsed(used));
            if (round == 1)
            {
                for (var i = 0; i < Size; i++)
                {
                    _pair.View.WriteDescriptor(i, 0xDEAD_0000, 7, SplitRingView.Next, 3);
                    _pair.View.SetAvailEntry((ushort)i, (ushort)((i + 3) % Size));
                }
            }
        }

        Assert.False(driver.IsBroken || device.IsBroken);
    }

    private ushort[] Add(IDriverRing driver, bool burst, bool writable, uint length)
    {
        var segments = new BufferSegment[4];
        for (var i = 0; i < segments.Length; i++)
        {
            segments[i] = new BufferSegment(_buffers + (ulong)(256 * i), length);
        }

        var ids = new ushort[segments.Length];
        if (burst)
        {
            Assert.Equal(segments.Length, driver.TryAddBurst(segments, writable, ids));
        }
        else
        {
            for (var i = 0; i < segments.Length; i++)
            {
                Assert.True(driver.TryAdd(segments[i], writable, out ids[i]));
            }
        }

        return ids;
    }
}
