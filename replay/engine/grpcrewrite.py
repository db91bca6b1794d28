"""Rewriting of replayed gRPC calls: the remoting :class:`Rules` applied to protobuf requests
and gRPC metadata.

* every ``Resource`` named ``group`` follows ``--map-group``, every other ``Resource`` (topics
  of messages, queues, subscriptions, publishing settings, acks ...) ``--map-topic``;
* the access point a client names (QueryRoute/QueryAssignment endpoints, Telemetry
  settings) becomes the staging gRPC endpoint;
* a ReceiveMessage ``attempt_id`` is new for every replayed call;
* messages: user properties as the remoting rules (``--map-property``, ``--drop-property``),
  born timestamp refreshed (a delivery timestamp moves with it), ``message_id`` kept unless
  ``--fresh-ids`` (as ``UNIQ_KEY`` for remoting);
* metadata: ``x-mq-client-id`` suffixed per copy, new ``x-mq-request-id`` and
  ``x-mq-date-time``; ``authorization`` / ``x-mq-session-token`` dropped, or re-signed
  (``MQv2-HMAC-SHA1`` over the date-time) with ``--access-key``/``--secret-key``.
"""
from __future__ import annotations

import hashlib
import hmac
import itertools
import os
import time
import uuid
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message as PbMessage

from dissectors.grpc.call import SECRET_HEADERS
from rmqsniff.model import Endpoint

from .rewrite import Rewriter, Rules

RESOURCE = "apache.rocketmq.v2.Resource"
ENDPOINTS = "apache.rocketmq.v2.Endpoints"
MESSAGE = "apache.rocketmq.v2.Message"
ENDPOINT_FIELDS = frozenset({"endpoints", "access_point"})  # the client's own access point
EPOCH_2021 = 1609459200
_seq = itertools.count()


def grpc_signature(secret_key: str, date_time: str) -> str:
    """Hex HMAC-SHA1 of the ``x-mq-date-time`` value keyed by the secret key."""
    return hmac.new(secret_key.encode("utf-8"), date_time.encode("utf-8"), hashlib.sha1).hexdigest().upper()


def new_message_id(now: float | None = None) -> str:
    """A 34-hex-digit v1 message id: version 01, 6 bytes of host, pid, seconds since 2021, sequence."""
    t = int(now if now is not None else time.time()) - EPOCH_2021
    host = uuid.getnode().to_bytes(8, "big")[-6:]
    return ("01" + host.hex() + (os.getpid() & 0xFFFF).to_bytes(2, "big").hex()
            + (t & 0xFFFFFFFF).to_bytes(4, "big").hex() + (next(_seq) & 0xFFFFFFFF).to_bytes(4, "big").hex()).upper()


class GrpcRewriter:
    """Rewrites the calls of one gRPC session copy."""

    def __init__(self, rules: Rules, copy: int = 0, access_point: Endpoint | None = None) -> None:
        self.rw = Rewriter(rules, copy)
        self.rules = rules
        self.access_point = access_point

    # -- metadata ----------------------------------------------------------------------------
    def headers(self, headers: list[tuple[str, str]], now: float | None = None) -> list[tuple[str, str]]:
        r = self.rules
        now = time.time() if now is None else now
        date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
        out: list[tuple[str, str]] = []
        for k, v in headers:
            if k in SECRET_HEADERS or k.startswith(":"):
                continue
            if k == "x-mq-client-id":
                v = self.rw.client_id(v)
            elif k == "x-mq-request-id":
                v = str(uuid.uuid4())
            elif k == "x-mq-date-time":
                continue  # set below
            out.append((k, v))
        out.append(("x-mq-date-time", date))
        if r.access_key and r.secret_key:
            out.append(("authorization", f"MQv2-HMAC-SHA1 Credential={r.access_key}, "
                        f"SignedHeaders=x-mq-date-time, Signature={grpc_signature(r.secret_key, date)}"))
        return out

    # -- protobuf -------------------------------------------------------------------------------
    def request(self, msg: PbMessage, now_ms: int | None = None) -> PbMessage:
        """A rewritten copy of a request message (any MessagingService request type)."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        out = type(msg)()
        out.CopyFrom(msg)
        self._walk(out, now_ms)
        if "attempt_id" in out.DESCRIPTOR.fields_by_name and out.HasField("attempt_id"):
            dyn: Any = out  # a schema-built class: its fields are unknown to the type checker
            dyn.attempt_id = str(uuid.uuid4())  # a ReceiveMessage retry key: one per replayed call
        return out

    def _walk(self, m: PbMessage, now_ms: int) -> None:
        for fd, value in m.ListFields():
            mt = fd.message_type  # (None only for non-message fields)
            if fd.type != FieldDescriptor.TYPE_MESSAGE or mt is None or mt.GetOptions().map_entry:
                continue
            full = mt.full_name
            items = list(value) if fd.is_repeated else [value]
            for v in items:
                if full == RESOURCE:
                    if v.name:
                        v.name = self.rw.group(v.name) if fd.name == "group" else self.rw.topic(v.name)
                elif full == ENDPOINTS:
                    if fd.name in ENDPOINT_FIELDS and self.access_point is not None:
                        self._endpoints(v, self.access_point)
                else:
                    if full == MESSAGE:
                        self._message(v, now_ms)
                    self._walk(v, now_ms)

    # (the messages below are of schema-built classes: typed Any, their fields are unknown to mypy)
    def _endpoints(self, eps: Any, access_point: Endpoint) -> None:
        host, port = access_point
        del eps.addresses[:]
        a = eps.addresses.add()
        a.host, a.port = host, port
        eps.scheme = 2 if ":" in host else 1 if host.replace(".", "").isdigit() else 3

    def _message(self, msg: Any, now_ms: int) -> None:
        r = self.rules
        sp = msg.system_properties
        born_ms = None
        if sp.HasField("born_timestamp"):
            born_ms = sp.born_timestamp.seconds * 1000 + sp.born_timestamp.nanos // 1_000_000
        if r.refresh_born and born_ms is not None:
            if sp.HasField("delivery_timestamp"):
                d = sp.delivery_timestamp
                _set_ms(d, d.seconds * 1000 + d.nanos // 1_000_000 + now_ms - born_ms)
            _set_ms(sp.born_timestamp, now_ms)
        if r.fresh_ids and sp.message_id:
            sp.message_id = new_message_id(now_ms / 1000)
        props = self.rw.properties(dict(msg.user_properties), now_ms, born_ms)
        msg.user_properties.clear()
        msg.user_properties.update(props)


def _set_ms(ts: Any, ms: int) -> None:
    ts.seconds, ts.nanos = ms // 1000, (ms % 1000) * 1_000_000
