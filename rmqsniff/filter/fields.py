"""The filter fields: what each is (:data:`FIELDS`), how its value is read from an exchange
(:func:`getter`; the fields every protocol has are :data:`COMMON_FIELDS`, the others come
from each protocol's ``fields``), and how a literal is read as a value of its kind
(:func:`coerce`: codes, versions, durations, sizes...)."""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dissectors.remoting import codes

from ..model import Exchange, endpoint_text
from ..protocols import PROTOCOLS, protocol_named, protocol_of
from ..units import parse_duration_ms, parse_size
from .lexer import FilterError, Token

Getter = Callable[[Exchange], Any]
Predicate = Callable[[Exchange], bool]


# ---------------------------------------------------------------- literals

_VERSION = re.compile(r"^V(\d)_(\d)_(\d)(_SNAPSHOT)?$", re.I)


def _version_value(text: str) -> int | None:
    if text.upper() == "HIGHER_VERSION":
        return codes.HIGHER_VERSION
    m = _VERSION.match(text)
    if m:
        try:
            return codes.version_ordinal(int(m.group(1)), int(m.group(2)), int(m.group(3)), bool(m.group(4)))
        except ValueError:
            return None
    try:
        return int(text)
    except ValueError:
        return None


# ---------------------------------------------------------------- fields
# kinds: int, code, version, duration (ms), size (bytes), str, enum (case-insensitive)

@dataclass(frozen=True, slots=True)
class Field:
    name: str
    kind: str
    help: str
    multi: bool = False  # the getter returns a tuple of values


FIELDS: dict[str, Field] = {f.name: f for f in (
    Field("code", "code", "request code, number or name (SEND_MESSAGE_V2)"),
    Field("response_code", "code", "response code, number or name (SYSTEM_BUSY)"),
    Field("status", "enum", "answered/unanswered/oneway/orphan, or the answer's class "
                            "success/no_message/error", multi=True),
    Field("topic", "str", "topic named by the request (or response) header"),
    Field("group", "str", "producer or consumer group"),
    Field("tag", "str", "tags of the messages carried", multi=True),
    Field("keys", "str", "keys of the messages carried", multi=True),
    Field("msgid", "str", "message ids carried: unique key (UNIQ_KEY) and offset msg id", multi=True),
    Field("trace_id", "str", "trace ids of the messages carried (traceparent, sw8, b3, uber-trace-id)",
          multi=True),
    Field("client", "str", "client endpoint ip:port (or just ip)", multi=True),
    Field("broker", "str", "server endpoint ip:port (or just ip), or the broker name in the header",
          multi=True),
    Field("conn", "int", "connection id"),
    Field("latency", "duration", "request to response time (50ms, 1.5s; bare numbers are ms)"),
    Field("size", "size", "request + response frame bytes (4KiB)"),
    Field("language", "enum", "client language of the request (JAVA, GO, ...)"),
    Field("version", "version", "client version of the request (ordinal or V5_3_3)"),
    Field("opaque", "int", "opaque (request id) of the exchange"),
    Field("protocol", "enum", "remoting or grpc"),
)}


def _proto_getter(name: str) -> Getter:
    last: list[Any] = [None, None]  # protocol name -> getter, for the common single-protocol case

    def get(ex: Exchange) -> Any:
        p = ex.protocol
        if p is last[0]:
            g = last[1]
        else:
            g = protocol_named(p).fields.get(name)
            last[0], last[1] = p, g
        return g(ex) if g is not None else None
    return get


def _protocol_code(text: str) -> tuple[frozenset[str] | None, int] | None:
    """A code literal: a number (any protocol), or a name one protocol knows, as
    (protocols it applies to or None for all, code)."""
    try:
        return None, int(text, 0)
    except ValueError:
        pass
    for p in PROTOCOLS.values():
        n = p.code_literal(text)
        if n is not None:
            return frozenset({p.name}), n
    return None


def _status(ex: Exchange) -> tuple[str, ...]:
    if ex.response is not None:
        cl = protocol_of(ex).classifier  # the stats' success/no_message/error rule
        req = ex.request
        return (ex.status, cl.classify(req.command.code if req is not None else None, ex.response.command.code))
    return (ex.status,)


def _size(ex: Exchange) -> int:
    return (ex.request.size if ex.request is not None else 0) + (ex.response.size if ex.response is not None else 0)


def _broker(ex: Exchange) -> tuple[str, ...]:
    srv = ex.connection.server
    name = _proto_getter("broker_name")(ex)
    return (endpoint_text(srv), srv[0], name) if name else (endpoint_text(srv), srv[0])


COMMON_FIELDS: dict[str, Getter] = {
    "status": _status,
    "latency": lambda ex: ex.latency_ms,
    "size": _size,
    "client": lambda ex: (endpoint_text(ex.connection.client), ex.connection.client[0]),
    "broker": _broker,
    "conn": lambda ex: ex.connection.id,
    "protocol": lambda ex: ex.protocol,
}


def getter(name: str) -> Getter:
    """The value getter of a field (None result = missing)."""
    g = COMMON_FIELDS.get(name)
    return g if g is not None else _proto_getter(name)


def describe_fields() -> str:
    """One line per field, for ``--help`` texts."""
    return "\n".join(f"  {f.name:<14} {f.help}" for f in FIELDS.values())


def coerce(field: Field, tok: Token, expression: str) -> Any:
    """The literal ``tok`` of ``expression`` as a value of ``field``'s kind (resolved once, at
    compile time); FilterError at ``tok`` when it is not one."""
    text = tok.text
    kind = field.kind

    def bad(message: str) -> FilterError:
        return FilterError(message, tok.pos, expression, max(1, tok.end - tok.pos))

    if kind == "int":
        try:
            return int(text, 0)
        except ValueError:
            raise bad(f"{field.name} takes a whole number, not {text!r}") from None
    if kind == "code":
        c = _protocol_code(text)
        if c is None:
            raise bad(f"unknown code {text!r}")
        return c
    if kind == "version":
        n = _version_value(text)
        if n is None:
            raise bad(f"not a version: {text!r} (use an ordinal or a name such as V5_3_3)")
        return n
    if kind == "duration":
        ms = parse_duration_ms(text)
        if ms is None:
            raise bad(f"not a duration: {text!r} (e.g. 50ms, 1.5s)")
        return ms
    if kind == "size":
        size = parse_size(text)
        if size is None:
            raise bad(f"not a size: {text!r} (e.g. 512, 4KiB, 1MB)")
        return size
    if kind == "enum":
        return text.lower()
    return text
