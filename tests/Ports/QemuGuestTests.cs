using System.Diagnostics;
using System.Text;
using Rings.Tests.Apps;
using Rings.Tests.Hostile;
using Rings.Tests.Linux;
using Xunit.Abstractions;

namespace Rings.Tests.Ports;

/// <summary>
/// A Linux guest under QEMU (TCG: no KVM needed) on a vhost-user port of <c>rings switch</c>,
/// pinging a network namespace behind a TAP port of the same switch. The guest is Debian's
/// kernel (linux-image-amd64) with an initramfs built here from busybox-static and the kernel's
/// own virtio modules; its whole life is its init script. The test fails, never skips, when QEMU,
/// the kernel or busybox is missing (scripts/install-deps.sh installs them).
/// </summary>
[Collection(ProcessCollection.Name)]
public sealed class QemuGuestTests(ITestOutputHelper output)
{
    private const int SigTerm = 15;
    private const int Pings = 20;

    /// <summary>
    /// QEMU's virtio-net device (legacy interrupts, <c>vectors=0</c>) drives the switch's
    /// vhost-user port with the guest's memory shared through a memfd: the guest's 20 echo
    /// requests reach the namespace and all 20 replies come back.
    /// </summary>
    [Fact]
    public void ALinuxGuestUnderQemuPingsANamespaceThroughTheSwitch()
    {
        Privileges.RequireNetworkAdmin();
        KernelHosts.RequireTools("qemu-system-x86_64");
        var (kernel, modules) = GuestKernel();
        var transcript = new StringBuilder();
        try
        {
            using var hosts = new KernelHosts(transcript, 1);
            var host = hosts[0];
            using var sw = RingsSwitch.StartPorts(["vhost-user:{dir}/vm.sock", host.Port], "--wait", "adaptive", "--quiet");
            hosts.Attach(host);

            string[] qemu = ["--kill-after=5", "240", .. Qemu(kernel, modules, sw.Directory, host, Pings, $"socket,id=c0,path={sw.Sockets[0]}", "02:52:49:4e:51:01")];
            var clock = Stopwatch.StartNew();
            var run = Command.Run("timeout", qemu, 260_000);
            hosts.Note($"$ qemu-system-x86_64 ... ({clock.Elapsed.TotalSeconds:0.0} s, exit {run.ExitCode})\n{run.Output}{run.Error}");
            Assert.Equal(0, run.ExitCode);
            Assert.Contains("RINGS-GUEST up: 02:52:49:4e:51:01", run.Output, StringComparison.Ordinal);
            Assert.Contains($"{Pings} packets transmitted, {Pings} packets received, 0% packet loss", run.Output, StringComparison.Ordinal);
            Assert.Contains("RINGS-GUEST ping exit 0", run.Output, StringComparison.Ordinal);

            // The namespace's side of it: every request came in through the TAP device, every reply went out.
            Assert.True(host.Statistic("rx_packets") >= Pings && host.Statistic("tx_packets") >= Pings);
            sw.WaitForLine("vm.sock: link down", TimeSpan.FromSeconds(10));
            sw.Signal(SigTerm, TimeSpan.FromSeconds(5));
            Assert.Equal(0, sw.ExitCode);
            hosts.Note(sw.Output);
            var table = KernelThroughSwitchTests.FinalTable(sw.Output);
            Assert.True(table[0].Rx >= Pings && table[0].Tx >= Pings, sw.Output);
        }
        finally
        {
            output.WriteLine(transcript.ToString());
        }
    }

    /// <summary>
    /// QEMU's virtio-net device with two queue pairs (<c>mq=on</c>, still <c>vectors=0</c>) on a
    /// <c>queues=2</c> port of <c>rings switch --workers 2</c>: the guest (two CPUs, so its driver
    /// enables both pairs) pings the namespace from each CPU at once, each CPU transmitting on its
    /// own queue; every echo comes back, and the switch's counts show both workers received from
    /// the guest's port, each on its own pair.
    /// </summary>
    [Fact]
    public void ALinuxGuestWithTwoQueuePairsPingsThroughTwoWorkers()
    {
        Privileges.RequireNetworkAdmin();
        KernelHosts.RequireTools("qemu-system-x86_64");
        var (kernel, modules) = GuestKernel();
        var transcript = new StringBuilder();
        var json = Path.Combine(Path.GetTempPath(), $"rings-test-{Guid.NewGuid():N}.json");
        try
        {
            using var hosts = new KernelHosts(transcript, 1);
            var host = hosts[0];
            using var sw = RingsSwitch.StartPorts(["vhost-user:{dir}/vm.sock,queues=2", host.Port], "--wait", "adaptive", "--verbose", "--workers", "2", "--json", json);
            hosts.Attach(host);
            Assert.Contains("pair 0 on worker 0, pair 1 on worker 1", sw.Output, StringComparison.Ordinal);

            string[] qemu = ["--kill-after=5", "240", .. Qemu(kernel, modules, sw.Directory, host, Pings, $"socket,id=c0,path={sw.Sockets[0]}", "02:52:49:4e:51:03", queues: 2)];
            var clock = Stopwatch.StartNew();
            var run = Command.Run("timeout", qemu, 260_000);
            hosts.Note($"$ qemu-system-x86_64 ... ({clock.Elapsed.TotalSeconds:0.0} s, exit {run.ExitCode})\n{run.Output}{run.Error}");
            hosts.Note(sw.Output);
            Assert.Equal(0, run.ExitCode);
            Assert.Contains("RINGS-GUEST up: 02:52:49:4e:51:03", run.Output, StringComparison.Ordinal);
            Assert.Contains("RINGS-GUEST queues: rx-0 rx-1 tx-0 tx-1", run.Output, StringComparison.Ordinal);
            Assert.Contains("RINGS-GUEST ping exit 0", run.Output, StringComparison.Ordinal);
            Assert.Equal(2, System.Text.RegularExpressions.Regex.Count(run.Output, $@"\b{Pings} packets transmitted, {Pings} packets received, 0% packet loss"));

            sw.WaitForLine("vm.sock,queues=2: link down", TimeSpan.FromSeconds(10));
            sw.Signal(SigTerm, TimeSpan.FromSeconds(5));
            Assert.Equal(0, sw.ExitCode);
            hosts.Note(sw.Output);

            // Each worker received from its own pair of the guest's port.
            var port = System.Text.Json.JsonDocument.Parse(File.ReadAllText(json)).RootElement.GetProperty("ports")[0];
            var parts = port.GetProperty("by_worker").EnumerateArray().ToArray();
            hosts.Note(port.ToString());
            Assert.Equal(2, parts.Length);
            Assert.All(parts, p => Assert.True(p.GetProperty("rx_frames").GetInt64() >= Pings, port.ToString()));
            Assert.True(port.GetProperty("rx_frames").GetInt64() >= 2 * Pings && port.GetProperty("tx_frames").GetInt64() >= 2 * Pings, port.ToString());
        }
        finally
        {
            File.Delete(json);
            output.WriteLine(transcript.ToString());
        }
    }

    /// <summary>
    /// Reconnect with QEMU as the listening front-end (<c>server=on</c> on its chardev) and the
    /// switch's <c>vhost-user-client:</c> port as the client: while the guest pings the namespace,
    /// the switch is killed with SIGKILL and started again (its TAP device with it), and the
    /// guest's echo replies come back again through the new switch, on the guest's same rings.
    /// </summary>
    [Fact]
    public void ALinuxGuestUnderQemuPingsOnAfterTheSwitchIsKilledAndStartedAgain()
    {
        Privileges.RequireNetworkAdmin();
        KernelHosts.RequireTools("qemu-system-x86_64");
        var (kernel, modules) = GuestKernel();
        var transcript = new StringBuilder();
        var dir = Directory.CreateTempSubdirectory("rings-qemu-");
        RingsSwitch? sw = null;
        CollectedProcess? vm = null;
        try
        {
            using var hosts = new KernelHosts(transcript, 1);
            var host = hosts[0];
            var socket = Path.Combine(dir.FullName, "vm.sock");
            // The TAP device keeps one address across the restart (mac=): a new device's random
            // one would leave the guest's neighbour entry stale, and replies would resume only
            // once it expired, about 30 s later.
            const string NamespaceMac = "02:52:49:4e:54:01";
            string[] ports = [$"vhost-user-client:{socket}", $"{host.Port},mac={NamespaceMac}"];
            sw = RingsSwitch.StartPorts(ports, "--wait", "adaptive", "--quiet");
            hosts.Attach(host);
            Assert.Contains($"link/ether {NamespaceMac}", host.Namespace.Ip("link", "show", host.Device).Output, StringComparison.Ordinal);

            vm = CollectedProcess.Start("timeout", ["--kill-after=5", "300", .. Qemu(kernel, modules, dir, host, 1000, $"socket,id=c0,path={socket},server=on,wait=off", "02:52:49:4e:51:02")]);

            static bool Reply(string line) => line.Contains(" bytes from ", StringComparison.Ordinal);
            vm.WaitForLine("RINGS-GUEST up: 02:52:49:4e:51:02", TimeSpan.FromSeconds(180));
            vm.WaitForLines(0, Reply, 5, TimeSpan.FromSeconds(60));

            // SIGKILL: the switch says nothing to QEMU, and its TAP device goes with it.
            sw.Signal(9, TimeSpan.FromSeconds(10));
            hosts.Note($"first switch killed:\n{sw.Output}");
            sw.Dispose();
            sw = null;
            var before = vm.LineCount;

            var restarted = Stopwatch.StartNew();
            sw = RingsSwitch.StartPorts(ports, "--wait", "adaptive", "--quiet");
            hosts.Attach(host);
            vm.WaitForLines(before, Reply, 5, TimeSpan.FromSeconds(60));
            var replies = vm.LinesFrom(0).Count(Reply);
            hosts.Note($"echo replies: {replies}, of which after the restart: {vm.LinesFrom(before).Count(Reply)}; the fifth came {restarted.Elapsed.TotalSeconds:0.0} s after the new switch was started");

            // The new switch served QEMU's rings where they were: frames both ways on the guest's port.
            sw.Signal(SigTerm, TimeSpan.FromSeconds(5));
            hosts.Note(sw.Output);
            var table = KernelThroughSwitchTests.FinalTable(sw.Output);
            Assert.True(table[0].Rx >= 5 && table[0].Tx >= 5, sw.Output);
        }
        finally
        {
            sw?.Dispose();
            if (vm is not null)
            {
                transcript.AppendLine($"--- guest console ---\n{vm.Output}");
                vm.Dispose();
            }

            dir.Delete(recursive: true);
            output.WriteLine(transcript.ToString());
        }
    }

    /// <summary>
    /// qemu-system-x86_64 and its arguments: a TCG guest of 256 MiB shared through a memfd, booting
    /// the host's kernel with an initramfs (written to <paramref name="dir"/>) that pings
    /// <paramref name="host"/> <paramref name="pings"/> times, its virtio-net device (MSI-X off) on
    /// the vhost-user chardev <paramref name="chardev"/>.
    /// </summary>
    private static string[] Qemu(string kernel, (List<string> Order, Dictionary<string, byte[]> Files) modules, DirectoryInfo dir, KernelHost host, int pings, string chardev, string mac, int queues = 1)
    {
        var guestIp = $"{string.Join('.', host.Address.GetAddressBytes()[..3])}.10";
        var initrd = Path.Combine(dir.FullName, "initrd.cpio");
        File.WriteAllBytes(initrd, Initramfs.Build(Init(modules.Order), modules.Files));
        var append = $"console=ttyS0 panic=-1 quiet rings.ip={guestIp}/24 rings.peer={host.Address} rings.count={pings} rings.cpus={queues}";
        return
        [
            "qemu-system-x86_64",
            "-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio",
            "-accel", "tcg", "-m", "256M", "-smp", queues.ToString(System.Globalization.CultureInfo.InvariantCulture), "-no-reboot",
            "-kernel", kernel, "-initrd", initrd, "-append", append,
            "-object", "memory-backend-memfd,id=mem,size=256M,share=on", "-numa", "node,memdev=mem",
            // With several pairs: VIRTIO_NET_F_MQ (mq=on), still on a legacy interrupt (vectors=0);
            // the guest runs one pair per CPU, so it gets as many CPUs as pairs.
            "-chardev", chardev, "-netdev", queues == 1 ? "vhost-user,id=n0,chardev=c0" : $"vhost-user,id=n0,chardev=c0,queues={queues}",
            "-device", queues == 1 ? $"virtio-net-pci,netdev=n0,vectors=0,mac={mac}" : $"virtio-net-pci,netdev=n0,vectors=0,mq=on,mac={mac}",
        ];
    }

    /// <summary>
    /// The guest's init: load the virtio modules, address eth0 from the kernel command line, ping
    /// from each CPU at once (the driver transmits on the queue of the sending CPU), power off.
    /// One ping first resolves the peer's address: a frame held for an unresolved neighbour
    /// leaves from the CPU that takes the ARP reply, on that CPU's queue, not the sender's.
    /// </summary>
    private static string Init(IEnumerable<string> modules) => $$"""
        #!/bin/busybox sh
        /bin/busybox --install -s /bin
        mount -t proc proc /proc
        mount -t sysfs sys /sys
        mount -t devtmpfs dev /dev
        mkdir -p /tmp
        for m in {{string.Join(' ', modules)}}; do insmod /lib/$m.ko || echo "RINGS-GUEST insmod $m failed"; done
        for word in $(cat /proc/cmdline); do
            case "$word" in rings.*=*) key=${word%%=*}; eval "${key#rings.}=${word#*=}" ;; esac
        done
        ip link set lo up
        ip link set eth0 up
        ip addr add "$ip" dev eth0
        echo "RINGS-GUEST up: $(cat /sys/class/net/eth0/address)"
        echo "RINGS-GUEST queues: $(ls /sys/class/net/eth0/queues | tr '\n' ' ')"
        ping -c 1 -W 5 "$peer" > /dev/null 2>&1
        cpu=1
        while [ "$cpu" -lt "$cpus" ]; do
            taskset -c "$cpu" ping -c "$count" -i 0.2 -W 2 "$peer" > /tmp/ping$cpu 2>&1 &
            cpu=$((cpu + 1))
        done
        taskset -c 0 ping -c "$count" -i 0.2 -W 2 "$peer"
        echo "RINGS-GUEST ping exit $?"
        wait
        cat /tmp/ping* 2>/dev/null
        poweroff -f
        """.Replace("\r", string.Empty, StringComparison.Ordinal);

    /// <summary>The newest installed kernel and the virtio modules it needs, in load order (from its modules.dep).</summary>
    private static (string Kernel, (List<string> Order, Dictionary<string, byte[]> Files) Modules) GuestKernel()
    {
        var kernel = Directory.Exists("/boot") ? Directory.GetFiles("/boot", "vmlinuz-*").Order(StringComparer.Ordinal).LastOrDefault() : null;
        Assert.True(kernel is not null, "no kernel in /boot: scripts/install-deps.sh installs linux-image-amd64");
        var version = Path.GetFileName(kernel)!["vmlinuz-".Length..];
        var moduleDir = $"/lib/modules/{version}";
        var depFile = Path.Combine(moduleDir, "modules.dep");
        Assert.True(File.Exists(depFile), $"no {depFile} for {kernel}");
        Assert.True(File.Exists("/bin/busybox") && !IsDynamic("/bin/busybox"), "/bin/busybox is missing or not static: scripts/install-deps.sh installs busybox-static");

        var deps = File.ReadAllLines(depFile)
            .Select(l => l.Split(':'))
            .ToDictionary(p => p[0], p => p[1].Split(' ', StringSplitOptions.RemoveEmptyEntries));
        var order = new List<string>();
        var files = new Dictionary<string, byte[]>(StringComparer.Ordinal);
        void Add(string path)
        {
            var name = Path.GetFileName(path).Split('.')[0];
            if (files.ContainsKey($"lib/{name}.ko"))
            {
                return;
            }

            Assert.True(path.EndsWith(".ko", StringComparison.Ordinal), $"{path} is compressed; the test loads plain .ko files with busybox insmod");

            // modules.dep lists a module's dependencies so that the last is loaded first.
            foreach (var d in deps[path].Reverse())
            {
                Add(d);
            }

            files[$"lib/{name}.ko"] = File.ReadAllBytes(Path.Combine(moduleDir, path));
            order.Add(name);
        }

        foreach (var wanted in new[] { "virtio_pci", "virtio_net" })
        {
            var path = deps.Keys.FirstOrDefault(k => Path.GetFileName(k).StartsWith(wanted + ".ko", StringComparison.Ordinal));
            if (path is null)
            {
                // Built into the kernel: nothing to load.
                continue;
            }

            Add(path);
        }

        files["bin/busybox"] = File.ReadAllBytes("/bin/busybox");
        return (kernel!, (order, files));
    }

    /// <summary>True when the ELF file asks for a program interpreter (a dynamically linked executable).</summary>
    private static bool IsDynamic(string path) =>
        File.ReadAllBytes(path).AsSpan().IndexOf("/lib64/ld-linux"u8) >= 0;

    /// <summary>An initramfs: a cpio archive in the "newc" format the kernel unpacks (no compression).</summary>
    private static class Initramfs
    {
        public static byte[] Build(string init, Dictionary<string, byte[]> files)
        {
            using var archive = new MemoryStream();
            var inode = 1;
            foreach (var dir in new[] { "bin", "lib", "proc", "sys", "dev" })
            {
                Entry(archive, dir, 0x41ED, [], inode++);
            }

            Entry(archive, "init", 0x81ED, Encoding.ASCII.GetBytes(init), inode++);
            foreach (var (name, bytes) in files)
            {
                Entry(archive, name, 0x81ED, bytes, inode++);
            }

            Entry(archive, "TRAILER!!!", 0, [], 0);
            return archive.ToArray();
        }

        private static void Entry(MemoryStream archive, string name, int mode, byte[] data, int inode)
        {
            var nameBytes = Encoding.ASCII.GetBytes(name + "\0");

            // magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor, rdevminor, namesize, check
            var header = $"070701{inode:X8}{mode:X8}{0:X8}{0:X8}{1:X8}{0:X8}{data.Length:X8}{0:X8}{0:X8}{0:X8}{0:X8}{nameBytes.Length:X8}{0:X8}";
            archive.Write(Encoding.ASCII.GetBytes(header));
            archive.Write(nameBytes);
            Pad(archive);
            archive.Write(data);
            Pad(archive);
        }

        private static void Pad(MemoryStream archive)
        {
            while (archive.Length % 4 != 0)
            {
                archive.WriteByte(0);
            }
        }
    }
}
