"""Highest packet rate on loopback that the live tap decodes with zero kernel drops.

    python benchmarks/live.py [--packets 100000] [--modes ring,recv] [--write] [--start 10000]

Needs root (CAP_NET_RAW).  A capture of synthetic RocketMQ remoting traffic (the
project's own encoder: sends, pulls with message bodies, heartbeats, route
lookups) is replayed onto ``lo`` through an AF_PACKET socket at a paced rate,
while the tap runs in another process exactly as ``rmqsniff live`` runs it
(kernel BPF, ring or recvmsg, flow table, stats; ``--write`` adds pcapng output).
The frames go to a foreign MAC address, so the kernel's IP stack ignores them
and only taps see them.  Each trial replays the whole capture once; the rate
doubles until the tap drops, then is bisected.  A trial passes when the kernel
dropped nothing, every frame was seen and the decoded request count equals the
file's.  The sender is Python too: when it cannot reach a rate, that is reported
(the tap's limit is then above it).
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import socket
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from rmqsniff.pipeline import Pipeline  # noqa: E402
from rmqsniff.sources.pcapfile import open_capture  # noqa: E402
from rmqsniff.synth import write_capture  # noqa: E402

BPF = "ether src 02:00:00:00:00:01 or ether src 02:00:00:00:00:02"


def _tap(mode: str, write: str | None, ready, stop, out) -> None:
    from rmqsniff.live import LiveTap
    from rmqsniff.sources.afpacket import AfPacketSource, PcapngWriter

    src = AfPacketSource("lo", BPF, mode=mode)
    writer = PcapngWriter(write, [("lo", src.linktype)]) if write else None
    tap = LiveTap([src], writer=writer)
    ready.set()
    t0 = time.process_time()
    tap.run(stop=stop.is_set, tick=0.5)
    cpu = time.process_time() - t0
    tap.finish()
    c = src.counters
    out.put({"received": c.received, "dropped": c.dropped, "decoded": tap.packets,
             "requests": tap.stats.counter("request"), "cpu": cpu})


def trial(frames: list[bytes], rate: int, mode: str, write: str | None) -> dict:
    ctx = mp.get_context("fork")
    ready, stop, out = ctx.Event(), ctx.Event(), ctx.Queue()
    p = ctx.Process(target=_tap, args=(mode, write, ready, stop, out))
    p.start()
    if not ready.wait(30):
        p.kill()
        raise SystemExit("the tap did not start (root / CAP_NET_RAW needed)")
    time.sleep(0.2)
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind(("lo", 0))
    send = s.send
    batch = max(1, rate // 1000)  # pace every millisecond
    t0 = time.perf_counter()
    for i in range(0, len(frames), batch):
        due = t0 + i / rate
        while True:
            now = time.perf_counter()
            if now >= due:
                break
            if due - now > 0.002:
                time.sleep(due - now - 0.001)
        for f in frames[i:i + batch]:
            send(f)
    sent_s = time.perf_counter() - t0
    s.close()
    time.sleep(0.5)
    stop.set()
    r = out.get(timeout=120)
    p.join(30)
    r["achieved"] = len(frames) / sent_s
    return r


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--packets", type=int, default=100_000, help="packets in the replayed capture (about)")
    ap.add_argument("--modes", default="ring,recv")
    ap.add_argument("--write", action="store_true", help="the tap also writes a pcapng")
    ap.add_argument("--start", type=int, default=10_000, help="first rate tried (packets/s)")
    ap.add_argument("--max", type=int, default=1_000_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bench.pcap")
        write_capture(path, max(10, int(args.packets / 2.6)), connections=20)  # ~2.6 packets each
        r = open_capture(path)
        frames = [f for _, _, f in r]
        r.f.close()
        p = Pipeline(ordered=False)
        p.consume([path])
        want = p.stats.counter("request")
        print(f"replaying {len(frames):,} packets ({want:,} requests) onto lo; "
              f"{os.cpu_count()} CPUs; write pcapng: {args.write}")
        for mode in args.modes.split(","):
            out = os.path.join(tmp, "tap.pcapng") if args.write else None
            good, bad, rate, sender_limited = 0, None, args.start, False
            cpu_pp: list[float] = []
            while True:
                res = trial(frames, rate, mode, out)
                cpu_pp.append(res["cpu"] / max(1, res["decoded"]))
                ok = (res["dropped"] == 0 and res["received"] == res["decoded"] == len(frames)
                      and res["requests"] == want)
                print(f"  {mode:5s} target {rate:>9,}/s  sent {res['achieved']:>9,.0f}/s  "
                      f"seen {res['received']:>8,}  decoded {res['decoded']:>8,}  kernel drops {res['dropped']:>7,}  "
                      f"requests {res['requests']:>7,}/{want:,}  tap cpu {1e6 * cpu_pp[-1]:.1f} µs/pkt  "
                      f"{'ok' if ok else 'LOSS'}")
                if ok:
                    good = max(good, int(min(rate, res["achieved"])))
                    if res["achieved"] < rate * 0.9:
                        sender_limited = True
                        break
                else:
                    bad = rate if bad is None else min(bad, rate)
                if bad is None:
                    if rate >= args.max:
                        break
                    rate *= 2
                elif bad - good <= max(2_000, good // 10):
                    break
                else:
                    rate = (good + bad) // 2
            note = " (the sender's limit: the tap keeps up beyond it)" if sender_limited else ""
            print(f"{mode}: highest zero-drop rate {good:,} packets/s{note}; "
                  f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; "
                  f"tap CPU-bound ceiling ~{1 / statistics.median(cpu_pp):,.0f} packets/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
