using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using Rings.Linux.Net;
using Rings.Tool.Commands;

namespace Rings.Tests.Apps;

/// <summary><c>rings switch</c> options: rendered arguments parse back to the same options; the record's defaults are the command's.</summary>
public class SwitchOptionsTests
{
    [Property(MaxTest = 200)]
    public Property SwitchOptionsRoundTrip() =>
        Prop.ForAll(
            (from ports in Gen.NonEmptyListOf(Gen.Elements("vhost-user:/run/a.sock", "vhost-user:/run/b.sock,mtu=9000", "tap:rings0", "virtio-user:/run/c.sock"))
             from processor in Gen.Elements(Enum.GetValues<SwitchProcessor>())
             from workers in Gen.Choose(1, 64)
             from cpus in Gen.Elements<string?>(null, "0", "0-1", "1,0")
             from wait in Gen.Elements(Enum.GetValues<WaitStrategy>())
             from burst in Gen.Choose(1, 256)
             from hold in Gen.Choose(0, 60_000)
             from seconds in Gen.Elements(0.0, 0.5, 3, 86400)
             from json in Gen.Elements<string?>(null, "/tmp/s.json")
             from verbose in Gen.Elements(false, true)
             from quiet in Gen.Elements(false, true)
             from allowUid in Gen.Elements<string?>(null, "0", "1000,1001")
             from metrics in OptionsRoundTripTests.MetricsGen()
             from captures in Gen.Elements<string[]?>(null, ["0=/tmp/p0.pcapng"], ["0=/tmp/a.pcap", "vhost-user:/run/a.sock=/tmp/b=c.pcapng"])
             from snaplen in Gen.Elements(65535, 14, 128)
             from logLevel in Gen.Elements(Enum.GetValues<Microsoft.Extensions.Logging.LogLevel>())
             select new SwitchOptions([.. ports.Distinct()], processor, workers, cpus, wait, burst, hold, seconds, json, verbose, quiet, allowUid, metrics, captures, snaplen, logLevel)).ToArbitrary(),
            o =>
            {
                var back = SwitchCommand.Parse([.. o.ToArguments()]);
                Assert.Equal(o.Ports, back.Ports);
                Assert.Equal(o.Captures, back.Captures);
                Assert.Equal(o with { Ports = back.Ports, Captures = back.Captures }, back);
            });

    [Fact]
    public void RecordDefaultsAreTheCommandDefaults()
    {
        var parsed = SwitchCommand.Parse(["--port", "vhost-user:/run/a.sock"]);
        Assert.Equal(new SwitchOptions(parsed.Ports), parsed);
        Assert.Equal(["vhost-user:/run/a.sock"], parsed.Ports);
        Assert.Null(parsed.Validate());
    }

    [Theory]
    [InlineData("0-", "expected CPU numbers")]
    [InlineData("1,1", "names a CPU twice")]
    [InlineData("a", "expected CPU numbers")]
    [InlineData("3-1", "expected CPU numbers")]
    public void BadCpuListsAreRefused(string cpus, string message) =>
        Assert.Contains(message, new SwitchOptions(["vhost-user:/a"], Cpus: cpus).Validate(), StringComparison.Ordinal);

    [Fact]
    public void CapturesNameAPortByIndexOrSpecification()
    {
        var o = new SwitchOptions(["vhost-user:/run/a.sock", "tap:rk0"], Captures: ["1=/tmp/one.pcapng", "vhost-user:/run/a.sock=/tmp/a=b.pcap"]);
        Assert.Null(o.Validate());
        Assert.Equal([(1, "/tmp/one.pcapng"), (0, "/tmp/a=b.pcap")], o.CaptureFiles());
        Assert.Contains("expected PORT=FILE", (o with { Captures = ["tap:rk9=/tmp/x"] }).Validate(), StringComparison.Ordinal);
    }

    [Fact]
    public void CpuListsExpandRanges()
    {
        Assert.True(SwitchCommand.TryParseCpus("0-1", out var cpus, out _));
        Assert.Equal([0, 1], cpus);
    }
}
