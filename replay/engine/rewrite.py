"""Request rewriting for replay: topics, groups, properties, timestamps, client ids, ACL.

Message ids: by default every copy keeps the captured ``UNIQ_KEY`` (the broker does not
deduplicate on it), so consuming the replayed topic yields exactly the captured messages,
``--scale`` times, each traceable to the capture by its id; the broker still gives every
copy its own offset message id. ``fresh_ids`` gives every copy a new ``UNIQ_KEY`` instead
(for targets that deduplicate on it).
"""
from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import hmac
import uuid
from dataclasses import dataclass, field

import orjson

from dissectors.remoting import codes as c
from dissectors.remoting.command import RemotingCommand
from dissectors.remoting.headers import is_secret
from dissectors.remoting.message import decode_batch, encode_batch, parse_properties, properties_to_string

from .remotingplan import json_body

RETRY_PREFIX = "%RETRY%"
DLQ_PREFIX = "%DLQ%"
TOPIC_KEYS = ("topic",)
GROUP_KEYS = ("producerGroup", "consumerGroup", "group")
CLIENT_KEYS = ("clientID", "clientId")
BROKER_KEYS = ("bname", "brokerName")
V2 = c.SEND_V2_REQUESTS
SENDS = c.SEND_REQUESTS
LONG_POLLS = frozenset({c.POP_MESSAGE, c.NOTIFICATION})


class RewriteError(ValueError):
    """A rule that cannot be parsed (one line for the user)."""


def parse_pairs(values: tuple[str, ...] | list[str], what: str) -> dict[str, str]:
    """``A=B`` items -> dict (RewriteError on a malformed one)."""
    out: dict[str, str] = {}
    for v in values:
        a, sep, b = v.partition("=")
        if not sep or not a:
            raise RewriteError(f"{what} {v!r}: expected FROM=TO")
        out[a] = b
    return out


@dataclass(slots=True)
class Rules:
    """What to change in every replayed request."""

    topics: dict[str, str] = field(default_factory=dict)
    groups: dict[str, str] = field(default_factory=dict)
    set_properties: dict[str, str] = field(default_factory=dict)
    drop_properties: tuple[str, ...] = ()
    refresh_born: bool = True
    fresh_ids: bool = False
    client_suffix: bool = True
    access_key: str | None = None
    secret_key: str | None = None


def sign(ext: dict[str, str], body: bytes | None, secret_key: str) -> str:
    """ACL 1.0 ``Signature``: Base64(HmacSHA1(secret, values sorted by key (Java String
    order) without ``Signature``, then the body))."""
    keys = sorted((k for k in ext if k != "Signature"), key=lambda k: k.encode("utf-16-be"))
    data = "".join(ext[k] for k in keys).encode("utf-8") + (body or b"")
    return base64.b64encode(hmac.new(secret_key.encode("utf-8"), data, hashlib.sha1).digest()).decode()


class Rewriter:
    """Rewrites the requests of one session copy (``copy`` distinguishes client ids)."""

    def __init__(self, rules: Rules, copy: int = 0) -> None:
        self.rules = rules
        self.copy = copy
        self.suffix = f"-replay{copy}" if rules.client_suffix else ""

    # -- names -------------------------------------------------------------------------
    def topic(self, t: str) -> str:
        r = self.rules
        if t in r.topics:
            return r.topics[t]
        for pre in (RETRY_PREFIX, DLQ_PREFIX):
            if t.startswith(pre):
                return pre + self.group(t[len(pre):])
        return t

    def group(self, g: str) -> str:
        return self.rules.groups.get(g, g)

    def client_id(self, cid: str) -> str:
        return cid + self.suffix if cid and self.suffix and not cid.endswith(self.suffix) else cid

    # -- properties -----------------------------------------------------------------------
    def properties(self, props: dict[str, str], now_ms: int, born_ms: int | None) -> dict[str, str]:
        r = self.rules
        for k in r.drop_properties:
            props.pop(k, None)
        if "PGROUP" in props:
            props["PGROUP"] = self.group(props["PGROUP"])
        if "RETRY_TOPIC" in props:
            props["RETRY_TOPIC"] = self.topic(props["RETRY_TOPIC"])
        if r.refresh_born and born_ms is not None and "TIMER_DELIVER_MS" in props:
            with contextlib.suppress(ValueError):  # an absolute delivery time moves with the born timestamp
                props["TIMER_DELIVER_MS"] = str(int(props["TIMER_DELIVER_MS"]) + now_ms - born_ms)
        if r.fresh_ids and "UNIQ_KEY" in props:
            props["UNIQ_KEY"] = uuid.uuid4().hex.upper()
        props.update(r.set_properties)
        return props

    # -- whole request ----------------------------------------------------------------------
    def request(self, cmd: RemotingCommand, now_ms: int, *, producer_only: bool = False,
                queue_nums: int | None = None, broker_name: str | None = None) -> RemotingCommand:
        """A rewritten copy of ``cmd`` (opaque unchanged; the engine renumbers it)."""
        code = cmd.code
        ext = dict(cmd.ext) if cmd.ext else None
        body = cmd.body
        r = self.rules
        if ext is not None:
            born_ms = self._rewrite_ext(ext, code, now_ms, queue_nums, broker_name)
            if code == c.SEND_BATCH_MESSAGE and body:
                body = self._batch(body, now_ms, born_ms)
        if code == c.HEART_BEAT:
            body = self._heartbeat(body, producer_only)
        elif code == c.BATCH_ACK_MESSAGE:
            body = self._batch_ack(body, broker_name)
        if ext is not None and r.access_key and r.secret_key:
            ext["AccessKey"] = r.access_key
            ext["Signature"] = sign(ext, body, r.secret_key)
        return dataclasses.replace(cmd, ext=ext, body=body, header_len=0, frame_len=0)

    def _rewrite_ext(self, ext: dict[str, str], code: int, now_ms: int, queue_nums: int | None,
                     broker_name: str | None) -> int | None:
        """Rewrite a request's extFields in place; the born timestamp (ms) of a send, if it has one."""
        for k in [k for k in ext if is_secret(k)]:
            del ext[k]
        v2 = code in V2
        tkey, gkey, qkey, bkey, pkey, born_key = (
            ("b", "a", "e", "n", "i", "g") if v2 and "b" in ext else
            ("topic", None, "queueId", None, "properties", "bornTimestamp"))
        self._rename_ext(ext, tkey, gkey, bkey, broker_name)
        if queue_nums and qkey in ext:
            try:
                q = int(ext[qkey])
                if q >= queue_nums:
                    ext[qkey] = str(q % queue_nums)
            except ValueError:
                pass
        born_ms = None
        if code in SENDS:
            born_ms = self._send_ext(ext, pkey, born_key, now_ms)
        if code in LONG_POLLS and self.rules.refresh_born and "bornTime" in ext:
            # the broker answers POLLING_TIMEOUT when bornTime + pollTime is already past
            ext["bornTime"] = str(now_ms)
        return born_ms

    def _rename_ext(self, ext: dict[str, str], tkey: str, gkey: str | None, bkey: str | None,
                    broker_name: str | None) -> None:
        """Topics, groups, client ids and (with ``broker_name``) the broker name in extFields;
        ``tkey``/``gkey``/``bkey``: the topic/group/broker keys of this header's form (V2 short names)."""
        for k in (*TOPIC_KEYS, tkey):
            if k in ext:
                ext[k] = self.topic(ext[k])
        for k in (*GROUP_KEYS, *((gkey,) if gkey else ())):
            if k in ext:
                ext[k] = self.group(ext[k])
        if "retryTopic" in ext:
            ext["retryTopic"] = self.topic(ext["retryTopic"])
        for k in CLIENT_KEYS:
            if k in ext:
                ext[k] = self.client_id(ext[k])
        if broker_name:
            for k in (*BROKER_KEYS, *((bkey,) if bkey else ())):
                if k in ext:
                    ext[k] = broker_name

    def _send_ext(self, ext: dict[str, str], pkey: str, born_key: str, now_ms: int) -> int | None:
        """A send's born timestamp (refreshed with ``refresh_born``) and properties; the
        recorded born timestamp (ms), None when absent or not a number."""
        born_ms: int | None
        try:
            born_ms = int(ext.get(born_key, ""))
        except ValueError:
            born_ms = None
        if self.rules.refresh_born and born_key in ext:
            ext[born_key] = str(now_ms)
        if pkey in ext:
            ext[pkey] = properties_to_string(
                self.properties(parse_properties(ext[pkey]), now_ms, born_ms))
        return born_ms

    def _batch(self, body: bytes, now_ms: int, born_ms: int | None) -> bytes:
        msgs, problems = decode_batch(body)
        if problems or not msgs:
            return body
        for m in msgs:
            m.properties = self.properties(m.properties, now_ms, born_ms)
        return encode_batch(msgs)

    def _batch_ack(self, body: bytes | None, broker_name: str | None) -> bytes | None:
        """BATCH_ACK_MESSAGE body: group (``c``) and topic (``t``) of every ack, the broker name."""
        d = json_body(body)
        if d is None:
            return body
        if broker_name and "brokerName" in d:
            d["brokerName"] = broker_name
        for a in d.get("acks") or []:
            if isinstance(a, dict):
                for short, long, rename in (("c", "consumerGroup", self.group), ("t", "topic", self.topic)):
                    for k in (short, long):
                        if isinstance(a.get(k), str):
                            a[k] = rename(a[k])
        return orjson.dumps(d)

    def _heartbeat(self, body: bytes | None, producer_only: bool) -> bytes | None:
        d = json_body(body)
        if d is None:
            return body
        if "clientID" in d and isinstance(d["clientID"], str):
            d["clientID"] = self.client_id(d["clientID"])
        for p in d.get("producerDataSet") or []:
            if isinstance(p, dict) and isinstance(p.get("groupName"), str):
                p["groupName"] = self.group(p["groupName"])
        if producer_only:
            d["consumerDataSet"] = []
        for cd in d.get("consumerDataSet") or []:
            if not isinstance(cd, dict):
                continue
            if isinstance(cd.get("groupName"), str):
                cd["groupName"] = self.group(cd["groupName"])
            for s in cd.get("subscriptionDataSet") or []:
                if isinstance(s, dict) and isinstance(s.get("topic"), str):
                    s["topic"] = self.topic(s["topic"])
        try:
            return orjson.dumps(d)
        except TypeError:
            return body
