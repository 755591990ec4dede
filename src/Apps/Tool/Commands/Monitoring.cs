using System.CommandLine;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Console;
using Rings.Linux.Diagnostics;

namespace Rings.Tool.Commands;

/// <summary>
/// What every long-running command offers for watching it: the <c>Rings</c> meter (always there,
/// so <c>dotnet-counters monitor --counters Rings -p PID</c> works on any run) and, with
/// <c>--metrics ADDRESS:PORT</c>, a Prometheus endpoint on a loopback address; and the log
/// (Microsoft.Extensions.Logging to the console, one line per event, at <c>--log-level</c>).
/// </summary>
internal sealed class Monitoring : IDisposable
{
    /// <summary>What <c>--metrics</c> means, in every command that has it.</summary>
    public const string MetricsDescription = "Serve the Rings meter as Prometheus text at http://ADDRESS:PORT/metrics; ADDRESS must be a loopback address (127.0.0.1, ::1).";

    private readonly PrometheusEndpoint? _endpoint;

    private Monitoring(RingsMetrics metrics, PrometheusEndpoint? endpoint, ILoggerFactory logs)
    {
        Metrics = metrics;
        _endpoint = endpoint;
        Logs = logs;
        Logger = logs.CreateLogger("Rings");
    }

    /// <summary>Where the command's library types log.</summary>
    public ILoggerFactory Logs { get; }

    /// <summary>The logger the command gives its ports, pipeline and back-ends.</summary>
    public ILogger Logger { get; }

    /// <summary>The meter's instruments and what they watch.</summary>
    public RingsMetrics Metrics { get; }

    /// <summary>The <c>--metrics</c> option.</summary>
    public static Option<string?> MetricsOption() => new("--metrics") { Description = MetricsDescription };

    /// <summary>The <c>--log-level</c> option.</summary>
    public static Option<string> LogLevelOption(LogLevel @default) =>
        Cli.Choice("--log-level", "Least severe log events written to the console: trace, debug, information, warning, error, critical or none. Only control-plane events are logged, never one per frame.", @default);

    /// <summary>What is wrong with a <c>--metrics</c> value, or null.</summary>
    public static string? Validate(string? metrics) =>
        metrics is null || PrometheusEndpoint.TryParse(metrics, out _, out _) ? null : $"--metrics {Problem(metrics)}";

    /// <summary>Creates the meter and, when asked, starts the endpoint; says where it serves. Null (after a message on <paramref name="error"/>) when the endpoint cannot start.</summary>
    public static Monitoring? Start(string command, string? metrics, TextWriter output, TextWriter error, LogLevel logLevel = LogLevel.Warning)
    {
        var meter = new RingsMetrics();
        var logs = LoggerFactory.Create(b => b
            .SetMinimumLevel(logLevel)
            .AddSimpleConsole(o =>
            {
                // Plain single lines (no colours when the output is not a terminal), as tests and scripts read them.
                o.SingleLine = true;
                o.ColorBehavior = Console.IsOutputRedirected ? LoggerColorBehavior.Disabled : LoggerColorBehavior.Default;
            }));
        if (metrics is null)
        {
            return new Monitoring(meter, null, logs);
        }

        try
        {
            PrometheusEndpoint.TryParse(metrics, out var endpoint, out _);
            var served = PrometheusEndpoint.Start(endpoint);
            output.WriteLine($"rings {command}: metrics at {served.Url} (process {Environment.ProcessId})");
            return new Monitoring(meter, served, logs);
        }
        catch (Exception e) when (e is IOException or ArgumentException)
        {
            error.WriteLine($"rings {command}: {e.Message}");
            meter.Dispose();
            logs.Dispose();
            return null;
        }
    }

    /// <summary>Stops the endpoint and the meter.</summary>
    public void Dispose()
    {
        _endpoint?.Dispose();
        Metrics.Dispose();
        Logs.Dispose();
    }

    private static string Problem(string metrics)
    {
        PrometheusEndpoint.TryParse(metrics, out _, out var error);
        return error!;
    }
}
