using System.Globalization;
using System.Text.Json;
using Rings.Linux.Driver;
using Rings.Linux.Net;
using Rings.Linux.VhostUser;
using Rings.Testing.Traffic;
using Rings.Tests.Hostile;
using Xunit.Abstractions;

namespace Rings.Tests.Apps;

/// <summary>
/// Several queue pairs between <c>rings guest</c> (or the library's front-end) and <c>rings host</c>:
/// every pair carries its own flow and nothing is lost, a pair disabled and enabled again while
/// the others run loses nothing, and a front-end that asks for more pairs than offered learns so.
/// </summary>
[Collection(ProcessCollection.Name)]
public class MultiqueueTests
{
    private readonly ITestOutputHelper _output;

    public MultiqueueTests(ITestOutputHelper output)
    {
        _output = output;
    }

    [Fact]
    public void FourPairsBetweenRingsGuestAndRingsHostEachCarryTrafficAndLoseNothing()
    {
        const long Frames = 400_000;
        var json = Path.Combine(Path.GetTempPath(), $"rings-test-{Guid.NewGuid():N}.json");
        try
        {
            // The guest's four traffic threads pinned two to each CPU (--cpus goes to the guest).
            var (exit, output, error) = LoopbackProcessTests.Run(["loopback", "--queues", "4", "--cpus", "0,1", "--frames", Invariant(Frames), "--seconds", "120", "--wait", "adaptive", "--json", json]);
            _output.WriteLine(output);
            Assert.True(exit == 0, $"exit {exit}\n{output}\n{error}");
            Assert.DoesNotContain("unpinned", output, StringComparison.Ordinal);
            var f = JsonDocument.Parse(File.ReadAllText(json)).RootElement;
            Assert.Equal(Frames, f.GetProperty("frames_sent").GetInt64());
            Assert.Equal(Frames, f.GetProperty("frames_received").GetInt64());
            Assert.Equal(0, f.GetProperty("lost").GetInt64());
            Assert.Equal(0, f.GetProperty("corrupted").GetInt64());
            Assert.Equal(0, f.GetProperty("duplicated").GetInt64());
            Assert.Equal(4, f.GetProperty("queue_pairs").GetInt32());

            // Each pair sent its share, got every frame back, and the host forwarded exactly those on that pair.
            var pairs = f.GetProperty("pairs").EnumerateArray().ToArray();
            var hostPairs = f.GetProperty("host_pairs").EnumerateArray().ToDictionary(p => p.GetProperty("pair").GetInt32(), p => p.GetProperty("frames").GetInt64());
            Assert.Equal(4, pairs.Length);
            Assert.Equal(4, hostPairs.Count);
            foreach (var p in pairs)
            {
                var pair = p.GetProperty("pair").GetInt32();
                Assert.Equal(Frames / 4, p.GetProperty("frames_sent").GetInt64());
                Assert.Equal(Frames / 4, p.GetProperty("frames_received").GetInt64());
                Assert.Equal(0, p.GetProperty("lost").GetInt64());
                Assert.Equal(Frames / 4, hostPairs[pair]);
            }
        }
        finally
        {
            File.Delete(json);
        }
    }

    [Fact]
    public void AGuestAskingForMorePairsThanTheHostOffersIsToldSo()
    {
        using var host = RingsHost.Start("--queues", "2", "--wait", "block");
        var (exit, output, error) = LoopbackProcessTests.Run(["guest", "--socket", host.Socket, "--queues", "4", "--seconds", "1"]);
        Assert.True(exit == 3, $"exit {exit}\n{output}\n{error}");
        Assert.Contains("2 queue pairs, 4 wanted", error, StringComparison.Ordinal);

        // Options refused before anything connects.
        (exit, _, error) = LoopbackProcessTests.Run(["guest", "--socket", host.Socket, "--queues", "0"]);
        Assert.NotEqual(0, exit);
        Assert.Contains("--queues", error, StringComparison.Ordinal);
        (exit, _, error) = LoopbackProcessTests.Run(["host", "--socket", host.Socket + "x", "--queues", "129"]);
        Assert.NotEqual(0, exit);
        Assert.Contains("--queues", error, StringComparison.Ordinal);
    }

    [Fact]
    public void APairDisabledAndEnabledAgainWhileTheOthersRunLosesNoFrame()
    {
        const int Pairs = 4;
        const int Paused = 1;
        var stats = Path.Combine(Path.GetTempPath(), $"rings-test-{Guid.NewGuid():N}.json");
        using var host = RingsHost.Start("--queues", Invariant(Pairs), "--cpus", "0-1", "--wait", "adaptive", "--once", "--stats", stats);
        var frontend = VhostUserFrontend.Connect(new VhostUserFrontendOptions { SocketPath = host.Socket, QueuePairs = Pairs, MemoryBytes = 32UL << 20 });
        long[] sent;
        try
        {
            Assert.NotEqual(VirtioFeatures.None, frontend.Features & VirtioFeatures.NetMultiqueue);
            using var traffic = new PairTraffic(frontend, Pairs);
            Assert.True(Wait(() => Enumerable.Range(0, Pairs).All(p => traffic.Received(p) > 5_000)), "every pair carries traffic");

            // Disable both rings of one pair (SET_VRING_ENABLE 0): its worker stops, the others go on.
            frontend.SetQueueEnabled(2 * Paused, false);
            frontend.SetQueueEnabled((2 * Paused) + 1, false);
            host.WaitForLine($"queue pair {Paused} disabled: queue pair {Paused}: forwarded", TimeSpan.FromSeconds(10));
            var pausedAt = traffic.Received(Paused);
            var othersAt = Enumerable.Range(0, Pairs).Select(traffic.Received).ToArray();
            Thread.Sleep(300);
            Assert.Equal(pausedAt, traffic.Received(Paused));
            Assert.True(Wait(() => Enumerable.Range(0, Pairs).Where(p => p != Paused).All(p => traffic.Received(p) > othersAt[p] + 5_000)), "the running pairs kept forwarding");

            // Enabled again: the frames that waited in its rings go, and it carries traffic again.
            frontend.SetQueueEnabled(2 * Paused, true);
            frontend.SetQueueEnabled((2 * Paused) + 1, true);
            Assert.True(Wait(() => traffic.Received(Paused) > pausedAt + 5_000), "the pair forwards again once enabled");
            traffic.StopAndCheck(_output);
            sent = traffic.Sent;
        }
        finally
        {
            frontend.Dispose();
        }

        // The host's own per-pair counts: what each pair's worker forwarded over all its runs.
        Assert.True(Wait(() => host.HasExited), $"the host did not leave with its front-end\n{host.Output}");
        _output.WriteLine(host.Output);
        Assert.DoesNotContain("unpinned", host.Output, StringComparison.Ordinal);
        var pairs = JsonDocument.Parse(File.ReadAllText(stats)).RootElement.GetProperty("pairs").EnumerateArray()
            .ToDictionary(p => p.GetProperty("pair").GetInt32(), p => p.GetProperty("frames").GetInt64());
        File.Delete(stats);
        for (var p = 0; p < Pairs; p++)
        {
            Assert.Equal(sent[p], pairs[p]);
        }
    }

    private static bool Wait(Func<bool> condition) => Rings.Tests.VhostUser.TestDevice.Wait(condition, 60_000);

    private static string Invariant(long value) => value.ToString(CultureInfo.InvariantCulture);
}
