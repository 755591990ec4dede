using Rings.Linux.Driver;

// The virtio-net driver of a vhost-user back-end at args[0] that sends every frame back (reflects).
using var net = VirtioNetDriver.Connect(new VhostUserFrontendOptions { SocketPath = args[0] });
byte[] frame = [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x02, 0, 0, 0, 0, 1, 0x88, 0xB5, .. new byte[50]];
var back = new byte[net.ReceiveBufferSize];
int sent = 0, received = 0, intact = 0;
while (received < 10_000)
{
    // At most a receive queue's worth in flight, so the back-end always has room for the reply.
    for (; sent < 10_000 && sent - received < net.Receive.Size; sent++)
    {
        BitConverter.TryWriteBytes(frame.AsSpan(14), sent);
        if (!net.TrySend(frame)) break;
    }
    net.Flush();
    while (net.TryReceive(back, out var length)) intact += length == 64 && BitConverter.ToInt32(back, 14) == received++ ? 1 : 0;
    if (received < sent) net.WaitForReceive(100);
}
Console.WriteLine($"{sent:N0} frames sent, {received:N0} came back, {intact:N0} intact and in order");
