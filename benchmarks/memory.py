"""Peak memory of ``rmqsniff stats``: a >= 1 GB capture and a 1M-flow capture.

    python benchmarks/memory.py [--gb 1.0] [--flows 1000000] [--keep DIR]

Generates, in a temporary directory (deleted at the end unless ``--keep``):

* ``big.pcap``: >= 1 GB of remoting traffic on 64 long-lived connections: ROCKETMQ
  binary SEND_MESSAGE_V2 requests with ~1.3 KiB bodies and their responses, every
  opaque and TCP sequence number rising, 1 request in 500 left unanswered (as long
  polls are). Written by repeating pre-encoded frames with raw pcap record writes
  (the synthetic-traffic module is ~100x too slow for a gigabyte).
* ``flows.pcap``: 1M distinct TCP connections (SYN, GET_ROUTEINFO_BY_TOPIC request,
  error response, never closed), so the flow table must cap and evict (counted as
  ``transport.flows_evicted``).

then runs ``python -m rmqsniff stats --format json FILE`` on each in a subprocess and
reads that child's peak RSS from ``wait4`` (and the same for a tiny capture, the fixed
cost of the interpreter and imports). Prints the figures, the goal (<= 150 MB for the
1 GB capture) and the decoded counts that show the run did the work.
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from typing import Any

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

from dissectors.remoting.command import ROCKETMQ, RemotingCommand  # noqa: E402
from dissectors.remoting.frame import encode  # noqa: E402

GOAL_MB = 150
PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1)
REC = struct.Struct("<IIII")
ETH = b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00"
BROKER = socket.inet_aton("10.0.0.10")
SYN, PSH_ACK = 0x02, 0x18


class Packet:
    """A pre-built Ethernet/IPv4/TCP frame whose seq/ack (and remoting opaque) are patched
    in place before each write; checksums are left 0 (the analyzer does not check them)."""

    def __init__(self, src: bytes, sport: int, dst: bytes, dport: int, flags: int, payload: bytes) -> None:
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40 + len(payload), 0, 0x4000, 64, 6, 0, src, dst)
        tcp = struct.pack("!HHIIBBHHH", sport, dport, 0, 0, 5 << 4, flags, 65535, 0, 0)
        self.buf = bytearray(ETH + ip + tcp + payload)
        self.rec = bytearray(REC.pack(0, 0, len(self.buf), len(self.buf)))
        self.opaque_at = 14 + 40 + 13 if payload else -1  # ROCKETMQ header: length, mark, code, lang, version

    def write(self, out, ts_us: int, seq: int, ack: int, opaque: int | None = None) -> int:
        struct.pack_into("!II", self.buf, 14 + 20 + 4, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF)
        if opaque is not None:
            struct.pack_into(">i", self.buf, self.opaque_at, opaque)
        REC.pack_into(self.rec, 0, ts_us // 1_000_000, ts_us % 1_000_000, len(self.buf), len(self.buf))
        out.write(self.rec)
        out.write(self.buf)
        return 16 + len(self.buf)


def _frames() -> tuple[bytes, bytes]:
    ext = {"a": "PG_bench", "b": "TopicTest", "c": "TBW102", "d": "4", "e": "1", "f": "0",
           "g": "1700000000000", "h": "0", "i": "UNIQ_KEY\x01AC11000100002A9F0000000000000000\x02TAGS\x01TagA\x02",
           "j": "0", "k": "false", "m": "false"}
    req = encode(RemotingCommand(310, 0, 0, "JAVA", 479, None, ext, bytes(range(256)) * 5, ROCKETMQ))
    resp = encode(RemotingCommand(0, 1, 0, "JAVA", 479, None, {"msgId": "AC11000100002A9F0000000000000000",
                                                              "queueId": "1", "queueOffset": "42"}, None, ROCKETMQ))
    return req, resp


def write_big(path: str, target_bytes: int, connections: int = 64) -> dict:
    req, resp = _frames()
    conns: list[dict[str, Any]] = []
    for c in range(connections):
        cli = socket.inet_aton(f"10.0.1.{c + 1}")
        conns.append({
            "syn": Packet(cli, 40000 + c, BROKER, 10911, SYN, b""),
            "req": Packet(cli, 40000 + c, BROKER, 10911, PSH_ACK, req),
            "resp": Packet(BROKER, 10911, cli, 40000 + c, PSH_ACK, resp),
            "cseq": 1000 * c + 1, "sseq": 5_000_000 + c,
        })
    size, packets, exchanges, unanswered = len(PCAP_HEADER), 0, 0, 0
    ts = 1_700_000_000 * 1_000_000
    with open(path, "wb", buffering=1 << 22) as out:
        out.write(PCAP_HEADER)
        for conn in conns:
            size += conn["syn"].write(out, ts, conn["cseq"] - 1, 0)
            packets += 1
        opaque = 0
        while size < target_bytes:
            for conn in conns:
                opaque += 1
                ts += 50
                size += conn["req"].write(out, ts, conn["cseq"], conn["sseq"], opaque)
                conn["cseq"] += len(req)
                exchanges += 1
                packets += 1
                if opaque % 500 == 0:
                    unanswered += 1
                    continue
                ts += 200
                size += conn["resp"].write(out, ts, conn["sseq"], conn["cseq"], opaque)
                conn["sseq"] += len(resp)
                packets += 1
    return {"bytes": size, "packets": packets, "requests": exchanges, "unanswered": unanswered}


def write_flows(path: str, flows: int) -> dict:
    req = encode(RemotingCommand(105, 0, 0, "JAVA", 479, None, {"topic": "TopicTest"}, None, ROCKETMQ))
    resp = encode(RemotingCommand(17, 1, 0, "JAVA", 479, "No topic route info", None, None, ROCKETMQ))
    size, packets = len(PCAP_HEADER), 0
    ts = 1_700_000_000 * 1_000_000
    with open(path, "wb", buffering=1 << 22) as out:
        out.write(PCAP_HEADER)
        for i in range(flows):
            cli = struct.pack("!I", (10 << 24) | (1 << 16) + i // 50000)  # 10.1.x.y, 50k ports per address
            sport = 10000 + i % 50000
            syn = Packet(cli, sport, BROKER, 10911, SYN, b"")
            rq = Packet(cli, sport, BROKER, 10911, PSH_ACK, req)
            rs = Packet(BROKER, 10911, cli, sport, PSH_ACK, resp)
            ts += 20
            size += syn.write(out, ts, 99, 0)
            size += rq.write(out, ts + 5, 100, 7000, i)
            size += rs.write(out, ts + 10, 7000, 100 + len(req), i)
            packets += 3
    return {"bytes": size, "packets": packets, "flows": flows}


def peak_rss(path: str) -> tuple[float, float, dict]:
    """Run ``rmqsniff stats --format json`` on ``path``: (peak RSS MB, seconds, stats)."""
    import orjson

    t = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-m", "rmqsniff", "stats", "--format", "json", path], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout is not None and p.stderr is not None  # both PIPE
    out, err = p.stdout.read(), p.stderr.read()
    _pid, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    dt = time.perf_counter() - t
    if p.returncode != 0:
        sys.exit(f"rmqsniff stats failed on {path} (exit {p.returncode}): {err.decode()[-2000:]}")
    return usage.ru_maxrss / 1024, dt, orjson.loads(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gb", type=float, default=1.0, help="size of the big capture in GB (10^9 bytes)")
    ap.add_argument("--flows", type=int, default=1_000_000)
    ap.add_argument("--keep", metavar="DIR", help="write the captures here and keep them")
    args = ap.parse_args()
    tmp = args.keep or tempfile.mkdtemp(prefix="rmqsniff-mem-")
    os.makedirs(tmp, exist_ok=True)
    try:
        tiny, big, many = (os.path.join(tmp, n) for n in ("tiny.pcap", "big.pcap", "flows.pcap"))
        t = time.perf_counter()
        write_big(tiny, 100_000)
        wb = write_big(big, int(args.gb * 1e9))
        wf = write_flows(many, args.flows)
        print(f"generated in {time.perf_counter() - t:.0f} s: big {wb['bytes'] / 1e9:.2f} GB "
              f"({wb['packets']} packets, {wb['requests']} requests), flows {wf['bytes'] / 1e6:.0f} MB "
              f"({wf['flows']} connections, {wf['packets']} packets)")
        base, _, _ = peak_rss(tiny)
        rss_big, t_big, s_big = peak_rss(big)
        rss_flows, t_flows, s_flows = peak_rss(many)
        c_big = s_big["counters"]
        c_fl, tr_fl = s_flows["counters"], s_flows["transport"]
        assert c_big["request"] == wb["requests"], (c_big["request"], wb["requests"])
        assert c_fl["request"] == wf["flows"], (c_fl["request"], wf["flows"])
        print(f"{'capture':<28}{'peak RSS MB':>12}{'x tiny':>8}{'seconds':>9}{'MB/s':>8}  decoded")
        print(f"{'tiny (100 kB)':<28}{base:>12.0f}{1.0:>8.2f}")
        big_label = f"big ({wb['bytes'] / 1e9:.2f} GB)"
        flows_label = f"flows ({wf['flows']})"
        print(f"{big_label:<28}{rss_big:>12.0f}{rss_big / base:>8.2f}{t_big:>9.1f}"
              f"{wb['bytes'] / 1e6 / t_big:>8.1f}  requests {c_big['request']}, answered {c_big['answered']}, "
              f"unanswered {c_big['unanswered']}, decoding errors "
              f"{c_big['request_decoding_error'] + c_big['response_decoding_error']}")
        print(f"{flows_label:<28}{rss_flows:>12.0f}{rss_flows / base:>8.2f}{t_flows:>9.1f}"
              f"{wf['bytes'] / 1e6 / t_flows:>8.1f}  flows {tr_fl['flows']}, evicted {tr_fl['flows_evicted']}, "
              f"requests {c_fl['request']}, unanswered {c_fl['unanswered']}")
        verdict = "met" if rss_big <= GOAL_MB else "NOT met"
        print(f"goal: peak RSS <= {GOAL_MB} MB over the >= 1 GB capture: {verdict} ({rss_big:.0f} MB); "
              f"1M flows: {rss_flows:.0f} MB (flow table capped at the default, evictions counted: "
              f"{tr_fl['flows_evicted']})")
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
