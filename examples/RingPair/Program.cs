using Rings;

// Both sides of a split ring of 256 in this process, and 256 buffers of 64 bytes behind it.
using var pair = RingPair.Create(RingFormat.Split, size: 256, bufferBytes: 256 * 64);
var driver = new DriverQueue<ulong>(pair.Driver); // each buffer carries its address back as its token
long sent = 0, received = 0, sum = 0;
for (var slot = 0UL; slot < 256; slot++) Send(pair.BufferAddress + (slot * 64));
while (received < 1_000_000)
{
    driver.Publish();
    while (pair.Device.TryPop(out var chain)) // the device side reads each packet and hands it back
    {
        sum += BitConverter.ToInt64(chain.Readable[0].Span);
        pair.Device.PushUsed(chain.Token, written: 0);
    }
    pair.Device.PublishUsed();
    for (; driver.TryTakeUsed(out var address, out _); received++) if (sent < 1_000_000) Send(address);
}
Console.WriteLine($"{received:N0} packets moved, sum of their numbers {sum:N0}");
void Send(ulong address) { BitConverter.TryWriteBytes(pair.Span(address, 8), sent++); driver.TryAdd(new(address, 64), deviceWritable: false, address); }
