using System.Runtime.Versioning;
using Rings.Fuzz;
using Rings.Fuzz.Targets;
using SharpFuzz;

[assembly: SupportedOSPlatform("linux")]

// Usage:
//   Rings.Fuzz TARGET                   run under afl-fuzz (input on stdin), each input in a child process
//   Rings.Fuzz TARGET --in-process      the same without the child process (faster; a fault ends the run)
//   Rings.Fuzz TARGET --replay PATH...  run files, or every file of folders, and report what throws
//   Rings.Fuzz --list                   the targets ("pending" ones wait for their code)
//   Rings.Fuzz --seeds DIR              write the hand-made seed corpora into DIR/TARGET/
if (args.Length == 1 && args[0] == "--list")
{
    foreach (var t in FuzzTargets.All)
    {
        Console.WriteLine($"{t.Name}\t{(t.Run is null ? "pending" : "ready")}\t{t.Description}");
    }

    return 0;
}

if (args.Length == 2 && args[0] == "--seeds")
{
    foreach (var (seedTarget, name, bytes) in Seeds.All())
    {
        var dir = Path.Combine(args[1], seedTarget);
        Directory.CreateDirectory(dir);
        File.WriteAllBytes(Path.Combine(dir, name), bytes);
    }

    return 0;
}

if (args.Length < 1 || FuzzTargets.Find(args[0]) is not { } target)
{
    Console.Error.WriteLine("usage: Rings.Fuzz TARGET [--in-process | --replay PATH...] | --list | --seeds DIR");
    return 2;
}

if (target.Run is not { } run)
{
    Console.Error.WriteLine($"{target.Name} is pending: the code it covers does not exist yet");
    return 2;
}

if (args.Length >= 2 && args[1] == "--replay")
{
    if (Environment.GetEnvironmentVariable("RINGS_FUZZ_TRACE") == "1")
    {
        FuzzTrace.Writer = Console.Out;
    }

    var failed = 0;
    var files = args.Skip(2).SelectMany(p => Directory.Exists(p) ? Directory.GetFiles(p).Order() : (IEnumerable<string>)[p]).ToList();
    foreach (var file in files)
    {
        try
        {
            run(File.ReadAllBytes(file));
        }
        catch (Exception e)
        {
            failed++;
            Console.WriteLine($"FAIL {file}: {e}");
        }
    }

    Console.WriteLine($"{files.Count - failed} passed, {failed} failed");
    return failed == 0 ? 0 : 1;
}

var buffer = new MemoryStream();
void Execute(Stream stream)
{
    buffer.SetLength(0);
    stream.CopyTo(buffer);
    run(buffer.GetBuffer().AsSpan(0, (int)buffer.Length));
}

if (args.Length >= 2 && args[1] == "--in-process")
{
    Fuzzer.Run(Execute);
}
else
{
    Fuzzer.OutOfProcess.Run(Execute);
}

return 0;
