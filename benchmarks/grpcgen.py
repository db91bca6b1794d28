"""A synthetic RocketMQ 5.x gRPC capture for the decode benchmark.

    python benchmarks/grpcgen.py OUT.pcap [--calls 20000]

Each connection looks like a client of the proxy (port 8081): the HTTP/2 preface and
SETTINGS, a Telemetry stream (bidi, open for the whole connection), QueryRoute, then
batches of 1-4 concurrent calls — SendMessage (bodies 64 B .. 4 KiB), ReceiveMessage
(server streaming: 0-4 messages, the delivery timestamp, a Status), AckMessage for what
was received, Heartbeat, ChangeInvisibleDuration — whose frames share TCP segments,
connection WINDOW_UPDATEs, and NotifyClientTermination at the end.  Headers are HPACK
encoded by the ``hpack`` package (dynamic table, Huffman), bodies are real
``apache.rocketmq.v2`` protobuf messages, packets come from ``rmqsniff.capwriter``
(1460-byte segments).  Fast enough for 10^4-10^5 calls (no h2 state machine in the loop).
"""
from __future__ import annotations

import argparse
import os
import random
import struct
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import hpack  # noqa: E402

from dissectors.grpc.schema import message_class  # noqa: E402
from rmqsniff.capwriter import CaptureWriter, TcpSession  # noqa: E402

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SERVICE = "/apache.rocketmq.v2.MessagingService/"
PORT = 8081
DATA, HEADERS, SETTINGS, WINDOW_UPDATE = 0, 1, 4, 8
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1
OK, MESSAGE_NOT_FOUND = 20000, 40401
TOPICS = ("TopicA", "TopicB", "OrderTopic")
GROUP = "GID_bench"

M = {n: message_class(n) for n in (
    "QueryRouteRequest", "QueryRouteResponse", "TelemetryCommand", "SendMessageRequest", "SendMessageResponse",
    "ReceiveMessageRequest", "ReceiveMessageResponse", "AckMessageRequest", "AckMessageResponse",
    "HeartbeatRequest", "HeartbeatResponse", "ChangeInvisibleDurationRequest", "ChangeInvisibleDurationResponse",
    "NotifyClientTerminationRequest", "NotifyClientTerminationResponse", "Message")}


def frame(ftype: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes((ftype, flags)) + struct.pack(">I", sid) + payload


def grpc_data(sid: int, body: bytes, end: bool = False) -> bytes:
    return frame(DATA, END_STREAM if end else 0, sid, b"\x00" + struct.pack(">I", len(body)) + body)


class Conn:
    """One client connection: HPACK encoders per direction, stream ids, random source."""

    def __init__(self, rng: random.Random, n: int) -> None:
        self.rng = rng
        self.n = n
        self.client_id = f"bench-host@{1000 + n}@0@{rng.getrandbits(40):010x}"
        self.enc_c = hpack.Encoder()
        self.enc_s = hpack.Encoder()
        self.next_sid = 1
        self.req_no = 0
        self.msg_no = 0

    def sid(self) -> int:
        s = self.next_sid
        self.next_sid += 2
        return s

    def request_headers(self, sid: int, method: str) -> bytes:
        self.req_no += 1
        h = [(":method", "POST"), (":scheme", "http"), (":path", SERVICE + method), (":authority", "10.0.2.1:8081"),
             ("te", "trailers"), ("content-type", "application/grpc"), ("grpc-accept-encoding", "identity, gzip"),
             ("user-agent", "grpc-java-netty/1.62.2"), ("x-mq-client-id", self.client_id),
             ("x-mq-language", "JAVA"), ("x-mq-client-version", "5.2.0"), ("x-mq-protocol", "v2"),
             ("x-mq-request-id", f"{self.rng.getrandbits(128):032x}"),
             ("x-mq-date-time", f"20260101T12{self.req_no // 60 % 60:02d}{self.req_no % 60:02d}Z"),
             ("grpc-timeout", "3000m")]
        return frame(HEADERS, END_HEADERS, sid, self.enc_c.encode(h))

    def response_headers(self, sid: int) -> bytes:
        h = [(":status", "200"), ("content-type", "application/grpc"), ("grpc-encoding", "identity"),
             ("grpc-accept-encoding", "gzip")]
        return frame(HEADERS, END_HEADERS, sid, self.enc_s.encode(h))

    def trailers(self, sid: int) -> bytes:
        return frame(HEADERS, END_HEADERS | END_STREAM, sid, self.enc_s.encode([("grpc-status", "0")]))

    def unary(self, method: str, req, resp) -> tuple[bytes, bytes]:
        sid = self.sid()
        c = self.request_headers(sid, method) + grpc_data(sid, req.SerializeToString(), end=True)
        s = self.response_headers(sid) + grpc_data(sid, resp.SerializeToString()) + self.trailers(sid)
        return c, s

    def message(self, topic: str, body_len: int, receipt: str | None = None):
        self.msg_no += 1
        m = M["Message"]()
        m.topic.name = topic
        m.user_properties["idx"] = str(self.msg_no)
        sp = m.system_properties
        sp.tag = "TagA"
        sp.keys.append(f"key-{self.msg_no}")
        sp.message_id = f"01{self.n:08X}{self.msg_no:024X}"
        sp.body_encoding = 1
        sp.message_type = 1
        sp.born_timestamp.seconds = 1_767_268_800 + self.msg_no
        sp.born_host = f"10.0.3.{self.n % 250 + 1}"
        if receipt is not None:
            sp.receipt_handle = receipt
            sp.delivery_attempt = 1
            sp.queue_id = self.msg_no % 8
            sp.queue_offset = self.msg_no
        m.body = self.rng.randbytes(body_len)
        return m

    def body_len(self) -> int:
        return min(4096, int(self.rng.lognormvariate(6.0, 1.0)) + 64)

    # ---------------------------------------------------------------- calls
    def send(self) -> tuple[bytes, bytes, int]:
        req = M["SendMessageRequest"]()
        m = self.message(self.rng.choice(TOPICS), self.body_len())
        req.messages.append(m)
        resp = M["SendMessageResponse"](status={"code": OK, "message": "OK"})
        resp.entries.add(status={"code": OK, "message": "OK"}, message_id=m.system_properties.message_id,
                         offset=self.msg_no)
        c, s = self.unary("SendMessage", req, resp)
        return c, s, 0

    def receive(self, received: list) -> tuple[bytes, bytes, int]:
        topic = self.rng.choice(TOPICS)
        sid = self.sid()
        req = M["ReceiveMessageRequest"](batch_size=16, auto_renew=False)
        req.group.name = GROUP
        req.message_queue.topic.name = topic
        req.message_queue.id = -1
        req.filter_expression.type = 1
        req.filter_expression.expression = "*"
        req.invisible_duration.seconds = 30
        req.long_polling_timeout.seconds = 20
        c = self.request_headers(sid, "ReceiveMessage") + grpc_data(sid, req.SerializeToString(), end=True)
        n = self.rng.choice((0, 1, 1, 2, 4))
        s = self.response_headers(sid)
        if n:
            s += grpc_data(sid, M["ReceiveMessageResponse"](status={"code": OK, "message": "OK"}).SerializeToString())
        for _ in range(n):
            m = self.message(topic, self.body_len(), receipt=f"{self.rng.getrandbits(160):040x}")
            received.append((topic, m.system_properties.message_id, m.system_properties.receipt_handle))
            s += grpc_data(sid, M["ReceiveMessageResponse"](message=m).SerializeToString())
        if n:
            d = M["ReceiveMessageResponse"]()
            d.delivery_timestamp.seconds = 1_767_268_800 + self.msg_no
            s += grpc_data(sid, d.SerializeToString())
        else:
            s += grpc_data(sid, M["ReceiveMessageResponse"](
                status={"code": MESSAGE_NOT_FOUND, "message": "no new message"}).SerializeToString())
        s += self.trailers(sid)
        return c, s, n

    def ack(self, received: list) -> tuple[bytes, bytes, int]:
        topic = received[0][0]
        batch = [r for r in received if r[0] == topic][:8]
        for r in batch:
            received.remove(r)
        req = M["AckMessageRequest"]()
        req.group.name = GROUP
        req.topic.name = topic
        resp = M["AckMessageResponse"](status={"code": OK, "message": "OK"})
        for _, mid, handle in batch:
            req.entries.add(message_id=mid, receipt_handle=handle)
            resp.entries.add(message_id=mid, receipt_handle=handle, status={"code": OK, "message": "OK"})
        c, s = self.unary("AckMessage", req, resp)
        return c, s, 0

    def heartbeat(self) -> tuple[bytes, bytes, int]:
        req = M["HeartbeatRequest"](client_type=3)
        req.group.name = GROUP
        c, s = self.unary("Heartbeat", req, M["HeartbeatResponse"](status={"code": OK, "message": "OK"}))
        return c, s, 0

    def change_invisible(self, received: list) -> tuple[bytes, bytes, int]:
        topic, mid, handle = received[-1]
        req = M["ChangeInvisibleDurationRequest"](receipt_handle=handle, message_id=mid)
        req.group.name = GROUP
        req.topic.name = topic
        req.invisible_duration.seconds = 60
        resp = M["ChangeInvisibleDurationResponse"](status={"code": OK, "message": "OK"}, receipt_handle=handle + "1")
        c, s = self.unary("ChangeInvisibleDuration", req, resp)
        return c, s, 0


def _settings(extra: bytes = b"") -> bytes:
    return frame(SETTINGS, 0, 0, struct.pack(">HI", 4, 1 << 20) + struct.pack(">HI", 3, 100) + extra)


def _window_update(n: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", n))


def write_grpc_capture(path: str, calls: int, seed: int = 1, connections: int = 20, fmt: str = "pcap") -> dict:
    """Write a capture of ``calls`` gRPC calls over ``connections`` connections (2 of them
    per-connection: Telemetry + QueryRoute, plus NotifyClientTermination at the end);
    returns counts: calls, packets, messages (gRPC messages), per method."""
    rng = random.Random(seed)
    counts: dict[str, int] = {"calls": 0, "packets": 0, "messages": 0}
    with open(path, "wb") as f:
        class CountingWriter(CaptureWriter):
            def write(self, ts: float, frame: bytes) -> None:
                counts["packets"] += 1
                super().write(ts, frame)

        w = CountingWriter(f, fmt)
        ts = 1_767_268_800.0
        per = max(4, calls // connections)
        left = calls
        for n in range(connections):
            mine = left if n == connections - 1 else min(per, left)
            left -= mine
            if mine < 3:
                break
            conn = Conn(rng, n)
            s = TcpSession(w, (f"10.0.3.{n % 250 + 1}", 41000 + n), ("10.0.2.1", PORT),
                           isn_client=rng.randrange(1 << 32), isn_server=rng.randrange(1 << 32), mss=1460)
            s.handshake(ts)

            def flight(from_client: bool, data: bytes, s: TcpSession = s) -> None:
                nonlocal ts
                ts += rng.uniform(0.00005, 0.0008)
                s.send(ts, from_client, data, ack=rng.random() < 0.3)

            def count(method: str, msgs: int) -> None:
                counts["calls"] += 1
                counts[method] = counts.get(method, 0) + 1
                counts["messages"] += msgs

            flight(True, PREFACE + _settings())
            flight(False, _settings() + frame(SETTINGS, ACK, 0))
            # Telemetry: settings both ways, open until the end
            tel = conn.sid()
            tc = M["TelemetryCommand"]()
            tc.settings.client_type = 3
            tc.settings.access_point.scheme = 1
            tc.settings.access_point.addresses.add(host="10.0.2.1", port=PORT)
            tc.settings.subscription.group.name = GROUP
            tc.settings.subscription.subscriptions.add(topic={"name": TOPICS[0]}, expression={"type": 1,
                                                                                            "expression": "*"})
            tc.settings.user_agent.language = 1
            tc.settings.user_agent.version = "5.2.0"
            flight(True, frame(SETTINGS, ACK, 0) + conn.request_headers(tel, "Telemetry")
                   + grpc_data(tel, tc.SerializeToString()))
            ans = M["TelemetryCommand"](status={"code": OK, "message": "OK"})
            ans.settings.CopyFrom(tc.settings)
            flight(False, conn.response_headers(tel) + grpc_data(tel, ans.SerializeToString()))
            qr = M["QueryRouteRequest"]()
            qr.topic.name = TOPICS[0]
            qr.endpoints.scheme = 1
            qr.endpoints.addresses.add(host="10.0.2.1", port=PORT)
            qa = M["QueryRouteResponse"](status={"code": OK, "message": "OK"})
            for q in range(4):
                mq = qa.message_queues.add(id=q, permission=4, accept_message_types=[1])
                mq.topic.name = TOPICS[0]
                mq.broker.name = "broker-a"
                mq.broker.endpoints.addresses.add(host="10.0.2.1", port=PORT)
            c, sv = conn.unary("QueryRoute", qr, qa)
            flight(True, c)
            flight(False, sv)
            count("QueryRoute", 2)
            budget = mine - 3  # Telemetry, QueryRoute, NotifyClientTermination
            received: list = []
            sent_bytes = 0
            while budget > 0:
                k = min(budget, rng.randint(1, 4))
                budget -= k
                cs, ss = b"", b""
                for _ in range(k):
                    r = rng.random()
                    if received and r < 0.22:
                        method, (c, sv, extra) = "AckMessage", conn.ack(received)
                    elif received and r < 0.25:
                        method, (c, sv, extra) = "ChangeInvisibleDuration", conn.change_invisible(received)
                    elif r < 0.40:
                        method, (c, sv, extra) = "ReceiveMessage", conn.receive(received)
                        extra += 1 if extra else 0  # the Status before and delivery timestamp after
                    elif r < 0.45:
                        method, (c, sv, extra) = "Heartbeat", conn.heartbeat()
                    else:
                        method, (c, sv, extra) = "SendMessage", conn.send()
                    cs += c
                    ss += sv
                    count(method, 2 + extra)
                sent_bytes += len(cs)
                flight(True, cs)
                if sent_bytes > 1 << 18:  # the server's connection window refill
                    ss = _window_update(sent_bytes) + ss
                    sent_bytes = 0
                flight(False, ss)
            req = M["NotifyClientTerminationRequest"]()
            req.group.name = GROUP
            c, sv = conn.unary("NotifyClientTermination", req,
                               M["NotifyClientTerminationResponse"](status={"code": OK, "message": "OK"}))
            flight(True, c + frame(DATA, END_STREAM, tel))  # Telemetry: client half-close (empty DATA)
            flight(False, sv + conn.trailers(tel))
            count("NotifyClientTermination", 2)
            count("Telemetry", 2)
            s.close(ts + 0.01)
        w.close()
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--calls", type=int, default=20_000)
    ap.add_argument("--connections", type=int, default=20)
    args = ap.parse_args()
    print(write_grpc_capture(args.out, args.calls, connections=args.connections))


if __name__ == "__main__":
    main()
