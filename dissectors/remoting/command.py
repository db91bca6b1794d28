"""The remoting command: one frame of the RocketMQ remoting protocol."""
from __future__ import annotations

from dataclasses import dataclass, field

JSON = 0
ROCKETMQ = 1
SERIALIZE_NAMES = {JSON: "JSON", ROCKETMQ: "ROCKETMQ"}

FLAG_RESPONSE = 0x1
FLAG_ONEWAY = 0x2


@dataclass(slots=True)
class RemotingCommand:
    """A decoded (or to-be-encoded) remoting frame.

    ``code`` is the request code for requests and the response code for responses.
    When a 5.x POP-family request code was truncated to 16 bits by a ROCKETMQ binary
    header (200050 arrives as 3442), ``code`` holds the restored code and ``wire_code``
    what was on the wire; ``code_truncated`` tells that it happened.
    """

    code: int
    flag: int = 0
    opaque: int = 0
    language: str = "JAVA"
    version: int = 0
    remark: str | None = None
    ext: dict[str, str] | None = None
    body: bytes | None = None
    serialize: int = JSON
    wire_code: int | None = None
    code_truncated: bool = False
    header_len: int = field(default=0, compare=False)
    frame_len: int = field(default=0, compare=False)

    @property
    def is_response(self) -> bool:
        return bool(self.flag & FLAG_RESPONSE)

    @property
    def is_oneway(self) -> bool:
        return bool(self.flag & FLAG_ONEWAY) and not (self.flag & FLAG_RESPONSE)

    @property
    def serialize_name(self) -> str:
        return SERIALIZE_NAMES.get(self.serialize, str(self.serialize))

    @property
    def body_len(self) -> int:
        return len(self.body) if self.body else 0
