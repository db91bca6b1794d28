"""The live tap: capture sockets in, the same flow table and stats as for files.

    AF_PACKET sources (kernel BPF, TPACKET_V3 ring) -> link/IP/TCP (sources.link)
    -> FlowTable -> PairingSink -> Stats   (+ optional pcapng of every packet)

Mirrors :class:`rmqsniff.pipeline.Pipeline`, fed by sockets instead of files.
Memory stays bounded: flows idle longer than ``idle`` seconds are closed (their
pending requests count as unanswered), the flow table is capped, exchanges are
counted and dropped.  :class:`Stats` is not thread-safe: the tap feeds it while
holding :attr:`LiveTap.lock`, and :meth:`LiveTap.snapshot` reads it under the
same lock (the Prometheus thread uses that).
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .exporters.statsroute import Reading, StatsRoute
from .flows import FlowTable, PortSpec
from .lag import LagTable
from .model import Exchange
from .pairing import PairingSink
from .protocols.tls import TlsKeys
from .sinks import Lag, Recent, SelectedStats
from .sources.afpacket import AfPacketSource, Counters, PcapngWriter, wait
from .sources.link import tcp_segment
from .stats import Stats

DEFAULT_IDLE = 300.0
KEYLOG_POLL = 0.05  # seconds between looks at the TLS key log files' sizes
DEFAULT_RECENT = 1000  # exchanges /exchanges keeps (bodies bounded too: rmqsniff.sinks.Recent)
_NS = 10.0 ** -9  # the same scale the pcapng reader applies, so timestamps match exactly
MAX_READS = 64  # ring blocks taken from one source before the others get a turn


@dataclass
class CaptureState:
    """One interface as the console and the exporters show it."""

    name: str
    linktype: int
    counters: Counters


@dataclass
class LiveSnapshot:
    """Everything a view needs, copied under the lock."""

    stats: dict[str, Any]
    captures: list[CaptureState]
    packets: int
    elapsed: float
    errors: list[str] = field(default_factory=list)

    @property
    def dropped(self) -> int:
        return sum(c.counters.dropped for c in self.captures)


class LiveTap:
    """Decode packets from capture sources as they arrive."""

    def __init__(
        self,
        sources: Sequence[AfPacketSource],
        *,
        stats: Stats | None = None,
        stat_prefix: str = "rmqsniff",
        ports: Iterable[PortSpec] = (),
        only_ports: bool = False,
        select: Callable[[Exchange], bool] | None = None,
        writer: PcapngWriter | None = None,
        idle: float = DEFAULT_IDLE,
        on_exchange: Callable[[Exchange], None] | None = None,
        recent: int = DEFAULT_RECENT,
        tls_keys: TlsKeys | None = None,
    ) -> None:
        self.sources = list(sources)
        self.stats = stats if stats is not None else Stats(prefix=stat_prefix)
        self.lock = threading.Lock()
        self.errors: list[str] = []
        self.skipped: dict[str, int] = {}
        self.packets = 0
        self.writer = writer
        self.idle = idle
        self.started = time.time()
        sink_stats: Any = self.stats if select is None else SelectedStats(self.stats, select)
        # the latest exchanges, for /exchanges (0: none kept)
        self.recent = Recent(recent) if recent else None
        if self.stats.lag is None:  # consumer lag gauges, fed every exchange (unfiltered)
            self.stats.lag = LagTable()
        self.sink = PairingSink(sink_stats, on_exchange, ordered=False,
                                sinks=([self.recent] if self.recent is not None else []) + [Lag(self.stats.lag)])
        if self.recent is not None:
            self.recent.next_index = self.sink.next_index
        # TLS secrets; the key log files are re-read as they grow (see tick)
        self.tls_keys = tls_keys if tls_keys is not None else TlsKeys()
        self.table = FlowTable(self.stats, self.sink, ports=ports, only_ports=only_ports, errors=self.errors,
                               tls_keys=self.tls_keys)
        self._keys_at = 0.0
        self._finished = False

    # ------------------------------------------------------------------ feeding
    def feed(self, iface: int, packets: list[tuple[int, bytes, int]]) -> None:
        """Decode packets of source ``iface`` (and write them, with ``-w``)."""
        linktype = self.sources[iface].linktype if self.sources else 1
        now = time.monotonic()
        if self.tls_keys.files and now - self._keys_at >= KEYLOG_POLL:
            self._keys_at = now
            with self.lock:
                self.tls_keys.refresh()
        packet = self.table.packet
        skipped = self.skipped
        write = self.writer.write if self.writer is not None else None
        nbytes = 0
        ns = _NS
        with self.lock:
            for ts_ns, frame, wire in packets:
                if write is not None:
                    write(iface, ts_ns, frame, wire)
                seg = tcp_segment(frame, linktype)
                if type(seg) is str:
                    skipped[seg] = skipped.get(seg, 0) + 1
                    continue
                nbytes += len(seg[7])
                packet(ts_ns * ns, *seg)
            self.packets += len(packets)
            tcp = self.stats.tcp
            tcp("packets", len(packets))
            tcp("bytes", nbytes)

    def tick(self, now: float | None = None) -> None:
        """Housekeeping, about once a second: idle flows, kernel counters, file flush."""
        now = time.time() if now is None else now
        with self.lock:
            self.table.expire(now, self.idle)
        for i, src in enumerate(self.sources):
            src.poll_stats()
            if self.writer is not None:
                self.writer.set_counters(i, src.counters)
        if self.writer is not None:
            self.writer.flush()

    def run(self, *, count: int = 0, duration: float | None = None, tick: float = 1.0,
            on_tick: Callable[[LiveTap], None] | None = None, stop: Callable[[], bool] | None = None,
            fds: Sequence[int] = (), on_fd: Callable[[int], None] | None = None) -> str:
        """Capture until ``count`` packets, ``duration`` seconds or ``stop()``; returns why it stopped.

        ``fds``/``on_fd``: extra descriptors (e.g. the keyboard) watched in the same loop.
        """
        t0 = time.monotonic()
        deadline = t0 + duration if duration else None
        next_tick = t0 + tick
        while True:
            if stop is not None and stop():
                self.drain()
                return "interrupted"
            got = False
            for i, src in enumerate(self.sources):
                for _ in range(MAX_READS):
                    pk = src.read()
                    if not pk:
                        break
                    got = True
                    if count and self.packets + len(pk) >= count:
                        self.feed(i, pk[:count - self.packets])
                        return "count"
                    self.feed(i, pk)
            now = time.monotonic()
            if now >= next_tick:
                self.tick()
                if on_tick is not None:
                    on_tick(self)
                next_tick = max(next_tick + tick, now + tick / 2)
            if deadline is not None and now >= deadline:
                self.drain()
                return "duration"
            if got:
                continue
            timeout = min(next_tick, deadline or next_tick, now + 0.1) - now
            ready = wait(self.sources, max(timeout, 0.0), tuple(fds))
            if on_fd is not None:
                for fd in ready:
                    if fd in fds:
                        on_fd(fd)

    def drain(self) -> None:
        """Decode what the kernel already holds (at most one ring's worth per source)."""
        for i, src in enumerate(self.sources):
            for _ in range(src.drain_limit):
                pk = src.read()
                if not pk:
                    break
                self.feed(i, pk)

    def finish(self) -> None:
        """End of capture: close every flow (pending requests: unanswered), the sockets, the file."""
        if self._finished:
            return
        self._finished = True
        for src in self.sources:
            src.close()
        with self.lock:
            self.table.finish()
        if self.writer is not None:
            for i, src in enumerate(self.sources):
                self.writer.set_counters(i, src.counters)
            self.writer.close()

    # ------------------------------------------------------------------ reading
    def snapshot(self, top: int | None = None) -> LiveSnapshot:
        """Stats and capture counters, consistent with each other (taken under the lock)."""
        with self.lock:
            snap = self.stats.snapshot(top)
            packets = self.packets
            errors = list(self.errors[-20:])
        caps = [CaptureState(s.name, s.linktype, Counters(**vars(s.counters))) for s in self.sources]
        return LiveSnapshot(snap, caps, packets, time.time() - self.started, errors)

    def reading(self) -> Reading:
        """The stats and capture counters for the HTTP route."""
        snap = self.snapshot()
        return Reading(snap.stats, snap.captures)

    def recent_exchanges(self, flt: Callable[[Exchange], bool] | None, limit: int) -> list[Exchange]:
        """The latest exchanges ``flt`` selects (copied under the lock, decoded and filtered outside it)."""
        if self.recent is None:
            return []
        with self.lock:
            items = list(self.recent.items)
        return self.recent.select(flt, limit, items)

    def route(self, redact: bool = True) -> StatsRoute:
        """The HTTP routes over this tap (see :mod:`rmqsniff.exporters.statsroute`)."""
        return StatsRoute(self.reading, select=self.recent_exchanges if self.recent is not None else None,
                          redact=redact, why_none="this tap keeps no recent exchanges (--recent 0)")

