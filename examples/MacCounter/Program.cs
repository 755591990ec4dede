using System.Globalization;
using System.Runtime.InteropServices;
using MacCounterExample;
using Rings.Linux.Net;
using Rings.Linux.Ports;
using Rings.Linux.Runtime;

// A TAP device and a vhost-user socket joined by MacCounter: every frame crosses to the other side,
// counted by source address, except those of one EtherType. Stops on SIGINT or SIGTERM, or after SECONDS.
if (args.Length < 2)
{
    Console.Error.WriteLine("usage: MacCounter TAP-NAME SOCKET-PATH [ETHERTYPE-TO-DROP (hex, default 86dd: IPv6)] [SECONDS]");
    return 2;
}

var dropEtherType = args.Length > 2 ? ushort.Parse(args[2], NumberStyles.HexNumber, CultureInfo.InvariantCulture) : (ushort)0x86DD;
var seconds = args.Length > 3 ? double.Parse(args[3], CultureInfo.InvariantCulture) : 0;
using var stop = new ManualResetEventSlim();
using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => { c.Cancel = true; stop.Set(); });
using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => { c.Cancel = true; stop.Set(); });

Port[] ports = [PortKinds.Create($"tap:{args[0]}"), PortKinds.Create($"vhost-user:{args[1]}")];
var counter = new MacCounter(dropEtherType);
try
{
    using var pipeline = new Pipeline(ports, counter, new PipelineOptions { Wait = WaitStrategy.Block });
    pipeline.Start();
    foreach (var port in ports)
    {
        port.Open();
    }

    Console.WriteLine($"MacCounter: {ports[0].Name} <-> {ports[1].Name}, dropping EtherType 0x{dropEtherType:x4}");
    stop.Wait(seconds > 0 ? TimeSpan.FromSeconds(seconds) : Timeout.InfiniteTimeSpan);
}
finally
{
    foreach (var port in ports)
    {
        port.Dispose();
    }
}

Console.WriteLine($"dropped {counter.Dropped} frame(s) of EtherType 0x{dropEtherType:x4}");
foreach (var (source, traffic) in counter.BySource.OrderBy(e => e.Key.ToString()))
{
    Console.WriteLine($"{source}  {traffic.Frames,8} frames {traffic.Bytes,10} bytes");
}

return 0;
