"""gRPC's filter fields: method and status codes, topic, group, tags / keys / message ids."""
from __future__ import annotations

from typing import Any, cast

from dissectors.grpc import call as gcall
from dissectors.grpc import schema

from ...model import Exchange
from ..base import Getter, _classifier_fields
from ..tracing import trace_id_field
from .classify import CLASSIFIER
from .messages import carried, messages

_cache: list[Any] = [None, None]  # [exchange, carried(exchange)]


def _carried(ex: Exchange) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    if _cache[0] is not ex:
        _cache[0], _cache[1] = ex, carried(ex)
    return cast("tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]", _cache[1])


def _stream_id(ex: Exchange) -> int | None:
    m = ex.request or ex.response
    return m.command.stream_id if m is not None else None


FIELDS: dict[str, Getter] = _classifier_fields(CLASSIFIER) | {
    "tag": lambda ex: _carried(ex)[0] or None,
    "keys": lambda ex: _carried(ex)[1] or None,
    "msgid": lambda ex: _carried(ex)[2] or None,
    "opaque": _stream_id,
    "trace_id": trace_id_field(messages),
}


def code_literal(text: str) -> int | None:
    """A method (request code), RocketMQ Status code or gRPC status named in a filter."""
    up = text.upper()
    for name, rpc in schema.BY_NAME.items():
        if name.upper() == up:
            return rpc.code
    for code, name in schema.CODE_NAMES.items():
        if name.upper() == up:
            return code
    for code in (gcall.GRPC_OK_NO_STATUS, gcall.NO_STATUS, *(-i for i in range(1, 17))):
        if gcall.response_code_name(code).upper() == up:
            return code
    return None
