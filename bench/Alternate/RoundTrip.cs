using Rings.Chains;
using Rings.Memory;
using Rings.Packed;
using Rings.Split;

namespace Rings.Alternate;

/// <summary>
/// The burst round trip of <c>RingRoundTripBenchmarks.SplitBurst</c>/<c>PackedBurst</c>: the driver
/// adds a burst of one-segment buffers and publishes, the device pops them, returns them (one used
/// entry per buffer, or one per burst under IN_ORDER) and publishes, the driver takes them back.
/// Built against whichever Rings assembly its load context resolves.
/// </summary>
public sealed class RoundTrip
{
    /// <summary>Packets per <see cref="Run"/>.</summary>
    public const int Packets = 1024;

    private const int QueueSize = 256;
    private readonly IDriverRing _driver;
    private readonly IDeviceRing _device;
    private readonly bool _inOrder;
    private readonly BufferSegment[] _segments;
    private readonly ushort[] _ids;
    private readonly PoppedChain[] _chains;
    private readonly ChainSegment[] _chainSegments;
    private readonly ChainToken[] _tokens;
    private readonly UsedElement[] _used;

    // Kept alive for the rings' lifetime (its memory is theirs).
    private readonly NativeRegion _region;

    private RoundTrip(string ring, bool inOrder, int burst)
    {
        var format = ring == "packed" ? RingFormat.Packed : RingFormat.Split;
        var layout = format.Layout(QueueSize);
        const ulong guest = 0x10_0000;
        _region = new NativeRegion((ulong)layout.TotalBytes + 4096, guest);
        var memory = new GuestMemory(_region.Region);
        var features = inOrder ? VirtioFeatures.InOrder : VirtioFeatures.None;
        if (ring == "packed")
        {
            _driver = new PackedDriverRing(memory, layout.At(guest), QueueSize, features);
            _device = new PackedDeviceRing(memory, layout.At(guest), QueueSize, features);
        }
        else
        {
            _driver = new SplitDriverRing(memory, layout.At(guest), QueueSize, features);
            _device = new SplitDeviceRing(memory, layout.At(guest), QueueSize, features);
        }

        _inOrder = inOrder;
        _segments = Enumerable.Repeat(new BufferSegment(guest + (ulong)layout.TotalBytes, 64), burst).ToArray();
        _ids = new ushort[burst];
        _chains = new PoppedChain[burst];
        _chainSegments = new ChainSegment[burst];
        _tokens = new ChainToken[burst];
        _used = new UsedElement[burst];
    }

    /// <summary>Makes a round trip and returns its step, <see cref="Packets"/> packets per call.</summary>
    /// <param name="ring">"split" or "packed".</param>
    /// <param name="inOrder">Whether VIRTIO_F_IN_ORDER is negotiated.</param>
    /// <param name="burst">Buffers per publish (a power of two up to the queue size, 256).</param>
    /// <returns>The step; it returns a checksum of the ids taken back.</returns>
    public static Func<long> Create(string ring, bool inOrder, int burst)
    {
        var trip = new RoundTrip(ring, inOrder, burst);
        return ring == "packed" ? trip.RunPacked : trip.RunSplit;
    }

    private long RunSplit() => Run((SplitDriverRing)_driver, (SplitDeviceRing)_device);

    private long RunPacked() => Run((PackedDriverRing)_driver, (PackedDeviceRing)_device);

    // Generic over the sealed ring types, so each ring's calls are direct, as in the benchmark.
    private long Run<TDriver, TDevice>(TDriver driver, TDevice device)
        where TDriver : IDriverRing
        where TDevice : IDeviceRing
    {
        var segments = _segments.AsSpan();
        var chains = _chains.AsSpan();
        var tokens = _tokens.AsSpan();
        var used = _used.AsSpan();
        long sum = 0;
        for (var done = 0; done < Packets; done += segments.Length)
        {
            driver.TryAddBurst(segments, false, _ids);
            driver.Publish();
            var popped = device.PopBurst(chains, _chainSegments);
            if (_inOrder)
            {
                var descriptors = 0;
                for (var i = 0; i < popped; i++)
                {
                    descriptors += chains[i].Token.DescriptorCount;
                }

                device.PushUsedInOrderBatch(chains[popped - 1].Token, 0, popped, descriptors);
            }
            else
            {
                for (var i = 0; i < popped; i++)
                {
                    tokens[i] = chains[i].Token;
                }

                device.PushUsedBurst(tokens[..popped], default);
            }

            device.PublishUsed();
            var taken = driver.TakeUsed(used);
            if (taken != popped || popped != segments.Length)
            {
                throw new InvalidOperationException($"a round trip lost packets: {segments.Length} added, {popped} popped, {taken} taken back");
            }

            for (var i = 0; i < taken; i++)
            {
                sum += used[i].Id;
            }
        }

        return sum;
    }
}
