using System.Diagnostics;
using System.Text;

namespace Rings.Tests.VhostUser;

/// <summary>
/// Runs DPDK's testpmd as a vhost-user peer: no hugepages (or those of a test's own hugetlbfs
/// mount, <see cref="StartWithHugepages"/>), no PCI, a small mbuf pool, io
/// forwarding (what arrives on the port goes back out of it). Always under `timeout`, always
/// stopped at the end (Enter, then kill). The tests fail, not skip, when testpmd is missing:
/// scripts/install-deps.sh installs it.
/// </summary>
internal sealed class Testpmd : IDisposable
{
    private readonly Process _process;
    private readonly StringBuilder _output = new();
    private readonly string _prefix;
    private readonly bool _interactive;
    private bool _stopped;

    private Testpmd(Process process, string prefix, bool interactive)
    {
        _process = process;
        _prefix = prefix;
        _interactive = interactive;
    }

    public string Output
    {
        get
        {
            lock (_output)
            {
                return _output.ToString();
            }
        }
    }

    public int? ExitCode { get; private set; }

    public static string Executable()
    {
        var fromPath = (Environment.GetEnvironmentVariable("PATH") ?? string.Empty)
            .Split(':', StringSplitOptions.RemoveEmptyEntries)
            .Select(d => Path.Combine(d, "dpdk-testpmd"))
            .FirstOrDefault(File.Exists);
        var found = fromPath ?? (File.Exists("/usr/bin/dpdk-testpmd") ? "/usr/bin/dpdk-testpmd" : null);
        Assert.True(found is not null, "dpdk-testpmd not found on PATH or in /usr/bin: run scripts/install-deps.sh (Debian package dpdk-dev)");
        return found!;
    }

    /// <summary>Starts testpmd with one virtual device.</summary>
    /// <param name="vdev">The --vdev argument.</param>
    /// <param name="forwardMode">testpmd forwarding mode.</param>
    /// <param name="extra">More testpmd application arguments (after the defaults, so they override them); "-i" makes it interactive (see <see cref="Send"/>).</param>
    public static Testpmd Start(string vdev, string forwardMode = "io", params string[] extra) =>
        Launch(["--no-huge", "-m", "256"], vdev, forwardMode, extra);

    /// <summary>
    /// Starts testpmd with 256 MiB of 2 MiB hugepages: files on <paramref name="hugeDir"/> (a
    /// hugetlbfs mount the test made, <see cref="Linux.HugePageMount"/>), or hugetlb memfds
    /// (<c>--in-memory</c>) when it is null. Neither can be sealed.
    /// </summary>
    /// <param name="hugeDir">The hugetlbfs mount, or null for <c>--in-memory</c>.</param>
    /// <param name="singleFileSegments">
    /// One file per memory segment list (<c>--single-file-segments</c>), the regions at offsets in
    /// it. DPDK's virtio-user needs it: with a file per page it has more regions than the eight
    /// it sends, and refuses to start ("Too many memory regions").
    /// </param>
    /// <param name="vdev">The --vdev argument.</param>
    /// <param name="forwardMode">testpmd forwarding mode.</param>
    /// <param name="extra">More testpmd application arguments.</param>
    public static Testpmd StartWithHugepages(string? hugeDir, bool singleFileSegments, string vdev, string forwardMode = "io", params string[] extra) =>
        Launch(
            [.. hugeDir is null ? new[] { "--in-memory" } : ["--huge-dir", hugeDir], "-m", "256", .. singleFileSegments ? new[] { "--single-file-segments" } : []],
            vdev,
            forwardMode,
            extra);

    private static Testpmd Launch(string[] memory, string vdev, string forwardMode, string[] extra)
    {
        var exe = Executable();
        var prefix = $"rings-{Guid.NewGuid():N}"[..16];
        var psi = new ProcessStartInfo("timeout")
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        string[] arguments =
        [
            "--kill-after=5", "120", "stdbuf", "-oL", exe,
            .. memory, "--no-pci", $"--file-prefix={prefix}", "-l", "0-1",
            "--log-level=lib.vhost.config:debug", "--log-level=pmd.net.vhost:debug", "--log-level=pmd.net.virtio.init:debug",
            "--vdev", vdev,
            "--", "--total-num-mbufs=2048", "--nb-cores=1", "--rxq=1", "--txq=1", $"--forward-mode={forwardMode}",
        ];
        foreach (var a in arguments.Concat(extra))
        {
            psi.ArgumentList.Add(a);
        }

        var process = new Process { StartInfo = psi };
        var testpmd = new Testpmd(process, prefix, extra.Contains("-i") || extra.Contains("--interactive"));
        process.OutputDataReceived += (_, e) => testpmd.Append(e.Data);
        process.ErrorDataReceived += (_, e) => testpmd.Append(e.Data);
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return testpmd;
    }

    public bool WaitFor(string text, int timeoutMilliseconds) =>
        TestDevice.Wait(() => Output.Contains(text, StringComparison.Ordinal) || _process.HasExited && Output.Contains(text, StringComparison.Ordinal), timeoutMilliseconds)
        || Output.Contains(text, StringComparison.Ordinal);

    /// <summary>Waits until <paramref name="text"/> appeared at least <paramref name="count"/> times.</summary>
    public bool WaitForCount(string text, int count, int timeoutMilliseconds) =>
        TestDevice.Wait(() => Occurrences(text) >= count, timeoutMilliseconds);

    public int Occurrences(string text)
    {
        var output = Output;
        var n = 0;
        for (var i = output.IndexOf(text, StringComparison.Ordinal); i >= 0; i = output.IndexOf(text, i + text.Length, StringComparison.Ordinal))
        {
            n++;
        }

        return n;
    }

    public bool HasExited => _process.HasExited;

    /// <summary>Types one command at an interactive testpmd's prompt.</summary>
    public void Send(string command)
    {
        _process.StandardInput.WriteLine(command);
        _process.StandardInput.Flush();
    }

    /// <summary>Asks testpmd to quit (Enter), waits, and kills it if it does not.</summary>
    public void Stop()
    {
        if (_stopped)
        {
            return;
        }

        _stopped = true;
        try
        {
            if (!_process.HasExited)
            {
                _process.StandardInput.WriteLine(_interactive ? "quit" : string.Empty);
                _process.StandardInput.Flush();
            }
        }
        catch (IOException)
        {
        }

        if (!_process.WaitForExit(20_000))
        {
            _process.Kill(entireProcessTree: true);
            _process.WaitForExit(5_000);
        }

        _process.WaitForExit();
        ExitCode = _process.ExitCode;
        try
        {
            var runtime = Path.Combine("/var/run/dpdk", _prefix);
            if (Directory.Exists(runtime))
            {
                Directory.Delete(runtime, recursive: true);
            }
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
    }

    public void Dispose()
    {
        Stop();
        _process.Dispose();
    }

    private void Append(string? line)
    {
        if (line is null)
        {
            return;
        }

        lock (_output)
        {
            _output.AppendLine(line);
        }
    }
}
