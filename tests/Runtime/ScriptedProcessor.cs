using System.Buffers.Binary;
using Rings.Linux.Runtime;

namespace Rings.Tests.Runtime;

/// <summary>What a test processor does with one frame.</summary>
internal enum DecisionKind
{
    Forward,
    Send,
    Flood,
    Drop,
    Undecided,
}

/// <summary>One scripted decision.</summary>
internal readonly record struct Decision(DecisionKind Kind, ulong Value, DropReason Reason = DropReason.Filtered);

/// <summary>Decides each frame by the id written at bytes 14..17 of its payload, from a script.</summary>
internal sealed class ScriptedProcessor : FrameProcessor
{
    private readonly Dictionary<int, Decision> _script;

    public ScriptedProcessor(Dictionary<int, Decision> script)
    {
        _script = script;
    }

    /// <summary>Frames decided so far (a frame received again counts again).</summary>
    public int Processed { get; private set; }

    public override void Process(FrameBurst burst)
    {
        Processed += burst.Count;
        for (var i = 0; i < burst.Count; i++)
        {
            var id = BinaryPrimitives.ReadInt32LittleEndian(burst.Head(i)[14..]);
            var d = _script[id];
            switch (d.Kind)
            {
                case DecisionKind.Forward:
                    burst.Forward(i, (int)d.Value);
                    break;
                case DecisionKind.Send:
                    burst.Send(i, new PortMask(d.Value));
                    break;
                case DecisionKind.Flood:
                    burst.Flood(i);
                    break;
                case DecisionKind.Drop:
                    burst.Drop(i, d.Reason);
                    break;
                default:
                    break;
            }
        }
    }

    /// <summary>A frame of <paramref name="length"/> bytes carrying <paramref name="id"/>, the rest a pattern of the id.</summary>
    public static byte[] Frame(int id, int length, int source = 1, int destination = 2)
    {
        var frame = new byte[length];
        for (var i = 0; i < length; i++)
        {
            frame[i] = (byte)((i * 7) + id);
        }

        if (length < 18)
        {
            return frame;
        }

        // Locally administered unicast MACs.
        frame[0] = 0x02;
        frame[5] = (byte)destination;
        frame[6] = 0x02;
        frame[11] = (byte)source;
        if (length >= 18)
        {
            BinaryPrimitives.WriteInt32LittleEndian(frame.AsSpan(14), id);
        }

        return frame;
    }
}
