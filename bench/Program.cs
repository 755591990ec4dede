using BenchmarkDotNet.Running;

namespace Rings.Benchmarks;

/// <summary>Runs the benchmarks chosen on the command line (for example <c>--filter '*'</c>).</summary>
internal static class Program
{
    private static void Main(string[] args) => BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
}
