"""Proxy overhead: a real Java producer direct, through ``rmqsniff proxy`` and through HAProxy (TCP mode).

    python benchmarks/proxy.py                       # starts a RocketMQ 5.3 cluster (tests/rocketmq)
    python benchmarks/proxy.py --namesrv 127.0.0.1:9876 --broker 127.0.0.1:10911   # reuse a running one

One run, same cluster, one producer JVM (``benchmarks/java/BenchProducer.java``: sync sends of
``--size`` bytes) with a client per path. The paths take turns of ``--slice`` seconds (the order
rotates every cycle) through a warm-up, a latency phase (one sender: the unloaded send latency)
and a throughput phase (``--threads`` senders), so the machine's drift (other tenants, the
broker's page cache and GC, JIT) falls on every path alike. Paths:

* direct: the client is given the name server;
* rmqsniff: the client is given ``rmqsniff proxy``'s name-server listener; route rewriting
  sends its broker traffic through the proxy's discovered broker listener;
* haproxy: ``haproxy`` (Debian: ``apt-get install -y haproxy``) in TCP mode in front of the
  name server and the broker. HAProxy cannot rewrite route answers, so the producer rewrites
  the broker address on its side (an RPC hook): the bytes on the wire are the same.
* base (``--compare DIR``): the proxy of another checkout, e.g. ``git worktree add /tmp/base HEAD~1``.

``--tls``: the producer speaks TLS on every path (``-Dtls.enable=true``); rmqsniff terminates it
(``--tls enforcing --upstream-tls --upstream-insecure``: decrypts, decodes, encrypts again).

Prints msgs/s and p50/p99 send latency per path, then each path against direct: the throughput
ratio (messages over direct's in the same time; the spread of the per-turn ratios below it),
the added p50/p99, and the middle's CPU during its turns of the throughput phase (the producer
prints a line at the phase's start and end; a middle is idle while the others have their turns):
share of one core, CPU µs per message sent (one request and one response frame) and the
kernel's part of it. Below that, the whole machine's CPU in each path's turns (the producer
reads /proc/stat, its own and the cluster's /proc/PID/stat around every turn): how busy the
CPUs were and the CPU spent per message, in all and by the producer, name server and broker
(what the path costs the load itself; RocketMQ's own proxy is listed too, idle); with the CPUs
shared, the CPU budget that follows from it: if direct needs C0 µs of CPU per message and a
middle adds M, about C0 / (C0 + M) of direct's rate is left, so the 0.95 goal needs M <= C0 / 19.

Two CPU arrangements, one after the other on the same cluster (``--cpus`` picks one):
``shared``, everything on every CPU: on a small machine the producer, the broker and the middle
then compete, so any CPU the middle uses costs throughput (µs/msg is the steadier guide, HAProxy
the fair reference); ``isolated``, the cluster and the producer on the first CPU and the middles
on the others, as when the proxy has a host of its own (a cluster given with ``--namesrv`` is
not pinned). Goal for rmqsniff: >= 0.95 of direct, p50 added <= 0.2 ms. Only 127.0.0.1.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.rocketmq import build  # noqa: E402
from tests.rocketmq.cluster import Cluster, Ports  # noqa: E402

TOPIC = "BenchProxy"
GOAL_RATIO = 0.95
TLS_ARGS = ("--tls", "enforcing", "--upstream-tls", "--upstream-insecure")  # --tls: the proxy terminates TLS
GOAL_P50_ADDED_MS = 0.2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def local(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    if host != "127.0.0.1":
        raise SystemExit(f"benchmarks only run against 127.0.0.1, not {addr}")
    return host, int(port)


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(user + system, system) CPU seconds of a process (Linux /proc): all of it, and the
    kernel's part (syscalls, and on loopback the TCP work of delivering what it sends)."""
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan"), float("nan")
    tck = os.sysconf("SC_CLK_TCK")
    return (int(f[11]) + int(f[12])) / tck, int(f[12]) / tck


class RmqsniffProxy:
    """``rmqsniff proxy --namesrv 127.0.0.1:0=NS`` as a subprocess (uvloop when installed)."""

    name = "rmqsniff"

    def __init__(self, namesrv: str, root: Path = ROOT, name: str = "rmqsniff", cpus: set[int] | None = None,
                 extra: tuple[str, ...] = ()) -> None:
        self.name = name
        env = dict(os.environ, PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.proc = subprocess.Popen([sys.executable, "-m", "rmqsniff.cli_proxy", "--namesrv",
                                      f"127.0.0.1:0={namesrv}", *extra], cwd=root, env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                     preexec_fn=pinner(cpus))
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + 30
        while self.namesrv is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SystemExit("rmqsniff proxy did not start:\n" + "\n".join(self.lines))
            time.sleep(0.05)
        self.broker_map = ""

    def _read(self) -> None:
        assert self.proc.stderr is not None  # stderr=PIPE
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    @property
    def namesrv(self) -> str | None:
        for line in list(self.lines):
            m = re.match(r"namesrv (\S+) -> ", line)
            if m:
                return m[1]
        return None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        _stop(self.proc, 20)


class HAProxy:
    """``haproxy -db`` in TCP mode: one frontend for the name server, one for the broker."""

    name = "haproxy"

    def __init__(self, exe: str, namesrv: str, broker: str, work: Path, cpus: set[int] | None = None) -> None:
        ns_port, br_port = free_port(), free_port()
        cfg = work / "haproxy.cfg"
        cfg.write_text(f"""global
    maxconn 4096
defaults
    mode tcp
    timeout connect 5s
    timeout client 120s
    timeout server 120s
listen namesrv
    bind 127.0.0.1:{ns_port}
    server ns {namesrv}
listen broker
    bind 127.0.0.1:{br_port}
    server b {broker}
""")
        self.proc = subprocess.Popen([exe, "-db", "-f", str(cfg)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, preexec_fn=pinner(cpus))
        deadline = time.monotonic() + 15
        while not all(_open(p) for p in (ns_port, br_port)):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                assert self.proc.stderr is not None  # stderr=PIPE
                err = self.proc.stderr.read() if self.proc.poll() is not None else ""
                self.stop()
                raise SystemExit(f"haproxy did not start: {err}")
            time.sleep(0.05)
        self.namesrv = f"127.0.0.1:{ns_port}"
        self.broker_map = f"{broker}=127.0.0.1:{br_port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        _stop(self.proc, 10)


def pinner(cpus: set[int] | None):
    """A ``preexec_fn`` that keeps the child (and every thread it starts) on ``cpus``."""
    if not cpus:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


def _stop(proc: subprocess.Popen, grace: float) -> None:
    """Terminate ``proc``, kill it if it is still there after ``grace`` seconds."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def _open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def run_producer(cluster: Cluster, classes: Path, paths: dict[str, str], a, tag: str,
                 mids: dict[str, int], cpus: set[int]) -> dict:
    """One producer JVM over every path in turns (``paths``: name -> NAMESRV[@FROM=TO,...]).
    Its result per path, with ``mid_cpu_s`` for the paths in ``mids`` (name -> pid): the CPU
    seconds that middle used during the throughput phase (the producer prints a line at its start
    and end; a middle is idle while the other paths have their turns)."""
    cmd = cluster.java_cmd(f"bench/{tag}", classes, "BenchProducer", TOPIC, str(a.warmup), str(a.latency_seconds),
                           str(a.seconds), str(a.slice), str(a.threads), str(a.size),
                           *(f"{name}={spec}" for name, spec in paths.items()),
                           jvm=["-Dtls.enable=true"] if a.tls else [])
    budget = (a.warmup + a.latency_seconds + a.seconds) * len(paths) + 120
    # the cluster's processes, whose CPU the producer counts per turn beside its own (RocketMQ's
    # proxy, idle here, named so that it is not taken for the middle)
    env = dict(os.environ, BENCH_PIDS=",".join(f"{'rocketmq-proxy' if c == 'proxy' else c}={pid}"
                                               for c, pid in cluster.pids.items()))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=cluster.dir(f"bench/{tag}"), preexec_fn=pinner(cpus), env=env)
    timer = threading.Timer(budget, proc.kill)
    timer.start()
    out: list[str] = []
    marks: dict[str, dict[str, tuple[float, float]]] = {}  # phase -> middle -> (cpu s, of it kernel s)
    try:
        assert proc.stdout is not None  # stdout=PIPE
        for line in proc.stdout:
            out.append(line.rstrip("\n"))
            if line.startswith("PHASE "):
                marks[line.split()[1]] = {name: cpu_seconds(pid) for name, pid in mids.items()}
        proc.wait()
    finally:
        timer.cancel()
    lines = [ln for ln in out if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = "\n".join(out[-30:])
        raise SystemExit(f"producer ({tag}) failed (exit {proc.returncode}):\n{tail}")
    r = json.loads(lines[-1])["paths"]
    if "throughput" in marks and "done" in marks:
        for name in mids:
            (cpu1, sys1), (cpu0, sys0) = marks["done"][name], marks["throughput"][name]
            r[name]["mid_cpu_s"], r[name]["mid_sys_s"] = cpu1 - cpu0, sys1 - sys0
    return r


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--namesrv", help="a running name server on 127.0.0.1 (default: start a cluster)")
    ap.add_argument("--broker", help="its broker (needed with --namesrv, for HAProxy)")
    ap.add_argument("--seconds", type=float, default=30.0, help="throughput phase per path")
    ap.add_argument("--latency-seconds", type=float, default=6.0, help="latency phase (one sender) per path")
    ap.add_argument("--warmup", type=float, default=3.0, help="per path")
    ap.add_argument("--slice", type=float, default=1.0, help="seconds per turn: the paths take turns this long")
    ap.add_argument("--threads", type=int, default=8, help="senders in the throughput phase")
    ap.add_argument("--size", type=int, default=1024, help="message body bytes")
    ap.add_argument("--rounds", type=int, default=1, help="repeat the whole run (a new producer JVM and middles)")
    ap.add_argument("--no-haproxy", action="store_true")
    ap.add_argument("--tls", action="store_true",
                    help="the producer uses TLS (-Dtls.enable=true; the cluster's permissive mode takes it), the "
                         "proxy terminates it and speaks TLS upstream; HAProxy passes it through")
    ap.add_argument("--compare", metavar="DIR", type=Path,
                    help="also run the proxy of another checkout (e.g. a git worktree of the last commit): path 'base'")
    ap.add_argument("--cpus", choices=("shared", "isolated", "both"), default="both",
                    help="shared: everything on every CPU; isolated: the cluster and the producer on the "
                         "first CPU, the middles on the others (as when the proxy has a host of its own); "
                         "both (default): one after the other, same cluster")
    a = ap.parse_args()
    all_cpus = set(os.sched_getaffinity(0))
    modes = ["shared", "isolated"] if a.cpus == "both" else [a.cpus]
    if "isolated" in modes and len(all_cpus) < 2:
        if a.cpus == "isolated":
            ap.error("isolated needs two CPUs")
        modes = ["shared"]

    work = Path(tempfile.mkdtemp(prefix="rmqsniff-bench-proxy-"))
    classes = build._javac(sorted((ROOT / "benchmarks" / "java").glob("*.java")), build.build_server(),
                           build.runtime_home() / "bench-classes")
    cluster = None
    if a.namesrv:
        if not a.broker:
            ap.error("--namesrv needs --broker")
        local(a.namesrv), local(a.broker)
        ns, br = a.namesrv, a.broker
        runner = Cluster(work / "cluster", ports=Ports(local(ns)[1], local(br)[1]))
    else:
        t0 = time.monotonic()
        cluster = runner = Cluster(work / "cluster", ports=Ports.from_env()).start()
        ns, br = cluster.namesrv_addr, cluster.broker_addr
        print(f"cluster started in {time.monotonic() - t0:.0f}s")
    haproxy = None if a.no_haproxy else shutil.which("haproxy")
    if haproxy is None and not a.no_haproxy:
        print("haproxy not found (Debian: apt-get install -y haproxy): that path is left out")
    paths = ["direct", "rmqsniff"] + (["base"] if a.compare else []) + (["haproxy"] if haproxy else [])
    results: dict[str, dict[str, list[dict]]] = {m: {p: [] for p in paths} for m in modes}
    try:
        runner.admin(f"topic={TOPIC}")
        print(f"producer: {a.threads} senders, {a.size}-byte bodies, sync sends; per path: warm-up {a.warmup:g}s, "
              f"latency {a.latency_seconds:g}s (1 sender), throughput {a.seconds:g}s; the paths take turns "
              f"every {a.slice:g}s; {a.rounds} round(s) per CPU arrangement")
        for mode in modes:
            run_mode(mode, a, all_cpus, cluster, runner, classes, (ns, br), work, haproxy, paths, results[mode])
    finally:
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(work, ignore_errors=True)
    verdicts = [report(mode, paths, results[mode], sorted(all_cpus)) for mode in modes]
    print()
    for line in verdicts:
        print(line)
    return 0


def run_mode(mode: str, a: argparse.Namespace, all_cpus: set[int], cluster: Cluster | None, runner: Cluster,
             classes: Path, cluster_addrs: tuple[str, str], work: Path, haproxy: str | None, paths: list[str],
             results: dict[str, list[dict]]) -> None:
    """The ``--rounds`` rounds of one CPU arrangement (``shared`` / ``isolated``), into ``results``."""
    ns, br = cluster_addrs
    load_cpus, mid_cpus = all_cpus, None
    if mode == "isolated":
        load_cpus, mid_cpus = {min(all_cpus)}, all_cpus - {min(all_cpus)}
    if cluster is not None:
        for pid in cluster.pids.values():
            pin_process(pid, load_cpus)
    print(f"CPUs {mode}: " + (f"cluster and producer on {sorted(load_cpus)}, middles on {sorted(mid_cpus)}"
                              if mid_cpus else f"everything on {sorted(all_cpus)}"))
    for rnd in range(a.rounds):
        mids: dict[str, RmqsniffProxy | HAProxy] = {}
        try:
            mids["rmqsniff"] = RmqsniffProxy(ns, cpus=mid_cpus, extra=TLS_ARGS if a.tls else ())
            if a.compare:
                mids["base"] = RmqsniffProxy(ns, a.compare.resolve(), "base", mid_cpus, TLS_ARGS if a.tls else ())
            if haproxy:
                mids["haproxy"] = HAProxy(haproxy, ns, br, work, mid_cpus)
            specs = {"direct": ns}
            for name, mid in mids.items():
                assert mid.namesrv is not None  # known once started
                specs[name] = mid.namesrv + (f"@{mid.broker_map}" if mid.broker_map else "")
            k = rnd % len(paths)  # each round another path leads the turns
            specs = {p: specs[p] for p in paths[k:] + paths[:k]}
            r = run_producer(runner, classes, specs, a, f"{mode}-{rnd}", {n: m.pid for n, m in mids.items()},
                             load_cpus)
        finally:
            for mid in mids.values():
                mid.stop()
        for path in paths:
            results[path].append(r[path])
            lat, tp = r[path]["latency"], r[path]["throughput"]
            print(f"  round {rnd + 1} {path:<9} {tp['msgs_per_s']:>9,.0f} msgs/s"
                  f"  p50 {lat['p50_us'] / 1000:.3f} ms  p99 {lat['p99_us'] / 1000:.3f} ms"
                  f"  errors {lat['errors'] + tp['errors']}", flush=True)


def pin_process(pid: int, cpus: set[int]) -> None:
    """Every thread of ``pid`` (threads it starts later inherit it) on ``cpus``."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return
    for tid in tids:
        with contextlib.suppress(OSError):  # the thread ended meanwhile
            os.sched_setaffinity(int(tid), cpus)


def machine_cpu(results: list[dict], cpus: list[int]) -> tuple[float, float, float]:
    """The machine's CPU during a path's turns of the throughput phase (``cpu_ticks`` from the
    producer: busy, idle, stolen ticks of CPU N at 3N), over ``cpus``: (busy seconds, busy share,
    stolen share)."""
    busy = idle = stolen = 0
    for r in results:
        t = r["throughput"].get("cpu_ticks") or []
        for c in cpus:
            if 3 * c + 2 < len(t):
                busy, idle, stolen = busy + t[3 * c], idle + t[3 * c + 1], stolen + t[3 * c + 2]
    whole = max(1, busy + idle + stolen)
    return busy / os.sysconf("SC_CLK_TCK"), busy / whole, stolen / whole


def budget(mode: str, paths: list[str], results: dict[str, list[dict]], cpus: list[int],
           mid_us: dict[str, float], mid_sys_us: dict[str, float], ratios: dict[str, float]) -> None:
    """Print what the machine's CPUs did in each path's turns and, with the CPUs shared, what that
    leaves a middle: the load needs C0 us of the machine's CPU per message (direct's turns) and
    a middle adds its M, so with the CPUs about as busy as direct keeps them, about C0 / (C0 + M)
    of direct's rate remains (printed beside the measured ratio, a check of this account)."""
    load = cpus if mode == "shared" else cpus[:1]
    rest = [c for c in cpus if c not in load]
    sent = {p: sum(r["throughput"]["sent"] for r in results[p]) for p in paths}
    for path in paths:
        busy_s, _, stolen = machine_cpu(results[path], cpus)
        where = f"CPUs {load} {machine_cpu(results[path], load)[1]:.0%} busy" + (
            f", CPUs {rest} {machine_cpu(results[path], rest)[1]:.0%}" if rest else "")
        procs: dict[str, int] = {}
        for r in results[path]:
            for name, ticks in (r["throughput"].get("proc_ticks") or {}).items():
                procs[name] = procs.get(name, 0) + ticks
        each = ", ".join(f"{name} {t / os.sysconf('SC_CLK_TCK') * 1e6 / max(1, sent[path]):.0f}"
                         for name, t in procs.items())
        print(f"{'':<9} machine in {path}'s turns: {where} (stolen {stolen:.0%}), "
              f"{busy_s * 1e6 / max(1, sent[path]):.0f} us of CPU per message" + (f" ({each})" if each else ""))
    busy_s, _, _ = machine_cpu(results["direct"], cpus)
    c0 = busy_s * 1e6 / max(1, sent["direct"])
    if mode != "shared" or not mid_us or c0 <= 0:
        return
    expected = ", ".join(f"{p} (M {m:.1f}) {c0 / (c0 + m):.3f}, measured {ratios[p]:.3f}" for p, m in mid_us.items())
    print(f"{'':<9} CPU budget: direct needs C0 = {c0:.0f} us of CPU per message, so a middle costing M us/msg "
          f"should keep about C0/(C0+M) of direct: {expected}; {GOAL_RATIO} needs "
          f"M <= {c0 * (1 - GOAL_RATIO) / GOAL_RATIO:.1f} us/msg")
    kernel = ", ".join(f"{p} {k:.1f}" for p, k in mid_sys_us.items())
    print(f"{'':<9} of which the kernel's (syscalls and the loopback TCP delivery of what the middle sends: "
          f"work any user-space relay does): {kernel} us/msg")


def report(mode: str, paths: list[str], results: dict[str, list[dict]], cpus: list[int]) -> str:
    """Print the table for one CPU arrangement; returns its verdict line."""
    def total(path: str, phase: str, key: str) -> float:
        return sum(r[phase][key] for r in results[path])

    def median(path: str, phase: str, key: str) -> float:
        return statistics.median(r[phase][key] for r in results[path])

    print()
    print(f"CPUs {mode}:")
    print(f"{'path':<9} {'msgs/s':>9} {'tput p50':>9} {'tput p99':>9} {'1-sender p50':>13} {'p99':>8} "
          f"{'ratio':>6} {'p50 +ms':>8} {'p99 +ms':>8} {'mid CPU':>8} {'us/msg':>7} {'kernel':>7}")
    d_rate = total("direct", "throughput", "sent") / total("direct", "throughput", "seconds")
    d50, d99 = median("direct", "latency", "p50_us") / 1000, median("direct", "latency", "p99_us") / 1000
    d_slices = [n for r in results["direct"] for n in r["slices"]]
    summary = {}
    mid_us: dict[str, float] = {}
    mid_sys_us: dict[str, float] = {}
    for path in paths:
        rate = total(path, "throughput", "sent") / total(path, "throughput", "seconds")
        p50, p99 = median(path, "latency", "p50_us") / 1000, median(path, "latency", "p99_us") / 1000
        t50, t99 = median(path, "throughput", "p50_us") / 1000, median(path, "throughput", "p99_us") / 1000
        c = f"{'-':>8} {'-':>7} {'-':>7}"
        if all("mid_cpu_s" in r for r in results[path]):
            # the middle's CPU during its turns of the throughput phase: share of one core, and
            # per message sent (one request and one response frame each way)
            cpu_s = sum(r["mid_cpu_s"] for r in results[path])
            sent = max(1, total(path, 'throughput', 'sent'))
            mid_us[path] = cpu_s * 1e6 / sent
            mid_sys_us[path] = sum(r["mid_sys_s"] for r in results[path]) * 1e6 / sent
            c = f"{cpu_s / total(path, 'throughput', 'seconds'):>8.0%} {mid_us[path]:>7.1f} {mid_sys_us[path]:>7.1f}"
        # the ratio: this path's messages over direct's in the same time, their turns interleaved
        ratio = rate / max(1e-9, d_rate)
        summary[path] = (ratio, p50 - d50)
        print(f"{path:<9} {rate:>9,.0f} {t50:>7.3f}ms {t99:>7.3f}ms {p50:>11.3f}ms {p99:>6.3f}ms "
              f"{ratio:>6.3f} {p50 - d50:>+8.3f} {p99 - d99:>+8.3f} {c}")
        if path != "direct":
            # the spread: this path's turns against direct's turns of the same cycle
            per = sorted(n / max(1, d) for n, d in zip((n for r in results[path] for n in r["slices"]), d_slices,
                                                   strict=False))  # a short run may have fewer turns
            if len(per) >= 4:
                q = statistics.quantiles(per, n=4)
                print(f"{'':<9} per turn ({len(per)}): median {q[1]:.3f}, quartiles {q[0]:.3f}-{q[2]:.3f}")
    budget(mode, paths, results, cpus, mid_us, mid_sys_us, {p: r for p, (r, _) in summary.items()})
    ratio, added = summary["rmqsniff"]
    line = (f"CPUs {mode + ':':<9} rmqsniff vs direct: throughput {ratio:.3f} "
            f"(goal >= {GOAL_RATIO}: {'met' if ratio >= GOAL_RATIO else 'NOT met'}), p50 added {added:+.3f} ms "
            f"(goal <= {GOAL_P50_ADDED_MS}: {'met' if added <= GOAL_P50_ADDED_MS else 'NOT met'})")
    if "haproxy" in summary:
        hr, ha = summary["haproxy"]
        line += f"; HAProxy {hr:.3f}, rmqsniff/HAProxy {ratio / hr:.3f}"
    return line


if __name__ == "__main__":
    sys.exit(main())
