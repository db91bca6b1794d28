"""How connections are recognised: gRPC on any port from its first bytes (the client's preface,
or the server's SETTINGS when the server speaks first), ``--port P=grpc|remoting``.

The traffic is the bundled real capture grpc_python.pcap (Python 5.x client, real RocketMQ
proxy) with the proxy's port renumbered to an unusual one; for the server-first case the
server's first packet (its SETTINGS, which servers send on accept) is moved before the
client's first data packet.  Renumbering and that reordering are the only changes."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import dpkt
import pytest

from rmqsniff.pipeline import analyze

CAPTURE = Path(__file__).resolve().parent.parent / "captures" / "grpc_python.pcap"
PORT = 28081


def _rewrite(dst: Path, server_first: bool) -> None:
    with CAPTURE.open("rb") as f:
        r = dpkt.pcap.Reader(f)
        link = r.datalink()
        recs = [(ts, bytes(buf)) for ts, buf in r]
    out = []
    for ts, buf in recs:
        eth = dpkt.ethernet.Ethernet(buf)
        tcp = getattr(eth.data, "data", None)
        if isinstance(tcp, dpkt.tcp.TCP):
            if tcp.sport == 8081:
                tcp.sport = PORT
            if tcp.dport == 8081:
                tcp.dport = PORT
        out.append([ts, eth])
    if server_first:
        def first(from_server: bool) -> int:
            return next(i for i, (_, e) in enumerate(out) if isinstance(getattr(e.data, "data", None), dpkt.tcp.TCP)
                        and len(e.data.data.data) and (e.data.data.sport == PORT) == from_server)
        c, s = first(False), first(True)
        assert c < s
        out[c][1], out[s][1] = out[s][1], out[c][1]  # the server's SETTINGS first, same timestamps
        # the two segments keep their sequence numbers, so the client's bytes are still in order
    with dst.open("wb") as out_file:
        w = dpkt.pcap.Writer(out_file, linktype=link)
        for ts, eth in out:
            w.writepkt(bytes(eth), ts)


@pytest.fixture(scope="module")
def original():
    return [ex for ex in analyze([str(CAPTURE)]).exchanges if ex.protocol == "grpc"]


def shape(ex) -> tuple:
    return (ex.status, ex.request.command.code if ex.request else None,
            ex.response.command.code if ex.response else None)


@pytest.mark.parametrize("server_first,how", [(False, "preface"), (True, "settings")])
def test_grpc_on_an_unusual_port_is_recognised_from_its_first_bytes(tmp_path, original, server_first, how):
    path = tmp_path / "g.pcap"
    _rewrite(path, server_first)
    got = [ex for ex in analyze([str(path)]).exchanges if ex.protocol == "grpc"]
    assert sorted(map(shape, got)) == sorted(map(shape, original))
    assert {ex.connection.server[1] for ex in got} == {PORT}
    first = min(got, key=lambda ex: ex.connection.id).connection  # the reordered one
    assert first.recognised_by == how
    assert {ex.connection.recognised_by for ex in got} <= {how, "preface"}


def test_port_option_forces_either_protocol(tmp_path, original):
    path = tmp_path / "g.pcap"
    _rewrite(path, True)

    def run(*args: str) -> list[dict]:
        r = subprocess.run([sys.executable, "-m", "rmqsniff", "read", str(path), "--format", "jsonl", *args],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
        return [json.loads(x) for x in r.stdout.splitlines()]

    grpc = [d for d in run("--port", f"{PORT}=grpc") if d["protocol"] == "grpc"]
    assert len(grpc) == len(original)
    assert {d["connection"]["recognised_by"] for d in grpc} == {"forced"}
    forced = run("--port", f"{PORT}=remoting")
    assert not [d for d in forced if d["protocol"] == "grpc"]
    bad = subprocess.run([sys.executable, "-m", "rmqsniff", "read", str(path), "--port", f"{PORT}=mqtt"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "not a protocol" in bad.stderr
