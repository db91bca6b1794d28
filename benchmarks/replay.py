"""Replay rate accuracy: achieved vs requested rate at 1k, 5k and 10k req/s against a real cluster.

    python benchmarks/replay.py                         # starts a RocketMQ 5.3 cluster (tests/rocketmq)
    python benchmarks/replay.py --namesrv 127.0.0.1:9876 --allow-production   # reuse a running one

Replays the producer traffic of ``captures/remoting_json.pcap`` (topic mapped to a bench topic)
with ``--rate R --scale N --loop many --duration D`` through the engine, in-process, and
prints requested / achieved / ratio, late requests and errors per rate. Only 127.0.0.1.
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from replay.engine import RATE, Guard, Options, Pacing, Replay, Rules, build_plan  # noqa: E402
from replay.engine.safety import endpoint  # noqa: E402
from rmqsniff.pipeline import analyze  # noqa: E402

CAPTURE = ROOT / "captures" / "remoting_json.pcap"
TOPIC = "BenchReplay"


def run_one(plan, namesrv, rate: float, duration: float, scale: int, via_proxy: bool, prod_ok: bool) -> dict:
    opts = Options(target=namesrv, guard=Guard(["127.0.0.1"], plan.servers, prod_ok),
                   pacing=Pacing(RATE, rate=rate), rules=Rules(topics={"TopicTest": TOPIC}),
                   copies=scale, loops=1_000_000, duration=duration, timeout=3.0, via_proxy=via_proxy)
    try:
        import uvloop
        loop_factory = uvloop.new_event_loop
    except ImportError:
        loop_factory = asyncio.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as r:
        rep = r.run(Replay(plan, opts).run())
    return rep.to_dict()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--namesrv", help="a running name server on 127.0.0.1 (default: start a cluster)")
    ap.add_argument("--allow-production", action="store_true",
                    help="the running cluster uses the capture's own ports (9876/10911)")
    ap.add_argument("--rates", default="1000,5000,10000")
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--scale", type=int, default=40, help="concurrent copies of each session")
    ap.add_argument("--via-proxy", action="store_true")
    a = ap.parse_args()
    cluster = None
    if a.namesrv:
        namesrv = endpoint(a.namesrv)
        if namesrv[0] != "127.0.0.1":
            print("benchmarks only run against 127.0.0.1", file=sys.stderr)
            return 1
    else:
        from tests.rocketmq.cluster import Cluster, Ports

        cluster = Cluster(Path(tempfile.mkdtemp(prefix="rmqsniff-bench-")), ports=Ports.from_env()).start()
        namesrv = endpoint(cluster.namesrv_addr)
    try:
        if cluster is not None:
            cluster.admin(f"topic={TOPIC}")
        plan = build_plan(analyze([str(CAPTURE)]).exchanges)
        prod_ok = a.allow_production or (cluster is not None and namesrv in plan.servers)
        print(f"replay of {CAPTURE.name}: {plan.requests} requests/copy, scale {a.scale}, "
              f"{a.duration:g}s per rate, {'via proxy' if a.via_proxy else 'direct'}, target {namesrv[0]}:{namesrv[1]}")
        print(f"{'requested/s':>12} {'achieved/s':>11} {'ratio':>7} {'sent':>8} {'late':>7} {'errors':>7} "
              f"{'p50 ms':>7} {'p99 ms':>7}")
        for rate in (float(x) for x in a.rates.split(",")):
            t0 = time.monotonic()
            d = run_one(plan, namesrv, rate, a.duration, a.scale, a.via_proxy, prod_ok)
            ach = d["rate"]["achieved"] or 0.0
            print(f"{rate:>12,.0f} {ach:>11,.0f} {ach / rate:>7.3f} {d['sent']:>8} {d['late']:>7} {d['errors']:>7} "
                  f"{d['latency_ms']['p50']:>7.2f} {d['latency_ms']['p99']:>7.2f}   ({time.monotonic() - t0:.1f}s)")
    finally:
        if cluster is not None:
            cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
