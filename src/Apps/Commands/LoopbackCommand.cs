using System.CommandLine;

namespace Rings.Apps.Commands;

/// <summary><c>rings loopback</c>: a driver thread and a device thread over one ring.</summary>
internal static class LoopbackCommand
{
    public static Command Create()
    {
        var seconds = new Option<double>("--seconds") { Description = "How long to run, in seconds.", DefaultValueFactory = _ => 3 };
        var queueSize = new Option<int>("--queue-size") { Description = "Descriptors in the ring (a power of two, 1..32768).", DefaultValueFactory = _ => 256 };
        var burst = new Option<int>("--burst") { Description = "Most frames moved per publish.", DefaultValueFactory = _ => 32 };
        var frameSize = new Option<int>("--frame-size") { Description = "Bytes per frame (60..65535).", DefaultValueFactory = _ => 64 };
        var eventIdx = new Option<string>("--event-idx") { Description = "Negotiate VIRTIO_F_EVENT_IDX: on or off.", DefaultValueFactory = _ => "on" };
        var wait = new Option<string>("--wait") { Description = "How an idle side waits: poll (busy-poll) or block (sleep until notified).", DefaultValueFactory = _ => "poll" };
        eventIdx.AcceptOnlyFromAmong("on", "off");
        wait.AcceptOnlyFromAmong("poll", "block");

        var command = new Command("loopback", "Run a virtio driver and a vhost device over one split ring in this process and print packets per second, kicks and calls per packet, and mean burst.")
        {
            seconds, queueSize, burst, frameSize, eventIdx, wait,
        };
        command.SetAction(result =>
        {
            var options = new InProcessLoopback.Options(
                result.GetValue(seconds),
                result.GetValue(queueSize),
                result.GetValue(burst),
                result.GetValue(frameSize),
                result.GetValue(eventIdx) == "on",
                result.GetValue(wait) == "block");
            var error = options.Validate();
            if (error is not null)
            {
                Console.Error.WriteLine($"rings loopback: {error}");
                return 2;
            }

            return InProcessLoopback.Run(options, Console.Out);
        });
        return command;
    }
}
