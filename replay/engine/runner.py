"""The replay engine: every (loop, copy, session) re-originated as a new TCP connection."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from dissectors.remoting import codes as c
from dissectors.remoting.command import RemotingCommand
from dissectors.remoting.headers import topic_of
from dissectors.remoting.message import decode_offset_msg_id
from rmqsniff.model import Connection, Endpoint

from ..report import CONNECTION_FAILED, TIMEOUT, Report
from .client import Client
from .diff import DiffRules
from .pacing import LATE_AFTER, MAX, Pacing, Schedule
from .plan import BROKER, Plan, Session, Step
from .rewrite import Rewriter, Rules
from .routes import Route, Routes
from .safety import Guard, ep_text
from .state import ConsumerState
from .via import Via, ViaProxy


@dataclass(slots=True)
class Options:
    target: Endpoint  # staging name server
    guard: Guard
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
        self.plan = plan
        self.opts = opts
        self.schedule = Schedule(plan, opts.pacing, opts.copies)
        self.report = report or Report(opts.diff, self.schedule.requested_rate(opts.loops),
                                       plan.requests * opts.copies * opts.loops, opts.pacing.mode,
                                       ep_text(opts.target), "proxy" if opts.via_proxy else "direct")
        self.via: Via = Via()
        self.routes: Routes | None = None
        self.targets: dict[int, Target | str] = {}  # session id -> target or why none
        self.t0 = 0.0
        self.stopping = False
        self._sent_total = 0
        self.states: dict[tuple[int, int], ConsumerState] = {}  # (copy, loop) -> consumer state

    # -- targets -----------------------------------------------------------------------
    async def resolve(self) -> dict[int, Target | str]:
        """Pick the staging endpoint of every session (routes asked of the target name server)."""
        opts = self.opts
        opts.guard.check(opts.target, "target name server")
        self.routes = Routes(opts.target, opts.guard, opts.connect_timeout)
        ns_ep = await self.via.start(opts.target)
        rw = Rewriter(opts.rules)
        for s in self.plan.sessions:
            if s.kind != BROKER:
                self.targets[s.id] = Target(ns_ep, opts.target)
                continue
            self.targets[s.id] = await self._broker_target(s, rw)
        return self.targets

    async def _broker_target(self, s: Session, rw: Rewriter) -> Target | str:
        name = s.broker_name
        topics = [rw.topic(t) for t in s.topics]
        found: tuple[str, Endpoint] | None = None
        queue_nums: dict[str, int] = {}
        routes: list[tuple[str, Route]] = []
        for t in topics:
            r = await self.routes.get(t)
            if r is not None:
                routes.append((t, r))
        if not routes:  # the client would fall back to the default topic (auto-creation)
            for d in s.default_topics:
                r = await self.routes.get(d)
                if r is not None:
                    routes.append((d, r))
        for t, r in routes:
            found = found or r.master(name)
        if found is None and not topics:
            found = await self.routes.any_master(name)
        if found is None:
            return f"no staging route for topic(s) {', '.join(topics)}"
        bname, addr = found
        for t, r in routes:
            if r.write_queues.get(bname):
                queue_nums[t] = r.write_queues[bname]
        self.opts.guard.check(addr, "staging broker")
        return Target(await self.via.broker(addr), addr, bname, queue_nums)

    # -- run ---------------------------------------------------------------------------
    async def run(self, progress: Callable[[Report], None] | None = None) -> Report:
        opts = self.opts
        if opts.via_proxy:
            self.via = ViaProxy()
        try:
            await self.resolve()
            self.t0 = time.monotonic()
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

    async def _session(self, si: int, s: Session, copy: int, loop: int) -> bool:
        """One loop of one copy of a session; True when replay stopped (duration, count, signal)."""
        o, rep = self.opts, self.report
        target = self.targets.get(s.id)
        if not isinstance(target, Target):
            rep.skipped(target or "no target", len(s.steps))
            return False
        rw = Rewriter(o.rules, copy)
        txn: dict[str, tuple[str, str, str]] = {}  # captured transactionId -> replayed (msgId, queueOffset, txId)
        checks: dict[str, tuple[str, str]] = {}  # transactionId -> (commitLogOffset, tranStateTableOffset)

        def on_request(cmd: RemotingCommand) -> None:
            rep.server_request(cmd)
            if cmd.code == c.CHECK_TRANSACTION_STATE and cmd.ext:
                e = cmd.ext
                checks[e.get("transactionId", "")] = (e.get("commitLogOffset", ""), e.get("tranStateTableOffset", ""))

        client: Client | None = None
        conn: Connection | None = None
        waits: dict[int, asyncio.Future] = {}
        loop_ = asyncio.get_running_loop()
        skey = (copy, loop)
        state = self.states.setdefault(skey, ConsumerState())
        state.users += 1
        try:
            for n, st in enumerate(s.steps):
                deps = [waits[d] for d in st.deps if d in waits and not waits[d].done()]
                if deps:
                    await asyncio.wait(deps)
                due = self.t0 + self.schedule.due(loop, copy, si, st.index)
                why = self._stop_reason(due)
                if why is not None:
                    rep.skipped(why, len(s.steps) - n)
                    return True
                now = time.monotonic()
                if due > now:
                    await asyncio.sleep(due - now)
                    why = self._stop_reason(due)
                    if why is not None:
                        rep.skipped(why, len(s.steps) - n)
                        return True
                if client is None:
                    try:
                        client = await Client.connect(target.endpoint, o.connect_timeout, on_request)
                    except (OSError, asyncio.TimeoutError) as e:
                        rep.skipped(f"cannot connect to {ep_text(target.upstream)}: {e or 'timeout'}",
                                    len(s.steps) - n)
                        return False
                    conn = Connection(s.id, client.local or ("127.0.0.1", 0), target.upstream,
                                      role_source="replay")
                src = st.ex.request.command
                if state.needs(src):  # its handle may come from an answer still on its way
                    await state.settle(o.timeout)
                cmd = self._rewrite(st, rw, target, txn, checks)
                unmapped = state.apply(src, cmd)
                if unmapped is not None:
                    rep.unmapped[unmapped] += 1
                    rep.skipped(unmapped)
                    continue
                if not client._can_write.is_set():
                    await client.writable()
                self._sent_total += 1
                try:
                    fut, size = client.send(cmd)
                except ConnectionError as e:
                    rep.skipped(f"connection lost: {e}", len(s.steps) - n)
                    return False
                sent_at = time.monotonic()
                late = sent_at - due if sent_at - due > LATE_AFTER and o.pacing.mode != MAX else 0.0
                ex = rep.request_sent(conn, cmd, size, sent_at, late)
                if fut is not None:
                    learn = state if state.expect(st.code) else None
                    waits[st.index] = self._watch(loop_, client, cmd.opaque, fut, ex, st, txn, cmd, learn)
            if waits:
                await asyncio.wait(list(waits.values()))
            return False
        finally:
            if client is not None:
                client.close()
            state.users -= 1
            if state.users <= 0:  # long --loop runs keep no state of finished loops
                self.states.pop(skey, None)

    def _watch(self, loop: asyncio.AbstractEventLoop, client: Client, opaque: int, fut: asyncio.Future,
               ex, st: Step, txn: dict, sent: RemotingCommand | None = None,
               state: ConsumerState | None = None) -> asyncio.Future:
        """Report the answer (or its absence) when it comes; returns a future done by then."""
        done = loop.create_future()
        rep = self.report
        recorded_ex = st.ex
        recorded = recorded_ex.response.command if recorded_ex.response is not None else None
        lat = recorded_ex.latency_ms
        timeout = self.opts.timeout + (lat / 1000.0 * 1.5 if lat else 0.0)

        def expire() -> None:
            if not fut.done():
                client.pending.pop(opaque, None)
                fut.set_exception(asyncio.TimeoutError())

        handle = loop.call_later(timeout, expire)

        def finished(f: asyncio.Future) -> None:
            handle.cancel()
            exc = f.exception() if not f.cancelled() else asyncio.CancelledError()
            if exc is None:
                resp, ts, size = f.result()
                rep.answered(ex, resp, ts, size, recorded)
                if st.code in c.SEND_REQUESTS and resp.code == c.SUCCESS and recorded is not None:
                    _remember_txn(txn, recorded, resp)
            else:
                resp = None
                rep.failed(ex, TIMEOUT if isinstance(exc, asyncio.TimeoutError) else CONNECTION_FAILED, recorded)
            if state is not None:
                state.learn(recorded_ex.request.command, recorded, sent, resp)
            if not done.done():
                done.set_result(None)

        fut.add_done_callback(finished)
        return done

    def _rewrite(self, st: Step, rw: Rewriter, target: Target, txn: dict, checks: dict) -> RemotingCommand:
        src = st.ex.request.command
        qn = None
        if target.queue_nums:
            t = topic_of(src)
            qn = target.queue_nums.get(rw.topic(t)) if t else None
        cmd = rw.request(src, int(time.time() * 1000), producer_only=st.producer_only, queue_nums=qn,
                         broker_name=target.broker_name)
        if cmd.code == c.END_TRANSACTION and cmd.ext:
            _map_end_transaction(cmd, txn, checks, self.report)
        return cmd


def _remember_txn(txn: dict, recorded: RemotingCommand, resp: RemotingCommand) -> None:
    rext, pext = recorded.ext or {}, resp.ext or {}
    tid = rext.get("transactionId")
    if tid and pext.get("msgId"):
        txn[tid] = (pext["msgId"], pext.get("queueOffset", ""), pext.get("transactionId", tid))


def _map_end_transaction(cmd: RemotingCommand, txn: dict, checks: dict, rep: Report) -> None:
    """Point END_TRANSACTION at the half message staging stored (not production's offsets)."""
    ext = cmd.ext
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
