"""No secret of a real secret-laden capture reaches any output unless ``--no-redact`` asks.

The captures (``captures/secrets_*.pcap``, see captures/README.md) were recorded from the real
Java clients signing with made-up, distinctive credentials (``tests.rocketmq.scenarios``):
remoting with ``AclClientRPCHook`` (extFields AccessKey, Signature, SecurityToken; JSON and
ROCKETMQ binary headers) and gRPC with a credentials provider (``authorization`` on every
call, a fresh ``x-mq-session-token`` per call).  ``derived/secrets_grpc_cut`` is the gRPC one
with the first 30% of every gRPC connection dropped (:func:`cut_connection_starts`), so HPACK
references to header names sent before the cut decode as ``<unknown>``.  Every output is
checked twice: redacted (no secret byte string in it) and with ``--no-redact`` (the secrets
are there, so the check can fail).
"""
from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from dissectors.grpc.hpack_decoder import UNKNOWN, huffman_decode, huffman_encode
from replay.engine.diff import DiffRules
from replay.report import Report
from rmqsniff.cli import main
from rmqsniff.cliutil import parse_ports
from rmqsniff.exporters import export as ex_mod
from rmqsniff.pipeline import analyze
from rmqsniff.protocols import protocol_of
from rmqsniff.protocols.grpc.secrets import masked_huffman
from rmqsniff.sources.wire import WireReader
from rmqsniff.tui.detail import exchange_tree, frame_bytes
from tests.rocketmq.scenarios import SECRET_ACCESS_KEY, SECRET_SECURITY_TOKEN
from tests.support.captures import CAPTURES, cut_connection_starts

NAMES = ("secrets_remoting", "secrets_remoting_bin", "secrets_grpc", "secrets_grpc_cut")
GRPC_PORT = 21081  # the harness's cluster ran on these ports (see the truth files)
PORT = ("--port", f"{GRPC_PORT}=grpc")  # the cut gRPC connections start without a preface


def cap(name: str) -> str:
    p = CAPTURES / ("derived" if name.endswith("_cut") else "") / f"{name}.pcap"
    if not p.exists():
        pytest.skip(f"{p.name} not committed")
    return str(p)


def _walk(node):
    yield node
    for c in node.children:
        yield from _walk(c)


def decode(path: str, **kw):
    return analyze([path], ports=parse_ports([PORT[1]]), **kw).exchanges


def secrets_in(path: str) -> set[str]:
    """The secret values the capture carries, read from its decode with redaction off:
    AccessKey, the security token (each call's), every Signature."""
    found = {SECRET_ACCESS_KEY, SECRET_SECURITY_TOKEN}
    for ex in decode(path):
        for side in protocol_of(ex).sides(ex, False):
            for k, v in ((side or {}).get("ext") or {}).items():
                if k in ("Signature", "SecurityToken"):
                    found.add(v)
            for k, v in (side or {}).get("headers") or ():
                found.update(re.findall(r"Signature=([0-9A-Fa-f]+)", v))
                if k in ("x-mq-session-token", UNKNOWN) and v.startswith(SECRET_SECURITY_TOKEN):
                    found.add(v)
    return found


def leaks(text: str | bytes, secrets: set[str]) -> set[str]:
    data = text.encode() if isinstance(text, str) else text
    return {s for s in secrets if s.encode() in data}


def run(*args: str) -> str:
    res = CliRunner().invoke(main, [*args, *PORT], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.output


OUTPUTS = {
    "read table": ("read",),
    "read jsonl": ("read", "--format", "jsonl"),
    "read messages": ("read", "--messages"),
    "read messages jsonl": ("read", "--messages", "--format", "jsonl"),
    "follow #0": ("follow", "TARGET"),
    "follow json": ("follow", "TARGET", "--format", "json"),
}


def _follow_targets(path: str) -> list[str]:
    """Every connection that carried a secret (follow shows one connection)."""
    ids = sorted({ex.connection.id for ex in decode(path)
                  if any(protocol_of(ex).wire_secrets(m) for m in (ex.request, ex.response) if m)})
    return [str(i) for i in ids]


@pytest.mark.parametrize("name", NAMES)
def test_the_capture_really_carries_secrets(name):
    path = cap(name)
    secrets = secrets_in(path)
    assert len(secrets) > 5  # the access key, the token and signatures
    raw = Path(path).read_bytes()
    assert SECRET_ACCESS_KEY.encode() in raw


@pytest.mark.parametrize("name", NAMES)
def test_no_secret_in_read_and_follow_unless_no_redact(name):
    path = cap(name)
    secrets = secrets_in(path)
    targets = _follow_targets(path)
    assert targets
    for what, args in OUTPUTS.items():
        runs = [args] if "TARGET" not in args else [tuple(t if a == "TARGET" else a for a in args) for t in targets]
        shown = "".join(run(a[0], path, *a[1:]) for a in runs)
        assert not leaks(shown, secrets), f"{what} leaks {leaks(shown, secrets)}"
        if what in ("read table", "read messages", "read messages jsonl"):
            continue  # no request headers in these
        unredacted = "".join(run(a[0], path, *a[1:], "--no-redact") for a in runs)
        assert SECRET_ACCESS_KEY in unredacted, what


@pytest.mark.parametrize("name", NAMES)
def test_no_secret_in_stats(name):
    path = cap(name)
    secrets = secrets_in(path)
    for fmt in ("envoy", "prometheus", "json"):
        assert not leaks(run("stats", path, "--format", fmt), secrets)
    assert not leaks(run("stats", path, "--by", "client"), secrets)


@pytest.mark.parametrize("name", NAMES)
def test_no_secret_in_export_jsonl_csv(name, tmp_path):
    path = cap(name)
    secrets = secrets_in(path)
    for fmt in ("jsonl", "csv"):
        out = tmp_path / f"x.{fmt}"
        run("export", path, "--format", fmt, "-o", str(out))
        assert not leaks(out.read_bytes(), secrets), fmt
    run("export", path, "--format", "jsonl", "-o", str(tmp_path / "n.jsonl"), "--no-redact")
    assert SECRET_ACCESS_KEY.encode() in (tmp_path / "n.jsonl").read_bytes()
    assert (tmp_path / "n.jsonl").stat().st_mode & 0o777 == 0o600


def _read_jsonl(path: str) -> list[dict]:
    return [orjson.loads(x) for x in run("read", path, "--format", "jsonl", "--no-redact").splitlines()]


def _tshark(path: str, field: str) -> list[str]:
    out = subprocess.run(["tshark", "-r", path, "-d", f"tcp.port=={GRPC_PORT},http2", "-o", "tcp.check_checksum:TRUE",
                          "-T", "fields", "-e", field], capture_output=True, text=True, timeout=120, check=True)
    return out.stdout.splitlines()


@pytest.mark.parametrize("name", NAMES)
def test_pcapng_export_overwrites_secrets_in_place(name, tmp_path):
    """Same packets, same exchanges, the secret values replaced by as many bytes; the frames
    stay valid (rmqsniff decodes the same exchanges, tshark the same HTTP/2 headers and good
    checksums on every frame it changed)."""
    path = cap(name)
    secrets = secrets_in(path)
    red, kept = tmp_path / "red.pcapng", tmp_path / "kept.pcapng"
    res = CliRunner().invoke(main, ["export", path, "--format", "pcapng", "-o", str(red), *PORT],
                             catch_exceptions=False)
    assert res.exit_code == 0
    assert re.search(r"secrets overwritten in place in [1-9]\d* frames.* \(--no-redact keeps them\)\n", res.output)
    res = CliRunner().invoke(main, ["export", path, "--format", "pcapng", "-o", str(kept), "--no-redact", *PORT],
                             catch_exceptions=False)
    assert "secrets kept as captured (--no-redact)" in res.output
    assert not leaks(red.read_bytes(), secrets)
    assert SECRET_ACCESS_KEY.encode() in kept.read_bytes()
    assert kept.stat().st_mode & 0o777 == 0o600  # it holds the secrets
    assert red.stat().st_size == kept.stat().st_size

    before, after = _read_jsonl(str(kept)), _read_jsonl(str(red))
    assert len(before) == len(after) == len(_read_jsonl(path))
    assert not leaks(orjson.dumps(after), secrets)
    changed = 0
    for b, a in zip(before, after, strict=True):
        assert (b["request"] or {}).get("name") == (a["request"] or {}).get("name")
        assert (b["response"] or {}).get("code") == (a["response"] or {}).get("code")
        for side in ("request", "response"):
            bs, as_ = b[side] or {}, a[side] or {}
            for k, v in (bs.get("ext") or {}).items():
                if k in ("AccessKey", "Signature", "SecurityToken"):
                    assert as_["ext"][k] == "*" * len(v)
                    changed += 1
                else:
                    assert as_["ext"][k] == v
            for (k, v), (k2, v2) in zip(bs.get("headers") or (), as_.get("headers") or (), strict=True):
                assert k == k2 and len(v) == len(v2)
                if v != v2:
                    assert "*" in v2 or set(v2) <= set("0-x*!'#$^<\\")
                    changed += 1
    assert changed > 5
    if "grpc" in name:
        assert _tshark(str(red), "http2.header.name") == _tshark(str(kept), "http2.header.name")
        values = "\n".join(_tshark(str(red), "http2.header.value"))
        assert "MQv2-HMAC-SHA1 Credential=****" in values and not leaks(values, secrets)
    status = _tshark(str(red), "tcp.checksum.status")
    assert len(status) == len(_tshark(str(kept), "tcp.checksum.status"))


def test_changed_frames_have_good_tcp_checksums(tmp_path):
    """Loopback captures hold partial (offloaded) checksums; the frames the export rewrites
    get the real one, which tshark verifies."""
    path = cap("secrets_remoting")
    red = tmp_path / "red.pcapng"
    run("export", path, "--format", "pcapng", "-o", str(red))
    kept = tmp_path / "kept.pcapng"
    run("export", path, "--format", "pcapng", "-o", str(kept), "--no-redact")
    a, b = _tshark(str(kept), "tcp.checksum.status"), _tshark(str(red), "tcp.checksum.status")
    changed = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
    assert changed and all(b[i] == "1" for i in changed)  # 1: good


def test_a_secret_split_across_segments_is_overwritten_in_both(tmp_path):
    """The remoting capture resent with every request cut into 7-byte segments (a stand-in:
    the real clients wrote each frame in one segment)."""
    from rmqsniff.capwriter import CaptureWriter, TcpSession

    path = cap("secrets_remoting")
    ex = next(e for e in decode(path, track_packets=True)
              if e.request and (e.request.command.ext or {}).get("Signature"))
    wire = WireReader([path])
    req, resp = wire.payload(ex.request.packets), wire.payload(ex.response.packets) if ex.response else b""
    split = tmp_path / "split.pcap"
    with open(split, "wb") as f:
        w = CaptureWriter(f)
        s = TcpSession(w, ("127.0.0.1", 40000), ("127.0.0.1", 10911), mss=7)
        s.handshake(1.0)
        s.send(1.1, True, req)
        s.mss = 16384
        s.send(1.2, False, resp)
        s.close(1.3)
    out = tmp_path / "out.pcapng"
    run("export", str(split), "--format", "pcapng", "-o", str(out))
    secrets = {v for k, v in ex.request.command.ext.items() if k in ("AccessKey", "Signature", "SecurityToken")}
    assert not leaks(out.read_bytes(), secrets)
    got = _read_jsonl(str(out))[0]["request"]["ext"]
    assert got["Signature"] == "*" * len(ex.request.command.ext["Signature"])
    assert got["topic"] == ex.request.command.ext.get("topic")


@pytest.mark.parametrize("name", NAMES)
def test_tui_detail_tree_and_bytes(name):
    path = cap(name)
    secrets = secrets_in(path)
    wire = WireReader([path])
    shown, unredacted = [], []
    exchanges = decode(path, track_packets=True)
    for ex in exchanges:
        shown += [str(n.label) for n in _walk(exchange_tree(ex))]
        unredacted += [str(n.label) for n in _walk(exchange_tree(ex, redact=False))]
        for side in ("request", "response"):
            data, _ = frame_bytes(ex, side, wire, True, exchanges)
            assert not leaks(data or b"", secrets), side
    assert not leaks("\n".join(shown), secrets)
    assert SECRET_ACCESS_KEY in "\n".join(unredacted)


def test_unknown_name_credentials_redacted_mid_connection():
    """In the cut capture some session tokens stand under ``<unknown>`` (their name was sent
    before the cut) and are redacted; the same values are there with --no-redact."""
    path = cap("secrets_grpc_cut")
    rows = [orjson.loads(x) for x in run("read", path, "--format", "jsonl").splitlines()]
    raw = _read_jsonl(path)
    nameless = [v for r in raw for side in ("request", "response") for k, v in (r[side] or {}).get("headers") or ()
                if k == UNKNOWN and v.startswith(SECRET_SECURITY_TOKEN)]
    assert nameless, "the cut should leave some tokens without their header name"
    hidden = [v for r in rows for side in ("request", "response") for k, v in (r[side] or {}).get("headers") or ()
              if k == UNKNOWN and v == "<redacted>"]
    assert len(hidden) >= len(nameless)


def test_replay_report_diff_redacts_both_sides():
    """A stand-in for the answers: a real broker's responses carry no ACL fields, so two real
    signed requests of the capture play the recorded and the replayed answer."""
    path = cap("secrets_remoting")
    signed = [ex for ex in decode(path)
              if ex.request and (ex.request.command.ext or {}).get("Signature")]
    a, b = signed[0].request.command, next(e.request.command for e in signed[1:]
                                           if e.request.command.code == signed[0].request.command.code
                                           and e.request.command.ext["Signature"] != signed[0].request.command.ext[
                                               "Signature"])
    secrets = {a.ext["Signature"], b.ext["Signature"], SECRET_ACCESS_KEY}

    def report(redact: bool) -> str:
        rep = Report(DiffRules(redact=redact))
        ex = rep.request_sent(signed[0].connection, a, 100, time.monotonic(), 0)
        rep.answered(ex, b, time.monotonic(), 100, a)
        d = rep.to_dict()
        assert any(k.startswith("header Signature") for k in d["diff"]["mismatches"])
        from rich.console import Console

        con = Console(record=True, width=300)
        rep.render(con)
        return orjson.dumps(d).decode() + con.export_text()

    assert not leaks(report(True), secrets)
    assert a.ext["Signature"][:40] in report(False)


def test_replay_cli_has_no_redact():
    from rmqsniff.cli_replay import replay

    assert "--no-redact" in CliRunner().invoke(replay, ["--help"]).output


def test_huffman_replacement_keeps_length_and_character_count():
    for value in (b"MQv2-HMAC-SHA1 Credential=AK123456789012345, SignedHeaders=x-mq-date-time, Signature=" +
                  b"0A1B2C3D4E5F60718293A4B5C6D7E8F901234567", SECRET_SECURITY_TOKEN.encode() + b"42",
                  bytes(range(32, 127))):
        enc = huffman_encode(value)
        assert huffman_decode(enc) == value
        red = masked_huffman(value, [(0, len(value))], len(enc))
        assert red is not None and len(red) == len(enc)
        dec = huffman_decode(red)
        assert len(dec) == len(value) and not set(dec) & set(value) - set(b"0-x*!'#$^<\\")


def test_cut_helper_drops_connection_starts(tmp_path):
    src = cap("secrets_grpc")
    dst = tmp_path / "cut.pcap"
    assert cut_connection_starts(Path(src), dst, GRPC_PORT, 0.3) > 0
    assert dst.read_bytes() == Path(cap("secrets_grpc_cut")).read_bytes()


def test_scrub_reports_values_not_on_the_wire():
    """HPACK sends a repeated authorization as a table reference: the value is decoded but
    not in that side's bytes, and the line says how many such values were not found."""
    path = cap("secrets_grpc_cut")
    exchanges = decode(path, track_packets=True)
    scrub = ex_mod.Scrub()
    for ex in exchanges:
        scrub.add(ex)
    wanted = ex_mod.packets_of(exchanges)
    scrub.locate([path], wanted)
    assert scrub.patches
    assert "--no-redact keeps them" in scrub.line()


def test_replay_dry_run_shows_no_secret():
    path = cap("secrets_remoting")
    from rmqsniff.cli_replay import replay

    res = CliRunner().invoke(replay, [path, "--target", "127.0.0.1:1", "--allow-target", "127.0.0.1", "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "dry run: nothing sent" in res.output and not leaks(res.output, secrets_in(path))


# -- the real cluster ------------------------------------------------------------------------

@pytest.mark.rocketmq
@pytest.mark.parametrize("name", ["secrets_remoting", "secrets_grpc"])
def test_fresh_capture_of_the_real_clients_leaks_nothing(rocketmq_cluster, rocketmq_capture, name, tmp_path):
    """The harness records the credentialed Java client again; decode and exports hold no
    secret unless --no-redact."""
    pcap, _truth = rocketmq_capture(name)
    port = ("--port", f"{rocketmq_cluster.ports.grpc}=grpc")
    secrets = {SECRET_ACCESS_KEY, SECRET_SECURITY_TOKEN}
    assert SECRET_ACCESS_KEY.encode() in pcap.read_bytes()

    def cli(*args: str) -> str:
        res = CliRunner().invoke(main, [*args, *port], catch_exceptions=False)
        assert res.exit_code == 0, res.output
        return res.output

    assert not leaks(cli("read", str(pcap), "--format", "jsonl"), secrets)
    assert SECRET_ACCESS_KEY in cli("read", str(pcap), "--format", "jsonl", "--no-redact")
    out = tmp_path / "x.pcapng"
    assert "secrets overwritten in place" in cli("export", str(pcap), "--format", "pcapng", "-o", str(out))
    assert not leaks(out.read_bytes(), secrets)
    assert not leaks(cli("read", str(out), "--format", "jsonl", "--no-redact"), secrets)


def test_huffman_coded_authorization_is_overwritten_in_place(tmp_path):
    """A stand-in for a client that Huffman-codes its metadata (the real Java and Python
    clients send it raw): HTTP/2 by two ``h2`` peers, whose ``hpack`` encoder Huffman-codes
    every value that gets shorter.  Each call signs anew, so every authorization is a literal."""
    from rmqsniff.capwriter import CaptureWriter, TcpSession
    from tests.support import grpc_wire as gw

    ak = "AKhuffmanLeak7Q2w9Z"
    sigs = [f"{0xC0FFEE * (i + 3):040X}" for i in range(5)]
    auths = [f"MQv2-HMAC-SHA1 Credential={ak}, SignedHeaders=x-mq-date-time, Signature={sig}" for sig in sigs]
    w = gw.Wire()
    for i, auth in enumerate(auths):
        sid = w.c.get_next_available_stream_id()
        w.c.send_headers(sid, [(k, auth if k == "authorization" else v)
                               for k, v in gw.request_headers("SendMessage", i)])
        w.pump()
        w.send(sid, gw.send_request("TopicA", i), end=True)
        w.respond(sid)
        w.send(sid, gw.send_response(i), from_client=False)
        w.trailers(sid)
    src = tmp_path / "huff.pcap"
    with open(src, "wb") as f:
        s = TcpSession(CaptureWriter(f), ("127.0.0.1", 40000), ("127.0.0.1", 8081))
        s.handshake(w.t)
        for from_client, data, ts in w.chunks:
            s.send(ts, from_client, data)
        s.close(w.t + 1)
    raw = src.read_bytes()
    assert ak.encode() not in raw and all(huffman_encode(a.encode()) in raw for a in auths)  # Huffman-coded
    out = tmp_path / "out.pcapng"
    res = CliRunner().invoke(main, ["export", str(src), "--format", "pcapng", "-o", str(out)], catch_exceptions=False)
    assert "secrets overwritten in place in 5 frames" in res.output
    data = out.read_bytes()
    assert not any(huffman_encode(a.encode()) in data for a in auths)
    after = [orjson.loads(x) for x in run("read", str(out), "--format", "jsonl", "--no-redact").splitlines()]
    assert len(after) == 5
    for row, sig in zip(after, sigs, strict=True):
        auth = dict(row["request"]["headers"])["authorization"]
        shape = re.fullmatch(r"MQv2-HMAC-SHA1 Credential=(\S+), SignedHeaders=x-mq-date-time, Signature=(\S+)", auth)
        assert shape and len(shape[1]) == len(ak) and len(shape[2]) == len(sig)
        assert ak not in auth and sig not in auth
        assert row["response"]["name"] == "OK"
    names = subprocess.run(["tshark", "-r", str(out), "-d", "tcp.port==8081,http2", "-T", "fields",
                            "-e", "http2.header.name"], capture_output=True, text=True, check=True).stdout
    before = subprocess.run(["tshark", "-r", str(src), "-d", "tcp.port==8081,http2", "-T", "fields",
                             "-e", "http2.header.name"], capture_output=True, text=True, check=True).stdout
    assert names.split() == before.split() and names.count("authorization") == 5


@pytest.mark.parametrize("name", ["secrets_remoting", "secrets_grpc"])
def test_tui_export_to_pcapng_overwrites_secrets(name, tmp_path):
    from rmqsniff.tui.exporting import export_exchanges

    path = cap(name)
    secrets = secrets_in(path)
    exchanges = decode(path)
    msg = export_exchanges(str(tmp_path / "r.pcapng"), exchanges, captures=[path], ports=parse_ports([PORT[1]]))
    assert "frames with secrets overwritten" in msg
    assert not leaks((tmp_path / "r.pcapng").read_bytes(), secrets)
    msg = export_exchanges(str(tmp_path / "k.pcapng"), exchanges, captures=[path], redact=False,
                           ports=parse_ports([PORT[1]]))
    assert "secrets kept" in msg and SECRET_ACCESS_KEY.encode() in (tmp_path / "k.pcapng").read_bytes()
    assert (tmp_path / "k.pcapng").stat().st_mode & 0o777 == 0o600
