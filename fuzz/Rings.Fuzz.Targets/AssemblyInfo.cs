using System.Runtime.Versioning;

// Guard pages come from mmap/mprotect, and the net target uses Rings.Drivers: Linux only.
[assembly: SupportedOSPlatform("linux")]
