using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using Rings.Linux.Net;
using Rings.Testing.Traffic;
using Rings.Tool.Bench;
using Rings.Tool.Commands;

namespace Rings.Tests.Apps;

/// <summary>
/// Every command whose command line the tool builds (for its own child processes) renders its typed
/// options as arguments that parse back to the same options, and its record's defaults are the
/// command's defaults.
/// </summary>
public class OptionsRoundTripTests
{
    [Property(MaxTest = 300)]
    public Property GuestOptionsRoundTrip() =>
        Prop.ForAll(GuestGen(PathGen()).ToArbitrary(), o => Assert.Equal(o, GuestCommand.Parse([.. o.ToArguments()])));

    [Property(MaxTest = 300)]
    public Property HostOptionsRoundTrip() =>
        Prop.ForAll(HostGen().ToArbitrary(), o => Assert.Equal(o, HostCommand.Parse([.. o.ToArguments()])));

    [Property(MaxTest = 300)]
    public Property LoopbackOptionsRoundTrip() =>
        Prop.ForAll(LoopbackGen().ToArbitrary(), o => Assert.Equal(o, LoopbackCommand.Parse([.. o.ToArguments()])));

    [Property]
    public Property BaselineEchoOptionsRoundTrip() =>
        Prop.ForAll(
            (from t in Gen.Elements(Enum.GetValues<KernelBaseline.Transport>()) from a in PathGen() select new BaselineEchoOptions(t, a)).ToArbitrary(),
            o => Assert.Equal(o, BaselineCommand.ParseEcho([.. o.ToArguments()])));

    [Fact]
    public void RecordDefaultsAreTheCommandDefaults()
    {
        Assert.Equal(new GuestOptions("/run/s.sock"), GuestCommand.Parse(["--socket", "/run/s.sock"]));
        Assert.Equal(new HostOptions("/run/s.sock"), HostCommand.Parse(["--socket", "/run/s.sock"]));
        Assert.Equal(LoopbackOptions.Defaults, LoopbackCommand.Parse([]));
        Assert.Equal(3, LoopbackOptions.Defaults.Guest.Seconds);
    }

    [Fact]
    public void AllowUidTakesUserIdsSeparatedByCommas()
    {
        Assert.Null(new HostOptions("/s", AllowUid: "0,1000").Validate());
        Assert.Contains("--allow-uid", new HostOptions("/s", AllowUid: "root").Validate(), StringComparison.Ordinal);
        Assert.Contains("--allow-uid", new HostOptions("/s", AllowUid: "1000,").Validate(), StringComparison.Ordinal);
        Assert.Contains("--allow-uid", new HostOptions("/s", AllowUid: "-1").Validate(), StringComparison.Ordinal);
        Assert.Equal("1000", HostCommand.Parse(["--socket", "/s", "--allow-uid", "1000"]).AllowUid);
    }

    [Fact]
    public void TheHostServesOrConnectsAndTheGuestReconnects()
    {
        var connect = HostCommand.Parse(["--connect", "/run/vm.sock"]);
        Assert.Equal(new HostOptions("/run/vm.sock", Connect: true), connect);
        Assert.Equal(connect, HostCommand.Parse([.. connect.ToArguments()]));
        Assert.Throws<ArgumentException>(() => HostCommand.Parse(["--socket", "/a", "--connect", "/b"]));
        Assert.Throws<ArgumentException>(() => HostCommand.Parse([]));
        Assert.Contains("--mode patch", new HostOptions("/s", HostMode.Patch, Connect: true).Validate(), StringComparison.Ordinal);

        var guest = GuestCommand.Parse(["--socket", "/s", "--reconnect", "7.5", "--inflight", "off", "--start-delay", "2.5"]);
        Assert.Equal((7.5, false, 2.5), (guest.ReconnectSeconds, guest.Inflight, guest.StartDelaySeconds));
        Assert.Equal(guest, GuestCommand.Parse([.. guest.ToArguments()]));
        Assert.Contains("--reconnect", new GuestOptions("/s", ReconnectSeconds: -1).Validate(), StringComparison.Ordinal);
        Assert.Contains("--start-delay", new GuestOptions("/s", StartDelaySeconds: -1).Validate(), StringComparison.Ordinal);
        Assert.Contains("--queues", new GuestOptions("/s", Queues: 0).Validate(), StringComparison.Ordinal);
        Assert.Contains("--queues", new GuestOptions("/s", Queues: 129).Validate(), StringComparison.Ordinal);
        Assert.Contains("--reconnect works with one queue pair", new GuestOptions("/s", Queues: 2, ReconnectSeconds: 5).Validate(), StringComparison.Ordinal);
        Assert.Contains("--cpus", new GuestOptions("/s", Queues: 2, Cpus: "x").Validate() ?? string.Empty, StringComparison.Ordinal);
        Assert.Contains("--queues", new HostOptions("/s", Queues: 0).Validate(), StringComparison.Ordinal);
        Assert.Null(new HostOptions("/s", Queues: 128, Cpus: "0-1").Validate());
    }

    [Fact]
    public void FeaturesNoOptionSwitchesAreRefused()
    {
        Assert.Null(new GuestOptions("/s", Features: VirtioFeatures.EventIndex | VirtioFeatures.InOrder).Validate());
        Assert.Contains("that no option switches", new GuestOptions("/s", Features: VirtioFeatures.NetMac).Validate(), StringComparison.Ordinal);
        Assert.Equal(["--ring", "packed", "--event-idx", "off", "--in-order", "on", "--mrg-rxbuf", "off", "--indirect", "off"], new GuestOptions(string.Empty, RingFormat.Packed, VirtioFeatures.InOrder).ToArguments().Take(10));
    }

    [Fact]
    public void EnumsAreSpelledInLowerCaseBothWays()
    {
        var o = new HostOptions("/s", HostMode.Patch, WaitStrategy.Adaptive, Once: true);
        Assert.Equal(["--socket", "/s", "--mode", "patch", "--wait", "adaptive", "--burst", "32", "--once"], o.ToArguments());
        Assert.Throws<ArgumentException>(() => HostCommand.Parse(["--socket", "/s", "--mode", "mirror"]));
    }

    [Fact]
    public void EveryBenchPointIsALoopbackCommandLine()
    {
        foreach (var point in BenchPlan.Create(quick: false).Points)
        {
            var o = point.ToLoopback(1.5, 256, "/tmp/bench.json");
            var parsed = LoopbackCommand.Parse([.. o.ToArguments()]);
            Assert.Equal(o, parsed);
            Assert.Equal(point.Ring, parsed.Guest.Ring);
            Assert.Equal(point.EventIdx, parsed.Guest.Has(VirtioFeatures.EventIndex));
            Assert.Equal(point.InOrder, parsed.Guest.Has(VirtioFeatures.InOrder));
            Assert.Equal(point.Wait, parsed.Guest.Wait);
            Assert.Equal(point.Rate, parsed.Guest.Rate);
            Assert.Equal("/tmp/bench.json", parsed.Guest.Json);
        }
    }

    // Realistic paths: absolute, with spaces and dots; never an option-like or response-file token.
    private static Gen<string> PathGen() =>
        from n in Gen.Choose(1, 24)
        from chars in Gen.ArrayOf(Gen.Elements("abcxyz -_./0189".ToCharArray()), n)
        select "/" + new string(chars);

    private static Gen<double> NumberGen() =>
        Gen.OneOf(
            Gen.Choose(0, 2_000_000).Select(i => (double)i),
            ArbMap.Default.GeneratorFor<NormalFloat>().Select(f => Math.Abs(f.Get)));

    internal static Gen<string?> MetricsGen() =>
        Gen.Elements<string?>(null, "127.0.0.1:9464", "127.0.0.2:1", "[::1]:65535");

    private static Gen<GuestOptions> GuestGen(Gen<string> socket) =>
        from s in socket
        from ring in Gen.Elements(RingFormat.All.ToArray())
        from features in Gen.SubListOf(GuestOptions.Switchable.Select(f => f.Feature).ToArray()).Select(fs => fs.Aggregate(VirtioFeatures.None, (all, f) => all | f))
        from queueSize in Gen.Choose(1, 32768)
        from burst in Gen.Choose(1, 4096)
        from frameSize in Gen.Choose(32, 65523)
        from rate in NumberGen()
        from seconds in NumberGen()
        from frames in Gen.Choose(0, int.MaxValue).Select(f => (long)f * 3)
        from wait in Gen.Elements(Enum.GetValues<WaitStrategy>())
        from json in Gen.OneOf(Gen.Constant<string?>(null), PathGen().Select(p => (string?)p))
        from memory in Gen.Choose(4, 65536)
        from hugePages in Gen.Elements(Enum.GetValues<Rings.Linux.Plumbing.HugePages>())
        from drain in NumberGen()
        from window in Gen.Choose(-1, 100_000)
        from metrics in MetricsGen()
        from logLevel in Gen.Elements(Enum.GetValues<Microsoft.Extensions.Logging.LogLevel>())
        from queues in Gen.Choose(1, 128)
        from cpus in CpusGen()
        from verify in Gen.Elements(Enum.GetValues<Verification>())
        select new GuestOptions(s, ring, features, queueSize, burst, frameSize, rate, seconds, frames, wait, json, memory, hugePages, drain, window, Metrics: metrics, LogLevel: logLevel, Queues: queues, Cpus: cpus, Verify: verify);

    private static Gen<string?> CpusGen() => Gen.Elements<string?>(null, "0", "0,1", "0-3", "2,3,5-7");

    private static Gen<HostOptions> HostGen() =>
        from s in PathGen()
        from mode in Gen.Elements(Enum.GetValues<HostMode>())
        from wait in Gen.Elements(Enum.GetValues<WaitStrategy>())
        from burst in Gen.Choose(1, 4096)
        from once in ArbMap.Default.GeneratorFor<bool>()
        from stats in Gen.OneOf(Gen.Constant<string?>(null), PathGen().Select(p => (string?)p))
        from verbose in ArbMap.Default.GeneratorFor<bool>()
        from quiet in ArbMap.Default.GeneratorFor<bool>()
        from allowUid in Gen.OneOf(Gen.Constant<string?>(null), Gen.Choose(0, 65535).ListOf().Where(l => l.Count > 0).Select(l => (string?)string.Join(',', l)))
        from maxMemory in Gen.OneOf(Gen.Constant(65536), Gen.Choose(1, 1 << 24))
        from trustUnsealed in ArbMap.Default.GeneratorFor<bool>()
        from connect in ArbMap.Default.GeneratorFor<bool>()
        from metrics in MetricsGen()
        from logLevel in Gen.Elements(Enum.GetValues<Microsoft.Extensions.Logging.LogLevel>())
        from queues in Gen.Choose(1, 128)
        from cpus in CpusGen()
        select new HostOptions(s, mode, wait, burst, once, stats, verbose, quiet, allowUid, connect && mode != HostMode.Patch, maxMemory, trustUnsealed, metrics, logLevel, queues, cpus);

    private static Gen<LoopbackOptions> LoopbackGen() =>
        from guest in GuestGen(Gen.Constant(string.Empty))
        from hostWait in Gen.OneOf(Gen.Constant<WaitStrategy?>(null), Gen.Elements(Enum.GetValues<WaitStrategy>()).Select(w => (WaitStrategy?)w))
        from inProcess in ArbMap.Default.GeneratorFor<bool>()
        from hostCpus in CpusGen()
        from pin in ArbMap.Default.GeneratorFor<bool>()
        select new LoopbackOptions(guest, hostWait, inProcess, hostCpus, pin);
}
