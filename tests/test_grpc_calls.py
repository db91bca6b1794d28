"""gRPC calls to exchanges and stats: h2-built traffic through GrpcHandler, PairingSink and Stats."""
from __future__ import annotations

import io
import json
import random

from hyperframe.frame import GoAwayFrame

from dissectors.grpc import GrpcConnection
from rmqsniff.capwriter import CaptureWriter, TcpSession
from rmqsniff.model import ANSWERED, ORPHAN, UNANSWERED, Exchange
from rmqsniff.pairing import PairingSink
from rmqsniff.pipeline import analyze
from rmqsniff.protocols.grpc.handler import GrpcHandler
from rmqsniff.protocols.grpc.output import sides as grpc_sides
from rmqsniff.stats import Stats
from tests.support.grpc_handler import CONN, run
from tests.support.grpc_wire import (
    AUTH,
    CLIENT_ID,
    Wire,
    ack_request,
    ack_response,
    f,
    grpc_frame,
    hand_data_frame,
    hand_headers_frame,
    heartbeat_request,
    message_id,
    msg,
    producer_session,
    query_route_request,
    receive_request,
    request_headers,
    rmq_message,
    send_request,
    send_response,
    status,
    status_only,
    timestamp,
)


def methods(exs):
    return [ex.request.command.method if ex.request else None for ex in exs]


def test_producer_session_decodes_every_call_with_ground_truth():
    w, truth = producer_session(n_send=7, gzip_every=3)
    exs, stats = run(w.chunks)
    assert [ex.request.command.stream_id for ex in exs] == list(truth["streams"])
    assert methods(exs) == list(truth["streams"].values())
    assert all(ex.status == ANSWERED for ex in exs)
    sent = [ex.request.command.messages[0].message.messages[0].system_properties.message_id
            for ex in exs if ex.request.command.method == "SendMessage"]
    assert sent == truth["sent"]
    # the response carries the id the server returned for each send
    got = [ex.response.command.messages[0].message.entries[0].message_id
           for ex in exs if ex.request.command.method == "SendMessage"]
    assert got == truth["sent"]
    # gzip-compressed messages (every 3rd send) decode like plain ones
    gz = [ex for ex in exs if ex.request.command.method == "SendMessage" and ex.request.command.messages[0].compressed]
    assert len(gz) == 3 and all(ex.response.command.messages[0].compressed for ex in gz)
    assert [g.request.command.messages[0].message.messages[0].body for g in gz] == [b"body-0", b"body-3", b"body-6"]
    c = stats.snapshot()["counters"]
    assert (c["send_message_v2"], c["get_topic_route"], c["heartbeat"], c["unregister"]) == (7, 1, 1, 1)
    assert c["request"] == c["answered"] == c["response_success"] == len(truth["streams"])
    assert c["response_error"] == c["request_decoding_error"] == c["response_decoding_error"] == 0


def test_telemetry_is_bidirectional_and_carries_all_its_messages():
    w, truth = producer_session(n_send=10)
    exs, _ = run(w.chunks)
    tel = next(ex for ex in exs if ex.request.command.method == "Telemetry")
    # the initial settings plus a re-send after every 5th send; one server answer
    req = tel.request.command
    assert len(req.messages) == 3
    assert all(p.message.WhichOneof("command") == "settings" for p in req.messages)
    assert req.messages[0].message.settings.user_agent.version == "5.1.2"
    resp = tel.response.command
    assert len(resp.messages) == 1 and resp.status_code == 20000
    assert resp.grpc_status is None and "RST_STREAM CANCEL" in " ".join(tel.notes)
    # a client cancelling an answered Telemetry stream is its normal end, not an error
    assert resp.name == "OK"


def test_server_streaming_receive_with_status_messages_and_delivery_timestamp():
    w = Wire()
    sid = w.open("ReceiveMessage", 1)
    w.send(sid, receive_request("GroupA", "TopicA"), end=True)
    w.respond(sid)
    w.send(sid, f(1, status(20000, "OK")), from_client=False)
    for i in range(3):
        w.send(sid, f(2, rmq_message("TopicA", i, b"payload", receipt=f"handle-{i}")), from_client=False)
    w.send(sid, f(3, timestamp(1_700_000_123)), from_client=False)
    w.trailers(sid, 0)
    w.unary("AckMessage", ack_request("GroupA", "TopicA", [0, 1, 2]), ack_response([0, 1, 2]), 2)
    # nothing to deliver: MESSAGE_NOT_FOUND, then the timestamp
    sid3 = w.open("ReceiveMessage", 3)
    w.send(sid3, receive_request("GroupA", "TopicA"), end=True)
    w.respond(sid3)
    w.send(sid3, f(1, status(40401, "no new message")), from_client=False)
    w.send(sid3, f(3, timestamp(1_700_000_124)), from_client=False)
    w.trailers(sid3, 0)
    exs, stats = run(w.chunks)
    rx, ack, empty = exs
    contents = [p.message.WhichOneof("content") for p in rx.response.command.messages]
    assert contents == ["status", "message", "message", "message", "delivery_timestamp"]
    ids = [p.message.message.system_properties.message_id for p in rx.response.command.messages[1:4]]
    assert ids == [message_id(i) for i in range(3)]
    assert [e.message_id for e in ack.request.command.messages[0].message.entries] == ids
    assert empty.response.command.status_code == 40401
    c = stats.snapshot()["counters"]
    assert (c["pop_message"], c["ack_message"]) == (2, 1)
    assert c["response_no_message"] == 1 and c["response_error"] == 0
    assert stats.snapshot()["breakdowns"]["by_group"]["rows"]["GroupA"]["requests"] == 3
    assert stats.snapshot()["breakdowns"]["by_topic"]["rows"]["TopicA"]["requests"] == 3


def test_errors_from_body_status_and_grpc_status():
    w = Wire()
    w.unary("SendMessage", send_request("Nope", 1), f(1, status(40402, "topic not found")), 1)
    w.unary("QueryRoute", query_route_request("Nope"), f(1, status(40100, "unauthorized")), 2)
    sid = w.open("PullMessage", 3)
    w.send(sid, b"", end=True)
    w.trailers_only(sid, 12, "Method not found: apache.rocketmq.v2.MessagingService/PullMessage")
    exs, stats = run(w.chunks)
    names = [ex.response.command.name for ex in exs]
    assert names == ["TOPIC_NOT_FOUND", "UNAUTHORIZED", "GRPC_UNIMPLEMENTED"]
    assert exs[2].response.command.grpc_message.startswith("Method not found: apache")
    c = stats.snapshot()["counters"]
    assert c["response_error"] == 3 and c["maintenance_failure"] == 1  # the route query
    resp = stats.snapshot()["responses"]
    assert resp["grpc:TOPIC_NOT_FOUND"]["count"] == 1 and resp["grpc:GRPC_UNIMPLEMENTED"]["count"] == 1
    codes = stats.snapshot()["codes"]
    assert {d["name"]: d["errors"] for d in codes.values()} == {"SendMessage": 1, "QueryRoute": 1, "PullMessage": 1}


def test_metadata_decoded_and_secrets_redacted_in_every_output():
    w, _ = producer_session(n_send=1)
    exs, _ = run(w.chunks)
    ex = exs[0]
    md = ex.request.command.metadata()
    assert md["client_id"] == CLIENT_ID and md["language"] == "PYTHON" and md["client_version"] == "5.1.2"
    assert md["namespace"] == "" and md["request_id"] == "00000000-0000-0000-0000-000000000001"
    req, resp = grpc_sides(ex)
    assert req is not None and resp is not None
    text = json.dumps([req, resp])
    assert "AKIDEXAMPLE42" not in text and "0123abcdef9876" not in text
    assert req["metadata"]["authorization"] == ("MQv2-HMAC-SHA1 Credential=<redacted>, "
                                                "SignedHeaders=x-mq-date-time, Signature=<redacted>")
    raw, _ = grpc_sides(ex, redact=False)
    assert raw is not None
    assert raw["metadata"]["authorization"] == AUTH
    assert req["method"] == "QueryRoute" and req["method_from"] == "path"
    assert resp["status_code"] == 20000 and resp["grpc_status"] == 0
    assert resp["messages"][0]["decoded"]["message_queues"][0]["broker"]["name"] == "broker-a"


def test_unknown_fields_survive_decoding_and_export():
    w, _ = producer_session(n_send=2, unknown_field=True)
    exs, _ = run(w.chunks)
    send = next(ex for ex in exs if ex.request.command.method == "SendMessage")
    p = send.request.command.messages[0]
    assert p.message.SerializeToString() == p.data  # nothing dropped: re-encodes to the wire bytes
    sysp = p.decoded["messages"][0]["system_properties"]
    assert sysp["_unknown"] == [[99, 2, b"future-field"]]
    req, _ = grpc_sides(send)
    assert req is not None
    assert req["messages"][0]["decoded"]["messages"][0]["system_properties"]["_unknown"] == [
        [99, 2, "future-field"]]


def test_continuation_padding_and_odd_framing():
    """Hand-made frames: a padded HEADERS split into CONTINUATIONs, padded DATA, a message
    split over three DATA frames and two messages in one DATA frame."""
    import hpack
    w = Wire()
    enc = hpack.Encoder()
    big = request_headers("SendMessage", 1, extra=[("x-big", "z" * 3000)])
    sid = 1
    w.raw(True, hand_headers_frame(sid, enc.encode(big), pad=17, continuation_at=10))
    body = grpc_frame(send_request("TopicA", 1, b"x" * 500))
    w.raw(True, hand_data_frame(sid, body[:3], pad=4))
    w.raw(True, hand_data_frame(sid, body[3:200]))
    w.raw(True, hand_data_frame(sid, body[200:], end_stream=True, pad=255))
    senc = hpack.Encoder()
    w.raw(False, hand_headers_frame(sid, senc.encode([(":status", "200"), ("content-type", "application/grpc")])))
    w.raw(False, hand_data_frame(sid, grpc_frame(send_response(1)) + grpc_frame(b"")))  # 2 messages, 1 frame
    w.raw(False, hand_headers_frame(sid, senc.encode([("grpc-status", "0")]), end_stream=True))
    # the h2 peers never saw these frames: give the decoder a fresh connection's bytes only
    chunks = [c for c in w.chunks if c[1].startswith(b"PRI") or not c[0]][:2] + w.chunks[-7:]
    exs, stats = run(chunks, chunk=5)
    (ex,) = [e for e in exs if e.request and e.request.command.stream_id == sid]
    assert ex.request.command.header("x-big") == "z" * 3000
    assert ex.request.command.messages[0].message.messages[0].body == b"x" * 500
    assert len(ex.response.command.messages) == 2
    assert ex.status == ANSWERED and stats.counter("request_decoding_error") == 0


def test_rst_stream_goaway_and_close_end_calls():
    w = Wire()
    d = w.open("Telemetry", 4)  # still open at the end of the capture
    w.send(d, f(2, msg(f(1, 3))))
    a = w.open("SendMessage", 1)
    w.send(a, send_request("TopicA", 1), end=True)
    w.reset(a, 8)  # client gave up (deadline): no answer
    b = w.open("Heartbeat", 2)
    w.send(b, heartbeat_request("GroupA", 3), end=True)
    c = w.open("SendMessage", 3)
    w.send(c, send_request("TopicA", 3), end=True)
    w.respond(b)
    w.send(b, status_only(), from_client=False)
    w.trailers(b)
    w.raw(False, GoAwayFrame(0, last_stream_id=b, error_code=0).serialize())  # stream c is refused
    exs, stats = run(w.chunks)
    by_sid = {ex.request.command.stream_id: ex for ex in exs}
    assert by_sid[a].status == UNANSWERED and by_sid[a].response is None
    assert by_sid[b].status == ANSWERED and by_sid[b].response.command.name == "OK"
    assert by_sid[c].status == UNANSWERED and "GOAWAY" in " ".join(by_sid[c].notes)
    assert by_sid[d].status == UNANSWERED and len(by_sid[d].request.command.messages) == 1
    c_ = stats.snapshot()["counters"]
    assert c_["unanswered"] == 3 and c_["answered"] == 1
    assert stats.snapshot()["gauges"]["request_active"]["value"] == 0


def test_any_chunking_gives_the_same_exchanges():
    w, _ = producer_session(n_send=5, gzip_every=2)
    whole, _ = run(w.chunks)
    for size in (1, 7, 1400):
        exs, _ = run(w.chunks, chunk=size)
        assert [(e.request.command.method, e.status, e.response.command.code) for e in exs] == \
               [(e.request.command.method, e.status, e.response.command.code) for e in whole]


def test_garbage_never_crashes_and_is_counted():
    rng = random.Random(5)
    w, _ = producer_session(n_send=5)
    for trial in range(30):
        chunks = []
        for fc, data, ts in w.chunks:
            b = bytearray(data)
            for _ in range(rng.randint(0, 3)):
                if b:
                    b[rng.randrange(len(b))] = rng.randrange(256)
            chunks.append((fc, bytes(b), ts))
        exs, stats = run(chunks, mid_stream=bool(trial % 2))
        for ex in exs:
            assert ex.status in (ANSWERED, UNANSWERED, ORPHAN)
            grpc_sides(ex)  # every exchange renders
    conn = GrpcConnection()
    assert conn.feed(True, bytes(rng.randrange(256) for _ in range(5000))) is not None
    conn.close()


def test_pipeline_reads_a_grpc_pcap_on_port_8081(tmp_path):
    w, truth = producer_session(n_send=4, gzip_every=2)
    buf = io.BytesIO()
    cw = CaptureWriter(buf)
    s = TcpSession(cw, ("10.0.0.1", 50123), ("10.0.0.2", 8081), mss=1400)
    s.handshake(w.chunks[0][2] - 0.001)
    for fc, data, ts in w.chunks:
        s.send(ts, fc, data)
    s.close(w.t + 0.01)
    path = tmp_path / "grpc.pcap"
    path.write_bytes(buf.getvalue())
    a = analyze([str(path)])
    exs = [ex for ex in a.exchanges if ex.protocol == "grpc"]
    assert methods(exs) == list(truth["streams"].values())
    assert a.stats.counter("send_message_v2") == 4


def test_tls_on_the_grpc_port_is_recognised_and_left_alone():
    hello = bytes([0x16, 3, 1, 0, 4, 1, 0, 0, 0]) + bytes([0x17, 3, 3, 0, 2, 9, 9])
    stats = Stats()
    out: list[Exchange] = []
    sink = PairingSink(stats, out.append)
    h = GrpcHandler(CONN, sink, stats, mid_stream=False)
    h.data(True, hello, 1.0)
    h.data(False, bytes([0x16, 3, 3, 0, 1, 2]) * 50, 1.1)
    h.lost(True, 100)
    h.close()
    assert h.why.startswith("TLS") and out == []
    assert stats.snapshot()["transport"]["flows_other"] == 1
    assert stats.snapshot()["transport"]["resync"] == 0 and stats.snapshot()["decoding_errors"] == {}


def test_map_fields_come_out_in_key_order_whatever_order_they_were_sent():
    """upb iterates protobuf maps in a per-process hash order: output must not depend on it."""
    from dissectors.grpc.messages import parse, to_dict
    from dissectors.grpc.schema import message_class

    keys = [f"k{i:03d}" for i in range(64)]
    random.Random(7).shuffle(keys)
    m = message_class("Message")()
    for k in keys:
        m.user_properties[k] = k.upper()
    d = to_dict(parse("Message", m.SerializeToString()))
    assert list(d["user_properties"]) == sorted(keys)
    assert d["user_properties"]["k005"] == "K005"
