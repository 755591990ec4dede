using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Rings.Chains;
using Rings.Linux.VhostUser;
using Rings.Split;
using Rings.Tests.Hostile;
using Rings.Tests.VhostUser;

namespace Rings.Tests.Tenants;

/// <summary>What the tenant tests check after an attack: a good <c>rings guest</c> still gets every frame back, promptly.</summary>
internal static class TenantChecks
{
    /// <summary>Runs a good <c>rings guest</c> against <paramref name="host"/>; every frame must come back intact.</summary>
    public static void GoodGuestIsServed(RingsHost host, long frames = 20_000, string why = "a good guest after the attack")
    {
        var json = Path.Combine(Path.GetTempPath(), $"rings-tenant-{Guid.NewGuid():N}.json");
        try
        {
            var (exit, output, error, _) = RingsRun.Run(TimeSpan.FromSeconds(90), "guest", "--socket", host.Socket,
                "--frames", frames.ToString(CultureInfo.InvariantCulture), "--seconds", "60", "--drain", "10", "--json", json);
            Assert.True(exit == 0, $"{why}: exit {exit}\n{output}\n{error}\n--- host ---\n{host.Output}");
            var f = JsonDocument.Parse(File.ReadAllText(json)).RootElement;
            Assert.True(f.GetProperty("frames_received").GetInt64() == frames, $"{why}: {f}");
            Assert.True(f.GetProperty("lost").GetInt64() == 0, $"{why}: {f}");
            Assert.True(f.GetProperty("duplicated").GetInt64() == 0, $"{why}: {f}");
            Assert.True(f.GetProperty("corrupted").GetInt64() == 0, $"{why}: {f}");
            Assert.False(host.HasExited, "the host died");
        }
        finally
        {
            File.Delete(json);
        }
    }

    /// <summary>Sends <paramref name="message"/> and measures how long the answer (a reply or the connection closing) took.</summary>
    public static (HarnessOutcome Outcome, TimeSpan Elapsed) Timed(SessionHarness harness, VhostUserMessage message)
    {
        var clock = Stopwatch.StartNew();
        var outcome = harness.Send(message);
        return (outcome, clock.Elapsed);
    }

    /// <summary>NUM, BASE and ADDR of one ring, then CALL and KICK with the descriptors given (asking for an ack), then ENABLE.</summary>
    public static (HarnessOutcome Call, HarnessOutcome Kick) SetupRingWith(SessionHarness harness, int index, int size, Rings.Linux.Plumbing.FileDescriptor call, Rings.Linux.Plumbing.FileDescriptor kick)
    {
        harness.Ok(VhostUserMessage.WithState(VhostUserRequest.SetVringNum, (uint)index, (uint)size));
        harness.Ok(VhostUserMessage.WithState(VhostUserRequest.SetVringBase, (uint)index, 0));
        harness.Ok(SessionHarness.Address(index, harness.UserAreas(index, size)));
        var c = harness.Send(VhostUserMessage.WithFile(VhostUserRequest.SetVringCall, (uint)index, hasFd: true, needReply: true), call);
        var k = harness.Send(VhostUserMessage.WithFile(VhostUserRequest.SetVringKick, (uint)index, hasFd: true, needReply: true), kick);
        harness.Ok(VhostUserMessage.WithState(VhostUserRequest.SetVringEnable, (uint)index, 1));
        return (c, k);
    }

    /// <summary>Puts one receive buffer in ring 0 and one 64-byte frame (behind a zeroed 12-byte header) in ring 1, and kicks both.</summary>
    public static (SplitDriverRing Rx, SplitDriverRing Tx) OneFrameOut(SessionHarness harness, VirtioFeatures features)
    {
        var rx = harness.DriverRing(0, 256, features);
        var tx = harness.DriverRing(1, 256, features);
        Assert.True(rx.TryAdd(new BufferSegment(harness.BufferAddress(0), 2048), deviceWritable: true, out _));
        rx.Publish();
        var frame = harness.Buffer(harness.BufferAddress(1), 12 + 64);
        frame.Clear();
        frame[12..].Fill(0x5A);
        Assert.True(tx.TryAdd(new BufferSegment(harness.BufferAddress(1), 12 + 64), deviceWritable: false, out _));
        tx.Publish();
        harness.Kicks[0].Signal();
        harness.Kicks[1].Signal();
        return (rx, tx);
    }
}
