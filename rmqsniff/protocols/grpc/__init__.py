"""RocketMQ 5.x gRPC (``apache.rocketmq.v2.MessagingService`` over HTTP/2, proxy 8081): the
protocol object.  Decoding lives in :mod:`dissectors.grpc`."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...model import Connection, Message
from ..base import Getter, Protocol
from . import doctor as _doctor
from . import fields as _fields
from . import journey as _journey
from . import lag as _lag
from . import messages as _messages
from . import output as _output
from . import secrets as _secrets
from .classify import CLASSIFIER

HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
WELL_KNOWN_PORTS = frozenset({8081})


def server_settings_first(data: bytes) -> bool:
    """``data`` starts like a server's first HTTP/2 frame: SETTINGS (type 4) on stream 0,
    not an ACK, a length that is a multiple of 6 and at most 16 KiB."""
    if len(data) < 9:
        return False
    length = int.from_bytes(data[:3], "big")
    return (data[3] == 4 and data[4] & 1 == 0 and length % 6 == 0 and length <= 16384
            and int.from_bytes(data[5:9], "big") & 0x7FFFFFFF == 0)


class Grpc(Protocol):
    """RocketMQ 5's own client protocol."""

    name = "grpc"
    classifier = CLASSIFIER
    well_known_ports = WELL_KNOWN_PORTS
    code_prefix = "grpc:"

    def recognise(self, data: bytes, from_client: bool) -> str | None:
        if from_client:
            n = min(len(data), len(HTTP2_PREFACE))
            return "preface" if n >= 3 and data[:n] == HTTP2_PREFACE[:n] else None
        return "settings" if server_settings_first(data) else None

    def handler(self, conn: Connection, sink: Any, stats: Any, mid_stream: bool | tuple[bool, bool], *,
                owner: Any = None, candidate: bool = False, max_frame: int = 16 * 1024 * 1024) -> Any:
        from .handler import GrpcHandler

        return GrpcHandler(conn, sink, stats, mid_stream=bool(mid_stream if isinstance(mid_stream, bool)
                                                               else mid_stream[0]), owner=owner)

    # what the rest of rmqsniff asks, answered by this package's modules
    fields: Mapping[str, Getter] = _fields.FIELDS
    code_literal = staticmethod(_fields.code_literal)
    sides = staticmethod(_output.sides)
    messages = staticmethod(_messages.messages)
    follow = staticmethod(_output.follow)
    offset_facts = staticmethod(_lag.offset_facts)
    offset_codes = None  # by method name, not code
    journey_events = staticmethod(_journey.journey_events)
    doctor_facts = staticmethod(_doctor.doctor_facts)

    def secrets(self, m: Message) -> tuple[list[bytes], bool]:
        # raw and Huffman forms; a value found in neither (split across HTTP/2 frames) may still be there
        found = _secrets.wire_secrets(m.command)
        return [w for forms in found for w, _ in forms], bool(found)

    def wire_secrets(self, m: Message) -> list[list[tuple[bytes, bytes]]]:
        return _secrets.wire_secrets(m.command)

    @property
    def planner(self) -> Any:
        from replay.engine import grpcplan

        return grpcplan


GRPC = Grpc()
