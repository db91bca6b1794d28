"""The one HTTP stats route of every long-running source (``live``, ``proxy``), free of any
server: a request line in, (status, content type, body) out.

    /stats                      Envoy admin text (``?format=json`` / ``?format=prometheus``)
    /stats/prometheus, /metrics Prometheus exposition (prometheus_client's current content type)
    /exchanges?filter=F&limit=N the latest exchanges kept, as ``read --format json`` prints them
    /ready                      ``LIVE``

A source gives a :class:`Reading` (the stats and its capture counters) and, when it keeps
any, its recent exchanges; sources add routes of their own (the proxy's ``/routes``).

:meth:`StatsRoute.steps` answers in small steps (a generator that yields between them) for a
server that must not stop for long, the proxy's event loop; :meth:`StatsRoute.respond` takes
all the steps at once.

Both servers (the proxy's admin endpoint, ``live --prometheus``) keep the same rules: at
most :data:`MAX_CONNECTIONS` connections (more are answered :data:`BUSY` and closed),
:data:`REQUEST_TIMEOUT` seconds for a request, and off loopback a bearer token
(:func:`guard`, :func:`authorized`).
"""
from __future__ import annotations

import hmac
import ipaddress
import secrets
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from ..model import Exchange
from ..sinks import Recent
from .exchanges import exchange_to_dict
from .statsfmt import StatsCollector, render_envoy, render_json

TEXT = "text/plain; charset=utf-8"
JSON = "application/json"
PROMETHEUS = CONTENT_TYPE_LATEST
Response = tuple[int, str, bytes]
Steps = Generator[None, None, Response]
STEP_ITEMS = 4  # kept exchanges decoded, filtered or turned into JSON per step of /exchanges (~0.5 ms)
STEP_SAMPLES = 32  # Prometheus samples written per step of /metrics
MAX_CONNECTIONS = 64  # connections an HTTP endpoint serves at once; more are answered BUSY and closed
REQUEST_TIMEOUT = 10.0  # seconds a client has to send its request (and again to read the answer)
_BUSY_BODY = b"endpoint busy: retry later\n"
BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY))
WILDCARDS = frozenset({"", "0.0.0.0", "::", "*"})


@dataclass
class Reading:
    """What one request reads: a stats snapshot and the capture counters (live taps)."""

    stats: dict[str, Any]
    captures: Sequence[Any] = field(default_factory=list)  # .name, .counters.received / .dropped


class _CaptureCollector:
    """Per-interface capture counters: packets the filter passed, kernel drops."""

    def __init__(self, prefix: str, captures: Sequence[Any]) -> None:
        self.prefix = prefix
        self.captures = captures

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Any:
        labels = ["stat_prefix", "interface"]
        for name, attr, doc in (
            ("rocketmq_capture_packets", "received", "packets the kernel filter passed (drops included)"),
            ("rocketmq_capture_kernel_drops", "dropped", "packets the kernel dropped: no room in the ring"),
        ):
            fam = CounterMetricFamily(name, doc, labels=labels)
            for c in self.captures:
                fam.add_metric([self.prefix, c.name], getattr(c.counters, attr))
            yield fam


def render_metrics(r: Reading) -> bytes:
    """Prometheus exposition of a reading (the stats, and capture counters when there are any)."""
    return b"".join(_metric_parts(r))


class _Family(Collector):
    """One metric family as the registry ``generate_latest`` writes out."""

    def __init__(self, fam: Metric) -> None:
        self.fam = fam

    def collect(self) -> list[Metric]:
        return [self.fam]


def _metric_parts(r: Reading) -> Generator[bytes, None, None]:
    """The exposition in parts of at most :data:`STEP_SAMPLES` samples: generate_latest on a
    registry of all the collectors writes the same families one after the other, each its
    ``# HELP`` and ``# TYPE`` lines, then its samples in order."""
    collectors: list[Any] = [StatsCollector(r.stats)]
    if r.captures:
        collectors.append(_CaptureCollector(r.stats["stat_prefix"], r.captures))
    for c in collectors:
        for fam in c.collect():
            samples = fam.samples
            for i in range(0, max(len(samples), 1), STEP_SAMPLES):
                part = Metric(fam.name, fam.documentation, fam.type, fam.unit)
                part.samples = samples[i:i + STEP_SAMPLES]
                text = generate_latest(_Family(part))
                while i and text.startswith(b"# "):  # the family's head was written with its first part
                    text = text.split(b"\n", 1)[1]
                yield text


def loopback(host: str) -> bool:
    """Whether ``host`` (an address, or ``localhost``) is a loopback address."""
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return host == "localhost"


def guard(host: str, token: str | None, what: str) -> tuple[str | None, list[str]]:
    """The bearer token ``what`` (an endpoint bound to ``host``) asks for: ``token``, or one
    made up when ``host`` is not loopback (None: none asked for); and the lines to tell once
    (the made-up token, a warning about a wildcard address)."""
    lines = []
    if host in WILDCARDS:
        lines.append(f"warning: the {what} listens on every interface ({host or '*'}): anyone who can reach it "
                     "can try it; it asks for a bearer token")
    if token is None and not loopback(host):
        token = secrets.token_urlsafe(24)
        lines.append(f"{what} token (send 'Authorization: Bearer TOKEN'; shown once): {token}")
    return token, lines


def authorized(header: str | None, token: str | None) -> bool:
    """Whether an ``Authorization`` header value carries ``Bearer <token>`` (any when ``token``
    is None); compared in constant time."""
    if token is None:
        return True
    scheme, _, given = (header or "").strip().partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def render_stats(r: Reading) -> str:
    """Envoy ``/stats`` text, then the capture counters in the same ``name: value`` form."""
    root = r.stats["root"]
    extra = []
    for c in r.captures:
        iface = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in c.name)
        extra.append(f"{root}capture.{iface}.kernel_drops: {c.counters.dropped}")
        extra.append(f"{root}capture.{iface}.packets: {c.counters.received}")
    return render_envoy(r.stats) + "".join(line + "\n" for line in extra)


Select = Callable[[Callable[[Exchange], bool] | None, int], list[Exchange]]


class StatsRoute:
    """Answers the routes above; ``read`` is called once per stats request (or ``read_steps``,
    a generator returning the reading, is run in steps), ``select`` (None: no exchanges kept)
    picks recent exchanges; ``extra`` maps more paths to handlers of the query (a dict);
    ``why_none`` says why ``/exchanges`` has nothing."""

    def __init__(self, read: Callable[[], Reading], *, select: Select | None = None, recent: Recent | None = None,
                 redact: bool = True, extra: dict[str, Callable[[dict[str, str]], Response]] | None = None,
                 why_none: str = "no recent exchanges are kept",
                 read_steps: Callable[[], Generator[None, None, Reading]] | None = None) -> None:
        self.read = read
        self.read_steps = read_steps
        self.select = select
        self.recent = recent  # kept on the serving thread: decoded and filtered in steps (instead of select)
        self.redact = redact
        self.extra = extra or {}
        self.why_none = why_none

    def respond(self, method: str, target: str) -> Response:
        """(status, content type, body) for one request."""
        steps = self.steps(method, target)
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return done.value

    def steps(self, method: str, target: str) -> Steps:
        """The answer to one request in steps; the generator returns (status, content type, body)."""
        if method not in ("GET", "HEAD"):
            return 405, TEXT, b"only GET\n"
        url = urlsplit(target)
        q = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        path = url.path.rstrip("/") or "/"
        fmt = q.get("format", "")
        if path in ("/metrics", "/stats/prometheus") or (path == "/stats" and fmt == "prometheus"):
            reading = yield from self._reading()
            parts: list[bytes] = []
            for part in _metric_parts(reading):
                yield
                parts.append(part)
            return 200, PROMETHEUS, b"".join(parts)
        if path == "/stats":
            reading = yield from self._reading()
            yield
            if fmt == "json":
                return 200, JSON, render_json(reading.stats).encode()
            return 200, TEXT, render_stats(reading).encode()
        if path == "/exchanges":
            return (yield from self._exchanges(q))
        if path == "/ready":
            return 200, TEXT, b"LIVE\n"
        if path in self.extra:
            return self.extra[path](q)
        if path == "/":
            return 200, TEXT, ("rmqsniff: " + ", ".join(self.paths()) + "\n").encode()
        return 404, TEXT, ("not found: try " + ", ".join(self.paths()) + "\n").encode()

    def _reading(self) -> Generator[None, None, Reading]:
        if self.read_steps is None:
            return self.read()
        return (yield from self.read_steps())

    def paths(self) -> list[str]:
        return ["/stats", "/metrics", "/stats?format=json", "/exchanges?filter=...&limit=N", "/ready", *self.extra]

    def _exchanges(self, q: dict[str, str]) -> Steps:
        if self.select is None and self.recent is None:
            return 404, JSON, orjson.dumps({"error": self.why_none})
        flt = None
        expr = q.get("filter", "").strip()
        if expr:
            from ..filter import FilterError, compile_filter

            try:
                flt = compile_filter(expr)
            except FilterError as e:
                return 400, JSON, orjson.dumps({"error": f"bad filter: {e.message}", "position": e.position})
        try:
            limit = int(q.get("limit", "100"))
        except ValueError:
            return 400, JSON, orjson.dumps({"error": "limit must be an integer"})
        if self.recent is not None:
            kept = list(self.recent.items)
            picked: list[Exchange] = []
            for i in range(0, len(kept), STEP_ITEMS):
                yield
                picked += self.recent.select(flt, 0, kept[i:i + STEP_ITEMS])
                if limit > 0:
                    del picked[:-limit]
        else:
            assert self.select is not None  # one of the two, checked above
            picked = self.select(flt, limit)
        items: list[bytes] = []
        for i in range(0, len(picked), STEP_ITEMS):
            yield
            items += [orjson.dumps(exchange_to_dict(ex, redact=self.redact), option=orjson.OPT_NON_STR_KEYS,
                                   default=str) for ex in picked[i:i + STEP_ITEMS]]
        return 200, JSON, b'{"count":%d,"exchanges":[%s]}' % (len(items), b",".join(items))
