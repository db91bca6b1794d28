"""``python -m tests.rocketmq up|down|status|build|capture NAME... |capture-all OUT_DIR``.

``up`` starts a cluster in the background and remembers it (pids, folder) in
``$RMQSNIFF_CACHE/cluster-state.json``; ``down`` stops exactly those pids.
``capture-all`` starts a fresh cluster, captures every scenario into OUT_DIR and stops it; the
scenarios over remoting TLS get a second cluster with remoting TLS enforcing (``up --remoting-tls``).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from . import build
from .cluster import Cluster, ClusterError, Ports, pid_alive
from .scenarios import SCENARIOS, run_scenario


def state_file() -> Path:
    return build.cache_dir() / "cluster-state.json"


def load_state() -> dict | None:
    try:
        return json.loads(state_file().read_text())
    except (OSError, ValueError):
        return None


def cmd_up(args: argparse.Namespace) -> int:
    st = load_state()
    if st and any(pid_alive(p) for p in st["pids"].values()):
        print(f"already running: {st['pids']} in {st['base_dir']}")
        return 1
    t0 = time.monotonic()
    build.build_remoting_programs()
    base = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="rmqsniff-cluster-"))
    c = Cluster(base, ports=Ports.from_env(), remoting_tls=args.remoting_tls)
    c.start()
    state_file().parent.mkdir(parents=True, exist_ok=True)
    state_file().write_text(json.dumps(c.to_state(), indent=2) + "\n")
    print(f"cluster up in {time.monotonic() - t0:.1f}s: namesrv {c.namesrv_addr}, broker {c.broker_addr}, "
          f"proxy remoting {c.proxy_addr}, gRPC {c.grpc_addr}; folder {c.base_dir}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    st = load_state()
    if not st:
        print("no cluster state; nothing to stop")
        return 0
    c = Cluster.from_state(st)
    c.stop()
    print(f"stopped in {c.stop_seconds}")
    state_file().unlink(missing_ok=True)
    if args.clean:
        shutil.rmtree(c.base_dir, ignore_errors=True)
    print("cluster stopped")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    st = load_state()
    if not st:
        print("no cluster")
        return 1
    c = Cluster.from_state(st)
    alive = c.running()
    print(json.dumps({"base_dir": st["base_dir"], "ports": st["ports"], "pids": st["pids"], "alive": alive},
                     indent=2))
    if all(alive.values()):
        print(c.admin("status"))
        return 0
    return 1


def cmd_capture(args: argparse.Namespace) -> int:
    st = load_state()
    if not st:
        print("no cluster; run `python -m tests.rocketmq up` first")
        return 1
    c = Cluster.from_state(st)
    for name in args.names or list(SCENARIOS):
        pcap, truth = run_scenario(c, name, Path(args.out))
        print(f"{name}: {pcap} ({pcap.stat().st_size} bytes), counts {truth.get('counts')}")
    return 0


def cmd_capture_all(args: argparse.Namespace) -> int:
    out = Path(args.out_dir)
    names = args.names or list(SCENARIOS)
    build.build_remoting_programs()
    for remoting_tls in (False, True):  # one fresh cluster per variant the scenarios need
        todo = [n for n in names if SCENARIOS[n].remoting_tls == remoting_tls]
        if not todo:
            continue
        with tempfile.TemporaryDirectory(prefix="rmqsniff-capture-") as tmp:
            c = Cluster(Path(tmp), ports=Ports.from_env(), remoting_tls=remoting_tls)
            c.start()
            try:
                for name in todo:
                    pcap, truth = run_scenario(c, name, out)
                    print(f"{name}: {pcap} ({pcap.stat().st_size} bytes), counts {truth.get('counts')}")
            finally:
                c.stop()
                print(f"cluster started in {c.startup_seconds:.1f}s, stopped in {c.stop_seconds}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.rocketmq", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("up", help="build if needed and start a cluster in the background")
    p.add_argument("--dir", help="cluster folder (default: a new temp folder)")
    p.add_argument("--remoting-tls", action="store_true",
                   help="remoting TLS only (tls.server.mode=enforcing), servers' secrets in */tls-keys.log")
    p.set_defaults(func=cmd_up)
    p = sub.add_parser("down", help="stop the cluster started by `up`")
    p.add_argument("--clean", action="store_true", help="also delete its folder")
    p.set_defaults(func=cmd_down)
    sub.add_parser("status", help="show pids and broker registration").set_defaults(func=cmd_status)
    sub.add_parser("build", help="build jars and client programs only").set_defaults(
        func=lambda a: (build.build_remoting_programs(), build.build_grpc_programs(), 0)[-1])
    p = sub.add_parser("capture", help="capture scenarios against the running `up` cluster")
    p.add_argument("out")
    p.add_argument("names", nargs="*", metavar="NAME")
    p.set_defaults(func=cmd_capture)
    p = sub.add_parser("capture-all", help="fresh cluster, capture scenarios into OUT_DIR, stop")
    p.add_argument("out_dir")
    p.add_argument("names", nargs="*", metavar="NAME")
    p.set_defaults(func=cmd_capture_all)
    args = ap.parse_args(argv)
    try:
        return args.func(args)
    except ClusterError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
