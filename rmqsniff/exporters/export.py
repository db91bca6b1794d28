"""Export selected exchanges: JSON lines, CSV, or the capture packets that carried them (pcapng).

The pcapng export copies, from the original capture file(s), exactly the packets
whose payload carried a frame of a selected exchange (``Message.packets``, filled by
``Pipeline(track_packets=True)``), optionally with the SYN/FIN/RST packets of their
connections, in capture order with their timestamps and link types.  The result opens in rmqsniff, tshark and Wireshark.
A TLS connection's packets are all exported up to the selected exchanges (a reader decrypts
a record only after the ones before it); with ``--with-secrets`` its key log lines go into a
Decryption Secrets Block, so the file opens decrypted.
"""
from __future__ import annotations

import csv
import struct
from collections.abc import Iterable, Sequence
from typing import IO, Any

import orjson

from ..capwriter import dsb_block
from ..model import Exchange
from ..sources.pcapfile import CaptureError, open_capture
from .exchanges import exchange_to_dict, result_of

CSV_COLUMNS = ("index", "ts", "protocol", "connection", "client", "server", "status", "result", "code", "name",
               "response_code", "response_name", "opaque", "topic", "group", "latency_ms", "request_bytes",
               "response_bytes")


def write_jsonl(exchanges: Iterable[Exchange], out: IO[str], redact: bool = True) -> int:
    """One JSON object per exchange (the ``read --format jsonl`` form); returns the count."""
    n = 0
    for ex in exchanges:
        out.write(orjson.dumps(exchange_to_dict(ex, redact=redact)).decode() + "\n")
        n += 1
    return n


def csv_row(ex: Exchange) -> list[Any]:
    """The :data:`CSV_COLUMNS` values of an exchange."""
    from ..filter import getter

    d = exchange_to_dict(ex)
    req, resp = d["request"], d["response"]  # both protocols' sides carry code and name
    conn = ex.connection
    return [
        ex.index, f"{ex.ts:.6f}", ex.protocol, conn.id, d["connection"]["client"], d["connection"]["server"],
        ex.status, result_of(ex), req["code"] if req else "", req["name"] if req else "",
        resp["code"] if resp else "", resp["name"] if resp else "",
        getter("opaque")(ex), getter("topic")(ex) or "", getter("group")(ex) or "",
        "" if d["latency_ms"] is None else d["latency_ms"],
        ex.request.size if ex.request else "", ex.response.size if ex.response else "",
    ]


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


def write_pcapng(paths: Sequence[str], wanted: set[int], out: IO[bytes], secrets: str = "") -> int:
    """Copy the packets numbered in ``wanted`` (ordinals across ``paths``, as the pipeline
    counted them) from the captures to a pcapng; returns the number written.  ``secrets``
    (TLS key log text) goes first, in a Decryption Secrets Block."""
    w = PcapngWriter(out)
    if secrets:
        out.write(dsb_block(secrets.encode()))
    base = 0
    for path in paths:
        try:
            reader = open_capture(path)
        except CaptureError:
            continue  # the pipeline skipped (and reported) it too, counting no packets
        try:
            for no, (ts, linktype, frame) in enumerate(reader, base):
                if no in wanted:
                    w.write(ts, linktype, frame)
        finally:
            base += reader.packets
            reader.f.close()
    out.flush()
    return w.packets
