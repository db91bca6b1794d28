"""TLS under either protocol: a connection layer, not a protocol of its own.

A flow whose first bytes are a TLS record gets a :class:`TlsLayer` as its handler: the
sans-I/O :class:`dissectors.tls.TlsConnection` decrypts it with the secrets of a
:class:`TlsKeys` store (``--tls-keylog`` files, ``SSLKEYLOGFILE``, pcapng Decryption
Secrets Blocks) and the plaintext goes to the inner protocol's own handler, chosen when
the first plaintext arrives (ALPN ``h2`` means gRPC, otherwise recognition as for
plaintext).  The layer implements the same handler interface (data / lost / close /
swap / track).  Each connection's TLS status is kept on ``Connection.tls`` (status,
version, cipher, SNI, ALPN), counted in the stats when the connection ends
(``transport.tls_<kind>``) and, unless decrypted, told as one problem line; a connection
that cannot be decrypted never reaches a protocol decoder.
"""
from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from dissectors.tls import KeyLog, Plaintext, Status, TlsConnection, looks_tls
from dissectors.tls.connection import DECRYPTED, MAX_PENDING, HoldBudget, Resumable

from . import protocol_named, recognise
from .base import Protocol
from .remoting.handler import REMOTING as LANE_EVENTS  # the protocol of the lanes' stats events

# the stats' transport counter of each final status (transport.tls_<kind>)
STATUS_KINDS = {"decrypted": "decrypted", "no key": "no_key", "unsupported cipher": "unsupported_cipher",
                "started mid-session": "mid_session", "decrypt failed": "decrypt_failed",
                "handshake": "incomplete"}
MAX_SPANS = 4096  # plaintext -> packets spans kept per direction for packet tracking
MAX_TLS_PACKETS = 1_000_000  # packets of one TLS connection named for exports (Connection.setup_packets)

__all__ = ["STATUS_KINDS", "TlsKeys", "TlsLayer", "inner_protocol", "looks_tls", "status_kind"]


ALPN_PROTOCOLS = {"h2": "grpc"}  # ALPN protocol id -> the protocol it means


def inner_protocol(from_client: bool, data: bytes, alpn: str | None, forced: Protocol | None,
                   port: Protocol | None) -> tuple[Protocol, str, bool]:
    """The protocol of a TLS connection's plaintext: ``forced`` (``--port P=…``), the ALPN,
    recognition from the first plaintext bytes, the server's well-known ``port``, else
    remoting (a candidate, known by plausible frames only).  Returns (protocol, how, candidate)."""
    if forced is not None:
        return forced, "forced", False
    if alpn in ALPN_PROTOCOLS:
        return protocol_named(ALPN_PROTOCOLS[alpn]), "alpn", False
    hit = recognise(data, from_client)
    if hit is not None:
        return hit[0], hit[1], False
    if port is not None:
        return port, "port", False
    return protocol_named("remoting"), "", True


def status_kind(status: str) -> str:
    """The counter kind of a status (``no key (client random …)`` -> ``no_key``)."""
    for prefix, kind in STATUS_KINDS.items():
        if status.startswith(prefix):
            return kind
    return "other"


class TlsKeys:
    """The secrets a run decrypts with: key log files (re-read as they grow), text from
    pcapng Decryption Secrets Blocks, and the TLS 1.2 sessions learnt on the way."""

    def __init__(self, paths: Iterable[str] = (), live: bool = False) -> None:
        self.keylog = KeyLog()
        self.resumable = Resumable()
        # live: the key log may be behind the traffic, so a connection holds records until its key
        # comes (bounded per connection and, by the budget, for all); a capture's keys are all known
        self.hold = MAX_PENDING if live else 0
        self.budget = HoldBudget()
        self.files: dict[str, int] = {p: 0 for p in paths}  # path -> bytes read so far
        self.errors: list[str] = []

    @classmethod
    def from_options(cls, paths: Iterable[str], env: dict[str, str] | None = None, live: bool = False) -> TlsKeys:
        """``--tls-keylog`` files plus ``SSLKEYLOGFILE`` from the environment; unless ``live``
        (the files are still being written), a last line without its newline counts too."""
        paths = list(paths)
        extra = (env if env is not None else dict(os.environ)).get("SSLKEYLOGFILE")
        if extra and extra not in paths:
            paths.append(extra)
        keys = cls(paths, live)
        keys.refresh()
        if not live:
            keys.keylog.end()
        return keys

    def refresh(self) -> int:
        """Read what the key log files gained since the last call; returns the secrets added."""
        added = 0
        for path, done in list(self.files.items()):
            try:
                if done and os.stat(path).st_size <= done:
                    continue
                with open(path, "rb") as f:
                    f.seek(done)
                    data = f.read()
            except OSError as e:
                if done == 0 and not any(path in x for x in self.errors):
                    self.errors.append(f"TLS key log {path}: {e.strerror or e}")
                continue
            if not data:
                continue
            self.files[path] = done + len(data)
            added += self.keylog.feed(data.decode("utf-8", "replace"))
        return added

    def add_text(self, text: str) -> int:
        """Key log text from elsewhere (a pcapng Decryption Secrets Block)."""
        n = self.keylog.feed(text)
        return n + self.keylog.end()

    def problems(self) -> list[str]:
        """One line per key log problem (garbage lines counted, the first ones explained)."""
        out = list(self.errors)
        kl = self.keylog
        if kl.bad:
            out.append(f"TLS key log: {kl.bad} line(s) not used" + (f" (first: {kl.problems[0]})"
                                                                     if kl.problems else ""))
        return out


InnerFactory = Callable[[bool, bytes, "str | None"], Any]


class TlsLayer:
    """A flow's TLS: ciphertext in, the inner protocol's handler fed the plaintext."""

    lane_ok = True  # stats-only runs: each record's plaintext may take the inner handler's lane

    __slots__ = ("conn", "stats", "owner", "tls", "inner", "make_inner", "packets_for", "spans", "plain",
                 "cipher_done", "reported")

    def __init__(self, conn: Any, stats: Any, keys: TlsKeys, make_inner: InnerFactory, owner: Any = None) -> None:
        self.conn = conn
        self.stats = stats
        self.owner = owner
        self.tls = TlsConnection(keys.keylog, keys.resumable, hold=keys.hold, budget=keys.budget)
        self.inner: Any = None
        self.make_inner = make_inner  # (from_client, first plaintext, ALPN) -> the inner handler
        self.packets_for: Callable[[bool, int, int], list[int]] | None = None
        # per direction: (plaintext start, end, packets of its record) not yet asked about
        self.spans: dict[bool, deque[tuple[int, int, list[int]]]] = {True: deque(), False: deque()}
        self.plain = {True: 0, False: 0}  # plaintext bytes delivered per direction
        self.cipher_done = {True: 0, False: 0}  # ciphertext bytes whose packets are known
        self.reported = ""
        conn.tls = self.tls.info()

    # -- handler interface
    def data(self, from_client: bool, data: bytes, ts: float) -> None:
        self._events(self.tls.data(from_client, data), ts)

    def lost(self, from_client: bool, nbytes: int) -> None:
        self._events(self.tls.lost(from_client), 0.0)

    def close(self, ts: float = 0.0) -> None:
        self._events(self.tls.close(), ts)
        if self.inner is not None:
            self.inner.close(ts)
        info = self.conn.tls = self.tls.info()
        self.stats.tcp(f"tls_{status_kind(info['status'])}", 1)
        self._report(info["status"])

    def swap(self) -> None:
        self.tls.swap()
        if self.inner is not None:
            self.inner.swap()

    def track(self, packets_for: Callable[[bool, int, int], list[int]]) -> None:
        self.packets_for = packets_for

    def lane(self, buf: Any, t: int, n: int, ts: float, from_client: bool, start: int, events: list[Any],
             apply: Callable[[str, list[Any]], None]) -> bool:
        """Stats-only runs: decrypt the segment; a record that is one whole frame takes the inner
        handler's own lane (its stats events batched in ``events``), the rest its :meth:`data`."""
        for ev in self.tls.data(from_client, bytes(buf[t:t + n])):
            h = self.inner
            if type(ev) is Plaintext and h is not None and h.lane_ok:
                pt = ev.data
                fc = ev.from_client
                if h.lane(pt, 0, len(pt), ts, fc, self.plain[fc], events, apply):
                    self.plain[fc] += len(pt)
                    continue
            if events:  # what the lanes collected comes first
                apply(LANE_EVENTS, events)
                events.clear()
            self._events([ev], ts)
        return True

    # -- events
    def _events(self, events: list[Any], ts: float) -> None:
        for ev in events:
            t = type(ev)
            if t is Plaintext:
                self._plaintext(ev, ts)
            elif t is Status:
                self.conn.tls = self.tls.info()
                if ev.status != DECRYPTED and not ev.status.startswith("no key"):
                    self._report(ev.status)  # a key may still come for "no key": told at the end
            elif self.owner is not None:
                self.owner.problem(f"{self.conn.label} {'client' if ev.from_client else 'server'}: {ev.reason}")

    def _plaintext(self, ev: Plaintext, ts: float) -> None:
        fc = ev.from_client
        h = self.inner
        if h is None:
            self.conn.tls = self.tls.info()
            h = self.inner = self.make_inner(fc, ev.data, self.tls.alpn)
            if self.packets_for is not None:
                h.track(self._plain_packets)
                if self.conn.setup_packets is None:
                    self.conn.setup_packets = []
        if self.packets_for is not None:
            self._span(ev)
        self.plain[fc] += len(ev.data)
        h.data(fc, ev.data, ts)

    def _report(self, status: str) -> None:
        if status != DECRYPTED and status != self.reported and self.owner is not None:
            self.reported = status
            self.owner.problem(f"{self.conn.label}: TLS {status}")

    # -- packet tracking: plaintext offsets to the packets of the records that carried them.  A
    # reader decrypts a record only after every earlier one (sequence numbers), so every packet
    # of the connection so far is part of its setup: an export of any exchange takes them all.
    def _span(self, ev: Plaintext) -> None:
        fc = ev.from_client
        get = self.packets_for
        assert get is not None
        before = get(fc, self.cipher_done[fc], ev.start)  # handshake and other records before this one
        pk = get(fc, ev.start, ev.end)
        self.cipher_done[fc] = ev.end
        setup = self.conn.setup_packets
        if setup is not None and len(setup) < MAX_TLS_PACKETS:
            last = setup[-1] if setup else -1
            setup.extend(n for n in before + pk if n != last)
        spans = self.spans[fc]
        if len(spans) >= MAX_SPANS:
            spans.popleft()
        p = self.plain[fc]
        spans.append((p, p + len(ev.data), pk))

    def _plain_packets(self, from_client: bool, start: int, end: int) -> list[int]:
        spans = self.spans[from_client]
        out: list[int] = []
        for pstart, pend, pk in spans:
            if pstart >= end:
                break
            if pend > start:
                out.extend(n for n in pk if not out or n > out[-1])
        while spans and spans[0][1] <= end:
            spans.popleft()
        return out
