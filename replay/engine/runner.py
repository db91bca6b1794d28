"""The replay engine: every (loop, copy, session) re-originated as a new TCP connection."""
from __future__ import annotations

import asyncio
import enum
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from dissectors.remoting import codes as c
from dissectors.remoting.command import FLAG_ONEWAY, RemotingCommand
from dissectors.remoting.frame import encode
from dissectors.remoting.headers import topic_of
from dissectors.remoting.message import decode_offset_msg_id
from rmqsniff.model import Connection, Endpoint

from ..report import CONNECTION_FAILED, TIMEOUT, Report
from .client import TIMED_OUT, Answer, Client
from .diff import DiffRules
from .frames import FrameTemplate, build_template
from .pacing import LATE_AFTER, MAX, Pacing, Schedule, Ticker
from .plan import BROKER, GRPC, Plan, Session, Step
from .remotingplan import PRODUCER_CODES
from .rewrite import Rewriter, Rules
from .routes import Route, Routes
from .safety import Guard, ep_text
from .state import ConsumerState
from .via import Via, ViaProxy


@dataclass(slots=True)
class Options:
    target: Endpoint | None  # staging name server (None: gRPC sessions only)
    guard: Guard | None  # None only for a dry run's plan printout (no --allow-target); a Replay needs one
    pacing: Pacing = field(default_factory=Pacing)
    rules: Rules = field(default_factory=Rules)
    diff: DiffRules = field(default_factory=DiffRules)
    copies: int = 1  # --scale
    loops: int = 1
    duration: float | None = None
    max_requests: int | None = None
    timeout: float = 5.0
    connect_timeout: float = 3.0
    via_proxy: bool = True
    grpc_target: Endpoint | None = None  # staging RocketMQ proxy's gRPC endpoint (--grpc-target)

    @property
    def target_text(self) -> str:
        return ", ".join(f"{what} {ep_text(ep)}" if self.target and self.grpc_target else ep_text(ep)
                         for what, ep in (("name server", self.target), ("gRPC", self.grpc_target)) if ep)


@dataclass(slots=True)
class Target:
    """Where one captured session goes on staging."""

    endpoint: Endpoint  # what replay connects to (a proxy listener with --via-proxy)
    upstream: Endpoint  # the staging server itself
    broker_name: str | None = None
    queue_nums: dict[str, int] = field(default_factory=dict)  # staging topic -> write queues


class Replay:
    """Run a plan against staging; results accumulate in ``report``."""

    def __init__(self, plan: Plan, opts: Options, report: Report | None = None) -> None:
        if opts.guard is None:
            raise ValueError("a replay needs a Guard (only a dry run goes without one)")
        self.plan = plan
        self.opts = opts
        self.guard: Guard = opts.guard
        self.schedule = Schedule(plan, opts.pacing, opts.copies)
        self.report = report or Report(opts.diff, self.schedule.requested_rate(opts.loops),
                                       plan.requests * opts.copies * opts.loops, opts.pacing.mode,
                                       opts.target_text, "proxy" if opts.via_proxy else "direct")
        self.via: Via = Via()
        self.routes: Routes | None = None
        self.targets: dict[int, Target | str] = {}  # session id -> target or why none
        self.t0 = 0.0
        self.stopping = False
        self._sent_total = 0
        self.states: dict[tuple[int, int], ConsumerState] = {}  # (copy, loop) -> consumer state
        self._templates: dict[tuple, object] = {}  # (session, step) or (copy, session, step) -> frame template
        self._deps_of: dict[int, frozenset[int]] = {}  # session id -> steps waited for
        self.templated = 0  # requests sent from a pre-encoded frame
        self.ticker: Ticker | None = None  # --speed / --rate: one timer for all sessions
        self._paced_mode = opts.pacing.mode != MAX

    # -- targets -----------------------------------------------------------------------
    async def resolve(self) -> dict[int, Target | str]:
        """Pick the staging endpoint of every session (routes asked of the target name server)."""
        opts = self.opts
        # the guard resolves each target once; what it approved (numeric) is what is connected to
        ns = self.guard.approve(opts.target, "target name server") if opts.target is not None else None
        gt = self.guard.approve(opts.grpc_target, "target gRPC endpoint") if opts.grpc_target is not None else None
        if ns is not None:
            self.routes = Routes(ns, self.guard, opts.connect_timeout)
        ns_ep = await self.via.start(ns, gt)
        grpc_ep = await self.via.grpc(gt) if gt is not None else None
        rw = Rewriter(opts.rules)
        for s in self.plan.sessions:
            if s.kind == GRPC:
                self.targets[s.id] = Target(grpc_ep, gt) if grpc_ep and gt else "no --grpc-target"
                continue
            if ns is None or ns_ep is None:
                self.targets[s.id] = "no --target (remoting session)"
                continue
            if s.kind != BROKER:
                self.targets[s.id] = Target(ns_ep, ns)
                continue
            self.targets[s.id] = await self._broker_target(s, rw)
        return self.targets

    async def _broker_target(self, s: Session, rw: Rewriter) -> Target | str:
        routes_of = self.routes
        assert routes_of is not None  # resolve() made it: there is a --target
        name = s.broker_name
        topics = [rw.topic(t) for t in s.topics]
        found: tuple[str, Endpoint] | None = None
        queue_nums: dict[str, int] = {}
        routes: list[tuple[str, Route]] = []
        for t in topics:
            r = await routes_of.get(t)
            if r is not None:
                routes.append((t, r))
        if not routes:  # the client would fall back to the default topic (auto-creation)
            for d in s.default_topics:
                r = await routes_of.get(d)
                if r is not None:
                    routes.append((d, r))
        for _t, r in routes:
            found = found or r.master(name)
        if found is None and not topics:
            found = await routes_of.any_master(name)
        if found is None:
            return f"no staging route for topic(s) {', '.join(topics)}"
        bname, addr = found
        for t, r in routes:
            if r.write_queues.get(bname):
                queue_nums[t] = r.write_queues[bname]
        addr = self.guard.approve(addr, "staging broker")  # learnt from staging's answer: checked like a target
        return Target(await self.via.broker(addr), addr, bname, queue_nums)

    # -- run ---------------------------------------------------------------------------
    async def run(self, progress: Callable[[Report], None] | None = None) -> Report:
        opts = self.opts
        if opts.via_proxy:
            self.via = ViaProxy()
        try:
            await self.resolve()
            self.t0 = time.monotonic()
            self.report.pace_start = self.t0
            self._paced_mode = opts.pacing.mode != MAX
            self.ticker = Ticker(self.t0) if self._paced_mode else None
            ticker = asyncio.ensure_future(self._tick(progress)) if progress else None
            tasks = [asyncio.ensure_future(self._session_copy(si, s, copy))
                     for copy in range(opts.copies) for si, s in enumerate(self.plan.sessions)]
            try:
                await asyncio.gather(*tasks)
            finally:
                for t in tasks:
                    t.cancel()
                if ticker is not None:
                    ticker.cancel()
                if self.ticker is not None:
                    self.ticker.close()
            self.report.finished = time.monotonic()
            await asyncio.sleep(0.05)  # let the proxy see the last answers go by
            self.report.proxy = self.via.stats()
        finally:
            if self.routes is not None:
                self.routes.close()
            await self.via.stop()
        return self.report

    async def _tick(self, progress: Callable[[Report], None]) -> None:
        while True:
            progress(self.report)
            await asyncio.sleep(0.25)

    def stop(self) -> None:
        """Send nothing more (answers still awaited)."""
        self.stopping = True

    async def _session_copy(self, si: int, s: Session, copy: int) -> None:
        for loop in range(self.opts.loops):
            if await self._session(si, s, copy, loop):
                return  # stopped: later loops are not started (nor counted as not sent)

    def _stop_reason(self, due: float) -> str | None:
        o = self.opts
        if self.stopping:
            return "stopped"
        if o.duration is not None and max(due, time.monotonic()) - self.t0 > o.duration:
            return "--duration reached"
        if o.max_requests is not None and self._sent_total >= o.max_requests:
            return "--count reached"
        return None

    async def turn(self, si: int, s: Session, st: Step, n: int, copy: int, loop: int,
                   waits: dict[int, asyncio.Future]) -> float | None:
        """Wait for step ``n``'s dependencies and due time; its due time (monotonic), or None
        when replay stopped (the rest of the session is counted as not sent)."""
        for d in st.deps:
            w = waits.get(d)
            if w is not None and not w.done():
                await _settled(w)
        due = self.t0 + self.schedule.due(loop, copy, si, st.index)
        why = self._stop_reason(due)
        if why is None:
            now = time.monotonic()
            if due > now:
                await asyncio.sleep(due - now)
                why = self._stop_reason(due)
        if why is not None:
            self.report.skipped(why, len(s.steps) - n)
            return None
        return due

    async def _session(self, si: int, s: Session, copy: int, loop: int) -> bool:
        """One loop of one copy of a session; True when replay stopped (duration, count, signal)."""
        o, rep = self.opts, self.report
        target = self.targets.get(s.id)
        if not isinstance(target, Target):
            rep.skipped(target or "no target", len(s.steps))
            return False
        if s.kind == GRPC:
            from .grpcsession import run_session

            return await run_session(self, si, s, copy, loop, target)
        skey = (copy, loop)
        state = self.states.setdefault(skey, ConsumerState())
        r = _Run(si, s, copy, loop, target, Rewriter(o.rules, copy), self._needed(s), state)
        state.users += 1
        steps = s.steps
        ticker = self.ticker
        stopped = False
        try:
            while r.n < len(steps):
                if ticker is not None and r.client is not None:
                    await self._paced(r)  # sent by the ticker until a step must wait here (or the end)
                    if r.lost:
                        return False
                    if r.n >= len(steps):
                        break
                n = r.n
                st = steps[n]
                due = await self.turn(si, s, st, n, copy, loop, r.waits)
                if due is None:
                    stopped = True
                    break
                if r.client is None and not await self._connect(r, target, len(steps) - n):
                    return False
                tpl = self._template(copy, si, st, r.rw, target)
                if tpl is None and state.needs(st.command):
                    await state.settle(o.timeout)  # its handle may come from an answer still on its way
                client = r.client
                assert client is not None  # connected above
                if not client._can_write.is_set():
                    await client.writable()
                self._send(r, st, tpl, due)
                if r.lost:
                    return False
            if r.open_[0]:  # answers still on their way (each bounded by its timeout)
                r.open_[1] = asyncio.get_running_loop().create_future()
                await r.open_[1]
            return stopped
        finally:
            if r.client is not None:
                r.client.close()
            state.users -= 1
            if state.users <= 0:  # long --loop runs keep no state of finished loops
                self.states.pop(skey, None)
                rep.unmapped.update(state.dropped)

    async def _connect(self, r: _Run, target: Target, left: int) -> bool:
        """Open ``r``'s connection to ``target``; False (the ``left`` steps skipped) when it cannot."""
        rep, checks = self.report, r.checks

        def on_request(cmd: RemotingCommand) -> None:
            rep.server_request(cmd)
            if cmd.code == c.CHECK_TRANSACTION_STATE and cmd.ext:
                e = cmd.ext
                checks[e.get("transactionId", "")] = (e.get("commitLogOffset", ""), e.get("tranStateTableOffset", ""))

        try:
            r.client = await Client.connect(target.endpoint, self.opts.connect_timeout, on_request)
        except (OSError, asyncio.TimeoutError) as e:
            rep.skipped(f"cannot connect to {ep_text(target.upstream)}: {e or 'timeout'}", left)
            return False
        r.conn = Connection(r.s.id, r.client.local or ("127.0.0.1", 0), target.upstream, role_source="replay")
        return True

    def _prepare(self, r: _Run, st: Step) -> FrameTemplate | None | _Mark:
        """``st``'s frame template (or None: full rewrite) when it can be sent without waiting
        (its dependencies answered); ``_BLOCKED`` when the socket buffer or a consumer handle
        is awaited."""
        client = r.client
        if client is None or not client._can_write.is_set():  # (the ticker runs connected sessions)
            return _BLOCKED
        tpl = self._template(r.copy, r.si, st, r.rw, r.target)
        if tpl is None and r.state.needs(st.command):
            return _BLOCKED
        return tpl

    def _paced(self, r: _Run) -> asyncio.Future:
        """Hand ``r`` to the ticker, which sends each step when it is due and its dependencies
        are answered; the future is done when a step must wait in the coroutine (stop,
        backpressure, consumer state) or the session is finished or lost."""
        fut = r.fut = asyncio.get_running_loop().create_future()
        sched, steps, ticker, waits, t0 = self.schedule, r.s.steps, self.ticker, r.waits, self.t0
        assert ticker is not None  # only paced runs hand sessions to the ticker

        def fire(due: float) -> float | None:
            while not fut.done():  # not done: the session was not cancelled
                st = steps[r.n]
                for d in st.deps:
                    w = waits.get(d)
                    if w is not None and not w.done():  # resumed when answered
                        w.add_done_callback(functools.partial(answered, due))
                        return None
                tpl = _BLOCKED if self._stop_reason(t0 + due) is not None else self._prepare(r, st)
                if tpl is _BLOCKED:
                    break
                self._send(r, st, tpl, t0 + due)
                if r.lost or r.n >= len(steps):
                    break
                due = sched.due(r.loop, r.copy, r.si, steps[r.n].index)
                if t0 + due > time.monotonic():
                    return due  # the ticker sends it when due; a late one goes on at once
            if not fut.done():
                fut.set_result(None)
            return None

        def resume(due: float) -> None:
            nxt = fire(due)
            if nxt is not None:
                ticker.at(nxt, fire)

        def answered(due: float, _w: asyncio.Future) -> None:
            resume(due)

        ticker.at(sched.due(r.loop, r.copy, r.si, steps[r.n].index), fire)
        return fut

    def _send(self, r: _Run, st: Step, tpl: FrameTemplate | None, due: float) -> None:
        """Send step ``r.n`` now (its waits are over) and move to the next step; a lost
        connection sets ``r.lost`` (the rest of the session counted as not sent)."""
        rep, client, conn = self.report, r.client, r.conn
        assert client is not None and conn is not None  # steps are sent on a connected run
        n = r.n
        r.n = n + 1
        state = r.state
        if tpl is None:
            src = st.command
            cmd = self._rewrite(st, r.rw, r.target, r.txn, r.checks)
            unmapped = state.apply(src, cmd)
            if unmapped is not None:
                rep.unmapped[unmapped] += 1
                rep.skipped(unmapped)
                return
        else:
            cmd = tpl.cmd
        try:
            opaque = client.take_opaque()
        except ConnectionError as e:
            rep.skipped(f"connection lost: {e}", len(r.s.steps) - n)
            r.lost = True
            return
        if tpl is None:
            cmd.opaque = opaque
            frame = encode(cmd)
        else:
            frame = tpl.render(opaque, int(time.time() * 1000))
            self.templated += 1
        self._sent_total += 1
        sent_at = time.monotonic()
        late = sent_at - due if self._paced_mode and sent_at - due > LATE_AFTER else 0.0
        ex = rep.request_sent(conn, cmd, len(frame), sent_at, late)
        cb = None
        if not cmd.flag & FLAG_ONEWAY:
            learn = state if state.expect(st.code) else None
            done = None
            if st.index in r.needed:
                done = r.waits[st.index] = asyncio.get_running_loop().create_future()
            r.open_[0] += 1
            cb = self._watch(ex, st, r.txn, cmd, learn, done, r.open_)
        client.write(frame, opaque, cb, self._timeout(st))

    def _needed(self, s: Session) -> frozenset[int]:
        """Indices of the steps some later step of ``s`` waits for."""
        got = self._deps_of.get(s.id)
        if got is None:
            got = self._deps_of[s.id] = frozenset(d for st in s.steps for d in st.deps)
        return got

    def _timeout(self, st: Step) -> float:
        lat = st.ex.latency_ms
        return self.opts.timeout + (lat / 1000.0 * 1.5 if lat else 0.0)

    def _template(self, copy: int, si: int, st: Step, rw: Rewriter, target: Target) -> FrameTemplate | None:
        """The pre-encoded frame of this step's request, built when the step is used a second time:
        one for every copy when the copies' bytes differ only in opaque and clock, else one per
        copy. Only stateless producer requests; bounded in number."""
        if st.code not in TEMPLATED:
            return None
        key: tuple = (si, st.index)
        t = self._templates.get(key, _UNSEEN)
        if t is _PER_COPY:
            key = (copy, si, st.index)
            t = self._templates.get(key, _UNSEEN)
        if t is _UNSEEN:  # first use: sent the plain way
            if len(self._templates) < MAX_TEMPLATES:
                self._templates[key] = _SEEN
            return None
        if t is _SEEN:
            check = Rewriter(self.opts.rules, copy + 1) if len(key) == 2 else rw
            t = build_template(lambda ms: self._rewrite(st, rw, target, {}, {}, ms), int(time.time() * 1000),
                               lambda ms: self._rewrite(st, check, target, {}, {}, ms))
            self._templates[key] = t if t is not None else (_PER_COPY if len(key) == 2 else None)
        return t if isinstance(t, FrameTemplate) else None

    def _watch(self, ex, st: Step, txn: dict, sent: RemotingCommand, state: ConsumerState | None,
               done: asyncio.Future | None, open_: list) -> Answer:
        """The callback reporting this request's answer (or its absence)."""
        rep = self.report
        recorded_ex = st.ex
        recorded = recorded_ex.response.command if recorded_ex.response is not None else None
        remember = recorded if st.code in c.SEND_REQUESTS else None  # a send's answer: its transaction id

        def finished(resp: RemotingCommand | None, ts: float, size: int, why: str | None) -> None:
            if resp is not None:
                rep.answered(ex, resp, ts, size, recorded)
                if remember is not None and resp.code == c.SUCCESS:
                    _remember_txn(txn, remember, resp)
            else:
                rep.failed(ex, TIMEOUT if why == TIMED_OUT else CONNECTION_FAILED, recorded)
            if state is not None:
                state.learn(st.command, recorded, sent, resp)
            if done is not None and not done.done():
                done.set_result(None)
            open_[0] -= 1
            if open_[0] == 0 and open_[1] is not None and not open_[1].done():
                open_[1].set_result(None)

        return finished

    def _rewrite(self, st: Step, rw: Rewriter, target: Target, txn: dict, checks: dict,
                 now_ms: int | None = None) -> RemotingCommand:
        src = st.command
        qn = None
        if target.queue_nums:
            t = topic_of(src)
            qn = target.queue_nums.get(rw.topic(t)) if t else None
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        cmd = rw.request(src, now_ms, producer_only=st.producer_only, queue_nums=qn,
                         broker_name=target.broker_name)
        if cmd.code == c.END_TRANSACTION and cmd.ext:
            _map_end_transaction(cmd, txn, checks, self.report)
        return cmd


class _Run:
    """One loop of one copy of a remoting session while it runs."""

    __slots__ = ("si", "s", "copy", "loop", "target", "rw", "needed", "n", "client", "conn", "state",
                 "txn", "checks", "waits", "open_", "fut", "lost")

    def __init__(self, si: int, s: Session, copy: int, loop: int, target: Target, rw: Rewriter,
                 needed: frozenset[int], state: ConsumerState) -> None:
        self.si, self.s, self.copy, self.loop, self.target, self.rw, self.needed = si, s, copy, loop, target, rw, needed
        self.n = 0  # the next step
        self.client: Client | None = None  # until connected
        self.conn: Connection | None = None  # until connected
        self.state = state  # the consumer state of this (copy, loop)
        self.txn: dict[str, tuple[str, str, str]] = {}  # captured transactionId -> replayed (msgId, queueOffset, txId)
        self.checks: dict[str, tuple[str, str]] = {}  # transactionId -> (commitLogOffset, tranStateTableOffset)
        self.waits: dict[int, asyncio.Future] = {}  # step index -> done when answered (steps others wait for)
        self.open_: list = [0, None]  # requests not answered yet, future for "all answered"
        self.fut: asyncio.Future | None = None  # while the ticker runs it
        self.lost = False


TEMPLATED = PRODUCER_CODES - {c.END_TRANSACTION}  # stateless requests: pre-encoded frames
MAX_TEMPLATES = 100_000
_SEEN, _UNSEEN, _PER_COPY = object(), object(), object()


class _Mark(enum.Enum):
    BLOCKED = "blocked"


_BLOCKED: Final = _Mark.BLOCKED  # a step that must wait in its session's coroutine


async def _settled(fut: asyncio.Future) -> None:
    """Wait until ``fut`` is done, whatever its outcome (its failure is reported where it happens)."""
    try:
        await fut
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
    except Exception:  # noqa: BLE001 - see above
        pass


def _remember_txn(txn: dict, recorded: RemotingCommand, resp: RemotingCommand) -> None:
    rext, pext = recorded.ext or {}, resp.ext or {}
    tid = rext.get("transactionId")
    if tid and pext.get("msgId"):
        txn[tid] = (pext["msgId"], pext.get("queueOffset", ""), pext.get("transactionId", tid))


def _map_end_transaction(cmd: RemotingCommand, txn: dict, checks: dict, rep: Report) -> None:
    """Point END_TRANSACTION at the half message staging stored (not production's offsets)."""
    ext = cmd.ext
    assert ext is not None  # an END_TRANSACTION's headers
    tid = ext.get("transactionId", "")
    got = txn.get(tid)
    if got is None:
        rep.unmapped["END_TRANSACTION without a replayed half message"] += 1
        return
    msg_id, queue_offset, new_tid = got
    ext["transactionId"] = new_tid
    if ext.get("fromTransactionCheck") == "true" and new_tid in checks:
        ext["commitLogOffset"], ext["tranStateTableOffset"] = checks[new_tid]
        return
    try:
        ext["commitLogOffset"] = str(decode_offset_msg_id(msg_id)[2])
    except ValueError:
        return
    if queue_offset:
        ext["tranStateTableOffset"] = queue_offset
