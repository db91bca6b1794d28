"""The same remoting traffic twice: in plaintext, and inside real TLS (Python's ``ssl``,
OpenSSL, TLS 1.3 AES-256-GCM by default) with its key log, for ``benchmarks/decode.py``'s
decrypt+decode rate."""
from __future__ import annotations

import random
import ssl
import tempfile
from pathlib import Path

from dissectors.remoting.frame import encode
from rmqsniff.capwriter import CaptureWriter, TcpSession
from rmqsniff.synth import conversation
from tests.support.tlspair import contexts, make_cert, tls_talk


def write_tls_pair(plain: str, tls: str, keylog: str, exchanges: int, connections: int = 20, seed: int = 1,
                   version: ssl.TLSVersion | None = None) -> dict[str, int]:
    """Write ``plain`` and ``tls`` (pcap) with the same exchanges; the TLS clients' key log to
    ``keylog``.  Returns the counts of exchanges (requests) and packets of each."""
    rng = random.Random(seed)
    cert = make_cert(Path(tempfile.mkdtemp(prefix="rmqsniff-tlsgen-")))
    cctx, sctx = contexts(cert, Path(keylog), version=version)
    counts = {"exchanges": 0}
    per = max(1, exchanges // connections)
    with open(plain, "wb") as fp, open(tls, "wb") as ft:
        wp, wt = CaptureWriter(fp), CaptureWriter(ft)
        ts = 1_700_000_000.0
        for c in range(connections):
            kind = "producer" if c % 2 == 0 else "consumer"
            chunks: list[tuple[bool, bytes]] = []
            for t in conversation(rng, per, kind):
                chunks.append((True, encode(t.request)))
                counts["exchanges"] += 1
                if t.response is not None:
                    chunks.append((False, encode(t.response)))
            wire, _ = tls_talk(cctx, sctx, chunks)
            for w, data in ((wp, chunks), (wt, wire)):
                s = TcpSession(w, (f"10.0.2.{c + 1}", 41000 + c), ("10.0.9.9", 10911), mss=1460)
                t0 = ts
                s.handshake(t0)
                for fc, d in data:
                    t0 += 0.0002
                    s.send(t0, fc, d)
                s.close(t0)
            ts += 1.0
        wp.close()
        wt.close()
    return counts
