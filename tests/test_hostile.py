"""Hostile input (issue 10): every adversarial case ends in a counted, explained error,
and the good traffic after it still decodes. Captures are built here with the project's
capture writer, so each test states exactly which bytes were on the wire."""
from __future__ import annotations

import gzip
import io
import random
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import hpack
import lz4.frame
import pytest
import zstandard

from dissectors.remoting import bodies, fastjson
from dissectors.remoting.command import JSON, ROCKETMQ, RemotingCommand
from dissectors.remoting.frame import encode
from dissectors.remoting.message import (
    DecompressionLimitExceeded,
    StoredMessage,
    decode_stored_messages,
    encode_stored_message,
)
from dissectors.remoting.stream import DecodeError, Frame, Resync, StreamDecoder
from rmqsniff.capwriter import CaptureWriter, TcpSession
from rmqsniff.model import ANSWERED
from rmqsniff.pipeline import Pipeline, analyze
from tests.support.exchanges import request_of

ROOT = Path(__file__).resolve().parent.parent
BROKER = ("10.0.0.10", 10911)
BROKER_LABEL = "10.0.1.1:40000 -> 10.0.0.10:10911"  # the first connection capture() writes


def req(opaque: int, ser: int = JSON, body: bytes | None = b"payload") -> RemotingCommand:
    return RemotingCommand(310, 0, opaque, "JAVA", 479, None, {"a": "PG", "b": "TopicTest", "e": "1"}, body, ser)


def resp(opaque: int, ser: int = JSON) -> RemotingCommand:
    return RemotingCommand(0, 1, opaque, "JAVA", 479, None, {"msgId": f"M{opaque}", "queueId": "1"}, None, ser)


def capture(tmp_path: Path, conversations: list[list[tuple[bool, bytes]]], name: str = "h.pcap",
            fmt: str = "pcap", close: bool = True) -> str:
    """One TCP connection per conversation, each a list of (from_client, bytes) sends;
    with ``close=False`` the connections are left open (no FIN)."""
    path = tmp_path / name
    with open(path, "wb") as f:
        w = CaptureWriter(f, fmt)
        ts = 1_000.0
        for i, conv in enumerate(conversations):
            s = TcpSession(w, (f"10.0.1.{i % 250 + 1}", 40000 + i), BROKER, isn_client=1000 * i + 7,
                           isn_server=777_777 + i, mss=1460)
            s.handshake(ts)
            for fc, data in conv:
                ts += 0.001
                s.send(ts, fc, data, ack=True)
            if close:
                s.close(ts + 0.001)
        w.close()
    return str(path)


def good_exchange(opaque: int, ser: int = JSON) -> list[tuple[bool, bytes]]:
    return [(True, encode(req(opaque, ser))), (False, encode(resp(opaque, ser)))]


def decoded(a, opaque: int):
    """The answered exchange with this opaque (exactly one)."""
    got = [x for x in a.exchanges if x.request is not None and x.request.command.opaque == opaque]
    assert len(got) == 1, [(x.status, x.notes) for x in a.exchanges]
    assert got[0].status == ANSWERED and got[0].response.command.opaque == opaque
    return got[0]


def assert_counted(a, reason: str, n: int = 1, key: str = "request_decoding_error") -> None:
    assert a.stats.counter(key) == n, (a.stats.counter(key), a.errors)
    hits = [e for e in a.errors if reason in e]
    assert len(hits) == n, a.errors
    assert all("\n" not in e and "offset" in e for e in hits)


# ------------------------------------------------------------------ framing: sizes and lengths

@pytest.mark.parametrize(("prefix", "reason"), [
    (struct.pack(">iI", 2**31 - 1, 0x00000010), "frame length exceeds maximum"),   # declared 2^31 - 1
    (struct.pack(">II", 2**31, 0x00000010), "negative frame length"),              # 2^31 read as int32
    (struct.pack(">iI", -5, 0x00000010), "negative frame length"),
    (struct.pack(">iI", 100, 0x000000C8) + b"\0" * 96, "header length exceeds frame length"),
    (struct.pack(">iI", 16 * 1024 * 1024, 0x00000010), "frame length exceeds maximum"),  # 16 MiB + 4 > cap
    (struct.pack(">iI", 40, 0x05000010) + b"\0" * 36, "unknown serialize type"),
])
def test_bad_frame_prefix_is_counted_and_the_next_frame_decodes(tmp_path, prefix: bytes, reason: str) -> None:
    conv = [(True, prefix + encode(req(1))), (False, encode(resp(1)))] + good_exchange(2)
    a = analyze([capture(tmp_path, [conv])])
    assert_counted(a, reason)
    decoded(a, 1)
    decoded(a, 2)
    assert a.stats.snapshot()["transport"]["resync"] == 1


@pytest.mark.parametrize(("what", "header", "reason"), [
    ("negative remark length", struct.pack(">hBhiii", 310, 0, 479, 1, 0, -1) + struct.pack(">i", 0),
     "bad remark length"),
    ("remark length 2^31-1", struct.pack(">hBhiii", 310, 0, 479, 1, 0, 2**31 - 1) + struct.pack(">i", 0),
     "bad remark length"),
    ("negative extFields length", struct.pack(">hBhiii", 310, 0, 479, 1, 0, 0) + struct.pack(">i", -8),
     "bad extFields length"),
    ("negative value length", struct.pack(">hBhiii", 310, 0, 479, 1, 0, 0) + struct.pack(">i", 8)
     + struct.pack(">h", 1) + b"k" + struct.pack(">i", -1) + b"\0", "bad extFields value length"),
])
def test_negative_sizes_inside_a_binary_header(tmp_path, what: str, header: bytes, reason: str) -> None:
    """A whole frame whose header lies about an inner size: that frame is one counted
    error, framing is not lost, the next frame decodes."""
    bad = struct.pack(">iI", 4 + len(header), (ROCKETMQ << 24) | len(header)) + header
    conv = [(True, bad)] + good_exchange(2, ROCKETMQ)
    a = analyze([capture(tmp_path, [conv])])
    assert_counted(a, reason)
    decoded(a, 2)
    assert a.stats.snapshot()["transport"]["resync"] == 0  # framing was never lost


def test_frame_cap_is_configurable(tmp_path) -> None:
    """A 100 KiB frame is fine by default and a counted error with a 64 KiB cap; the
    frames after it decode either way."""
    big = encode(req(1, body=bytes(100 * 1024)))
    conv = [(True, big), (False, encode(resp(1)))] + good_exchange(2)
    path = capture(tmp_path, [conv])
    a = analyze([path])
    assert a.stats.counter("request_decoding_error") == 0
    assert decoded(a, 1).request.command.body == bytes(100 * 1024)
    capped = analyze([path], max_frame=64 * 1024)
    assert_counted(capped, "frame length exceeds maximum")
    decoded(capped, 2)


def test_frame_of_more_than_16_mib_is_skipped_whole(tmp_path) -> None:
    """A real 17 MiB frame (default cap 16 MiB): one counted error, its bytes skipped, the
    following exchange decodes, and the decoder never held more than the cap."""
    huge = encode(req(1, body=b"\x00" * (17 * 1024 * 1024)))
    dec = StreamDecoder()
    events = []
    peak = 0
    data = huge + encode(req(2))
    for i in range(0, len(data), 65536):
        events += dec.feed(data[i:i + 65536])
        peak = max(peak, dec.buffered)
    events += dec.close()
    assert peak < 64 * 1024
    kinds = [type(e) for e in events]
    assert kinds == [DecodeError, Resync, Frame]
    err, resync, frame = events
    assert isinstance(err, DecodeError) and isinstance(resync, Resync) and isinstance(frame, Frame)
    assert err.reason == "frame length exceeds maximum"
    assert frame.command.opaque == 2 and resync.skipped == len(huge)


# ------------------------------------------------------------------ JSON: deep, huge, invalid UTF-8

def json_frame(header: bytes, body: bytes = b"") -> bytes:
    return struct.pack(">iI", 4 + len(header) + len(body), len(header)) + header + body


@pytest.mark.parametrize("header", [
    b"[" * 100_000 + b"]" * 100_000,
    b'{"code":310,"opaque":1,"extFields":' + b'{"a":' * 50_000 + b"1" + b"}" * 50_001,
    b'{"code":310,' * 200_000,
], ids=["deep-array", "deep-extfields", "huge-garbage"])
def test_deeply_nested_or_huge_json_header(tmp_path, header: bytes) -> None:
    conv = [(True, json_frame(header))] + good_exchange(2)
    a = analyze([capture(tmp_path, [conv])])
    assert a.stats.counter("request_decoding_error") == 1, a.errors
    assert any("JSON" in e for e in a.errors), a.errors
    decoded(a, 2)


def test_huge_json_header_that_is_valid_decodes(tmp_path) -> None:
    """8 MiB of extFields is big, not wrong: it decodes, and so does what follows."""
    cmd = req(1)
    cmd.ext = {f"k{i}": "v" * 100 for i in range(80_000)}
    conv = [(True, encode(cmd)), (False, encode(resp(1)))] + good_exchange(2)
    a = analyze([capture(tmp_path, [conv])])
    assert len(decoded(a, 1).request.command.ext) == 80_000
    decoded(a, 2)


def test_deep_and_oversized_json_bodies() -> None:
    """Body JSON (heartbeat, route): deep nesting and the fastjson size cap give a listed
    problem, never an exception; a good body decodes after them."""
    deep = RemotingCommand(34, 0, 1, "JAVA", 479, None, {}, b"[" * 200_000 + b"]" * 200_000, JSON)
    view = bodies.decode_body(deep)
    assert view.errors and not any("decoder failed" in e for e in view.errors)
    with pytest.raises(fastjson.JsonError, match="longer than"):
        fastjson.loads(b" " * (fastjson.MAX_LENGTH + 1))
    with pytest.raises(fastjson.JsonError):
        fastjson.loads("[" * 100_000)
    ok = bodies.decode_body(RemotingCommand(34, 0, 2, "JAVA", 479, None, {}, b'{"clientID":"c1"}', JSON))
    assert ok.kind == "heartbeat" and ok.value["clientID"] == "c1" and not ok.errors


def test_invalid_utf8_is_replaced_not_fatal(tmp_path) -> None:
    """Invalid UTF-8 in a JSON header, a binary header and message properties: decoded
    with U+FFFD (properties: a listed problem), the frame and the next ones are kept."""
    jh = b'{"code":310,"extFields":{"b":"T\xff\xfe","a":"PG"},"flag":0,"language":"JAVA","opaque":1,' \
         b'"remark":"r\xc3","serializeTypeCurrentRPC":"JSON","version":479}'
    bh = struct.pack(">hBhiii", 310, 0, 479, 3, 0, 2) + b"\xff\xfe" + struct.pack(">i", 9) \
        + struct.pack(">h", 1) + b"b" + struct.pack(">i", 2) + b"\xc3\x28"
    binary = struct.pack(">iI", 4 + len(bh), (ROCKETMQ << 24) | len(bh)) + bh
    conv = [(True, json_frame(jh)), (False, encode(resp(1))), (True, binary), (False, encode(resp(3, ROCKETMQ)))]
    a = analyze([capture(tmp_path, [conv + good_exchange(2)])])
    assert a.stats.counter("request_decoding_error") == 0
    assert decoded(a, 1).request.command.ext["b"] == "T\ufffd\ufffd"
    x3 = decoded(a, 3).request.command
    assert x3.remark == "\ufffd\ufffd" and x3.ext["b"] == "\ufffd("
    decoded(a, 2)
    m = StoredMessage(queue_id=1, body=b"x", topic="T", born_host="10.0.0.1:1", store_host="10.0.0.2:2",
                      properties={"TAGS": "a"})
    raw = bytearray(encode_stored_message(m))
    i = raw.index(b"TAGS\x01a")
    raw[i + 5] = 0xFF  # the tag's value byte
    msgs, problems = decode_stored_messages(bytes(raw) + encode_stored_message(m))
    assert len(msgs) == 2 and msgs[0].tags == "\ufffd" and msgs[1].tags == "a"
    assert len(problems) == 1 and "UTF-8" in problems[0]


# ------------------------------------------------------------------ compression bombs

BOMB_SIZE = 256 * 1024 * 1024  # what the bomb would inflate to; the cap is 64 MiB by default


@pytest.fixture(scope="module")
def bombs() -> dict[str, bytes]:
    # compressed incrementally so building the bombs never holds 256 MiB either
    zero = bytes(1 << 20)
    z = zlib.compressobj(9)
    zl = b"".join(z.compress(zero) for _ in range(BOMB_SIZE >> 20)) + z.flush()
    lc = lz4.frame.LZ4FrameCompressor()
    lz = lc.begin() + b"".join(lc.compress(zero) for _ in range(BOMB_SIZE >> 20)) + lc.flush()
    zc = zstandard.ZstdCompressor().compressobj()
    zs = b"".join(zc.compress(zero) for _ in range(BOMB_SIZE >> 20)) + zc.flush()
    return {"zlib": zl, "lz4": lz, "zstd": zs}


@pytest.mark.parametrize(("algo", "sys_flag"), [("zlib", 0x1), ("lz4", 0x101), ("zstd", 0x201)])
def test_compression_bomb_hits_the_decompressed_size_cap(bombs, algo: str, sys_flag: int) -> None:
    """A stored message whose body inflates to 256 MiB: payload() stops at the cap (tried
    with 1 MiB here: the cap is what is checked, not the default's size); the next
    message of the same pull response decodes; a compressed send request body reports
    the cap in its view's errors."""
    bomb = StoredMessage(queue_id=1, sys_flag=sys_flag, body=bombs[algo], topic="T",
                         born_host="10.0.0.1:1", store_host="10.0.0.2:2")
    fine = StoredMessage(queue_id=1, sys_flag=sys_flag, body={"zlib": zlib.compress, "lz4": lz4.frame.compress,
                                                              "zstd": zstandard.compress}[algo](b"hello"),
                         topic="T", born_host="10.0.0.1:1", store_host="10.0.0.2:2")
    msgs, problems = decode_stored_messages(encode_stored_message(bomb) + encode_stored_message(fine))
    assert problems == [] and len(msgs) == 2
    with pytest.raises(DecompressionLimitExceeded, match=algo):
        msgs[0].payload(1 << 20)
    assert msgs[1].payload(1 << 20) == b"hello"
    send = RemotingCommand(10, 0, 1, "JAVA", 479, None, {"topic": "T", "sysFlag": str(sys_flag)}, bombs[algo], JSON)
    view = bodies.decode_body(send, max_payload=1 << 20)
    assert any("inflates beyond" in e for e in view.errors), view.errors


def test_compression_bomb_costs_no_memory() -> None:
    """The cap is enforced while inflating: a 1 GiB zstd bomb against the 64 MiB default
    cap raises with the process's peak RSS well under the bomb's size (subprocess, so
    the measure is this case's alone)."""
    code = (
        "import resource, zstandard\n"
        "from dissectors.remoting.message import decompress_body, DecompressionLimitExceeded\n"
        "c = zstandard.ZstdCompressor().compressobj(); z = bytes(1 << 20)\n"
        "bomb = b''.join(c.compress(z) for _ in range(1024)) + c.flush()\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n    decompress_body(bomb, 0x201)\nexcept DecompressionLimitExceeded:\n    print('capped')\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) // 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         check=True).stdout.split()
    assert out[0] == "capped"
    assert int(out[1]) < 256, f"peak RSS grew by {out[1]} MiB for a 1 GiB bomb"


# ------------------------------------------------------------------ gRPC: HPACK, message limits, bombs

def h2(ftype: int, flags: int, sid: int, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes((ftype, flags)) + struct.pack(">I", sid) + payload


PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def grpc_call_bytes(enc_c: hpack.Encoder, enc_s: hpack.Encoder, sid: int, message: bytes,
                    encoding: str | None = None, flag: int = 0, data: bytes | None = None) -> tuple[bytes, bytes]:
    """Client and server bytes of one unary QueryRoute call carrying ``message`` (or
    the DATA payload ``data`` as given)."""
    hdrs = [(":method", "POST"), (":scheme", "http"), (":path", "/apache.rocketmq.v2.MessagingService/QueryRoute"),
            (":authority", "127.0.0.1:8081"), ("content-type", "application/grpc"), ("te", "trailers")]
    if encoding:
        hdrs.append(("grpc-encoding", encoding))
    if data is None:
        data = bytes((flag,)) + struct.pack(">I", len(message)) + message
    c = h2(1, 0x4, sid, enc_c.encode(hdrs)) + h2(0, 0x1, sid, data)
    s = h2(1, 0x4, sid, enc_s.encode([(":status", "200"), ("content-type", "application/grpc")])) \
        + h2(0, 0, sid, b"\0" + struct.pack(">I", 0)) \
        + h2(1, 0x5, sid, enc_s.encode([("grpc-status", "0")]))
    return c, s


def run_grpc(client: bytes, server: bytes, **kw):
    from dissectors.grpc import CallEnded, GrpcConnection, Problem

    conn = GrpcConnection(**kw)
    evs = conn.feed(True, client) + conn.feed(False, server) + conn.close()
    calls = {e.call.stream_id: e.call for e in evs if type(e) is CallEnded}
    problems = [e for e in evs if type(e) is Problem]
    return calls, problems


def test_grpc_message_over_the_limit_is_skipped_and_counted() -> None:
    """A 2 MiB gRPC message against a 1 MiB limit (and one declaring 2^31 - 1 bytes):
    a Problem each, the call still ends; the next call's message decodes."""
    enc_c, enc_s = hpack.Encoder(), hpack.Encoder()
    c1, s1 = grpc_call_bytes(enc_c, enc_s, 1, bytes(2 << 20))
    c3, s3 = grpc_call_bytes(enc_c, enc_s, 3, b"", data=b"\0" + struct.pack(">I", 2**31 - 1))  # prefix only
    c5, s5 = grpc_call_bytes(enc_c, enc_s, 5, b"\x0a\x03\x12\x01T")  # QueryRouteRequest{topic{name:"T"}}
    calls, problems = run_grpc(PREFACE + h2(4, 0, 0, b"") + c1 + c3 + c5, h2(4, 0, 0, b"") + s1 + s3 + s5,
                               max_message=1 << 20)
    over = [p for p in problems if "limit" in p.reason]
    assert {p.stream_id for p in over} == {1, 3}, problems
    assert all("\n" not in p.reason for p in problems)
    assert calls[1].request.messages == [] and calls[3].request.messages == []
    good = calls[5].request.messages
    assert len(good) == 1 and good[0].decoded == {"topic": {"name": "T"}}


def continuation_flood(sid: int) -> bytes:
    """A HEADERS frame on ``sid`` whose header block runs past the 16 MiB limit, then 3000
    more CONTINUATION frames, the last one ending the block."""
    return (h2(1, 0, sid, bytes(1000)) + b"".join(h2(9, 0, sid, bytes(1 << 20)) for _ in range(17))
            + b"".join(h2(9, 0, sid, bytes(10)) for _ in range(3000)) + h2(9, 0x4, sid, bytes(10)))


def flood_connection() -> tuple[bytes, bytes]:
    """Five good calls (streams 1, 3, 5, 9, 11) around a CONTINUATION flood on stream 7."""
    enc_c, enc_s = hpack.Encoder(), hpack.Encoder()
    calls = [grpc_call_bytes(enc_c, enc_s, sid, b"\x0a\x03\x12\x01T") for sid in (1, 3, 5, 9, 11)]
    client = PREFACE + h2(4, 0, 0, b"") + b"".join(c for c, _ in calls[:3]) + continuation_flood(7) \
        + b"".join(c for c, _ in calls[3:])
    return client, h2(4, 0, 0, b"") + b"".join(s for _, s in calls)


def test_grpc_header_block_over_the_limit_is_one_problem_and_its_continuations_are_skipped() -> None:
    calls, problems = run_grpc(*flood_connection())
    assert [(p.reason, p.stream_id) for p in problems] == [("header block over the size limit", 7)]
    assert sorted(calls) == [1, 3, 5, 9, 11]
    assert all(len(c.request.messages) == 1 and c.ended_by == "trailers" for c in calls.values())
    # the lost block may have changed the header table: later calls' :path refers to it
    assert calls[5].request.messages[0].decoded == {"topic": {"name": "T"}}


def test_grpc_continuation_flood_counts_its_real_calls_and_reports_on_stderr(tmp_path) -> None:
    """Six calls, one of them a header block over the limit followed by 3000 CONTINUATION
    frames: six requests, one decoding error, five answered calls, and the problem on
    stderr in one line (before: 3008 requests, 3003 decoding errors, nothing on stderr)."""
    path = capture(tmp_path, [[(True, client), (False, server)] for client, server in [flood_connection()]])
    a = analyze([path])
    assert a.stats.counter("request") == 6 and a.stats.counter("request_decoding_error") == 1
    assert len(a.exchanges) == 5 and all(x.status == ANSWERED for x in a.exchanges)
    assert a.errors == [f"{BROKER_LABEL} client stream 7: grpc: header block over the size limit"]
    r = run_cli("read", path)
    assert r.returncode == 0, r.stderr
    assert r.stderr.splitlines() == [f"rmqsniff: {a.errors[0]}"]


def test_grpc_gzip_bomb_is_capped() -> None:
    """A gzip-compressed gRPC message inflating to 64 MiB against a 1 MiB limit: a
    counted Problem and a note on the call; the next call decodes."""
    enc_c, enc_s = hpack.Encoder(), hpack.Encoder()
    bomb = gzip.compress(bytes(64 << 20), 9)
    c1, s1 = grpc_call_bytes(enc_c, enc_s, 1, bomb, encoding="gzip", flag=1)
    c3, s3 = grpc_call_bytes(enc_c, enc_s, 3, b"\x0a\x03\x12\x01T")
    calls, problems = run_grpc(PREFACE + h2(4, 0, 0, b"") + c1 + c3, h2(4, 0, 0, b"") + s1 + s3,
                               max_message=1 << 20)
    assert [p.stream_id for p in problems if "limit" in p.reason] == [1], problems
    assert calls[1].request.dropped == 1 and any("limit" in n for n in calls[1].notes)
    assert calls[3].request.messages[0].decoded == {"topic": {"name": "T"}}


def test_hpack_table_size_update_beyond_limits_is_an_error_and_decoding_resumes() -> None:
    """A dynamic table size update to 2^32 - 1: a counted Problem on that call; the next
    call's headers decode once the client sends literals again."""
    from dissectors.grpc.hpack_decoder import HpackError, TolerantDecoder

    d = TolerantDecoder()
    with pytest.raises(HpackError, match="table size"):
        d.decode(b"\x3f" + b"\xe1\xff\xff\xff\x0f")  # size update 31 + 0xFFFFFFE0
    d.reset()
    enc = hpack.Encoder()
    assert d.decode(enc.encode([(":path", "/x"), ("a", "b")], huffman=False)).headers == [(":path", "/x"), ("a", "b")]


def test_hpack_table_size_attack_keeps_memory_bounded() -> None:
    """RFC 7541 4.2: a size update above the decoder's SETTINGS_HEADER_TABLE_SIZE (4096
    unless advertised) is an error. An attacker that raises the table to 16 MiB and fills
    it with empty entries makes a passive decoder hold ~500k Python tuples per direction
    and connection. Expected: the table stays within 64 KiB of accounted size."""
    from dissectors.grpc.hpack_decoder import HpackError, TolerantDecoder

    d = TolerantDecoder()
    size_update = b"\x3f\xe1\xff\xff\x07"  # 31 + 0xFFFFE0 = 16 MiB
    fill = b"\x40\x00\x00" * 4000  # literal with incremental indexing, empty name and value (32 bytes each)
    try:
        for _ in range(10):
            d.decode(size_update + fill)
    except HpackError:
        pass
    assert d.size <= 64 * 1024 and len(d.table) <= 64 * 1024 // 32


# ------------------------------------------------------------------ flows: 1M flows, never a frame

def test_flow_table_cap_evicts_and_counts(tmp_path) -> None:
    """5000 connections through a table capped at 1000: 4000 evictions counted, each
    evicted request reported unanswered (not lost), and a connection opened after all
    of them still decodes."""
    convs = [[(True, encode(req(10_000 + i)))] for i in range(5000)] + [good_exchange(2)]
    path = capture(tmp_path, convs, close=False)
    p = Pipeline()
    p.table.max_flows = 1000
    out = list(p.run([path]))
    snap = p.stats.snapshot()["transport"]
    assert snap["flows"] == 5001 and snap["flows_evicted"] == 4001
    assert p.stats.counter("unanswered") == 5000
    got = [x for x in out if request_of(x).opaque == 2]
    assert len(got) == 1 and got[0].status == ANSWERED


def test_connection_that_never_sends_a_complete_frame(tmp_path) -> None:
    """A client declares a 1 MiB frame and trickles 600 KiB of it, never finishing: the
    decoder holds at most the frame cap, the partial frame is a counted error at the end
    of the capture, and another connection's exchange decodes meanwhile."""
    declared = encode(req(1, body=bytes(1 << 20)))
    conv_stuck = [(True, declared[i:i + 1000]) for i in range(0, 600_000, 1000)]
    path = capture(tmp_path, [conv_stuck, good_exchange(2)])
    a = analyze([path])
    assert_counted(a, "incomplete frame at end of stream")
    decoded(a, 2)
    # garbage forever on a RocketMQ port: one counted error for the whole span, not one per byte
    rng = random.Random(10)
    path = capture(tmp_path, [[(True, rng.randbytes(1000)) for _ in range(300)], good_exchange(3)], name="g.pcap")
    a = analyze([path])
    assert a.stats.counter("request_decoding_error") == 2, a.errors  # the bad first prefix, then the lost span
    assert any("no frame found before end of stream" in e for e in a.errors), a.errors
    decoded(a, 3)


def test_stream_decoder_buffer_stays_under_the_cap_when_a_frame_never_completes() -> None:
    dec = StreamDecoder(max_frame=1 << 20)
    declared = encode(req(1, body=bytes((1 << 20) - 200)))
    peak = 0
    for i in range(0, len(declared) - 1, 997):
        assert dec.feed(declared[i:min(i + 997, len(declared) - 1)]) == []
        peak = max(peak, dec.buffered)
    assert peak == len(declared) - 1 < 1 << 20
    (ev,) = dec.close()
    assert type(ev) is DecodeError and ev.reason == "incomplete frame at end of stream"
    assert ev.length == len(declared) - 1


# ------------------------------------------------------------------ capture files

def test_truncated_capture_keeps_what_was_read_and_next_file_decodes(tmp_path) -> None:
    whole = Path(capture(tmp_path, [good_exchange(1), good_exchange(2)], name="w.pcap")).read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(whole[:-30])
    nxt = capture(tmp_path, [good_exchange(3)], name="next.pcap")
    a = analyze([str(cut), nxt])
    assert len([e for e in a.errors if "truncated" in e and "cut.pcap" in e]) == 1
    decoded(a, 1)
    decoded(a, 3)


def _records(data: bytes) -> list[int]:
    """File offsets of the records of a little-endian classic pcap."""
    offs, off = [], 24
    while off < len(data):
        offs.append(off)
        off += 16 + struct.unpack_from("<I", data, off + 8)[0]
    return offs


@pytest.mark.parametrize("field", ["caplen", "garbage"])
def test_corrupt_pcap_record_resumes_at_the_next_record(tmp_path, field: str) -> None:
    """A record header in the middle of the file is corrupt: counted (one error line
    naming the byte offset), the reader resynchronises on the next plausible record, and
    the exchange after it decodes."""
    data = bytearray(Path(capture(tmp_path, [good_exchange(1), good_exchange(2)], name="w.pcap")).read_bytes())
    recs = _records(bytes(data))
    victim = recs[len(recs) // 2 + 2]  # in the second connection's handshake/first exchange area
    if field == "caplen":
        struct.pack_into("<I", data, victim + 8, 0x7FFFFFF0)
    else:
        data[victim:victim + 16] = b"\xde\xad\xbe\xef" * 4
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(bytes(data[:recs[-4]]) + bytes(data[recs[-4]:]))
    a = analyze([str(bad)])
    errs = [e for e in a.errors if "bad.pcap" in e]
    assert len(errs) == 1 and "corrupt" in errs[0] and str(victim) in errs[0], a.errors
    assert a.packets == len(recs) - 1
    decoded(a, 1)


def test_corrupt_pcapng_block_resumes_at_the_next_block(tmp_path) -> None:
    path = capture(tmp_path, [good_exchange(1), good_exchange(2)], name="w.pcapng", fmt="pcapng")
    data = bytearray(Path(path).read_bytes())
    offs, off = [], 0
    while off < len(data):
        offs.append(off)
        off += struct.unpack_from("<I", data, off + 4)[0]
    victim = offs[len(offs) // 2 + 1]
    struct.pack_into("<I", data, victim + 4, 0x7FFFFFF0)
    bad = tmp_path / "bad.pcapng"
    bad.write_bytes(bytes(data))
    a = analyze([str(bad)])
    errs = [e for e in a.errors if "bad.pcapng" in e]
    assert len(errs) == 1 and "corrupt" in errs[0] and str(victim) in errs[0], a.errors
    assert a.packets == len(offs) - 2 - 1  # SHB and IDB are not packets; the corrupt block is lost
    decoded(a, 1)
    decoded(a, 2)


def test_corrupt_pcapng_section_header_skips_that_block_only(tmp_path) -> None:
    """A Section Header Block declaring 0xFFFFFFFC bytes in the middle of a 2000-exchange
    capture: its length is checked before it resets the section (byte order, interface
    table), so it is one error line and a skipped block, and every exchange decodes."""
    convs = [[part for k in range(100) for part in good_exchange(100 * c + k)] for c in range(20)]
    path = capture(tmp_path, convs, name="w.pcapng", fmt="pcapng")
    data = Path(path).read_bytes()
    offs, off = [], 0
    while off < len(data):
        offs.append(off)
        off += struct.unpack_from("<I", data, off + 4)[0]
    cut = offs[len(offs) // 2]
    bogus = struct.pack("<IIIHHqI", 0x0A0D0D0A, 0xFFFFFFFC, 0x1A2B3C4D, 1, 0, -1, 28)
    bad = tmp_path / "bad.pcapng"
    bad.write_bytes(data[:cut] + bogus + data[cut:])
    a = analyze([str(bad)])
    assert a.errors == [f"{bad}: corrupt pcapng block (length {0xFFFFFFFC}) at byte {cut}; "
                        f"skipped {len(bogus)} bytes, resumed at byte {cut + len(bogus)}"]
    assert a.packets == len(offs) - 2
    assert len(a.exchanges) == 2000 and all(x.status == ANSWERED for x in a.exchanges)
    assert a.stats.counter("request_decoding_error") == 0


# ------------------------------------------------------------------ the user's view: one clear line

def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rmqsniff", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def test_cli_errors_are_one_line_each_without_traceback(tmp_path) -> None:
    garbage = tmp_path / "garbage.pcap"
    garbage.write_bytes(b"\x00" * 100)
    whole = Path(capture(tmp_path, [good_exchange(1)], name="w.pcap")).read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(whole[:-10])
    hostile = capture(tmp_path, [[(True, struct.pack(">iI", 2**31 - 1, 16) + encode(req(1)))]], name="hostile.pcap")
    cases = [
        (["stats", str(tmp_path / "missing.pcap")], "missing.pcap"),
        (["stats", str(garbage)], "not a pcap"),
        (["stats", str(cut)], "truncated"),
        (["stats", hostile], "frame length exceeds maximum"),
        (["read", "-Y", "code == ((", hostile], "bad filter"),
    ]
    for args, what in cases:
        r = run_cli(*args)
        assert "Traceback" not in r.stderr, (args, r.stderr)
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert lines and all(ln.startswith(("rmqsniff: ", "    ")) for ln in lines), (args, r.stderr)
        assert any(what in ln for ln in lines), (args, r.stderr)


def test_cli_repeated_problems_are_one_line_per_kind_with_counts(tmp_path) -> None:
    """Three connections each opening with a frame over the size cap, plus a gRPC header
    block over the limit: one line per kind, with the count and where it first happened."""
    bad = [[(True, struct.pack(">iI", 2**31 - 1, 16) + encode(req(1)))] for _ in range(3)]
    remoting = capture(tmp_path, bad, name="r.pcap")
    r = run_cli("stats", remoting)
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("rmqsniff: 3× frame length exceeds maximum"), r.stderr
    assert lines[0].endswith(f"(first: {BROKER_LABEL} stream offset 0)"), r.stderr

    from rmqsniff.cli import summarise_problems

    assert summarise_problems(["a.pcap: cannot open", "b.pcap: cannot open", "x:1 -> y:2 stream 3: grpc: e",
                               "x:5 -> y:2 stream 1: grpc: e", "x:1 -> y:2 stream 5: grpc: f"]) == [
        "a.pcap: cannot open", "b.pcap: cannot open", "2× grpc: e (first: x:1 -> y:2 stream 3)",
        "x:1 -> y:2 stream 5: grpc: f"]


def test_reader_on_a_pipe_like_object_never_raises() -> None:
    from rmqsniff.sources.pcapfile import CaptureReader

    r = CaptureReader(io.BytesIO(b"\xd4\xc3\xb2\xa1" + b"\x02\x00\x04\x00" + b"\0" * 16 + b"\xff" * 40), "x")
    assert list(r) == [] and len(r.errors) == 1 and "\n" not in r.errors[0]
