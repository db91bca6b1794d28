"""Export selected exchanges: JSON lines, CSV, or the capture packets that carried them (pcapng).

The pcapng export copies, from the original capture file(s), exactly the packets
whose payload carried a frame of a selected exchange (``Message.packets``, filled by
``Pipeline(track_packets=True)``), optionally with the SYN/FIN/RST packets of their
connections, in capture order with their timestamps and link types.  The result opens in rmqsniff, tshark and Wireshark.
Unless asked not to, secret values (AccessKey, Signature, gRPC ``authorization`` …) are
overwritten in place with bytes of the same length (:func:`plan_scrub`), so every frame stays
valid and decodes as before with the secrets replaced (inside TLS they are encrypted: left as
they are, and counted as not found).  A TLS connection's packets are all exported up to the
selected exchanges (a reader decrypts a record only after the ones before it); with
``--with-secrets`` its key log lines go into a Decryption Secrets Block, so the file opens decrypted.
"""
from __future__ import annotations

import contextlib
import csv
import os
import struct
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

import orjson

from ..capwriter import dsb_block, patch_tcp_payload
from ..model import Exchange
from ..sources.pcapfile import CaptureError, open_capture
from .exchanges import exchange_record, exchange_to_dict

CSV_COLUMNS = ("index", "ts", "protocol", "connection", "client", "server", "status", "result", "code", "name",
               "response_code", "response_name", "opaque", "topic", "group", "latency_ms", "request_bytes",
               "response_bytes")


def private_file(path: str) -> None:
    """Create (or empty) ``path`` readable and writable by its owner only (0600), for an
    export that keeps secrets (``--no-redact``)."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
    os.chmod(path, 0o600)  # it may have existed with a wider mode


def write_jsonl(exchanges: Iterable[Exchange], out: IO[str], redact: bool = True) -> int:
    """One JSON object per exchange (the ``read --format jsonl`` form); returns the count."""
    n = 0
    for ex in exchanges:
        out.write(orjson.dumps(exchange_to_dict(ex, redact=redact)).decode() + "\n")
        n += 1
    return n


def write_message_jsonl(exchanges: Iterable[Exchange], out: IO[str], redact: bool = True) -> int:
    """One JSON object per message the exchanges carry (the ``read --messages --format jsonl``
    form); returns the count."""
    from ..views import message_to_dict, messages_of

    n = 0
    for ex in exchanges:
        for m in messages_of(ex):
            out.write(orjson.dumps(message_to_dict(m, redact=redact)).decode() + "\n")
            n += 1
    return n


def refusal(fmt: str, output: str, messages: bool) -> str | None:
    """Why ``export`` will not write ``fmt`` to ``output`` (with ``messages``), or None."""
    if fmt == "parquet" and output == "-":
        return "--format parquet needs -o FILE (not stdout)"
    if messages and fmt not in ("jsonl", "parquet"):
        return f"--messages needs --format jsonl or parquet, not --format {fmt}"
    return None


def write_records(exchanges: Iterable[Exchange], fmt: str, output: str, messages: bool, redact: bool = True) -> int:
    """Write the exchanges (or the messages they carry) as ``jsonl``, ``csv`` or ``parquet`` to
    ``output`` (``-``: stdout, not for parquet); returns the number of rows."""
    if fmt == "parquet":
        from . import parquet

        if messages:
            return parquet.write_messages(exchanges, output, redact=redact)
        return parquet.write_exchanges(exchanges, output)
    with contextlib.ExitStack() as stack:
        out = sys.stdout if output == "-" else stack.enter_context(open(output, "w", encoding="utf-8"))
        if messages:
            return write_message_jsonl(exchanges, out, redact=redact)
        if fmt == "jsonl":
            return write_jsonl(exchanges, out, redact=redact)
        return write_csv(exchanges, out)


def csv_row(ex: Exchange) -> list[Any]:
    """The :data:`CSV_COLUMNS` values of an exchange."""
    r = exchange_record(ex)
    r["ts"] = f"{ex.ts:.6f}"
    return ["" if r[c] is None else r[c] for c in CSV_COLUMNS]


def write_csv(exchanges: Iterable[Exchange], out: IO[str]) -> int:
    """CSV with a header row (:data:`CSV_COLUMNS`); returns the count."""
    w = csv.writer(out, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    n = 0
    for ex in exchanges:
        w.writerow(csv_row(ex))
        n += 1
    return n


def tls_secrets(exchanges: Iterable[Exchange], keys: Any) -> str:
    """The key log lines (a :class:`rmqsniff.protocols.tls.TlsKeys`' secrets) of the TLS
    connections the exchanges travelled on."""
    randoms = {bytes.fromhex(cr) for ex in exchanges if ex.connection.tls
               and (cr := ex.connection.tls.get("client_random"))}
    return str(keys.keylog.lines_for(randoms))


def packets_of(exchanges: Iterable[Exchange], control: bool = False) -> set[int]:
    """Ordinals of the capture packets that carried the exchanges and the state of their
    connections (HTTP/2 preface and SETTINGS), and with ``control`` the SYN/FIN/RST packets of
    their connections.  Needs ``track_packets=True``."""
    wanted: set[int] = set()
    conns: dict[int, Any] = {}
    for ex in exchanges:
        for m in (ex.request, ex.response):
            if m is not None:
                if m.packets is None:
                    raise ValueError("packet numbers were not tracked (use Pipeline(track_packets=True))")
                wanted.update(m.packets)
        conns[ex.connection.id] = ex.connection
    for c in conns.values():
        wanted.update(c.setup_packets or ())
        if control:
            wanted.update(c.control_packets or ())
    return wanted


class PcapngWriter:
    """A minimal pcapng writer: one section, an interface per link type, enhanced
    packet blocks with microsecond timestamps."""

    def __init__(self, f: IO[bytes], snaplen: int = 262144) -> None:
        self.f = f
        self.snaplen = snaplen
        self.ifaces: dict[int, int] = {}
        self.packets = 0
        shb_body = struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1) + self._opt_comment("rmqsniff export")
        self._block(0x0A0D0D0A, shb_body)

    @staticmethod
    def _opt_comment(text: str) -> bytes:
        raw = text.encode()
        pad = (-len(raw)) % 4
        return struct.pack("<HH", 1, len(raw)) + raw + b"\0" * pad + struct.pack("<HH", 0, 0)

    def _block(self, btype: int, body: bytes) -> None:
        n = 12 + len(body)
        self.f.write(struct.pack("<II", btype, n) + body + struct.pack("<I", n))

    def write(self, ts: float, linktype: int, frame: bytes) -> None:
        iface = self.ifaces.get(linktype)
        if iface is None:
            iface = self.ifaces[linktype] = len(self.ifaces)
            self._block(1, struct.pack("<HHI", linktype, 0, self.snaplen) + struct.pack("<HH", 0, 0))
        t = int(round(ts * 1_000_000))
        pad = (-len(frame)) % 4
        body = struct.pack("<IIIII", iface, (t >> 32) & 0xFFFFFFFF, t & 0xFFFFFFFF, len(frame), len(frame))
        self._block(6, body + frame + b"\0" * pad)
        self.packets += 1


def _packets(paths: Sequence[str]) -> Iterator[tuple[int, float, int, bytes]]:
    """(ordinal, ts, link type, frame) of every packet of ``paths``, numbered as the pipeline did."""
    base = 0
    for path in paths:
        try:
            reader = open_capture(path)
        except CaptureError:
            continue  # the pipeline skipped (and reported) it too, counting no packets
        try:
            for no, (ts, linktype, frame) in enumerate(reader, base):
                yield no, ts, linktype, frame
        finally:
            base += reader.packets
            reader.f.close()


def write_pcapng(paths: Sequence[str], wanted: set[int], out: IO[bytes], scrub: Scrub | None = None,
                 secrets: str = "") -> int:
    """Copy the packets numbered in ``wanted`` (ordinals across ``paths``, as the pipeline
    counted them) from the captures to a pcapng, with the secret values ``scrub`` located
    overwritten in place; ``secrets`` (TLS key log text) goes first, in a Decryption Secrets
    Block.  Returns the number of packets written."""
    w = PcapngWriter(out)
    if secrets:
        out.write(dsb_block(secrets.encode()))
    patches = scrub.patches if scrub is not None else {}
    for no, ts, linktype, frame in _packets(paths):
        if no in wanted:
            todo = patches.get(no)
            if todo:
                new = patch_tcp_payload(frame, linktype, todo)
                if new is not None and new != frame:
                    frame = new
                    assert scrub is not None
                    scrub.frames += 1
            w.write(ts, linktype, frame)
    out.flush()
    return w.packets


# ------------------------------------------------------------------ secrets in the packets

MAX_SECRET_SCAN = 1 << 20  # bytes of one side's TCP payload searched for its secret values


@dataclass
class _Side:
    forms: list[list[tuple[bytes, bytes]]]
    packets: list[int]
    left: set[int] = field(default_factory=set)
    chunks: list[tuple[int, int, bytes]] = field(default_factory=list)  # (ordinal, seq, payload)
    size: int = 0  # payload bytes in chunks


@dataclass
class Scrub:
    """Where the secret values of a run's exchanges lie in its packets.  :meth:`add` every
    exchange (selected or not: packets are shared), :meth:`locate` them in the packets to be
    written; ``patches`` then maps a packet ordinal to (offset in its TCP payload,
    replacement bytes) for :func:`write_pcapng`.  Needs ``track_packets=True``."""

    patches: dict[int, list[tuple[int, bytes]]] = field(default_factory=dict)
    frames: int = 0  # frames changed by :func:`write_pcapng`
    sides: list[_Side] = field(default_factory=list)
    # distinct secret values looked for -> found in some packet; a value HPACK sent as a
    # reference into its dynamic table is not in the bytes of that side (but where it was
    # first sent, or before the capture started)
    found: dict[bytes, bool] = field(default_factory=dict)

    def add(self, ex: Exchange) -> None:
        """Note the sides of ``ex`` that carry secrets (their forms and packets, nothing else)."""
        from ..protocols import protocol_of

        proto = protocol_of(ex)
        for m in (ex.request, ex.response):
            if m is not None and m.packets:
                forms = proto.wire_secrets(m)
                if forms:
                    self.sides.append(_Side(forms, list(m.packets)))

    def watch(self, exchanges: Iterable[Exchange]) -> Iterator[Exchange]:
        """The exchanges, each :meth:`add`-ed on the way."""
        for ex in exchanges:
            self.add(ex)
            yield ex

    def locate(self, paths: Sequence[str], wanted: set[int]) -> None:
        """Find the secret values of the sides written (some packet in ``wanted``).  A side's
        payload is put back together in sequence order, so a value split across TCP segments
        is found and overwritten in each of them."""
        from ..sources.link import tcp_segment

        by_packet: dict[int, list[_Side]] = {}
        todo = [side for side in self.sides if not wanted.isdisjoint(side.packets)]
        self.sides = []
        for side in todo:
            side.left = set(side.packets)
            for no in side.left:
                by_packet.setdefault(no, []).append(side)
        last = max(by_packet, default=-1)
        for no, _ts, linktype, frame in _packets(paths) if by_packet else ():
            for side in by_packet.pop(no, ()):
                seg = tcp_segment(frame, linktype)
                if not isinstance(seg, str) and seg[7] and side.size < MAX_SECRET_SCAN:
                    side.chunks.append((no, seg[4], bytes(seg[7])))
                    side.size += len(seg[7])
                side.left.discard(no)
                if not side.left:
                    self._scan(side)
            if no >= last:
                break
        for side in todo:
            if side.left:  # packets the captures no longer hold
                self._scan(side)

    def _scan(self, side: _Side) -> None:
        """Locate the side's secret values in its reassembled payload and note the patches."""
        placed: list[tuple[int, int, bytes]] = []  # (sequence relative to the first packet, ordinal, payload)
        for no, seq, data in side.chunks:
            rel = (seq - side.chunks[0][1]) & 0xFFFFFFFF
            placed.append((rel - (1 << 32) if rel >= 1 << 31 else rel, no, data))
        side.chunks, side.left = [], set()
        placed.sort()
        start = placed[0][0] if placed else 0
        stream = bytearray()
        for rel, _no, data in placed:
            end = start + len(stream)
            if rel > end:
                stream += b"\0" * (rel - end)  # a hole: nothing is found across it
            if rel + len(data) > start + len(stream):
                stream += data[start + len(stream) - rel:]
        for forms in side.forms:
            found = False
            for wire, repl in forms:
                at = stream.find(wire)
                while at >= 0:
                    found = True
                    a, b = start + at, start + at + len(wire)
                    for rel, no, data in placed:  # every segment (retransmissions too) holding a part
                        lo, hi = max(a, rel), min(b, rel + len(data))
                        if lo < hi:
                            self.patches.setdefault(no, []).append((lo - rel, repl[lo - a:hi - a]))
                    at = stream.find(wire, at + len(wire))
            self.found[forms[0][0]] = found or self.found.get(forms[0][0], False)

    def line(self) -> str:
        """What was done, in one line."""
        text = f"secrets overwritten in place in {self.frames} frame{'s' if self.frames != 1 else ''}"
        missed = sum(not f for f in self.found.values())
        if missed:
            text += (f"; {missed} of {len(self.found)} secret values are in no written packet as such "
                     "(sent before the capture, or split across HTTP/2 frames)")
        return text + " (--no-redact keeps them)"
