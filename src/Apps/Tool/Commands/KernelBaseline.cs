using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Rings.Testing.Traffic;

namespace Rings.Tool.Commands;

/// <summary>
/// The kernel path virtio exists to avoid, measured the same way: two processes exchanging the
/// same test frames over an AF_UNIX datagram socket or UDP on 127.0.0.1, one system call per
/// frame each way. The parent sends with up to a burst in flight; the child echoes.
/// </summary>
internal static class KernelBaseline
{
    public enum Transport
    {
        Unix,
        Udp,
    }

    public sealed record Figures(string Transport, int FrameSize, int Burst, double Seconds, long Sent, long Received, long Corrupted, double Mpps, double LatencyP50Us, double LatencyP99Us);

    /// <summary>
    /// The echo side: binds, connects to the measuring side's socket, says it is ready, then
    /// returns every datagram until the stop datagram or ten idle seconds.
    /// </summary>
    public static int Echo(Transport transport, string parent)
    {
        using var socket = transport == Transport.Unix
            ? new Socket(AddressFamily.Unix, SocketType.Dgram, ProtocolType.Unspecified)
            : new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        if (transport == Transport.Unix)
        {
            socket.Bind(new UnixDomainSocketEndPoint(parent + ".echo"));
            socket.Connect(new UnixDomainSocketEndPoint(parent));
        }
        else
        {
            socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));
            socket.Connect(new IPEndPoint(IPAddress.Loopback, int.Parse(parent, System.Globalization.CultureInfo.InvariantCulture)));
        }

        socket.SendBufferSize = 4 << 20;
        socket.ReceiveBufferSize = 4 << 20;
        socket.ReceiveTimeout = 10_000;
        socket.Send([0x00]);
        var buffer = new byte[65536];
        try
        {
            while (true)
            {
                var n = socket.Receive(buffer);
                if (n == 1 && buffer[0] == 0xFF)
                {
                    return 0;
                }

                socket.Send(buffer.AsSpan(0, n));
            }
        }
        catch (SocketException e) when (e.SocketErrorCode is SocketError.TimedOut or SocketError.ConnectionRefused)
        {
            return 0;
        }
    }

    /// <summary>The measuring side: starts the echo child, exchanges frames for a while, reports.</summary>
    public static Figures Measure(Transport transport, int frameSize, int burst, TimeSpan duration, string executable)
    {
        var dir = Directory.CreateTempSubdirectory("rings-baseline-");
        try
        {
            using var socket = transport == Transport.Unix
                ? new Socket(AddressFamily.Unix, SocketType.Dgram, ProtocolType.Unspecified)
                : new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
            string address;
            if (transport == Transport.Unix)
            {
                address = Path.Combine(dir.FullName, "measure.sock");
                socket.Bind(new UnixDomainSocketEndPoint(address));
            }
            else
            {
                socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));
                address = ((IPEndPoint)socket.LocalEndPoint!).Port.ToString(System.Globalization.CultureInfo.InvariantCulture);
            }

            socket.SendBufferSize = 4 << 20;
            socket.ReceiveBufferSize = 4 << 20;
            var info = new ProcessStartInfo(executable) { UseShellExecute = false };
            foreach (var a in (string[])["baseline-echo", .. new BaselineEchoOptions(transport, address).ToArguments()])
            {
                info.ArgumentList.Add(a);
            }

            using var child = Process.Start(info) ?? throw new InvalidOperationException("could not start the echo process");
            try
            {
                // The echo side's "ready" tells us its address; from then on the pair is connected.
                socket.ReceiveTimeout = 10_000;
                var ready = new byte[16];
                EndPoint from = transport == Transport.Unix ? new UnixDomainSocketEndPoint(address + ".echo") : new IPEndPoint(IPAddress.Any, 0);
                socket.ReceiveFrom(ready, ref from);
                socket.Connect(from);
                return Exchange(socket, transport, frameSize, burst, duration);
            }
            finally
            {
                if (!child.WaitForExit(2000))
                {
                    child.Kill();
                }
            }
        }
        finally
        {
            dir.Delete(recursive: true);
        }
    }

    private static Figures Exchange(Socket socket, Transport transport, int frameSize, int burst, TimeSpan duration)
    {
        socket.ReceiveTimeout = 1000;
        var frame = new byte[frameSize];
        var back = new byte[65536];
        var latencies = new List<long>(1 << 16);
        long sent = 0, received = 0, corrupted = 0;
        ulong expected = 0;
        var clock = Stopwatch.StartNew();
        var end = duration.TotalSeconds * Stopwatch.Frequency;
        while (clock.ElapsedTicks < end && !Bench.BenchInterrupt.Requested)
        {
            while (sent - received < burst)
            {
                TestFrame.Write(frame, (ulong)sent, Stopwatch.GetTimestamp());
                socket.Send(frame);
                sent++;
            }

            int n;
            try
            {
                n = socket.Receive(back);
            }
            catch (SocketException e) when (e.SocketErrorCode == SocketError.TimedOut)
            {
                break; // a lost datagram would stall the window: stop and count it lost
            }

            if (n != frameSize || !TestFrame.TryRead(back.AsSpan(0, n), out var seq, out var at) || seq < expected)
            {
                corrupted++;
                received++;
                continue;
            }

            expected = seq + 1;
            received++;
            if ((seq & 63) == 0)
            {
                latencies.Add(Stopwatch.GetTimestamp() - at);
            }
        }

        var seconds = clock.Elapsed.TotalSeconds;
        socket.Send([0xFF]);
        latencies.Sort();
        double Us(int i) => latencies.Count == 0 ? 0 : latencies[i] * 1e6 / Stopwatch.Frequency;
        return new Figures(
            transport == Transport.Unix ? "unix-dgram" : "udp",
            frameSize,
            burst,
            seconds,
            sent,
            received,
            corrupted,
            received / seconds / 1e6,
            Us((latencies.Count - 1) / 2),
            Us((int)((latencies.Count - 1) * 0.99)));
    }
}
