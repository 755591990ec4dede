using System.Buffers.Binary;
using Rings.Linux.Device;
using Rings.Linux.Driver;
using Rings.Linux.Plumbing;
using Rings.Linux.VhostUser;
using Rings.Tests.Linux;
using Xunit.Abstractions;

namespace Rings.Tests.VhostUser;

/// <summary>
/// Hostile and broken front-ends against a running back-end: every session ends cleanly, the
/// server keeps serving, and afterwards the process holds exactly the descriptors and shared
/// mappings it held before.
/// </summary>
[Collection(FdCountCollection.Name)]
public class BadSessionTests
{
    private const int Sessions = 300;
    private readonly ITestOutputHelper _output;

    public BadSessionTests(ITestOutputHelper output)
    {
        _output = output;
    }

    private delegate void Scenario(string path, int seed);

    [Fact]
    public void HundredsOfBadSessionsLeakNothingAndTheServerKeepsServing()
    {
        var path = TestPaths.Socket();
        var reasons = new List<VhostUserError>();
        var ended = 0;
        using var backend = new VhostUserBackend(new VhostUserBackendOptions { SocketPath = path, MessageTimeoutMilliseconds = 100 });
        var device = new TestDevice(backend);
        backend.SessionEnded += (_, reason) =>
        {
            lock (reasons)
            {
                reasons.Add(reason);
            }

            Interlocked.Increment(ref ended);
        };
        backend.Start();

        // One good session first, so whatever is allocated once (thread, lazies) is in the baseline.
        GoodSession(path, device, 0);
        Assert.True(TestDevice.Wait(() => Volatile.Read(ref ended) == 1, 10_000));
        var fdsBefore = FdCount.Snapshot();
        var mapsBefore = SharedMappings();

        Scenario[] scenarios =
        [
            Garbage, OversizedPayload, BadVersion, HalfAHeaderThenClose, HalfAPayloadThenClose, StallMidMessage,
            UnknownRequestBeforeNegotiation, DescriptorsOnAMessageThatTakesNone, TooManyDescriptors,
            CatalogueOfBadMessagesWithReplyAck, CatalogueOfBadMessagesWithoutReplyAck,
            RunningRingsThenVanish, MemoryTableThenVanish, RegionPastTheEndOfItsFile,
        ];
        var counts = new int[scenarios.Length];
        for (var i = 0; i < Sessions; i++)
        {
            var k = i % scenarios.Length;
            scenarios[k](path, i);
            counts[k]++;
        }

        var expected = 1 + Sessions;
        Assert.True(TestDevice.Wait(() => Volatile.Read(ref ended) >= expected, 30_000), $"{Volatile.Read(ref ended)} of {expected} sessions ended");
        Assert.Equal(expected, backend.Connections);
        Assert.Equal(backend.Connections, backend.SessionsEnded);
        Assert.Null(device.Queue(0));
        Assert.Null(device.Queue(1));
        Assert.Equal(device.StartEvents, device.StopEvents);

        var leaked = FdCount.OpenedSince(fdsBefore);
        var mapsAfter = SharedMappings();
        _output.WriteLine($"{Sessions} bad sessions ({string.Join(", ", scenarios.Select((s, i) => $"{s.Method.Name} x{counts[i]}"))})");
        _output.WriteLine($"open descriptors before {fdsBefore.Count}, opened since and still open {leaked.Count}; shared mappings before {mapsBefore}, after {mapsAfter}; backend errors {backend.Errors}");
        lock (reasons)
        {
            foreach (var r in reasons.Where(r => r.IsError).Distinct().Take(40))
            {
                _output.WriteLine($"  closed: {r}");
            }
        }

        Assert.Empty(leaked);
        Assert.Equal(mapsBefore, mapsAfter);
        Assert.True(backend.Errors >= Sessions / 2);

        // Every failure is counted under its code, and each kind of breakage has its own.
        Assert.Equal(backend.Errors, Enum.GetValues<VhostUserErrorCode>().Sum(backend.ErrorCount));
        VhostUserErrorCode[] seen =
        [
            VhostUserErrorCode.PayloadTooLarge, VhostUserErrorCode.BadVersion, VhostUserErrorCode.PeerClosed, VhostUserErrorCode.Timeout,
            VhostUserErrorCode.UnknownRequest, VhostUserErrorCode.UnexpectedDescriptor, VhostUserErrorCode.SocketError, VhostUserErrorCode.MapFailed,
        ];
        Assert.All(seen, code => Assert.True(backend.ErrorCount(code) > 0, $"no {code} counted"));
        Assert.Equal(0, backend.ErrorCount(VhostUserErrorCode.InternalError));
        lock (reasons)
        {
            Assert.Contains(reasons, r => r.Code == VhostUserErrorCode.PayloadTooLarge);
        }

        // And the server still serves a good front-end.
        GoodSession(path, device, 1000);
        Assert.True(TestDevice.Wait(() => Volatile.Read(ref ended) == expected + 1, 10_000));
        Assert.Empty(FdCount.OpenedSince(fdsBefore));
    }

    private static void GoodSession(string path, TestDevice device, int first)
    {
        using var echo = new EchoLoop(device);
        using var frontend = VhostUserFrontend.Connect(new VhostUserFrontendOptions { SocketPath = path, MemoryBytes = 1 << 20, QueueSize = 16 });
        Assert.True(device.WaitForQueues(2, 10_000));
        var driver = new TestDriver(frontend);
        driver.PostReceiveBuffers(0, 8);
        LoopbackTests.Exchange(driver, first, 8);
    }

    // Our memory files are named "rings..." (the runtime keeps memfd mappings of its own for JIT code).
    private static int SharedMappings() => File.ReadAllLines("/proc/self/maps").Count(l => l.Contains("/memfd:rings", StringComparison.Ordinal));

    private static byte[] Header(uint request, uint flags, uint size, int payloadBytes = -1)
    {
        var b = new byte[12 + (payloadBytes < 0 ? (int)size : payloadBytes)];
        BinaryPrimitives.WriteUInt32LittleEndian(b, request);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(4), flags);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(8), size);
        return b;
    }

    /// <summary>Sends bytes and waits until the server closes the connection.</summary>
    private static void SendAndExpectClose(string path, byte[] bytes, params FileDescriptor[] fds)
    {
        using var socket = UnixSocket.Connect(path);
        socket.Send(bytes, fds);
        WaitForClose(socket);
    }

    private static void WaitForClose(UnixSocket socket)
    {
        var buffer = new byte[256];
        var junk = new List<FileDescriptor>();
        var deadline = Environment.TickCount64 + 10_000;
        while (Environment.TickCount64 < deadline)
        {
            if (!Poll.WaitReadable(socket.Handle, 100))
            {
                continue;
            }

            int n;
            try
            {
                n = socket.Receive(buffer, junk);
            }
            catch (IOException)
            {
                n = 0;
            }

            if (n == 0)
            {
                break;
            }
        }

        foreach (var fd in junk)
        {
            fd.Dispose();
        }
    }

    private static void Garbage(string path, int seed)
    {
        var random = new Random(seed);
        var bytes = new byte[random.Next(1, 200)];
        random.NextBytes(bytes);
        using var socket = UnixSocket.Connect(path);
        socket.Send(bytes);
    }

    private static void OversizedPayload(string path, int seed) =>
        SendAndExpectClose(path, Header(5, 1, 1u << 30, 0));

    private static void BadVersion(string path, int seed) =>
        SendAndExpectClose(path, Header(1, 2, 0));

    private static void HalfAHeaderThenClose(string path, int seed)
    {
        using var socket = UnixSocket.Connect(path);
        socket.Send(Header(1, 1, 0).AsSpan(0, 1 + (seed % 11)));
    }

    private static void HalfAPayloadThenClose(string path, int seed)
    {
        using var memory = SharedMemory.Create(4096);
        using var socket = UnixSocket.Connect(path);
        var bytes = Header(5, 1, 8 + 32);
        bytes[12] = 1;
        socket.Send(bytes.AsSpan(0, 20), [memory.Handle!]);
    }

    private static void StallMidMessage(string path, int seed)
    {
        using var socket = UnixSocket.Connect(path);
        socket.Send(Header(9, 1, 40).AsSpan(0, 16));
        WaitForClose(socket);
    }

    private static void UnknownRequestBeforeNegotiation(string path, int seed) =>
        SendAndExpectClose(path, Header(100 + (uint)(seed % 50), 9, 0));

    private static void DescriptorsOnAMessageThatTakesNone(string path, int seed)
    {
        using var a = EventFd.Create();
        using var b = EventFd.Create();
        SendAndExpectClose(path, Header(3, 1, 0), a.Handle, b.Handle);
    }

    private static void TooManyDescriptors(string path, int seed)
    {
        var doorbells = Enumerable.Range(0, UnixSocket.MaxDescriptorsPerMessage + 4).Select(_ => EventFd.Create()).ToArray();
        try
        {
            SendAndExpectClose(path, Header(12, 1, 8), doorbells.Select(d => d.Handle).ToArray());
        }
        finally
        {
            foreach (var d in doorbells)
            {
                d.Dispose();
            }
        }
    }

    private static void CatalogueOfBadMessagesWithReplyAck(string path, int seed)
    {
        using var h = new SessionHarness(path);
        h.Negotiate(replyAck: true, features: VirtioFeatures.Version1);
        h.SendMemTable();

        // A few bad messages per session, each NACKed while the connection stays up.
        for (var i = 0; i < 4; i++)
        {
            var name = BadMessageCatalog.Names[((seed * 4) + i) % BadMessageCatalog.Names.Length];
            var outcome = BadMessageCatalog.Send(h, name, needReply: true);
            Assert.False(outcome.Close, name);
            Assert.Equal(VhostUserErrorCode.Refused, outcome.Error.Code);
        }

        h.SetupRing(0, 8);
    }

    private static void CatalogueOfBadMessagesWithoutReplyAck(string path, int seed)
    {
        using var h = new SessionHarness(path);
        h.Negotiate(replyAck: false, features: VirtioFeatures.Version1);
        h.SendMemTable();
        h.SetupRing(1, 8);
        var name = BadMessageCatalog.Names[seed % BadMessageCatalog.Names.Length];
        BadMessageCatalog.Send(h, name, needReply: false);

        // Without REPLY_ACK the server closes; the next request finds the connection gone.
        var outcome = h.Send(VhostUserMessage.Empty(VhostUserRequest.GetFeatures));
        Assert.True(outcome.Close, name);
    }

    private static void RunningRingsThenVanish(string path, int seed)
    {
        using var h = new SessionHarness(path);
        var features = h.Negotiate(replyAck: seed % 2 == 0, features: VirtioFeatures.Version1 | VirtioFeatures.EventIndex);
        h.SendMemTable();
        h.SetupRing(0, 8);
        h.SetupRing(1, 8);
        var tx = h.DriverRing(1, 8, features);
        tx.TryAdd(new Chains.BufferSegment(h.BufferAddress(0), 60), false, out _);
        tx.Publish();
        h.Kicks[1].Signal();
    }

    private static void MemoryTableThenVanish(string path, int seed)
    {
        using var h = new SessionHarness(path);
        h.Negotiate(replyAck: true);
        h.SendMemTable();
        h.Ok(VhostUserMessage.WithState(VhostUserRequest.SetVringNum, 0, 8));
    }

    private static void RegionPastTheEndOfItsFile(string path, int seed)
    {
        using var h = new SessionHarness(path);
        h.Negotiate(replyAck: true);
        var outcome = h.Send(VhostUserMessage.WithMemTable([h.Region with { Size = h.Memory.Length * 2 }], needReply: true), h.Memory.Handle!);
        Assert.Equal(VhostUserErrorCode.Refused, outcome.Error.Code);
    }
}
