"""Decode speed of ``rmqsniff stats`` against bare dpkt read loops, measured in one run.

    python benchmarks/decode.py [--exchanges 100000] [--keep FILE]

Generates a capture of remoting traffic (>= 200k packets by default, built by
the project's own encoder: sends, pulls with stored-message bodies, heartbeats,
route lookups, 20 % ROCKETMQ binary headers, pure ACKs), then times, over the
same file, best of ``--repeat`` runs each:

* ``dpkt read``   — ``for ts, buf in dpkt.pcap.Reader(f): pass`` (the bare read loop)
* ``dpkt parse``  — the same plus ``dpkt.ethernet.Ethernet(buf)`` down to the TCP payload
* ``rmqsniff stats`` — the full pipeline (reassembly, decode, pairing, Envoy stats),
  exactly what the ``stats`` command runs

and prints packets/s of each and the ratios.  Goal: stats >= 0.40 x dpkt read.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import dpkt  # noqa: E402

from rmqsniff.pipeline import Pipeline  # noqa: E402
from rmqsniff.synth import write_capture  # noqa: E402


def dpkt_read(path: str) -> int:
    n = 0
    with open(path, "rb") as f:
        for _ts, _buf in dpkt.pcap.Reader(f):
            n += 1
    return n


def dpkt_parse(path: str) -> int:
    n = 0
    with open(path, "rb") as f:
        for _ts, buf in dpkt.pcap.Reader(f):
            eth = dpkt.ethernet.Ethernet(buf)
            _payload = eth.data.data.data
            n += 1
    return n


def rmqsniff_stats(path: str) -> int:
    p = Pipeline(ordered=False)
    p.consume([path])
    assert not p.errors, p.errors[:3]
    return p.packets


def best(fn, path: str, repeat: int) -> tuple[float, int]:
    times = []
    n = 0
    for _ in range(repeat):
        t = time.perf_counter()
        n = fn(path)
        times.append(time.perf_counter() - t)
    return min(times), n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--exchanges", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", help="write the generated capture here (kept)")
    ap.add_argument("--profile", action="store_true", help="cProfile the rmqsniff run")
    args = ap.parse_args()
    path = args.keep or os.path.join(tempfile.mkdtemp(prefix="rmqsniff-bench-"), "bench.pcap")
    t = time.perf_counter()
    counts = write_capture(path, args.exchanges, connections=40)
    print(f"generated {counts['packets']} packets / {counts['exchanges']} exchanges "
          f"({os.path.getsize(path) / 1e6:.1f} MB) in {time.perf_counter() - t:.1f}s")
    if args.profile:
        import cProfile
        import pstats
        cProfile.run("rmqsniff_stats(path)", "/dev/null" if False else path + ".prof")
        pstats.Stats(path + ".prof").sort_stats("tottime").print_stats(25)
        return
    results = {}
    for name, fn in (("dpkt read", dpkt_read), ("dpkt parse", dpkt_parse), ("rmqsniff stats", rmqsniff_stats)):
        secs, n = best(fn, path, args.repeat)
        results[name] = n / secs
        print(f"{name:15s} {n:>9d} packets  {secs:7.3f}s  {n / secs:>10,.0f} packets/s")
    r_read = results["rmqsniff stats"] / results["dpkt read"]
    r_parse = results["rmqsniff stats"] / results["dpkt parse"]
    print(f"ratio rmqsniff stats / dpkt read : {r_read:.2f}  (goal >= 0.40: {'met' if r_read >= 0.40 else 'NOT met'})")
    print(f"ratio rmqsniff stats / dpkt parse: {r_parse:.2f}")
    if not args.keep:
        os.remove(path)


if __name__ == "__main__":
    main()
