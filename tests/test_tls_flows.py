"""TLS under either protocol in the flow table: real OpenSSL TLS (Python ``ssl``, real key
logs) carrying remoting and gRPC traffic, written as captures and read by the pipeline.
What decrypts must equal the same traffic read in plaintext; what cannot is reported."""
from __future__ import annotations

import random
import ssl
from pathlib import Path
from typing import Any

import pytest

from dissectors.remoting.frame import encode
from rmqsniff.capwriter import CaptureWriter, TcpSession
from rmqsniff.exporters.exchanges import exchange_to_dict
from rmqsniff.pipeline import Pipeline, analyze
from rmqsniff.protocols.tls import TlsKeys
from rmqsniff.synth import conversation
from tests.support.grpc_wire import producer_session
from tests.support.tlspair import contexts, make_cert, tls_talk

Chunks = list[tuple[bool, bytes]]


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    return make_cert(tmp_path_factory.mktemp("cert"))


def remoting_chunks(n: int = 30, kind: str = "producer") -> Chunks:
    out: Chunks = []
    for t in conversation(random.Random(7), n, kind):
        out.append((True, encode(t.request)))
        if t.response is not None:
            out.append((False, encode(t.response)))
    return out


def grpc_chunks() -> Chunks:
    w, _ = producer_session(6)
    return [(fc, d) for fc, d, _ in w.chunks]


def write(path: Path, sessions: list[tuple[int, Chunks]], fmt: str = "pcap", secrets: str = "") -> None:
    """Each (server port, wire) as one TCP connection from 10.0.0.<i>."""
    with open(path, "wb") as f:
        w = CaptureWriter(f, fmt)
        if secrets:
            w.secrets(secrets)
        ts = 1_700_000_000.0
        for i, (port, wire) in enumerate(sessions):
            s = TcpSession(w, (f"10.0.0.{i + 1}", 40000 + i), ("10.0.9.9", port), mss=1400)
            s.handshake(ts)
            for fc, data in wire:
                ts += 0.001
                s.send(ts, fc, data)
            s.close(ts)
        w.close()


def _untimed(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _untimed(x) for k, x in v.items() if k != "ts"}
    if isinstance(v, list):
        return [_untimed(x) for x in v]
    return v


def comparable(exchanges: list[Any]) -> list[dict[str, Any]]:
    """The exchanges' JSON but for connections, TLS, indexes and times (the TLS capture's differ)."""
    out = []
    for ex in exchanges:
        d = exchange_to_dict(ex)
        for k in ("connection", "tls", "latency_ms", "index"):
            d.pop(k, None)
        out.append(_untimed(d))
    return out


def talk(cert: tuple[str, str], keys: Path, chunks: Chunks, **kw: Any) -> Chunks:
    c, s = contexts(cert, keys, **kw)
    wire, _ = tls_talk(c, s, chunks)
    return wire


@pytest.mark.parametrize("port,kw", [
    (10911, {"version": ssl.TLSVersion.TLSv1_3}),
    (10911, {"version": ssl.TLSVersion.TLSv1_2, "ciphers": "ECDHE-ECDSA-CHACHA20-POLY1305"}),
    (24567, {"version": ssl.TLSVersion.TLSv1_2, "ciphers": "ECDHE-ECDSA-AES256-GCM-SHA384"}),  # any port
])
def test_remoting_over_tls_equals_plaintext(tmp_path: Path, cert: tuple[str, str], port: int,
                                            kw: dict[str, Any]) -> None:
    chunks = remoting_chunks()
    keys = tmp_path / "keys.log"
    write(tmp_path / "plain.pcap", [(port, chunks)])
    write(tmp_path / "tls.pcap", [(port, talk(cert, keys, chunks, **kw))])
    plain = analyze([str(tmp_path / "plain.pcap")], ports=[port])
    tls = analyze([str(tmp_path / "tls.pcap")], tls_keys=TlsKeys.from_options([str(keys)], env={}))
    assert plain.exchanges and comparable(tls.exchanges) == comparable(plain.exchanges)
    ex = exchange_to_dict(tls.exchanges[0])
    version = "TLS 1.3" if kw["version"] == ssl.TLSVersion.TLSv1_3 else "TLS 1.2"
    assert ex["tls"]["version"] == version and ex["tls"]["cipher"].startswith("TLS_")
    assert ex["connection"]["tls"]["status"] == "decrypted"
    assert "tls" not in exchange_to_dict(plain.exchanges[0])
    assert tls.stats.snapshot()["transport"]["tls_decrypted"] == 1
    assert not tls.errors


@pytest.mark.parametrize("port", [8081, 28443])  # the gRPC port, and any port: ALPN h2 says gRPC
def test_grpc_over_tls_equals_plaintext(tmp_path: Path, cert: tuple[str, str], port: int) -> None:
    chunks = grpc_chunks()
    keys = tmp_path / "keys.log"
    write(tmp_path / "plain.pcap", [(port, chunks)])
    write(tmp_path / "tls.pcap", [(port, talk(cert, keys, chunks, alpn=["h2"]))])
    plain = analyze([str(tmp_path / "plain.pcap")], ports=[(port, "grpc")])
    tls = analyze([str(tmp_path / "tls.pcap")], tls_keys=TlsKeys.from_options([str(keys)], env={}))
    assert len(plain.exchanges) >= 8 and comparable(tls.exchanges) == comparable(plain.exchanges)
    conn = tls.exchanges[0].connection
    assert conn.tls is not None and conn.tls["alpn"] == "h2" and conn.tls["sni"] == "rmqsniff.test"


def test_missing_sessions_are_no_key(tmp_path: Path, cert: tuple[str, str]) -> None:
    """Three connections, the key log has lines for one: the other two are reported as
    ``no key`` with their client randoms, counted, and nothing is decoded from them."""
    logs = [tmp_path / f"keys{i}.log" for i in range(3)]
    wires = [talk(cert, logs[i], remoting_chunks(10)) for i in range(3)]
    write(tmp_path / "tls.pcap", [(10911, w) for w in wires])
    res = analyze([str(tmp_path / "tls.pcap")], tls_keys=TlsKeys.from_options([str(logs[1])], env={}))
    conns = {ex.connection.id for ex in res.exchanges}
    assert len(conns) == 1 and len(res.exchanges) == len(remoting_chunks(10)) // 2
    no_key = [e for e in res.errors if "TLS no key (client random " in e]
    assert len(no_key) == 2
    missing = {ln.split()[1] for log in (logs[0], logs[2]) for ln in log.read_text().splitlines()
               if ln.startswith("CLIENT_TRAFFIC_SECRET_0")}
    assert {e.split("client random ")[1].rstrip(")") for e in no_key} == missing
    t = res.stats.snapshot()["transport"]
    assert t["tls_no_key"] == 2 and t["tls_decrypted"] == 1


def test_no_keylog_at_all(tmp_path: Path, cert: tuple[str, str]) -> None:
    write(tmp_path / "tls.pcap", [(8081, talk(cert, tmp_path / "k.log", grpc_chunks(), alpn=["h2"]))])
    res = analyze([str(tmp_path / "tls.pcap")])
    assert res.exchanges == [] and any("TLS no key" in e for e in res.errors)
    assert not any("grpc:" in e for e in res.errors)  # never mis-decoded


def test_decryption_secrets_block(tmp_path: Path, cert: tuple[str, str]) -> None:
    """A pcapng whose Decryption Secrets Block holds the key log decrypts with no other keys."""
    keys = tmp_path / "keys.log"
    wire = talk(cert, keys, remoting_chunks())
    write(tmp_path / "tls.pcapng", [(10911, wire)], fmt="pcapng", secrets=keys.read_text())
    res = analyze([str(tmp_path / "tls.pcapng")])
    assert len(res.exchanges) == len(remoting_chunks()) // 2 and not res.errors


def test_sslkeylogfile_env_and_garbage(tmp_path: Path, cert: tuple[str, str]) -> None:
    keys = tmp_path / "keys.log"
    wire = talk(cert, keys, remoting_chunks())
    keys.write_text("garbage line\n" + keys.read_text() + "CLIENT_RANDOM nothex\n")
    write(tmp_path / "tls.pcap", [(10911, wire)])
    p = Pipeline(tls_keys=TlsKeys.from_options([], env={"SSLKEYLOGFILE": str(keys)}))
    assert len(list(p.run([str(tmp_path / "tls.pcap")]))) == len(remoting_chunks()) // 2
    assert [e for e in p.errors if e.startswith("TLS key log: 2 line(s) not used")]


def test_export_tracks_tls_packets(tmp_path: Path, cert: tuple[str, str]) -> None:
    """With packet tracking, exchanges decoded from TLS name the packets of their records."""
    keys = tmp_path / "keys.log"
    write(tmp_path / "tls.pcap", [(10911, talk(cert, keys, remoting_chunks()))])
    res = analyze([str(tmp_path / "tls.pcap")], tls_keys=TlsKeys.from_options([str(keys)], env={}),
                  track_packets=True)
    assert res.exchanges
    for ex in res.exchanges:
        assert ex.request is not None and ex.request.packets
    assert res.exchanges[0].connection.setup_packets  # the handshake's packets


def test_cli_read_stats_follow_with_keylog(tmp_path: Path, cert: tuple[str, str]) -> None:
    """``read``, ``stats`` and ``follow`` with ``--tls-keylog``: the JSON marks TLS exchanges,
    the stats count the statuses, the connection without a key is one stderr line."""
    import orjson
    from click.testing import CliRunner

    from rmqsniff.cli import main

    k1, k2 = tmp_path / "k1.log", tmp_path / "k2.log"
    write(tmp_path / "tls.pcap", [(10911, talk(cert, k1, remoting_chunks(10))),
                                  (10911, talk(cert, k2, remoting_chunks(10)))])
    cap = str(tmp_path / "tls.pcap")
    r = CliRunner().invoke(main, ["read", cap, "--format", "jsonl", "--tls-keylog", str(k1)])
    assert r.exit_code == 0
    rows = [orjson.loads(x) for x in r.stdout.splitlines()]
    assert rows and all(x["tls"]["version"] == "TLS 1.3" for x in rows)
    assert rows[0]["connection"]["tls"]["status"] == "decrypted"
    no_key = [x for x in r.stderr.splitlines() if "TLS no key (client random " in x]
    assert len(no_key) == 1 and "10.0.0.2:40001 -> 10.0.9.9:10911" in no_key[0]
    r = CliRunner().invoke(main, ["read", cap, "--tls-keylog", str(k1)])
    assert r.stdout.count("🔒") == len(rows)
    r = CliRunner().invoke(main, ["stats", cap, "--format", "json", "--tls-keylog", str(k1), "--tls-keylog", str(k2)])
    doc = orjson.loads(r.stdout)
    assert doc["transport"]["tls_decrypted"] == 2 and "tls_no_key" not in doc["transport"]
    r = CliRunner().invoke(main, ["follow", cap, "1", "--format", "json", "--tls-keylog", str(k2)])
    assert orjson.loads(r.stdout)["connection"]["tls"]["cipher"] == "TLS_AES_256_GCM_SHA384"
    r = CliRunner().invoke(main, ["follow", cap, "1", "--tls-keylog", str(k2)])
    assert "TLS: decrypted, TLS 1.3, TLS_AES_256_GCM_SHA384, sni rmqsniff.test" in r.stdout
    for line in k1.read_text().splitlines()[1:]:  # never a secret in any output
        assert line.split()[2] not in r.stdout + r.stderr


def test_stats_only_lane_counts_as_plaintext(tmp_path: Path, cert: tuple[str, str]) -> None:
    """``stats`` (the stats-only lane through the TLS layer) counts TLS traffic exactly as the
    same traffic in plaintext."""
    chunks = remoting_chunks(60) + remoting_chunks(40, "consumer")
    keys = tmp_path / "keys.log"
    write(tmp_path / "plain.pcap", [(10911, chunks)])
    write(tmp_path / "tls.pcap", [(10911, talk(cert, keys, chunks))])
    snaps = []
    for cap, logs in (("plain.pcap", []), ("tls.pcap", [str(keys)])):
        p = Pipeline(ordered=False, tls_keys=TlsKeys.from_options(logs, env={}))
        p.consume([str(tmp_path / cap)])
        assert not p.errors
        snap = p.stats.snapshot()
        rows = snap["breakdowns"]["by_topic"]["rows"]  # (latencies differ: the captures' times do)
        snaps.append((snap["counters"], {k: (r["requests"], r["bytes"]) for k, r in rows.items()}))
    assert snaps[0] == snaps[1] and snaps[0][0]["request"] == 100


def test_export_pcapng_with_secrets(tmp_path: Path, cert: tuple[str, str]) -> None:
    """``export --format pcapng --with-secrets``: the file (0600) carries the exported TLS
    connection's key log lines and every packet up to the selected exchanges, so it reads
    back decrypted with no key log at all (and tshark decrypts it too, when installed)."""
    import shutil
    import subprocess

    from click.testing import CliRunner

    from rmqsniff.cli import main

    keys, other = tmp_path / "keys.log", tmp_path / "other.log"
    write(tmp_path / "tls.pcap", [(10911, talk(cert, keys, remoting_chunks(20))),
                                  (10911, talk(cert, other, remoting_chunks(20)))])
    out = tmp_path / "out.pcapng"
    r = CliRunner().invoke(main, ["export", str(tmp_path / "tls.pcap"), "-Y", "conn == 0", "--format",
                                  "pcapng", "-o", str(out), "--with-secrets", "--tls-keylog", str(keys),
                                  "--tls-keylog", str(other)])
    assert r.exit_code == 0, r.output
    assert out.stat().st_mode & 0o777 == 0o600
    back = analyze([str(out)])
    assert not back.errors and {(ex.connection.tls or {}).get("status") for ex in back.exchanges} == {"decrypted"}
    assert len(back.exchanges) == 20 and {ex.connection.client for ex in back.exchanges} == {("10.0.0.1", 40000)}
    data = out.read_bytes()
    mine = [ln for ln in keys.read_text().splitlines() if not ln.startswith("#")]
    assert all(ln.split()[2].encode() in data for ln in mine)
    assert not any(ln.split()[2].encode() in data for ln in other.read_text().splitlines() if " " in ln)
    if shutil.which("tshark"):
        t = subprocess.run(["tshark", "-r", str(out), "-o", "tcp.desegment_tcp_streams:TRUE", "-V"],
                           capture_output=True, text=True, timeout=60)
        assert "7b22636f6465223a" in t.stdout  # '{"code":' of a remoting JSON header: decrypted


CAPTURES = Path(__file__).resolve().parent.parent / "captures"


def test_committed_real_tls_capture(tmp_path: Path) -> None:
    """``captures/tls/grpc_python.pcap`` (real proxy, tests/test_tls_real.py) with its key log:
    every call equal to the client's truth; without one session's lines, exactly that one is
    ``no key``."""
    import json

    import orjson
    from click.testing import CliRunner

    from rmqsniff.cli import main
    from tests.support.tlspair import check_grpc_truth

    pcap, keys = CAPTURES / "tls" / "grpc_python.pcap", CAPTURES / "tls" / "grpc_python.keys"
    if not pcap.exists():
        pytest.skip("captures/tls/grpc_python.pcap not made yet")
    truth = json.loads((CAPTURES / "tls" / "grpc_python.truth.json").read_text())["sessions"]
    r = CliRunner().invoke(main, ["read", str(pcap), "--format", "jsonl", "--tls-keylog", str(keys)])
    check_grpc_truth([orjson.loads(x) for x in r.stdout.splitlines()], truth)
    left_out = truth[1]["client_random"]
    partial = tmp_path / "partial.keys"
    partial.write_text("".join(ln + "\n" for ln in keys.read_text().splitlines() if left_out not in ln))
    r = CliRunner().invoke(main, ["read", str(pcap), "--format", "jsonl", "--tls-keylog", str(partial)])
    no_key = [ln for ln in r.stderr.splitlines() if "TLS no key" in ln]
    assert len(no_key) == 1 and no_key[0].endswith(f"(client random {left_out})")
    assert len(r.stdout.splitlines()) == sum(len(t["calls"]) for t in truth) - len(truth[1]["calls"])


def test_replay_dry_run_plans_decrypted_sessions(tmp_path: Path, cert: tuple[str, str]) -> None:
    """``replay --tls-keylog``: the sessions of a TLS capture are planned like plaintext ones."""
    from click.testing import CliRunner

    from rmqsniff.cli import main

    keys = tmp_path / "k.log"
    write(tmp_path / "t.pcap", [(10911, talk(cert, keys, remoting_chunks(10)))])
    args = ["replay", str(tmp_path / "t.pcap"), "--target", "127.0.0.1:9876", "--allow-target", "127.0.0.1",
            "--dry-run"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 1 and "TLS no key" in r.output
    r = CliRunner().invoke(main, [*args, "--tls-keylog", str(keys)])
    assert r.exit_code == 0 and "session 0 10.0.0.1:40000 -> 10.0.9.9:10911 [broker] 10 request(s)" in r.output
