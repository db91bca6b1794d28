"""One copy of one captured gRPC client connection, re-originated as a new HTTP/2
connection to the staging RocketMQ proxy's gRPC endpoint (``--grpc-target``).

Calls go out in recorded order with the engine's pacing and dependencies. Unary calls are
answered by their trailers; Telemetry (bidirectional) sends the captured ``settings``
commands, counts as answered by the proxy's first reply and stays open until the session
ends, then is cancelled (RST_STREAM CANCEL) as clients do. Commands the proxy pushes later
on it (transaction checks, verify / thread-stack requests) are counted, not answered.
EndTransaction is pointed at the transaction ids staging gave the replayed half messages;
with ``--consumers``, acks and invisible-time changes at the receipt handles staging handed
out (:mod:`.grpcstate`).
"""
from __future__ import annotations

import asyncio
import time
from typing import Any

from google.protobuf.message import DecodeError

from dissectors.grpc.call import GrpcCall, GrpcMessage, GrpcPayload
from dissectors.grpc.connection import response_code
from dissectors.grpc.messages import parse
from dissectors.grpc.schema import BY_NAME, Rpc
from rmqsniff.model import Connection
from rmqsniff.protocols import GRPC

from ..report import CONNECTION_FAILED, TIMEOUT
from .grpcclient import Call, GrpcClient
from .grpcrewrite import GrpcRewriter
from .grpcstate import GrpcConsumerState
from .pacing import LATE_AFTER, MAX
from .plan import Session, Step, request_of
from .safety import ep_text

TELEMETRY = "Telemetry"
NO_HALF = "EndTransaction without a replayed half message"


async def run_session(eng, si: int, s: Session, copy: int, loop: int, target) -> bool:
    """One loop of one copy of a gRPC session; True when replay stopped."""
    o, rep = eng.opts, eng.report
    grw = GrpcRewriter(o.rules, copy, target.upstream)
    client: GrpcClient | None = None
    conn: Connection | None = None
    waits: dict[int, asyncio.Future] = {}
    streams: list[Call] = []
    txn: dict[str, tuple[str, str]] = {}  # captured transaction id -> replayed (message id, transaction id)
    state = GrpcConsumerState()
    try:
        for n, st in enumerate(s.steps):
            due = await eng.turn(si, s, st, n, copy, loop, waits)
            if due is None:
                return True
            if client is None:
                try:
                    client = await GrpcClient.connect(target.endpoint, o.connect_timeout)
                except (OSError, asyncio.TimeoutError) as e:
                    rep.skipped(f"cannot connect to {ep_text(target.upstream)}: {e or 'timeout'}", len(s.steps) - n)
                    return False
                conn = Connection(s.id, client.local or ("127.0.0.1", 0), target.upstream, role_source="replay")
            src = st.command
            rpc = BY_NAME[src.method]
            msgs = [p.message for p in src.messages if p.message is not None]
            if rpc.name == TELEMETRY:  # replies to the capture's server commands mean nothing here
                msgs = [m for m in msgs if m.HasField("settings")]
            now = time.time()
            out = [grw.request(m, int(now * 1000)) for m in msgs]
            if rpc.name == "EndTransaction" and not _map_end_transaction(out, txn):
                rep.unmapped[NO_HALF] += 1
                rep.skipped(NO_HALF)
                continue
            why = state.apply(rpc.name, out)
            if why is not None:
                rep.unmapped[why] += 1
                rep.skipped(why)
                continue
            headers = grw.headers(src.headers, now)
            data = [m.SerializeToString() for m in out]
            eng._sent_total += 1
            try:
                call = client.start(rpc.path, headers, data, end=not rpc.client_streaming)
            except ConnectionError as e:
                rep.skipped(f"connection lost: {e}", len(s.steps) - n)
                return False
            if rpc.client_streaming:
                streams.append(call)
                call.on_message = _server_commands(rep)
            late = call.sent_at - due if call.sent_at - due > LATE_AFTER and o.pacing.mode != MAX else 0.0
            req = GrpcMessage(call.stream_id, True, rpc.code, rpc.name, rpc.path, "path", headers,
                              messages=[GrpcPayload(call.sent_at, d, False, 5 + len(d), rpc.request, m)
                                        for d, m in zip(data, out, strict=True)],
                              size=call.size, headers_seen=True, first_ts=call.sent_at, last_ts=call.sent_at)
            ex = rep.request_sent(conn, req, call.size, call.sent_at, late, protocol=GRPC.name)
            waits[st.index] = asyncio.ensure_future(_watch(eng, client, call, ex, st, rpc, txn, state, out))
        if waits:
            await asyncio.wait(list(waits.values()))
        return False
    finally:
        if client is not None:
            for c in streams:
                client.cancel(c)
            client.close()


def _map_end_transaction(out: list, txn: dict[str, tuple[str, str]]) -> bool:
    ok = bool(out)
    for m in out:
        got = txn.get(m.transaction_id)
        if got is None:
            ok = False
            continue
        m.message_id, m.transaction_id = got
    return ok


def _server_commands(rep):
    """Counts what the proxy pushes on a Telemetry stream after its settings reply."""
    def seen(data: bytes) -> None:
        try:
            m = parse("TelemetryCommand", data)
        except DecodeError:
            rep.server_requests["Telemetry (undecodable)"] += 1
            return
        which = m.WhichOneof("command")
        if which != "settings":
            rep.server_requests[f"Telemetry {which or 'status'}"] += 1
    return seen


async def _watch(eng, client: GrpcClient, call: Call, ex, st: Step, rpc: Rpc, txn: dict,
                 state: GrpcConsumerState, sent: list) -> None:
    """Report the answer (or its absence) when it comes."""
    rep = eng.report
    rec = st.ex
    recorded = rec.response.command if rec.response is not None else None
    lat = rec.latency_ms if not rpc.client_streaming or recorded is None or not recorded.messages \
        else (recorded.messages[0].ts - request_of(rec).ts) * 1000.0
    timeout = eng.opts.timeout + (lat / 1000.0 * 1.5 if lat else 0.0)
    poll = sent[0].long_polling_timeout if sent and "long_polling_timeout" in sent[0].DESCRIPTOR.fields_by_name \
        else None
    if poll is not None:  # a long poll may rightly take that long on staging
        timeout = max(timeout, poll.seconds + poll.nanos / 1e9 + eng.opts.timeout)
    assert call.first is not None and call.done is not None  # made by GrpcClient.start
    first = call.first if rpc.client_streaming else call.done
    try:
        ts = await asyncio.wait_for(asyncio.shield(first), timeout)
    except asyncio.TimeoutError:
        client.cancel(call)
        rep.failed(ex, TIMEOUT, recorded)
        return
    if not call.messages and call.grpc_status is None:
        ex.notes.append(call.error or "no answer")
        rep.failed(ex, CONNECTION_FAILED, recorded)
        return
    still_open = rpc.client_streaming and not call.done.done()  # Telemetry: its first reply answers it
    resp = response(call, rpc, ex.request.command, first_only=still_open)
    rep.answered(ex, resp, ts, call.resp_size, recorded)
    if rpc.name == "SendMessage" and recorded is not None:
        _remember_txn(txn, recorded, resp)
    state.learn(rpc.name, recorded, resp, sent)


def response(call: Call, rpc: Rpc, req: GrpcMessage, first_only: bool = False) -> GrpcMessage:
    """The replayed answer as the dissector's response side (so stats and diff treat it alike)."""
    got = call.messages[:1] if first_only else call.messages
    payloads = []
    for ts, data in got:
        p = GrpcPayload(ts, data, False, 5 + len(data), rpc.response)
        try:
            p.message = parse(rpc.response, data)
        except DecodeError as e:
            p.error = f"undecodable {rpc.response}: {e}"
        payloads.append(p)
    r = GrpcMessage(call.stream_id, False, method=rpc.name, headers=call.headers, trailers=call.trailers,
                    messages=payloads, size=call.resp_size, headers_seen=bool(call.headers),
                    end_stream=not first_only, first_ts=got[0][0] if got else 0.0,
                    last_ts=got[-1][0] if got else 0.0)
    r.grpc_status = None if first_only else call.grpc_status
    r.grpc_message = call.grpc_message
    for p in payloads:
        m: Any = p.message  # a schema-built class: its fields are unknown to the type checker
        if m is not None and "status" in m.DESCRIPTOR.fields_by_name and m.HasField("status"):
            r.status_code, r.status_message = m.status.code, m.status.message
    r.code = response_code(GrpcCall(call.stream_id, req, r))
    return r


def _remember_txn(txn: dict, recorded: GrpcMessage, resp: GrpcMessage) -> None:
    """Captured transaction ids -> the ids staging gave the same entries."""
    rec = _entries(recorded)
    got = _entries(resp)
    for a, b in zip(rec, got, strict=False):  # the staging answer may hold fewer entries
        if a.transaction_id and b.transaction_id:
            txn[a.transaction_id] = (b.message_id, b.transaction_id)


def _entries(answer: GrpcMessage) -> list[Any]:
    """The ``entries`` of every message of a SendMessage answer."""
    out: list[Any] = []
    for p in answer.messages:
        m: Any = p.message  # a schema-built class: its fields are unknown to the type checker
        if m is not None:
            out += m.entries
    return out
