"""What a replay did: counts, latencies and errors per code and topic (the project's
:class:`Stats`), achieved vs requested rate, and the diff against the recorded answers."""
from __future__ import annotations

import time
from collections import Counter, defaultdict
from typing import Any

from dissectors.remoting.codes import request_name
from dissectors.remoting.command import RemotingCommand
from rmqsniff.model import ANSWERED, ONEWAY, UNANSWERED, Connection, Exchange, Message
from rmqsniff.protocols import REMOTING, protocol_of
from rmqsniff.stats import Stats

from .engine.diff import DiffRules

TIMEOUT = "TIMEOUT"
CONNECTION_FAILED = "CONNECTION_FAILED"
MAX_EXAMPLES = 3


class Report:
    """Fed by the engine as requests go out and answers come back; read at any time."""

    def __init__(self, diff_rules: DiffRules | None = None, requested_rate: float | None = None,
                 planned: int = 0, mode: str = "", target: str = "", via: str = "direct") -> None:
        self.stats = Stats(prefix="replay")
        self.rules = diff_rules or DiffRules()
        self.requested_rate = requested_rate
        self.planned = planned
        self.mode = mode
        self.target = target
        self.via = via
        self.sent = 0
        self.late = 0
        self.max_late_ms = 0.0
        self.in_flight = 0
        self.completed = 0
        self.errors = 0
        self.not_sent: Counter = Counter()
        self.server_requests: Counter = Counter()
        self.unmapped: Counter = Counter()  # later requests whose captured state had no replayed value
        self.err_by_code: dict[str, Counter] = defaultdict(Counter)
        self.err_by_topic: dict[str, Counter] = defaultdict(Counter)
        self.diff_counts: Counter = Counter()
        self.diff_examples: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.compared = 0
        self.matched = 0
        self.notes: list[str] = []
        self.proxy: dict[str, Any] | None = None
        self.mono0 = time.monotonic()
        self.wall0 = time.time()
        self.first_send: float | None = None
        self.last_send: float | None = None
        self.finished: float | None = None
        self.pace_start: float | None = None  # when the pacing clock started (request 0 due)
        self._index = 0

    # -- events ------------------------------------------------------------------------
    def request_sent(self, conn: Connection, cmd: RemotingCommand, size: int, ts: float,
                     late_s: float, protocol: str = REMOTING.name) -> Exchange:
        """``ts`` is monotonic; ``late_s`` how long after its due time it went out;
        ``cmd`` the decoded request of ``protocol`` (a RemotingCommand, a GrpcMessage ...)."""
        self._index += 1
        ex = Exchange(self._index, conn, protocol, ONEWAY if cmd.is_oneway else UNANSWERED,
                      Message(self._wall(ts), cmd, True, size=size))
        self.stats.request_started(ex)
        self.sent += 1
        if self.first_send is None:
            self.first_send = ts
        self.last_send = ts
        if late_s > 0:
            self.late += 1
            self.max_late_ms = max(self.max_late_ms, late_s * 1000.0)
        if cmd.is_oneway:
            self.stats.exchange_done(ex)
            self.completed += 1
        else:
            self.in_flight += 1
        return ex

    def answered(self, ex: Exchange, resp: RemotingCommand, ts: float, size: int,
                 recorded: RemotingCommand | None) -> None:
        ex.response = Message(self._wall(ts), resp, False, size=size)
        ex.status = ANSWERED
        self.stats.exchange_done(ex)
        self._done(ex, resp.code, _cls(ex).response_name(resp.code))
        self._diff(ex, recorded, resp)

    def failed(self, ex: Exchange, why: str, recorded: RemotingCommand | None) -> None:
        """No answer: ``why`` is TIMEOUT or CONNECTION_FAILED."""
        ex.notes.append(why)
        self.stats.exchange_done(ex)
        self._done(ex, None, why)
        self._diff(ex, recorded, None)

    def skipped(self, reason: str, n: int = 1) -> None:
        self.not_sent[reason] += n

    def server_request(self, cmd: RemotingCommand) -> None:
        self.server_requests[request_name(cmd.code)] += 1

    def _wall(self, ts: float) -> float:
        return self.wall0 + (ts - self.mono0)

    def _done(self, ex: Exchange, rcode: int | None, rname: str) -> None:
        self.in_flight -= 1
        self.completed += 1
        assert ex.request is not None  # an exchange of request_sent()
        cmd = ex.request.command
        k = _cls(ex)
        if rcode is None or k.classify(cmd.code, rcode) == "error":
            self.errors += 1
            self.err_by_code[k.request_name(cmd.code)][rname] += 1
            self.err_by_topic[k.topic_of(cmd) or "<none>"][rname] += 1

    def _diff(self, ex: Exchange, recorded: RemotingCommand | None, resp: RemotingCommand | None) -> None:
        if recorded is None:
            return
        self.compared += 1
        found = protocol_of(ex).planner.compare(recorded, resp, self.rules)
        if not found:
            self.matched += 1
            return
        assert ex.request is not None  # an exchange of request_sent()
        cmd = ex.request.command
        k = _cls(ex)
        for kind, a, b in found:
            key = f"{kind}: {a} -> {b}" if kind in ("code", "no answer") else kind
            self.diff_counts[key] += 1
            ex_list = self.diff_examples[key]
            if len(ex_list) < MAX_EXAMPLES:
                ex_list.append({"request": k.request_name(cmd.code), "topic": k.topic_of(cmd),
                                "recorded": a, "replayed": b})

    # -- shares ------------------------------------------------------------------------
    def merge(self, other: Report) -> None:
        """Add the report of another share of the same run (another process: the monotonic
        clock is the machine's, so send times compare); planned counts and rates add up."""
        self.stats.merge(other.stats)
        for k in ("planned", "sent", "late", "in_flight", "completed", "errors", "compared", "matched"):
            setattr(self, k, getattr(self, k) + getattr(other, k))
        self.max_late_ms = max(self.max_late_ms, other.max_late_ms)
        if other.requested_rate is not None:
            self.requested_rate = (self.requested_rate or 0.0) + other.requested_rate
        for mine, theirs in ((self.not_sent, other.not_sent), (self.server_requests, other.server_requests),
                             (self.unmapped, other.unmapped), (self.diff_counts, other.diff_counts)):
            mine.update(theirs)
        for by_key, theirs_by_key in ((self.err_by_code, other.err_by_code), (self.err_by_topic, other.err_by_topic)):
            for k, cnt in theirs_by_key.items():
                by_key[k].update(cnt)
        for k, examples in other.diff_examples.items():
            mine_ex = self.diff_examples[k]
            mine_ex.extend(examples[:MAX_EXAMPLES - len(mine_ex)])
        self.notes.extend(other.notes)
        if other.mono0 < self.mono0:
            self.mono0, self.wall0 = other.mono0, other.wall0
        self.first_send = _pick(min, self.first_send, other.first_send)
        self.last_send = _pick(max, self.last_send, other.last_send)
        self.pace_start = _pick(min, self.pace_start, other.pace_start)
        self.finished = _pick(max, self.finished, other.finished)
        if other.proxy:
            if not self.proxy:
                self.proxy = other.proxy
            else:
                c = self.proxy["counters"]
                for k, v in other.proxy["counters"].items():
                    c[k] = c.get(k, 0) + v

    # -- reading ------------------------------------------------------------------------
    def elapsed(self) -> float:
        end = self.finished if self.finished is not None else time.monotonic()
        return end - self.mono0

    def achieved_rate(self) -> float | None:
        """Requests sent per second over the pacing window: from when the first request was
        due (the first send when unknown) to the last send, so a slow start is not hidden."""
        if self.first_send is None or self.last_send is None or self.sent < 2:
            return None
        start = self.first_send if self.pace_start is None else min(self.pace_start, self.first_send)
        span = self.last_send - start
        return (self.sent - 1) / span if span > 0 else None

    def to_dict(self) -> dict[str, Any]:
        snap = self.stats.snapshot()
        codes = []
        for row in sorted(snap["codes"].values(), key=lambda r: -r["requests"]):
            name = row["name"]
            codes.append(_row(name, row, self.err_by_code.get(name, {})))
        topics = []
        for name, row in snap["breakdowns"]["by_topic"]["rows"].items():
            topics.append(_row(name, row, self.err_by_topic.get(name, {})))
        c = snap["counters"]
        achieved = self.achieved_rate()
        ratio = (achieved / self.requested_rate) if achieved and self.requested_rate else None
        return {
            "target": self.target, "via": self.via, "mode": self.mode,
            "planned": self.planned, "sent": self.sent,
            "answered": c["answered"], "oneway": c["oneway"], "unanswered": c["unanswered"],
            "success": c["response_success"], "errors": self.errors,
            "late": self.late, "max_late_ms": round(self.max_late_ms, 3),
            "not_sent": dict(self.not_sent),
            "elapsed_s": round(self.elapsed(), 3),
            "rate": {"requested": _r(self.requested_rate), "achieved": _r(achieved),
                     "ratio": _r(ratio, 4)},
            "latency_ms": {k: snap["histograms"]["request_time_ms"][k]
                           for k in ("count", "mean", "p50", "p90", "p99", "max")},
            "codes": codes, "topics": topics,
            "server_requests": dict(self.server_requests),
            "unmapped_state": dict(self.unmapped),
            "diff": {"compared": self.compared, "matched": self.matched,
                     "mismatches": dict(self.diff_counts),
                     "examples": {k: v for k, v in self.diff_examples.items()}},
            "stats": snap,
            "proxy": self.proxy,
            "notes": list(self.notes),
        }

    def render(self, console) -> None:
        """The final report as rich tables."""
        from rich.table import Table

        d = self.to_dict()
        rate = d["rate"]
        console.print(
            f"[bold]replay[/bold] {d['mode']} -> {d['target']} ({d['via']}): sent {d['sent']}/{d['planned']}, "
            f"answered {d['answered']}, oneway {d['oneway']}, errors {d['errors']}, late {d['late']}, "
            f"{d['elapsed_s']:.2f}s; rate {_fmt(rate['achieved'])}/s achieved vs "
            f"{_fmt(rate['requested'])}/s requested")
        if d["not_sent"]:
            console.print("not sent: " + ", ".join(f"{k} {v}" for k, v in d["not_sent"].items()))
        for title, rows in (("by request code", d["codes"]), ("by topic", d["topics"])):
            t = Table(title=title, title_justify="left")
            for col in ("name", "count", "success", "errors", "errors by response", "p50 ms", "p90 ms",
                        "p99 ms", "max ms"):
                t.add_column(col, justify="left" if col in ("name", "errors by response") else "right")
            for r in rows:
                t.add_row(r["name"], str(r["count"]), str(r["success"]), str(r["errors"]),
                          ", ".join(f"{k} {v}" for k, v in r["errors_by_response"].items()),
                          *(f"{r[k]:.2f}" for k in ("p50", "p90", "p99", "max")))
            console.print(t)
        diff = d["diff"]
        console.print(f"response diff: {diff['matched']}/{diff['compared']} recorded answers matched")
        if diff["mismatches"]:
            t = Table(title="mismatches", title_justify="left")
            for col in ("kind", "count", "example"):
                t.add_column(col, justify="right" if col == "count" else "left")
            for k, n in sorted(diff["mismatches"].items(), key=lambda kv: -kv[1]):
                e = diff["examples"].get(k, [{}])[0]
                t.add_row(k, str(n), f"{e.get('request')} {e.get('topic') or ''}: "
                          f"{e.get('recorded')} -> {e.get('replayed')}")
            console.print(t)
        if d["server_requests"]:
            console.print("server requests: " + ", ".join(f"{k} {v}" for k, v in d["server_requests"].items()))
        if d["proxy"]:
            pc = d["proxy"]["counters"]
            console.print(f"proxy: requests {pc['request']}, answered {pc['answered']}, oneway {pc['oneway']}, "
                          f"unanswered {pc['unanswered']}, errors {pc['response_error']}")
        for n in d["notes"]:
            console.print(f"note: {n}")


def _cls(ex: Exchange):
    """The stats classifier of the exchange's protocol (names, classification, topic)."""
    return protocol_of(ex).classifier


def _pick(f, a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else f(a, b)


def _r(v: float | None, nd: int = 1) -> float | None:
    return None if v is None else round(v, nd)


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:,.1f}"


def _row(name: str, row: dict[str, Any], errs: dict[str, int]) -> dict[str, Any]:
    lost = sum(n for k, n in errs.items() if k in (TIMEOUT, CONNECTION_FAILED))
    return {"name": name, "count": row["requests"], "success": row["answered"] - row["errors"],
        "errors": row["errors"] + lost,
        "errors_by_response": dict(errs),
        "p50": row["p50"], "p90": row["p90"], "p99": row["p99"], "max": row["max"]}
