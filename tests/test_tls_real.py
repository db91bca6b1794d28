"""Real RocketMQ traffic over TLS, recorded with the clients' own key logs, against the clients'
ground truth.

The captures (``captures/grpc_java_tls``, ``remoting_tls13``, ``remoting_tls12``) come from the
real Java clients with the ``extract-tls-secrets`` agent writing ``NAME.keys`` (see
``captures/README.md``). Two independent readers check them:

* Wireshark (tshark): the key log decrypts every connection the client opened (both Finished
  messages), with the version and ALPN the scenario asks for, and the plaintext carries the
  truth (gRPC message ids; remoting frames with the sent ids, queues and offsets). Without the
  key log nothing decrypts.
* rmqsniff (``read --tls-keylog``): the decode equals the truth and every exchange is marked
  ``tls``; without the key log each connection is ``no key`` and nothing is decoded. These skip
  until rmqsniff reads key logs (``read --tls-keylog``).

Live tests (marker ``rocketmq``) make the captures afresh and run the same checks.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.captures import CAPTURES
from tests.support.tls_tshark import TlsConnection, key_ids, plaintext, tls_connections, tshark
from tests.support.truth_rows import (
    grpc_call_problems,
    remoting_message_problems,
    rmqsniff,
    supports_tls_keylog,
)

MAX_CAPTURE = 2 * 1024 * 1024
TLS_SCENARIOS = ["grpc_java_tls", "remoting_tls13", "remoting_tls12"]
WANT_VERSION = {"grpc_java_tls": "TLS 1.3", "remoting_tls13": "TLS 1.3", "remoting_tls12": "TLS 1.2"}
SEND_V2, SEND_BATCH = 310, 320

needs_tshark = pytest.mark.skipif(tshark() is None, reason="tshark not found (the independent TLS reader)")
_TLS_READER: list[bool] = []


def needs_rmqsniff_tls() -> None:
    if not _TLS_READER:
        _TLS_READER.append(supports_tls_keylog())
    if not _TLS_READER[0]:
        pytest.skip("rmqsniff does not read TLS key logs yet (read --tls-keylog)")


def committed() -> list[str]:
    return [n for n in TLS_SCENARIOS if (CAPTURES / f"{n}.truth.json").exists()]


def load(folder: Path, name: str) -> tuple[Path, dict, Path]:
    return folder / f"{name}.pcap", json.loads((folder / f"{name}.truth.json").read_text()), folder / f"{name}.keys"


def client_connections(pcap: Path, keylog: Path) -> list[TlsConnection]:
    """The TLS connections whose secrets the client's key log holds (tshark's view)."""
    conns = tls_connections(pcap, keylog)
    ids = key_ids(keylog)
    return [c for c in conns.values() if c.key_id(ids) in ids]


# ------------------------------------------------------------------ checks shared by committed and live tests

def tshark_problems(pcap: Path, truth: dict, keylog: Path) -> list[str]:
    """Wireshark decrypts every connection the client opened, as the scenario says, and nothing
    without the key log."""
    p: list[str] = []
    name = truth["scenario"]
    conns = tls_connections(pcap, keylog)
    ids = key_ids(keylog)
    seen = {c.key_id(ids) for c in conns.values()}
    if ids != seen:
        p.append(f"key log sessions {sorted(ids)[:2]}... != the capture's {sorted(seen)[:2]}...")
    for c in conns.values():
        if not c.decrypted:
            p.append(f"stream {c.stream} (port {c.client_port}) not decrypted: {c}")
        if c.version != WANT_VERSION[name]:
            p.append(f"stream {c.stream}: {c.version} != {WANT_VERSION[name]}")
        if truth["protocol"] == "grpc" and c.alpn != "h2":
            p.append(f"stream {c.stream}: ALPN {c.alpn!r} != 'h2'")
        if c.app_records == 0:
            p.append(f"stream {c.stream}: no application data")
    if any(c.decrypted for c in tls_connections(pcap, None).values()):
        p.append("decrypted without a key log")
    return p


def tshark_plaintext_problems(pcap: Path, truth: dict, keylog: Path) -> list[str]:
    """The plaintext Wireshark gets carries what the client says it did."""
    conns = tls_connections(pcap, keylog)
    data = plaintext(pcap, keylog, conns)
    if truth["protocol"] == "grpc":
        return _grpc_plaintext_problems(data, truth)
    return _remoting_plaintext_problems(data, truth)


def _grpc_plaintext_problems(data: dict[int, tuple[bytes, bytes]], truth: dict) -> list[str]:
    p: list[str] = []
    client = b"".join(c for c, _ in data.values())
    server = b"".join(s for _, s in data.values())
    if not all(c.startswith(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n") for c, _ in data.values()):
        p.append("a decrypted connection does not start with the HTTP/2 preface")
    missing = [s["msg_id"] for s in truth["sent"] if s["msg_id"].encode() not in client]
    if missing:
        p.append(f"sent ids not in the decrypted requests: {missing[:3]}")
    rx = [r["msg_id"] for b in truth["received"].values() for r in b if r["msg_id"].encode() not in server]
    if rx:
        p.append(f"received ids not in the decrypted responses: {rx[:3]}")
    return p


def _remoting_plaintext_problems(data: dict[int, tuple[bytes, bytes]], truth: dict) -> list[str]:
    """Split each decrypted stream into remoting frames (the project's frame decoder) and find
    every answered send: its UNIQ_KEY in the request, its queue, offset and msg id in the answer."""
    from dissectors.remoting.frame import decode_frame
    from dissectors.remoting.message import parse_properties
    from tests.support.tcp_streams import frames

    p: list[str] = []
    sends: dict[str, tuple] = {}
    batches = 0
    for client, server in data.values():
        answers = {cmd.opaque: cmd for cmd in map(decode_frame, frames(server))}
        for cmd in map(decode_frame, frames(client)):
            ext = cmd.ext or {}
            if cmd.code == SEND_BATCH and ext.get("topic", ext.get("b")) == truth["topic"]:
                batches += 1
            if cmd.code != SEND_V2 or ext.get("b") != truth["topic"]:
                continue
            uniq = parse_properties(ext.get("i", ""))["UNIQ_KEY"]
            a = answers.get(cmd.opaque)
            ax = (a.ext or {}) if a is not None else {}
            sends[uniq] = (ax.get("msgId"), ax.get("queueId"), ax.get("queueOffset"))
    singles = [s for s in truth["sent"] if s["kind"] != "batch"]
    if set(sends) != {s["msg_id"] for s in singles}:
        p.append(f"decrypted SEND_MESSAGE_V2 ids != truth: {sorted(set(sends) ^ {s['msg_id'] for s in singles})[:3]}")
    for s in singles:
        if "offset_msg_id" in s and s["msg_id"] in sends:
            want = (s["offset_msg_id"], str(s["queue_id"]), str(s["queue_offset"]))
            if sends[s["msg_id"]] != want:
                p.append(f"send {s['msg_id']}: answer {sends[s['msg_id']]} != {want}")
    if batches != truth["counts"].get("batch", 0):
        p.append(f"{batches} SEND_BATCH_MESSAGE != {truth['counts'].get('batch', 0)}")
    return p


def rmqsniff_problems(pcap: Path, truth: dict, keylog: Path) -> list[str]:
    """rmqsniff with the client's key log: the decode equals the truth, TLS-marked; without it:
    every TLS connection ``no key`` (with its client random) and none of their exchanges decoded."""
    p: list[str] = []
    conns = client_connections(pcap, keylog)
    ports = {c.client_port for c in conns}
    want_tls = {"version": WANT_VERSION[truth["scenario"]], "cipher": conns[0].cipher}
    rows, _ = rmqsniff("read", str(pcap), "--tls-keylog", str(keylog), "--format", "jsonl")
    on_tls = [r for r in rows if int(r["connection"]["client"].rsplit(":", 1)[1]) in ports]
    if not on_tls:
        p.append("no exchange decoded from the TLS connections")
    for r in on_tls:
        tls = r.get("tls") or {}
        if {k: tls.get(k) for k in want_tls} != want_tls:
            p.append(f"exchange {r['index']}: tls {tls} != {want_tls}")
            break
    if any("tls" in r for r in rows if r not in on_tls):
        p.append("a plaintext exchange is marked tls")
    if truth["protocol"] == "grpc":
        p += grpc_call_problems(rows, truth)
    else:
        msgs, _ = rmqsniff("read", str(pcap), "--tls-keylog", str(keylog), "--messages", "--format", "jsonl")
        p += remoting_message_problems(msgs, truth)
    # the same from SSLKEYLOGFILE, and from the servers' side of the sessions (remoting)
    env_rows, _ = rmqsniff("read", str(pcap), "--format", "jsonl", env={"SSLKEYLOGFILE": str(keylog)})
    if len(env_rows) != len(rows):
        p.append(f"SSLKEYLOGFILE: {len(env_rows)} exchanges != --tls-keylog {len(rows)}")
    server_keys = keylog.with_name(truth["tls_capture"].get("server_keylog", "-"))
    if server_keys.is_file():
        srv_rows, _ = rmqsniff("read", str(pcap), "--tls-keylog", str(server_keys), "--format", "jsonl")
        if len(srv_rows) != len(rows):
            p.append(f"servers' key log: {len(srv_rows)} exchanges != client's {len(rows)}")
    # without the key log: reported, never decoded
    bare, err = rmqsniff("read", str(pcap), "--format", "jsonl")
    decoded = [r["index"] for r in bare if int(r["connection"]["client"].rsplit(":", 1)[1]) in ports]
    if decoded:
        p.append(f"exchanges decoded from TLS connections without a key log: {decoded[:5]}")
    for c in conns:
        if not re.search(rf"no key \(client random {c.client_random}\)", err, re.I):
            p.append(f"no 'no key (client random {c.client_random[:16]}...)' line on stderr")
    return p


def partial_keylog_problems(pcap: Path, keylog: Path, tmp: Path) -> list[str]:
    """A key log lacking one session: exactly that connection is ``no key``, the others decrypt."""
    conns = client_connections(pcap, keylog)
    dropped, key = conns[-1].client_random, conns[-1].key_id(key_ids(keylog))
    partial = tmp / "partial.keys"
    partial.write_text("".join(ln + "\n" for ln in keylog.read_text().splitlines()
                               if key not in ln.lower()) + "garbage line\nCLIENT_RANDOM zz\n")
    _, err = rmqsniff("read", str(pcap), "--tls-keylog", str(partial), "--format", "jsonl")
    reported = {m.lower() for m in re.findall(r"no key \(client random ([0-9a-fA-F]{64})\)", err)}
    return [] if reported == {dropped} else [f"no key for {sorted(reported)} != only {dropped}"]


# ------------------------------------------------------------------ committed captures (no cluster)

@pytest.mark.parametrize("name", committed())
def test_committed_tls_capture_is_small_and_has_its_key_log(name):
    pcap, truth, keylog = load(CAPTURES, name)
    assert 0 < pcap.stat().st_size <= MAX_CAPTURE
    assert truth["tls_capture"]["keylog"] == keylog.name
    assert key_ids(keylog) == {r.lower() for r in truth["tls_capture"]["sessions"]}
    if truth["protocol"] == "grpc":
        assert truth["tls"] is True  # the Java client's own record: TLS on (its default)


@needs_tshark
@pytest.mark.parametrize("name", committed())
def test_committed_tls_capture_decrypts_in_wireshark(name):
    pcap, truth, keylog = load(CAPTURES, name)
    assert tshark_problems(pcap, truth, keylog) == []


@needs_tshark
@pytest.mark.parametrize("name", committed())
def test_committed_tls_plaintext_carries_the_truth(name):
    pcap, truth, keylog = load(CAPTURES, name)
    assert tshark_plaintext_problems(pcap, truth, keylog) == []


@needs_tshark
def test_committed_pcapng_with_decryption_secrets_block_decrypts_without_key_log():
    """``editcap --inject-secrets`` output: the secrets travel inside the file."""
    dsb = CAPTURES / "remoting_tls13.dsb.pcapng"
    if not dsb.exists():
        pytest.skip("no pcapng with a Decryption Secrets Block committed")
    pcap, truth, keylog = load(CAPTURES, "remoting_tls13")
    conns = tls_connections(dsb, None)
    assert conns and all(c.decrypted for c in conns.values())
    ids = key_ids(keylog)
    assert {c.key_id(ids) for c in conns.values()} == ids


@needs_tshark
@pytest.mark.parametrize("name", committed())
def test_committed_tls_capture_without_key_log_is_never_misdecoded(name):
    """Holds before and after rmqsniff reads key logs: no exchange comes out of a TLS connection
    it has no secrets for, and stderr says TLS (per-connection ``no key`` lines are checked by
    the rmqsniff tests below)."""
    pcap, _, keylog = load(CAPTURES, name)
    ports = {c.client_port for c in client_connections(pcap, keylog)}
    rows, err = rmqsniff("read", str(pcap), "--format", "jsonl")
    assert [r["index"] for r in rows if int(r["connection"]["client"].rsplit(":", 1)[1]) in ports] == []
    assert "TLS" in err or "no key" in err


@pytest.mark.parametrize("name", committed())
def test_committed_tls_capture_decodes_to_the_truth_with_rmqsniff(name, tmp_path):
    needs_rmqsniff_tls()
    pcap, truth, keylog = load(CAPTURES, name)
    assert rmqsniff_problems(pcap, truth, keylog) == []


@pytest.mark.parametrize("name", committed())
def test_committed_tls_capture_partial_key_log_reports_exactly_the_missing_session(name, tmp_path):
    needs_rmqsniff_tls()
    pcap, _, keylog = load(CAPTURES, name)
    assert partial_keylog_problems(pcap, keylog, tmp_path) == []


def test_committed_pcapng_secrets_block_read_by_rmqsniff():
    needs_rmqsniff_tls()
    dsb = CAPTURES / "remoting_tls13.dsb.pcapng"
    if not dsb.exists():
        pytest.skip("no pcapng with a Decryption Secrets Block committed")
    _, truth, _ = load(CAPTURES, "remoting_tls13")
    msgs, _ = rmqsniff("read", str(dsb), "--messages", "--format", "jsonl")
    assert remoting_message_problems(msgs, truth) == []


def test_truth_checks_are_not_vacuous():
    """The JSON checks catch a wrong fact on the plaintext twins of the TLS scenarios."""
    for name, check, args in (("remoting_json", remoting_message_problems, ("--messages",)),
                              ("grpc_java", grpc_call_problems, ())):
        if not (CAPTURES / f"{name}.pcap").exists():
            continue
        pcap, truth, _ = load(CAPTURES, name)
        rows, _ = rmqsniff("read", str(pcap), *args, "--format", "jsonl")
        assert check(rows, truth) == []
        truth["sent"][0]["msg_id"] = "0" * 32
        assert check(rows, truth) != []


# ------------------------------------------------------------------ live, against the real cluster

def _live(name: str, capture) -> tuple[Path, dict, Path]:
    if shutil.which("tshark") is None:
        from tests.support.prerequisites import unavailable

        unavailable("`tshark` not found on PATH (checks the key logs independently)")
    pcap, truth = capture(name)
    return pcap, truth, pcap.with_suffix(".keys")


@pytest.mark.rocketmq
@pytest.mark.timeout(900)
def test_grpc_java_default_tls_capture_decrypts_to_truth(rocketmq_capture, tmp_path):
    pcap, truth, keylog = _live("grpc_java_tls", rocketmq_capture)
    _check_live(pcap, truth, keylog, tmp_path)


@pytest.mark.rocketmq
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("name", ["remoting_tls13", "remoting_tls12"])
def test_remoting_tls_capture_decrypts_to_truth(rocketmq_tls_capture, name, tmp_path):
    pcap, truth, keylog = _live(name, rocketmq_tls_capture)
    _check_live(pcap, truth, keylog, tmp_path)
    assert (keylog.stat().st_mode & 0o777) == 0o600
    server_keys = pcap.with_suffix(".server.keys")
    assert (server_keys.stat().st_mode & 0o777) == 0o600


def _check_live(pcap: Path, truth: dict, keylog: Path, tmp_path: Path) -> None:
    assert 0 < pcap.stat().st_size <= MAX_CAPTURE
    assert truth["sent"] and truth["received"], "client recorded no traffic"
    assert tshark_problems(pcap, truth, keylog) == []
    assert tshark_plaintext_problems(pcap, truth, keylog) == []
    if supports_tls_keylog():
        assert rmqsniff_problems(pcap, truth, keylog) == []


def test_editcap_injects_secrets_into_pcapng(tmp_path):
    """The recipe captures/README.md gives for a self-contained capture works on ours."""
    if shutil.which("editcap") is None or tshark() is None or not committed():
        pytest.skip("editcap/tshark or a committed TLS capture missing")
    pcap, _, keylog = load(CAPTURES, committed()[0])
    out = tmp_path / "with-secrets.pcapng"
    subprocess.run(["editcap", "--inject-secrets", f"tls,{keylog}", str(pcap), str(out)], check=True,
                   capture_output=True)
    conns = tls_connections(out, None)
    assert conns and all(c.decrypted for c in conns.values())


@pytest.mark.rocketmq
@pytest.mark.timeout(900)
def test_agent_sees_nothing_of_the_grpc_clients_default_engine(rocketmq_cluster, tmp_path):
    """Why the gRPC TLS scenario switches the client's bundled tcnative off: left on (its default
    engine, BoringSSL), the agent logs no secret although the client does its whole job over TLS.
    (The remoting client needs no switch: it always builds its context on the JDK engine.)"""
    from tests.rocketmq import tls
    from tests.support.java_clients import run_java

    keys = tmp_path / "tcnative.keys"
    truth = tmp_path / "truth.json"
    c = rocketmq_cluster
    run_java(c, "clients/tcnative-grpc", c.grpc_addr, str(truth), grpc=True,
             jvm=("-Drmqsniff.tls=true", tls.agent(keys)))
    t = json.loads(truth.read_text())
    assert t["tls"] is True and t["sent"]
    assert keys.exists() and keys.stat().st_size == 0
