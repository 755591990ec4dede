using System.Text.RegularExpressions;
using Rings.Tests.Hostile;

namespace Rings.Tests.Apps;

/// <summary><c>rings switch</c> as a real process between real <c>rings guest</c> processes.</summary>
[Collection(ProcessCollection.Name)]
public class SwitchProcessTests
{
    private const int SigInt = 2;
    private const int SigTerm = 15;

    [Theory]
    [InlineData("switch", "adaptive")]
    [InlineData("switch", "block")]
    [InlineData("switch", "poll")]
    [InlineData("patch", "adaptive")]
    public async Task TwoGuestsThroughTheSwitchGetEveryFrameIntact(string processor, string wait)
    {
        // The guests start together; the switch holds frames for a destination without receive
        // buffers in the sender's ring (up to --hold) rather than dropping them, as patch mode
        // waits for its second guest. One window is not held: a front-end that has attached (link
        // up) but not yet enabled its receive queue is a destination that is down, and a burst
        // flooded to it then is dropped as link-down (once in about ten runs, 32 frames). A
        // second's start delay lets both guests finish their setup before either sends.
        using var sw = RingsSwitch.Start(2, "--processor", processor, "--wait", wait, "--hold", "10000");
        string[] guest = ["guest", "--frames", "200000", "--seconds", "60", "--drain", "20", "--wait", wait, "--start-delay", "1"];
        var a = Task.Run(() => LoopbackProcessTests.Run([.. guest, "--socket", sw.Sockets[0]]));
        var b = Task.Run(() => LoopbackProcessTests.Run([.. guest, "--socket", sw.Sockets[1]]));
        foreach (var (exit, output, error) in await Task.WhenAll(a, b))
        {
            Assert.True(exit == 0, $"guest exit {exit}\n{output}\n{error}\nswitch:\n{sw.Output}");
            Assert.Matches(@"frames received\s+200,000\b", output);
            Assert.Matches(@"lost / dup / bad\s+0 / 0 / 0", output);
        }

        var took = sw.Signal(SigTerm, TimeSpan.FromSeconds(5));
        Assert.True(took < TimeSpan.FromSeconds(1), $"took {took.TotalMilliseconds} ms to stop");
        Assert.Equal(0, sw.ExitCode);
        Assert.DoesNotContain(sw.Sockets, File.Exists);
        var output2 = sw.Output;
        Assert.Contains("SIGTERM: stopping", output2);
        foreach (var port in new[] { "0", "1" })
        {
            // rx 200,000 and tx 200,000 on each port, nothing dropped.
            Assert.Matches(new Regex($@"^\s+{port}\s+down\s+200,000\s+\S+\s+200,000\s+\S+\s+0\s", RegexOptions.Multiline), output2);
        }
    }

    [Fact]
    public async Task TwoFourPairGuestsThroughMultiqueuePortsUseEveryPairAndLoseNothing()
    {
        // Each guest sends four flows, one per pair (its Toeplitz hash picks that pair); the
        // switch takes from every transmit queue and puts each frame on the receive queue its
        // flow hashes to, so every pair of the other guest gets exactly its flow's frames.
        using var sw = RingsSwitch.StartPorts(["vhost-user:{dir}/p0.sock,queues=4", "vhost-user:{dir}/p1.sock,queues=4"], "--wait", "adaptive", "--hold", "10000");
        var json = sw.Sockets.Select(s => s + ".json").ToArray();
        // --start-delay: both guests attach all their pairs before either sends (see SpreadTests).
        string[] guest = ["guest", "--queues", "4", "--frames", "200000", "--seconds", "60", "--drain", "20", "--wait", "adaptive", "--start-delay", "3"];
        var a = Task.Run(() => LoopbackProcessTests.Run([.. guest, "--socket", sw.Sockets[0], "--json", json[0]]));
        var b = Task.Run(() => LoopbackProcessTests.Run([.. guest, "--socket", sw.Sockets[1], "--json", json[1]]));
        foreach (var (exit, output, error) in await Task.WhenAll(a, b))
        {
            Assert.True(exit == 0, $"guest exit {exit}\n{output}\n{error}\nswitch:\n{sw.Output}");
            Assert.Contains("MQ on (4 queue pair(s) of 4)", output, StringComparison.Ordinal);
            Assert.Matches(@"lost / dup / bad\s+0 / 0 / 0", output);
        }

        foreach (var file in json)
        {
            var pairs = System.Text.Json.JsonDocument.Parse(File.ReadAllText(file)).RootElement.GetProperty("pairs").EnumerateArray().ToArray();
            Assert.Equal(4, pairs.Length);
            foreach (var pair in pairs)
            {
                Assert.Equal(50_000, pair.GetProperty("frames_sent").GetInt64());
                Assert.Equal(50_000, pair.GetProperty("frames_received").GetInt64());
                Assert.Equal(0, pair.GetProperty("lost").GetInt64());
                Assert.Equal(0, pair.GetProperty("corrupted").GetInt64());
            }
        }

        sw.Signal(SigTerm, TimeSpan.FromSeconds(5));
        Assert.Equal(0, sw.ExitCode);
        var output2 = sw.Output;
        foreach (var port in new[] { "0", "1" })
        {
            Assert.Matches(new Regex($@"^\s+{port}\s+down\s+200,000\s+\S+\s+200,000\s+\S+\s+0\s", RegexOptions.Multiline), output2);
        }
    }

    [Theory]
    [InlineData(1, 1)]
    [InlineData(2, 2)]
    public async Task AGuestLeavingMidRunLeavesTheSwitchAndTheOtherPortRunning(int queues, int workers)
    {
        // Reflect: each guest gets its own frames back, so the survivor's count is exact. With two
        // pairs per port and two workers, each worker serves a pair of both guests: the one that
        // leaves takes both workers' pairs with it, and both go on with the survivor's.
        var options = queues == 1 ? string.Empty : $",queues={queues}";
        using var sw = RingsSwitch.StartPorts([$"vhost-user:{{dir}}/p0.sock{options}", $"vhost-user:{{dir}}/p1.sock{options}"], "--processor", "reflect", "--wait", "adaptive", "--workers", $"{workers}");
        string[] pairs = ["--queues", $"{queues}"];
        var survivor = Task.Run(() => LoopbackProcessTests.Run(["guest", "--socket", sw.Sockets[0], .. pairs, "--frames", "400000", "--rate", "100000", "--seconds", "60", "--wait", "adaptive"]));
        for (var round = 0; round < 2; round++)
        {
            using var doomed = RingsRun.Start(["guest", "--socket", sw.Sockets[1], .. pairs, "--seconds", "60", "--wait", "adaptive", "--hugepages", "off"]);
            // 4 KiB pages: no hugepage line before the one that says it connected.
            var first = await doomed.StandardOutput.ReadLineAsync().WaitAsync(TimeSpan.FromSeconds(15));
            Assert.Contains("connected", first, StringComparison.Ordinal);
            Thread.Sleep(400);
            doomed.Kill();
            doomed.WaitForExit();
            sw.WaitForLine($"p1.sock{options}: link down", TimeSpan.FromSeconds(5));
        }

        // The port takes a new front-end after the old one died.
        var (exit, output, error) = LoopbackProcessTests.Run(["guest", "--socket", sw.Sockets[1], .. pairs, "--frames", "50000", "--seconds", "60"]);
        Assert.True(exit == 0, $"a new guest on the port: exit {exit}\n{output}\n{error}\n{sw.Output}");
        Assert.Matches(@"lost / dup / bad\s+0 / 0 / 0", output);

        (exit, output, error) = await survivor;
        Assert.True(exit == 0, $"survivor: exit {exit}\n{output}\n{error}\n{sw.Output}");
        Assert.Matches(@"frames received\s+400,000\b", output);
        Assert.Matches(@"lost / dup / bad\s+0 / 0 / 0", output);
        Assert.False(sw.HasExited, sw.Output);
        sw.Signal(SigInt, TimeSpan.FromSeconds(5));
        Assert.Equal(0, sw.ExitCode);
        Assert.DoesNotContain(sw.Sockets, File.Exists);
    }

    [Fact]
    public async Task ASecondFrontEndOnAPortIsRefusedAndTheFirstKeepsGoing()
    {
        using var sw = RingsSwitch.Start(1, "--processor", "reflect", "--wait", "adaptive", "--verbose");
        var first = Task.Run(() => LoopbackProcessTests.Run("guest", "--socket", sw.Sockets[0], "--frames", "200000", "--rate", "100000", "--seconds", "60", "--wait", "adaptive"));
        sw.WaitForLine("link up", TimeSpan.FromSeconds(15));
        var (exit, output, error, _) = RingsRun.Run(TimeSpan.FromSeconds(30), "guest", "--socket", sw.Sockets[0], "--frames", "1000", "--seconds", "10");
        Assert.NotEqual(0, exit);
        Assert.Contains("cannot set up", error + output, StringComparison.Ordinal);
        sw.WaitForLine("refused a front-end", TimeSpan.FromSeconds(5));
        (exit, output, error) = await first;
        Assert.True(exit == 0, $"first guest: exit {exit}\n{output}\n{error}\n{sw.Output}");
        Assert.Matches(@"lost / dup / bad\s+0 / 0 / 0", output);
    }

    [Fact]
    public void SigintStopsTheSwitchWithinASecondAndRemovesItsSockets()
    {
        using var sw = RingsSwitch.Start(3, "--wait", "block");
        var took = sw.Signal(SigInt, TimeSpan.FromSeconds(5));
        Assert.True(took < TimeSpan.FromSeconds(1), $"took {took.TotalMilliseconds} ms");
        Assert.Equal(0, sw.ExitCode);
        Assert.DoesNotContain(sw.Sockets, File.Exists);
        Assert.Contains("SIGINT: stopping", sw.Output);
    }

    [Theory]
    [InlineData("--port|bogus", "expected KIND:TARGET")]
    [InlineData("--port|nope:/tmp/x", "unknown kind 'nope'")]
    [InlineData("--port|vhost-user:{dir}/a.sock,mtu=abc", "mtu must be an integer")]
    [InlineData("--port|vhost-user:{dir}/a.sock,color=red", "unknown option 'color'")]
    [InlineData("--port|vhost-user:{dir}/a.sock|--port|vhost-user:{dir}/a.sock", "given twice")]
    [InlineData("--port|vhost-user:{dir}/a.sock|--burst|0", "--burst must be")]
    [InlineData("--port|vhost-user:{dir}/a.sock|--cpus|9999", "--cpus")]
    [InlineData("--port|vhost-user:{dir}/a.sock|--processor|patch", "exactly two ports")]
    [InlineData("--port|vhost-user:{dir}/a.sock|--port|vhost-user:{dir}/no/such/dir/b.sock", "cannot listen")]
    public void BadInputGetsAClearErrorANonZeroExitAndLeavesNothingBehind(string args, string message)
    {
        var dir = Directory.CreateTempSubdirectory("rings-switch-bad-");
        try
        {
            var (exit, output, error, _) = RingsRun.Run(TimeSpan.FromSeconds(30), ["switch", .. args.Replace("{dir}", dir.FullName, StringComparison.Ordinal).Split('|')]);
            Assert.NotEqual(0, exit);
            Assert.Contains(message, error, StringComparison.Ordinal);
            Assert.Empty(Directory.GetFileSystemEntries(dir.FullName));
            Assert.DoesNotContain("Unhandled", error + output, StringComparison.Ordinal);
        }
        finally
        {
            dir.Delete(recursive: true);
        }
    }

    [Fact]
    public void ASocketPathInUseIsAClearErrorAndTheOtherSwitchGoesOn()
    {
        using var first = RingsSwitch.Start(1, "--wait", "block");
        var (exit, _, error, _) = RingsRun.Run(TimeSpan.FromSeconds(30), "switch", "--port", $"vhost-user:{first.Sockets[0]}");
        Assert.Equal(3, exit);
        Assert.Contains("in use", error, StringComparison.Ordinal);
        Assert.True(File.Exists(first.Sockets[0]));
        Assert.False(first.HasExited);
        var (guestExit, output, guestError) = LoopbackProcessTests.Run("guest", "--socket", first.Sockets[0], "--frames", "1000", "--seconds", "20");
        Assert.True(guestExit != 3 && !guestError.Contains("cannot set up", StringComparison.Ordinal), $"{output}\n{guestError}\n{first.Output}");
    }

    [Fact]
    public void HelpDescribesThePortKinds()
    {
        var (exit, output, _) = LoopbackProcessTests.Run("switch", "--help");
        Assert.Equal(0, exit);
        Assert.Contains("vhost-user:PATH", output, StringComparison.Ordinal);
        Assert.Contains("--workers", output, StringComparison.Ordinal);
        Assert.Contains("--cpus", output, StringComparison.Ordinal);
    }
}
