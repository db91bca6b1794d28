"""Synthetic RocketMQ gRPC traffic for the gRPC tests, built independently of rmqsniff:
HTTP/2 by two in-memory ``h2`` connections (so HPACK by the ``hpack`` encoder), odd
frames by ``hyperframe``, protobuf bodies by the tiny wire encoder below (field numbers
from the published apache.rocketmq.v2 schema), gzip by the standard library.

``tests/test_grpc_traffic.py`` checks the generator itself against ``h2``'s own view.
"""
from __future__ import annotations

import contextlib
import gzip
import struct
import uuid

import h2.config
import h2.connection
import h2.events
import h2.exceptions
from hyperframe.frame import ContinuationFrame, DataFrame, HeadersFrame

SERVICE = "/apache.rocketmq.v2.MessagingService/"
AUTH = "MQv2-HMAC-SHA1 Credential=AKIDEXAMPLE42, SignedHeaders=x-mq-date-time, Signature=0123abcdef9876"
CLIENT_ID = "vm@12564@0@dn1597gazfgu"


# ------------------------------------------------------------------ protobuf wire encoder

def varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def f(num: int, value) -> bytes:
    """One protobuf field: int -> varint, str/bytes -> length-delimited."""
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, int):
        return varint(num << 3) + varint(value)
    if isinstance(value, str):
        value = value.encode()
    return varint(num << 3 | 2) + varint(len(value)) + value


def msg(*fields: bytes) -> bytes:
    return b"".join(fields)


def resource(name: str, ns: str = "") -> bytes:
    return msg(f(1, ns) if ns else b"", f(2, name))


def status(code: int, text: str = "") -> bytes:
    return msg(f(1, code), f(2, text) if text else b"")


def timestamp(seconds: int, nanos: int = 0) -> bytes:
    return msg(f(1, seconds), f(2, nanos) if nanos else b"")


def message_id(i: int) -> str:
    return f"01020304050607{i:020X}"


def rmq_message(topic: str, i: int, body: bytes, *, tag: str = "TagA", extra_sys: bytes = b"",
                receipt: str | None = None) -> bytes:
    """apache.rocketmq.v2.Message: topic, one user property, system properties, body."""
    sysp = msg(f(1, tag), f(2, f"key-{i}"), f(3, message_id(i)), f(5, 1), f(6, 1),
               f(7, timestamp(1_700_000_000 + i)), f(8, "10.0.0.1"),
               f(12, receipt) if receipt else b"", extra_sys)
    return msg(f(1, resource(topic)), f(2, msg(f(1, "color"), f(2, "blue"))), f(3, sysp), f(4, body))


def send_request(topic: str, i: int, body: bytes = b"hello", extra_sys: bytes = b"") -> bytes:
    return f(1, rmq_message(topic, i, body, extra_sys=extra_sys))


def send_response(i: int, code: int = 20000) -> bytes:
    return msg(f(1, status(code, "OK")), f(2, msg(f(1, status(code)), f(2, message_id(i)), f(4, 100 + i))))


def endpoints() -> bytes:
    return msg(f(1, 1), f(2, msg(f(1, "127.0.0.1"), f(2, 8081))))


def query_route_request(topic: str) -> bytes:
    return msg(f(1, resource(topic)), f(2, endpoints()))


def query_route_response(topic: str) -> bytes:
    mq = msg(f(1, resource(topic)), f(2, 0), f(3, 4), f(4, msg(f(1, "broker-a"), f(2, 0), f(3, endpoints()))),
             f(5, 1))
    return msg(f(1, status(20000, "OK")), f(2, mq))


def telemetry_settings(topic: str, client_type: int = 1) -> bytes:
    ua = msg(f(1, 6), f(2, "5.1.2"), f(3, "linux"), f(4, "vm"))
    pub = msg(f(1, resource(topic)))
    settings = msg(f(1, client_type), f(2, endpoints()), f(4, msg(f(1, 3))), f(5, pub), f(7, ua))
    return f(2, settings)


def telemetry_answer() -> bytes:
    settings = msg(f(4, msg(f(1, 3))), f(5, msg(f(2, 4194304), f(3, 1))), f(8, msg(f(1, 0))))
    return msg(f(1, status(20000, "OK")), f(2, settings))


def heartbeat_request(group: str | None = None, client_type: int = 1) -> bytes:
    return msg(f(1, resource(group)) if group else b"", f(2, client_type))


def receive_request(group: str, topic: str) -> bytes:
    mq = msg(f(1, resource(topic)), f(2, -1 & 0xFFFFFFFF), f(3, 4))
    return msg(f(1, resource(group)), f(2, mq), f(3, msg(f(1, 1), f(2, "*"))), f(4, 16),
               f(5, msg(f(1, 30))), f(7, msg(f(1, 20))))


def ack_request(group: str, topic: str, ids: list[int]) -> bytes:
    entries = b"".join(f(3, msg(f(1, message_id(i)), f(2, f"handle-{i}"))) for i in ids)
    return msg(f(1, resource(group)), f(2, resource(topic)), entries)


def ack_response(ids: list[int]) -> bytes:
    entries = b"".join(f(2, msg(f(1, message_id(i)), f(2, f"handle-{i}"), f(3, status(20000)))) for i in ids)
    return msg(f(1, status(20000, "OK")), entries)


def grpc_frame(body: bytes, compressed: bool = False) -> bytes:
    if compressed:
        body = gzip.compress(body)
    return struct.pack(">BI", 1 if compressed else 0, len(body)) + body


def request_headers(method: str, i: int = 0, *, compressed: bool = False, extra=()) -> list[tuple[str, str]]:
    h = [(":method", "POST"), (":scheme", "http"), (":path", SERVICE + method),
         (":authority", "127.0.0.1:8081"), ("te", "trailers"), ("content-type", "application/grpc"),
         ("grpc-accept-encoding", "identity, deflate, gzip"), ("user-agent", "grpc-python/1.85.1"),
         ("x-mq-client-id", CLIENT_ID), ("x-mq-language", "PYTHON"), ("x-mq-client-version", "5.1.2"),
         ("x-mq-protocol", "GRPC_V2"), ("x-mq-namespace", ""),
         ("x-mq-request-id", str(uuid.UUID(int=i + 1))), ("x-mq-date-time", f"20261121T1943{i % 60:02d}Z"),
         ("authorization", AUTH), ("grpc-timeout", "3S")]
    if compressed:
        h.append(("grpc-encoding", "gzip"))
    h.extend(extra)
    return h


RESPONSE_HEADERS = [(":status", "200"), ("content-type", "application/grpc")]


# ------------------------------------------------------------------ two in-memory HTTP/2 peers

class Wire:
    """A client and a server h2 connection; every byte either sends is recorded in order
    as (from_client, bytes, ts)."""

    def __init__(self) -> None:
        self.c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.s = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        self.chunks: list[tuple[bool, bytes, float]] = []
        self.t = 1_700_000_000.0
        self.c.initiate_connection()
        self.pump()
        self.s.initiate_connection()
        self.pump()

    def tick(self, dt: float = 0.001) -> float:
        self.t += dt
        return self.t

    def raw(self, from_client: bool, data: bytes) -> None:
        """Bytes written around h2 (hand-made frames); the peers never see them."""
        self.chunks.append((from_client, data, self.tick()))

    def pump(self) -> None:
        moved = True
        while moved:
            moved = False
            for src, dst, fc in ((self.c, self.s, True), (self.s, self.c, False)):
                d = src.data_to_send()
                if d:
                    moved = True
                    self.chunks.append((fc, d, self.tick()))
                    for ev in dst.receive_data(d):
                        if isinstance(ev, h2.events.DataReceived) and ev.flow_controlled_length:
                            with contextlib.suppress(h2.exceptions.StreamClosedError):
                                dst.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)

    # client side
    def open(self, method: str, i: int = 0, **kw) -> int:
        sid = self.c.get_next_available_stream_id()
        self.c.send_headers(sid, request_headers(method, i, **kw))
        self.pump()
        return sid

    def send(self, sid: int, body: bytes, *, from_client: bool = True, compressed: bool = False,
             end: bool = False, pad: int | None = None) -> None:
        conn = self.c if from_client else self.s
        conn.send_data(sid, grpc_frame(body, compressed), end_stream=end, pad_length=pad)
        self.pump()

    def end_client(self, sid: int) -> None:
        self.c.end_stream(sid)
        self.pump()

    # server side
    def respond(self, sid: int, compressed: bool = False) -> None:
        h = list(RESPONSE_HEADERS) + ([("grpc-encoding", "gzip")] if compressed else [])
        self.s.send_headers(sid, h)
        self.pump()

    def trailers(self, sid: int, grpc_status: int = 0, message: str | None = None) -> None:
        t = [("grpc-status", str(grpc_status))] + ([("grpc-message", message)] if message else [])
        self.s.send_headers(sid, t, end_stream=True)
        self.pump()

    def trailers_only(self, sid: int, grpc_status: int, message: str) -> None:
        self.s.send_headers(sid, RESPONSE_HEADERS + [("grpc-status", str(grpc_status)),
                                                     ("grpc-message", message)], end_stream=True)
        self.pump()

    def reset(self, sid: int, code: int = 8, by_client: bool = True) -> None:
        (self.c if by_client else self.s).reset_stream(sid, code)
        self.pump()

    def unary(self, method: str, request: bytes, response: bytes, i: int = 0, *, compressed_req: bool = False,
              compressed_resp: bool = False, grpc_status: int = 0) -> int:
        sid = self.open(method, i, compressed=compressed_req)
        self.send(sid, request, compressed=compressed_req, end=True)
        self.tick(0.002)
        self.respond(sid, compressed=compressed_resp)
        self.send(sid, response, from_client=False, compressed=compressed_resp)
        self.trailers(sid, grpc_status)
        return sid

    def goaway(self, last_stream_id: int) -> None:
        self.s.close_connection(error_code=0, last_stream_id=last_stream_id)
        self.pump()

    def bytes_of(self, from_client: bool) -> bytes:
        return b"".join(d for fc, d, _ in self.chunks if fc == from_client)


def hand_headers_frame(sid: int, block: bytes, *, pad: int = 0, continuation_at: int | None = None,
                       end_stream: bool = False) -> bytes:
    """A HEADERS frame (optionally PADDED) with its block split into CONTINUATION frames."""
    first = block if continuation_at is None else block[:continuation_at]
    hf = HeadersFrame(sid, data=first)
    if pad:
        hf.flags.add("PADDED")
        hf.pad_length = pad
    if end_stream:
        hf.flags.add("END_STREAM")
    if continuation_at is None:
        hf.flags.add("END_HEADERS")
        return hf.serialize()
    out = hf.serialize()
    rest = block[continuation_at:]
    while rest:
        part, rest = rest[:7], rest[7:]
        cf = ContinuationFrame(sid, data=part)
        if not rest:
            cf.flags.add("END_HEADERS")
        out += cf.serialize()
    return out


def hand_data_frame(sid: int, payload: bytes, *, pad: int = 0, end_stream: bool = False) -> bytes:
    df = DataFrame(sid, data=payload)
    if pad:
        df.flags.add("PADDED")
        df.pad_length = pad
    if end_stream:
        df.flags.add("END_STREAM")
    return df.serialize()


def producer_session(n_send: int = 3, gzip_every: int = 0, unknown_field: bool = False) -> tuple[Wire, dict]:
    """Python-producer-like traffic: QueryRoute, Telemetry (bidi), n SendMessage, Heartbeat,
    NotifyClientTermination, Telemetry cancelled.  Returns the wire and the ground truth."""
    w = Wire()
    truth: dict = {"sent": [], "streams": {}}
    sid = w.unary("QueryRoute", query_route_request("TopicA"), query_route_response("TopicA"), 0)
    truth["streams"][sid] = "QueryRoute"
    tel = w.open("Telemetry", 1)
    truth["streams"][tel] = "Telemetry"
    w.send(tel, telemetry_settings("TopicA"))
    w.respond(tel)
    w.send(tel, telemetry_answer(), from_client=False)
    for i in range(n_send):
        gz = bool(gzip_every) and i % gzip_every == 0
        extra = f(99, "future-field") if unknown_field and i == 0 else b""
        sid = w.unary("SendMessage", send_request("TopicA", i, f"body-{i}".encode(), extra), send_response(i),
                      10 + i, compressed_req=gz, compressed_resp=gz)
        truth["streams"][sid] = "SendMessage"
        truth["sent"].append(message_id(i))
        if i % 5 == 4:  # periodic settings re-send on the Telemetry stream
            w.send(tel, telemetry_settings("TopicA"))
    sid = w.unary("Heartbeat", heartbeat_request(), status_only(), 500)
    truth["streams"][sid] = "Heartbeat"
    sid = w.unary("NotifyClientTermination", b"", status_only(), 501)
    truth["streams"][sid] = "NotifyClientTermination"
    w.reset(tel, 8)
    return w, truth


def status_only(code: int = 20000, text: str = "OK") -> bytes:
    return f(1, status(code, text))
