using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text;

namespace Rings.Tests.Linux;

/// <summary>The output of a command that ran to its end (or was killed at its deadline).</summary>
public sealed record CommandResult(string Command, int ExitCode, string Output, string Error)
{
    /// <summary>The command, its exit code and what it printed, for transcripts and failure messages.</summary>
    public override string ToString() =>
        $"$ {Command}\n{Output}{(Error.Length > 0 ? Error : string.Empty)}(exit {ExitCode})";

    /// <summary>Throws with the whole transcript when the command failed.</summary>
    public CommandResult EnsureSuccess() =>
        ExitCode == 0 ? this : throw new InvalidOperationException($"command failed:\n{this}");
}

/// <summary>Runs system commands (ip, ping) with a deadline.</summary>
public static class Command
{
    /// <summary>Runs <paramref name="file"/> to its end, killing it after <paramref name="timeoutMilliseconds"/>.</summary>
    public static CommandResult Run(string file, IEnumerable<string> arguments, int timeoutMilliseconds = 20_000)
    {
        using var process = Start(file, arguments);
        return Finish(process, timeoutMilliseconds);
    }

    /// <summary>Starts <paramref name="file"/> with its output captured; finish it with <see cref="Finish"/>.</summary>
    public static Process Start(string file, IEnumerable<string> arguments)
    {
        var info = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var argument in arguments)
        {
            info.ArgumentList.Add(argument);
        }

        return Process.Start(info) ?? throw new InvalidOperationException($"cannot start {file}");
    }

    /// <summary>Waits for a started process (killing it at the deadline) and collects its output.</summary>
    public static CommandResult Finish(Process process, int timeoutMilliseconds)
    {
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(timeoutMilliseconds))
        {
            process.Kill(entireProcessTree: true);
            process.WaitForExit();
        }

        var line = $"{process.StartInfo.FileName} {string.Join(' ', process.StartInfo.ArgumentList)}";
        return new CommandResult(line, process.ExitCode, output.Result, error.Result);
    }
}

/// <summary>
/// A network namespace made for one test (<c>rings-test-</c>, the test process's id and a random
/// suffix) and removed on dispose with every device in it, so traffic of the test stays inside and
/// nothing is left behind; the test command also removes any that a killed test process left.
/// </summary>
public sealed partial class NetworkNamespace : IDisposable
{
    private const int CloneNewNet = 0x40000000;

    private readonly StringBuilder _transcript;

    private const string Prefix = "rings-test-";

    public NetworkNamespace(StringBuilder transcript)
    {
        _transcript = transcript;
        RemoveOrphans();

        // The name carries the test process's id, so a namespace whose process died before it
        // could dispose (killed, crashed) is recognised and removed by the next one.
        Name = $"{Prefix}{Environment.ProcessId}-{Guid.NewGuid():N}"[..(Prefix.Length + 16)];
        var added = Log(Command.Run("ip", ["netns", "add", Name]));
        if (added.ExitCode != 0)
        {
            // `ip netns add` may have created the namespace before it failed or was killed at its
            // deadline; the caller never gets an object to dispose, so remove it here.
            Remove();
            added.EnsureSuccess();
        }
    }

    public string Name { get; }

    /// <summary><c>ip -n NAME ...</c>, logged and required to succeed.</summary>
    public CommandResult Ip(params string[] arguments) => Log(Command.Run("ip", ["-n", Name, .. arguments])).EnsureSuccess();

    /// <summary><c>ip netns exec NAME ...</c>, logged.</summary>
    public CommandResult Exec(params string[] arguments) => Log(Command.Run("ip", ["netns", "exec", Name, .. arguments]));

    /// <summary>Starts <c>ip netns exec NAME ...</c> without waiting.</summary>
    public Process Start(params string[] arguments) => Command.Start("ip", ["netns", "exec", Name, .. arguments]);

    /// <summary>Adds a line to the transcript.</summary>
    public void Note(string line)
    {
        lock (_transcript)
        {
            _transcript.AppendLine(line);
        }
    }

    /// <summary>Adds a result to the transcript.</summary>
    public CommandResult Log(CommandResult result)
    {
        lock (_transcript)
        {
            _transcript.AppendLine(result.ToString());
        }

        return result;
    }

    /// <summary>
    /// Runs <paramref name="action"/> on a thread of its own that has joined this namespace
    /// (setns(2) changes only the calling thread), so what it creates or configures by name is here.
    /// </summary>
    public T RunInside<T>(Func<T> action)
    {
        T result = default!;
        Exception? failure = null;
        var thread = new Thread(() =>
        {
            try
            {
                using var handle = File.OpenHandle($"/run/netns/{Name}");
                if (SetNs((int)handle.DangerousGetHandle(), CloneNewNet) != 0)
                {
                    throw new IOException($"setns({Name}) failed: errno {Marshal.GetLastPInvokeError()}");
                }

                result = action();
            }
            catch (Exception e)
            {
                failure = e;
            }
        });
        thread.Start();
        Assert.True(thread.Join(TimeSpan.FromSeconds(60)), "the thread inside the namespace did not finish");
        if (failure is not null)
        {
            throw new InvalidOperationException($"inside {Name}: {failure.Message}", failure);
        }

        return result;
    }

    public void Dispose() => Remove();

    /// <summary>Deletes the namespace, trying again while its file is still there (a loaded machine can kill `ip` at its deadline).</summary>
    private void Remove()
    {
        for (var attempt = 0; attempt < 3 && File.Exists($"/run/netns/{Name}"); attempt++)
        {
            Log(Command.Run("ip", ["netns", "del", Name], timeoutMilliseconds: 60_000));
        }
    }

    /// <summary>Removes namespaces of this naming whose test process is gone.</summary>
    private void RemoveOrphans()
    {
        if (!Directory.Exists("/run/netns"))
        {
            return;
        }

        foreach (var path in Directory.GetFiles("/run/netns", Prefix + "*"))
        {
            var rest = Path.GetFileName(path)[Prefix.Length..];
            var dash = rest.IndexOf('-', StringComparison.Ordinal);
            if (dash > 0 && int.TryParse(rest[..dash], out var pid) && pid != Environment.ProcessId && !Directory.Exists($"/proc/{pid}"))
            {
                Log(Command.Run("ip", ["netns", "del", Path.GetFileName(path)]));
            }
        }
    }

    [LibraryImport("libc", EntryPoint = "setns", SetLastError = true)]
    private static partial int SetNs(int fd, int type);
}

/// <summary>The Linux network tests create namespaces and TAP devices: they need root, and say so instead of skipping.</summary>
public static class Privileges
{
    private const int CapNetAdmin = 12;
    private const int CapSysAdmin = 21;

    /// <summary>Fails the test with a clear message unless this process has CAP_NET_ADMIN and CAP_SYS_ADMIN.</summary>
    public static void RequireNetworkAdmin()
    {
        var line = File.ReadLines("/proc/self/status").FirstOrDefault(l => l.StartsWith("CapEff:", StringComparison.Ordinal)) ?? "CapEff: 0";
        var effective = Convert.ToUInt64(line["CapEff:".Length..].Trim(), 16);
        var missing = new List<string>();
        if ((effective & (1UL << CapNetAdmin)) == 0)
        {
            missing.Add("CAP_NET_ADMIN");
        }

        if ((effective & (1UL << CapSysAdmin)) == 0)
        {
            missing.Add("CAP_SYS_ADMIN");
        }

        Assert.True(
            missing.Count == 0,
            $"this test creates network namespaces and TAP devices and needs root ({string.Join(" and ", missing)} missing); " +
            "CI runs the suite as root: run it as root (sudo ./scripts/test.sh), it is never skipped");
    }
}
