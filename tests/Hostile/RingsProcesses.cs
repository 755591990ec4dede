using System.Diagnostics;
using Rings.Tests.Apps;

namespace Rings.Tests.Hostile;

/// <summary>What a process holds, from /proc: descriptors, threads, resident memory and guest memory mappings.</summary>
/// <param name="Fds">Open file descriptors.</param>
/// <param name="Threads">Threads.</param>
/// <param name="RssKiB">Resident set size (VmRSS), KiB.</param>
/// <param name="GuestMappings">Mappings of a guest's memory file (memfd "rings-guest").</param>
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

        var mappings = File.ReadLines($"/proc/{pid}/maps").Count(l => l.Contains("rings-guest", StringComparison.Ordinal));
        return new ProcessResources(fds, threads, rss, mappings);
    }

    public override string ToString() => $"{Fds} fds, {Threads} threads, VmRSS {RssKiB / 1024.0:0.0} MiB, {GuestMappings} guest mappings";
}

/// <summary>A <c>rings host</c> process on a socket in its own directory, its output collected line by line.</summary>
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

    public static RingsHost Start(params string[] options)
    {
        var directory = Directory.CreateTempSubdirectory("rings-hostile-");
        var socket = Path.Combine(directory.FullName, "vhost.sock");
        var info = new ProcessStartInfo(LoopbackProcessTests.RingsExecutable()) { RedirectStandardOutput = true, RedirectStandardError = true };
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

/// <summary>Runs the <c>rings</c> tool to completion within a time limit.</summary>
internal static class RingsRun
{
    public static (int Exit, string Out, string Err, TimeSpan Elapsed) Run(TimeSpan limit, params string[] args)
    {
        var info = new ProcessStartInfo(LoopbackProcessTests.RingsExecutable()) { RedirectStandardOutput = true, RedirectStandardError = true };
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
                Assert.Fail($"rings {string.Join(' ', args)} did not finish within {limit.TotalSeconds} s:\n{stdout.Result}\n{stderr.Result}");
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
