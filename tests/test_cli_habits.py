"""Operators' habits (issue #22): the CLI where it overlaps tshark and other Unix tools, each
behaviour run as a subprocess the way a user types it, over the committed captures of both
protocols (remoting: remoting_rocketmq.pcap; gRPC: grpc_python.pcap).

-r FILE and '-' (stdin, pcap and pcapng, also as a live stream from tcpdump -U -w -), -T fields
-e F -E ..., -t a|ad|r|u|ud|e, whole tables off a terminal, exit codes 0/1/2, quiet broken pipes,
options that conflict or do nothing named as errors."""
from __future__ import annotations

import datetime as dt
import os
import queue
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.support.tcp_streams import tcp_streams

ROOT = Path(__file__).resolve().parent.parent
CAPTURES = ROOT / "captures"
REMOTING = str(CAPTURES / "remoting_rocketmq.pcap")
GRPC = str(CAPTURES / "grpc_python.pcap")
BOTH = [pytest.param(REMOTING, id="remoting"), pytest.param(GRPC, id="grpc")]
WAIT = 120  # seconds a subprocess may take before the test gives up (a guard, not a speed goal)


def rmq(*args: str, stdin: bytes | None = None, env: dict[str, str] | None = None,
        stdout: int | None = subprocess.PIPE) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "rmqsniff", *args], input=stdin, stdout=stdout,
                          stderr=subprocess.PIPE, cwd=ROOT, timeout=WAIT, env=env)


def text(r: subprocess.CompletedProcess[bytes]) -> tuple[str, str]:
    return r.stdout.decode() if r.stdout is not None else "", r.stderr.decode()


def jsonl(out: bytes) -> list[dict]:
    return [orjson.loads(line) for line in out.splitlines() if line.strip()]


# ---------------------------------------------------------------- -r and stdin

@pytest.mark.parametrize("cap", BOTH)
def test_r_file_reads_like_the_positional_argument(cap: str) -> None:
    pos = rmq("read", "--format", "jsonl", cap)
    opt = rmq("read", "--format", "jsonl", "-r", cap)
    assert pos.returncode == opt.returncode == 0 and pos.stdout == opt.stdout and len(jsonl(pos.stdout)) > 10
    both = rmq("read", "--format", "jsonl", "-r", REMOTING, "-r", GRPC)  # repeatable, read in order
    rows = jsonl(both.stdout)
    assert both.returncode == 0 and len(rows) == len(jsonl(rmq("read", "--format", "jsonl", REMOTING, GRPC).stdout))
    for cmd in (["stats"], ["export", "-o", "-"]):
        assert rmq(*cmd, "-r", cap).stdout == rmq(*cmd, cap).stdout


@pytest.mark.parametrize("cap", BOTH)
def test_stdin_pcap_reads_like_the_file(cap: str) -> None:
    data = Path(cap).read_bytes()
    for args in (["read", "--format", "jsonl"], ["stats"], ["stats", "--by", "code", "--format", "json"],
                 ["read", "-T", "fields", "-e", "code", "-e", "status"]):
        piped, direct = rmq(*args, "-", stdin=data), rmq(*args, cap)
        assert piped.returncode == 0 and piped.stdout == direct.stdout, (args, piped.stderr)
    conn = str(jsonl(rmq("read", "--format", "jsonl", cap).stdout)[-1]["connection"]["id"])
    follow = rmq("follow", "-", conn, stdin=data)
    assert follow.returncode == 0 and follow.stdout == rmq("follow", cap, conn).stdout and b">>" in follow.stdout


@pytest.mark.parametrize("cap", BOTH)
def test_stdin_pcapng_stream_from_another_process(cap: str) -> None:
    """``rmqsniff export --format pcapng -o - X | rmqsniff stats -``: a pcapng stream through a real pipe."""
    exp = subprocess.Popen([sys.executable, "-m", "rmqsniff", "export", "--format", "pcapng", "-o", "-", cap],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT)
    try:
        r = subprocess.run([sys.executable, "-m", "rmqsniff", "stats", "--by", "code", "--format", "json", "-"],
                           stdin=exp.stdout, capture_output=True, cwd=ROOT, timeout=WAIT)
    finally:
        assert exp.stdout is not None
        exp.stdout.close()
        exp.wait(WAIT)
    want = orjson.loads(rmq("stats", "--by", "code", "--format", "json", cap).stdout)
    got = orjson.loads(r.stdout)
    assert r.returncode == 0 and exp.returncode == 0
    assert [(x["key"], x["requests"], x["errors"]) for x in got["rows"]] == \
        [(x["key"], x["requests"], x["errors"]) for x in want["rows"]]


def test_stdin_pcapng_with_decryption_secrets() -> None:
    """The pcapng's own Decryption Secrets Block decrypts TLS read from stdin too."""
    cap = CAPTURES / "remoting_tls13.dsb.pcapng"
    r = rmq("read", "-T", "fields", "-e", "code", "-", stdin=cap.read_bytes())
    assert r.returncode == 0 and r.stdout == rmq("read", "-T", "fields", "-e", "code", str(cap)).stdout
    assert b"105" in r.stdout.split()  # GET_ROUTEINFO_BY_TOPIC, decrypted


def test_stdin_rows_leave_before_the_stream_ends() -> None:
    """Half a capture written into the pipe, the pipe kept open: rows come out before the rest
    (the reader takes what the pipe holds; it neither seeks nor waits for a full buffer)."""
    data = Path(REMOTING).read_bytes()
    pos = 24
    while pos < len(data) // 2:  # a record boundary in the middle
        pos += 16 + struct.unpack_from("<I", data, pos + 8)[0]
    p = subprocess.Popen([sys.executable, "-m", "rmqsniff", "read", "-T", "fields", "-e", "code", "-"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    assert p.stdin is not None and p.stdout is not None
    try:
        p.stdin.write(data[:pos])
        p.stdin.flush()
        ready, _, _ = select.select([p.stdout], [], [], WAIT)
        first = p.stdout.readline() if ready else b""
        assert first.strip().isdigit(), "no row before the end of the stream"
        p.stdin.write(data[pos:])
        p.stdin.close()
        rest = p.stdout.read()
    finally:
        if p.poll() is None and not p.stdin.closed:  # the test failed midway: do not leave it running
            p.kill()
        p.wait(WAIT)
    assert p.returncode == 0
    assert first + rest == rmq("read", "-T", "fields", "-e", "code", REMOTING).stdout


def _lines(pipe: Any) -> queue.Queue[bytes]:
    """The lines of ``pipe`` as they come (b"" at its end), read by a thread."""
    q: queue.Queue[bytes] = queue.Queue()

    def pump() -> None:
        for line in pipe:
            q.put(line)
        q.put(b"")
    threading.Thread(target=pump, daemon=True).start()
    return q


def _serve(lsock: socket.socket, reply: bytes, expect: int) -> None:
    conn, _ = lsock.accept()
    with conn:
        got = 0
        while got < expect:
            chunk = conn.recv(65536)
            if not chunk:
                break
            got += len(chunk)
        conn.sendall(reply)


@pytest.mark.skipif(shutil.which("tcpdump") is None or os.geteuid() != 0, reason="needs tcpdump and root")
@pytest.mark.parametrize("cap, server_port, proto", [(REMOTING, 10911, "remoting"), (GRPC, 8081, "grpc")])
def test_tcpdump_stream_into_read(cap: str, server_port: int, proto: str) -> None:
    """``tcpdump -U --immediate-mode -w - | rmqsniff read -``: real tcpdump on loopback, rows read while
    it still runs, the requests those of the capture. The traffic is a stand-in for a cluster (no
    cluster in this file): the busiest connection of a committed capture of real RocketMQ, its
    client bytes sent again to a socket that answers with the server bytes of that connection."""
    stream = max((s for s in tcp_streams(Path(cap)) if s.server[1] == server_port), key=lambda s: len(s.c2s))
    want = Counter(x["request"]["name"] for x in jsonl(rmq("read", "--format", "jsonl", cap).stdout)
                   if x["connection"]["client"] == f"{stream.client[0]}:{stream.client[1]}"
                   and x["request"] and "initiator" not in x)
    lsock = socket.create_server(("127.0.0.1", 0))
    port = lsock.getsockname()[1]
    dump = subprocess.Popen(["tcpdump", "-i", "lo", "-U", "--immediate-mode", "-w", "-", f"tcp port {port}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert dump.stdout is not None and dump.stderr is not None
    read = subprocess.Popen([sys.executable, "-m", "rmqsniff", "read", "--format", "jsonl", "--port",
                             f"{port}={proto}", "-"], stdin=dump.stdout, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=ROOT)
    assert read.stdout is not None
    dump.stdout.close()
    try:
        assert b"listening on" in dump.stderr.readline()
        server = threading.Thread(target=_serve, args=(lsock, stream.s2c, len(stream.c2s)))
        server.start()
        with socket.create_connection(("127.0.0.1", port)) as c:
            c.sendall(stream.c2s)
            while c.recv(65536):
                pass
        server.join(WAIT)
        got: Counter[str] = Counter()
        lines = _lines(read.stdout)
        while sum(got.values()) < sum(want.values()):  # rows arrive while tcpdump still records
            try:
                line = lines.get(timeout=WAIT)
            except queue.Empty:
                line = b""
            assert line, f"stream ended early: {got} of {want}"
            x = orjson.loads(line)
            if x["request"] and "initiator" not in x:
                got[x["request"]["name"]] += 1
        assert dump.poll() is None
        assert got == want
    finally:
        lsock.close()
        dump.send_signal(signal.SIGINT)
        dump.wait(WAIT)
        read.wait(WAIT)
    assert read.returncode == 0


# ---------------------------------------------------------------- -T fields

@pytest.mark.parametrize("cap", BOTH)
def test_fields_are_the_filter_fields_and_json_paths(cap: str) -> None:
    rows = jsonl(rmq("read", "--format", "jsonl", cap).stdout)
    r = rmq("read", "-T", "fields", "-e", "code", "-e", "response.code", "-e", "request.name", "-e", "conn",
            "-e", "client", "-e", "latency", "-e", "status", "-E", "separator=,", "-E", "header=y",
            "-E", "aggregator=+", cap)
    out, err = text(r)
    lines = out.splitlines()
    assert r.returncode == 0 and not err
    assert lines[0] == "code,response.code,request.name,conn,client,latency,status"
    assert len(lines) == len(rows) + 1
    for line, x in zip(lines[1:], rows, strict=True):
        code, resp_code, name, conn, client, latency, status = line.split(",")
        req, resp = x["request"], x["response"]
        assert code == ("" if req is None else str(req["code"]))
        assert resp_code == ("" if resp is None else str(resp["code"]))
        assert name == ("" if req is None else req["name"])
        assert conn == str(x["connection"]["id"]) and client == x["connection"]["client"]
        assert latency == ("" if x["latency_ms"] is None else f"{x['latency_ms']:.3f}")
        assert status.split("+")[0] == x["status"]  # then the answer's class (success, error...) when answered
        assert (status.split("+")[1:] == [x["result"]]) if resp is not None and "result" in x else True


@pytest.mark.parametrize("cap", BOTH)
def test_fields_tab_separated_by_default_and_quoted_on_request(cap: str) -> None:
    rows = jsonl(rmq("read", "--format", "jsonl", "-c", "3", cap).stdout)
    out = rmq("read", "-T", "fields", "-e", "index", "-e", "protocol", "-c", "3", cap).stdout.decode()
    assert out.splitlines() == [f"{x['index']}\t{x['protocol']}" for x in rows]
    quoted = rmq("read", "-T", "fields", "-e", "index", "-E", "quote=d", "-E", "header=y", "-c", "1", cap).stdout
    assert quoted.decode().splitlines() == ['"index"', '"0"']


@pytest.mark.parametrize("args, words", [
    (["-T", "fields", "-e", "nosuch"], ["-e", "unknown field 'nosuch'"]),
    (["-T", "fields"], ["-T does nothing without -e"]),
    (["-e", "code"], ["-e does nothing without -T"]),
    (["-T", "fields", "-e", "code", "-E", "colour=y"], ["-E", "unknown -E option 'colour'"]),
    (["-T", "fields", "-e", "code", "--format", "jsonl"], ["-T", "--format", "exclude each other"]),
])
def test_fields_usage_errors(args: list[str], words: list[str]) -> None:
    r = rmq("read", *args, REMOTING)
    out, err = text(r)
    assert r.returncode == 2 and out == "" and all(w in err for w in words), err


# ---------------------------------------------------------------- -t

def _times(cap: str, fmt: str | None, *more: str, env: dict[str, str] | None = None) -> list[str]:
    """``time<TAB>ts`` per exchange (ts: its request's time, or its response's for an orphan)."""
    args = ["read", "-T", "fields", "-e", "time", "-e", "request.ts", "-e", "response.ts",
            *(["-t", fmt] if fmt else []), cap, *more]
    out = []
    for line in rmq(*args, env=env).stdout.decode().splitlines():
        t, req, resp = line.split("\t")
        out.append(f"{t}\t{req or resp}")
    return out


@pytest.mark.parametrize("cap", BOTH)
def test_time_formats_like_tshark(cap: str) -> None:
    epoch = [line.split("\t") for line in _times(cap, "e")]
    ts = [float(t) for _, t in epoch]
    assert [float(e) for e, _ in epoch] == pytest.approx(ts, abs=1e-6)
    rel = [float(line.split("\t")[0]) for line in _times(cap, "r")]
    assert rel[0] == 0.0 and rel == pytest.approx([t - ts[0] for t in ts], abs=1e-6)
    utc = [dt.datetime.fromtimestamp(t, dt.timezone.utc) for t in ts]
    assert [line.split("\t")[0] for line in _times(cap, "u")] == [u.strftime("%H:%M:%S.%f") for u in utc]
    assert [line.split("\t")[0] for line in _times(cap, "ud")] == [u.strftime("%Y-%m-%d %H:%M:%S.%f") for u in utc]
    tokyo = {**os.environ, "TZ": "Asia/Tokyo"}  # local time is the zone's: UTC+9, no summer time
    local = [(u + dt.timedelta(hours=9)) for u in utc]
    assert [line.split("\t")[0] for line in _times(cap, "a", env=tokyo)] == [t.strftime("%H:%M:%S.%f") for t in local]
    assert [line.split("\t")[0] for line in _times(cap, "ad", env=tokyo)] == \
        [t.strftime("%Y-%m-%d %H:%M:%S.%f") for t in local]
    # the default: local time of day (this capture spans one day)
    assert [line.split("\t")[0] for line in _times(cap, None, env=tokyo)] == [t.strftime("%H:%M:%S.%f") for t in local]
    table = rmq("read", "-c", "1", cap, env=tokyo).stdout.decode().splitlines()
    assert local[0].strftime("%H:%M:%S.%f") in table[1]


def _shift_pcap(src: str, dst: Path, seconds: int) -> None:
    """A copy of a little-endian pcap with every record's time moved by ``seconds``."""
    data = bytearray(Path(src).read_bytes())
    pos = 24
    while pos + 16 <= len(data):
        sec, _frac, caplen = struct.unpack_from("<III", data, pos)
        struct.pack_into("<I", data, pos, sec + seconds)
        pos += 16 + caplen
    dst.write_bytes(bytes(data))


def test_default_time_shows_the_date_once_rows_span_days(tmp_path: Path) -> None:
    later = tmp_path / "next_day.pcap"
    _shift_pcap(GRPC, later, 86400)
    env = {**os.environ, "TZ": "UTC"}
    first = len(_times(REMOTING, None, env=env))
    times = [line.split("\t")[0] for line in _times(REMOTING, None, str(later), env=env)]
    assert all(len(t) == len("00:00:00.000000") for t in times[:first])
    assert all(len(t) == len("2000-01-01 00:00:00.000000") for t in times[first:]) and len(times) > first
    day = dt.datetime.fromtimestamp(float(_times(str(later), "e")[0].split("\t")[0]), dt.timezone.utc)
    assert times[first].startswith(day.strftime("%Y-%m-%d "))


def test_time_format_needs_a_table_with_times() -> None:
    r = rmq("read", "-t", "ud", "--format", "jsonl", REMOTING)
    assert r.returncode == 2 and "-t and --format exclude each other" in r.stderr.decode()
    r = rmq("stats", "-t", "e", REMOTING)
    assert r.returncode == 2 and "-t does nothing without --interval" in r.stderr.decode()
    r = rmq("stats", "--interval", "1s", "-t", "e", REMOTING)
    first = r.stdout.decode().splitlines()[1].split()
    assert r.returncode == 0 and float(first[0]) > 1.7e9


# ---------------------------------------------------------------- tables off a terminal

@pytest.mark.parametrize("cap", BOTH)
def test_tables_are_whole_when_piped(cap: str) -> None:
    out = rmq("read", cap).stdout.decode()
    assert "…" not in out
    for x in jsonl(rmq("read", "--format", "jsonl", cap).stdout):
        for side in ("request", "response"):
            if x[side]:
                assert x[side]["name"] in out  # grep finds every name, none cut short
    if cap == REMOTING:
        assert "SUBSCRIPTION_NOT_LATEST " in out
        assert "DefaultHeartBeatSyncerTopic/CID_DefaultHeartBeatSyncerTopic" in out


def test_tables_are_cut_to_the_terminal() -> None:
    """On a terminal (a pseudo-terminal here) long cells are still cut, with an ellipsis."""
    main, sub = os.openpty()
    try:
        p = subprocess.Popen([sys.executable, "-m", "rmqsniff", "read", "-c", "5", REMOTING], stdout=sub,
                             stderr=subprocess.PIPE, cwd=ROOT, env={**os.environ, "COLUMNS": "300"})
        os.close(sub)
        chunks = []
        while True:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # the terminal closed with the process
                break
            if not chunk:
                break
            chunks.append(chunk)
        p.wait(WAIT)
    finally:
        os.close(main)
    out = b"".join(chunks).decode()
    assert p.returncode == 0 and "SUBSCRIPTION_NOT_LATE…" in out


# ---------------------------------------------------------------- exit codes

def test_exit_codes() -> None:
    assert rmq("read", "-c", "1", REMOTING).returncode == 0
    r = rmq("read", "--port", "abc", REMOTING)
    out, err = text(r)
    assert r.returncode == 2 and out == "" and "Invalid value for --port: 'abc' is not a TCP port" in err
    assert "--debug" not in err and "Usage:" in err
    r = rmq("stats", "--port", "1,2=nosuch", REMOTING)
    assert r.returncode == 2 and "is not a protocol" in r.stderr.decode()
    r = rmq("read")
    assert r.returncode == 2 and "give a capture file (FILE or -r FILE; '-' reads standard input)" in r.stderr.decode()


@pytest.mark.parametrize("cmd", [["read"], ["stats"], ["export", "-o", "-"], ["follow", "-"]])
def test_a_missing_file_is_one_line_exit_1_and_nothing_on_stdout(tmp_path: Path, cmd: list[str]) -> None:
    missing = str(tmp_path / "missing.pcap")
    args = [*cmd, REMOTING, missing] if cmd[0] != "follow" else ["follow", REMOTING, missing, "1"]
    r = rmq(*args)
    out, err = text(r)
    assert r.returncode == 1 and out == ""
    assert err.splitlines() == [f"rmqsniff: {missing}: cannot open (No such file or directory)"]


def test_nothing_readable_is_exit_1(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a capture\n")
    r = rmq("read", str(notes))
    assert r.returncode == 1 and r.stdout == b"" and "not a pcap or pcapng file" in r.stderr.decode()
    r = rmq("stats", "-", stdin=b"")
    assert r.returncode == 1 and "<stdin>: empty" in r.stderr.decode()


def test_tui_missing_file_is_a_usage_error_before_the_ui(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.pcap")
    r = rmq("tui", missing, env={**os.environ, "RMQSNIFF_TUI_FORCE": "1"})  # the UI would open if it got that far
    out, err = text(r)
    assert r.returncode == 2 and out == "" and err.splitlines() == [f"rmqsniff: {missing}: cannot open "
                                                                     "(No such file or directory)"]


# ---------------------------------------------------------------- broken pipes

def _into_closed_pipe(*args: str) -> subprocess.CompletedProcess[bytes]:
    """Run with stdout a pipe whose reader has already gone (``| head`` that has had its lines):
    the first write meets EPIPE at once, with no race on how fast the reader is."""
    r, w = os.pipe()
    os.close(r)
    try:
        return rmq(*args, stdout=w)
    finally:
        os.close(w)


@pytest.mark.parametrize("cap", BOTH)
@pytest.mark.parametrize("args", [["read"], ["read", "--format", "jsonl"], ["read", "-T", "fields", "-e", "code"],
                                  ["read", "--messages"], ["stats"], ["stats", "--by", "topic"], ["export", "-o", "-"]])
def test_broken_pipe_is_quiet_and_status_0(cap: str, args: list[str]) -> None:
    r = _into_closed_pipe(*args, cap)
    assert (r.returncode, r.stderr) == (0, b"")


def test_broken_pipe_in_a_shell_pipeline_with_head() -> None:
    r = subprocess.run(["bash", "-c", f'"{sys.executable}" -m rmqsniff read "{REMOTING}" "{GRPC}" "{REMOTING}" '
                                      '| head -2; echo "status ${PIPESTATUS[0]}"'],
                       capture_output=True, cwd=ROOT, timeout=WAIT)
    out = r.stdout.decode().splitlines()
    assert len(out) == 3 and out[-1] == "status 0" and r.stderr == b""


def test_replay_dry_run_broken_pipe_is_quiet() -> None:
    r = _into_closed_pipe("replay", REMOTING, "--target", "127.0.0.1:19876", "--allow-target", "127.0.0.1:19876",
                          "--dry-run")
    assert (r.returncode, r.stderr) == (0, b"")


# ---------------------------------------------------------------- options that conflict or do nothing

@pytest.mark.parametrize("args, message", [
    (["read", "-c", "-1"], "Invalid value for '-c' / '--count': -1 is not in the range x>=0"),
    (["stats", "--top", "3"], "--top does nothing without --by"),
    (["stats", "--sort", "p99"], "--sort does nothing without --by"),
    (["read", "--body"], "--body does nothing without --messages"),
    (["read", "--only-ports"], "--only-ports does nothing without --port"),
    (["stats", "--only-ports"], "--only-ports does nothing without --port"),
    (["replay", "--target", "127.0.0.1:19876", "--speed", "2x", "--rate", "10/s"],
     "--speed and --rate exclude each other"),
    (["replay", "--target", "127.0.0.1:19876", "--speed", "2x", "--max"], "--speed and --max exclude each other"),
    (["export", "--format", "pcapng", "-o", "x.pcapng", "-"], "reads its captures twice"),
    (["export", "-o", "-", "--with-secrets"], "--with-secrets needs --format pcapng"),
    (["stats", "--format", "table"], "--format table needs --by or --interval"),
    (["stats", "--by", "code", "--format", "prometheus"], "--by and --interval print --format table or json"),
    (["stats", "--interval", "soon"], "Invalid value for --interval: 'soon' is not a positive duration"),
])
def test_conflicting_or_no_op_options_are_usage_errors(args: list[str], message: str) -> None:
    r = rmq(*args[:1], REMOTING, *args[1:]) if args[-1] != "-" else rmq(*args, stdin=b"")
    out, err = text(r)
    assert r.returncode == 2 and out == "" and message in err, err


def test_live_only_ports_needs_port() -> None:
    r = rmq("live", "-i", "lo", "--only-ports")
    assert r.returncode == 2 and "--only-ports does nothing without --port" in r.stderr.decode()


# ---------------------------------------------------------------- replay

def _plan(*extra: str) -> subprocess.CompletedProcess[bytes]:
    return rmq("replay", REMOTING, "--target", "127.0.0.1:19876", "--dry-run", *extra)


def test_replay_speed_as_percent() -> None:
    one, two = (orjson.loads(_plan("--allow-target", "127.0.0.1:19876", "--format", "json", *s).stdout)
                for s in ([], ["--speed", "200%"]))
    assert two["expected_duration_s"] == pytest.approx(one["expected_duration_s"] / 2, abs=0.002)
    assert two["requested_rate"] == pytest.approx(one["requested_rate"] * 2, rel=0.01)


def test_replay_dry_run_exit_status_and_json() -> None:
    ok = _plan("--allow-target", "127.0.0.1:19876", "--format", "json")
    doc = orjson.loads(ok.stdout)
    assert ok.returncode == 0 and doc["dry_run"] is True and doc["refused"] is False
    assert doc["targets"] == [{"what": "target name server", "address": "127.0.0.1:19876", "verdict": "allowed",
                               "via": "proxy"}]
    assert doc["requests"] == sum(s["requests"] for s in doc["plan"]) > 0
    refused = _plan("--allow-target", "192.0.2.1", "--format", "json")
    doc = orjson.loads(refused.stdout)
    assert refused.returncode == 1 and doc["refused"] is True and doc["targets"][0]["verdict"].startswith("REFUSED")
    text_run = _plan()  # no --allow-target: the plan is printed, marked refused, exit 1
    out, err = text(text_run)
    assert text_run.returncode == 1 and "REFUSED" in out and "dry run: nothing sent (refused)" in out
    assert "refused" in err
