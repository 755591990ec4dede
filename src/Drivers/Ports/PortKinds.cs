using System.Globalization;

namespace Rings.Linux.Ports;

/// <summary>
/// A port specification as a user writes it: <c>KIND:TARGET[,KEY=VALUE...]</c>, for example
/// <c>vhost-user:/run/vm1.sock</c>, <c>tap:rings0</c> or <c>vhost-user:/run/vm2.sock,mtu=9000</c>.
/// The target may not contain a comma.
/// </summary>
/// <param name="Text">The specification as written.</param>
/// <param name="Kind">The part before the first colon.</param>
/// <param name="Target">The part after it, up to the first comma (a path, a device name).</param>
/// <param name="Options">The <c>KEY=VALUE</c> pairs after the target.</param>
public sealed record PortSpec(string Text, string Kind, string Target, IReadOnlyDictionary<string, string> Options)
{
    /// <summary>Parses a specification.</summary>
    /// <param name="text">For example <c>vhost-user:/run/vm1.sock</c>.</param>
    /// <returns>The parts.</returns>
    /// <exception cref="ArgumentException">The text is not of the form <c>KIND:TARGET[,KEY=VALUE...]</c>.</exception>
    public static PortSpec Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var colon = text.IndexOf(':', StringComparison.Ordinal);
        if (colon <= 0 || colon == text.Length - 1)
        {
            throw new ArgumentException($"port '{text}': expected KIND:TARGET, for example vhost-user:/run/vm1.sock (kinds: {string.Join(", ", PortKinds.Names)})");
        }

        var kind = text[..colon];
        var parts = text[(colon + 1)..].Split(',');
        var target = parts[0];
        if (target.Length == 0)
        {
            throw new ArgumentException($"port '{text}': the target after '{kind}:' is empty");
        }

        var options = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var part in parts.AsSpan(1))
        {
            var eq = part.IndexOf('=', StringComparison.Ordinal);
            if (eq <= 0)
            {
                throw new ArgumentException($"port '{text}': option '{part}' is not KEY=VALUE");
            }

            if (!options.TryAdd(part[..eq], part[(eq + 1)..]))
            {
                throw new ArgumentException($"port '{text}': option '{part[..eq]}' given twice");
            }
        }

        return new PortSpec(text, kind, target, options);
    }

    /// <summary>
    /// An integer option, or <paramref name="default"/> when absent. Call <see cref="RejectUnknown"/>
    /// after reading the options a kind knows.
    /// </summary>
    /// <param name="key">The option name.</param>
    /// <param name="default">The value when absent.</param>
    /// <param name="min">Smallest accepted value.</param>
    /// <param name="max">Largest accepted value.</param>
    /// <returns>The value.</returns>
    /// <exception cref="ArgumentException">Present but not an integer in range.</exception>
    public int GetInt(string key, int @default, int min, int max)
    {
        if (!Options.TryGetValue(key, out var text))
        {
            return @default;
        }

        if (!int.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out var value) || value < min || value > max)
        {
            throw new ArgumentException($"port '{Text}': {key} must be an integer from {min} to {max}, not '{text}'");
        }

        return value;
    }

    /// <summary>The value of a switch option: <c>on</c> or <c>off</c>, or <paramref name="default"/> when absent.</summary>
    /// <param name="key">The option name.</param>
    /// <param name="default">The value when the option is absent.</param>
    /// <returns>True for <c>on</c>.</returns>
    /// <exception cref="ArgumentException">The option is neither on nor off.</exception>
    public bool GetOnOff(string key, bool @default)
    {
        if (!Options.TryGetValue(key, out var text))
        {
            return @default;
        }

        return text switch
        {
            "on" => true,
            "off" => false,
            _ => throw new ArgumentException($"port '{Text}': {key} must be on or off, not '{text}'"),
        };
    }

    /// <summary>Throws when an option other than <paramref name="known"/> was given.</summary>
    /// <param name="known">The options the kind understands.</param>
    /// <exception cref="ArgumentException">An unknown option.</exception>
    public void RejectUnknown(params string[] known)
    {
        foreach (var key in Options.Keys)
        {
            if (Array.IndexOf(known, key) < 0)
            {
                var list = known.Length == 0 ? "none" : string.Join(", ", known);
                throw new ArgumentException($"port '{Text}': unknown option '{key}' (known: {list})");
            }
        }
    }
}

/// <summary>A port kind: its specification prefix, what its target means, and how to make one.</summary>
/// <param name="Name">The prefix before the colon (for example <c>tap</c>).</param>
/// <param name="Target">What the target is, for help text (for example <c>NAME</c>).</param>
/// <param name="Description">One line for help text.</param>
/// <param name="Create">Makes the port from a parsed specification (without opening it); throws <see cref="ArgumentException"/> for a bad one.</param>
public sealed record PortKind(string Name, string Target, string Description, Func<PortSpec, Port> Create);

/// <summary>
/// The registry of port kinds, by specification prefix. The built-in kinds are listed in
/// <see cref="BuiltIn"/>: adding a kind is its class plus one line there (or a call to
/// <see cref="Register"/> from an application).
/// </summary>
public static class PortKinds
{
    private static readonly Dictionary<string, PortKind> Kinds = BuiltIn().ToDictionary(k => k.Name, StringComparer.Ordinal);

    /// <summary>The registered kind names, sorted.</summary>
    public static IReadOnlyList<string> Names
    {
        get
        {
            lock (Kinds)
            {
                return [.. Kinds.Keys.Order(StringComparer.Ordinal)];
            }
        }
    }

    /// <summary>The registered kinds, sorted by name.</summary>
    public static IReadOnlyList<PortKind> All
    {
        get
        {
            lock (Kinds)
            {
                return [.. Kinds.Values.OrderBy(k => k.Name, StringComparer.Ordinal)];
            }
        }
    }

    /// <summary>Adds (or replaces) a kind.</summary>
    /// <param name="kind">The kind.</param>
    public static void Register(PortKind kind)
    {
        ArgumentNullException.ThrowIfNull(kind);
        lock (Kinds)
        {
            Kinds[kind.Name] = kind;
        }
    }

    /// <summary>Makes a port from its specification (not yet opened).</summary>
    /// <param name="specification">For example <c>vhost-user:/run/vm1.sock</c>.</param>
    /// <returns>The port.</returns>
    /// <exception cref="ArgumentException">A malformed specification, an unknown kind, or a target or option the kind refuses.</exception>
    public static Port Create(string specification)
    {
        var spec = PortSpec.Parse(specification);
        PortKind? kind;
        lock (Kinds)
        {
            Kinds.TryGetValue(spec.Kind, out kind);
        }

        if (kind is null)
        {
            throw new ArgumentException($"port '{specification}': unknown kind '{spec.Kind}' (known: {string.Join(", ", Names)})");
        }

        return kind.Create(spec);
    }

    // The built-in kinds: one line each.
    private static IEnumerable<PortKind> BuiltIn() =>
    [
        new("vhost-user", "PATH", "device side: serve vhost-user on a Unix socket for one front-end (a VM, DPDK virtio-user, rings guest); options mtu=N, queues=N (queue pairs offered, VIRTIO_NET_F_MQ above 1; 1 by default, at most 64), max-memory=MIB (the front-end's memory budget, 65536 by default), unsealed=trust|refuse (accept memory not sealed against shrinking, trusting the front-end), offload=on|off (offer checksum and TSO/USO features; off by default)", spec => new VhostUserPort(spec)),
        new("vhost-user-client", "PATH", "device side as a client: connect to a front-end that listens on a Unix socket (QEMU server=on, DPDK virtio-user server=1), retrying every second and after each disconnect; options as vhost-user", spec => new VhostUserClientPort(spec)),
        new("tap", "NAME", "the Linux network stack: a TAP device (IFF_VNET_HDR), created if there is none of that name, else attached to; options mtu=N, mac=ADDRESS, offload=on|off (partial checksums and 64 KiB TCP frames both ways; off: the switch checksums and segments for it)", spec => new TapPort(spec)),
        new("virtio-user", "PATH", "driver side: connect to a vhost-user back-end's socket (DPDK net_vhost, another rings process) and drive its virtio-net device, reconnecting when the back-end restarts; options mtu=N, queue-size=N, queues=N (1 to 64 queue pairs with VIRTIO_NET_F_MQ, spread over workers, a frame's pair chosen by its flow hash; the back-end must offer as many), ring=split|packed, reconnect=on|off (on by default with one pair; refused with several), offload=on|off (hand the back-end partial checksums and TSO/USO frames where it takes them; off by default), hugepages=auto|on|off (2 MiB pages for its memory; auto uses them when reserved)", spec => new VirtioUserPort(spec)),
    ];
}
