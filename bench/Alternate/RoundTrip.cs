using Rings.Benchmarks;
using Rings.Chains;
using Rings.Memory;
using Rings.Packed;
using Rings.Split;

namespace Rings.Alternate;

/// <summary>
/// The round trip of <c>RingRoundTripBenchmarks.SplitBurst</c>/<c>PackedBurst</c> (the same
/// <see cref="BurstRoundTrip"/>) over one ring of its own, built against whichever Rings assembly
/// its load context resolves.
/// </summary>
public sealed class RoundTrip
{
    /// <summary>Packets per step.</summary>
    public const int Packets = 1024;

    private const int QueueSize = 256;
    private readonly IDriverRing _driver;
    private readonly IDeviceRing _device;
    private readonly bool _inOrder;
    private readonly BurstRoundTrip _bursts;

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
        _bursts = new BurstRoundTrip(new BufferSegment(guest + (ulong)layout.TotalBytes, 64), burst);
    }

    /// <summary>Makes a round trip and returns its step, <see cref="Packets"/> packets per call.</summary>
    /// <param name="ring">"split" or "packed".</param>
    /// <param name="inOrder">Whether VIRTIO_F_IN_ORDER is negotiated.</param>
    /// <param name="burst">Buffers per publish (a power of two up to the queue size, 256).</param>
    /// <param name="singles">Whether the device pops with PopSingles rather than PopBurst.</param>
    /// <returns>The step; it returns a checksum of the ids taken back.</returns>
    public static Func<long> Create(string ring, bool inOrder, int burst, bool singles)
    {
        var trip = new RoundTrip(ring, inOrder, burst);
        return (ring, singles) switch
        {
            ("packed", true) => trip.RunPackedSingles,
            ("packed", false) => trip.RunPacked,
            (_, true) => trip.RunSplitSingles,
            _ => trip.RunSplit,
        };
    }

    // The sealed ring types named, so the shared loop's ring calls are direct, as in the benchmark.
    private long RunSplit() => _bursts.Run<SplitDriverRing, SplitDeviceRing, BurstPops>((SplitDriverRing)_driver, (SplitDeviceRing)_device, _inOrder, Packets);

    private long RunPacked() => _bursts.Run<PackedDriverRing, PackedDeviceRing, BurstPops>((PackedDriverRing)_driver, (PackedDeviceRing)_device, _inOrder, Packets);

    private long RunSplitSingles() => _bursts.Run<SplitDriverRing, SplitDeviceRing, SinglePops>((SplitDriverRing)_driver, (SplitDeviceRing)_device, _inOrder, Packets);

    private long RunPackedSingles() => _bursts.Run<PackedDriverRing, PackedDeviceRing, SinglePops>((PackedDriverRing)_driver, (PackedDeviceRing)_device, _inOrder, Packets);
}
