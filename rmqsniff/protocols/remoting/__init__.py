"""RocketMQ remoting (name server 9876, broker 10911/10909, proxy 8080): the protocol object.

Decoding lives in :mod:`dissectors.remoting`; connections are decoded by the flow
table's remoting lane (:mod:`rmqsniff.flows`) and paired by :mod:`rmqsniff.pairing`.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dissectors.remoting.codes import SEND_BATCH_MESSAGE
from dissectors.remoting.headers import is_secret

from ...model import Exchange, Message, MessageRow
from ...tree import Node
from ..base import Getter, Protocol, Side
from . import fields as _fields
from . import messages as _messages
from . import output as _output
from .classify import CLASSIFIER

WELL_KNOWN_PORTS = frozenset({9876, 10911, 10909, 8080})


class Remoting(Protocol):
    """The remoting protocol: JSON and binary (ROCKETMQ) headers, message bodies."""

    name = "remoting"
    classifier = CLASSIFIER
    well_known_ports = WELL_KNOWN_PORTS

    @property
    def fields(self) -> Mapping[str, Getter]:
        return _fields.FIELDS

    def code_literal(self, text: str) -> int | None:
        return _fields.code_literal(text)

    def sides(self, ex: Exchange, redact: bool) -> tuple[Side, Side]:
        return _output.sides(ex, redact)

    def detail(self, root: Node, ex: Exchange, redact: bool) -> None:
        _output.detail(root, ex, redact)

    def messages(self, ex: Exchange) -> list[MessageRow]:
        return _messages.messages(ex)

    def follow(self, ex: Exchange, m: Message, redact: bool) -> dict[str, Any]:
        return _output.follow(ex, m, redact)

    def secrets(self, m: Message) -> tuple[list[bytes], bool]:
        ext = m.command.ext or {}
        return [v.encode() for k, v in ext.items() if v and is_secret(k)], False

    def pending_kind(self, code: int) -> str | None:
        return "send_message" if code == SEND_BATCH_MESSAGE else super().pending_kind(code)

    @property
    def planner(self) -> Any:
        from replay.engine import remotingplan

        return remotingplan


REMOTING = Remoting()
