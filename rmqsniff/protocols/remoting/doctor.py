"""Remoting's answers to ``rmqsniff doctor`` (:class:`~rmqsniff.protocols.facts.DoctorFacts`).

Bodies are decoded only for the few requests whose rules need them (sends, heartbeats,
route answers); every other exchange costs a few dict look-ups.
"""
from __future__ import annotations

from typing import Any

from dissectors.remoting import bodies, codes, headers
from dissectors.remoting.message import parse_properties

from ...model import Exchange
from .. import facts as F

_CAUSES = {
    codes.SYSTEM_BUSY: F.BUSY, codes.FLOW_CONTROL: F.BUSY, codes.TOPIC_NOT_EXIST: F.TOPIC_MISSING,
    codes.NO_PERMISSION: F.NO_PERMISSION, codes.MESSAGE_ILLEGAL: F.MESSAGE_ILLEGAL,
    codes.FLUSH_DISK_TIMEOUT: F.FLUSH_TIMEOUT, codes.FLUSH_SLAVE_TIMEOUT: F.FLUSH_TIMEOUT,
    codes.SLAVE_NOT_AVAILABLE: F.FLUSH_TIMEOUT, codes.SERVICE_NOT_AVAILABLE: F.SERVICE_UNAVAILABLE,
    codes.SUBSCRIPTION_NOT_LATEST: F.SUBSCRIPTION_NOT_LATEST, codes.SUBSCRIPTION_NOT_EXIST: F.SUBSCRIPTION_NOT_EXIST,
}
_KINDS = {codes.GET_ROUTEINFO_BY_TOPIC: F.ROUTE, codes.HEART_BEAT: F.HEARTBEAT,
          codes.NOTIFY_CONSUMER_IDS_CHANGED: F.IDS_CHANGED, codes.CHECK_TRANSACTION_STATE: F.TX_CHECK,
          codes.END_TRANSACTION: F.TX_END} | {c: F.SEND for c in codes.SEND_REQUESTS}
_LONG_POLL = codes.PULL_REQUESTS | codes.POP_REQUESTS
MASTER_ID = 0  # brokerAddrs key of the master: the address clients send to
_TX_NOT_TYPE = "0"  # END_TRANSACTION commitOrRollback of an UNKNOW answer (TRANSACTION_NOT_TYPE)


def _cause(resp: Any) -> str | None:
    code = resp.code
    if code == codes.SUCCESS:
        return None
    cause = _CAUSES.get(code)
    if cause is None and code == codes.SYSTEM_ERROR and resp.remark and "busy" in resp.remark.lower():
        cause = F.BUSY  # "[PC_SYNCHRONIZED]broker busy", "[TIMEOUT_CLEAN_QUEUE]broker busy …"
    return cause


def doctor_facts(ex: Exchange) -> F.DoctorFacts | None:
    req = ex.request.command if ex.request is not None else None
    if req is None:
        return None
    resp = ex.response.command if ex.response is not None else None
    code = req.code
    f = F.DoctorFacts(_KINDS.get(code, F.OTHER), _cause(resp) if resp is not None else None,
                      headers.topic_of(req), headers.group_of(req))
    f.long_poll = code in _LONG_POLL
    kind = f.kind
    if kind is F.OTHER:
        return f
    if kind is F.SEND:
        _send(f, req)
    elif kind is F.HEARTBEAT:
        _heartbeat(f, req)
    elif kind is F.ROUTE:
        if resp is not None and resp.code == codes.SUCCESS and resp.body:
            view = bodies.decode_body(resp, req)
            if view.kind == "topic_route":
                f.addresses = tuple(a for addrs in bodies.broker_addresses(view.value).values()
                                    if isinstance(a := addrs.get(MASTER_ID), str))
    elif kind is F.TX_CHECK:
        ext = req.ext or {}
        f.half_message = ext.get("msgId") or ext.get("transactionId")
    elif kind is F.TX_END:
        ext = req.ext or {}
        f.half_message = ext.get("msgId") or ext.get("transactionId")
        f.unknown_state = ext.get("commitOrRollback") == _TX_NOT_TYPE
    return f


def _send(f: F.DoctorFacts, req: Any) -> None:
    ext = req.ext or {}
    v2 = req.code in codes.SEND_V2_REQUESTS
    born = ext.get("g" if v2 else "bornTimestamp") or ext.get("bornTimestamp")
    if born and born.isdigit():
        f.born_ms = int(born)
    if req.code == codes.SEND_BATCH_MESSAGE and req.body:
        view = bodies.decode_body(req)
        if view.kind == "batch":
            f.unique_keys = tuple(k for m in view.value if (k := m.properties.get("UNIQ_KEY")))
            f.largest_body = max((len(m.body) for m in view.value), default=0)
        return
    raw = (ext.get("i") if v2 else None) or ext.get("properties")
    if raw:
        k = unique_key(raw)
        if k:
            f.unique_keys = (k,)
    f.largest_body = len(req.body or b"")


_UNIQ = "UNIQ_KEY\x01"


def unique_key(props: str) -> str | None:
    """UNIQ_KEY of a properties string, as :func:`parse_properties` reads it (the last one wins),
    without splitting the whole string."""
    i = props.rfind(_UNIQ)
    while i > 0 and props[i - 1] != "\x02":
        i = props.rfind(_UNIQ, 0, i)
    if i < 0:
        return None
    start = i + len(_UNIQ)
    end = props.find("\x02", start)
    value = props[start:end] if end >= 0 else props[start:]
    if value and "\x01" not in value:
        return value
    return parse_properties(props).get("UNIQ_KEY") or None  # the rare odd piece: the full rule


def _heartbeat(f: F.DoctorFacts, req: Any) -> None:
    f.client_kind = f"{req.language} {codes.version_name(req.version) or req.version}"
    if not req.body:
        return
    view = bodies.decode_body(req)
    if view.kind != "heartbeat":
        return
    hb = bodies.heartbeat_summary(view.value)
    cid = hb.get("clientID")
    f.client_id = cid if isinstance(cid, str) else None
    f.subscriptions = tuple(
        (str(c["groupName"]), tuple(sorted((str(s["topic"]), str(s["subString"] or "*")) for s in c["subscriptions"])))
        for c in hb["consumerGroups"] if c.get("groupName"))
