using Rings.Linux.Net;
using Rings.Packed;
using Rings.Split;

namespace Rings.Linux.Driver;

/// <summary>
/// The guest side of one virtio-net queue pair, whatever rings it runs over: what
/// <see cref="VirtioNetDriver.Path"/> hands out. Every member is one of
/// <see cref="NetDriverPath{TTx, TRx}"/>'s; a caller that runs a hot loop of its own over the path
/// gets the path with its ring types named through <see cref="Accept{TResult}"/>, so the loop is
/// compiled for them.
/// </summary>
public interface INetDriverPath
{
    /// <summary>The transmit ring.</summary>
    IDriverRing Transmit { get; }

    /// <summary>The receive ring.</summary>
    IDriverRing Receive { get; }

    /// <summary>Bytes per receive buffer, the 12-byte header included.</summary>
    int ReceiveBufferSize { get; }

    /// <summary>True when VIRTIO_NET_F_MRG_RXBUF was negotiated: a received frame may span several buffers.</summary>
    bool Mergeable { get; }

    /// <summary>Largest frame the path sends.</summary>
    int MaxFrameSize { get; }

    /// <summary>Frames received with a bad header, length or <c>num_buffers</c>, and discarded.</summary>
    long ReceiveErrors { get; }

    /// <summary>Frames received that did not fit the destination they were copied to (copied truncated).</summary>
    long Truncated { get; }

    /// <summary>True when used receive buffers were taken from the ring and not yet handed out as frames.</summary>
    bool HasPendingReceive { get; }

    /// <summary>Posts free receive buffers and publishes them.</summary>
    /// <returns>True when the device asked to be kicked for the new buffers.</returns>
    bool RefillReceive();

    /// <summary>Takes back transmit buffers the device has finished with.</summary>
    /// <returns>Buffers reclaimed.</returns>
    int ReclaimTransmit();

    /// <summary>Copies a frame into a transmit buffer behind a header; visible at <see cref="FlushTransmit"/>.</summary>
    /// <param name="frame">The Ethernet frame.</param>
    /// <returns>False when no transmit buffer or descriptor is free.</returns>
    bool TrySend(ReadOnlySpan<byte> frame);

    /// <summary>Leases a transmit buffer in shared memory to build a frame in place (zero copy).</summary>
    /// <param name="lease">The lease.</param>
    /// <returns>False when no transmit buffer is free.</returns>
    bool TryLeaseTransmit(out TransmitLease lease);

    /// <summary>Submits a leased buffer holding a frame of <paramref name="length"/> bytes.</summary>
    /// <param name="lease">The lease.</param>
    /// <param name="length">Frame length in bytes.</param>
    /// <returns>False when the ring refused it; the buffer is then returned.</returns>
    bool Submit(in TransmitLease lease, int length);

    /// <summary>Submits a leased buffer holding a frame of <paramref name="length"/> bytes behind <paramref name="header"/>.</summary>
    /// <param name="lease">The lease.</param>
    /// <param name="length">Frame length in bytes.</param>
    /// <param name="header">The virtio-net header to send it with.</param>
    /// <returns>False when the ring refused it; the buffer is then returned.</returns>
    bool Submit(in TransmitLease lease, int length, VirtioNetHeader header);

    /// <summary>Publishes the frames sent since the last flush.</summary>
    /// <returns>True when the device asked to be kicked.</returns>
    bool FlushTransmit();

    /// <summary>Copies the next received frame into <paramref name="destination"/>.</summary>
    /// <param name="destination">Where the frame goes.</param>
    /// <param name="length">The frame's full length.</param>
    /// <returns>False when no whole frame is waiting.</returns>
    bool TryReceive(Span<byte> destination, out int length);

    /// <summary>Zero copy: hands out the next received frame that sits in one buffer.</summary>
    /// <param name="frame">The frame.</param>
    /// <returns>False when no single-buffer frame is at the head of the queue.</returns>
    bool TryReceiveInPlace(out ReceivedFrame frame);

    /// <summary>Gives a frame from <see cref="TryReceiveInPlace"/> back.</summary>
    /// <param name="frame">The frame.</param>
    void Release(in ReceivedFrame frame);

    /// <summary>Calls <paramref name="visitor"/> with this path under its own type, ring types named.</summary>
    /// <typeparam name="TResult">What the visitor returns.</typeparam>
    /// <param name="visitor">The visitor.</param>
    /// <returns>What it returned.</returns>
    TResult Accept<TResult>(INetDriverPathVisitor<TResult> visitor);
}

/// <summary>Code that wants a <see cref="INetDriverPath"/> with its ring types named (see <see cref="INetDriverPath.Accept{TResult}"/>).</summary>
/// <typeparam name="TResult">What it returns.</typeparam>
public interface INetDriverPathVisitor<out TResult>
{
    /// <summary>Called with the path.</summary>
    /// <typeparam name="TTx">Driver side of the transmit queue.</typeparam>
    /// <typeparam name="TRx">Driver side of the receive queue.</typeparam>
    /// <param name="path">The path.</param>
    /// <returns>The result.</returns>
    TResult Visit<TTx, TRx>(NetDriverPath<TTx, TRx> path)
        where TTx : IDriverRing
        where TRx : IDriverRing;
}

/// <summary>Builds the guest side of a queue pair with code of its own per ring format.</summary>
public static class NetDriverPath
{
    /// <summary>
    /// Lays a data path over a queue pair's two driver rings. When both rings are of one plain
    /// format (the sealed <see cref="SplitDriverRing"/> or <see cref="PackedDriverRing"/>), the
    /// path's type arguments are that format's ring struct (<see cref="SplitDriver"/>,
    /// <see cref="PackedDriver"/>): .NET compiles generic code once per struct argument, so the
    /// path's ring calls are direct and may be inlined, where ring classes or interfaces as type
    /// arguments would share one body with every ring call an interface call. Other rings get the
    /// interface path.
    /// </summary>
    /// <param name="tx">Driver side of the transmit queue.</param>
    /// <param name="rx">Driver side of the receive queue.</param>
    /// <param name="txSlab">Transmit buffers.</param>
    /// <param name="rxSlab">Receive buffers.</param>
    /// <param name="mergeable">True when VIRTIO_NET_F_MRG_RXBUF was negotiated.</param>
    /// <returns>The path.</returns>
    public static INetDriverPath ForRings(IDriverRing tx, IDriverRing rx, BufferSlab txSlab, BufferSlab rxSlab, bool mergeable) => (tx, rx) switch
    {
        (SplitDriverRing t, SplitDriverRing r) => new NetDriverPath<SplitDriver, SplitDriver>(new SplitDriver(t), new SplitDriver(r), txSlab, rxSlab, mergeable),
        (PackedDriverRing t, PackedDriverRing r) => new NetDriverPath<PackedDriver, PackedDriver>(new PackedDriver(t), new PackedDriver(r), txSlab, rxSlab, mergeable),
        _ => new NetDriverPath<IDriverRing, IDriverRing>(tx, rx, txSlab, rxSlab, mergeable),
    };
}
