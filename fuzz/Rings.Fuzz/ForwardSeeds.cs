using Rings.Fuzz.Targets;
using Op = Rings.Fuzz.Targets.ForwardTarget.Op;

namespace Rings.Fuzz;

/// <summary>Seeds for the forwarding target: traffic between two guests and the in-memory port, then hostile guests.</summary>
internal static class ForwardSeeds
{
    private const int A = 0;
    private const int B = 1;
    private const int ToA = 0;
    private const int ToB = 1;
    private const int ToMemory = 2;
    private const int ToAll = 3;
    private const int ToUnknown = 4;

    public static IEnumerable<(string, byte[])> All()
    {
        // Split rings of 8, plain: both guests post, talk to each other and to the in-memory port.
        yield return ("split-conversation", Conversation(new Seed(a: RingFormat.Split, b: RingFormat.Split, sizeCode: 1)).ToArray());
        yield return ("packed-conversation", Conversation(new Seed(a: RingFormat.Packed, b: RingFormat.Packed, sizeCode: 1, eventIndex: true)).ToArray());
        yield return ("mixed-in-order", Conversation(new Seed(a: RingFormat.Split, b: RingFormat.Packed, sizeCode: 2, inOrder: true)).ToArray());

        // MRG_RXBUF: small receive buffers, a large frame spread over several.
        var s = new Seed(a: RingFormat.Split, b: RingFormat.Packed, sizeCode: 2, mergeable: true, eventIndex: true);
        s.Post(A, 8, 0).Post(B, 16, 0).Send(A, ToB, 150).Round(2).Take(B).Send(B, ToA, 200).Round(2).Take(A);
        yield return ("mergeable-large-frames", s.ToArray());

        // Without MRG_RXBUF a frame larger than a receive buffer is dropped, and the next fits.
        s = new Seed(a: RingFormat.Packed, b: RingFormat.Split, sizeCode: 0);
        s.Post(B, 4, 0).Send(A, ToB, 100).Send(A, ToB, 4).Round(2).Take(B);
        yield return ("too-large-dropped", s.ToArray());

        // Floods: broadcast and an unknown destination reach every other port.
        s = new Seed(a: RingFormat.Split, b: RingFormat.Split, sizeCode: 1);
        s.Post(A, 8, 31).Post(B, 8, 31).Send(A, ToAll, 10).Send(B, ToUnknown, 10).Inject(ToAll, 10).Round(3).Take(A).Take(B);
        yield return ("floods", s.ToArray());

        // A hostile guest rewrites its transmit ring's avail index and a descriptor after sending;
        // the other guest and the in-memory port carry on.
        var split = RingFormat.Split.Layout(8);
        s = new Seed(a: RingFormat.Split, b: RingFormat.Split, sizeCode: 1);
        s.Post(B, 8, 31).Send(A, ToB, 10).Round(1).Take(B)
            .Send(A, ToB, 10).Scribble(A, 0x2000 + split.DriverAreaOffset + 2, 0x40, 0x00).Scribble(A, 0x2000, 0, 0, 0, 0, 1, 0, 0, 0, 0xFF, 0xFF, 0, 0)
            .Round(2).Take(B).Inject(ToB, 10).Round(2).Take(B).Send(B, ToMemory, 10).Round(1);
        yield return ("hostile-split-guest", s.ToArray());

        // A hostile packed guest marks every descriptor available with NEXT: a list longer than the ring.
        s = new Seed(a: RingFormat.Packed, b: RingFormat.Packed, sizeCode: 0);
        s.Post(B, 4, 31).Send(A, ToB, 10).Round(1).Take(B);
        for (var i = 0; i < 4; i++)
        {
            s.Scribble(A, 0x2000 + (16 * i) + 14, 0x81, 0x00);
        }

        s.Round(2).Take(B).Send(B, ToMemory, 10).Inject(ToB, 10).Round(2).Take(B);
        yield return ("hostile-packed-guest", s.ToArray());

        // A guest scribbles over its own posted receive buffers and its used ring while frames arrive.
        s = new Seed(a: RingFormat.Split, b: RingFormat.Split, sizeCode: 1, mergeable: true);
        s.Post(A, 8, 31).Send(B, ToA, 30).Round(1).Scribble(A, split.DeviceAreaOffset + 4, 9, 0, 0, 0, 0xFF, 0xFF, 0, 0).Take(A).Send(B, ToA, 30).Round(2).Take(A);
        yield return ("hostile-receiver", s.ToArray());
    }

    private static Seed Conversation(Seed s) =>
        s.Post(A, 8, 31).Post(B, 8, 31)
            .Send(A, ToB, 8).Send(B, ToA, 8).Inject(ToA, 4).Round(2).Take(A).Take(B)
            .Send(A, ToB, 60).Send(A, ToMemory, 2).Round(2).Take(B).Post(B, 2, 31).Send(B, ToA, 1).Round(1).Take(A);

    private sealed class Seed
    {
        private readonly List<byte> _bytes = [];

        public Seed(RingFormat a, RingFormat b, int sizeCode, bool mergeable = false, bool eventIndex = false, bool inOrder = false) =>
            _bytes.Add((byte)((a == RingFormat.Packed ? 1 : 0) | (b == RingFormat.Packed ? 2 : 0) | (mergeable ? 4 : 0) | (eventIndex ? 8 : 0) | (inOrder ? 16 : 0) | (sizeCode << 5)));

        public Seed Send(int guest, int destination, int payloadEights) => Add(Op.Send, (byte)(guest | (destination << 1)), (byte)payloadEights);

        public Seed Post(int guest, int count, int sizeCode) => Add(Op.Post, (byte)(guest | ((count - 1) << 1)), (byte)sizeCode);

        public Seed Round(int rounds) => Add(Op.Round, (byte)(rounds - 1));

        public Seed Take(int guest) => Add(Op.Take, (byte)guest);

        public Seed Inject(int destination, int payloadEights) => Add(Op.Inject, (byte)destination, (byte)payloadEights);

        public Seed Scribble(int guest, int offset, params byte[] bytes) =>
            Add(Op.Scribble, [(byte)(guest | ((bytes.Length - 1) << 1)), .. BitConverter.GetBytes((uint)offset), .. bytes]);

        public byte[] ToArray() => [.. _bytes];

        private Seed Add(Op op, params byte[] args)
        {
            _bytes.Add((byte)op);
            _bytes.AddRange(args);
            return this;
        }
    }
}
