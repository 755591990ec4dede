using System.Buffers.Binary;
using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using Rings.Chains;
using Rings.Packed;

namespace Rings.Tests.Packed;

/// <summary>
/// A packed driver writes every descriptor of a list (not only its head) with the AVAIL and USED
/// bits of the slot's own lap (2.8.1, 2.8.21): a list that crosses the ring end carries the
/// flipped wrap counter from slot 0 on. Rings' device reads only the head's bits, so this is
/// checked in ring memory, as a device that checks every descriptor would see it.
/// </summary>
public sealed class PackedListWrapTests
{
    [Property(MaxTest = 200)]
    public Property EveryDescriptorOfAListCarriesItsSlotsWrapCounter() =>
        Prop.ForAll(
            Gen.Elements(2, 3, 5, 7, 8).SelectMany(size => Gen.Choose(1, size).ListOf().Select(lengths => (size, lengths: lengths.ToArray()))).ToArbitrary(),
            t =>
            {
                var (size, lengths) = t;
                using var pair = RingPair.Create(RingFormat.Packed, size, bufferBytes: (ulong)size * 64);
                var position = 0;
                var wrap = true;
                foreach (var length in lengths)
                {
                    var segments = new BufferSegment[length];
                    for (var k = 0; k < length; k++)
                    {
                        segments[k] = new BufferSegment(pair.BufferAddress + ((ulong)k * 64), 16);
                    }

                    if (!pair.Driver.TryAdd(segments, [], out _))
                    {
                        return false.Label($"a list of {length} did not fit an empty ring of {size}");
                    }

                    pair.Driver.Publish();
                    for (var k = 0; k < length; k++)
                    {
                        var flags = BinaryPrimitives.ReadUInt16LittleEndian(pair.Span(pair.Areas.DescriptorArea + ((ulong)position * 16) + 14, 2));
                        var expected = wrap ? PackedFlags.Avail : PackedFlags.Used;
                        if ((flags & PackedFlags.AvailUsed) != expected)
                        {
                            return false.Label($"ring of {size}, list of {length}: descriptor {k} at slot {position} has AVAIL/USED 0x{flags & PackedFlags.AvailUsed:x4}, its lap needs 0x{expected:x4}");
                        }

                        if (++position == size)
                        {
                            position = 0;
                            wrap = !wrap;
                        }
                    }

                    // The device takes the list and gives it back, so the next one starts where this ended.
                    if (!pair.Device.TryPop(out var chain))
                    {
                        return false.Label("the device did not see the list");
                    }

                    pair.Device.PushUsed(chain.Token, 0);
                    pair.Device.PublishUsed();
                    if (!pair.Driver.TryTakeUsed(out _))
                    {
                        return false.Label("the driver did not get the list back");
                    }
                }

                return true.ToProperty();
            });
}
