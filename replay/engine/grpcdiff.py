"""Replayed vs recorded gRPC answers: the response code (gRPC status, else the RocketMQ
``Status.code``), the Status message without what varies between runs, and the status of
each entry of a multi-entry answer (SendMessage, AckMessage). Message ids, receipt handles,
offsets and timestamps are never compared (the noise rules of :mod:`.diff`).  With
``rules.redact`` a status message that looks like a credential is shown redacted."""
from __future__ import annotations

from typing import Any

from dissectors.grpc.call import GrpcMessage, redact_value, response_code_name
from dissectors.grpc.hpack_decoder import UNKNOWN

from .diff import NO_ANSWER, DiffRules, remark_class


def entry_codes(resp: GrpcMessage) -> list[int]:
    """Status codes of the ``entries`` of the answer's messages."""
    out: list[int] = []
    for p in resp.messages:
        m = p.message
        if m is not None and "entries" in m.DESCRIPTOR.fields_by_name:
            dm: Any = m  # a schema-built class: its fields are unknown to the type checker
            out += [e.status.code for e in dm.entries]
    return out


def compare(recorded: GrpcMessage | None, replayed: GrpcMessage | None,
            rules: DiffRules) -> list[tuple[str, str, str]]:
    """Mismatches as ``(kind, recorded, replayed)``; empty when equal under the rules."""
    if recorded is None:
        return []
    if replayed is None:
        return [(NO_ANSWER, response_code_name(recorded.code), "-")]
    if recorded.code != replayed.code:
        return [("code", response_code_name(recorded.code), response_code_name(replayed.code))]
    out: list[tuple[str, str, str]] = []
    a = remark_class(recorded.status_message or recorded.grpc_message, rules.names)
    b = remark_class(replayed.status_message or replayed.grpc_message)
    if a != b and not rules.is_noise("status.message"):
        if rules.redact:  # a text nobody named: redacted by the rules for nameless metadata
            a, b = redact_value(UNKNOWN, a), redact_value(UNKNOWN, b)
        out.append(("status message", a or "-", b or "-"))
    ea, eb = entry_codes(recorded), entry_codes(replayed)
    if ea != eb:
        out.append(("entry status", ",".join(map(response_code_name, ea)) or "-",
                    ",".join(map(response_code_name, eb)) or "-"))
    return out
