"""The rules of the catalogue, each fed every exchange's facts once (bounded state, named caps)."""
from __future__ import annotations

from collections import OrderedDict, deque
from typing import Any

from ..model import Exchange, endpoint_text
from ..protocols import by_port
from ..protocols import facts as F
from . import catalogue as C
from .finding import Evidence, Finding, q
from .latency import Latencies, bounded_put

OTHER_SUBJECT = "<other>"
_SEND_CAUSES = {F.TOPIC_MISSING: "send-topic-missing", F.NO_PERMISSION: "send-no-permission",
                F.MESSAGE_ILLEGAL: "send-message-illegal", F.FLUSH_TIMEOUT: "send-flush-timeout",
                F.SERVICE_UNAVAILABLE: "send-service-unavailable"}


class Board:
    """Evidence by (finding id, subject), at most MAX_SUBJECTS subjects per id."""

    def __init__(self) -> None:
        self.ev: dict[tuple[str, str], Evidence] = {}
        self.subjects: dict[str, int] = {}

    def get(self, fid: str, subject: str) -> Evidence:
        key = (fid, subject)
        e = self.ev.get(key)
        if e is None:
            n = self.subjects.get(fid, 0)
            if n >= C.MAX_SUBJECTS - 1:
                key = (fid, OTHER_SUBJECT)
                e = self.ev.get(key)
            if e is None:
                e = self.ev[key] = Evidence()
                self.subjects[fid] = n + 1
        return e


class Rules:
    """Every rule's state; :meth:`feed` per exchange, :meth:`findings` at the end."""

    def __init__(self) -> None:
        self.board = Board()
        self.now = 0.0
        self.pending: deque[tuple[float, Exchange, str, str]] = deque()  # unanswered, waiting for the grace
        self.keys: OrderedDict[str, tuple[float | None, bool]] = OrderedDict()  # unique key -> (answer ts, ok)
        self.route_missing: dict[str, Evidence] = {}
        self.resolved: set[str] = set()
        self.handed_out: dict[str, Evidence] = {}
        self.reached: set[str] = set()
        self.group_first: dict[str, float] = {}
        self.members: dict[str, dict[str, tuple[tuple[F.Subscription, ...], str, int, float, str]]] = {}
        self.notify: dict[str, deque[float]] = {}
        self.checks: dict[str, int] = {}
        self.tx_groups: dict[str, str] = {}  # half message -> producer group
        self.unknown: dict[str, int] = {}  # UNKNOW answers to transaction checks, by producer group
        self.heartbeats: dict[str, float] = {}
        self.latencies = Latencies()
        self.conns: dict[int, tuple[Any, str, str]] = {}  # connection id -> _connection()

    # -- per exchange -------------------------------------------------------------------
    def feed(self, ex: Exchange, f: F.DoctorFacts | None, proto: Any) -> None:
        ts = ex.ts
        if ts > self.now:
            self.now = ts
            if self.pending and self.pending[0][0] < ts - C.UNANSWERED_GRACE_S:
                self._confirm_unanswered()
        conn = ex.connection
        known = self.conns.get(conn.id)
        if known is None or known[0] is not conn:
            known = self._connection(conn, proto)
        server = known[1]
        if known[2]:
            self.board.get("protocol-mismatch", known[2]).add(
                ex.index, ts, conn.label, f"broker == {q(server)} and protocol == {proto.name}")
        if f is None:
            return
        group = f.group
        if group is not None and group not in self.group_first:
            bounded_put(self.group_first, group, ts)
        if ex.status == "unanswered" and len(self.pending) < C.MAX_PENDING:
            self.pending.append((ts, ex, server, f"code == {_name(ex, proto)} and status == unanswered"))
        if f.cause is not None:
            self._failed(ex, f, f.cause, server, _clause(ex, proto))
        kind = f.kind
        if kind is not F.OTHER:
            self._kind(ex, f, kind, server, proto)
        lat = ex.latency_ms
        if lat is not None and not f.long_poll and ex.code is not None and not ex.server_initiated:
            self.latencies.add(ex, ex.code, lat, server, proto, _name(ex, proto))

    def _connection(self, conn: Any, proto: Any) -> tuple[Any, str, str]:
        """(connection, server text, protocol-mismatch subject or ""), remembered per connection."""
        server = endpoint_text(conn.server)
        port_proto = by_port(conn.server[1])
        mismatch = f"{server} ({port_proto.name} port)" if port_proto is not None and port_proto is not proto else ""
        known = (conn, server, mismatch)
        if len(self.conns) >= C.MAX_TRACKED:
            self.conns.clear()
        self.conns[conn.id] = known
        if len(self.reached) < C.MAX_TRACKED:
            self.reached.add(server)
        return known

    def _failed(self, ex: Exchange, f: F.DoctorFacts, cause: str, server: str, clause: str) -> None:
        b = self.board
        if cause == F.BUSY:
            e = b.get("broker-busy", server)
            e.add(ex.index, ex.ts, ex.connection.label, clause + f" and broker == {q(server)}")
            e.tally(clause.rpartition("== ")[2])
        elif f.kind is F.SEND and cause in _SEND_CAUSES:
            topic = f.topic or "<none>"
            b.get(_SEND_CAUSES[cause], topic).add(ex.index, ex.ts, ex.connection.label,
                                                  clause + (f" and topic == {q(topic)}" if f.topic else ""))
        elif f.kind is F.ROUTE and cause == F.TOPIC_MISSING and f.topic is not None \
                and not f.topic.startswith(C.SYSTEM_TOPIC_PREFIXES):
            rm = self.route_missing.get(f.topic)
            if rm is None:
                if len(self.route_missing) >= C.MAX_TRACKED:
                    return
                rm = self.route_missing[f.topic] = Evidence()
            rm.add(ex.index, ex.ts, ex.connection.label, clause + f" and topic == {q(f.topic)}")
        elif cause in (F.SUBSCRIPTION_NOT_LATEST, F.SUBSCRIPTION_NOT_EXIST) and f.group is not None \
                and ex.ts - self.group_first.get(f.group, ex.ts) > C.STARTUP_S:
            e = b.get("subscription-not-latest", f.group)
            e.add(ex.index, ex.ts, ex.connection.label, clause + f" and group == {q(f.group)}")
            e.tally(clause.rpartition("== ")[2])

    def _kind(self, ex: Exchange, f: F.DoctorFacts, kind: str, server: str, proto: Any) -> None:
        ts = ex.ts
        if kind is F.SEND:
            self._sent(ex, f, proto)
        elif kind is F.ROUTE:
            if f.cause is None and f.topic is not None and proto.result(ex) == "success" \
                    and len(self.resolved) < C.MAX_TRACKED:
                self.resolved.add(f.topic)
            for addr in f.addresses:
                e = self.handed_out.get(addr)
                if e is None:
                    if len(self.handed_out) >= C.MAX_TRACKED:
                        continue
                    e = self.handed_out[addr] = Evidence()
                e.add(ex.index, ts, ex.connection.label, f"code == {proto.classifier.request_name(ex.code)}")
        elif kind is F.HEARTBEAT:
            self._heartbeat(ex, f)
        elif kind is F.IDS_CHANGED and f.group is not None:
            win = self.notify.get(f.group)
            if win is None:
                if len(self.notify) >= C.MAX_TRACKED:
                    return
                win = self.notify[f.group] = deque(maxlen=C.STORM_MIN)
            win.append(ts)
            if len(win) == C.STORM_MIN and ts - win[0] <= C.STORM_WINDOW_S:
                e = self.board.get("rebalance-storm", f.group)
                e.add(ex.index, ts, ex.connection.label, _clause(ex, proto) + f" and group == {q(f.group)}")
        elif kind is F.TX_CHECK or kind is F.TX_END:
            self._transaction(ex, f, kind, _clause(ex, proto))

    def _transaction(self, ex: Exchange, f: F.DoctorFacts, kind: str, clause: str) -> None:
        half = f.half_message
        if kind is F.TX_CHECK and half:
            n = self.checks.get(half, 0) + 1
            bounded_put(self.checks, half, n)
            if n >= C.TX_CHECKS_MIN:
                # the producer group is named by its END_TRANSACTION, not by the broker's check
                e = self.board.get("transaction-check-storm", self.tx_groups.get(half) or f.group or "<none>")
                e.add(ex.index, ex.ts, ex.connection.label, clause)
                e.figures["max_checks"] = max(e.figures.get("max_checks", 0), n)
        elif kind is F.TX_END:
            group = f.group or "<none>"
            if half:
                bounded_put(self.tx_groups, half, group)
            if f.unknown_state:
                bounded_put(self.unknown, group, self.unknown.get(group, 0) + 1)

    def _sent(self, ex: Exchange, f: F.DoctorFacts, proto: Any) -> None:
        conn = ex.connection
        topic = f.topic or "<none>"
        if f.unique_keys:
            keys = self.keys
            answered = ex.response.ts if ex.response is not None else None
            ok = proto.result(ex) == "success" or ex.status == "unanswered"
            start = ex.ts
            for k in f.unique_keys:
                prev = keys.get(k)
                if prev is not None and prev[1] and (prev[0] is None or prev[0] <= start):
                    self.board.get("resent-message", topic).add(
                        ex.index, start, conn.label, f"msgid == {q(k)}")
                keys[k] = (answered, ok)
                if len(keys) > C.MAX_KEYS:
                    keys.popitem(last=False)
        if f.born_ms is not None and ex.request is not None:
            skew = f.born_ms / 1000.0 - ex.request.ts
            if abs(skew) > C.SKEW_S:
                host = conn.client[0]
                e = self.board.get("clock-skew", host)
                e.add(ex.index, ex.ts, conn.label, f"client == {host} and code == "
                      f"{proto.classifier.request_name(ex.code)}")
                if abs(skew) > abs(e.figures.get("max_skew_s", 0.0)):
                    e.figures["max_skew_s"] = round(skew, 3)
        if f.largest_body >= C.NEAR_SIZE_FRACTION * C.MAX_MESSAGE_SIZE:
            e = self.board.get("near-size-limit", topic)
            e.add(ex.index, ex.ts, conn.label, f"size > {int(C.NEAR_SIZE_FRACTION * C.MAX_MESSAGE_SIZE)}")
            e.figures["largest_body"] = max(e.figures.get("largest_body", 0), f.largest_body)

    def _heartbeat(self, ex: Exchange, f: F.DoctorFacts) -> None:
        cid = f.client_id
        if cid is None:
            return
        ts = ex.ts
        last = self.heartbeats.get(cid)
        if last is not None and ts - last > C.HEARTBEAT_GAP_S:
            e = self.board.get("heartbeat-gap", cid)
            e.add(ex.index, ts, ex.connection.label, f"code == HEART_BEAT and client == {ex.connection.client[0]}")
            e.figures["longest_gap_s"] = max(e.figures.get("longest_gap_s", 0.0), round(ts - last, 1))
        bounded_put(self.heartbeats, cid, ts)
        for group, subs in f.subscriptions:
            members = self.members.get(group)
            if members is None:
                if len(self.members) >= C.MAX_TRACKED:
                    continue
                members = self.members[group] = {}
            if cid in members or len(members) < C.MAX_MEMBERS:
                members[cid] = (subs, f.client_kind or "", ex.index, ts, ex.connection.label)

    def _confirm_unanswered(self) -> None:
        pending, limit = self.pending, self.now - C.UNANSWERED_GRACE_S
        while pending and pending[0][0] < limit:
            ts, ex, server, clause = pending.popleft()
            code = clause.split(" ")[2]
            self.board.get("unanswered", f"{code} to {server}").add(ex.index, ts, ex.connection.label,
                                                                     clause + f" and broker == {q(server)}")

    # -- at the end ---------------------------------------------------------------------
    def findings(self) -> list[Finding]:
        self._confirm_unanswered()
        for (fid, subject), e in self.board.ev.items():
            if fid == "transaction-check-storm" and subject in self.unknown:
                e.figures["unknow_answers"] = self.unknown[subject]
        out = [Finding(fid, subject, _summary(fid, subject, e), e) for (fid, subject), e in self.board.ev.items()]
        for topic, e in self.route_missing.items():
            if topic not in self.resolved:
                out.append(Finding("route-topic-missing", topic, f"{e.count} route lookup(s) for topic {topic} "
                                   "answered TOPIC_NOT_EXIST, never resolved", e))
        if len(self.reached) > 1:
            for addr, e in self.handed_out.items():
                if addr not in self.reached and self.now - e.first >= C.REACH_GRACE_S:
                    out.append(Finding("address-never-reached", addr, f"{addr} handed out by {e.count} route "
                                       f"answer(s); no exchange with it in the {self.now - e.first:.1f} s after", e))
        out += self._groups()
        out += self.latencies.findings()
        return out

    def _groups(self) -> list[Finding]:
        out = []
        for group, members in self.members.items():
            subs = {m[0] for m in members.values()}
            kinds = {m[1] for m in members.values() if m[1]}
            for fid, variants, what in (("mixed-subscriptions", subs, "subscriptions"),
                                        ("mixed-clients", kinds, "clients")):
                if len(variants) < 2:
                    continue
                e = Evidence()
                for cid, (s, k, index, ts, label) in members.items():
                    e.add(index, ts, label, f"code == HEART_BEAT and client == {label.partition(' ')[0]}")
                    e.figures[cid] = _subs_text(s) if what == "subscriptions" else k
                out.append(Finding(fid, group, f"group {group}: {len(members)} members heartbeat "
                                   f"{len(variants)} different {what}: "
                                   + "; ".join(sorted(_subs_text(v) if isinstance(v, tuple) else v
                                                      for v in variants)), e))
        return out

def _subs_text(subs: tuple[F.Subscription, ...]) -> str:
    return ", ".join(f"{t}:{x}" for t, x in subs) or "(none)"


def _summary(fid: str, subject: str, e: Evidence) -> str:
    figs = ", ".join(f"{k} ×{v}" for k, v in e.figures.items() if isinstance(v, int) and k.isupper())
    span = f" over {e.last - e.first:.1f} s" if e.last > e.first else ""
    text = {
        "broker-busy": f"{subject} answered {e.count} request(s) busy{span}",
        "send-topic-missing": f"{e.count} send(s) to topic {subject} answered TOPIC_NOT_EXIST",
        "send-no-permission": f"{e.count} send(s) to topic {subject} refused: no permission",
        "send-message-illegal": f"{e.count} send(s) to topic {subject} refused: message illegal / too large",
        "send-flush-timeout": f"{e.count} send(s) to topic {subject} not flushed / replicated in time",
        "send-service-unavailable": f"{e.count} send(s) to topic {subject} refused: service not available",
        "unanswered": f"{e.count} {subject} request(s) never answered",
        "resent-message": f"{e.count} message(s) to topic {subject} sent again after the first send",
        "subscription-not-latest": f"group {subject}: {e.count} pull(s) answered subscription not latest / "
                                   f"not exist after start-up{span}",
        "rebalance-storm": f"group {subject}: {e.count + C.STORM_MIN - 1}+ NOTIFY_CONSUMER_IDS_CHANGED, "
                           f"{C.STORM_MIN}+ within {C.STORM_WINDOW_S:g} s{span}",
        "transaction-check-storm": f"group {subject}: {e.count} transaction check(s) of half messages checked "
                                   f"{C.TX_CHECKS_MIN}+ times (up to {e.figures.get('max_checks')}), "
                                   f"{e.figures.get('unknow_answers', 0)} UNKNOW answer(s)",
        "heartbeat-gap": f"client {subject}: {e.count} heartbeat gap(s), longest "
                         f"{e.figures.get('longest_gap_s', 0)} s",
        "clock-skew": f"client host {subject}: {e.count} message(s) born up to {e.figures.get('max_skew_s')} s "
                      "away from the capture's clock",
        "near-size-limit": f"{e.count} message(s) to topic {subject} near the size limit (largest "
                           f"{e.figures.get('largest_body', 0):,} bytes)",
        "protocol-mismatch": f"{e.count} exchange(s) of another protocol to {subject}",
    }.get(fid, f"{e.count} × {subject}")
    return f"{text} ({figs})" if figs else text


def _name(ex: Exchange, proto: Any) -> str:
    return str(proto.classifier.request_name(ex.code)) if ex.code is not None else "?"


def _clause(ex: Exchange, proto: Any) -> str:
    """The filter clause selecting exchanges like ``ex``: its request code and answer."""
    if ex.code is None:
        return f"conn == {ex.connection.id}"
    clause = f"code == {_name(ex, proto)}"
    if ex.response is not None:
        clause += f" and response_code == {proto.classifier.response_name(ex.response.command.code)}"
    return clause
