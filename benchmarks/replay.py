"""Replay throughput: rate accuracy at 1k, 5k and 10k req/s, and the max replay rate vs
RocketMQ's own benchmark Producer against the same broker.

    python benchmarks/replay.py                         # starts a RocketMQ 5.3 cluster (tests/rocketmq)
    python benchmarks/replay.py --namesrv 127.0.0.1:9876 --allow-production   # reuse a running one

One run, one cluster, one topic:

1. rates: the sends of ``captures/remoting_json.pcap`` (``--filter``; topic mapped to a bench
   topic) replayed in-process with ``--rate R --scale N --loop many --duration D``; per rate:
   requested / achieved (requests sent over the pacing window) / ratio (goal 1 +- 2 %), late
   requests, errors, latency and the engine's CPU time per request replayed.
2. producer: ``org.apache.rocketmq.example.benchmark.Producer`` (rocketmq-example 5.5.0 from
   Maven Central, cached outside the repo) with ``--concurrency`` sync senders and the capture's
   mean message size, for ``--duration`` seconds; its steady-state "Send TPS".
3. max: the same replay with ``--max`` and ``--scale`` = ``--concurrency`` (as many sync send
   chains as the Producer has threads); prints max replay rate, Producer TPS and their ratio.
4. engine alone: the rates again against a local server that answers every send at once (in
   its own process), so the engine's own accuracy and CPU show apart from the broker's.

Per phase, the broker's CPU time per request too (when the benchmark started the cluster): on
a machine where replay and broker share the cores, a rate the broker cannot carry is missed
whatever the engine does.

Only 127.0.0.1.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import re
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from replay.engine import MAX, RATE, Guard, Options, Pacing, Replay, Rules, Target, build_plan  # noqa: E402
from replay.engine.safety import endpoint  # noqa: E402
from replay.proxy.server import new_event_loop  # noqa: E402
from rmqsniff.filter import compile_filter  # noqa: E402
from rmqsniff.pipeline import analyze  # noqa: E402

CAPTURE = ROOT / "captures" / "remoting_json.pcap"
TOPIC = "BenchReplay"
EXAMPLE_VERSION = "5.5.0"  # rocketmq-example is not published for 5.3.x; remoting is the same
EXAMPLE_POM = ROOT / "benchmarks" / "java" / "rocketmq-example-pom.xml"
PRODUCER = "org.apache.rocketmq.example.benchmark.Producer"
TPS = re.compile(r"Send TPS:\s*([0-9.]+).*?Send Failed:\s*(\d+)")
WARMUP_REPORTS = 3  # the Producer's first 1 s reports (JIT, routes) are left out


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


BROKER_PID: int | None = None  # the broker's pid when this benchmark started the cluster


def proc_cpu(pid: int | None) -> float | None:
    """CPU seconds (user + system) of process ``pid`` so far, None when unknown."""
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, TypeError):
        return None


class InstantServer(asyncio.Protocol):
    """Answers every request at once with a send result (the engine-alone phase)."""

    def connection_made(self, transport) -> None:
        self.t, self.buf = transport, bytearray()

    def data_received(self, data: bytes) -> None:
        from dissectors.remoting.command import FLAG_RESPONSE, RemotingCommand
        from dissectors.remoting.frame import decode_frame, encode

        b = self.buf
        b += data
        pos, out = 0, []
        while len(b) - pos >= 4:
            n = int.from_bytes(b[pos:pos + 4], "big")
            if len(b) - pos - 4 < n:
                break
            cmd = decode_frame(bytes(b[pos:pos + 4 + n]))
            pos += 4 + n
            if not cmd.flag & 2:  # oneway: no answer
                out.append(encode(RemotingCommand(0, FLAG_RESPONSE, cmd.opaque, ext={
                    "msgId": "7F00000100002A9F0000000000001000", "queueId": "0", "queueOffset": "1",
                    "MSG_REGION": "DefaultRegion", "TRACE_ON": "true"})))
        del b[:pos]
        if out:
            self.t.write(b"".join(out))


def _instant_server(port) -> None:
    async def main() -> None:
        srv = await asyncio.get_running_loop().create_server(InstantServer, "127.0.0.1", 0)
        port.value = srv.sockets[0].getsockname()[1]
        await asyncio.Event().wait()

    asyncio.run(main())


def run_replay(plan, namesrv, mode: str, rate: float, duration: float, scale: int, via_proxy: bool,
               prod_ok: bool, instant: tuple[str, int] | None = None) -> dict:
    """One in-process replay (every session sent to ``instant`` when given); its report as a
    dict plus ``cpu_us_per_request`` and ``broker_us_per_request``."""
    opts = Options(target=namesrv, guard=Guard(["127.0.0.1"], plan.servers, prod_ok),
                   pacing=Pacing(mode, rate=rate), rules=Rules(topics={"TopicTest": TOPIC}),
                   copies=scale, loops=1_000_000, duration=duration, timeout=3.0, via_proxy=via_proxy)
    if instant is not None:
        here = instant

        class InstantReplay(Replay):
            async def resolve(self) -> dict[int, Target | str]:
                self.targets = {s.id: Target(here, here, "local") for s in plan.sessions}
                return self.targets

        engine: Replay = InstantReplay(plan, opts)
    else:
        engine = Replay(plan, opts)
    b0, c0 = proc_cpu(BROKER_PID), cpu_seconds()
    with asyncio.Runner(loop_factory=new_event_loop) as r:  # uvloop when installed
        rep = r.run(engine.run())
    d = rep.to_dict()
    b1 = proc_cpu(BROKER_PID)
    d["cpu_us_per_request"] = (cpu_seconds() - c0) / max(1, d["sent"]) * 1e6
    d["broker_us_per_request"] = (b1 - b0) / max(1, d["sent"]) * 1e6 \
        if b0 is not None and b1 is not None and instant is None else None
    return d


def _worker(args: tuple, barrier, results) -> None:
    filter_text, namesrv, mode, rate, duration, scale, via_proxy, prod_ok = args
    plan = load_plan(filter_text)
    barrier.wait()
    d = run_replay(plan, namesrv, mode, rate, duration, scale, via_proxy, prod_ok)
    results.put({k: d[k] for k in ("sent", "late", "errors", "rate", "latency_ms", "cpu_us_per_request",
                                   "broker_us_per_request")})


def run_sharded(filter_text: str, plan, namesrv, mode: str, rate: float, duration: float, scale: int,
                via_proxy: bool, prod_ok: bool, workers: int) -> dict:
    """``run_replay`` in ``workers`` processes, each with 1/workers of the copies and of the rate,
    started together; sums (sent, late, errors, achieved rate), worst p50/p99, mean CPU/request."""
    if workers <= 1:
        return run_replay(plan, namesrv, mode, rate, duration, scale, via_proxy, prod_ok)
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(workers), ctx.Queue()
    share = (filter_text, namesrv, mode, rate / workers, duration, max(1, scale // workers), via_proxy, prod_ok)
    procs = [ctx.Process(target=_worker, args=(share, barrier, results)) for _ in range(workers)]
    b0 = proc_cpu(BROKER_PID)
    for pr in procs:
        pr.start()
    got = [results.get(timeout=duration + 300) for _ in procs]
    for pr in procs:
        pr.join()
    b1 = proc_cpu(BROKER_PID)
    sent = sum(d["sent"] for d in got)
    return {"sent": sent, "late": sum(d["late"] for d in got), "errors": sum(d["errors"] for d in got),
            "rate": {"achieved": sum(d["rate"]["achieved"] or 0.0 for d in got)},
            "latency_ms": {k: max(d["latency_ms"][k] for d in got) for k in ("p50", "p99")},
            "cpu_us_per_request": sum(d["cpu_us_per_request"] * d["sent"] for d in got) / max(1, sent),
            "broker_us_per_request": (b1 - b0) / max(1, sent) * 1e6 if b0 is not None and b1 is not None else None}


def load_plan(filter_text: str):
    return build_plan(analyze([str(CAPTURE)]).exchanges, flt=compile_filter(filter_text) if filter_text else None)


def example_lib() -> Path:
    """rocketmq-example and its dependencies, fetched by Maven into the cache once."""
    from tests.rocketmq import build

    return build._maven_copy(EXAMPLE_POM, build.cache_dir() / f"rocketmq-example-{EXAMPLE_VERSION}" / "lib")


def run_producer(lib: Path, namesrv: str, threads: int, size: int, seconds: float, work: Path,
                 start_timeout: float = 180.0) -> dict:
    """RocketMQ's benchmark Producer until it printed ``seconds`` 1 s reports after its warm-up
    ones; its steady-state TPS is their mean."""
    home = work / "producer"
    home.mkdir(parents=True, exist_ok=True)
    cmd = ["java", "-Xms256m", "-Xmx512m", f"-Duser.home={home}", f"-Drocketmq.log.root={home / 'logs'}",
           "-Dcom.rocketmq.sendMessageWithVIPChannel=false", "-cp", f"{lib}/*", PRODUCER,
           "-n", namesrv, "-t", TOPIC, "-w", str(threads), "-s", str(size), "-ri", "1000"]
    out_path = home / "stdout.log"
    want = WARMUP_REPORTS + max(1, round(seconds))
    reports: list[tuple[float, int]] = []
    with open(out_path, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        try:
            deadline = time.monotonic() + start_timeout + want * 2
            while len(reports) < want and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.5)
                text = out_path.read_text(errors="replace")
                reports = [(float(m.group(1)), int(m.group(2))) for m in TPS.finditer(text)]
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    steady = [tps for tps, _failed in reports[WARMUP_REPORTS:want]]
    if not steady:
        tail = "\n".join(out_path.read_text(errors="replace").splitlines()[-15:])
        raise RuntimeError(f"the benchmark Producer printed no steady-state 'Send TPS' line:\n{tail}")
    return {"tps": statistics.fmean(steady), "reports": len(steady), "max": max(steady),
            "failed": reports[-1][1]}


def mean_send_size(plan) -> int:
    sizes = [len(st.ex.request.command.body or b"") for s in plan.sessions for st in s.steps
             if st.code in (10, 310)]  # SEND_MESSAGE, SEND_MESSAGE_V2
    return max(1, round(statistics.fmean(sizes))) if sizes else 128


def row(label: str, d: dict, requested: float | None) -> str:
    ach = d["rate"]["achieved"] or 0.0
    ratio = f"{ach / requested:>7.3f}" if requested else f"{'':>7}"
    broker = d.get("broker_us_per_request")
    return (f"{label:>12} {ach:>11,.0f} {ratio} {d['sent']:>8} {d['late']:>7} {d['errors']:>7} "
            f"{d['latency_ms']['p50']:>7.2f} {d['latency_ms']['p99']:>7.2f} {d['cpu_us_per_request']:>10.0f} "
            f"{'-' if broker is None else f'{broker:.0f}':>13}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--namesrv", help="a running name server on 127.0.0.1 (default: start a cluster)")
    ap.add_argument("--allow-production", action="store_true",
                    help="the running cluster uses the capture's own ports (9876/10911)")
    ap.add_argument("--rates", default="1000,5000,10000")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per phase")
    ap.add_argument("--scale", type=int, default=100, help="concurrent copies of each session (rates)")
    ap.add_argument("--concurrency", type=int, default=64,
                    help="Producer threads = replay --scale in the max phase")
    ap.add_argument("--filter", default="code == SEND_MESSAGE_V2",
                    help="which captured requests to replay ('' = the default producer selection)")
    ap.add_argument("--via-proxy", action="store_true")
    ap.add_argument("--workers", type=int, default=1,
                    help="replay processes, each with 1/N of the copies and of the rate (2 cores: 1-2)")
    ap.add_argument("--skip-producer", action="store_true", help="no rocketmq-example Producer phase")
    ap.add_argument("--broker-pid", type=int, help="with --namesrv: the broker's pid (its CPU per request)")
    ap.add_argument("--skip-engine-alone", action="store_true", help="no phase against an instant local server")
    a = ap.parse_args()
    global BROKER_PID
    BROKER_PID = a.broker_pid
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
        BROKER_PID = cluster.pids.get("broker")
    work = Path(tempfile.mkdtemp(prefix="rmqsniff-bench-replay-"))
    try:
        if cluster is not None:
            cluster.admin(f"topic={TOPIC}")
        plan = load_plan(a.filter)
        prod_ok = a.allow_production or (cluster is not None and namesrv in plan.servers)
        ns_text = f"{namesrv[0]}:{namesrv[1]}"
        via = "via proxy" if a.via_proxy else "direct"
        print(f"replay of {CAPTURE.name} ({a.filter or 'producer traffic'}): {plan.requests} requests/copy "
              f"in {len(plan.sessions)} session(s), {a.duration:g}s per phase, {via}, target {ns_text}")
        run_replay(plan, namesrv, MAX, 0.0, min(3.0, a.duration), a.scale, a.via_proxy, prod_ok)  # warm-up
        head = (f"{'achieved/s':>11} {'ratio':>7} {'sent':>8} {'late':>7} {'errors':>7} "
                f"{'p50 ms':>7} {'p99 ms':>7} {'cpu us/req':>10} {'broker us/req':>13}")
        print(f"\nrate accuracy (scale {a.scale}, {a.workers} worker process(es); "
              "goal ratio 1 +- 0.02 where the broker keeps up)")
        print(f"{'requested/s':>12} {head}")
        for rate in (float(x) for x in a.rates.split(",")):
            d = run_sharded(a.filter, plan, namesrv, RATE, rate, a.duration, a.scale, a.via_proxy, prod_ok,
                            a.workers)
            ach = d["rate"]["achieved"] or 0.0
            ok = "ok" if abs(ach / rate - 1.0) <= 0.02 else "MISSED"
            print(row(f"{rate:,.0f}", d, rate) + f"  {ok}")

        producer = None
        if not a.skip_producer:
            size = mean_send_size(plan)
            lib = example_lib()
            print(f"\nRocketMQ benchmark Producer (rocketmq-example {EXAMPLE_VERSION}): {a.concurrency} threads, "
                  f"{size}-byte messages, {a.duration:g}s after {WARMUP_REPORTS}s of warm-up")
            producer = run_producer(lib, ns_text, a.concurrency, size, a.duration, work)
            print(f"  Send TPS {producer['tps']:,.0f} (mean of {producer['reports']} reports, "
                  f"max {producer['max']:,.0f}, send failed {producer['failed']})")
        d = run_sharded(a.filter, plan, namesrv, MAX, 0.0, a.duration, a.concurrency, a.via_proxy, prod_ok,
                        a.workers)
        print(f"\nreplay --max, scale {a.concurrency}, {a.workers} worker process(es)")
        print(f"{'':>12} {head}")
        print(row("max", d, None))
        mx = d["rate"]["achieved"] or 0.0
        if producer is not None:
            print(f"\nmax replay rate {mx:,.0f}/s, Producer {producer['tps']:,.0f} TPS: "
                  f"ratio {mx / producer['tps']:.2f}" if producer["tps"] else "Producer TPS 0")
        if not a.skip_engine_alone:
            ctx = multiprocessing.get_context("fork")
            port = ctx.Value("i", 0)
            srv = ctx.Process(target=_instant_server, args=(port,), daemon=True)
            srv.start()
            try:
                while not port.value and srv.is_alive():
                    time.sleep(0.05)
                print(f"\nengine alone: the same rates against a local server answering at once "
                      f"(its own process), scale {a.scale}, 1 process")
                print(f"{'requested/s':>12} {head}")
                for rate in (float(x) for x in a.rates.split(",")):
                    d = run_replay(plan, namesrv, RATE, rate, a.duration, a.scale, False, prod_ok,
                                   instant=("127.0.0.1", port.value))
                    ach = d["rate"]["achieved"] or 0.0
                    print(row(f"{rate:,.0f}", d, rate) + f"  {'ok' if abs(ach / rate - 1.0) <= 0.02 else 'MISSED'}")
            finally:
                srv.terminate()
                srv.join()
    finally:
        if cluster is not None:
            cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
