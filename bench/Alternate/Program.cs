using System.Diagnostics;
using System.Globalization;
using System.Numerics;
using System.Reflection;
using System.Runtime.Loader;

namespace Rings.Alternate;

/// <summary>
/// Compares two builds of the Rings library on the burst round trip, in one process and on one
/// thread: each build in a load context of its own, run in turns of a few tens of milliseconds, so
/// both see the same phases of a shared, noisy machine. Reports each build's median and the
/// median of the per-turn ratios.
/// </summary>
internal static class Program
{
    private const string Usage = """
        rings-alternate: two builds of Rings, alternating, on the burst round trip (one thread).

        usage: Rings.Alternate --old DIR --new DIR [--ring split|packed] [--in-order on|off]
                               [--burst N] [--pop burst|singles] [--old-pop P] [--new-pop P]
                               [--seconds S] [--warmup S] [--turn-ms MS]

          --old DIR, --new DIR  directories that each hold a Rings.dll (a build's bin/Release/net10.0)
          --ring                split (default) or packed
          --in-order            on (default) or off: VIRTIO_F_IN_ORDER negotiated
          --burst               buffers per publish, a power of two up to 256 (default 32)
          --pop                 how the device pops, for both builds: burst (PopBurst, the default,
                                which every build has) or singles (PopSingles)
          --old-pop, --new-pop  the same for one build: --old DIR --new DIR with the same DIR and
                                --old-pop burst --new-pop singles compares the two pops of one build
          --seconds             measuring time (default 20)
          --warmup              time both run before measuring, so the JIT has tiered up (default 4)
          --turn-ms             length of one build's turn (default 50)

        Prints one line: ns per packet, median (and minimum) of each build's turns, and the median
        and quartiles of new/old over pairs of adjacent turns (the order in a pair alternates).
        """;

    private static int Main(string[] args)
    {
        string? oldDir = null, newDir = null;
        var ring = "split";
        var inOrder = true;
        var burst = 32;
        bool oldSingles = false, newSingles = false;
        double seconds = 20, warmup = 4, turnMs = 50;
        try
        {
            for (var i = 0; i < args.Length; i++)
            {
                var value = i + 1 < args.Length ? args[i + 1] : null;
                switch (args[i])
                {
                    case "--help" or "-h":
                        Console.WriteLine(Usage);
                        return 0;
                    case "--old": oldDir = Need(value, args[i]); i++; break;
                    case "--new": newDir = Need(value, args[i]); i++; break;
                    case "--ring":
                        ring = Need(value, args[i]);
                        if (ring is not ("split" or "packed"))
                        {
                            throw new ArgumentException($"--ring: split or packed, not {ring}");
                        }

                        i++;
                        break;
                    case "--in-order":
                        inOrder = Need(value, args[i]) switch
                        {
                            "on" => true,
                            "off" => false,
                            var other => throw new ArgumentException($"--in-order: on or off, not {other}"),
                        };
                        i++;
                        break;
                    case "--burst": burst = (int)Number(value, args[i], 1, 256); i++; break;
                    case "--pop": oldSingles = newSingles = Pop(value, args[i]); i++; break;
                    case "--old-pop": oldSingles = Pop(value, args[i]); i++; break;
                    case "--new-pop": newSingles = Pop(value, args[i]); i++; break;
                    case "--seconds": seconds = Number(value, args[i], 0.1, 3600); i++; break;
                    case "--warmup": warmup = Number(value, args[i], 0, 600); i++; break;
                    case "--turn-ms": turnMs = Number(value, args[i], 1, 10_000); i++; break;
                    default: throw new ArgumentException($"unknown option {args[i]} (see --help)");
                }
            }

            if (oldDir is null || newDir is null)
            {
                throw new ArgumentException("--old and --new are both needed (see --help)");
            }

            if (!BitOperations.IsPow2(burst))
            {
                throw new ArgumentException($"--burst: a power of two up to 256, not {burst}");
            }

            var steps = new[] { Load(oldDir, ring, inOrder, burst, oldSingles), Load(newDir, ring, inOrder, burst, newSingles) };
            Console.WriteLine(Measure(steps, ring, inOrder, burst, seconds, warmup, turnMs));
            return 0;
        }
        catch (ArgumentException e)
        {
            Console.Error.WriteLine($"rings-alternate: {e.Message}");
            return 2;
        }
    }

    private static string Need(string? value, string option) =>
        value ?? throw new ArgumentException($"{option} needs a value");

    private static bool Pop(string? value, string option) => Need(value, option) switch
    {
        "burst" => false,
        "singles" => true,
        var other => throw new ArgumentException($"{option}: burst or singles, not {other}"),
    };

    private static double Number(string? value, string option, double min, double max)
    {
        if (!double.TryParse(Need(value, option), NumberStyles.Float, CultureInfo.InvariantCulture, out var number) || number < min || number > max)
        {
            throw new ArgumentException($"{option}: a number from {min} to {max}, not {value}");
        }

        return number;
    }

    // This assembly again, in a context that takes Rings from dir: its RoundTrip is compiled
    // against that build.
    private static Func<long> Load(string dir, string ring, bool inOrder, int burst, bool singles)
    {
        var full = Path.GetFullPath(dir);
        if (!File.Exists(Path.Combine(full, "Rings.dll")))
        {
            throw new ArgumentException($"no Rings.dll in {full}");
        }

        var context = new BuildContext(full);
        var self = context.LoadFromAssemblyPath(typeof(Program).Assembly.Location);
        var create = self.GetType(typeof(RoundTrip).FullName!, throwOnError: true)!.GetMethod(nameof(RoundTrip.Create))!;
        return (Func<long>)create.Invoke(null, [ring, inOrder, burst, singles])!;
    }

    private static string Measure(Func<long>[] steps, string ring, bool inOrder, int burst, double seconds, double warmup, double turnMs)
    {
        var clock = Stopwatch.StartNew();
        while (clock.Elapsed.TotalSeconds < warmup)
        {
            steps[0]();
            steps[1]();
        }

        var times = new List<double>[] { [], [] };
        var ratios = new List<double>();
        var turn = new double[2];
        clock.Restart();
        for (var pair = 0; clock.Elapsed.TotalSeconds < seconds || pair < 2; pair++)
        {
            for (var k = 0; k < 2; k++)
            {
                var build = (pair & 1) == 0 ? k : 1 - k;
                var watch = Stopwatch.StartNew();
                long calls = 0;
                while (watch.Elapsed.TotalMilliseconds < turnMs)
                {
                    steps[build]();
                    calls++;
                }

                turn[build] = watch.Elapsed.TotalNanoseconds / (calls * (double)RoundTrip.Packets);
                times[build].Add(turn[build]);
            }

            ratios.Add(turn[1] / turn[0]);
        }

        return string.Create(CultureInfo.InvariantCulture,
            $"{ring} in-order {(inOrder ? "on" : "off")} burst {burst}: old {Quantile(times[0], 0.5):F2} ns (min {times[0].Min():F2}), new {Quantile(times[1], 0.5):F2} ns (min {times[1].Min():F2}), new/old {Quantile(ratios, 0.5):F3} [quartiles {Quantile(ratios, 0.25):F3} {Quantile(ratios, 0.75):F3}], {ratios.Count} pairs");
    }

    private static double Quantile(List<double> values, double q)
    {
        var sorted = values.Order().ToList();
        return sorted[(int)Math.Round(q * (sorted.Count - 1))];
    }

    private sealed class BuildContext(string dir) : AssemblyLoadContext(isCollectible: false)
    {
        protected override Assembly? Load(AssemblyName name) =>
            name.Name == "Rings" ? LoadFromAssemblyPath(Path.Combine(dir, "Rings.dll")) : null;
    }
}
