"""RocketMQ remoting (name server 9876, broker 10911/10909, proxy 8080): the protocol object.

Decoding lives in :mod:`dissectors.remoting`; a connection is decoded and paired by its
:class:`.handler.RemotingHandler`, fast lanes included.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dissectors.remoting.codes import SEND_BATCH_MESSAGE
from dissectors.remoting.headers import is_secret

from ...model import Connection, Message
from ..base import Getter, Protocol
from . import doctor as _doctor
from . import fields as _fields
from . import journey as _journey
from . import lag as _lag
from . import messages as _messages
from . import output as _output
from .classify import CLASSIFIER
from .handler import RemotingHandler

WELL_KNOWN_PORTS = frozenset({9876, 10911, 10909, 8080})


class Remoting(Protocol):
    """The remoting protocol: JSON and binary (ROCKETMQ) headers, message bodies."""

    name = "remoting"
    classifier = CLASSIFIER
    well_known_ports = WELL_KNOWN_PORTS

    def handler(self, conn: Connection, sink: Any, stats: Any, mid_stream: bool | tuple[bool, bool], *,
                owner: Any = None, candidate: bool = False, max_frame: int = 16 * 1024 * 1024) -> RemotingHandler:
        return RemotingHandler(conn, sink, stats, mid_stream=mid_stream, candidate=candidate, max_frame=max_frame,
                               owner=owner)

    # what the rest of rmqsniff asks, answered by this package's modules
    fields: Mapping[str, Getter] = _fields.FIELDS
    code_literal = staticmethod(_fields.code_literal)
    sides = staticmethod(_output.sides)
    detail = staticmethod(_output.detail)
    messages = staticmethod(_messages.messages)
    follow = staticmethod(_output.follow)
    offset_facts = staticmethod(_lag.offset_facts)
    offset_codes = _lag.OFFSET_CODES
    journey_events = staticmethod(_journey.journey_events)
    doctor_facts = staticmethod(_doctor.doctor_facts)

    def secrets(self, m: Message) -> tuple[list[bytes], bool]:
        return [w for forms in self.wire_secrets(m) for w, _ in forms], False

    def wire_secrets(self, m: Message) -> list[list[tuple[bytes, bytes]]]:
        # JSON header strings and binary (ROCKETMQ) header values both hold the value's UTF-8
        # bytes (fastjson escapes none of the characters of base64 or an AccessKey)
        ext = m.command.ext or {}
        return [[(w, b"*" * len(w))] for k, v in ext.items() if v and is_secret(k) for w in (v.encode(),)]

    def pending_kind(self, code: int) -> str | None:
        return "send_message" if code == SEND_BATCH_MESSAGE else super().pending_kind(code)

    @property
    def planner(self) -> Any:
        from replay.engine import remotingplan

        return remotingplan


REMOTING = Remoting()
