"""Locust command lines for distributed replay, and a local master + N workers run."""
from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import orjson

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
WORKER_STOP_S = 15.0  # workers still running this long after the master ended are terminated


@dataclass(slots=True)
class Launch:
    replay_args: list[str]  # the rmqsniff replay arguments every share runs with
    workers: int = 2
    headless: bool = True
    port: int = 0  # master's port for workers (0: a free one)
    web_port: int = 0
    summary: str = ""  # --replay-summary file
    extra: list[str] = field(default_factory=list)  # more locust options for the master


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def master_cmd(spec: Launch, locust: list[str], bind_host: str | None = "127.0.0.1") -> list[str]:
    n = str(spec.workers)
    cmd = [*locust, "-f", str(LOCUSTFILE), "--master", "--master-bind-port", str(spec.port),
           "--expect-workers", n, "-u", n, "-r", n, "--replay-args", shlex.join(spec.replay_args)]
    if bind_host:
        cmd += ["--master-bind-host", bind_host]
    cmd += ["--headless", "--only-summary"] if spec.headless else ["--autostart", "--web-port", str(spec.web_port)]
    if spec.summary:
        cmd += ["--replay-summary", spec.summary]
    return cmd + spec.extra


def worker_cmd(port: int, locust: list[str], master_host: str = "127.0.0.1",
               locustfile: str | None = None) -> list[str]:
    return [*locust, "-f", locustfile or str(LOCUSTFILE), "--worker", "--master-host", master_host,
            "--master-port", str(port)]


def commands_text(spec: Launch) -> str:
    """The commands to run by hand: the master here, each worker on its own machine."""
    m = shlex.join(master_cmd(spec, ["locust"], bind_host=None))
    w = shlex.join(worker_cmd(spec.port, ["locust"], "MASTER_HOST", "-"))
    return (f"# on the master machine (it replays nothing itself):\n{m}\n"
            f"# on each of the {spec.workers} worker machines (rmqsniff installed, the captures at the same paths,\n"
            f"# staging reachable; -f - fetches the locustfile from the master):\n{w}\n")


def run(spec: Launch) -> tuple[int, dict | None]:
    """Start the master and ``spec.workers`` local workers; the master's exit code and the
    shares' summary (None when no share reported)."""
    if spec.summary:
        if os.path.exists(spec.summary):
            os.unlink(spec.summary)  # a file left by an earlier run must not pass for this one's
        return _run(spec), _load(spec.summary)
    fd, spec.summary = tempfile.mkstemp(prefix="rmqsniff-locust-", suffix=".json")
    os.close(fd)
    try:
        return _run(spec), _load(spec.summary)
    finally:
        os.unlink(spec.summary)
        spec.summary = ""


def _load(path: str) -> dict | None:
    try:
        with open(path, "rb") as f:
            return orjson.loads(f.read() or b"null")
    except (OSError, orjson.JSONDecodeError):
        return None


def _run(spec: Launch) -> int:
    locust = [sys.executable, "-m", "locust"]
    spec.port = spec.port or free_port()
    if not spec.headless:
        spec.web_port = spec.web_port or free_port()
        print(f"rmqsniff replay: Locust web UI on http://127.0.0.1:{spec.web_port}", file=sys.stderr)
    master = subprocess.Popen(master_cmd(spec, locust), stdin=subprocess.DEVNULL)
    workers = [subprocess.Popen([*worker_cmd(spec.port, locust), "--loglevel", "WARNING"], stdin=subprocess.DEVNULL)
               for _ in range(spec.workers)]
    try:
        return master.wait()
    except KeyboardInterrupt:
        master.send_signal(signal.SIGINT)
        return master.wait()
    finally:
        for w in workers:
            try:
                w.wait(WORKER_STOP_S)
            except subprocess.TimeoutExpired:
                stop_process(w, 5.0)


def stop_process(p: subprocess.Popen, grace: float) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds."""
    if p.poll() is not None:
        return
    p.terminate()
    try:
        p.wait(grace)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def share_line(d: dict) -> str:
    """One line about a share's outcome (from its summary)."""
    r = d.get("report") or {}
    out = (f"{len(d.get('units', []))} unit(s), sent {r.get('sent', 0)}/{r.get('planned', 0)}, "
           f"answered {r.get('answered', 0)}, oneway {r.get('oneway', 0)}, errors {r.get('errors', 0)}")
    if r.get("not_sent"):
        out += ", not sent: " + ", ".join(f"{k} {v}" for k, v in r["not_sent"].items())
    if d.get("exit"):
        out += f", replay exited {d['exit']}"
    if d.get("error"):
        out += f", {d['error']}"
    return out
