"""One gRPC call (one HTTP/2 stream) and its two sides.

:class:`GrpcMessage` is what ``Message.command`` holds for gRPC exchanges: the
request side (client headers and messages) or the response side (server headers,
messages and trailers).  ``code`` is the stats key: the method number on the request
side, the response code (see :func:`response_code`) on the response side.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from google.protobuf.message import Message as PbMessage

from .hpack_decoder import UNKNOWN
from .messages import to_dict
from .schema import BY_CODE, METHOD_OTHER, METHOD_UNKNOWN, code_name

REDACTED = "<redacted>"
SECRET_HEADERS = frozenset({"authorization", "x-mq-session-token", "x-mq-authorization-ak"})
_AUTH_PART = re.compile(r"(Credential|Signature)=([^,\s]*)")
# x-mq-* metadata key -> short name
METADATA = {
    "x-mq-client-id": "client_id", "x-mq-language": "language", "x-mq-client-version": "client_version",
    "x-mq-protocol": "protocol", "x-mq-protocol-version": "protocol_version", "x-mq-namespace": "namespace",
    "x-mq-request-id": "request_id", "x-mq-date-time": "date_time", "x-mq-session-token": "session_token",
    "authorization": "authorization",
}
GRPC_STATUS_NAMES = ("OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
                     "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
                     "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
                     "UNAUTHENTICATED")
# response codes outside RocketMQ's Code enum
GRPC_OK_NO_STATUS = -100  # grpc-status 0 and no RocketMQ Status in the body
NO_STATUS = -101  # neither a grpc-status nor a RocketMQ Status was seen


# What makes a value whose header name is lost (HPACK reference into a dynamic table the
# capture never showed) look like a credential:
# * an HTTP auth scheme first (RocketMQ's ``MQv2-HMAC-SHA1``, ``Bearer``, ``Basic`` …) or a
#   ``Credential=`` / ``Signature=`` part anywhere;
# * an opaque token: a run of at least CREDENTIAL_TOKEN_MIN base64/base64url/hex characters
#   that mixes letters and digits and carries at least CREDENTIAL_MIN_ENTROPY bits per
#   character.  Dashes are not token characters, so UUIDs (request ids) and words joined by
#   ``-``/``.``/``/`` stay readable; date-times (``20261207T174800Z``) are too short.
_AUTH_SCHEME = re.compile(r"\s*(MQv\d|Bearer|Basic|Digest|AWS4|HMAC|Negotiate|OAuth)\b", re.I)
_TOKEN = re.compile(r"[A-Za-z0-9+/_=]{20,}")
CREDENTIAL_TOKEN_MIN = 20
CREDENTIAL_MIN_ENTROPY = 3.0


def _opaque(token: str) -> bool:
    if not (any(c.isdigit() for c in token) and any(c.isalpha() for c in token)):
        return False
    n = len(token)
    counts: dict[str, int] = {}
    for c in token:
        counts[c] = counts.get(c, 0) + 1
    return -sum(k / n * math.log2(k / n) for k in counts.values()) >= CREDENTIAL_MIN_ENTROPY


def looks_like_credential(value: str) -> bool:
    """True when a header value looks like a credential (see the rules above)."""
    if _AUTH_SCHEME.match(value) or _AUTH_PART.search(value):
        return True
    return any(_opaque(t) for t in _TOKEN.findall(value))


def redact_value(name: str, value: str) -> str:
    """A header value with its secrets replaced (``authorization`` keeps its shape).  A value
    whose name was lost (:data:`~.hpack_decoder.UNKNOWN`) is redacted when it
    :func:`looks_like_credential`."""
    if name == "authorization" or (name == UNKNOWN and value != UNKNOWN and looks_like_credential(value)):
        red = _AUTH_PART.sub(lambda m: f"{m.group(1)}={REDACTED}", value)
        return red if red != value else REDACTED
    return REDACTED if name in SECRET_HEADERS else value


def secret_spans(name: str, value: str) -> list[tuple[int, int]]:
    """Character spans of the secret parts of a header value ([] when :func:`redact_value`
    keeps it): the ``Credential``/``Signature`` values of an authorization, else all of it."""
    if not value or redact_value(name, value) == value:
        return []
    return [m.span(2) for m in _AUTH_PART.finditer(value) if m.group(2)] or [(0, len(value))]


def grpc_status_name(n: int) -> str:
    return GRPC_STATUS_NAMES[n] if 0 <= n < len(GRPC_STATUS_NAMES) else str(n)


def response_code_name(code: int) -> str:
    """Name of a gRPC response code: a RocketMQ Code, ``GRPC_<STATUS>`` (code = -status),
    ``GRPC_OK`` or ``NO_STATUS``."""
    if code == GRPC_OK_NO_STATUS:
        return "GRPC_OK"
    if code == NO_STATUS:
        return "NO_STATUS"
    if code < 0:
        return f"GRPC_{grpc_status_name(-code)}"
    return code_name(code)


def method_name(code: int) -> str:
    rpc = BY_CODE.get(code)
    if rpc is not None:
        return rpc.name
    return "OTHER" if code == METHOD_OTHER else "UNKNOWN" if code == METHOD_UNKNOWN else f"METHOD_{code}"


@dataclass(slots=True)
class GrpcPayload:
    """One length-prefixed gRPC message."""

    ts: float
    data: bytes  # the protobuf bytes (decompressed)
    compressed: bool = False
    wire_size: int = 0  # 5 + length on the wire
    type_name: str | None = None  # apache.rocketmq.v2 message type, once known
    message: PbMessage | None = None  # parsed protobuf (unknown fields kept inside)
    error: str | None = None  # why it could not be decoded

    @property
    def decoded(self) -> dict[str, Any] | None:
        """The message as a dict (see :func:`dissectors.grpc.messages.to_dict`)."""
        return to_dict(self.message) if self.message is not None else None


@dataclass(slots=True)
class GrpcMessage:
    """One side of a gRPC call; ``Message.command`` of gRPC exchanges."""

    stream_id: int
    from_client: bool
    code: int = METHOD_UNKNOWN
    method: str | None = None  # MessagingService method name
    path: str | None = None  # :path as seen (None when lost)
    how: str = ""  # request side: method known from the path | inferred | ambiguous | unknown
    headers: list[tuple[str, str]] = field(default_factory=list)
    trailers: list[tuple[str, str]] = field(default_factory=list)
    messages: list[GrpcPayload] = field(default_factory=list)
    dropped: int = 0  # messages not kept (per-call cap)
    size: int = 0  # header block and DATA payload bytes on the wire
    headers_seen: bool = False
    unresolved: int = 0  # header fields that referred to unknown HPACK entries
    end_stream: bool = False
    first_ts: float = 0.0
    last_ts: float = 0.0
    # response side only
    grpc_status: int | None = None
    grpc_message: str | None = None
    status_code: int | None = None  # RocketMQ Status.code from the body
    status_message: str | None = None

    @property
    def is_oneway(self) -> bool:
        return False

    @property
    def name(self) -> str:
        return method_name(self.code) if self.from_client else response_code_name(self.code)

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k == name:
                return v
        return None

    def redacted_headers(self, redact: bool = True) -> list[tuple[str, str]]:
        if not redact:
            return list(self.headers)
        return [(k, redact_value(k, v)) for k, v in self.headers]

    def metadata(self, redact: bool = True) -> dict[str, str]:
        """The ``x-mq-*`` metadata (and ``authorization``) under short names."""
        out: dict[str, str] = {}
        for k, v in self.headers:
            short = METADATA.get(k)
            if short is not None:
                out[short] = redact_value(k, v) if redact else v
        return out

    def decoded(self) -> list[dict[str, Any] | None]:
        return [p.decoded for p in self.messages]


@dataclass(slots=True)
class GrpcCall:
    """A gRPC call: one HTTP/2 stream, both sides."""

    stream_id: int
    request: GrpcMessage
    response: GrpcMessage
    how: str = "path"  # how the method is known: path | inferred | ambiguous | unknown
    alternatives: list[str] = field(default_factory=list)  # other methods that fit (ambiguous)
    ended_by: str = ""  # trailers | end_stream | rst_stream | goaway | close | evicted
    reset_code: int | None = None
    reset_by_client: bool | None = None
    client_seen: bool = False
    server_seen: bool = False
    started: bool = False  # CallStarted was reported
    partial: bool = False  # the stream began before the capture (or a gap)
    notes: list[str] = field(default_factory=list)
    # raw request/response bodies kept while the method is unknown
    encoding_c: str | None = None
    encoding_s: str | None = None

    @property
    def method(self) -> str | None:
        return self.request.method

    @property
    def finished(self) -> bool:
        """The server ended the call (trailers or END_STREAM)."""
        return self.response.end_stream


def percent_decode(v: str) -> str:
    """``grpc-message`` is percent-encoded UTF-8."""
    try:
        return unquote(v, errors="replace")
    except Exception:  # noqa: BLE001 - defensive: never fail on bad input
        return v
