namespace Rings.Apps; internal static class Program { private static int Main() => 0; }
