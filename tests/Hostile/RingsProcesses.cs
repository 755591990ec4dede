using System.Diagnostics;
using System.Runtime.InteropServices;
using Rings.Tests.Apps;

namespace Rings.Tests.Hostile;

/// <summary>What a process holds, from /proc: descriptors, threads, resident memory and guest memory mappings.</summary>
/// <param name="Fds">Open file descriptors.</param>
/// <param name="Threads">Threads.</param>
/// <param name="RssKiB">Resident set size (VmRSS), KiB.</param>
/// <param name="GuestMappings">Writable shared mappings (a front-end's memory, whatever its file is called), but for the runtime's own code double-mapping.</param>
internal readonly record struct ProcessResources(int Fds, int Threads, long RssKiB, int GuestMappings)
{
    public static ProcessResources Of(int pid)
    {
        var fds = Directory.GetFileSystemEntries($"/proc/{pid}/fd").Length;
        var threads = Directory.GetDirectories($"/proc/{pid}/task").Length;
        long rss = 0;
        foreach (var line in File.ReadLines($"/proc/{pid}/status"))
        {
            if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
            {
                rss = long.Parse(line["VmRSS:".Length..].Trim().Split(' ')[0], System.Globalization.CultureInfo.InvariantCulture);
            }
        }

        var mappings = File.ReadLines($"/proc/{pid}/maps").Count(IsPeerMemory);
        return new ProcessResources(fds, threads, rss, mappings);
    }

    public override string ToString() => $"{Fds} fds, {Threads} threads, VmRSS {RssKiB / 1024.0:0.0} MiB, {GuestMappings} guest mappings";

    // "ADDRESS PERMS OFFSET DEV INODE PATH": read-write and shared ("rw-s") is how a peer's memory
    // is mapped; the runtime maps its code through a memfd of its own ("doublemapper").
    private static bool IsPeerMemory(string line)
    {
        var fields = line.Split(' ', 3, StringSplitOptions.RemoveEmptyEntries);
        return fields.Length > 1 && fields[1].Length == 4 && fields[1][1] == 'w' && fields[1][3] == 's'
            && !line.Contains("doublemapper", StringComparison.Ordinal);
    }
}

/// <summary>
/// A child process whose standard output and error lines (the latter marked <c>stderr:</c>) are
/// collected as they come; on dispose it is killed with its children and its directory, if it has
/// one, removed. <see cref="RingsHost"/>, <see cref="RingsSwitch"/> and the signal tests' runs are these.
/// </summary>
internal partial class CollectedProcess : IDisposable
{
    private readonly Process _process;
    private readonly DirectoryInfo? _directory;
    private readonly List<string> _lines = [];

    /// <summary>Starts <paramref name="executable"/>; if it cannot start, <paramref name="directory"/> is removed.</summary>
    protected CollectedProcess(string executable, IEnumerable<string> arguments, DirectoryInfo? directory)
    {
        var info = new ProcessStartInfo(executable) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in arguments)
        {
            info.ArgumentList.Add(a);
        }

        _process = new Process { StartInfo = info };
        _directory = directory;
        _process.OutputDataReceived += (_, e) => Add(e.Data);
        _process.ErrorDataReceived += (_, e) => Add(e.Data is null ? null : $"stderr: {e.Data}");
        try
        {
            _process.Start();
        }
        catch
        {
            Dispose();
            throw;
        }

        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();
    }

    public int Pid => _process.Id;

    public bool HasExited => _process.HasExited;

    public int ExitCode => _process.ExitCode;

    public int LineCount
    {
        get
        {
            lock (_lines)
            {
                return _lines.Count;
            }
        }
    }

    public string Output
    {
        get
        {
            lock (_lines)
            {
                return string.Join('\n', _lines);
            }
        }
    }

    /// <summary>Starts <paramref name="executable"/> with <paramref name="arguments"/>, collecting its output.</summary>
    public static CollectedProcess Start(string executable, IEnumerable<string> arguments) => new(executable, arguments, null);

    /// <summary>Lines from <paramref name="from"/> on.</summary>
    public List<string> LinesFrom(int from)
    {
        lock (_lines)
        {
            return _lines.Skip(from).ToList();
        }
    }

    /// <summary>Waits until a line contains <paramref name="text"/>; fails if the process exits first or the time runs out.</summary>
    public void WaitForLine(string text, TimeSpan timeout)
    {
        var clock = Stopwatch.StartNew();
        while (!Output.Contains(text, StringComparison.Ordinal))
        {
            Assert.True(clock.Elapsed < timeout && !HasExited, $"no line with '{text}' within {timeout.TotalSeconds} s (exited: {HasExited}):\n{Output}");
            Thread.Sleep(20);
        }
    }

    /// <summary>Waits until <paramref name="count"/> lines from <paramref name="from"/> on match; returns the lines from there.</summary>
    public List<string> WaitForLines(int from, Func<string, bool> match, int count, TimeSpan timeout)
    {
        var clock = Stopwatch.StartNew();
        while (true)
        {
            var lines = LinesFrom(from);
            if (lines.Count(match) >= count)
            {
                return lines;
            }

            Assert.True(clock.Elapsed < timeout && !HasExited, $"the expected {count} line(s) did not come within {timeout.TotalSeconds} s (exited: {HasExited}):\n{string.Join('\n', lines)}");
            Thread.Sleep(20);
        }
    }

    /// <summary>
    /// Sends <paramref name="signal"/> and returns how long the process took to exit and close its
    /// output (which is then complete); fails if that takes longer than <paramref name="limit"/>.
    /// </summary>
    public TimeSpan Signal(int signal, TimeSpan limit)
    {
        var clock = Stopwatch.StartNew();
        Assert.Equal(0, Kill(Pid, signal));
        Assert.True(_process.WaitForExitAsync().Wait(limit), $"no exit within {limit.TotalSeconds} s of signal {signal}:\n{Output}");
        return clock.Elapsed;
    }

    public void Dispose()
    {
        try
        {
            if (!_process.HasExited)
            {
                _process.Kill(entireProcessTree: true);
            }

            _process.WaitForExit(10_000);
        }
        catch (InvalidOperationException)
        {
            // Never started.
        }

        _process.Dispose();
        try
        {
            _directory?.Delete(recursive: true);
        }
        catch (IOException)
        {
        }
    }

    /// <summary>Waits for <paramref name="started"/>; if the process exits first or 15 s pass, disposes it and fails with its output.</summary>
    protected void WaitUntilStarted(Func<bool> started, string what)
    {
        var clock = Stopwatch.StartNew();
        while (!started())
        {
            if (HasExited || clock.Elapsed > TimeSpan.FromSeconds(15))
            {
                Dispose();
                Assert.Fail($"{what} did not start:\n{Output}");
            }

            Thread.Sleep(20);
        }
    }

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static partial int Kill(int pid, int signal);

    private void Add(string? line)
    {
        if (line is null)
        {
            return;
        }

        lock (_lines)
        {
            _lines.Add(line);
        }
    }
}

/// <summary>
/// A back-end process on a socket in its own directory, its output collected line by line: the real
/// <c>rings host</c>, or the test peer's hostile host.
/// </summary>
internal sealed class RingsHost : CollectedProcess
{
    private RingsHost(string executable, DirectoryInfo directory, string socket, string[] options)
        : base(executable, ["host", "--socket", socket, .. options], directory)
    {
        Socket = socket;
    }

    public string Socket { get; }

    /// <summary>Starts <c>rings host</c> with <paramref name="options"/>.</summary>
    public static RingsHost Start(params string[] options) => Start(LoopbackProcessTests.RingsExecutable(), options);

    /// <summary>Starts the test peer's host that turns on its front-ends in the way <paramref name="kind"/> says.</summary>
    public static RingsHost StartHostile(string kind) => Start(RingsRun.TestPeerExecutable(), "--misbehave", kind);

    public ProcessResources Resources() => ProcessResources.Of(Pid);

    private static RingsHost Start(string executable, params string[] options)
    {
        var directory = Directory.CreateTempSubdirectory("rings-hostile-");
        var socket = Path.Combine(directory.FullName, "vhost.sock");
        var host = new RingsHost(executable, directory, socket, options);
        host.WaitUntilStarted(() => File.Exists(socket), "the host");
        return host;
    }
}

/// <summary>A <c>rings switch</c> process with its sockets in a directory of its own, its output collected.</summary>
internal sealed class RingsSwitch : CollectedProcess
{
    private RingsSwitch(DirectoryInfo directory, string[] ports, string[] sockets, string[] options)
        : base(LoopbackProcessTests.RingsExecutable(), ["switch", .. ports.SelectMany(p => (string[])["--port", p]), .. options], directory)
    {
        Directory = directory;
        Sockets = sockets;
    }

    public DirectoryInfo Directory { get; }

    public string[] Sockets { get; }

    /// <summary>Starts a switch with <paramref name="ports"/> vhost-user ports (sockets p0.sock, p1.sock, ...) and waits for its sockets.</summary>
    public static RingsSwitch Start(int ports, params string[] options)
    {
        var directory = System.IO.Directory.CreateTempSubdirectory("rings-switch-");
        var sockets = Enumerable.Range(0, ports).Select(i => Path.Combine(directory.FullName, $"p{i}.sock")).ToArray();
        return Start(directory, [.. sockets.Select(s => $"vhost-user:{s}")], sockets, options);
    }

    /// <summary>
    /// Starts a switch with ports of any kind (<c>{dir}</c> in a specification is the switch's own
    /// directory) and waits until it has printed its port list (every port opened).
    /// </summary>
    public static RingsSwitch StartPorts(IEnumerable<string> ports, params string[] options)
    {
        var directory = System.IO.Directory.CreateTempSubdirectory("rings-switch-");
        var specs = ports.Select(p => p.Replace("{dir}", directory.FullName, StringComparison.Ordinal)).ToArray();
        var sockets = specs.Where(p => p.StartsWith("vhost-user:", StringComparison.Ordinal)).Select(p => p["vhost-user:".Length..].Split(',')[0]).ToArray();
        var sw = Start(directory, specs, sockets, options);
        try
        {
            sw.WaitForLine($"  port {specs.Length - 1}: ", TimeSpan.FromSeconds(15));
        }
        catch
        {
            sw.Dispose();
            throw;
        }

        return sw;
    }

    private static RingsSwitch Start(DirectoryInfo directory, string[] ports, string[] sockets, string[] options)
    {
        var sw = new RingsSwitch(directory, ports, sockets, options);
        sw.WaitUntilStarted(() => sockets.All(File.Exists), "the switch");
        return sw;
    }
}

/// <summary>Runs the <c>rings</c> tool, or the test peer with the hostile front-end and back-end, to completion within a time limit.</summary>
internal static class RingsRun
{
    /// <summary>The test peer executable (Rings.TestPeer), built beside the tool by the solution build.</summary>
    public static string TestPeerExecutable()
    {
        var tool = LoopbackProcessTests.RingsExecutable();
        var config = Path.GetFileName(Path.GetDirectoryName(Path.GetDirectoryName(tool)))!;
        var apps = Path.GetFullPath(Path.Combine(Path.GetDirectoryName(tool)!, "..", "..", "..", ".."));
        var path = Path.Combine(apps, "Testing", "Peer", "bin", config, "net10.0", "Rings.TestPeer");
        Assert.True(File.Exists(path), $"the test peer is not built at {path}; build Rings.sln first");
        return path;
    }

    public static (int Exit, string Out, string Err, TimeSpan Elapsed) Run(TimeSpan limit, params string[] args) =>
        Program(LoopbackProcessTests.RingsExecutable(), limit, args);

    /// <summary>Runs the test peer (<c>guest</c> attacks a back-end).</summary>
    public static (int Exit, string Out, string Err, TimeSpan Elapsed) Peer(TimeSpan limit, params string[] args) =>
        Program(TestPeerExecutable(), limit, args);

    /// <summary>Runs <paramref name="executable"/> to its end; fails (killing it) if that takes longer than <paramref name="limit"/>.</summary>
    public static (int Exit, string Out, string Err, TimeSpan Elapsed) Program(string executable, TimeSpan limit, params string[] args)
    {
        var info = new ProcessStartInfo(executable) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args)
        {
            info.ArgumentList.Add(a);
        }

        var clock = Stopwatch.StartNew();
        using var p = Process.Start(info)!;
        try
        {
            var stdout = p.StandardOutput.ReadToEndAsync();
            var stderr = p.StandardError.ReadToEndAsync();
            if (!p.WaitForExit(limit))
            {
                p.Kill(entireProcessTree: true);
                p.WaitForExit();
                Assert.Fail($"{Path.GetFileName(executable)} {string.Join(' ', args)} did not finish within {limit.TotalSeconds} s:\n{stdout.Result}\n{stderr.Result}");
            }

            p.WaitForExit();
            return (p.ExitCode, stdout.Result, stderr.Result, clock.Elapsed);
        }
        finally
        {
            if (!p.HasExited)
            {
                p.Kill(entireProcessTree: true);
            }
        }
    }

    public static Process Start(params string[] args)
    {
        var info = new ProcessStartInfo(LoopbackProcessTests.RingsExecutable()) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args)
        {
            info.ArgumentList.Add(a);
        }

        return Process.Start(info)!;
    }
}
