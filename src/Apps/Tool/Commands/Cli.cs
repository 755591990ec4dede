using System.CommandLine;
using System.Globalization;

namespace Rings.Tool.Commands;

/// <summary>
/// How typed option values are spelled on the command line, both ways: enums in lower case
/// (<c>poll</c>, <c>reflect</c>), switches as <c>on</c>/<c>off</c>, numbers in the invariant culture
/// so a rendered command line parses back to the same value.
/// </summary>
internal static class Cli
{
    /// <summary>An enum value as typed on the command line.</summary>
    public static string Text<T>(T value)
        where T : struct, Enum => value.ToString().ToLowerInvariant();

    /// <summary>A switch as typed on the command line.</summary>
    public static string OnOff(bool value) => value ? "on" : "off";

    /// <summary>A number as typed on the command line (round-trips exactly).</summary>
    public static string Number<T>(T value)
        where T : IFormattable => value.ToString(null, CultureInfo.InvariantCulture);

    /// <summary>A flag as typed on the command line: its name when set, else nothing.</summary>
    public static IEnumerable<string> Flag(string name, bool set) => set ? [name] : [];

    /// <summary>An optional value as typed on the command line: the option and its value when given, else nothing.</summary>
    public static IEnumerable<string> Value(string name, string? value) => value is null ? [] : [name, value];

    /// <summary>Parses what <see cref="Text{T}"/> wrote.</summary>
    public static T Parse<T>(string text)
        where T : struct, Enum => Enum.Parse<T>(text, ignoreCase: true);

    /// <summary>An option taking one of an enum's values, in lower case.</summary>
    public static Option<string> Choice<T>(string name, string description, T @default)
        where T : struct, Enum
    {
        var option = new Option<string>(name) { Description = description, DefaultValueFactory = _ => Text(@default) };
        option.AcceptOnlyFromAmong(Enum.GetValues<T>().Select(Text).ToArray());
        return option;
    }

    /// <summary>An <c>on</c>/<c>off</c> option.</summary>
    public static Option<string> Switch(string name, string description, bool @default)
    {
        var option = new Option<string>(name) { Description = description, DefaultValueFactory = _ => OnOff(@default) };
        option.AcceptOnlyFromAmong("on", "off");
        return option;
    }

    /// <summary>What <c>--allow-uid</c> says: user ids, comma-separated.</summary>
    public const string AllowUidDescription = "Serve only front-ends run by these user ids (comma-separated; checked with SO_PEERCRED). By default anyone who can open the socket (owner-only) is served.";

    /// <summary>Reads a comma-separated list of user ids (null for none).</summary>
    /// <returns>Null when <paramref name="text"/> is well formed, else what is wrong.</returns>
    public static string? TryParseUids(string? text, out uint[]? uids)
    {
        uids = null;
        if (text is null)
        {
            return null;
        }

        var parts = text.Split(',', StringSplitOptions.TrimEntries);
        var list = new uint[parts.Length];
        for (var i = 0; i < parts.Length; i++)
        {
            if (!uint.TryParse(parts[i], NumberStyles.None, CultureInfo.InvariantCulture, out list[i]))
            {
                return $"--allow-uid takes user ids separated by commas, not '{text}'";
            }
        }

        uids = list;
        return null;
    }
}

/// <summary>A command's options and how a parse of them becomes the command's typed options.</summary>
/// <typeparam name="T">The typed options.</typeparam>
/// <param name="Command">The command, its options added.</param>
/// <param name="Read">Reads a parse into typed options.</param>
internal sealed record CommandDefinition<T>(Command Command, Func<ParseResult, T> Read)
{
    /// <summary>Reads a command line (after the command name) into options.</summary>
    /// <exception cref="ArgumentException">The arguments do not parse; the message says why.</exception>
    public T Parse(IReadOnlyList<string> args)
    {
        var result = Command.Parse(args);
        if (result.Errors.Count > 0)
        {
            throw new ArgumentException(string.Join("; ", result.Errors.Select(e => e.Message)), nameof(args));
        }

        return Read(result);
    }

    /// <summary>The command, running <paramref name="run"/> on options that <paramref name="validate"/> finds nothing wrong with (else exit 2).</summary>
    public Command Runs(Func<T, string?> validate, Func<T, int> run)
    {
        Command.SetAction(r =>
        {
            var o = Read(r);
            if (validate(o) is { } error)
            {
                Console.Error.WriteLine($"rings {Command.Name}: {error}");
                return 2;
            }

            return run(o);
        });
        return Command;
    }
}
