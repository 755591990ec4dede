using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Rings.Tests.Apps;
using Rings.Tests.Hostile;
using Rings.Tests.Linux;
using Xunit.Abstractions;

namespace Rings.Tests.Ports;

/// <summary>
/// <c>rings switch</c> with TAP ports between real Linux network stacks: network namespaces made
/// by the test (addresses from 169.254.0.0/16, removed afterwards even on failure), the kernel
/// on both sides, or the kernel and a <c>rings guest</c>. They need root and fail, never skip,
/// without it.
/// </summary>
[Collection(ProcessCollection.Name)]
public sealed class KernelThroughSwitchTests(ITestOutputHelper output)
{
    private const int SigTerm = 15;
    private const long TransferBytes = 100L << 20;

    /// <summary>
    /// Two namespaces, each with a TAP device the switch created and the test moved in: 100 pings
    /// each way with no loss, then 100 MiB of random bytes over TCP (socat) with the SHA-256
    /// computed at both ends. The final table shows every frame of it on the two ports: complete
    /// frames of at most the MTU by default; with <c>offload=on</c> the kernel's 64 KiB TCP frames
    /// with partial checksums, passed through from one TAP device to the other as they are.
    /// </summary>
    [Theory]
    [InlineData("off")]
    [InlineData("on")]
    public void TwoNamespacesPingAndMoveOneHundredMebibytesOverTcpThroughTheSwitch(string offload)
    {
        InHosts(2, (hosts, transcript) =>
        {
            KernelHosts.RequireTools("socat", "sha256sum", "ping");
            using var sw = RingsSwitch.StartPorts(hosts.Ports.Select(p => $"{p},offload={offload}"), "--wait", "adaptive", "--quiet");
            hosts.AttachAll();
            var (a, b) = (hosts[0], hosts[1]);

            // Both ways at once: 100 echo requests each, 10 ms apart.
            var pings = new[] { (From: a, To: b), (From: b, To: a) }
                .Select(p => Task.Run(() => p.From.Namespace.Log(Command.Run("ip", ["netns", "exec", p.From.Namespace.Name, "ping", "-c", "100", "-i", "0.01", "-W", "2", "-w", "60", p.To.Address.ToString()], 90_000))))
                .ToArray();
            foreach (var ping in pings)
            {
                Assert.Contains("100 packets transmitted, 100 received, 0% packet loss", ping.Result.Output);
                Assert.Equal(0, ping.Result.ExitCode);
            }

            // 100 MiB of random bytes from a to b over TCP, hashed at both ends.
            var dir = Directory.CreateTempSubdirectory("rings-tcp-");
            try
            {
                var source = Path.Combine(dir.FullName, "sent");
                var target = Path.Combine(dir.FullName, "received");
                var expected = WriteRandom(source, TransferBytes);
                var port = Random.Shared.Next(20_000, 30_000).ToString(CultureInfo.InvariantCulture);
                using var receiver = b.Namespace.Start("socat", "-u", $"TCP-LISTEN:{port},bind={b.Address},reuseaddr", $"CREATE:{target}");
                var clock = Stopwatch.StartNew();
                var sent = a.Namespace.Log(Command.Run("ip", ["netns", "exec", a.Namespace.Name, "socat", "-u", $"OPEN:{source}", $"TCP:{b.Address}:{port},retry=100,interval=0.1"], 120_000));
                var seconds = clock.Elapsed.TotalSeconds;
                Assert.Equal(0, sent.ExitCode);
                var received = b.Namespace.Log(Command.Finish(receiver, 30_000));
                Assert.Equal(0, received.ExitCode);

                var hashSent = Sha256In(a, source);
                var hashReceived = Sha256In(b, target);
                hosts.Note($"TCP {a.Address} -> {b.Address}: {new FileInfo(target).Length:N0} bytes in {seconds:0.00} s ({TransferBytes * 8 / seconds / 1e6:0} Mbit/s); SHA-256 sent {hashSent}, received {hashReceived}");
                Assert.Equal(TransferBytes, new FileInfo(target).Length);
                Assert.Equal(expected, hashSent);
                Assert.Equal(expected, hashReceived);
            }
            finally
            {
                dir.Delete(recursive: true);
            }

            sw.Signal(SigTerm, TimeSpan.FromSeconds(5));
            Assert.Equal(0, sw.ExitCode);
            hosts.Note(sw.Output);

            // 100 MiB is more than 72,000 full-sized TCP segments from a, each handed to b; far
            // fewer frames when the kernel hands over whole 64 KiB segmentation frames.
            var table = FinalTable(sw.Output);
            Assert.True(table[1].Tx >= table[0].Rx - 10, sw.Output);
            Assert.True(offload == "off" ? table[0].Rx > 72_000 : table[0].Rx < 36_000, sw.Output);
            Assert.DoesNotMatch("malformed|over-mtu|destination-full|undecided", sw.Output);

            // The switch removed the devices it created, wherever they were.
            foreach (var h in hosts.Hosts)
            {
                Assert.NotEqual(0, Command.Run("ip", ["-n", h.Namespace.Name, "link", "show", h.Device]).ExitCode);
            }
        });
    }

    /// <summary>
    /// 1 GiB of random bytes over TCP from one namespace to the other through the switch, hashed
    /// (SHA-256) as it is sent and as it is received, streamed so nothing lands on disk. With
    /// offloads on at both TAP ports the kernel's 64 KiB GSO frames with partial checksums pass
    /// through unchanged; with them off at the receiving side the switch cuts each into MSS-sized
    /// frames and completes their checksums in software (the receiving port's table row says how
    /// many frames it segmented), and the receiver's kernel checks every checksum it gets.
    /// </summary>
    [Theory]
    [InlineData("on", "on")]
    [InlineData("on", "off")]
    public void OneGibibyteOverTcpThroughTheSwitchArrivesWholeWithOffloadsOnOrSegmentedInSoftware(string sender, string receiver)
    {
        const long Bytes = 1L << 30;
        InHosts(2, (hosts, transcript) =>
        {
            KernelHosts.RequireTools("socat", "sha256sum", "head", "tee");
            var (a, b) = (hosts[0], hosts[1]);
            using var sw = RingsSwitch.StartPorts([$"{a.Port},offload={sender}", $"{b.Port},offload={receiver}"], "--wait", "adaptive", "--quiet");
            hosts.AttachAll();
            Assert.Equal(0, a.Namespace.Exec("ping", "-c", "3", "-i", "0.1", "-W", "2", b.Address.ToString()).ExitCode);

            var dir = Directory.CreateTempSubdirectory("rings-tcp-gib-");
            try
            {
                var sentHash = Path.Combine(dir.FullName, "sent.sha256");
                var port = Random.Shared.Next(30_000, 40_000).ToString(CultureInfo.InvariantCulture);
                using var sink = b.Namespace.Start("bash", "-c", $"socat -u TCP-LISTEN:{port},bind={b.Address},reuseaddr - | sha256sum");
                var clock = Stopwatch.StartNew();
                var sent = a.Namespace.Log(Command.Run(
                    "ip",
                    ["netns", "exec", a.Namespace.Name, "bash", "-c", $"set -o pipefail; head -c {Bytes} /dev/urandom | tee >(sha256sum > {sentHash}) | socat -u - TCP:{b.Address}:{port},retry=100,interval=0.1"],
                    180_000));
                var seconds = clock.Elapsed.TotalSeconds;
                Assert.Equal(0, sent.ExitCode);
                var received = b.Namespace.Log(Command.Finish(sink, 30_000));
                Assert.Equal(0, received.ExitCode);

                // The sender's hash is written by a process substitution that may end after bash does.
                var hashSent = string.Empty;
                for (var wait = Stopwatch.StartNew(); hashSent.Length < 64 && wait.Elapsed < TimeSpan.FromSeconds(30); Thread.Sleep(50))
                {
                    hashSent = File.ReadAllText(sentHash).Split(' ')[0].Trim();
                }

                var hashReceived = received.Output.Split(' ')[0].Trim();
                hosts.Note($"TCP {a.Address} (offload={sender}) -> {b.Address} (offload={receiver}): {Bytes:N0} bytes in {seconds:0.00} s ({Bytes * 8 / seconds / 1e6:0} Mbit/s); SHA-256 sent {hashSent}, received {hashReceived}");
                Assert.Matches("^[0-9a-f]{64}$", hashSent);
                Assert.Equal(hashSent, hashReceived);
            }
            finally
            {
                dir.Delete(recursive: true);
            }

            sw.Signal(SigTerm, TimeSpan.FromSeconds(5));
            Assert.Equal(0, sw.ExitCode);
            hosts.Note(sw.Output);

            // 1 GiB is over 740,000 full-sized segments: the sender's kernel hands over far fewer,
            // larger frames; the receiving port gets them as they are, or cut into segments.
            var table = FinalTable(sw.Output);
            Assert.True(table[0].Rx < 500_000, sw.Output);
            if (receiver == "on")
            {
                Assert.True(table[1].Tx < 500_000, sw.Output);
                Assert.DoesNotContain("segmented in software", sw.Output, StringComparison.Ordinal);
            }
            else
            {
                Assert.True(table[1].Tx > 740_000, sw.Output);
                var segmented = Regex.Match(sw.Output, $@"tap:{b.Device},offload=off\r?\n(\s+drops: [^\r\n]*\r?\n)?\s+segmented in software: ([\d,]+) GSO frames");
                Assert.True(segmented.Success, sw.Output);
                Assert.InRange(long.Parse(segmented.Groups[2].Value, NumberStyles.AllowThousands, CultureInfo.InvariantCulture), 1, table[0].Rx);
            }

            Assert.DoesNotMatch("malformed|over-mtu|offload-unsupported|undecided", sw.Output);
        });
    }

    /// <summary>
    /// <c>rings guest --gso-size</c> sends TCP/IPv4 GSO frames (60,000 bytes, MSS 1,448, partial
    /// checksum) through a vhost-user port with <c>offload=on</c> to a namespace behind a TAP port
    /// with offloads off: the switch cuts each frame into 42 segments and completes their checksums,
    /// and the namespace's TCP, which checks every checksum itself (no offload was claimed), counts
    /// every segment received and no checksum error.
    /// </summary>
    [Fact]
    public void GsoFramesFromAGuestReachTheKernelAsValidSegments()
    {
        const int Frames = 100;
        const int FrameSize = 60_000;
        const int Mss = 1448;
        const int SegmentsPerFrame = (FrameSize - 54 + Mss - 1) / Mss;
        InHosts(1, (hosts, transcript) =>
        {
            var kernel = hosts[0];
            using var sw = RingsSwitch.StartPorts(["vhost-user:{dir}/guest.sock,offload=on", $"{kernel.Port},offload=off,mac=02:52:49:4e:47:02"], "--wait", "block", "--quiet");
            hosts.Attach(kernel);

            // The guest's frames go to 169.254.250.2 from 169.254.250.1: an address of the namespace.
            kernel.Namespace.Ip("addr", "add", "169.254.250.2/24", "dev", kernel.Device);
            var before = TcpCounters(kernel);
            var json = Path.Combine(sw.Directory.FullName, "guest.json");
            var (exit, guestOut, guestErr, _) = RingsRun.Run(
                TimeSpan.FromSeconds(60), "guest", "--socket", sw.Sockets[0], "--gso-size", Mss.ToString(CultureInfo.InvariantCulture), "--frame-size", FrameSize.ToString(CultureInfo.InvariantCulture),
                "--frames", Frames.ToString(CultureInfo.InvariantCulture), "--rate", "500", "--seconds", "20", "--window", "-1", "--drain", "1", "--json", json);
            transcript.AppendLine(guestOut).AppendLine(guestErr);
            Assert.True(exit is 0 or 1, $"guest exit {exit}\n{guestOut}\n{guestErr}");
            Assert.Equal(Frames, JsonDocument.Parse(File.ReadAllText(json)).RootElement.GetProperty("frames_sent").GetInt64());

            var clock = Stopwatch.StartNew();
            var after = TcpCounters(kernel);
            while (after.InSegs - before.InSegs < Frames * SegmentsPerFrame && clock.Elapsed < TimeSpan.FromSeconds(10))
            {
                Thread.Sleep(50);
                after = TcpCounters(kernel);
            }

            hosts.Note($"namespace TCP: {after.InSegs - before.InSegs} segments in, {after.InCsumErrors - before.InCsumErrors} checksum errors");
            Assert.Equal(Frames * SegmentsPerFrame, after.InSegs - before.InSegs);
            Assert.Equal(0, after.InCsumErrors - before.InCsumErrors);

            sw.Signal(SigTerm, TimeSpan.FromSeconds(5));
            hosts.Note(sw.Output);
            Assert.Equal(0, sw.ExitCode);
            // The kernel answers the segments (no socket listens: resets); one that reaches the switch
            // after the guest has gone is dropped on the TAP port's row, whose drops line then comes
            // before the segmentation line.
            Assert.Matches(new Regex($@"tap:{kernel.Device},offload=off,mac=02:52:49:4e:47:02\r?\n(\s+drops: [^\r\n]*\r?\n)?\s+segmented in software: {Frames} GSO frames"), sw.Output);
            var table = FinalTable(sw.Output);
            Assert.Equal(Frames, table[0].Rx);
            Assert.True(table[1].Tx >= Frames * SegmentsPerFrame, sw.Output);
            Assert.DoesNotMatch("malformed|over-mtu|offload-unsupported|undecided", sw.Output);
        });
    }

    /// <summary>A guest without a back-end that offers HOST_TSO4 is told so, and sends nothing.</summary>
    [Fact]
    public void AGuestAskedForGsoFramesRefusesABackEndWithoutTso()
    {
        using var sw = RingsSwitch.StartPorts(["vhost-user:{dir}/guest.sock", "vhost-user:{dir}/other.sock"], "--wait", "block", "--quiet");
        var (exit, _, stderr, _) = RingsRun.Run(TimeSpan.FromSeconds(30), "guest", "--socket", sw.Sockets[0], "--gso-size", "1448", "--frame-size", "9000", "--frames", "10");
        Assert.Equal(2, exit);
        Assert.Contains("--gso-size needs a back-end that offers CSUM and HOST_TSO4", stderr, StringComparison.Ordinal);
    }

    /// <summary>
    /// A <c>rings guest</c> on a vhost-user port and a namespace behind a TAP port of the same
    /// switch: the guest's test frames (to an unknown address, so flooded) are captured inside the
    /// namespace, every one; the kernel's UDP datagrams to the guest's address (learned from its
    /// frames) reach the guest and only the guest, every one.
    /// </summary>
    [Fact]
    public void AGuestAndTheKernelExchangeFramesThroughTheSwitch()
    {
        InHosts(1, (hosts, transcript) =>
        {
            KernelHosts.RequireTools("tcpdump");
            const int GuestFrames = 2000;
            const int Datagrams = 25;
            var kernel = hosts[0];
            using var sw = RingsSwitch.StartPorts(["vhost-user:{dir}/guest.sock", kernel.Port], "--wait", "block", "--quiet");
            hosts.Attach(kernel);

            // The guest's address as a neighbour of an address that exists nowhere else.
            var guestIp = $"{string.Join('.', kernel.Address.GetAddressBytes()[..3])}.200";
            kernel.Namespace.Ip("neigh", "add", guestIp, "lladdr", "02:52:49:4e:47:01", "dev", kernel.Device, "nud", "permanent");

            var capture = Path.Combine(sw.Directory.FullName, "guest.pcap");
            using var tcpdump = kernel.Namespace.Start("timeout", "60", "tcpdump", "-i", kernel.Device, "-nn", "-U", "-c", GuestFrames.ToString(CultureInfo.InvariantCulture), "-w", capture, "ether proto 0x88b5");
            WaitForStderr(tcpdump, "listening on");

            var json = Path.Combine(sw.Directory.FullName, "guest.json");
            var guest = Task.Run(() => RingsRun.Run(TimeSpan.FromSeconds(60), "guest", "--socket", sw.Sockets[0], "--frames", GuestFrames.ToString(CultureInfo.InvariantCulture), "--rate", "1000", "--seconds", "30", "--window", "-1", "--drain", "2", "--json", json));

            // Once the guest's frames flow (its address learned), the kernel sends to it.
            var clock = Stopwatch.StartNew();
            while (kernel.Statistic("rx_packets") < 100)
            {
                Assert.True(clock.Elapsed < TimeSpan.FromSeconds(20) && !guest.IsCompleted, $"no guest frames reached the namespace\n{sw.Output}");
                Thread.Sleep(20);
            }

            var udpBefore = kernel.Statistic("tx_packets");
            kernel.Namespace.Exec("bash", "-c", $"for i in $(seq {Datagrams}); do printf 'datagram %03d' $i > /dev/udp/{guestIp}/9; done").EnsureSuccess();
            clock.Restart();
            while (kernel.Statistic("tx_packets") - udpBefore < Datagrams && clock.Elapsed < TimeSpan.FromSeconds(10))
            {
                Thread.Sleep(20);
            }

            var (exit, guestOut, guestErr, _) = guest.Result;
            transcript.AppendLine(guestOut).AppendLine(guestErr);
            var captured = kernel.Namespace.Log(Command.Finish(tcpdump, 30_000));
            Assert.Equal(0, captured.ExitCode);
            var listing = Command.Run("tcpdump", ["-r", capture, "-nn", "-e"]).EnsureSuccess();
            hosts.Note($"$ {listing.Command}\n{string.Join('\n', listing.Output.Split('\n').Take(4))}\n...");

            // Every test frame the guest sent, as sent: its addresses, EtherType and size, and each
            // sequence number once (the first 8 bytes after the Ethernet header, little-endian).
            var lines = listing.Output.Split('\n', StringSplitOptions.RemoveEmptyEntries);
            var frames = lines.Where(l => !char.IsWhiteSpace(l[0])).ToArray();
            Assert.Equal(GuestFrames, frames.Length);
            Assert.All(frames, f => Assert.Contains("02:52:49:4e:47:01 > 02:52:49:4e:47:02, ethertype Unknown (0x88b5), length 64", f));
            var sequences = lines.Where(l => l.TrimStart().StartsWith("0x0000:", StringComparison.Ordinal))
                .Select(l => Convert.FromHexString(string.Concat(l.TrimStart()[7..].Trim().Split(' ').Take(4))))
                .Select(b => BitConverter.ToUInt64(b))
                .Order()
                .ToArray();
            Assert.Equal(Enumerable.Range(0, GuestFrames).Select(i => (ulong)i), sequences);

            // Every datagram reached the guest (which counts what is not its own test frame as bad).
            var figures = JsonDocument.Parse(File.ReadAllText(json)).RootElement;
            Assert.Equal(GuestFrames, figures.GetProperty("frames_sent").GetInt64());
            Assert.Equal(Datagrams, figures.GetProperty("corrupted").GetInt64());
            Assert.True(exit is 0 or 1, $"guest exit {exit}\n{guestOut}\n{guestErr}");

            sw.Signal(SigTerm, TimeSpan.FromSeconds(5));
            hosts.Note(sw.Output);
            var table = FinalTable(sw.Output);
            Assert.Equal(GuestFrames, table[0].Rx);
            Assert.Equal(Datagrams, table[0].Tx);
            Assert.Equal(GuestFrames, table[1].Tx);
            Assert.Equal(Datagrams, table[1].Rx);
        });
    }

    /// <summary>
    /// A TAP device deleted under the switch: that port goes down (logged), the switch keeps
    /// running and stops cleanly, and the other port's device, which the switch created, is gone
    /// afterwards.
    /// </summary>
    [Fact]
    public void ATapDeletedUnderTheSwitchTakesItsPortDownAndTheSwitchGoesOn()
    {
        InHosts(2, (hosts, transcript) =>
        {
            var (a, b) = (hosts[0], hosts[1]);
            using var sw = RingsSwitch.StartPorts(hosts.Ports, "--wait", "block", "--quiet");
            hosts.AttachAll();
            var ping = a.Namespace.Exec("ping", "-c", "3", "-i", "0.1", "-W", "2", b.Address.ToString());
            Assert.Contains("3 received", ping.Output);

            b.Namespace.Ip("link", "del", b.Device);
            sw.WaitForLine($"tap:{b.Device}: link down (TAP device deleted)", TimeSpan.FromSeconds(5));
            Assert.False(sw.HasExited);
            Assert.NotEqual(0, a.Namespace.Exec("ping", "-c", "2", "-i", "0.1", "-W", "1", b.Address.ToString()).ExitCode);

            var took = sw.Signal(SigTerm, TimeSpan.FromSeconds(5));
            Assert.Equal(0, sw.ExitCode);
            hosts.Note(sw.Output);
            Assert.Matches(new Regex($@"^\s+1\s+down\s.*tap:{b.Device}$", RegexOptions.Multiline), sw.Output);
            Assert.Matches(new Regex($@"^\s+0\s+up\s.*tap:{a.Device}$", RegexOptions.Multiline), sw.Output);
            Assert.True(took < TimeSpan.FromSeconds(2), $"took {took.TotalMilliseconds} ms to stop");
            Assert.NotEqual(0, Command.Run("ip", ["-n", a.Namespace.Name, "link", "show", a.Device]).ExitCode);
        });
    }

    /// <summary>Bad TAP and virtio-user specifications: a clear error, a non-zero exit, and no device or socket left behind.</summary>
    [Theory]
    [InlineData("tap:a/b", 2, "contains '/'")]
    [InlineData("tap:rings-name-too-long", 2, "at most 15")]
    [InlineData("tap:{tap},mtu=12", 2, "mtu must be an integer")]
    [InlineData("tap:{tap},mac=01:00:5e:00:00:01", 2, "mac must be a unicast address")]
    [InlineData("tap:{tap},mac=02:00:00:00:00", 2, "mac must be a unicast address")]
    [InlineData("virtio-user:{dir}/none.sock", 3, "cannot set up with a vhost-user back-end")]
    [InlineData("virtio-user:{dir}/x.sock,ring=round", 2, "ring must be split or packed")]
    [InlineData("virtio-user:{dir}/x.sock,queue-size=100", 2, "queue size is")]
    [InlineData("virtio-user:{dir}/x.sock,hugepages=maybe", 2, "hugepages must be auto, on or off")]
    [InlineData("virtio-user:{dir}/x.sock,queues=0", 2, "queues must be an integer from 1 to 64, not '0'")]
    [InlineData("virtio-user:{dir}/x.sock,queues=65", 2, "queues must be an integer from 1 to 64, not '65'")]
    [InlineData("virtio-user:{dir}/x.sock,queues=many", 2, "queues must be an integer from 1 to 64, not 'many'")]
    [InlineData("virtio-user:{dir}/x.sock,queues=2,reconnect=on", 2, "reconnect=on works with one queue pair")]
    public void BadPortsGetAClearErrorANonZeroExitAndLeaveNothingBehind(string port, int code, string message)
    {
        Privileges.RequireNetworkAdmin();
        var dir = Directory.CreateTempSubdirectory("rings-ports-bad-");
        var tap = $"rb{Guid.NewGuid():N}"[..12];
        try
        {
            // A TAP port before the bad one: it is created, then removed when the bad one fails.
            var (exit, stdout, stderr, _) = RingsRun.Run(TimeSpan.FromSeconds(30), "switch", "--port", $"tap:{tap}", "--port", port.Replace("{dir}", dir.FullName, StringComparison.Ordinal).Replace("{tap}", tap, StringComparison.Ordinal));
            output.WriteLine($"exit {exit}\n{stdout}\n{stderr}");
            Assert.Equal(code, exit);
            Assert.Contains(message, stderr, StringComparison.Ordinal);
            Assert.DoesNotContain("Unhandled", stdout + stderr, StringComparison.Ordinal);
            Assert.Empty(Directory.GetFileSystemEntries(dir.FullName));
            Assert.NotEqual(0, Command.Run("ip", ["link", "show", tap]).ExitCode);
        }
        finally
        {
            dir.Delete(recursive: true);
            if (Command.Run("ip", ["link", "show", tap]).ExitCode == 0)
            {
                Command.Run("ip", ["link", "del", tap]);
            }
        }
    }

    /// <summary>The rows of the switch's final table: frames received and transmitted per port.</summary>
    internal static (long Rx, long Tx)[] FinalTable(string switchOutput)
    {
        var rows = Regex.Matches(switchOutput, @"^\s+(\d+)\s+(up|down)\s+([\d,]+)\s+[\d.]+\s+([\d,]+)\s", RegexOptions.Multiline);
        return [.. rows.Select(m => (long.Parse(m.Groups[3].Value, NumberStyles.AllowThousands, CultureInfo.InvariantCulture), long.Parse(m.Groups[4].Value, NumberStyles.AllowThousands, CultureInfo.InvariantCulture)))];
    }

    /// <summary>Waits until a started process has written <paramref name="text"/> to its standard error.</summary>
    internal static void WaitForStderr(Process process, string text)
    {
        var line = process.StandardError.ReadLineAsync();
        Assert.True(line.Wait(TimeSpan.FromSeconds(15)), $"no '{text}' from {process.StartInfo.FileName}");
        Assert.Contains(text, line.Result ?? string.Empty, StringComparison.Ordinal);
    }

    private static string WriteRandom(string path, long bytes)
    {
        using var sha = SHA256.Create();
        using var file = File.Create(path);
        var chunk = new byte[1 << 20];
        for (long done = 0; done < bytes; done += chunk.Length)
        {
            RandomNumberGenerator.Fill(chunk);
            file.Write(chunk);
            sha.TransformBlock(chunk, 0, chunk.Length, null, 0);
        }

        sha.TransformFinalBlock([], 0, 0);
        return Convert.ToHexStringLower(sha.Hash!);
    }

    private static (long InSegs, long InCsumErrors) TcpCounters(KernelHost host)
    {
        var lines = Command.Run("ip", ["netns", "exec", host.Namespace.Name, "cat", "/proc/net/snmp"]).EnsureSuccess().Output
            .Split('\n').Where(l => l.StartsWith("Tcp:", StringComparison.Ordinal)).ToArray();
        var names = lines[0].Split(' ', StringSplitOptions.RemoveEmptyEntries);
        var values = lines[1].Split(' ', StringSplitOptions.RemoveEmptyEntries);
        long Value(string name) => long.Parse(values[Array.IndexOf(names, name)], CultureInfo.InvariantCulture);
        return (Value("InSegs"), Value("InCsumErrors"));
    }

    private static string Sha256In(KernelHost host, string path)
    {
        var result = host.Namespace.Exec("sha256sum", path).EnsureSuccess();
        return result.Output.Split(' ')[0];
    }

    private void InHosts(int count, Action<KernelHosts, StringBuilder> test)
    {
        Privileges.RequireNetworkAdmin();
        var transcript = new StringBuilder();
        try
        {
            using var hosts = new KernelHosts(transcript, count);
            test(hosts, transcript);
        }
        finally
        {
            output.WriteLine(transcript.ToString());
        }
    }
}
