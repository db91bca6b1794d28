"""Distributed-trace context carried in message properties.

Tracing agents put the context of the producing span into a message's user properties,
under the same names they use for HTTP headers: W3C Trace Context (``traceparent``,
``tracestate``; OpenTelemetry), SkyWalking (``sw8``), Zipkin B3 (single ``b3`` or the
``X-B3-*`` set; Brave) and Jaeger (``uber-trace-id``).  Names are matched without regard
to case (agents write ``X-B3-TraceId`` as well as ``x-b3-traceid``).

:func:`trace_context` picks the first well-formed context in that order; when only
malformed ones are present it returns the first of them with ``problem`` set.  It never
raises.
"""
from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["TraceContext", "trace_context", "PROPERTY_NAMES", "MAX_VALUE"]

MAX_VALUE = 4096  # characters of a property value looked at (longer: a problem, not parsed)
MAX_TRACESTATE_MEMBERS = 32  # W3C: at most 32 list members

_HEX = re.compile(r"[0-9a-f]+\Z")
_HEX_ANY_CASE = re.compile(r"[0-9a-fA-F]+\Z")

# property names each format reads (lower case)
W3C = ("traceparent", "tracestate")
SW8 = ("sw8", "sw8-correlation")
B3_SINGLE = ("b3",)
B3_MULTI = ("x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled", "x-b3-flags")
JAEGER = ("uber-trace-id",)
PROPERTY_NAMES = frozenset(W3C + SW8 + B3_SINGLE + B3_MULTI + JAEGER)


@dataclass(frozen=True, slots=True)
class TraceContext:
    """One message's trace context.  ``format``: w3c, sw8, b3, b3-multi or jaeger;
    ``problem``: why the value is malformed (ids are then what could be read, or None)."""

    format: str
    trace_id: str | None = None
    span_id: str | None = None
    parent_span_id: str | None = None
    sampled: bool | None = None
    extra: dict[str, str] = field(default_factory=dict)
    problem: str | None = None

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"format": self.format, "trace_id": self.trace_id, "span_id": self.span_id,
                             "parent_span_id": self.parent_span_id, "sampled": self.sampled}
        if self.extra:
            d["extra"] = dict(self.extra)
        if self.problem is not None:
            d["problem"] = self.problem
        return d


def _is_hex(s: str, n: int | None = None) -> bool:
    return (n is None or len(s) == n) and bool(_HEX.match(s))


def _zero(s: str) -> bool:
    return s.strip("0") == ""


# -- W3C Trace Context (traceparent: version-traceid-parentid-flags)

def _w3c(parent: str, state: str | None) -> TraceContext:
    extra = {"tracestate": state} if state is not None else {}
    parts = parent.strip().split("-")
    if len(parts) < 4:
        return TraceContext("w3c", extra=extra, problem=f"traceparent has {len(parts)} fields, 4 expected")
    version, tid, sid, flags = parts[:4]
    tc = TraceContext("w3c", tid if _is_hex(tid, 32) else None, sid if _is_hex(sid, 16) else None, None,
                      (int(flags, 16) & 1) == 1 if _is_hex(flags, 2) else None, extra)
    problem = None
    if not _is_hex(version, 2):
        problem = f"traceparent version {version!r} is not 2 lowercase hex digits"
    elif version == "ff":
        problem = "traceparent version ff is invalid"
    elif version == "00" and len(parts) != 4:
        problem = f"traceparent version 00 has {len(parts)} fields, 4 expected"
    elif not _is_hex(tid, 32):
        problem = f"trace id {tid!r} is not 32 lowercase hex digits"
    elif _zero(tid):
        problem = "trace id is all zeros"
    elif not _is_hex(sid, 16):
        problem = f"parent id {sid!r} is not 16 lowercase hex digits"
    elif _zero(sid):
        problem = "parent id is all zeros"
    elif not _is_hex(flags, 2):
        problem = f"trace flags {flags!r} are not 2 lowercase hex digits"
    elif state is not None:
        problem = _tracestate_problem(state)
    if problem is None:
        return tc
    return TraceContext("w3c", tc.trace_id, tc.span_id, None, tc.sampled, extra, problem)


def _tracestate_problem(state: str) -> str | None:
    members = [m.strip() for m in state.split(",") if m.strip()]
    if len(members) > MAX_TRACESTATE_MEMBERS:
        return f"tracestate has {len(members)} members, at most {MAX_TRACESTATE_MEMBERS}"
    for m in members:
        if "=" not in m or not m.split("=", 1)[0] or not m.split("=", 1)[1]:
            return f"tracestate member {m!r} is not key=value"
    return None


# -- SkyWalking sw8: sample-traceId-segmentId-spanId-service-instance-endpoint-target

_SW8_NAMES = ("trace_id", "segment_id", "span_id", "service", "instance", "endpoint", "target_address")


def _b64(s: str) -> str | None:
    try:
        return base64.b64decode(s + "=" * (-len(s) % 4), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None


def _sw8(value: str, correlation: str | None) -> TraceContext:
    parts = value.strip().split("-")
    if len(parts) != 8:
        return TraceContext("sw8", problem=f"sw8 has {len(parts)} fields, 8 expected")
    sample, raw = parts[0], parts[1:]
    extra: dict[str, str] = {}
    problem = None
    decoded: dict[str, str] = {}
    for name, part in zip(_SW8_NAMES, raw, strict=True):
        if name == "span_id":
            if not part.lstrip("-").isdigit():
                problem = problem or f"sw8 span id {part!r} is not a number"
            decoded[name] = part
            continue
        text = _b64(part)
        if text is None:
            problem = problem or f"sw8 {name.replace('_', ' ')} is not base64 text"
        else:
            decoded[name] = text
    if sample not in ("0", "1"):
        problem = problem or f"sw8 sample flag {sample!r} is not 0 or 1"
    for name in _SW8_NAMES[1:]:
        if name != "span_id" and name in decoded:
            extra[name] = decoded[name]
    if correlation is not None:
        extra["correlation"] = correlation
    return TraceContext("sw8", decoded.get("trace_id"), decoded.get("span_id"), None,
                        {"1": True, "0": False}.get(sample), extra, problem)


# -- Zipkin B3

def _b3_sampled(s: str | None) -> tuple[bool | None, str | None]:
    """(sampled, debug flag) from a B3 sampling state."""
    if s is None or s == "":
        return None, None
    low = s.lower()
    if low in ("1", "true"):
        return True, None
    if low in ("0", "false"):
        return False, None
    if low == "d":
        return True, "1"
    return None, None


def _b3_ids(tid: str, sid: str, parent: str | None) -> str | None:
    if not _is_hex(tid) or len(tid) not in (16, 32):
        return f"B3 trace id {tid!r} is not 16 or 32 lowercase hex digits"
    if _zero(tid):
        return "B3 trace id is all zeros"
    if not _is_hex(sid, 16):
        return f"B3 span id {sid!r} is not 16 lowercase hex digits"
    if _zero(sid):
        return "B3 span id is all zeros"
    if parent is not None and not _is_hex(parent, 16):
        return f"B3 parent span id {parent!r} is not 16 lowercase hex digits"
    return None


def _b3_single(value: str) -> TraceContext:
    parts = value.strip().split("-")
    if len(parts) == 1 and len(parts[0]) > 1:
        return TraceContext("b3", problem="b3 has one field that is not a sampling state: no span id")
    if len(parts) == 1:  # sampling state only
        sampled, debug = _b3_sampled(parts[0])
        if sampled is None:
            return TraceContext("b3", problem=f"b3 sampling state {parts[0]!r} is not 0, 1 or d")
        return TraceContext("b3", sampled=sampled, extra={"debug": debug} if debug else {})
    if len(parts) > 4:
        return TraceContext("b3", problem=f"b3 has {len(parts)} fields, at most 4")
    tid, sid = parts[0], parts[1]
    state = parts[2] if len(parts) > 2 else None
    parent = parts[3] if len(parts) > 3 else None
    sampled, debug = _b3_sampled(state)
    problem = _b3_ids(tid, sid, parent)
    if problem is None and state is not None and sampled is None:
        problem = f"b3 sampling state {state!r} is not 0, 1 or d"
    return TraceContext("b3", tid, sid, parent, sampled, {"debug": debug} if debug else {}, problem)


def _b3_multi(p: Mapping[str, str]) -> TraceContext:
    tid, sid = p.get("x-b3-traceid"), p.get("x-b3-spanid")
    parent = p.get("x-b3-parentspanid")
    sampled, _ = _b3_sampled(p.get("x-b3-sampled"))
    extra = {"debug": "1"} if p.get("x-b3-flags") == "1" else {}
    if sampled is None and extra:
        sampled = True  # debug implies an accept
    if tid is None or sid is None:
        missing = "X-B3-TraceId" if tid is None else "X-B3-SpanId"
        return TraceContext("b3-multi", tid, sid, parent, sampled, extra,
                            None if tid is None and sid is None else f"{missing} is missing")
    return TraceContext("b3-multi", tid, sid, parent, sampled, extra, _b3_ids(tid, sid, parent))


# -- Jaeger uber-trace-id: trace:span:parent:flags (hex, leading zeros may be left out)

def _jaeger(value: str) -> TraceContext:
    v = value.strip().replace("%3A", ":").replace("%3a", ":")
    parts = v.split(":")
    if len(parts) != 4:
        return TraceContext("jaeger", problem=f"uber-trace-id has {len(parts)} fields, 4 expected")
    tid, sid, parent, flags = parts
    ok = [bool(_HEX_ANY_CASE.match(x)) for x in parts]
    sampled = (int(flags, 16) & 1) == 1 if ok[3] else None
    extra = {"debug": "1"} if ok[3] and int(flags, 16) & 2 else {}
    parent_id = parent.lower() if ok[2] and not _zero(parent) else None
    problem = None
    if not ok[0] or len(tid) > 32 or _zero(tid):
        problem = f"Jaeger trace id {tid!r} is not 1-32 hex digits, not all zeros"
    elif not ok[1] or len(sid) > 16 or _zero(sid):
        problem = f"Jaeger span id {sid!r} is not 1-16 hex digits, not all zeros"
    elif not ok[2] or len(parent) > 16:
        problem = f"Jaeger parent span id {parent!r} is not hex"
    elif not ok[3]:
        problem = f"Jaeger flags {flags!r} are not hex"
    tid_out = tid.lower() if ok[0] and len(tid) <= 32 else None  # as written: not padded
    sid_out = sid.lower() if ok[1] and len(sid) <= 16 else None
    return TraceContext("jaeger", tid_out, sid_out, parent_id, sampled, extra, problem)


# -- the entry point

def _lowered(props: Mapping[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in props.items():
        low = k.lower()
        if low in PROPERTY_NAMES and low not in out:
            out[low] = v
    return out


def trace_context(props: Mapping[str, str]) -> TraceContext | None:
    """The trace context in a message's properties, or None when it carries none."""
    p = _lowered(props)
    if not p:
        return None
    for name, v in p.items():
        if len(v) > MAX_VALUE:
            return TraceContext(_format_of(name), problem=f"{name} value is {len(v)} characters, "
                                                          f"longer than {MAX_VALUE}")
    found: list[TraceContext] = []
    if "traceparent" in p:
        found.append(_w3c(p["traceparent"], p.get("tracestate")))
    if "sw8" in p:
        found.append(_sw8(p["sw8"], p.get("sw8-correlation")))
    if "b3" in p:
        found.append(_b3_single(p["b3"]))
    if "x-b3-traceid" in p or "x-b3-spanid" in p:
        found.append(_b3_multi(p))
    if "uber-trace-id" in p:
        found.append(_jaeger(p["uber-trace-id"]))
    if not found:
        return None
    for tc in found:
        if tc.problem is None:
            return tc
    return found[0]


def _format_of(name: str) -> str:
    if name in W3C:
        return "w3c"
    if name in SW8:
        return "sw8"
    return "b3" if name == "b3" else "b3-multi" if name in B3_MULTI else "jaeger"
