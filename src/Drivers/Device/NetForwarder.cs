using Rings.Chains;
using Rings.Linux.Net;

namespace Rings.Linux.Device;

/// <summary>What one <see cref="NetForwarder.Forward{TTx, TRx}"/> call did.</summary>
/// <param name="Frames">Frames delivered into receive buffers.</param>
/// <param name="Dropped">Frames consumed but not delivered (too large for a non-mergeable receive buffer).</param>
/// <param name="ReceiveFull">True when forwarding stopped because the receive queue had no room: wait for the driver to post buffers.</param>
public readonly record struct ForwardResult(int Frames, int Dropped, bool ReceiveFull);

/// <summary>
/// The vhost-net data path for one direction: pops frames from a driver's transmit queue and
/// copies each into receive buffers of a destination driver (the sender itself when reflecting),
/// writing a fresh <c>virtio_net_hdr_v1</c>. Both used rings are published once per burst.
/// </summary>
public static class NetForwarder
{
    /// <summary>Most receive buffers one frame may span under MRG_RXBUF.</summary>
    public const int MaxMergedBuffers = 64;

    /// <summary>
    /// Moves up to <paramref name="burst"/> frames from <paramref name="tx"/> into <paramref name="rx"/>.
    /// Backs off (without dropping) when <paramref name="rx"/> lacks buffers. Publishes both used
    /// rings once; the caller asks <c>CallNeeded</c> on each afterwards.
    /// </summary>
    /// <typeparam name="TTx">Device side of the source's transmit queue.</typeparam>
    /// <typeparam name="TRx">Device side of the destination's receive queue.</typeparam>
    /// <param name="tx">The transmit queue to drain.</param>
    /// <param name="rx">The receive queue to fill.</param>
    /// <param name="burst">Most frames to move.</param>
    /// <param name="mergeable">True when VIRTIO_NET_F_MRG_RXBUF was negotiated with the destination.</param>
    /// <returns>What was done.</returns>
    public static ForwardResult Forward<TTx, TRx>(TTx tx, TRx rx, int burst, bool mergeable)
        where TTx : IDeviceRing
        where TRx : IDeviceRing
    {
        Span<ChainToken> tokens = stackalloc ChainToken[MaxMergedBuffers];
        Span<uint> written = stackalloc uint[MaxMergedBuffers];
        var frames = 0;
        var dropped = 0;
        // One look at the destination's ring per burst, not per frame: if it runs dry mid-burst,
        // the receive pop below fails and both pops are undone.
        var receiveFull = !rx.HasAvailable && !rx.IsBroken;
        while (!receiveFull && !rx.IsBroken && frames + dropped < burst)
        {
            var txBefore = tx.Position;
            if (!tx.TryPop(out var frame))
            {
                break;
            }

            if (frame.ReadableBytes < VirtioNetHeader.Size)
            {
                // 5.1.6.2: every transmitted buffer starts with the header.
                tx.MarkBroken(BrokenReason.HeaderTooShort);
                break;
            }

            var payload = (long)frame.ReadableBytes - VirtioNetHeader.Size;
            var source = new SegmentCursor(frame.Readable);
            source.Skip(VirtioNetHeader.Size);

            var rxBefore = rx.Position;
            var buffers = 0;
            long copied = 0;
            var ok = true;
            Span<byte> firstHeader = default;
            while (true)
            {
                if (!rx.TryPop(out var buffer))
                {
                    ok = false;
                    break;
                }

                var destination = new SegmentCursor(buffer.Writable);
                var count = 0;
                if (buffers == 0)
                {
                    // Rings needs the receive header in the first writable segment.
                    if (destination.Current.Length < VirtioNetHeader.Size)
                    {
                        rx.MarkBroken(BrokenReason.HeaderTooShort);
                        ok = false;
                        break;
                    }

                    firstHeader = destination.Current[..VirtioNetHeader.Size];
                    destination.Advance(VirtioNetHeader.Size);
                    count = VirtioNetHeader.Size;
                }

                var n = destination.CopyFrom(ref source, payload - copied);
                copied += n;
                tokens[buffers] = buffer.Token;
                written[buffers] = (uint)(count + n);
                buffers++;
                if (copied == payload)
                {
                    break;
                }

                if (!mergeable || buffers == MaxMergedBuffers || buffers == rx.Size)
                {
                    // Does not fit one buffer and may not be merged (5.1.6.3.1), or could never fit
                    // the whole receive ring: drop it, keep the buffers.
                    buffers = -1;
                    break;
                }
            }

            if (!ok)
            {
                // Not enough receive buffers (or a broken receive queue): put both sides back.
                rx.UndoPops(rxBefore);
                tx.UndoPops(txBefore);
                receiveFull = !rx.IsBroken;
                break;
            }

            if (buffers < 0)
            {
                rx.UndoPops(rxBefore);
                tx.PushUsed(frame.Token, 0);
                rx.Counters.RecordDrop();
                dropped++;
                continue;
            }

            var header = new VirtioNetHeader { NumBuffers = (ushort)buffers };
            header.TryWrite(firstHeader);
            rx.PushUsedBurst(tokens[..buffers], written[..buffers]);

            tx.PushUsed(frame.Token, 0);
            frames++;
        }

        rx.PublishUsed();
        tx.PublishUsed();

        // Inflight tracking: only now, with the transmit batch published, may the receive batch be
        // recorded as done; a kill in between leaves the receive side saying its batch went out.
        InflightDeviceRing.FinishPublish(tx);
        InflightDeviceRing.FinishPublish(rx);
        return new ForwardResult(frames, dropped, receiveFull);
    }
}
