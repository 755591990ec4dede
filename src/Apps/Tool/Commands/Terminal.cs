using Spectre.Console;

namespace Rings.Tool.Commands;

/// <summary>
/// Where live displays go. A command writes plain lines to its <see cref="TextWriter"/>; only when
/// that writer is the process's standard output and standard output is a terminal does it get a
/// Spectre.Console console for live tables and progress bars (a pipe, a file or a test's writer
/// gets the same figures as plain lines).
/// </summary>
internal static class Terminal
{
    /// <summary>The console for live displays on <paramref name="output"/>, or null for plain lines.</summary>
    /// <param name="output">Where the command writes.</param>
    public static IAnsiConsole? For(TextWriter output) =>
        ReferenceEquals(output, Console.Out) && !Console.IsOutputRedirected ? AnsiConsole.Console : null;
}
