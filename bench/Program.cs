using BenchmarkDotNet.Running;

namespace Rings.Benchmarks;

/// <summary>Runs the benchmarks chosen on the command line (for example <c>--filter '*'</c>).</summary>
internal static class Program
{
    /// <summary>Exits non-zero when any benchmark failed, so a dry run in CI catches breakage.</summary>
    private static int Main(string[] args)
    {
        var summaries = BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
        var failed = summaries.Any(s => s.HasCriticalValidationErrors || s.Reports.Any(r => !r.Success));
        return failed ? 1 : 0;
    }
}
