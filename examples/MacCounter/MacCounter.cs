using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Rings.Linux.Net;
using Rings.Linux.Ports;
using Rings.Linux.Runtime;

namespace MacCounterExample;

/// <summary>
/// Joins two ports like a patch cable with a meter and a filter: counts frames and bytes per
/// source MAC address, drops every frame of one EtherType, and sends the rest out of the other
/// port. Runs on one worker; nothing is allocated per frame once an address has been seen.
/// </summary>
public sealed class MacCounter : FrameProcessor
{
    private const int MaxSources = 4096; // a flood of new source addresses cannot grow the table past this
    private readonly Dictionary<MacAddress, Traffic> _bySource = new(MaxSources);
    private readonly ushort _dropEtherType;

    /// <summary>Creates the processor.</summary>
    /// <param name="dropEtherType">The EtherType to drop, for example 0x86DD (IPv6).</param>
    public MacCounter(ushort dropEtherType) => _dropEtherType = dropEtherType;

    /// <summary>Frames dropped for their EtherType.</summary>
    public long Dropped { get; private set; }

    /// <summary>Frames and bytes by source address (read once the pipeline has stopped).</summary>
    public IReadOnlyDictionary<MacAddress, Traffic> BySource => _bySource;

    /// <inheritdoc/>
    public override void Attach(IReadOnlyList<Port> ports, int workers)
    {
        if (ports.Count != 2 || workers != 1)
        {
            throw new ArgumentException("MacCounter joins two ports on one worker");
        }
    }

    /// <inheritdoc/>
    public override void Process(FrameBurst burst)
    {
        var other = 1 - burst.IngressIndex;
        for (var i = 0; i < burst.Count; i++)
        {
            // The head holds the Ethernet header at least: shorter frames never reach a processor.
            var head = burst.Head(i);
            var source = MacAddress.Read(head[6..]);
            ref var traffic = ref CollectionsMarshal.GetValueRefOrNullRef(_bySource, source);
            if (!System.Runtime.CompilerServices.Unsafe.IsNullRef(ref traffic))
            {
                traffic = new Traffic(traffic.Frames + 1, traffic.Bytes + burst.Length(i));
            }
            else if (_bySource.Count < MaxSources)
            {
                _bySource[source] = new Traffic(1, burst.Length(i));
            }

            if (BinaryPrimitives.ReadUInt16BigEndian(head[12..]) == _dropEtherType)
            {
                burst.Drop(i, DropReason.Filtered);
                Dropped++;
            }
            else
            {
                burst.Forward(i, other);
            }
        }
    }
}

/// <summary>What one source sent.</summary>
/// <param name="Frames">Frames.</param>
/// <param name="Bytes">Bytes, Ethernet header included.</param>
public readonly record struct Traffic(long Frames, long Bytes);
