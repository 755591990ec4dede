using System.Runtime.Versioning;
using BenchmarkDotNet.Attributes;
using Rings.Linux.Diagnostics;
using Rings.Linux.Ports;
using Rings.Linux.Runtime;
using Rings.Testing.Traffic;

namespace Rings.Benchmarks;

/// <summary>
/// One burst through a pipeline worker, per frame: an in-memory source yields the same burst
/// every round (bytes in place, nothing consumed), the processor decides, the worker groups by
/// destination and the in-memory sink copies each frame once. Receive, processor, routing,
/// transmit and release are all on the measured path; the ports cost about what a copy costs.
/// With <see cref="Capture"/>, both ports of the path are captured (each frame copied into a
/// capture ring, written to /dev/null by the capture's writer thread): still nothing allocated.
/// </summary>
[MemoryDiagnoser]
[SupportedOSPlatform("linux")]
public class RuntimeBenchmarks
{
    private InMemoryPort? _source;
    private InMemoryPort? _sink;
    private Pipeline? _pipeline;

    /// <summary>The processor: patch (one destination), switch (learned unicast) or flood (switch with an unknown destination, to two ports).</summary>
    [Params("patch", "switch", "flood")]
    public string Processor { get; set; } = "patch";

    /// <summary>Whether the source and the sink are captured (<c>--capture</c>).</summary>
    [Params(false, true)]
    public bool Capture { get; set; }

    /// <summary>Frames per burst.</summary>
    [Params(32)]
    public int Burst { get; set; }

    /// <summary>Builds the ports and the pipeline and runs one round so everything is warm.</summary>
    [GlobalSetup]
    public void Setup()
    {
        _source = new InMemoryPort("source", slots: Burst) { Loop = true };
        _sink = new InMemoryPort("sink") { Discard = true };
        var ports = new List<Port> { _source, _sink };
        if (Processor == "flood")
        {
            ports.Add(new InMemoryPort("sink 2") { Discard = true });
        }

        foreach (var p in ports)
        {
            p.Open();
        }

        var frame = new byte[64];
        for (var i = 0; i < Burst; i++)
        {
            TestFrame.Write(frame, (ulong)i, 0);
            _source.TryInject(frame);
        }

        FrameProcessor processor = Processor switch
        {
            "patch" => new PatchProcessor(),
            _ => new LearningSwitch(),
        };
        _pipeline = new Pipeline(ports, processor, new PipelineOptions { Burst = Burst });
        if (Processor == "switch")
        {
            // Teach the switch where the test frames' destination lives: on the sink.
            var reply = new byte[64];
            TestFrame.DestinationMac.CopyTo(reply.AsSpan(6));
            TestFrame.SourceMac.CopyTo(reply);
            reply[12] = 0x88;
            reply[13] = 0xB5;
            _sink.TryInject(reply);
        }

        if (Capture)
        {
            _source.Capture = PacketCapture.Create("/dev/null", _source.Name, format: CaptureFormat.PcapNg);
            _sink.Capture = PacketCapture.Create("/dev/null", _sink.Name, format: CaptureFormat.PcapNg);
        }

        _pipeline.RunOnce();
    }

    /// <summary>Stops the pipeline and frees the ports.</summary>
    [GlobalCleanup]
    public void Cleanup()
    {
        _pipeline?.Dispose();
        foreach (var p in _pipeline?.Ports ?? [])
        {
            p.Capture?.Dispose();
            p.Capture = null;
            p.Dispose();
        }
    }

    /// <summary>One round: a burst received, decided, transmitted and released. Reported per frame.</summary>
    [Benchmark(OperationsPerInvoke = 32)]
    public int BurstThroughWorker() => _pipeline!.RunOnce();
}
