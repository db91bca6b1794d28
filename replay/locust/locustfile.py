"""Locust entry point for distributed replay (``locust -f <this file>``; see ``rmqsniff replay --locust``).

Options (Locust forwards them from the master to its workers, which need only ``--worker``):
``--replay-args`` the ``rmqsniff replay`` arguments (captures, ``--target``, ``--allow-target``,
pacing, rewriting; ``$RMQSNIFF_REPLAY_ARGS``), ``--replay-shares`` how many shares the run is
cut into (default ``--expect-workers``), ``--replay-summary`` a JSON file the master writes
with every share's report.

Design: Locust monkey-patches the worker process with gevent, while the engine is asyncio
(with uvloop when present). Rather than run an event loop inside a gevent hub, each worker
runs its share in a child ``rmqsniff replay … --share I/N --events -`` process, which applies
the same option checks and safety rules (``--allow-target``, refusal of the capture's own
servers) as the plain command, and reads one JSON line per finished request from its stdout
(cooperatively, through gevent's subprocess pipes) to fire ``events.request``. Worker I (the
index the master gave it) takes share I; the first user of a worker runs the share, others
idle. Each worker reports its share to the master, which stops the run when all are in.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shlex
import subprocess
import sys
import tempfile
import time

import gevent
import orjson
from locust import User, constant, events, task
from locust.runners import MasterRunner, WorkerRunner

from replay.locust.launch import share_line, stop_process

DONE = "rmqsniff_share_done"
REPORT_WAIT_S = 10.0  # how long the master waits for workers' last stats after their shares end
log = logging.getLogger("rmqsniff.replay")


class ReplayError(Exception):
    """A replayed request that failed (its response code, TIMEOUT or CONNECTION_FAILED)."""


@events.init_command_line_parser.add_listener
def _options(parser, **_kw) -> None:
    g = parser.add_argument_group("rmqsniff replay")
    g.add_argument("--replay-args", env_var="RMQSNIFF_REPLAY_ARGS", default="",
                   help="rmqsniff replay arguments: CAPTURE... --target HOST:PORT --allow-target HOST ...")
    g.add_argument("--replay-shares", env_var="RMQSNIFF_REPLAY_SHARES", type=int, default=0,
                   help="Cut the run into this many shares (default: --expect-workers, or 1)")
    g.add_argument("--replay-summary", env_var="RMQSNIFF_REPLAY_SUMMARY", default="",
                   help="Master: write every share's report to this JSON file")


def shares_of(opts) -> int:
    return max(1, int(getattr(opts, "replay_shares", 0) or getattr(opts, "expect_workers", 0) or 1))


class Coordinator:
    """Master (or local runner) side: collects the shares' reports and ends the run."""

    def __init__(self, environment) -> None:
        self.env = environment
        self.n = shares_of(environment.parsed_options)
        self.done: dict[int, dict] = {}
        self.reported: dict[str, float] = {}  # worker client id -> last stats report (monotonic)
        self.finishing = False

    def on_worker_report(self, client_id: str, data: dict, **_kw) -> None:
        self.reported[client_id] = time.monotonic()

    def on_message(self, environment, msg, **_kw) -> None:
        self.share_done(msg.data, msg.node_id)

    def share_done(self, data: dict, client_id: str | None = None) -> None:
        data = {**data, "client_id": client_id, "received": time.monotonic()}
        self.done[data["index"]] = data
        log.info("share %s/%s done: %s", data["index"], self.n, share_line(data))
        if self.complete and not self.finishing:
            self.finishing = True
            gevent.spawn(self._finish)

    def _finish(self) -> None:
        end = time.monotonic() + REPORT_WAIT_S
        while time.monotonic() < end and any(
                d["client_id"] is not None and self.reported.get(d["client_id"], 0.0) <= d["received"]
                for d in self.done.values()):
            gevent.sleep(0.2)  # each worker's stats must include its last requests
        self.write()
        runner = self.env.runner
        if getattr(self.env.parsed_options, "headless", False) or not isinstance(runner, MasterRunner):
            runner.quit()
        else:
            runner.stop()

    @property
    def complete(self) -> bool:
        return self.done.keys() >= set(range(self.n))  # (a worker beyond the shares reports an empty one)

    def summary(self) -> dict:
        shares = [{k: v for k, v in self.done[i].items() if k not in ("client_id", "received")}
                  for i in sorted(self.done)]
        return {"shares": self.n, "complete": self.complete, "share": shares}

    def write(self) -> None:
        path = getattr(self.env.parsed_options, "replay_summary", "")
        if path:
            with open(path, "wb") as f:
                f.write(orjson.dumps(self.summary(), option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))


_coordinator: Coordinator | None = None


@events.init.add_listener
def _init(environment, **_kw) -> None:
    global _coordinator
    runner = environment.runner
    if runner is None or isinstance(runner, WorkerRunner):
        return
    _coordinator = Coordinator(environment)
    if isinstance(runner, MasterRunner):
        runner.register_message(DONE, _coordinator.on_message)
        environment.events.worker_report.add_listener(_coordinator.on_worker_report)


@events.quitting.add_listener
def _quitting(environment, **_kw) -> None:
    if _coordinator is not None and not _coordinator.complete:
        _coordinator.write()  # what came in before an early stop
    ReplayShare.stop_child()


class ReplayShare(User):
    """Runs this worker's share of the replay once; further users of the worker idle."""

    wait_time = constant(1)
    started = False
    child: subprocess.Popen | None = None

    @task
    def replay_share(self) -> None:
        cls = type(self)
        if cls.started:
            return
        cls.started = True
        runner = self.environment.runner
        opts = self.environment.parsed_options
        index = runner.worker_index if isinstance(runner, WorkerRunner) else 0
        n = shares_of(opts)
        result: dict = {"index": index, "of": n, "units": [], "skipped": {}, "exit": 0, "report": None}
        if index >= n:
            log.warning("worker %s: the run is cut into %s shares; this worker has none", index, n)
        else:
            self._run(index, n, opts, result)
        self._report(result)

    def _run(self, index: int, n: int, opts, result: dict) -> None:
        fd, path = tempfile.mkstemp(prefix="rmqsniff-share-", suffix=".json")
        os.close(fd)
        cmd = [sys.executable, "-m", "rmqsniff", "replay", *shlex.split(opts.replay_args or ""),
               "--share", f"{index}/{n}", "--events", "-", "--report", path, "--format", "json", "--no-progress"]
        fire = self.environment.events.request.fire
        t0 = time.perf_counter()
        try:
            child = type(self).child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
            assert child.stdout is not None  # stdout=PIPE
            for line in child.stdout:
                if not line.startswith(b'{"ev"'):
                    continue  # the child's own final report line
                ev = orjson.loads(line)
                kind = ev["ev"]
                if kind == "req":
                    fire(request_type=ev["type"], name=ev["name"], response_time=ev["ms"],
                         response_length=ev["len"], exception=ReplayError(ev["err"]) if ev["err"] else None,
                         context={})
                elif kind == "skip":
                    result["skipped"][ev["reason"]] = result["skipped"].get(ev["reason"], 0) + ev["n"]
                elif kind == "share":
                    result["units"] = ev["units"]
            result["exit"] = child.wait()
            with open(path, "rb") as f:
                rep = orjson.loads(f.read() or b"null")
            result["report"] = {k: v for k, v in rep.items() if k != "stats"} if rep else None
        except (OSError, ValueError) as e:
            result["exit"] = result["exit"] or -1
            result["error"] = f"{type(e).__name__}: {e}"
        finally:
            type(self).stop_child()
            with contextlib.suppress(OSError):
                os.unlink(path)
        if result["exit"]:  # the replay itself failed (bad options, refused target...): a Locust failure too
            fire(request_type="rmqsniff", name="replay share", response_time=(time.perf_counter() - t0) * 1000,
                 response_length=0, exception=ReplayError(result.get("error") or f"replay exited {result['exit']}"),
                 context={})

    def _report(self, result: dict) -> None:
        runner = self.environment.runner
        if isinstance(runner, WorkerRunner):
            runner.send_message(DONE, result)
        elif _coordinator is not None:
            _coordinator.share_done(result)

    @classmethod
    def stop_child(cls) -> None:
        """Stop a running share gracefully (it then reports what it sent)."""
        child, cls.child = cls.child, None
        if child is not None:
            stop_process(child, 10.0)
