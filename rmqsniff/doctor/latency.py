"""The slow-outlier and slow-broker rules: log-bucket latency per code and per server (bounded)."""
from __future__ import annotations

import heapq
from typing import Any

from ..model import Exchange
from ..stats.buckets import bucket_of, bucket_value
from . import catalogue as C
from .finding import Evidence, Finding, q


def bounded_put(d: dict[Any, Any], key: Any, value: Any, cap: int = C.MAX_TRACKED) -> None:
    if key in d or len(d) < cap:
        d[key] = value


class Latency:
    """Log-bucket histogram of one code (and server), with its slowest exchanges."""

    __slots__ = ("buckets", "n", "slowest")

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}
        self.n = 0
        self.slowest: list[tuple[float, int, float, str, str]] = []  # heap of (ms, index, ts, conn, clause)

    def add(self, ms: float, ex: Exchange | None, name: str) -> None:
        """One answer; ``ex`` None: counted only (no evidence kept)."""
        b = bucket_of(int(ms * 1000))
        self.buckets[b] = self.buckets.get(b, 0) + 1
        self.n += 1
        if ex is not None:
            slowest = self.slowest
            if len(slowest) < C.MAX_EVIDENCE:
                heapq.heappush(slowest, (ms, ex.index, ex.ts, ex.connection.label, name))
            elif ms > slowest[0][0]:
                heapq.heapreplace(slowest, (ms, ex.index, ex.ts, ex.connection.label, name))

    def median_ms(self) -> float:
        rank, seen = (self.n + 1) // 2, 0
        for b in sorted(self.buckets):
            seen += self.buckets[b]
            if seen >= rank:
                return bucket_value(b) / 1000.0
        return 0.0

    def above(self, ms: float) -> int:
        return sum(n for b, n in self.buckets.items() if bucket_value(b) / 1000.0 > ms)


class Latencies:
    """Every code's :class:`Latency`, and every (code, server)'s, at most MAX_TRACKED of each."""

    def __init__(self) -> None:
        self.latency: dict[str, Latency] = {}
        self.by_server: dict[tuple[str, str], Latency] = {}
        self.code_keys: dict[tuple[Any, int], str] = {}

    def add(self, ex: Exchange, code: int, lat: float, server: str, proto: Any, name: str) -> None:
        """An answered request of ``code`` (its name ``name``) from ``server``, ``lat`` ms after it."""
        key = self.code_keys.get((proto, code))
        if key is None:
            key = proto.code_key(code)
            bounded_put(self.code_keys, (proto, code), key)
        h = self.latency.get(key)
        if h is None:
            if len(self.latency) >= C.MAX_TRACKED:
                return
            h = self.latency[key] = Latency()
        h.add(lat, ex, name)
        hs = self.by_server.get((key, server))
        if hs is None and len(self.by_server) < C.MAX_TRACKED:
            hs = self.by_server[(key, server)] = Latency()
        if hs is not None:
            hs.add(lat, None, "")

    def findings(self) -> list[Finding]:
        """slow-outlier per code, slow-broker per code and server."""
        out = []
        for key, h in self.latency.items():
            if h.n < C.OUTLIER_MIN_SAMPLES:
                continue
            med = h.median_ms()
            limit = max(C.OUTLIER_FACTOR * med, C.OUTLIER_MIN_MS)
            slow = sorted((s for s in h.slowest if s[0] > limit), key=lambda s: s[1])
            if not slow:
                continue
            e = Evidence()
            for _ms, index, ts, label, name in slow:
                e.add(index, ts, label, f"code == {name} and latency > {limit:.0f}ms")
            e.count = max(h.above(limit), len(slow))
            e.figures = {"median_ms": round(med, 3), "slowest_ms": round(max(s[0] for s in slow), 3),
                         "limit_ms": round(limit, 3)}
            out.append(Finding("slow-outlier", key, f"{e.count} {key} answer(s) slower than {limit:.0f} ms "
                               f"(median {med:.1f} ms, slowest {e.figures['slowest_ms']:.0f} ms)", e))
        per_code: dict[str, list[tuple[str, Latency]]] = {}
        for (key, server), h in self.by_server.items():
            if h.n >= C.SLOW_BROKER_MIN_SAMPLES:
                per_code.setdefault(key, []).append((server, h))
        for key, servers in per_code.items():
            if len(servers) < 2:
                continue
            medians = {s: h.median_ms() for s, h in servers}
            for server, h in servers:
                others = sorted(m for s, m in medians.items() if s != server)
                peer = others[len(others) // 2]
                med = medians[server]
                if med > C.SLOW_BROKER_MIN_MS and med > C.SLOW_BROKER_FACTOR * peer:
                    e = Evidence(count=h.n)
                    e.clauses[f"code == {key.rpartition(':')[2]} and broker == {q(server)}"] = None
                    e.figures = {"median_ms": round(med, 3), "peers_median_ms": round(peer, 3)}
                    out.append(Finding("slow-broker", f"{key} at {server}", f"{server} answers {key} in "
                                       f"{med:.1f} ms (median of {h.n}), its peers in {peer:.1f} ms", e))
        return out
