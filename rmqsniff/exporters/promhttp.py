"""An HTTP endpoint over live stats: Prometheus exposition and Envoy's admin text.

    /metrics, /stats/prometheus   Prometheus text format (prometheus_client)
    /stats                        Envoy admin ``/stats`` text; ``?format=json`` for JSON

Served by a stdlib ``ThreadingHTTPServer`` in a daemon thread.  Each request
takes one snapshot through ``read`` (which must be safe to call from another
thread, e.g. :meth:`rmqsniff.live.LiveTap.snapshot`), then renders outside any lock.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric

from .statsfmt import StatsCollector, render_envoy, render_json


class EndpointError(Exception):
    """The endpoint could not start; one line saying why and what to do."""


def parse_address(text: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """``HOST:PORT``, ``[V6]:PORT`` or ``PORT`` -> (host, port); port 0 picks a free one."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = default_host, text
    host = host.strip("[]") or default_host
    if not port.isdigit() or not 0 <= int(port) < 65536:
        raise EndpointError(f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:9108)")
    return host, int(port)


class _CaptureCollector:
    """Per-interface capture counters: packets the filter passed, kernel drops."""

    def __init__(self, prefix: str, captures: list[Any]) -> None:
        self.prefix = prefix
        self.captures = captures

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        labels = ["stat_prefix", "interface"]
        for name, field, doc in (
            ("rocketmq_capture_packets", "received", "packets the kernel filter passed (drops included)"),
            ("rocketmq_capture_kernel_drops", "dropped", "packets the kernel dropped: no room in the ring"),
        ):
            fam = CounterMetricFamily(name, doc, labels=labels)
            for c in self.captures:
                fam.add_metric([self.prefix, c.name], getattr(c.counters, field))
            yield fam


def render_metrics(snap: Any) -> bytes:
    """Prometheus exposition of a :class:`rmqsniff.live.LiveSnapshot`."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(StatsCollector(snap.stats))
    reg.register(_CaptureCollector(snap.stats["stat_prefix"], snap.captures))
    return generate_latest(reg)


def render_stats(snap: Any) -> str:
    """Envoy ``/stats`` text, then the capture counters in the same ``name: value`` form."""
    root = snap.stats["root"]
    extra = []
    for c in snap.captures:
        iface = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in c.name)
        extra.append(f"{root}capture.{iface}.kernel_drops: {c.counters.dropped}")
        extra.append(f"{root}capture.{iface}.packets: {c.counters.received}")
    return render_envoy(snap.stats) + "".join(line + "\n" for line in extra)


class StatsEndpoint:
    """Serve ``read()`` snapshots over HTTP until :meth:`close`."""

    def __init__(self, address: tuple[str, int], read: Callable[[], Any]) -> None:
        self.read = read
        handler = _handler(self)
        try:
            self.server = ThreadingHTTPServer(address, handler)
        except OSError as e:
            raise EndpointError(f"cannot serve stats on {address[0]}:{address[1]}: {e.strerror or e} "
                                "(choose another with --prometheus HOST:PORT)") from None
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, name="rmqsniff-http",
                                        kwargs={"poll_interval": 0.2}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}" if ":" not in host else f"http://[{host}]:{port}"

    def start(self) -> StatsEndpoint:
        self._thread.start()
        return self

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _handler(endpoint: StatsEndpoint) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "rmqsniff"

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            url = urlsplit(self.path)
            fmt = parse_qs(url.query).get("format", [""])[0]
            if url.path in ("/metrics", "/stats/prometheus") or (url.path == "/stats" and fmt == "prometheus"):
                self._send(render_metrics(endpoint.read()), CONTENT_TYPE_LATEST)
            elif url.path == "/stats" and fmt == "json":
                self._send(render_json(endpoint.read().stats).encode(), "application/json")
            elif url.path == "/stats":
                self._send(render_stats(endpoint.read()).encode(), "text/plain; charset=utf-8")
            elif url.path == "/":
                self._send(b"rmqsniff live: /metrics (Prometheus), /stats (Envoy text), /stats?format=json\n",
                           "text/plain; charset=utf-8")
            else:
                self._send(b"not found: try /metrics or /stats\n", "text/plain; charset=utf-8", 404)

        def _send(self, body: bytes, ctype: str, code: int = 200) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep the console clean
            pass

    return Handler
