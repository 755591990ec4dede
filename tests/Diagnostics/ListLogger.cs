using Microsoft.Extensions.Logging;

namespace Rings.Tests.Diagnostics;

/// <summary>An <see cref="ILogger"/> that keeps every event: its id, level and message.</summary>
internal sealed class ListLogger(List<string> lines) : ILogger
{
    public List<(EventId Id, LogLevel Level, string Message)> Events { get; } = [];

    public IDisposable? BeginScope<TState>(TState state)
        where TState : notnull => null;

    public bool IsEnabled(LogLevel logLevel) => true;

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
    {
        var message = formatter(state, exception);
        lock (lines)
        {
            lines.Add(message);
            Events.Add((eventId, logLevel, message));
        }
    }

    /// <summary>The events so far, copied under the lock.</summary>
    public List<(EventId Id, LogLevel Level, string Message)> Snapshot()
    {
        lock (lines)
        {
            return [.. Events];
        }
    }
}
