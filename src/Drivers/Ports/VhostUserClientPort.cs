namespace Rings.Linux.Ports;

/// <summary>
/// The device side of a virtio-net device over vhost-user in client mode: connects to a front-end
/// that listens on the socket (QEMU's <c>server=on</c>, DPDK virtio-user's <c>server=1</c>),
/// retrying every second until it is there and again whenever it goes away, so the front-end keeps
/// its rings across a restart of the switch. Otherwise exactly a <see cref="VhostUserPort"/>.
/// </summary>
public sealed class VhostUserClientPort : VhostUserPort
{
    /// <summary>Creates the port from <c>vhost-user-client:PATH[,mtu=N]</c> (not yet connecting).</summary>
    /// <param name="spec">The specification.</param>
    public VhostUserClientPort(PortSpec spec)
        : base("vhost-user-client", spec, connect: true)
    {
    }
}
