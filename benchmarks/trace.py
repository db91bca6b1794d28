"""``rmqsniff trace`` against ``rmqsniff stats`` over one synthetic capture, and the journey
engine's memory per open journey.

    python benchmarks/trace.py [--exchanges 1000000] [--capture FILE] [--repeat 1]

The capture (:func:`write_journeys`, built like ``rmqsniff.synth``'s with the project's own
encoder and its broker and topics) holds messages whose hops join: sends answered with
offsets, pulls answered with those same stored messages a while later, offset commits,
heartbeats; cached under the temp folder.  Each mode runs in a child process of its own, so its
peak RSS is its own:

* ``stats`` — what ``rmqsniff stats`` runs (``Pipeline.consume``, stats-only lanes)
* ``trace`` — what ``rmqsniff trace --format jsonl`` runs (every exchange built, its hops
  joined by the journey engine, each journey written as JSON to /dev/null)

and prints exchanges/s of each, the ratio (goal: trace >= 0.5 x stats), peak RSS, journeys
flushed by the cap (:data:`rmqsniff.journey.MAX_OPEN_JOURNEYS`), and the bytes one open
journey costs (tracemalloc over the first ``--sample`` exchanges, no cap).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from benchmarks.cached import cached_capture  # noqa: E402

GOAL = 0.5


def write_journeys(path: str, exchanges: int, seed: int = 1, producers: int = 8, consumers: int = 4,
                   lag: int = 2000) -> dict[str, int]:
    """A capture whose messages make whole journeys: producers' SEND_MESSAGE_V2 (unique keys,
    answered with offset message id, queue and offset), a consumer group's PULL_MESSAGE
    answered with those stored messages ``lag`` messages later, each pull committing the offset
    pulled before (so earlier messages are consumed); heartbeats every 50 requests."""
    from dissectors.remoting.command import JSON, RemotingCommand
    from dissectors.remoting.frame import encode
    from dissectors.remoting.message import StoredMessage, encode_stored_message, properties_to_string
    from rmqsniff.capwriter import CaptureWriter, TcpSession
    from rmqsniff.synth import BROKER, TOPICS

    rng = random.Random(seed)
    counts = {"exchanges": 0, "messages": 0}
    queues = [(t, q) for t in TOPICS for q in range(4)]
    stored: dict[tuple[str, int], list[tuple[str, int, int]]] = {k: [] for k in queues}  # (key, offset, phys)
    pulled = dict.fromkeys(queues, 0)
    phys = 0
    with open(path, "wb") as f:
        w = CaptureWriter(f)
        sessions = []
        ts = 1700000000.0
        for c in range(producers + consumers):
            s = TcpSession(w, (f"10.0.2.{c + 1}", 41000 + c), BROKER, isn_client=rng.randrange(1 << 32),
                           isn_server=rng.randrange(1 << 32), mss=1460)
            s.handshake(ts)
            sessions.append(s)
        opaque = 0

        def turn(s: TcpSession, req: RemotingCommand, resp: RemotingCommand) -> None:
            nonlocal ts
            ts += rng.uniform(0.00005, 0.0003)
            s.send(ts, True, encode(req))
            s.send(ts + rng.uniform(0.0005, 0.002), False, encode(resp))
            counts["exchanges"] += 1

        while counts["exchanges"] < exchanges:
            opaque += 1
            if opaque % 50 == 0:
                hb = RemotingCommand(34, 0, opaque, "JAVA", 479, None, {}, b'{"clientID":"10.0.2.1@1#1"}', JSON)
                turn(sessions[opaque % len(sessions)], hb, RemotingCommand(0, 1, opaque, "JAVA", 479, None, {},
                                                                         None, JSON))
                continue
            if opaque % 3:  # a send
                topic, q = rng.choice(queues)
                offset = len(stored[(topic, q)])
                key = f"0A0002{counts['messages']:026X}"
                props = properties_to_string({"UNIQ_KEY": key, "WAIT": "true", "TAGS": "TagA",
                                              "KEYS": f"k{counts['messages']}"})
                req = RemotingCommand(310, 0, opaque, "JAVA", 479, None, {
                    "a": "PG_bench", "b": topic, "c": "TBW102", "d": "4", "e": str(q), "f": "0",
                    "g": str(int(ts * 1000)), "h": "0", "i": props, "j": "0", "k": "false", "m": "false",
                }, rng.randbytes(128), JSON)
                resp = RemotingCommand(0, 1, opaque, "JAVA", 479, None, {
                    "msgId": f"0A00000A00002A9F{phys:016X}", "queueId": str(q), "queueOffset": str(offset),
                }, None, JSON)
                stored[(topic, q)].append((key, offset, phys))
                phys += 300
                counts["messages"] += 1
                turn(sessions[opaque % producers], req, resp)
                continue
            topic, q = rng.choice(queues)
            start = pulled[(topic, q)]
            ready = stored[(topic, q)][start:max(start, len(stored[(topic, q)]) - lag // len(queues))][:2]
            req = RemotingCommand(11, 0, opaque, "JAVA", 479, None, {
                "consumerGroup": "CG_bench", "topic": topic, "queueId": str(q), "queueOffset": str(start),
                "maxMsgNums": "32", "sysFlag": "3", "commitOffset": str(start), "suspendTimeoutMillis": "15000",
                "subVersion": "1700000000000", "expressionType": "TAG"}, None, JSON)
            if not ready:
                resp = RemotingCommand(19, 1, opaque, "JAVA", 479, "OFFSET_OVERFLOW_ONE", {
                    "nextBeginOffset": str(start), "minOffset": "0", "maxOffset": str(start)}, None, JSON)
            else:
                body = b"".join(encode_stored_message(StoredMessage(
                    queue_id=q, queue_offset=off, physical_offset=ph, born_timestamp=int(ts * 1000) - 50,
                    born_host="10.0.2.1:41000", store_timestamp=int(ts * 1000) - 40, store_host="10.0.0.10:10911",
                    body=rng.randbytes(128), topic=topic, properties={"UNIQ_KEY": key, "TAGS": "TagA"},
                )) for key, off, ph in ready)
                pulled[(topic, q)] = start + len(ready)
                resp = RemotingCommand(0, 1, opaque, "JAVA", 479, "FOUND", {
                    "nextBeginOffset": str(start + len(ready)), "minOffset": "0",
                    "maxOffset": str(len(stored[(topic, q)]))}, body, JSON)
            turn(sessions[producers + opaque % consumers], req, resp)
        for s in sessions:
            s.close(ts + 0.01)
        w.close()
    return counts


def capture(n: int, path: str | None) -> str:
    return path or cached_capture("journeys", n, write_journeys, folder="rmqsniff-bench-trace")


def child(mode: str, path: str) -> dict[str, float]:
    """One measured run (in this process): seconds, exchanges, peak RSS."""
    import orjson

    from rmqsniff.journey import JourneyEngine, journey_to_dict
    from rmqsniff.journey.run import journeys
    from rmqsniff.pipeline import Pipeline

    t = time.process_time()
    out: dict[str, float] = {}
    if mode == "stats":
        p = Pipeline(ordered=False)
        p.consume([path])
        s = p.stats.snapshot()["exchanges"]
        out["exchanges"] = s["answered"] + s["unanswered"] + s["oneway"] + s["orphan"]
    else:
        pipes: list[Pipeline] = []
        engine = JourneyEngine()
        n = 0
        with open(os.devnull, "w") as f:
            for j in journeys([path], Pipeline, pipelines=pipes, engine=engine):
                f.write(orjson.dumps(journey_to_dict(j)).decode() + "\n")
                n += 1
        s = pipes[0].stats.snapshot()["exchanges"]
        out["exchanges"] = s["answered"] + s["unanswered"] + s["oneway"] + s["orphan"]
        out |= {"journeys": n, "flushed": engine.flushed, "flushed_unfinished": engine.flushed_unfinished,
                "max_open": engine.max_open}
    out["seconds"] = time.process_time() - t
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return out


def bytes_per_journey(path: str, sample: int) -> tuple[float, int]:
    """tracemalloc: memory the engine holds per open journey after ``sample`` exchanges."""
    import tracemalloc

    from rmqsniff.journey import JourneyEngine
    from rmqsniff.pipeline import Pipeline

    exchanges = []
    for ex in Pipeline().run([path]):
        exchanges.append(ex)
        if len(exchanges) >= sample:
            break
    engine = JourneyEngine(max_open=10**9)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for ex in exchanges:
        engine.feed(ex)
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    hops = sum(len(j.hops) for j in engine.open.values())
    return used / max(1, len(engine.open)), hops // max(1, len(engine.open))


def run_child(mode: str, path: str) -> dict[str, float]:
    r = subprocess.run([sys.executable, __file__, "--child", mode, "--capture", path], check=True,
                       capture_output=True, text=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--exchanges", type=int, default=1_000_000)
    ap.add_argument("--capture")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--sample", type=int, default=50_000)
    ap.add_argument("--child", choices=["stats", "trace"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.capture)))
        return
    path = capture(args.exchanges, args.capture)
    best: dict[str, dict[str, float]] = {}
    for _ in range(args.repeat):
        for mode in ("stats", "trace"):
            r = run_child(mode, path)
            if mode not in best or r["seconds"] < best[mode]["seconds"]:
                best[mode] = r
    rates = {m: r["exchanges"] / r["seconds"] for m, r in best.items()}
    for m, r in best.items():
        print(f"{m:<6} {r['exchanges']:>9.0f} exchanges in {r['seconds']:7.1f} s CPU = {rates[m]:>9.0f}/s, "
              f"peak RSS {r['peak_rss_mb']:.0f} MB")
    t = best["trace"]
    print(f"trace: {t['journeys']:.0f} journeys, {t['flushed']:.0f} flushed by the cap of {t['max_open']:.0f} "
          f"({t['flushed_unfinished']:.0f} unfinished)")
    ratio = rates["trace"] / rates["stats"]
    print(f"trace / stats = {ratio:.2f} (goal >= {GOAL}: {'met' if ratio >= GOAL else 'NOT met'})")
    per, hops = bytes_per_journey(path, args.sample)
    print(f"open journey: {per:.0f} bytes each (tracemalloc, {hops} hops on average, first {args.sample} exchanges)")


if __name__ == "__main__":
    main()
