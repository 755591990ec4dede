using System.Globalization;
using System.Text.Json;
using Rings.Linux.Device;
using Rings.Linux.Plumbing;
using Rings.Linux.VhostUser;
using Rings.Tests.Apps;
using Rings.Tests.Linux;

namespace Rings.Tests.Interop;

/// <summary>
/// 2 MiB hugepages end to end: Rings' own hugetlb memory files (sealed, mapped by the device in
/// whole huge pages), the fallback of <c>--hugepages auto</c>, the refusal of <c>--hugepages on</c>,
/// and <c>rings guest</c> with hugepages against <c>rings host</c>. The pages must be reserved
/// (scripts/test.sh does); the tests run alone, so none takes another's pages.
/// </summary>
[Collection(ProcessCollection.Name)]
public class HugePageTests
{
    private const ulong Huge = SharedMemory.HugePageSize;

    [Fact]
    public void AHugetlbMemoryFileIsSealedRoundedToWholePagesAndMappedInThem()
    {
        HugePageMount.RequireAvailable(4);
        using var memory = SharedMemory.Create((3 << 20) + 1, "rings-huge-sealed", HugePages.On);
        Assert.Equal(Huge, memory.PageBytes);
        Assert.Equal(2 * Huge, memory.Length);
        Assert.Null(memory.HugePageFallback);
        Assert.Equal(Huge, SharedMemory.FilePageSize(memory.Handle!));
        Assert.True(SharedMemory.IsShrinkSealed(memory.Handle!), "a hugetlb memfd takes F_SEAL_SHRINK like a shmem one");
        Assert.Equal(0, (long)memory.HostAddress % (long)Huge);
    }

    /// <summary>
    /// A region at an offset no huge page boundary divides is mapped through the aligned-down
    /// window: its bytes are where the front-end wrote them, and unmapping (with the window's
    /// aligned length: munmap refuses any other on hugetlb) leaves no mapping behind.
    /// </summary>
    [Fact]
    public void ARegionAtAnUnalignedOffsetOfAHugetlbFileIsMappedAndUnmappedWhole()
    {
        HugePageMount.RequireAvailable(4);
        var name = $"rings-huge-{Guid.NewGuid():N}"[..24];
        using var front = SharedMemory.Create(4 << 20, name, HugePages.On);
        const ulong Offset = (3UL << 20) + 12;
        var pattern = Enumerable.Range(0, 100).Select(i => (byte)(i * 7 + 1)).ToArray();
        pattern.CopyTo(front.Slice(Offset, pattern.Length));
        Assert.Equal(1, MappingsOf(name));

        using (var device = SharedMemory.Map(front.Handle!, Offset, (ulong)pattern.Length))
        {
            Assert.Equal(Huge, device.PageBytes);
            Assert.Equal(pattern, device.Slice(0, pattern.Length).ToArray());
            device.Slice(99, 1)[0] = 0xAB;
            Assert.Equal(0xAB, front.Slice(Offset + 99, 1)[0]);
            Assert.Equal(2, MappingsOf(name));
        }

        Assert.Equal(1, MappingsOf(name));
    }

    [Fact]
    public void ARegionReachingPastTheEndOfAHugetlbFileIsRefusedWithAClearError()
    {
        HugePageMount.RequireAvailable(2);
        using var front = SharedMemory.Create(Huge, "rings-huge-short", HugePages.On);
        var region = new MemoryRegionDescription(0x1000_0000, Huge, 0x7f00_0000_0000, 4096);
        var error = VhostMemoryMap.TryMap([region], [front.Handle!], out var map);
        Assert.Null(map);
        Assert.Equal(VhostUserErrorCode.MapFailed, error.Code);
        Assert.Contains("reaches past the end of a 2097152-byte file", error.Detail, StringComparison.Ordinal);
    }

    /// <summary>
    /// DPDK's memory files on hugetlbfs cannot carry seals (the kernel reports F_SEAL_SEAL and
    /// refuses more), and a peer may still truncate them under the device's mapping: the host
    /// serves them only when told to trust unsealed memory (docs/tenants.md).
    /// </summary>
    [Fact]
    public void AHugetlbfsFileCannotBeSealedSoItIsServedOnlyWhenTrusted()
    {
        using var mount = HugePageMount.Create(2);
        var path = Path.Combine(mount.Directory, "dpdk-like-map_0");
        using (var file = File.Open(path, FileMode.CreateNew, FileAccess.ReadWrite))
        {
            file.SetLength((long)Huge);
            using var fd = new FileDescriptor(LibC.Fcntl(file.SafeFileHandle, LibC.F_DUPFD_CLOEXEC, 0));
            Assert.Equal(Huge, SharedMemory.FilePageSize(fd));
            Assert.False(SharedMemory.IsShrinkSealed(fd));
            var refused = VhostMemoryMap.CheckSealed([fd], trustUnsealed: false);
            Assert.Equal(VhostUserErrorCode.UnsealedMemory, refused.Code);
            Assert.Equal(VhostUserError.None, VhostMemoryMap.CheckSealed([fd], trustUnsealed: true));

            var region = new MemoryRegionDescription(0, Huge, 0x7f00_0000_0000, 0);
            Assert.Equal(VhostUserError.None, VhostMemoryMap.TryMap([region], [fd], out var map));
            map!.Unmap();
        }

        File.Delete(path);
    }

    [Theory]
    [InlineData("split")]
    [InlineData("packed")]
    public void RingsGuestOnHugepagesLosesNothingThroughRingsHost(string ring)
    {
        HugePageMount.RequireAvailable(8);
        const long Frames = 200_000;
        var (f, output) = Loopback("--ring", ring, "--hugepages", "on", "--memory", "8", "--frames", Frames.ToString(CultureInfo.InvariantCulture), "--seconds", "60");
        Assert.Equal(Frames, f.GetProperty("frames_sent").GetInt64());
        Assert.Equal(Frames, f.GetProperty("frames_received").GetInt64());
        Assert.Equal(0, f.GetProperty("lost").GetInt64());
        Assert.Equal(0, f.GetProperty("duplicated").GetInt64());
        Assert.Equal(0, f.GetProperty("corrupted").GetInt64());
        Assert.Equal(ring, f.GetProperty("ring").GetString());
        Assert.True(f.GetProperty("hugepages").GetBoolean());
        Assert.Equal((long)Huge, f.GetProperty("page_size").GetInt64());
        Assert.Equal(8L << 20, f.GetProperty("memory_bytes").GetInt64());
        Assert.Contains("in 2 MiB pages", output, StringComparison.Ordinal);
        Assert.DoesNotContain("using 4 KiB pages", output, StringComparison.Ordinal);
    }

    /// <summary>More memory than the free hugepages hold: auto says so once and runs on 4 KiB pages; on refuses.</summary>
    [Fact]
    public void AutoFallsBackToSmallPagesInOneLineAndOnRefusesWhenTooFewAreFree()
    {
        var available = SharedMemory.HugePagesAvailable() ?? 0;
        var memoryMiB = (int)Math.Min(65536, (available + 1) * 2);
        Assert.True(memoryMiB > 2 * available, "the machine has more free hugepages than a guest may ask for");

        var (f, output) = Loopback("--hugepages", "auto", "--memory", memoryMiB.ToString(CultureInfo.InvariantCulture), "--frames", "20000", "--seconds", "60");
        Assert.Equal(20_000, f.GetProperty("frames_received").GetInt64());
        Assert.Equal(0, f.GetProperty("lost").GetInt64());
        Assert.False(f.GetProperty("hugepages").GetBoolean());
        Assert.Equal(Environment.SystemPageSize, f.GetProperty("page_size").GetInt64());
        var lines = output.Split('\n').Where(l => l.Contains("hugepages", StringComparison.Ordinal)).ToList();
        var line = Assert.Single(lines);
        Assert.Contains($"rings guest: hugepages: using 4 KiB pages ({memoryMiB / 2} hugepages of 2 MiB needed", line, StringComparison.Ordinal);

        var (exit, o, error) = LoopbackProcessTests.Run("loopback", "--hugepages", "on", "--memory", memoryMiB.ToString(CultureInfo.InvariantCulture), "--frames", "1000");
        Assert.NotEqual(0, exit);
        Assert.Contains($"hugepages on, but {memoryMiB / 2} hugepages of 2 MiB needed", o + error, StringComparison.Ordinal);
        Assert.DoesNotContain("Unhandled", o + error, StringComparison.Ordinal);
    }

    private static (JsonElement Figures, string Output) Loopback(params string[] args)
    {
        var json = Path.Combine(Path.GetTempPath(), $"rings-test-{Guid.NewGuid():N}.json");
        try
        {
            var (exit, output, error) = LoopbackProcessTests.Run(["loopback", "--json", json, .. args]);
            Assert.True(exit == 0, $"exit {exit}\n{output}\n{error}");
            return (JsonDocument.Parse(File.ReadAllText(json)).RootElement.Clone(), output + error);
        }
        finally
        {
            File.Delete(json);
        }
    }

    // Mappings of a memory file named name in this process (/proc/self/maps shows "/memfd:NAME (deleted)").
    private static int MappingsOf(string name) =>
        File.ReadLines("/proc/self/maps").Count(l => l.Contains($"/memfd:{name} ", StringComparison.Ordinal));
}
