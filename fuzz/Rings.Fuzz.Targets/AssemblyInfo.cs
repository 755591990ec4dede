using System.Runtime.Versioning;

// Guard pages come from mmap/mprotect, and the net target uses Rings.Linux: Linux only.
[assembly: SupportedOSPlatform("linux")]
