using System.Diagnostics;
using System.Net;
using System.Text;
using Rings.Tests.Linux;

namespace Rings.Tests.Ports;

/// <summary>A network namespace that is a host on the switch: its TAP device and its address.</summary>
/// <param name="Namespace">The namespace.</param>
/// <param name="Device">The TAP device's name (the switch's port is <c>tap:Device</c>).</param>
/// <param name="Address">Its IPv4 address, in 169.254.0.0/16.</param>
internal sealed record KernelHost(NetworkNamespace Namespace, string Device, IPAddress Address)
{
    /// <summary>The port specification for the switch.</summary>
    public string Port => $"tap:{Device}";

    /// <summary>Counts of the device as the kernel in the namespace sees it.</summary>
    public long Statistic(string name) =>
        long.Parse(Command.Run("ip", ["netns", "exec", Namespace.Name, "cat", $"/sys/class/net/{Device}/statistics/{name}"]).EnsureSuccess().Output.Trim(), System.Globalization.CultureInfo.InvariantCulture);
}

/// <summary>
/// Network namespaces made for one test, each to become a host behind a TAP port of a
/// <c>rings switch</c>. The switch creates the TAP devices in its own (the root) namespace, since
/// it opens them by name there; <see cref="Attach"/> then moves each into its namespace (its
/// descriptor stays valid) and gives it an address from one random 169.254.S.0/24. IPv6 is off in
/// the namespaces, so the kernel sends nothing unasked. Dispose removes the namespaces, and with
/// them the devices in them, and any device of this test still in the root namespace.
/// </summary>
internal sealed class KernelHosts : IDisposable
{
    private readonly List<NetworkNamespace> _namespaces = [];
    private readonly StringBuilder _transcript;

    public KernelHosts(StringBuilder transcript, int count)
    {
        _transcript = transcript;
        var tag = $"{Guid.NewGuid():N}"[..6];
        // Any 169.254.S.0/24 but the one of a rings guest's GSO frames (169.254.250.1 to .2): with
        // it, the first host would own the frames' source address and drop them all as martians.
        var subnet = Random.Shared.Next(1, 254);
        if (subnet >= 250)
        {
            subnet++;
        }

        var hosts = new List<KernelHost>();
        try
        {
            for (var i = 0; i < count; i++)
            {
                var ns = new NetworkNamespace(transcript);
                _namespaces.Add(ns);
                ns.Exec("sh", "-c", "[ ! -d /proc/sys/net/ipv6 ] || { echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6 && echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6; }").EnsureSuccess();
                hosts.Add(new KernelHost(ns, $"rk{tag}{i}", IPAddress.Parse($"169.254.{subnet}.{i + 1}")));
            }
        }
        catch
        {
            Dispose();
            throw;
        }

        Hosts = hosts;
    }

    public IReadOnlyList<KernelHost> Hosts { get; }

    public KernelHost this[int index] => Hosts[index];

    /// <summary>The hosts' port specifications.</summary>
    public IEnumerable<string> Ports => Hosts.Select(h => h.Port);

    /// <summary>Moves every host's TAP device (made by the switch) into its namespace, addresses it and brings it up.</summary>
    public void AttachAll()
    {
        foreach (var h in Hosts)
        {
            Attach(h);
        }
    }

    /// <summary>Moves <paramref name="host"/>'s TAP device into its namespace, addresses it and brings it up.</summary>
    public void Attach(KernelHost host)
    {
        var clock = Stopwatch.StartNew();
        while (Command.Run("ip", ["link", "show", host.Device]).ExitCode != 0)
        {
            Assert.True(clock.Elapsed < TimeSpan.FromSeconds(15), $"the switch did not create {host.Device}");
            Thread.Sleep(20);
        }

        host.Namespace.Log(Command.Run("ip", ["link", "set", host.Device, "netns", host.Namespace.Name])).EnsureSuccess();
        host.Namespace.Ip("addr", "add", $"{host.Address}/24", "dev", host.Device);
        host.Namespace.Ip("link", "set", host.Device, "up");
    }

    /// <summary>Adds a line to the transcript.</summary>
    public void Note(string line)
    {
        lock (_transcript)
        {
            _transcript.AppendLine(line);
        }
    }

    public void Dispose()
    {
        foreach (var ns in _namespaces)
        {
            ns.Dispose();
        }

        // A device the test never moved (it failed first) is still in the root namespace.
        foreach (var h in Hosts ?? [])
        {
            if (Command.Run("ip", ["link", "show", h.Device]).ExitCode == 0)
            {
                Command.Run("ip", ["link", "del", h.Device]);
            }
        }
    }

    /// <summary>Fails with a clear message when a command the test runs is missing.</summary>
    public static void RequireTools(params string[] tools)
    {
        foreach (var tool in tools)
        {
            var found = (Environment.GetEnvironmentVariable("PATH") ?? "/usr/bin:/bin").Split(':')
                .Concat(["/usr/bin", "/usr/sbin", "/bin", "/sbin"])
                .Any(d => File.Exists(Path.Combine(d, tool)));
            Assert.True(found, $"{tool} is not installed: run scripts/install-deps.sh (as root, which CI does)");
        }
    }
}
