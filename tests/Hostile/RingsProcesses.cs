using System.Diagnostics;
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
/// A back-end process on a socket in its own directory, its output collected line by line: the real
/// <c>rings host</c>, or the test peer's hostile host.
/// </summary>
internal sealed class RingsHost : IDisposable
{
    private readonly Process _process;
    private readonly DirectoryInfo _directory;
    private readonly List<string> _lines = [];

    private RingsHost(Process process, DirectoryInfo directory, string socket)
    {
        _process = process;
        _directory = directory;
        Socket = socket;
    }

    public string Socket { get; }

    public int Pid => _process.Id;

    public bool HasExited => _process.HasExited;

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

    /// <summary>Starts <c>rings host</c> with <paramref name="options"/>.</summary>
    public static RingsHost Start(params string[] options) => Start(LoopbackProcessTests.RingsExecutable(), options);

    /// <summary>Starts the test peer's host that turns on its front-ends in the way <paramref name="kind"/> says.</summary>
    public static RingsHost StartHostile(string kind) => Start(RingsRun.TestPeerExecutable(), "--misbehave", kind);

    private static RingsHost Start(string executable, params string[] options)
    {
        var directory = Directory.CreateTempSubdirectory("rings-hostile-");
        var socket = Path.Combine(directory.FullName, "vhost.sock");
        var info = new ProcessStartInfo(executable) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in (string[])["host", "--socket", socket, .. options])
        {
            info.ArgumentList.Add(a);
        }

        var process = new Process { StartInfo = info };
        var host = new RingsHost(process, directory, socket);
        process.OutputDataReceived += (_, e) => host.Add(e.Data);
        process.ErrorDataReceived += (_, e) => host.Add(e.Data is null ? null : $"stderr: {e.Data}");
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        var clock = Stopwatch.StartNew();
        while (!File.Exists(socket))
        {
            if (process.HasExited || clock.Elapsed > TimeSpan.FromSeconds(15))
            {
                host.Dispose();
                Assert.Fail($"the host did not start:\n{host.Output}");
            }

            Thread.Sleep(20);
        }

        return host;
    }

    /// <summary>Lines from <paramref name="from"/> on.</summary>
    public List<string> LinesFrom(int from)
    {
        lock (_lines)
        {
            return _lines.Skip(from).ToList();
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

            if (clock.Elapsed > timeout || HasExited)
            {
                Assert.Fail($"the host did not print the expected {count} line(s) within {timeout.TotalSeconds} s (exited: {HasExited}):\n{string.Join('\n', lines)}");
            }

            Thread.Sleep(20);
        }
    }

    public ProcessResources Resources() => ProcessResources.Of(Pid);

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
            _directory.Delete(recursive: true);
        }
        catch (IOException)
        {
        }
    }

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
        Run(LoopbackProcessTests.RingsExecutable(), limit, args);

    /// <summary>Runs the test peer (<c>guest</c> attacks a back-end).</summary>
    public static (int Exit, string Out, string Err, TimeSpan Elapsed) Peer(TimeSpan limit, params string[] args) =>
        Run(TestPeerExecutable(), limit, args);

    private static (int Exit, string Out, string Err, TimeSpan Elapsed) Run(string executable, TimeSpan limit, string[] args)
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
