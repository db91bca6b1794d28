"""The live tap on the loopback interface, with traffic the tests send themselves over 127.0.0.1.

Needs AF_PACKET (root or CAP_NET_RAW); skipped without it.  The cluster test is in
``test_live_rocketmq.py``.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from dissectors.remoting.command import JSON, ROCKETMQ, RemotingCommand
from dissectors.remoting.frame import encode
from rmqsniff.cli_live import live, parse_duration, parse_size
from rmqsniff.exporters.promhttp import StatsEndpoint, parse_address
from rmqsniff.exporters.statsfmt import render_envoy
from rmqsniff.exporters.statsroute import render_stats
from rmqsniff.live import LiveTap
from rmqsniff.pipeline import analyze
from rmqsniff.sources.afpacket import AfPacketSource, Counters, PcapngWriter
from rmqsniff.sources.link import tcp_segment
from rmqsniff.sources.pcapfile import open_capture
from tests.support.exchanges import request_of

ROOT = Path(__file__).resolve().parent.parent


def _can_capture() -> bool:
    try:
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0).close()
        return True
    except OSError:
        return False


needs_capture = pytest.mark.skipif(not _can_capture(), reason="AF_PACKET capture needs root or CAP_NET_RAW")


# ---------------------------------------------------------------- traffic the test controls

def _send(opaque: int, topic: str, ser: int = JSON) -> RemotingCommand:
    ext = {"a": "PG_live", "b": topic, "c": "TBW102", "d": "4", "e": "1", "f": "0", "g": "1700000000000",
           "h": "0", "i": "TAGS\x01TagA\x02", "j": "0", "k": "false", "m": "false"}
    return RemotingCommand(310, 0, opaque, "JAVA", 479, None, ext, b"body-%d" % opaque, ser)


def _ok(req: RemotingCommand, code: int = 0) -> RemotingCommand:
    return RemotingCommand(code, 1, req.opaque, "JAVA", 479, None, {"queueId": "1", "queueOffset": "5"}, None,
                           req.serialize)


def _route(opaque: int) -> RemotingCommand:
    return RemotingCommand(105, 0, opaque, "JAVA", 479, None, {"topic": "orders"}, None, JSON)


def _heartbeat_oneway(opaque: int) -> RemotingCommand:
    return RemotingCommand(34, 2, opaque, "JAVA", 479, None, None, b"{}", JSON)


# What the test sends: 6 sends (4 JSON, 2 ROCKETMQ header), 1 with an error answer; 2 route queries;
# 1 oneway heartbeat.  Ground truth for the assertions below.
SCRIPT: list[tuple[RemotingCommand, RemotingCommand | None]] = [
    *[(_send(i, "orders"), None) for i in range(1, 5)],
    *[(_send(i, "payments", ROCKETMQ), None) for i in range(5, 7)],
    (_route(7), None), (_route(8), None), (_heartbeat_oneway(9), None),
]
ANSWERS = {6: 1}  # opaque -> response code (1 = SYSTEM_ERROR)
N_REQUESTS, N_SENDS, N_ONEWAY, N_ERRORS = 9, 6, 1, 1


def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("peer closed")
        buf += chunk
    return buf


def play(port_holder: socket.socket, script=SCRIPT) -> None:
    """Client and server in this process: each request over TCP, each answer back (not for oneway)."""
    port = port_holder.getsockname()[1]

    def server() -> None:
        conn, _ = port_holder.accept()
        with conn:
            for req, _ in script:
                n = struct.unpack("!I", _recv_exact(conn, 4))[0]
                _recv_exact(conn, n)
                if not req.flag & 2:
                    conn.sendall(encode(_ok(req, ANSWERS.get(req.opaque, 0))))
            conn.recv(1)  # the client's close

    t = threading.Thread(target=server)
    t.start()
    with socket.create_connection(("127.0.0.1", port)) as c:
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for req, _ in script:
            c.sendall(encode(req))
            if not req.flag & 2:
                n = struct.unpack("!I", _recv_exact(c, 4))[0]
                _recv_exact(c, n)
    t.join(10)


def listener() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    return s


def envoy_values(text: str) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)


# ---------------------------------------------------------------- option parsing

def test_durations_follow_tcpdump_habits():
    assert parse_duration("30s") == 30.0
    assert parse_duration("500ms") == 0.5
    assert parse_duration("2m") == 120.0
    assert parse_duration("1.5") == 1.5  # bare number: seconds
    for bad in ("", "soon", "-3s", "0"):
        with pytest.raises(click.BadParameter):
            parse_duration(bad)


def test_sizes_follow_tcpdump_habits():
    assert parse_size("100MB", 1_000_000) == 100_000_000
    assert parse_size("100", 1_000_000) == 100_000_000  # -C style: bare = MB
    assert parse_size("64MiB", 1024) == 64 * 1024 * 1024
    assert parse_size("2048", 1024) == 2 * 1024 * 1024  # -B style: bare = KiB
    for bad in ("lots", "0", "5 parsecs"):
        with pytest.raises(click.BadParameter):
            parse_size(bad, 1)


def test_prometheus_address_forms():
    assert parse_address("127.0.0.1:9108") == ("127.0.0.1", 9108)
    assert parse_address("9108") == ("127.0.0.1", 9108)
    assert parse_address("[::1]:9108") == ("::1", 9108)
    with pytest.raises(Exception, match="HOST:PORT"):
        parse_address("127.0.0.1:http")


@pytest.mark.parametrize("args, message", [
    (["-i", "lo", "--rotate", "10MB"], "--rotate needs -w"),
    (["-i", "lo", "-w", "x.pcapng", "--keep", "3"], "--keep needs --rotate"),
    (["-i", "lo", "--duration", "forever"], "not a positive duration"),
])
def test_bad_option_combinations_are_one_clear_error(args, message):
    r = CliRunner().invoke(live, args)
    assert r.exit_code == 2
    assert message in r.output
    assert "Traceback" not in r.output


# ---------------------------------------------------------------- pcapng writing and rotation

def _frames(n: int) -> list[bytes]:
    from rmqsniff.capwriter import CaptureWriter, TcpSession

    out: list[bytes] = []

    class Grab(CaptureWriter):
        def __init__(self) -> None:
            pass

        def write(self, ts: float, frame: bytes) -> None:
            out.append(frame)

    s = TcpSession(Grab(), ("10.0.0.1", 40000), ("10.0.0.2", 10911))
    s.handshake(0)
    while len(out) < n:
        s.send(0, True, encode(_send(len(out), "orders")))
    return out[:n]


def test_pcapng_rotation_keeps_the_newest_files_each_complete(tmp_path):
    frames = _frames(200)
    ROT = 5_000
    w = PcapngWriter(str(tmp_path / "cap.pcapng"), [("lo", 1), ("any", 113)], rotate=ROT, keep=3)
    w.set_counters(0, Counters(received=250, dropped=50))
    t0 = 1_700_000_000_123_456_789
    for i, f in enumerate(frames):
        w.write(0, t0 + i * 1000, f, len(f) + 7)
    w.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    n_files = w._seq
    assert n_files >= 5, "the size limit should have forced several files"
    assert files == [f"cap_{i:05d}.pcapng" for i in range(n_files - 2, n_files + 1)]
    assert w.files and len(w.files) == 3
    seen = []
    for name in files:
        path = tmp_path / name
        assert path.stat().st_size <= ROT + max(len(f) for f in frames) + 200
        r = open_capture(str(path))
        recs = list(r)
        r.f.close()
        assert r.errors == []
        assert {lt for _, lt, _ in recs} == {1}
        seen += recs
        # independent reader: dpkt agrees on the records, nanosecond timestamps and lengths
        import dpkt

        with open(path, "rb") as fh:
            d = list(dpkt.pcapng.Reader(fh))
        assert [bytes(b) for _, b in d] == [f for _, _, f in recs]
    first = frames.index(seen[0][2])
    assert [f for _, _, f in seen] == frames[first:]
    assert seen[0][0] == pytest.approx((t0 + first * 1000) * 1e-9, abs=1e-6)


def test_pcapng_records_kernel_counters_and_original_length(tmp_path):
    path = tmp_path / "one.pcapng"
    w = PcapngWriter(str(path), [("lo", 1)])
    w.set_counters(0, Counters(received=12, dropped=3))
    w.write(0, 5_000_000_123, b"\x00" * 61, 1500)
    w.close()
    raw = path.read_bytes()
    blocks, off = [], 0
    while off < len(raw):
        btype, blen = struct.unpack_from("<II", raw, off)
        blocks.append((btype, raw[off:off + blen]))
        off += blen
    assert [b for b, _ in blocks] == [0x0A0D0D0A, 1, 6, 5]
    epb = blocks[2][1]
    assert struct.unpack_from("<IIIII", epb, 8) == (0, 1, 5_000_000_123 - (1 << 32), 61, 1500)
    isb = blocks[3][1]
    opts = isb[20:-4]
    found = {}
    while opts:
        code, ln = struct.unpack_from("<HH", opts)
        if code == 0:
            break
        found[code] = struct.unpack_from("<Q", opts, 4)[0]
        opts = opts[4 + ln + (-ln % 4):]
    assert found == {4: 12, 5: 3}


# ---------------------------------------------------------------- the capture socket

@needs_capture
@pytest.mark.parametrize("iface, mode", [("lo", "ring"), ("lo", "recv"), ("any", "ring")])
def test_kernel_filter_on_loopback_sees_each_segment_once(iface, mode):
    wanted, other = listener(), listener()
    port = wanted.getsockname()[1]
    src = AfPacketSource(iface, f"tcp port {port}", mode=mode)
    try:
        play(wanted)
        play(other)  # same traffic on another port: the kernel filter must keep it out
        time.sleep(0.2)
        pk = []
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            got = src.read()
            pk += got
            if not got and pk:
                break
            if not got:
                time.sleep(0.06)
        c = src.poll_stats()
    finally:
        src.close()
        wanted.close()
        other.close()
    segs = [tcp_segment(f, src.linktype) for _, f, _ in pk]
    assert src.linktype == (113 if iface == "any" else 1)
    assert all(type(s) is tuple for s in segs)
    tcp_segs = [s for s in segs if not isinstance(s, str)]  # all of them (asserted above)
    assert {s[1] for s in tcp_segs} | {s[3] for s in tcp_segs} >= {port}
    assert all(port in (s[1], s[3]) for s in tcp_segs)
    payload_c2s = b"".join(s[7] for s in tcp_segs if s[3] == port)
    assert payload_c2s == b"".join(encode(r) for r, _ in SCRIPT)
    keys = [(s[1], s[4], s[6], len(s[7])) for s in tcp_segs]
    assert len(keys) == len(set(keys)), "a segment was seen twice (loopback outgoing copy not dropped)"
    assert c.received == len(pk) and c.dropped == 0
    ts = [t for t, _, _ in pk]
    assert ts == sorted(ts) and abs(ts[0] / 1e9 - time.time()) < 30


@needs_capture
def test_kernel_drops_are_counted_not_hidden():
    """A 2 MiB ring nobody reads while 16 MiB pass: the kernel drops, and says so."""
    lst = listener()
    port = lst.getsockname()[1]
    src = AfPacketSource("lo", f"tcp port {port}", buffer_size=2 << 20)
    try:
        def sink() -> None:
            conn, _ = lst.accept()
            with conn:
                while conn.recv(1 << 20):
                    pass

        t = threading.Thread(target=sink)
        t.start()
        with socket.create_connection(("127.0.0.1", port)) as sock:
            for _ in range(256):
                sock.sendall(b"\x00" * 65536)
        t.join(10)
        time.sleep(0.2)
        read = 0
        while True:
            got = src.read()
            if not got:
                break
            read += len(got)
        c = src.poll_stats()
    finally:
        src.close()
        lst.close()
    assert c.dropped > 0
    assert c.received == read + c.dropped


def test_unknown_interface_lists_the_available_ones():
    r = CliRunner().invoke(live, ["-i", "nosuch0"])
    assert r.exit_code == 1
    lines = r.output.strip().splitlines()
    assert len(lines) == 1
    assert "no interface named 'nosuch0'" in lines[0]
    names = [n for _, n in socket.if_nameindex()]
    assert all(n in lines[0] for n in names) and "any" in lines[0]


def test_bad_capture_filter_is_one_line():
    if not _can_capture():
        pytest.skip("needs capture permission to reach the filter")
    r = CliRunner().invoke(live, ["-i", "lo", "-f", "tcp prot 80"])
    assert r.exit_code == 1
    assert r.output.count("\n") == 1 and "bad capture filter 'tcp prot 80'" in r.output


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_without_permission_says_which_capability_is_missing():
    # imports first: the interpreter's files need not be readable by "nobody"
    code = ("import os, sys, rmqsniff.filter, rmqsniff.exporters.promhttp; from rmqsniff.cli_live import live;"
            "os.setgid(65534); os.setuid(65534); live(['--interface', 'lo'], prog_name='rmqsniff')")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd="/",
                       timeout=60)
    assert p.returncode == 1, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert "CAP_NET_RAW" in lines[0] and "setcap" in lines[0] and "lo" in lines[0]


# ---------------------------------------------------------------- the tap, in process and as the CLI

@needs_capture
def test_prometheus_endpoint_serves_the_live_stats_while_capturing():
    lst = listener()
    port = lst.getsockname()[1]
    tap = LiveTap([AfPacketSource("lo", f"tcp port {port}")], ports=[port], stat_prefix="tap")
    ep = StatsEndpoint(("127.0.0.1", 0), tap.route()).start()
    stop = threading.Event()
    runner = threading.Thread(target=tap.run, kwargs={"stop": stop.is_set, "tick": 0.1})
    runner.start()
    try:
        scraped_during = []
        player = threading.Thread(target=play, args=(lst,))
        player.start()
        while player.is_alive():  # scrape while packets are being decoded
            scraped_during.append(urllib.request.urlopen(ep.url + "/metrics", timeout=5).read().decode())
        player.join()
        deadline = time.monotonic() + 5
        while tap.snapshot().stats["counters"]["request"] < N_REQUESTS and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)
        metrics = urllib.request.urlopen(ep.url + "/metrics", timeout=5).read().decode()
        envoy = urllib.request.urlopen(ep.url + "/stats", timeout=5).read().decode()
        as_json = urllib.request.urlopen(ep.url + "/stats?format=json", timeout=5).read()
        recent = json.loads(urllib.request.urlopen(ep.url + "/exchanges?limit=0", timeout=5).read())
        sends = json.loads(urllib.request.urlopen(
            ep.url + "/exchanges?limit=0&filter=code%20%3D%3D%20SEND_MESSAGE_V2", timeout=5).read())
        ready = urllib.request.urlopen(ep.url + "/ready", timeout=5).read()
    finally:
        stop.set()
        runner.join(5)
        tap.finish()
        ep.close()
        lst.close()
    assert scraped_during
    for text in scraped_during:  # every scrape parses, even mid-capture
        list(text_string_to_metric_families(text))
    fams = {f.name: f for f in text_string_to_metric_families(metrics)}
    val = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in fams.values() for s in f.samples}
    pre = (("stat_prefix", "tap"),)
    assert val[("rocketmq_request_total", pre)] == N_REQUESTS
    assert val[("rocketmq_send_message_v2_total", pre)] == N_SENDS
    assert val[("rocketmq_oneway_total", pre)] == N_ONEWAY
    assert val[("rocketmq_response_error_total", pre)] == N_ERRORS
    assert val[("rocketmq_answered_total", pre)] == N_REQUESTS - N_ONEWAY
    assert val[("rocketmq_request_time_ms_count", pre)] == N_REQUESTS - N_ONEWAY
    lo = (("interface", "lo"), ("stat_prefix", "tap"))
    assert val[("rocketmq_capture_kernel_drops_total", lo)] == 0
    assert val[("rocketmq_capture_packets_total", lo)] == tap.packets > 2 * N_REQUESTS
    topics = {s.labels["key"]: s.value for s in fams["rocketmq_breakdown_requests"].samples
              if s.labels["by"] == "topic"}
    assert topics == {"orders": 4 + 2, "payments": 2, "<none>": 1}  # sends, route queries; heartbeat
    ev = envoy_values(envoy)
    assert ev["rocketmq.tap.request"] == str(N_REQUESTS)
    assert ev["rocketmq.tap.capture.lo.kernel_drops"] == "0"
    assert envoy.startswith(render_envoy(tap.stats)) and envoy == render_stats(tap.reading())
    assert b'"send_message_v2":6' in as_json
    # the routes the proxy serves too: the latest exchanges as read --format json prints them
    assert recent["count"] == len(recent["exchanges"]) == N_REQUESTS
    assert sends["count"] == N_SENDS and all(e["request"]["name"] == "SEND_MESSAGE_V2" for e in sends["exchanges"])
    assert ready == b"LIVE\n"


def _start_cli(args: list[str], cwd: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.Popen([sys.executable, "-m", "rmqsniff", "live", *args], cwd=cwd, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stderr is not None
    seen = ""
    deadline = time.monotonic() + 60
    while "listening on" not in seen:
        line = p.stderr.readline()
        if not line and p.poll() is not None:
            raise AssertionError(f"rmqsniff live exited: {seen}")
        seen += line
        assert time.monotonic() < deadline, seen
    return p


def _stop_cli(p: subprocess.Popen) -> tuple[str, str]:
    time.sleep(0.3)  # the ring hands over a block at most 50 ms after its first packet
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    return out, err


@needs_capture
@pytest.mark.parametrize("iface", ["lo", "any"])
def test_cli_final_stats_equal_the_truth_and_stats_of_its_own_pcapng(tmp_path, iface):
    lst = listener()
    port = lst.getsockname()[1]
    p = _start_cli(["-i", iface, "-f", f"tcp port {port}", "--port", str(port), "-w", "live.pcapng",
                    "--stat-prefix", "t"], tmp_path)
    try:
        play(lst)
    finally:
        lst.close()
        out, err = _stop_cli(p)
    ev = envoy_values(out)
    assert ev["rocketmq.t.request"] == str(N_REQUESTS)
    assert ev["rocketmq.t.send_message_v2"] == str(N_SENDS)
    assert ev["rocketmq.t.oneway"] == str(N_ONEWAY)
    assert ev["rocketmq.t.response_error"] == str(N_ERRORS)
    assert ev["rocketmq.t.request_code.GET_ROUTEINFO_BY_TOPIC.requests"] == "2"
    assert ev["rocketmq.t.unanswered"] == "0" and ev["rocketmq.t.orphan"] == "0"
    assert re.search(r"\b0 dropped by kernel", err)
    # the same stats from the file it wrote, through `rmqsniff stats`
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    st = subprocess.run([sys.executable, "-m", "rmqsniff", "stats", "--stat-prefix", "t", "--port", str(port),
                         str(tmp_path / "live.pcapng")], capture_output=True, text=True, env=env, timeout=60)
    assert st.returncode == 0, st.stderr
    assert out == st.stdout
    res = analyze([str(tmp_path / "live.pcapng")], ports=[port])
    assert {lt for _, lt, _ in open_capture(str(tmp_path / "live.pcapng"))} == {113 if iface == "any" else 1}
    assert [request_of(e).opaque for e in res.exchanges] == [r.opaque for r, _ in SCRIPT]


@needs_capture
def test_display_filter_counts_only_selected_exchanges(tmp_path):
    lst = listener()
    port = lst.getsockname()[1]
    p = _start_cli(["-i", "lo", "-f", f"tcp port {port}", "--port", str(port), "-Y", "code == SEND_MESSAGE_V2"],
                   tmp_path)
    try:
        play(lst)
    finally:
        lst.close()
        out, _ = _stop_cli(p)
    ev = envoy_values(out)
    assert ev["rocketmq.rmqsniff.request"] == str(N_SENDS)
    assert ev["rocketmq.rmqsniff.send_message_v2"] == str(N_SENDS)
    assert ev["rocketmq.rmqsniff.get_topic_route"] == "0"


@needs_capture
def test_count_stops_the_capture_and_the_file_holds_exactly_that_many(tmp_path):
    lst = listener()
    port = lst.getsockname()[1]
    p = _start_cli(["-i", "lo", "-f", f"tcp port {port}", "-c", "5", "-w", "five.pcapng"], tmp_path)
    try:
        play(lst)
        out, err = p.communicate(timeout=30)
    finally:
        lst.close()
    assert p.returncode == 0, err
    assert "stopped: count" in err
    assert len(list(open_capture(str(tmp_path / "five.pcapng")))) == 5
    assert envoy_values(out)["rocketmq.rmqsniff.transport.packets"] == "5"



# ---------------------------------------------------------------- the tap's pipeline, fed without sockets

def _file_packets(path: str) -> list[tuple[int, bytes, int]]:
    r = open_capture(path)
    out = [(round(ts * 1e9), f, len(f)) for ts, _, f in r]
    r.f.close()
    return out


def test_tap_decodes_like_the_file_pipeline(tmp_path):
    from rmqsniff.synth import write_capture

    path = str(tmp_path / "s.pcap")
    counts = write_capture(path, 600, connections=6)
    tap = LiveTap([], stat_prefix="x")
    pk = _file_packets(path)
    for i in range(0, len(pk), 97):  # in uneven batches, as ring blocks come
        tap.feed(0, pk[i:i + 97])
    tap.finish()
    s = tap.stats.snapshot()
    assert s["counters"]["request"] == counts["exchanges"]
    assert s["codes"]["310"]["requests"] == counts[310]
    assert s["transport"]["packets"] == counts["packets"] == tap.packets
    assert s["counters"]["unanswered"] == 0 and s["counters"]["orphan"] == 0


def test_idle_flows_are_expired_and_their_pending_requests_unanswered():
    from rmqsniff.capwriter import CaptureWriter, TcpSession

    frames: list[tuple[float, bytes]] = []

    class Grab(CaptureWriter):
        def __init__(self) -> None:
            pass

        def write(self, ts: float, frame: bytes) -> None:
            frames.append((ts, frame))

    t0 = 1_700_000_000.0
    for n, client_port in enumerate((40001, 40002)):
        s = TcpSession(Grab(), ("10.0.0.1", client_port), ("10.0.0.2", 10911))
        s.handshake(t0 + n * 100)
        s.send(t0 + n * 100, True, encode(_send(1, "orders")))  # never answered
    tap = LiveTap([], idle=60.0)
    tap.feed(0, [(round(ts * 1e9), f, len(f)) for ts, f in frames])
    assert tap.stats.gauge("request_active") == 2
    tap.tick(now=t0 + 90)  # the first connection has been silent 90 s, the second is from the future
    assert tap.stats.counter("unanswered") == 1
    assert tap.stats.gauge("request_active") == 1
    tap.tick(now=t0 + 100 + 61)
    assert tap.stats.counter("unanswered") == 2
    assert len(tap.table._flows) == 0


def test_console_view_shows_rates_tops_and_drops():
    import tempfile

    from rich.console import Console

    from rmqsniff.cli_live import Rates, render_view
    from rmqsniff.live import CaptureState, LiveSnapshot
    from rmqsniff.synth import write_capture

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "v.pcap")
        write_capture(path, 300, connections=4)
        tap = LiveTap([])
        tap.feed(0, _file_packets(path))
    s = tap.snapshot(5)
    snap = LiveSnapshot(s.stats, [CaptureState("lo", 1, Counters(received=1000, dropped=25))], s.packets, 3.0)
    console = Console(record=True, width=200)
    console.print(render_view(snap, Rates().update(snap)))
    text = console.export_text()
    assert "kernel drops 25 (2.50%)" in text
    top_topic = max(s.stats["breakdowns"]["by_topic"]["rows"].items(), key=lambda kv: kv[1]["requests"])
    assert top_topic[0] in text and f"{top_topic[1]['requests']:,}" in text
    assert f"requests {s.stats['counters']['request']:,}" in text
    assert "SEND_MESSAGE_V2" in text


@needs_capture
def test_console_view_on_a_terminal_pauses_and_quits_by_key(tmp_path):
    import pty
    import select

    master, slave = pty.openpty()
    env = dict(os.environ, PYTHONPATH=str(ROOT), COLUMNS="140", LINES="50", TERM="xterm")
    p = subprocess.Popen([sys.executable, "-m", "rmqsniff", "live", "-i", "lo", "-f", "tcp port 9",
                          "--refresh", "0.2"], stdin=slave, stdout=slave, stderr=slave, env=env, cwd=tmp_path)
    os.close(slave)
    seen = b""

    def until(text: bytes, timeout: float = 30) -> None:
        nonlocal seen
        deadline = time.monotonic() + timeout
        while text not in seen:
            assert time.monotonic() < deadline, seen[-2000:]
            if select.select([master], [], [], 0.2)[0]:
                try:
                    seen += os.read(master, 65536)
                except OSError:
                    break

    try:
        until(b"p: pause, q: quit")
        os.write(master, b"p")
        until(b"PAUSED")
        os.write(master, b"q")
        until(b"stopped: interrupted")
        assert p.wait(30) == 0
    finally:
        if p.poll() is None:
            p.kill()
        os.close(master)
    assert b"[final]" in seen and b"kernel drops 0" in seen


def _stats_of(files: list[Path], *args: str) -> str:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    st = subprocess.run([sys.executable, "-m", "rmqsniff", "stats", *args, *map(str, files)], capture_output=True,
                        text=True, env=env, timeout=120)
    assert st.returncode == 0, st.stderr
    return st.stdout


@needs_capture
def test_rotated_files_together_give_the_live_stats(tmp_path):
    lst = listener()
    port = lst.getsockname()[1]
    p = _start_cli(["-i", "lo", "-f", f"tcp port {port}", "--port", str(port), "-w", "rot.pcapng",
                    "--rotate", "1kB"], tmp_path)
    try:
        play(lst)
    finally:
        lst.close()
        out, err = _stop_cli(p)
    files = sorted(tmp_path.glob("rot_*.pcapng"))
    assert len(files) >= 3 and not (tmp_path / "rot.pcapng").exists()
    assert f"{len(files)} files" in err
    assert _stats_of(files, "--port", str(port)) == out
    assert envoy_values(out)["rocketmq.rmqsniff.request"] == str(N_REQUESTS)


@needs_capture
def test_several_interfaces_in_one_capture(tmp_path):
    other = [n for _, n in socket.if_nameindex() if n != "lo"]
    if not other:
        pytest.skip("no interface besides lo")
    lst = listener()
    port = lst.getsockname()[1]
    p = _start_cli(["-i", "lo", "-i", other[0], "-p", "-f", f"tcp port {port}", "--port", str(port),
                    "-w", "two.pcapng"], tmp_path)
    try:
        play(lst)
    finally:
        lst.close()
        out, err = _stop_cli(p)
    assert f"{other[0]}: 0 packets received by filter" in err  # the test's traffic stays on loopback
    assert re.search(r"lo: [1-9]\d* packets received by filter, 0 dropped", err)
    r = open_capture(str(tmp_path / "two.pcapng"))
    list(r)
    r.f.close()
    assert [i.name for i in r.interfaces] == ["lo", other[0]]
    assert _stats_of([tmp_path / "two.pcapng"], "--port", str(port)) == out
    assert envoy_values(out)["rocketmq.rmqsniff.send_message_v2"] == str(N_SENDS)


@needs_capture
def test_any_does_not_count_traffic_from_before_its_filter(tmp_path):
    """On "any" the socket receives everything from socket() until the filter is attached (the
    filter compiles in between): that traffic is neither ours nor our kernel drops."""
    lst = listener()
    port = lst.getsockname()[1]
    cli = socket.create_connection(("127.0.0.1", port))
    srv, _ = lst.accept()
    stop = threading.Event()

    def flood() -> None:  # loopback traffic on a port the filter leaves out
        chunk = b"x" * 65536
        while not stop.is_set():
            cli.sendall(chunk)

    def sink() -> None:
        while not stop.is_set():
            if not srv.recv(1 << 20):
                return

    threads = [threading.Thread(target=flood, daemon=True), threading.Thread(target=sink, daemon=True)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.2)
        src = AfPacketSource("any", f"tcp port {port + 1}")
        try:
            time.sleep(0.3)
            src.read()
            c = src.poll_stats()
        finally:
            src.close()
    finally:
        stop.set()
        cli.close()
        srv.close()
        lst.close()
    assert (c.received, c.dropped) == (0, 0), c


# ---------------------------------------------------------------- gRPC through the live tap

def _grpc_chunks(path: Path) -> list[tuple[bool, bytes]]:
    """The payloads of the first gRPC connection of a real capture, in capture order."""
    import dpkt

    out: list[tuple[bool, bytes]] = []
    client = None
    with path.open("rb") as f:
        for _ts, buf in dpkt.pcap.Reader(f):
            tcp = getattr(dpkt.ethernet.Ethernet(buf).data, "data", None)
            if not isinstance(tcp, dpkt.tcp.TCP) or 8081 not in (tcp.sport, tcp.dport):
                continue
            cport = tcp.sport if tcp.dport == 8081 else tcp.dport
            if client is None and tcp.flags & dpkt.tcp.TH_SYN and tcp.dport == 8081:
                client = cport
            if cport == client and tcp.data:
                out.append((tcp.dport == 8081, bytes(tcp.data)))
    return out


@needs_capture
def test_live_tap_decodes_grpc_on_any_port_and_serves_it():
    """Real gRPC bytes (grpc_python.pcap, Python client and real proxy) replayed over a loopback
    connection on a random port: the tap recognises the preface, decodes every call as the file
    pipeline decodes the capture, and /exchanges shows them as read --format json does."""
    src = ROOT / "captures" / "grpc_python.pcap"
    chunks = _grpc_chunks(src)
    assert chunks and chunks[0][0]
    lst = listener()
    port = lst.getsockname()[1]
    got: list = []
    tap = LiveTap([AfPacketSource("lo", f"tcp port {port}")], on_exchange=got.append)
    route = tap.route()
    stop = threading.Event()
    runner = threading.Thread(target=tap.run, kwargs={"stop": stop.is_set, "tick": 0.1})
    runner.start()
    try:
        c = socket.create_connection(("127.0.0.1", port))
        s, _ = lst.accept()
        with c, s:
            for from_client, data in chunks:
                (c if from_client else s).sendall(data)
                _recv_exact(s if from_client else c, len(data))
        time.sleep(0.5)
    finally:
        stop.set()
        runner.join(5)
        tap.finish()
        lst.close()
    offline = [ex for ex in analyze([str(src)]).exchanges if ex.protocol == "grpc"]
    first = min(ex.connection.id for ex in offline)  # the capture's first gRPC connection, as replayed
    want = [ex for ex in offline if ex.connection.id == first]

    def key(ex) -> tuple:
        return (ex.request.command.method if ex.request else None, ex.status,
                ex.response.command.code if ex.response else None)
    grpc = [ex for ex in got if ex.protocol == "grpc"]
    assert sorted(map(key, grpc)) == sorted(map(key, want))
    assert {ex.connection.recognised_by for ex in grpc} == {"preface"}
    status, _, body = route.respond("GET", "/exchanges?limit=0&filter=protocol%20%3D%3D%20grpc")
    doc = json.loads(body)
    assert status == 200 and doc["count"] == len(grpc)
    assert {e["request"]["method"] for e in doc["exchanges"]} == {key(ex)[0] for ex in want}
