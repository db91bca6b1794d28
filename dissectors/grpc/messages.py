"""Protobuf bodies of MessagingService calls: parse, turn into plain dicts, and infer
the method of a call whose ``:path`` was lost by trial parsing and stream shape.
"""
from __future__ import annotations

import base64
import datetime as _dt
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.unknown_fields import UnknownFieldSet

from .schema import CLASSES, RPCS, Rpc

_TS = "google.protobuf.Timestamp"
_DUR = "google.protobuf.Duration"
UNIMPLEMENTED_BY_PROXY = frozenset({"PullMessage", "UpdateOffset", "GetOffset", "QueryOffset",
                                    "SyncLiteSubscription"})
# tie-break order when several methods fit the bodies equally well (most common first)
PREFERENCE: tuple[str, ...] = (
    "SendMessage", "ReceiveMessage", "AckMessage", "Heartbeat", "QueryRoute", "Telemetry",
    "QueryAssignment", "ChangeInvisibleDuration", "EndTransaction", "NotifyClientTermination",
    "ForwardMessageToDeadLetterQueue", "RecallMessage", "QueryOffset", "GetOffset", "UpdateOffset",
    "PullMessage", "SyncLiteSubscription",
)
_RANK = {n: i for i, n in enumerate(PREFERENCE)}


def parse(type_name: str, data: bytes) -> Message:
    """Parse ``data`` as ``apache.rocketmq.v2.<type_name>``; raises ``DecodeError``."""
    m = CLASSES[type_name]()
    m.ParseFromString(data)
    return m


def has_unknown(m: Message) -> bool:
    """True when ``m`` or any message inside it carries fields the schema does not know."""
    if len(UnknownFieldSet(m)):
        return True
    for fd, value in m.ListFields():
        if fd.type != FieldDescriptor.TYPE_MESSAGE:
            continue
        mt = _message_type(fd)
        if mt.GetOptions().map_entry:
            if mt.fields_by_name["value"].type == FieldDescriptor.TYPE_MESSAGE \
                    and any(has_unknown(v) for v in value.values()):
                return True
        elif fd.is_repeated:
            if any(has_unknown(v) for v in value):
                return True
        elif has_unknown(value):
            return True
    return False


def clean_parse(type_name: str, data: bytes) -> Message | None:
    """``data`` parsed as ``type_name`` if it fits exactly: no error, no unknown field at any
    depth, and re-serialising gives the same length; else None."""
    try:
        m = parse(type_name, data)
    except (DecodeError, RuntimeError, ValueError):
        return None
    if has_unknown(m) or m.ByteSize() != len(data):
        return None
    return m


def to_dict(m: Message) -> dict[str, Any]:
    """A protobuf message as plain data: enums by name, Timestamps as ISO-8601 text,
    Durations as ``"1.5s"``, bytes kept as bytes; unknown fields under ``"_unknown"``
    as ``[field number, wire type, value]`` (nested groups as lists)."""
    out: dict[str, Any] = {}
    for fd, value in m.ListFields():
        if fd.type == FieldDescriptor.TYPE_MESSAGE:
            mt = _message_type(fd)
            if mt.GetOptions().map_entry:
                vfd = mt.fields_by_name["value"]
                # upb iterates maps in hash order, which changes from run to run: sort for stable output
                out[fd.name] = {k: _value(vfd, value[k]) for k in sorted(value)}
            elif fd.is_repeated:
                out[fd.name] = [_value(fd, v) for v in value]
            else:
                out[fd.name] = _value(fd, value)
        elif fd.is_repeated:
            out[fd.name] = [_value(fd, v) for v in value]
        else:
            out[fd.name] = _value(fd, value)
    unknown = UnknownFieldSet(m)
    if len(unknown):
        # (by index: UnknownFieldSet iterates through __getitem__, which its stubs do not declare)
        out["_unknown"] = [_unknown_field(unknown[i]) for i in range(len(unknown))]
    return out


def _message_type(fd: FieldDescriptor) -> Descriptor:
    """The message type of a TYPE_MESSAGE field (the stubs allow None, which only other
    field types have)."""
    mt = fd.message_type
    assert mt is not None, fd.full_name
    return mt


def _unknown_field(f: Any) -> list[Any]:
    data = f.data
    if f.wire_type == 3:  # group
        data = [_unknown_field(g) for g in data]
    return [f.field_number, f.wire_type, data]


def _value(fd: FieldDescriptor, v: Any) -> Any:
    t = fd.type
    if t == FieldDescriptor.TYPE_MESSAGE:
        full = _message_type(fd).full_name
        if full == _TS:
            return timestamp_text(v.seconds, v.nanos)
        if full == _DUR:
            return duration_text(v.seconds, v.nanos)
        return to_dict(v)
    if t == FieldDescriptor.TYPE_ENUM:
        et = fd.enum_type
        assert et is not None, fd.full_name  # a TYPE_ENUM field always has its enum type
        ev = et.values_by_number.get(v)
        return ev.name if ev is not None else v
    return v


def timestamp_text(seconds: int, nanos: int) -> str:
    try:
        t = _dt.datetime.fromtimestamp(seconds, _dt.timezone.utc) + _dt.timedelta(microseconds=nanos // 1000)
        return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    except (OverflowError, OSError, ValueError):
        return f"{seconds}.{nanos:09d}s-since-epoch"


def duration_text(seconds: int, nanos: int) -> str:
    if nanos == 0:
        return f"{seconds}s"
    return f"{seconds + nanos / 1e9:.9f}".rstrip("0") + "s"


def jsonable(v: Any) -> Any:
    """Make ``to_dict`` output JSON-safe: bytes become UTF-8 text when they are, else
    ``{"base64": ...}``."""
    if isinstance(v, (bytes, bytearray)):
        try:
            return bytes(v).decode("utf-8")
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(v).decode("ascii")}
    if isinstance(v, dict):
        return {k: jsonable(x) for k, x in v.items()}
    if isinstance(v, list):
        return [jsonable(x) for x in v]
    return v


# ------------------------------------------------------------------ identification

def candidates(requests: list[bytes], responses: list[bytes], *, grpc_status: int | None = None,
               long_lived: bool = False) -> list[Rpc]:
    """MessagingService methods that fit a call's bodies and shape, most likely first."""
    out: list[tuple[int, Rpc]] = []
    for rpc in RPCS:
        if len(requests) > 1 and not rpc.client_streaming:
            continue
        if len(responses) > 1 and not rpc.server_streaming:
            continue
        if long_lived and not rpc.client_streaming and not requests and not responses:
            continue
        if any(clean_parse(rpc.request, b) is None for b in requests):
            continue
        if any(clean_parse(rpc.response, b) is None for b in responses):
            continue
        rank = _RANK[rpc.name]
        if grpc_status == 12:  # UNIMPLEMENTED: the methods the open-source proxy lacks
            rank -= 100 if rpc.name in UNIMPLEMENTED_BY_PROXY else 0
        elif rpc.name in UNIMPLEMENTED_BY_PROXY:
            rank += 100
        if long_lived and rpc.client_streaming:
            rank -= 200
        out.append((rank, rpc))
    out.sort(key=lambda x: x[0])
    return [r for _, r in out]
