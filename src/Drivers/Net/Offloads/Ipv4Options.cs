namespace Rings.Linux.Net;

/// <summary>The IPv4 options walk (RFC 791 section 3.1) that fragmenting needs.</summary>
internal static class Ipv4Options
{
    private const byte EndOfList = 0;
    private const byte NoOperation = 1;
    private const byte CopiedFlag = 0x80;

    /// <summary>True when every option's length lies within <paramref name="options"/>.</summary>
    public static bool AreWellFormed(ReadOnlySpan<byte> options)
    {
        var k = 0;
        while (k < options.Length)
        {
            var type = options[k];
            if (type == EndOfList)
            {
                return true;
            }

            if (type == NoOperation)
            {
                k++;
                continue;
            }

            if (k + 1 >= options.Length || options[k + 1] < 2 || k + options[k + 1] > options.Length)
            {
                return false;
            }

            k += options[k + 1];
        }

        return true;
    }

    /// <summary>
    /// Replaces the options whose copied flag is clear with no-operations, as fragments after the
    /// first carry only copied options (RFC 791 section 3.2); the header length stays the same.
    /// The options must be well formed.
    /// </summary>
    public static void KeepCopiedOnly(Span<byte> options)
    {
        var k = 0;
        while (k < options.Length)
        {
            var type = options[k];
            if (type == EndOfList)
            {
                return;
            }

            if (type == NoOperation)
            {
                k++;
                continue;
            }

            var length = options[k + 1];
            if ((type & CopiedFlag) == 0)
            {
                options.Slice(k, length).Fill(NoOperation);
            }

            k += length;
        }
    }
}
