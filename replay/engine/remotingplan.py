"""Which captured remoting requests replay re-sends (``--target``), and what a plan needs
to know about them: session kind, topics, sampling values, when their answer arrived, how
a replayed answer is compared with the recorded one.

Default selection: the producer side - route lookups, producer heartbeats / unregisters,
sends, END_TRANSACTION. Consumer requests (pulls, pops, acks, offsets, rebalance locks,
consumer heartbeats ...) with ``--consumers`` (or when ``-Y`` selects them); admin codes
and broker <-> name-server traffic never.

The same interface as :mod:`.grpcplan`; :mod:`.plan` reaches either through
``protocol_of(ex).planner``.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from dissectors.remoting import codes as c
from dissectors.remoting import fastjson
from dissectors.remoting.command import RemotingCommand
from dissectors.remoting.headers import topic_of
from dissectors.remoting.message import decode_batch, parse_properties
from rmqsniff.model import Connection, Exchange
from rmqsniff.protocols.remoting.classify import CLASSIFIER

from .diff import compare as compare  # the planner's answer diff
from .plan import BROKER, NAMESRV, SAMPLE_BY, request_of, response_of

PRODUCER_CODES: frozenset[int] = frozenset({
    c.GET_ROUTEINFO_BY_TOPIC, c.HEART_BEAT, c.UNREGISTER_CLIENT, c.SEND_MESSAGE, c.SEND_MESSAGE_V2,
    c.SEND_BATCH_MESSAGE, c.END_TRANSACTION,
})
"""Replayed by default (heartbeats and unregisters only for their producer part)."""

CONSUMER_CODES: frozenset[int] = frozenset({
    c.PULL_MESSAGE, c.LITE_PULL_MESSAGE, c.QUERY_CONSUMER_OFFSET, c.UPDATE_CONSUMER_OFFSET,
    c.GET_CONSUMER_LIST_BY_GROUP, c.CONSUMER_SEND_MSG_BACK, c.LOCK_BATCH_MQ, c.UNLOCK_BATCH_MQ,
    c.SEARCH_OFFSET_BY_TIMESTAMP, c.GET_MAX_OFFSET, c.GET_MIN_OFFSET, c.QUERY_ASSIGNMENT,
    c.POP_MESSAGE, c.ACK_MESSAGE, c.PEEK_MESSAGE, c.CHANGE_MESSAGE_INVISIBLETIME, c.NOTIFICATION,
    c.POLLING_INFO, c.BATCH_ACK_MESSAGE,
})
"""Replayed with ``--consumers`` (or when ``-Y`` selects them)."""

REPLAYABLE = PRODUCER_CODES | CONSUMER_CODES
"""Nothing else is ever replayed: admin codes and broker <-> name-server traffic stay out."""

SEND_SIDE = c.SEND_REQUESTS | {c.END_TRANSACTION}

UNTARGETED = "remoting (no --target)"
"""Why a remoting request is left out when replay has no remoting target."""


def json_body(body: bytes | None) -> dict[str, Any] | None:
    """A JSON object body (as fastjson, RocketMQ's serializer, writes it), or None."""
    if not body:
        return None
    try:
        d = orjson.loads(body)
    except orjson.JSONDecodeError:
        try:
            d = fastjson.loads(body)
        except Exception:  # noqa: BLE001 - not JSON: leave it to the caller
            return None
    return d if isinstance(d, dict) else None


def heartbeat_sides(cmd: RemotingCommand) -> tuple[bool, bool]:
    """(has producer groups, has consumer groups) of a HEART_BEAT body."""
    d = json_body(cmd.body) or {}
    return bool(d.get("producerDataSet")), bool(d.get("consumerDataSet"))


# -- selection ---------------------------------------------------------------------------
def why_not(ex: Exchange, consumers: bool, selected_by_filter: bool | None) -> str | None:
    """None when this remoting request is replayed, else why not (``selected_by_filter``:
    the ``-Y`` verdict, None without a filter; a filter overrides the producer / consumer
    split, never :data:`REPLAYABLE`)."""
    cmd = request_of(ex).command
    code = cmd.code
    if code not in REPLAYABLE:
        return "not a client request (admin / server traffic)"
    if selected_by_filter is not None:
        return None if selected_by_filter else "filter"
    if code in PRODUCER_CODES:
        if code == c.HEART_BEAT and not consumers:
            prod, _cons = heartbeat_sides(cmd)
            return None if prod else "consumer heartbeat (use --consumers)"
        if code == c.UNREGISTER_CLIENT and not consumers:
            ext = cmd.ext or {}
            return None if ext.get("producerGroup") else "consumer unregister (use --consumers)"
        return None
    return None if consumers else "consumer traffic (use --consumers)"


def consumer_side(ex: Exchange) -> str | None:
    """``--consumers-only``: why this request is producer traffic (sends, END_TRANSACTION,
    heartbeat / unregister of a producer alone), None when it may be replayed."""
    cmd = request_of(ex).command
    if cmd.code in SEND_SIDE:
        return "producer traffic (--consumers-only)"
    if cmd.code == c.HEART_BEAT and not heartbeat_sides(cmd)[1]:
        return "producer heartbeat (--consumers-only)"
    if cmd.code == c.UNREGISTER_CLIENT and not (cmd.ext or {}).get("consumerGroup"):
        return "producer unregister (--consumers-only)"
    return None


def sample_value(by: str, ex: Exchange) -> str | None:
    """What ``--sample-by`` hashes for this request (None: not applicable, always kept)."""
    cmd = request_of(ex).command
    if by == "topic":
        return topic_of(cmd)
    if by == "client":
        return ex.connection.client[0]
    if by == "key":
        ext = cmd.ext or {}
        props = ext.get("i") if cmd.code in c.SEND_V2_REQUESTS else ext.get("properties")
        keys = parse_properties(props or "").get("KEYS")
        if not keys and cmd.code == c.SEND_BATCH_MESSAGE and cmd.body:
            msgs, _ = decode_batch(cmd.body)
            keys = next((m.properties.get("KEYS") for m in msgs if m.properties.get("KEYS")), None)
        return keys.split(" ")[0] if keys else None
    raise ValueError(f"--sample-by {by!r}: expected one of {', '.join(SAMPLE_BY)}")


# -- sessions and steps ------------------------------------------------------------------
def session_kind(conn: Connection, nameserver_traffic: bool) -> str:
    """NAMESRV for a connection to a name server (name-server requests seen on it, or a
    name-server port), else BROKER."""
    return NAMESRV if nameserver_traffic or conn.server[1] in CLASSIFIER.nameserver_ports else BROKER


def session_topics(exchanges: Iterable[Exchange]) -> list[str]:
    seen: dict[str, None] = {}
    for ex in exchanges:
        t = topic_of(request_of(ex).command)
        if t:
            seen[t] = None
    return list(seen)


def default_topics(exchanges: Iterable[Exchange]) -> list[str]:
    """Topics senders fall back to when theirs has no route (``TBW102``)."""
    seen: dict[str, None] = {}
    for ex in exchanges:
        cmd = request_of(ex).command
        ext = cmd.ext or {}
        t = ext.get("c") if cmd.code in c.SEND_V2_REQUESTS else ext.get("defaultTopic")
        if t:
            seen[t] = None
    return list(seen)


def broker_name(exchanges: Iterable[Exchange]) -> str | None:
    """The broker name the requests carry (``bname`` / ``brokerName`` headers)."""
    for ex in exchanges:
        ext = request_of(ex).command.ext or {}
        for k in ("n", "bname", "brokerName"):
            if ext.get(k):
                return ext[k]
    return None


def producer_only(ex: Exchange) -> bool:
    """A heartbeat: replayed without its consumer part unless consumers are replayed."""
    return request_of(ex).command.code == c.HEART_BEAT


def answer_ts(ex: Exchange) -> float:
    """When the client had its answer: the response's arrival."""
    return response_of(ex).ts
