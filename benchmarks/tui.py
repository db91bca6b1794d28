"""Time to first screen and filter time of ``rmqsniff tui`` on a generated capture.

    python benchmarks/tui.py [--exchanges 1000000] [--capture FILE] [--no-baseline]

Generates (once; cached in the temp dir, ~2.5 min for 1M) a remoting capture with
``rmqsniff.synth``, then drives the real app headless with textual's pilot and prints:

* time to first screen: from creating the app to the list showing its first rows
  (goal <= 2 s), and the full background load time with the RSS it took;
* UI latency while loading: round trip of a key press (``j``) during the load;
* per filter: time to the first filtered screen and to the complete result
  (goal <= 1 s), and one sort;
* the bare pipeline's load time over the same file (a subprocess), and the ratio.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from array import array

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from textual import events  # noqa: E402

from benchmarks.cached import cached_capture  # noqa: E402
from rmqsniff.filter import Columns, compile_filter  # noqa: E402
from rmqsniff.synth import write_capture  # noqa: E402
from rmqsniff.tui import RmqSniffApp  # noqa: E402
from rmqsniff.tui.exchange_list import ExchangeTable  # noqa: E402
from rmqsniff.tui.store import filter_into  # noqa: E402

FILTERS = ('code == SEND_MESSAGE_V2', 'latency > 3ms', 'topic == "orders"', 'status == error or conn == 3')
GOAL_FIRST_SCREEN = 2.0
GOAL_FILTER = 1.0


def capture(n: int, path: str | None) -> str:
    return path or cached_capture("tui", n, lambda p, k: write_capture(p, k, seed=1))


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


async def until(cond, timeout: float = 600.0, step: float = 0.002) -> None:
    end = time.perf_counter() + timeout
    while not cond():
        if time.perf_counter() > end:
            raise TimeoutError("benchmark step timed out")
        await asyncio.sleep(step)


async def painted(table: ExchangeTable) -> None:
    """Until the list has repainted (the frame counter moved)."""
    n = table.frames
    await until(lambda: table.frames != n)


async def drive(path: str) -> dict:
    res: dict = {"rss_before_mb": rss_mb()}
    t0 = time.perf_counter()
    app = RmqSniffApp([path])
    async with app.run_test(size=(200, 50)) as pilot:
        table = app.query_one(ExchangeTable)
        await until(lambda: len(table.view) > 0)
        await painted(table)
        res["first_screen_s"] = time.perf_counter() - t0
        res["first_row"] = table.render_line(1).text.strip()
        lat = []
        while app.store.loading:
            t = time.perf_counter()
            before = table.cursor
            app.post_message(events.Key("j", "j"))
            await until(lambda before=before: table.cursor != before or not app.store.loading)
            await painted(table)
            lat.append(time.perf_counter() - t)
            await asyncio.sleep(0.25)
        res["load_s"] = time.perf_counter() - t0
        res["key_latency_ms"] = (1000 * statistics.median(lat), 1000 * max(lat)) if lat else (0.0, 0.0)
        await until(lambda: len(app.view) == len(app.store.exchanges))
        res["exchanges"] = len(app.store.exchanges)
        res["rss_mb"] = rss_mb()
        res["filters"] = []
        for expr in FILTERS:
            t = time.perf_counter()
            assert app.apply_filter(expr)
            await until(lambda: app.view_gen == app._gen)
            await painted(table)
            first = time.perf_counter() - t
            await until(app.view_ready.is_set)
            full = time.perf_counter() - t
            t = time.perf_counter()  # the bare filter over the same store (its columns), UI idle
            filter_into(app.store.exchanges, compile_filter(expr), 0, len(app.store.exchanges), array("l"))
            bare = time.perf_counter() - t
            plain = list(app.store.exchanges)  # and per exchange (no columns), in CPU time
            t = time.process_time()
            filter_into(plain, compile_filter(expr), 0, len(plain), array("l"))
            per_ex = time.process_time() - t
            del plain
            res["filters"].append((expr, first, full, len(app.view), bare, per_ex))
        t = time.process_time()  # what the loader spent on the filter columns
        Columns().extend_to(app.store.exchanges, len(app.store.exchanges))
        res["columns_s"] = time.process_time() - t
        app.apply_filter("")
        await until(app.view_ready.is_set)
        t = time.perf_counter()
        app.action_sort(8)  # ms
        await until(app.view_ready.is_set)
        res["sort_s"] = time.perf_counter() - t
        t = time.perf_counter()
        app.action_reverse()
        await until(app.view_ready.is_set)
        await painted(table)
        res["reverse_s"] = time.perf_counter() - t
        await pilot.press("q")
    return res


def baseline(path: str) -> float:
    code = ("import sys,time; sys.path.insert(0, sys.argv[2]); from rmqsniff.pipeline import Pipeline;"
            "t=time.perf_counter(); n=sum(1 for _ in Pipeline().run([sys.argv[1]]));"
            "print(time.perf_counter()-t, n)")
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    out = subprocess.run([sys.executable, "-c", code, path, root], capture_output=True, text=True, check=True)
    return float(out.stdout.split()[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--exchanges", type=int, default=1_000_000)
    ap.add_argument("--capture", help="use this capture instead of a generated one")
    ap.add_argument("--no-baseline", action="store_true", help="skip the bare pipeline run")
    args = ap.parse_args()
    path = capture(args.exchanges, args.capture)
    print(f"capture: {os.path.basename(path)}, {os.path.getsize(path) / 1e6:.0f} MB", flush=True)
    r = asyncio.run(drive(path))
    ok = "ok" if r["first_screen_s"] <= GOAL_FIRST_SCREEN else "MISSED"
    print(f"time to first screen : {r['first_screen_s']:.2f} s  (goal <= {GOAL_FIRST_SCREEN:g} s: {ok})")
    print(f"  first row          : {r['first_row'][:100]}")
    print(f"background load      : {r['load_s']:.1f} s for {r['exchanges']} exchanges "
          f"({r['exchanges'] / r['load_s']:.0f}/s)")
    per = (r["rss_mb"] - r["rss_before_mb"]) * 1024 * 1024 / max(1, r["exchanges"])
    print(f"RSS after load       : {r['rss_mb']:.0f} MB ({per:.0f} B per exchange over the "
          f"{r['rss_before_mb']:.0f} MB before)")
    print(f"key latency (load)   : median {r['key_latency_ms'][0]:.0f} ms, max {r['key_latency_ms'][1]:.0f} ms")
    print(f"filters over {r['exchanges']} exchanges (first filtered screen / complete; goal <= {GOAL_FILTER:g} s):")
    n_ex = max(1, r["exchanges"])
    for expr, first, full, n, bare, per_ex in r["filters"]:
        ok = "ok" if full <= GOAL_FILTER else "MISSED"
        print(f"  {expr:<30} {first:5.2f} s / {full:5.2f} s  {n:>7} rows  {ok:<6}  bare columnar filter "
              f"{bare:5.2f} s (TUI / bare = {full / bare:.2f}); per exchange {per_ex:5.2f} s CPU "
              f"({per_ex / n_ex * 1e6:.2f} us each, columnar {bare / n_ex * 1e6:.3f} us)")
    print(f"filter columns       : {r['columns_s']:.2f} s CPU in the loader "
          f"({r['columns_s'] / n_ex * 1e6:.2f} us per exchange)")
    print(f"sort by latency      : {r['sort_s']:.2f} s, then r (reverse): {r['reverse_s']:.2f} s")
    if not args.no_baseline:
        b = baseline(path)
        print(f"bare pipeline load   : {b:.1f} s  -> TUI background load / bare pipeline = {r['load_s'] / b:.2f}")


if __name__ == "__main__":
    main()
