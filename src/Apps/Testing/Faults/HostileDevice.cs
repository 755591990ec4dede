using System.Buffers.Binary;
using Rings.Chains;
using Rings.Linux.Net;
using Rings.Linux.VhostUser;
using Rings.Split;

namespace Rings.Testing.Faults;

/// <summary>
/// A reflecting data path that turns on its driver after <see cref="HonestFrames"/> honest frames,
/// to prove the driver never trusts the device. <see cref="HostileHost"/> runs one per front-end.
/// </summary>
/// <remarks>
/// Kinds: <c>scribble</c> (random bytes into the used ring, or the packed descriptor ring where used
/// descriptors are written, while frames flow), <c>lie-id</c> (a used element naming a buffer id
/// that is not outstanding), <c>lie-length</c> (used lengths larger than the buffers: the receive
/// buffer's writable length, and non-zero for a transmit buffer the device may not write),
/// <c>mergeable</c> (every fourth frame with a bad <c>num_buffers</c>: 0, 2, 65 or 65535).
/// </remarks>
public sealed class HostileDevice
{
    /// <summary>The kinds of misbehaviour.</summary>
    public static readonly string[] Kinds = ["scribble", "lie-id", "lie-length", "mergeable"];

    /// <summary>Frames forwarded honestly before misbehaving, so the driver is in full flow.</summary>
    public const int HonestFrames = 1000;

    private static readonly ushort[] BadBufferCounts = [0, 2, 65, 65535];

    private readonly string _kind;
    private readonly IDeviceRing _tx;
    private readonly IDeviceRing _rx;
    private readonly DeviceRingSetup _txSetup;
    private readonly DeviceRingSetup _rxSetup;
    private readonly IDoorbell _txKick;
    private readonly IDoorbell _txCall;
    private readonly IDoorbell _rxCall;
    private readonly int _burst;
    private readonly Random _random = new();
    private readonly byte[] _scratch = new byte[65536 + VirtioNetHeader.Size];
    private volatile bool _stop;
    private bool _lied;

    /// <summary>Creates the data path over a started queue pair.</summary>
    /// <param name="kind">One of <see cref="Kinds"/>.</param>
    /// <param name="tx">The transmit queue's device ring (frames come from here).</param>
    /// <param name="txSetup">Where the transmit ring lives (scribbling and lying need the ring memory itself).</param>
    /// <param name="txKick">The transmit queue's kick.</param>
    /// <param name="txCall">The transmit queue's call.</param>
    /// <param name="rx">The receive queue's device ring (frames go there).</param>
    /// <param name="rxSetup">Where the receive ring lives.</param>
    /// <param name="rxCall">The receive queue's call.</param>
    /// <param name="burst">Most frames per round.</param>
    public HostileDevice(string kind, IDeviceRing tx, in DeviceRingSetup txSetup, IDoorbell txKick, IDoorbell txCall, IDeviceRing rx, in DeviceRingSetup rxSetup, IDoorbell rxCall, int burst)
    {
        if (Array.IndexOf(Kinds, kind) < 0)
        {
            throw new ArgumentOutOfRangeException(nameof(kind), kind, "unknown kind");
        }

        _kind = kind;
        _tx = tx;
        _rx = rx;
        _txSetup = txSetup;
        _rxSetup = rxSetup;
        _txKick = txKick;
        _txCall = txCall;
        _rxCall = rxCall;
        _burst = burst;
    }

    /// <summary>Frames forwarded (honest or not).</summary>
    public long Frames;

    /// <summary>Times the loop went to sleep.</summary>
    public long Sleeps;

    /// <summary>Misbehaviours committed (scribbles, lies, bad headers).</summary>
    public long Offences;

    /// <summary>Ends <see cref="Run"/> (from another thread).</summary>
    public void Stop()
    {
        _stop = true;
        _txKick.Ring();
    }

    /// <summary>Runs until stopped; a broken queue (the driver's fault or its own) just idles it.</summary>
    public void Run()
    {
        while (!_stop)
        {
            var moved = _lied ? 0 : Round();
            _rx.PublishUsed();
            _tx.PublishUsed();
            if (_kind == "scribble" && Frames >= HonestFrames)
            {
                Scribble();
            }

            if (_rx.CallNeeded())
            {
                _rxCall.Ring();
            }

            if (_tx.CallNeeded())
            {
                _txCall.Ring();
            }

            if (moved == 0)
            {
                // Nothing moved: frames waiting for receive buffers, a broken queue, or a lie told.
                // Throughput is not the point here, so sleep briefly rather than spin.
                Sleeps++;
                _tx.EnableAvailNotifications();
                _txKick.Wait(1);
                _tx.DisableAvailNotifications();
            }
        }
    }

    // One burst: each frame copied into one receive buffer, the header rewritten, and the kind's lie told.
    private int Round()
    {
        var moved = 0;
        while (moved < _burst && _rx.HasAvailable)
        {
            var before = _tx.Position;
            if (!_tx.TryPop(out var frame))
            {
                break;
            }

            var length = frame.CopyReadableTo(_scratch);
            if (length < VirtioNetHeader.Size || !_rx.TryPop(out var buffer))
            {
                _tx.UndoPops(before);
                break;
            }

            var misbehave = Frames >= HonestFrames;
            var header = new VirtioNetHeader { NumBuffers = 1 };
            if (_kind == "mergeable" && misbehave && Frames % 4 == 3)
            {
                header.NumBuffers = BadBufferCounts[(Frames / 4) % BadBufferCounts.Length];
                Offences++;
            }

            header.TryWrite(_scratch);
            var written = (uint)buffer.CopyToWritable(_scratch.AsSpan(0, length));
            Frames++;
            moved++;
            if (misbehave && _kind == "lie-id")
            {
                LieAboutId(buffer.Token, written);
                _tx.PushUsed(frame.Token, 0);
                _lied = true;
                Offences++;
                break;
            }

            if (misbehave && _kind == "lie-length")
            {
                _rx.PushUsed(buffer.Token, (uint)Math.Min(buffer.WritableBytes + 4096, uint.MaxValue));
                _tx.PushUsed(frame.Token, 1u << 20);
                _lied = true;
                Offences++;
                break;
            }

            _rx.PushUsed(buffer.Token, written);
            _tx.PushUsed(frame.Token, 0);
        }

        return moved;
    }

    // Returns the receive buffer used, but under an id the driver never made available.
    private void LieAboutId(ChainToken token, uint written)
    {
        if (_rx is SplitDeviceRing)
        {
            // Split used elements carry a 32-bit id; one at or past the queue size is never outstanding.
            _rx.PushUsed(new ChainToken((ushort)_rx.Size, token.DescriptorCount), written);
            return;
        }

        // Packed: write the used descriptor honestly, then overwrite its id (offset 12) before
        // publishing; PublishUsed writes only the flags.
        var at = _rx.Position.UsedIndex;
        _rx.PushUsed(token, written);
        if (_rxSetup.RingMemory.TryGetSpan(_rxSetup.Areas.DescriptorArea + ((ulong)at * 16) + 12, 2, out var id))
        {
            BinaryPrimitives.WriteUInt16LittleEndian(id, ushort.MaxValue);
        }
    }

    // Eight random bytes somewhere the device writes and the driver reads: the split used ring, or
    // the packed descriptor ring.
    private void Scribble()
    {
        var onReceive = _random.Next(2) == 0;
        var ring = onReceive ? _rx : _tx;
        var s = onReceive ? _rxSetup : _txSetup;
        var (address, bytes) = ring is SplitDeviceRing
            ? (s.Areas.DeviceArea, (ulong)(4 + (8 * s.Size)))
            : (s.Areas.DescriptorArea, (ulong)(16 * s.Size));
        var offset = (ulong)_random.NextInt64((long)bytes - 8 + 1);
        if (s.RingMemory.TryGetSpan(address + offset, 8, out var span))
        {
            _random.NextBytes(span);
            Offences++;
        }
    }
}
