using System.Buffers.Binary;
using System.Diagnostics;

namespace Rings.Tests.Net.Offloads;

/// <summary>
/// Wireshark's dissector as the independent judge of frames: the frames go into a pcap file and
/// tshark reads it back with IPv4, TCP and UDP checksum checks on. tshark must be installed
/// (scripts/install-deps.sh does it); a test that needs it fails, never skips, without it.
/// </summary>
internal static class Tshark
{
    /// <summary>Wireshark's expert severity for errors (checksum errors, malformed packets).</summary>
    public const string SeverityError = "8388608";

    /// <summary>Checksum status "Good" (proto_checksum_enum_e).</summary>
    public const string ChecksumGood = "1";

    private static readonly string[] Options =
    [
        "-o", "ip.check_checksum:TRUE",
        "-o", "tcp.check_checksum:TRUE",
        "-o", "udp.check_checksum:TRUE",
        "-o", "tcp.analyze_sequence_numbers:FALSE",
        "-o", "ip.defragment:TRUE",

        // Random payloads look like some protocol to some heuristic dissector (RTCP, say):
        // the test ports are plain data.
        "-d", $"tcp.port=={GsoFrames.ServerPort},data",
        "-d", $"udp.port=={GsoFrames.ServerPort},data",
    ];

    public static string Executable
    {
        get
        {
            foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "/usr/bin").Split(':'))
            {
                var candidate = Path.Combine(dir, "tshark");
                if (File.Exists(candidate))
                {
                    return candidate;
                }
            }

            Assert.Fail("tshark is not installed: scripts/install-deps.sh installs the Debian package tshark");
            return "";
        }
    }

    /// <summary>Dissects <paramref name="frames"/> and returns, per frame, the values of <paramref name="fields"/> ("" when absent).</summary>
    public static List<Dictionary<string, string>> Dissect(IReadOnlyList<byte[]> frames, params string[] fields)
    {
        var pcap = Path.Combine(Path.GetTempPath(), $"rings-offload-{Environment.ProcessId}-{Guid.NewGuid():N}.pcap");
        try
        {
            WritePcap(pcap, frames);
            var psi = new ProcessStartInfo(Executable)
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                UseShellExecute = false,
            };
            psi.ArgumentList.Add("-n");
            psi.ArgumentList.Add("-r");
            psi.ArgumentList.Add(pcap);
            foreach (var o in Options)
            {
                psi.ArgumentList.Add(o);
            }

            psi.ArgumentList.Add("-T");
            psi.ArgumentList.Add("fields");
            psi.ArgumentList.Add("-E");
            psi.ArgumentList.Add("separator=/t");
            psi.ArgumentList.Add("-E");
            psi.ArgumentList.Add("occurrence=a");
            psi.ArgumentList.Add("-E");
            psi.ArgumentList.Add("aggregator=,");
            foreach (var field in fields)
            {
                psi.ArgumentList.Add("-e");
                psi.ArgumentList.Add(field);
            }

            using var process = Process.Start(psi) ?? throw new InvalidOperationException("tshark did not start");
            var stderr = process.StandardError.ReadToEndAsync();
            var stdout = process.StandardOutput.ReadToEndAsync();
            if (!process.WaitForExit(TimeSpan.FromSeconds(120)))
            {
                process.Kill();
                Assert.Fail("tshark did not finish within 120 s");
            }

            var lines = stdout.Result.Split('\n', StringSplitOptions.RemoveEmptyEntries);
            Assert.True(process.ExitCode == 0, $"tshark exited with {process.ExitCode}: {stderr.Result}");
            Assert.True(lines.Length == frames.Count, $"tshark printed {lines.Length} rows for {frames.Count} frames: {stderr.Result}");
            var rows = new List<Dictionary<string, string>>(lines.Length);
            foreach (var line in lines)
            {
                var values = line.Split('\t');
                var row = new Dictionary<string, string>(fields.Length);
                for (var k = 0; k < fields.Length; k++)
                {
                    row[fields[k]] = k < values.Length ? values[k] : "";
                }

                rows.Add(row);
            }

            return rows;
        }
        finally
        {
            File.Delete(pcap);
        }
    }

    /// <summary>Writes a classic pcap file (LINKTYPE_ETHERNET).</summary>
    public static void WritePcap(string path, IReadOnlyList<byte[]> frames)
    {
        using var file = File.Create(path);
        Span<byte> header = stackalloc byte[24];
        BinaryPrimitives.WriteUInt32LittleEndian(header, 0xA1B2C3D4);
        BinaryPrimitives.WriteUInt16LittleEndian(header[4..], 2);
        BinaryPrimitives.WriteUInt16LittleEndian(header[6..], 4);
        BinaryPrimitives.WriteUInt32LittleEndian(header[16..], 262144);
        BinaryPrimitives.WriteUInt32LittleEndian(header[20..], 1);
        file.Write(header);
        Span<byte> record = stackalloc byte[16];
        for (var i = 0; i < frames.Count; i++)
        {
            record.Clear();
            BinaryPrimitives.WriteUInt32LittleEndian(record, (uint)i);
            BinaryPrimitives.WriteUInt32LittleEndian(record[8..], (uint)frames[i].Length);
            BinaryPrimitives.WriteUInt32LittleEndian(record[12..], (uint)frames[i].Length);
            file.Write(record);
            file.Write(frames[i]);
        }
    }

    /// <summary>The bytes of a hex field as tshark prints it ("" for none).</summary>
    public static byte[] Bytes(string hex) => Convert.FromHexString(hex.Replace(":", "", StringComparison.Ordinal));
}
