"""``rmqsniff doctor`` against ``rmqsniff stats`` over one synthetic capture, measured in one run.

    python benchmarks/doctor.py [--exchanges 1000000] [--repeat 2] [--keep FILE]

Writes a remoting capture with :func:`rmqsniff.synth.write_capture` (sends, pulls with
stored messages, heartbeats, route lookups), then times, best CPU time of ``--repeat``
interleaved rounds, exactly what each command runs: ``stats`` (``Pipeline.consume``, its
stats-only fast lanes) and ``doctor`` (every exchange built, as it ends, fed to
:class:`rmqsniff.doctor.Doctor`).  Prints exchanges/s of each and the ratio.
Goal: doctor >= 0.7 x stats.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from rmqsniff.doctor import Doctor  # noqa: E402
from rmqsniff.pipeline import Pipeline  # noqa: E402
from rmqsniff.synth import write_capture  # noqa: E402

GOAL = 0.7


def time_stats(path: str) -> float:
    t = time.process_time()
    Pipeline(ordered=False).consume([path])
    return time.process_time() - t


def time_doctor(path: str) -> tuple[float, int]:
    t = time.process_time()
    d = Doctor()
    for ex in Pipeline(ordered=False).run([path]):
        d.feed(ex)
    d.findings()
    return time.process_time() - t, d.exchanges


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--exchanges", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--keep", help="write the capture here (and reuse it if it exists)")
    a = ap.parse_args()
    tmp = None
    path = a.keep
    if path is None:
        fd, tmp = tempfile.mkstemp(suffix=".pcap")
        os.close(fd)
        path = tmp
    try:
        if not (a.keep and os.path.exists(a.keep)):
            written = write_capture(path, a.exchanges)
            print(f"capture: {written['exchanges']:,} exchanges, {written['packets']:,} packets, "
                  f"{os.path.getsize(path) / 1e6:.0f} MB")
        best_s = best_d = float("inf")
        n = 0
        for _ in range(a.repeat):
            best_s = min(best_s, time_stats(path))
            dt, n = time_doctor(path)
            best_d = min(best_d, dt)
        rs, rd = n / best_s, n / best_d
        ratio = rd / rs
        print(f"stats  {rs:>12,.0f} exchanges/s ({best_s:.2f} s CPU)")
        print(f"doctor {rd:>12,.0f} exchanges/s ({best_d:.2f} s CPU)")
        print(f"doctor / stats = {ratio:.2f} (goal >= {GOAL}) {'ok' if ratio >= GOAL else 'BELOW GOAL'}")
        return 0
    finally:
        if tmp is not None:
            os.unlink(tmp)


if __name__ == "__main__":
    sys.exit(main())
