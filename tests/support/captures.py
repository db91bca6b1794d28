"""The committed captures (``captures/``: ``NAME.pcap`` with ``NAME.truth.json``, the
clients' own record of what they did) and the parameters of tests run on each of them."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent.parent
CAPTURES = REPO / "captures"


def plaintext_pcaps() -> list[Path]:
    """The committed ``*.pcap`` files that decode without a key log: a TLS capture has its key
    log beside it (``NAME.keys``) and is tests/test_tls_real.py's."""
    return sorted(p for p in CAPTURES.glob("*.pcap") if not p.with_suffix(".keys").exists())


def remoting_truths() -> list[str]:
    names = []
    for p in sorted(CAPTURES.glob("*.truth.json")):
        t = json.loads(p.read_text())
        plain = "tls_capture" not in t  # TLS twins need their key log (tests/test_tls_real.py)
        if plain and t.get("protocol", "remoting") == "remoting" and (CAPTURES / f"{p.name[:-11]}.pcap").exists():
            names.append(p.name[:-11])
    return names


def real_params():
    names = remoting_truths()
    if not names:
        return [pytest.param(None, marks=pytest.mark.skip(
            reason="no remoting capture with ground truth in captures/ yet (python -m tests.rocketmq writes them)"))]
    return names


def cut_connection_starts(src: Path, dst: Path, server_port: int, fraction: float) -> int:
    """Copy the pcap ``src`` to ``dst`` without the start of every TCP connection to
    ``server_port``: its packets before the first ``fraction`` of its payload-carrying
    packets (handshake included) are dropped, as if the capture had begun mid-connection.
    Other packets are kept as they are.  Returns the number of packets dropped."""
    import dpkt

    def key(frame: bytes) -> tuple | None:
        eth = dpkt.ethernet.Ethernet(frame)
        ip, tcp = eth.data, getattr(eth.data, "data", None)
        if not isinstance(tcp, dpkt.tcp.TCP) or server_port not in (tcp.sport, tcp.dport):
            return None
        return tuple(sorted(((ip.src, tcp.sport), (ip.dst, tcp.dport)))), bool(tcp.data)

    with open(src, "rb") as inp:
        packets = list(dpkt.pcap.Reader(inp))
    carrying: dict[tuple, int] = {}
    for _ts, frame in packets:
        k = key(frame)
        if k is not None and k[1]:
            carrying[k[0]] = carrying.get(k[0], 0) + 1
    skip = {c: int(n * fraction) for c, n in carrying.items()}
    dropped = 0
    with open(dst, "wb") as out:
        w = dpkt.pcap.Writer(out, snaplen=262144, linktype=dpkt.pcap.DLT_EN10MB)
        for ts, frame in packets:
            k = key(frame)
            if k is not None and skip.get(k[0], 0) > 0:
                skip[k[0]] -= k[1]
                dropped += 1
                continue
            w.writepkt(frame, ts=ts)
    return dropped
