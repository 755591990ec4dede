using System.Diagnostics.Metrics;
using System.Globalization;
using System.Net;
using System.Text;

namespace Rings.Linux.Diagnostics;

/// <summary>
/// Serves a meter's observable instruments as Prometheus text (exposition format 0.0.4) over HTTP
/// on a loopback address: every scrape polls the instruments once
/// (<see cref="MeterListener.RecordObservableInstruments"/>) and writes what they report. Counters
/// become <c>NAME_total</c> counters, gauges and up-down counters gauges; dots in names become
/// underscores. Nothing is kept between scrapes, so a scrape costs the data path nothing.
/// </summary>
public sealed class PrometheusEndpoint : IDisposable
{
    private readonly string _meterName;
    private readonly MeterListener _listener = new();
    private readonly HttpListener _http = new();
    private readonly Thread _thread;
    private readonly object _scrapeGate = new();
    private readonly List<(Instrument Instrument, double Value, string Labels)> _readings = [];
    private volatile bool _stopping;

    private PrometheusEndpoint(IPEndPoint endpoint, string meterName)
    {
        _meterName = meterName;
        Endpoint = endpoint;
        _listener.InstrumentPublished = (instrument, listener) =>
        {
            if (instrument.Meter.Name == _meterName && instrument.IsObservable)
            {
                listener.EnableMeasurementEvents(instrument);
            }
        };
        _listener.SetMeasurementEventCallback<long>((i, v, tags, _) => Add(i, v, tags));
        _listener.SetMeasurementEventCallback<int>((i, v, tags, _) => Add(i, v, tags));
        _listener.SetMeasurementEventCallback<double>((i, v, tags, _) => Add(i, v, tags));
        _listener.Start();
        var host = endpoint.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6 ? $"[{endpoint.Address}]" : endpoint.Address.ToString();
        _http.Prefixes.Add($"http://{host}:{endpoint.Port}/");
        _thread = new Thread(Serve) { Name = "prometheus endpoint", IsBackground = true };
    }

    /// <summary>Where it listens.</summary>
    public IPEndPoint Endpoint { get; }

    /// <summary>The address to scrape, <c>http://ADDRESS:PORT/metrics</c>.</summary>
    public string Url => $"{_http.Prefixes.First()}metrics";

    /// <summary>Scrapes answered so far.</summary>
    public long Scrapes => Interlocked.Read(ref _scrapes);

    private long _scrapes;

    /// <summary>
    /// Reads an endpoint as given on a command line: a loopback address and a port, such as
    /// <c>127.0.0.1:9464</c> or <c>[::1]:9464</c>.
    /// </summary>
    /// <param name="text">The text.</param>
    /// <param name="endpoint">The endpoint.</param>
    /// <param name="error">Why it is refused, or null.</param>
    /// <returns>True when it is a loopback address with a port from 1 to 65535.</returns>
    public static bool TryParse(string text, out IPEndPoint endpoint, out string? error)
    {
        endpoint = new IPEndPoint(IPAddress.Loopback, 0);
        error = null;
        if (!IPEndPoint.TryParse(text, out var parsed) || parsed.Port == 0 || !text.Contains(':', StringComparison.Ordinal) || text.EndsWith(']'))
        {
            error = $"'{text}' is not ADDRESS:PORT (such as 127.0.0.1:9464)";
            return false;
        }

        if (!IPAddress.IsLoopback(parsed.Address))
        {
            error = $"'{text}': metrics are served on loopback addresses only (127.0.0.0/8 or ::1)";
            return false;
        }

        endpoint = parsed;
        return true;
    }

    /// <summary>Starts serving the instruments of the meter named <paramref name="meterName"/> at <paramref name="endpoint"/>.</summary>
    /// <param name="endpoint">A loopback address and port.</param>
    /// <param name="meterName">The meter (every meter of that name in the process).</param>
    /// <returns>The running endpoint.</returns>
    /// <exception cref="ArgumentException">The address is not a loopback address.</exception>
    /// <exception cref="IOException">The port cannot be listened on (in use, not permitted).</exception>
    public static PrometheusEndpoint Start(IPEndPoint endpoint, string meterName = RingsMetrics.MeterName)
    {
        ArgumentNullException.ThrowIfNull(endpoint);
        if (!IPAddress.IsLoopback(endpoint.Address) || endpoint.Port == 0)
        {
            throw new ArgumentException($"{endpoint}: metrics are served on a loopback address and a port number", nameof(endpoint));
        }

        var e = new PrometheusEndpoint(endpoint, meterName);
        try
        {
            e._http.Start();
        }
        catch (HttpListenerException x)
        {
            e.Dispose();
            throw new IOException($"cannot serve metrics on {endpoint}: {x.Message}", x);
        }

        e._thread.Start();
        return e;
    }

    /// <summary>Polls the instruments once and writes them in the Prometheus text format.</summary>
    /// <returns>The text.</returns>
    public string Scrape()
    {
        lock (_scrapeGate)
        {
            _readings.Clear();
            _listener.RecordObservableInstruments();
            var text = new StringBuilder();
            foreach (var group in _readings.GroupBy(r => MetricName(r.Instrument)).OrderBy(g => g.Key, StringComparer.Ordinal))
            {
                var first = group.First().Instrument;
                var type = IsCounter(first) ? "counter" : "gauge";
                text.Append("# HELP ").Append(group.Key).Append(' ').Append(EscapeHelp(first.Description ?? first.Name)).Append('\n');
                text.Append("# TYPE ").Append(group.Key).Append(' ').Append(type).Append('\n');
                foreach (var (_, value, labels) in group)
                {
                    text.Append(group.Key).Append(labels).Append(' ').Append(Number(value)).Append('\n');
                }
            }

            _readings.Clear();
            return text.ToString();
        }
    }

    /// <summary>Stops serving.</summary>
    public void Dispose()
    {
        _stopping = true;
        try
        {
            _http.Close();
        }
        catch (ObjectDisposedException)
        {
        }

        if (_thread.IsAlive)
        {
            _thread.Join(2000);
        }

        _listener.Dispose();
    }

    private static bool IsCounter(Instrument i) => i is ObservableCounter<long> or ObservableCounter<int> or ObservableCounter<double> or Counter<long> or Counter<int> or Counter<double>;

    private static string MetricName(Instrument i)
    {
        var name = Sanitize(i.Name);
        return IsCounter(i) ? name + "_total" : name;
    }

    private static string Sanitize(string name)
    {
        var s = new StringBuilder(name.Length);
        foreach (var c in name)
        {
            s.Append(char.IsAsciiLetterOrDigit(c) || c == '_' ? c : '_');
        }

        if (s.Length == 0 || char.IsAsciiDigit(s[0]))
        {
            s.Insert(0, '_');
        }

        return s.ToString();
    }

    private static string EscapeHelp(string text) => text.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("\n", "\\n", StringComparison.Ordinal);

    private static string EscapeLabel(string text) => EscapeHelp(text).Replace("\"", "\\\"", StringComparison.Ordinal);

    private static string Number(double v) => double.IsPositiveInfinity(v) ? "+Inf" : double.IsNegativeInfinity(v) ? "-Inf" : double.IsNaN(v) ? "NaN" : v.ToString("R", CultureInfo.InvariantCulture);

    private void Add(Instrument instrument, double value, ReadOnlySpan<KeyValuePair<string, object?>> tags)
    {
        var labels = new StringBuilder();
        if (tags.Length > 0)
        {
            labels.Append('{');
            for (var i = 0; i < tags.Length; i++)
            {
                labels.Append(i == 0 ? string.Empty : ",").Append(Sanitize(tags[i].Key)).Append("=\"")
                    .Append(EscapeLabel(Convert.ToString(tags[i].Value, CultureInfo.InvariantCulture) ?? string.Empty)).Append('"');
            }

            labels.Append('}');
        }

        // Called only from RecordObservableInstruments, under _scrapeGate.
        _readings.Add((instrument, value, labels.ToString()));
    }

    private void Serve()
    {
        while (!_stopping)
        {
            HttpListenerContext context;
            try
            {
                context = _http.GetContext();
            }
            catch (Exception e) when (e is HttpListenerException or ObjectDisposedException or InvalidOperationException)
            {
                return;
            }

            try
            {
                using var response = context.Response;
                var path = context.Request.Url?.AbsolutePath ?? "/";
                if (context.Request.HttpMethod is not ("GET" or "HEAD") || path is not ("/metrics" or "/"))
                {
                    response.StatusCode = 404;
                    continue;
                }

                var body = Encoding.UTF8.GetBytes(Scrape());
                response.ContentType = "text/plain; version=0.0.4; charset=utf-8";
                response.ContentLength64 = body.Length;
                if (context.Request.HttpMethod == "GET")
                {
                    response.OutputStream.Write(body);
                }

                Interlocked.Increment(ref _scrapes);
            }
            catch (Exception e) when (e is HttpListenerException or IOException or ObjectDisposedException)
            {
                // The scraper went away mid-answer; serve the next one.
            }
        }
    }
}
