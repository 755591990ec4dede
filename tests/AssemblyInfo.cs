using System.Runtime.Versioning;

// The tests exercise Rings.Drivers, which is Linux-only.
[assembly: SupportedOSPlatform("linux")]
