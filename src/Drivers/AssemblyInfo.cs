// No [SupportedOSPlatform("linux")] on this assembly: it would turn every call a consumer's
// platform-neutral project makes into a CA1416 warning. The entry points that reach the kernel
// (shared memory, eventfds, sockets, TAP devices) check the system at run time instead
// (LinuxOnly) and throw PlatformNotSupportedException elsewhere.
