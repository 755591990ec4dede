using System.Text.RegularExpressions;
using Rings.Tests.Diagnostics;
using Rings.Tests.Hostile;

namespace Rings.Tests.Apps;

/// <summary><c>--metrics</c> on the commands: a real process scraped over HTTP while a guest sends through it.</summary>
[Collection(ProcessCollection.Name)]
public class MetricsProcessTests
{
    private static long Sample(string text, string pattern)
    {
        var m = Regex.Match(text, "^" + pattern + @" (\d+)$", RegexOptions.Multiline);
        Assert.True(m.Success, $"no sample matching {pattern} in:\n{text}");
        return long.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
    }

    [Fact]
    public async Task TheSwitchServesPortQueueAndConnectionMetricsWhileAGuestRuns()
    {
        var port = MetricsTests.FreePort();
        using var sw = RingsSwitch.Start(1, "--processor", "reflect", "--wait", "adaptive", "--metrics", $"127.0.0.1:{port}");
        sw.WaitForLine($"metrics at http://127.0.0.1:{port}/metrics", TimeSpan.FromSeconds(15));
        // Four seconds of traffic; scraped as soon as the switch serves the guest's queues, so a
        // slow moment of the machine between the link coming up and the scrape does not let the
        // guest finish (and its queues leave the metrics) first.
        const int frames = 40000;
        var guest = Task.Run(() => LoopbackProcessTests.Run("guest", "--socket", sw.Sockets[0], "--frames", $"{frames}", "--rate", "10000", "--seconds", "60", "--wait", "adaptive"));
        sw.WaitForLine("link up", TimeSpan.FromSeconds(15));
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(20) };
        var url = $"http://127.0.0.1:{port}/metrics";
        var name = Regex.Escape($"vhost-user:{sw.Sockets[0]}");
        var transmitChains = $@"rings_queue_chains_total\{{port=""{name}"",queue=""transmitq""\}}";
        var during = await http.GetStringAsync(url);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        while (!(Regex.IsMatch(during, transmitChains + @" [1-9]") || guest.IsCompleted) && clock.Elapsed < TimeSpan.FromSeconds(20))
        {
            await Task.Delay(100);
            during = await http.GetStringAsync(url);
        }

        Assert.True(Sample(during, transmitChains) > 0, during);
        Assert.Equal(1, Sample(during, $@"rings_port_link\{{port=""{name}"",kind=""vhost-user""\}}"));
        Assert.Equal(1, Sample(during, $@"rings_connections_active\{{port=""{name}""\}}"));
        Assert.Matches($@"rings_queue_notifications_total\{{port=""{name}"",queue=""receiveq"",kind=""call"",outcome=""(sent|suppressed)""\}} \d+", during);

        var (exit, output, error) = await guest;
        Assert.True(exit == 0, $"{output}\n{error}\n{sw.Output}");
        var after = await http.GetStringAsync(url);
        Assert.Equal(frames, Sample(after, $@"rings_port_frames_total\{{port=""{name}"",kind=""vhost-user"",direction=""rx""\}}"));
        Assert.Equal(frames, Sample(after, $@"rings_port_frames_total\{{port=""{name}"",kind=""vhost-user"",direction=""tx""\}}"));
        Assert.Equal(frames * 64L, Sample(after, $@"rings_port_bytes_total\{{port=""{name}"",kind=""vhost-user"",direction=""rx""\}}"));
        Assert.Equal(1, Sample(after, $@"rings_connections_total\{{port=""{name}""\}}"));
        Assert.Equal(0, Sample(after, $@"rings_port_drops_total\{{port=""{name}"",kind=""vhost-user"",reason=""destination-full""\}}"));
        Assert.True(Sample(after, "rings_worker_rounds_total") > 0);
    }

    [Fact]
    public async Task TheLoopbackHostServesItsQueuesAndANonLoopbackAddressIsRefused()
    {
        var port = MetricsTests.FreePort();
        // Long enough to be scraped while the guest runs, however slowly the two processes start.
        using var loopback = RingsRun.Start("loopback", "--seconds", "20", "--rate", "5000", "--metrics", $"127.0.0.1:{port}");
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(20) };
        string? text = null;
        var clock = System.Diagnostics.Stopwatch.StartNew();
        while (text is null && clock.Elapsed < TimeSpan.FromSeconds(90) && !loopback.HasExited)
        {
            await Task.Delay(200);
            try
            {
                var t = await http.GetStringAsync($"http://127.0.0.1:{port}/metrics");
                text = t.Contains("rings_queue_chains_total", StringComparison.Ordinal) ? t : null;
            }
            catch (HttpRequestException)
            {
            }
        }

        Assert.NotNull(text);
        Assert.Matches(@"rings_queue_chains_total\{port=""[^""]+vhost\.sock#0"",queue=""transmitq""\} \d+", text);
        Assert.Matches(@"rings_connections_active\{port=""[^""]+vhost\.sock""\} 1", text);
        await loopback.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(120));
        Assert.Equal(0, loopback.ExitCode);

        var (exit, _, error, _) = RingsRun.Run(TimeSpan.FromSeconds(30), "switch", "--port", "vhost-user:/nonexistent/a.sock", "--metrics", "0.0.0.0:9464");
        Assert.Equal(2, exit);
        Assert.Contains("loopback addresses only", error, StringComparison.Ordinal);
    }
}

/// <summary><c>--capture</c> on <c>rings switch</c>: a guest's frames through a real switch process, read back by tshark.</summary>
[Collection(ProcessCollection.Name)]
public class CaptureProcessTests
{
    [Fact]
    public void TheSwitchCapturesAPortBothWaysAndTsharkReadsIt()
    {
        var dir = Directory.CreateTempSubdirectory("rings-capture-");
        try
        {
            var file = Path.Combine(dir.FullName, "p0.pcapng");
            using var reflect = RingsSwitch.Start(1, "--processor", "reflect", "--wait", "adaptive", "--capture", $"0={file}", "--snaplen", "60");
            var (exit, output, error) = LoopbackProcessTests.Run("guest", "--socket", reflect.Sockets[0], "--frames", "5000", "--frame-size", "200", "--rate", "50000", "--seconds", "60");
            Assert.True(exit == 0, $"{output}\n{error}\n{reflect.Output}");
            reflect.Signal(15, TimeSpan.FromSeconds(10));
            Assert.Equal(0, reflect.ExitCode);
            Assert.Contains($"capture of port 0: 10,000 frames to {file}, 0 not captured", reflect.Output, StringComparison.Ordinal);
            var packets = Diagnostics.CaptureTests.Tshark(file, "frame.len", "frame.cap_len", "eth.type", "frame.packet_flags_direction");
            Assert.Equal(10_000, packets.Count);
            Assert.All(packets, p => Assert.Equal(["200", "60", "0x88b5"], p[..3]));
            Assert.Equal(5000, packets.Count(p => p[3] == "0x00000001"));
            Assert.Equal(5000, packets.Count(p => p[3] == "0x00000002"));
        }
        finally
        {
            dir.Delete(recursive: true);
        }
    }

    [Theory]
    [InlineData("--capture|5=x.pcapng", "expected PORT=FILE")]
    [InlineData("--capture|0", "expected PORT=FILE")]
    [InlineData("--capture|0=a.pcap|--capture|0=b.pcap", "captured twice")]
    [InlineData("--snaplen|3", "--snaplen must be")]
    public void BadCaptureOptionsAreRefused(string args, string message)
    {
        var (exit, _, error, _) = RingsRun.Run(TimeSpan.FromSeconds(30), ["switch", "--port", "vhost-user:/nonexistent/a.sock", .. args.Split('|')]);
        Assert.Equal(2, exit);
        Assert.Contains(message, error, StringComparison.Ordinal);
    }
}
