"""Tests for the remoting frame codec and the stream decoder."""
from __future__ import annotations

import json
import struct

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dissectors.remoting import (
    JSON,
    ROCKETMQ,
    DecodeError,
    Frame,
    FrameError,
    RemotingCommand,
    Resync,
    StreamDecoder,
    decode_frame,
    encode,
)
from dissectors.remoting.codes import TRUNCATED_REQUEST_CODES

# --------------------------------------------------------------------- helpers


def raw_frame(header: bytes, body: bytes = b"", stype: int = JSON) -> bytes:
    """A frame built by hand from a header (independent of ``encode``)."""
    return struct.pack(">iI", 4 + len(header) + len(body), (stype << 24) | len(header)) + header + body


def binary_header(code: int, lang: int, version: int, opaque: int, flag: int,
                  remark: bytes, entries: list[tuple[bytes, bytes]]) -> bytes:
    """A ROCKETMQ header built by hand per the §1.4 layout."""
    ext = b"".join(struct.pack(">h", len(k)) + k + struct.pack(">i", len(v)) + v for k, v in entries)
    return (struct.pack(">hbhii", code, lang, version, opaque, flag) + struct.pack(">i", len(remark))
            + remark + struct.pack(">i", len(ext)) + ext)


def frames_of(events):
    return [e for e in events if isinstance(e, Frame)]


def commands_of(events):
    return [e.command for e in events if isinstance(e, Frame)]


def decode_stream(data: bytes, **kw) -> list:
    dec = StreamDecoder(**kw)
    return dec.feed(data) + dec.close()


def covered(events) -> list[tuple[int, int]]:
    """Spans [start, end) the events account for, in order."""
    spans = []
    for e in events:
        if isinstance(e, Frame):
            spans.append((e.offset, e.offset + e.length))
        elif isinstance(e, DecodeError):
            if e.length:
                spans.append((e.offset, e.offset + e.length))
        elif isinstance(e, Resync):
            spans.append((e.offset - e.skipped, e.offset))
    return spans


def assert_partition(events, total: int) -> None:
    """Every stream byte is in exactly one event span."""
    pos = 0
    for start, end in covered(events):
        assert start == pos, (start, pos, events)
        assert end >= start
        pos = end
    assert pos == total


# --------------------------------------------------------------------- representative commands

V2_SEND_EXT = {"a": "please_rename_unique_group_name", "b": "TopicTest", "c": "TBW102", "d": "4",
               "e": "1", "f": "0", "g": "1623318239471", "h": "0",
               "i": "UNIQ_KEY\x01C0A8000100002A9F0000000000001000\x02WAIT\x01true\x02TAGS\x01TagA\x02",
               "j": "0", "k": "false", "m": "false"}

HEARTBEAT_BODY = json.dumps({
    "clientID": "10.0.0.5@12345",
    "consumerDataSet": [{"consumeFromWhere": "CONSUME_FROM_LAST_OFFSET", "consumeType": "CONSUME_PASSIVELY",
                         "groupName": "g1", "messageModel": "CLUSTERING",
                         "subscriptionDataSet": [{"classFilterMode": False, "codeSet": [], "expressionType": "TAG",
                                                  "subString": "*", "subVersion": 1, "tagsSet": [],
                                                  "topic": "TopicTest"}], "unitMode": False}],
    "producerDataSet": [{"groupName": "CLIENT_INNER_PRODUCER"}]}, separators=(",", ":")).encode()

REPRESENTATIVE = [
    RemotingCommand(code=10, opaque=1, version=373, ext={"producerGroup": "pg", "topic": "TopicTest",
                    "defaultTopic": "TBW102", "defaultTopicQueueNums": "4", "queueId": "0", "sysFlag": "0",
                    "bornTimestamp": "1623318239471", "flag": "0"}, body=b"Hello RocketMQ"),
    RemotingCommand(code=310, opaque=2, version=479, ext=V2_SEND_EXT, body=b"hello"),
    RemotingCommand(code=320, opaque=3, ext={**V2_SEND_EXT, "m": "true"}, body=bytes(range(256))),
    RemotingCommand(code=0, flag=1, opaque=3, ext={"msgId": "7F00000100002A9F0000000000001000",
                    "queueId": "1", "queueOffset": "42", "MSG_REGION": "DefaultRegion", "TRACE_ON": "true"}),
    RemotingCommand(code=11, opaque=4, ext={"consumerGroup": "cg", "topic": "TopicTest", "queueId": "0",
                    "queueOffset": "0", "maxMsgNums": "32", "sysFlag": "3", "commitOffset": "0",
                    "suspendTimeoutMillis": "15000", "subVersion": "1", "expressionType": "TAG"}),
    RemotingCommand(code=19, flag=1, opaque=4, remark="OFFSET_OVERFLOW_ONE",
                    ext={"suggestWhichBrokerId": "0", "nextBeginOffset": "0", "minOffset": "0", "maxOffset": "0"}),
    RemotingCommand(code=200050, opaque=5, ext={"consumerGroup": "cg", "topic": "t", "queueId": "-1",
                    "maxMsgNums": "32", "invisibleTime": "60000", "pollTime": "20000",
                    "bornTime": "1700000000000", "initMode": "0", "order": "false"}),
    RemotingCommand(code=200051, opaque=6, ext={"consumerGroup": "cg", "topic": "t", "queueId": "6",
                    "extraInfo": "147 1587386521445 50000 5 0 broker-a 6 147", "offset": "147"}),
    RemotingCommand(code=200053, opaque=7, ext={"consumerGroup": "cg", "topic": "t", "queueId": "6",
                    "extraInfo": "147 1587386521445 50000 5 0 broker-a 6 147", "offset": "147",
                    "invisibleTime": "1000"}),
    RemotingCommand(code=200151, opaque=8, body=b'{"acks":[],"brokerName":"broker-a"}'),
    RemotingCommand(code=34, opaque=1575, language="DOTNET", remark="HEART_BEAT", body=HEARTBEAT_BODY),
    RemotingCommand(code=105, opaque=0, version=373, ext={"topic": "TopicTest"}),
    RemotingCommand(code=103, opaque=9, ext={"brokerName": "broker-a", "brokerAddr": "10.0.0.1:10911",
                    "clusterName": "DefaultCluster", "haServerAddr": "10.0.0.1:10912", "brokerId": "0",
                    "compressed": "false", "bodyCrc32": "0"}, body=b'{"filterServerList":[]}'),
    RemotingCommand(code=37, flag=2, opaque=10, remark="local exception",
                    ext={"producerGroup": "pg", "tranStateTableOffset": "5", "commitLogOffset": "4096",
                         "commitOrRollback": "8", "fromTransactionCheck": "false", "msgId": "ABC"}),
    RemotingCommand(code=39, flag=2, opaque=11, ext={"tranStateTableOffset": "5", "commitLogOffset": "4096",
                    "msgId": "ABC"}, body=b"\x00" * 100),
    RemotingCommand(code=3, flag=1, opaque=12, language="GO", remark=" request type 999 not supported", ext={}),
    RemotingCommand(code=1, flag=1, opaque=-13, remark="系统错误 – unicode ✓", ext={}),
]


def binary_expectation(cmd: RemotingCommand) -> RemotingCommand:
    """What a ROCKETMQ round trip gives back: empty ext -> None, empty remark -> None,
    truncated POP-family request codes restored with wire_code set."""
    exp = RemotingCommand(code=cmd.code, flag=cmd.flag, opaque=cmd.opaque, language=cmd.language,
                          version=cmd.version, remark=cmd.remark or None, ext=cmd.ext or None,
                          body=cmd.body or None, serialize=ROCKETMQ)
    if cmd.code > 0x7FFF and not cmd.flag & 1:
        exp.wire_code = cmd.code & 0xFFFF
        exp.code_truncated = True
    return exp


@pytest.mark.parametrize("cmd", REPRESENTATIVE, ids=lambda c: f"code{c.code}")
def test_round_trip_json(cmd):
    got = decode_frame(encode(cmd))
    assert got == cmd
    assert got.frame_len == len(encode(cmd))


@pytest.mark.parametrize("cmd", REPRESENTATIVE, ids=lambda c: f"code{c.code}")
def test_round_trip_binary(cmd):
    bcmd = RemotingCommand(code=cmd.code, flag=cmd.flag, opaque=cmd.opaque, language=cmd.language,
                           version=cmd.version, remark=cmd.remark, ext=cmd.ext, body=cmd.body,
                           serialize=ROCKETMQ)
    data = encode(bcmd)
    got = decode_frame(data)
    assert got == binary_expectation(bcmd)
    assert got.frame_len == len(data)
    assert got.header_len == struct.unpack(">I", data[4:8])[0] & 0xFFFFFF


# --------------------------------------------------------------------- hypothesis round trips

int32 = st.integers(-2**31, 2**31 - 1)
text = st.text(max_size=40)
ext_maps = st.dictionaries(st.text(max_size=12), st.text(max_size=30), max_size=6)
languages = st.sampled_from(["JAVA", "CPP", "DOTNET", "PYTHON", "GO", "RUST", "NODE_JS", "OTHER"])
bodies = st.none() | st.binary(min_size=1, max_size=200)


@settings(max_examples=150, deadline=None)
@given(code=int32, flag=int32, opaque=int32, language=languages, version=int32,
       remark=st.none() | text, ext=st.none() | ext_maps, body=bodies)
def test_round_trip_json_random(code, flag, opaque, language, version, remark, ext, body):
    cmd = RemotingCommand(code=code, flag=flag, opaque=opaque, language=language, version=version,
                          remark=remark, ext=ext, body=body, serialize=JSON)
    assert decode_frame(encode(cmd)) == cmd


@settings(max_examples=150, deadline=None)
@given(code=st.integers(-2**15, 2**15 - 1) | st.sampled_from([200050, 200051, 200052, 200053, 200054,
                                                                 200055, 200056, 200151]),
       flag=int32, opaque=int32, language=languages, version=st.integers(-2**15, 2**15 - 1),
       remark=st.none() | st.text(min_size=1, max_size=40),
       ext=st.none() | ext_maps.filter(bool), body=bodies)
@example(code=3442, flag=0, opaque=0, language="JAVA", version=0, remark=None, ext=None, body=None)
def test_round_trip_binary_random(code, flag, opaque, language, version, remark, ext, body):
    if code > 0x7FFF and flag & 1:
        flag &= ~1  # truncated codes only exist for requests
    if code in TRUNCATED_REQUEST_CODES and not flag & 1:
        code = TRUNCATED_REQUEST_CODES[code]  # 3442..3543 in a binary request is read as 200050..200151 (by design)
    cmd = RemotingCommand(code=code, flag=flag, opaque=opaque, language=language, version=version,
                          remark=remark, ext=ext, body=body, serialize=ROCKETMQ)
    assert decode_frame(encode(cmd)) == binary_expectation(cmd)


# --------------------------------------------------------------------- byte exactness

def test_json_header_matches_java_example():
    expected = (b'{"code":105,"extFields":{"topic":"TopicTest"},"flag":0,"language":"JAVA",'
                b'"opaque":0,"serializeTypeCurrentRPC":"JSON","version":373}')
    data = encode(RemotingCommand(code=105, version=373, ext={"topic": "TopicTest"}))
    assert data == struct.pack(">iI", 4 + len(expected), len(expected)) + expected


def test_json_header_omits_null_ext_and_remark_but_keeps_empty_map():
    hdr = encode(RemotingCommand(code=0, flag=1, opaque=7))[8:]
    assert hdr == b'{"code":0,"flag":1,"language":"JAVA","opaque":7,"serializeTypeCurrentRPC":"JSON","version":0}'
    hdr = encode(RemotingCommand(code=38, flag=1, ext={}, remark="x"))[8:]
    assert b'"extFields":{},' in hdr and b'"remark":"x",' in hdr


def test_binary_layout_offsets():
    cmd = RemotingCommand(code=200050, flag=2, opaque=-7, language="GO", version=479, remark="rk",
                          ext={"topic": "T", "queueId": "-1"}, body=b"BODY", serialize=ROCKETMQ)
    data = encode(cmd)
    length, mark = struct.unpack_from(">iI", data, 0)
    assert length == len(data) - 4
    assert mark >> 24 == 1
    hlen = mark & 0xFFFFFF
    h = data[8:8 + hlen]
    assert struct.unpack_from(">h", h, 0)[0] == 3442          # truncated code
    assert h[2] == 9                                          # GO
    assert struct.unpack_from(">h", h, 3)[0] == 479
    assert struct.unpack_from(">i", h, 5)[0] == -7
    assert struct.unpack_from(">i", h, 9)[0] == 2
    assert struct.unpack_from(">i", h, 13)[0] == 2 and h[17:19] == b"rk"
    elen = struct.unpack_from(">i", h, 19)[0]
    assert hlen == 21 + 2 + elen
    assert h[23:] == (b"\x00\x05topic" + b"\x00\x00\x00\x01T" + b"\x00\x07queueId" + b"\x00\x00\x00\x02-1")
    assert data[8 + hlen:] == b"BODY"


def test_binary_response_with_truncated_looking_code_is_not_restored():
    hdr = binary_header(3442, 0, 0, 1, 1, b"", [])
    got = decode_frame(raw_frame(hdr, stype=ROCKETMQ))
    assert got.code == 3442 and not got.code_truncated and got.wire_code is None


# --------------------------------------------------------------------- JSON tolerance

def test_raw_control_chars_in_json_string():
    # NewLife leaves the 0x01/0x02 separators unescaped inside JSON strings.
    hdr = (b'{"code":310,"extFields":{"a":"g","b":"T","i":"TAGS\x01A\x02WAIT\x01true\x02"},'
           b'"language":"DOTNET","opaque":1576,"remark":"SEND_MESSAGE_V2","serializeTypeCurrentRPC":"JSON","version":0}')
    got = decode_frame(raw_frame(hdr, b"body"))
    assert got.ext is not None
    assert got.ext["i"] == "TAGS\x01A\x02WAIT\x01true\x02"
    assert got.flag == 0  # NewLife omits flag
    assert (got.code, got.opaque, got.language, got.body) == (310, 1576, "DOTNET", b"body")


def test_numbers_and_booleans_in_ext_become_text():
    hdr = b'{"code":105,"extFields":{"topic":"T","queueId":3,"flag":true,"x":false,"d":0.5},"opaque":1}'
    got = decode_frame(raw_frame(hdr))
    assert got.ext == {"topic": "T", "queueId": "3", "flag": "true", "x": "false", "d": "0.5"}


def test_missing_keys_get_java_defaults():
    got = decode_frame(raw_frame(b"{}"))
    assert (got.code, got.flag, got.version, got.language, got.opaque, got.remark, got.ext) == \
        (0, 0, 0, "JAVA", 0, None, None)


def test_go_style_key_order_and_empty_remark():
    hdr = b'{"code":105,"language":"GO","version":317,"opaque":1,"flag":0,"remark":"","extFields":{"topic":"T"}}'
    got = decode_frame(raw_frame(hdr))
    assert got == RemotingCommand(code=105, language="GO", version=317, opaque=1, remark="", ext={"topic": "T"})


def test_unquoted_keys_fall_back_to_tolerant_parser():
    hdr = b'{code:105,flag:0,opaque:2,extFields:{topic:"T"}}'
    try:
        got = decode_frame(raw_frame(hdr))
    except FrameError as e:  # acceptable only if the tolerant reader cannot parse it either
        assert e.reason == "bad JSON header"
    else:
        assert (got.code, got.opaque, got.ext) == (105, 2, {"topic": "T"})


@pytest.mark.parametrize("hdr,reason", [
    (b"not json", "bad JSON header"),
    (b"[1,2]", "JSON header is not an object"),
    (b'{"code":"abc"}', "JSON header field code is not an integer"),
    (b'{"code":1,"extFields":[1]}', "JSON header extFields is not an object"),
])
def test_bad_json_headers_raise_frame_error(hdr, reason):
    with pytest.raises(FrameError) as ei:
        decode_frame(raw_frame(hdr))
    assert ei.value.reason == reason
    assert isinstance(ei.value, ValueError)


# --------------------------------------------------------------------- binary decoding details

def test_binary_duplicate_keys_last_wins_and_empty_value():
    hdr = binary_header(310, 0, 373, 5, 0, b"", [(b"a", b"first"), (b"b", b""), (b"a", b"last")])
    got = decode_frame(raw_frame(hdr, stype=ROCKETMQ))
    assert got.ext == {"a": "last", "b": ""}
    assert got.remark is None and got.body is None


def test_binary_unknown_language_and_invalid_utf8():
    hdr = binary_header(10, 99, 0, 1, 0, b"\xff\xfebad", [(b"k\xc3", b"\x80v")])
    got = decode_frame(raw_frame(hdr, stype=ROCKETMQ))
    assert got.language == "UNKNOWN(99)"
    assert got.remark is not None and got.ext is not None
    assert got.remark.endswith("bad") and "\ufffd" in got.remark
    assert list(got.ext.values())[0].endswith("v")


@pytest.mark.parametrize("mutate,reason", [
    (lambda h: h[:13] + struct.pack(">i", 1000) + h[17:], "bad remark length"),
    (lambda h: h[:17] + struct.pack(">i", -1) + h[21:], "bad extFields length"),
    (lambda h: h[:17] + struct.pack(">i", 500) + h[21:], "bad extFields length"),
    (lambda h: h[:21] + struct.pack(">h", -2) + h[23:], "bad extFields key length"),
    (lambda h: h[:10], "binary header shorter than 21 bytes"),
])
def test_binary_limits(mutate, reason):
    hdr = binary_header(10, 0, 0, 1, 0, b"", [(b"key", b"value")])
    with pytest.raises(FrameError) as ei:
        decode_frame(raw_frame(mutate(hdr), stype=ROCKETMQ))
    assert ei.value.reason == reason


def test_decode_frame_checks_prefix():
    good = encode(RemotingCommand(code=105))
    with pytest.raises(FrameError, match="length field"):
        decode_frame(good + b"x")
    with pytest.raises(FrameError, match="shorter than 8"):
        decode_frame(good[:5])
    with pytest.raises(FrameError, match="serialize type"):
        decode_frame(good[:4] + b"\x07" + good[5:])
    bad_h = struct.pack(">iI", 10, 500) + b"{}" + b"\x00" * 4
    with pytest.raises(FrameError, match="header length"):
        decode_frame(bad_h)


def test_decode_frame_accepts_memoryview_and_body_none_when_empty():
    data = encode(RemotingCommand(code=34, body=b""))
    got = decode_frame(memoryview(data))
    assert got.body is None


# --------------------------------------------------------------------- StreamDecoder

STREAM_CMDS = [REPRESENTATIVE[1], REPRESENTATIVE[3], REPRESENTATIVE[10],
               RemotingCommand(code=200050, opaque=99, ext={"topic": "t"}, serialize=ROCKETMQ),
               REPRESENTATIVE[16]]


def stream_bytes() -> tuple[bytes, list[RemotingCommand]]:
    frames = [encode(c) for c in STREAM_CMDS]
    return b"".join(frames), [decode_frame(f) for f in frames]


def test_several_frames_in_one_feed():
    data, expected = stream_bytes()
    dec = StreamDecoder()
    events = dec.feed(data)
    assert commands_of(events) == expected
    assert [e.offset for e in events] == [sum(len(encode(c)) for c in STREAM_CMDS[:i]) for i in range(5)]
    assert dec.buffered == 0 and dec.offset == len(data)
    assert dec.close() == []


def test_split_at_every_byte_boundary():
    data, expected = stream_bytes()
    for cut in range(1, len(data)):
        dec = StreamDecoder()
        events = dec.feed(data[:cut]) + dec.feed(data[cut:]) + dec.close()
        assert commands_of(events) == expected, cut
        assert all(isinstance(e, Frame) for e in events)


def test_byte_by_byte_and_bytearray_input():
    data, expected = stream_bytes()
    dec = StreamDecoder()
    events = []
    for i in range(len(data)):
        events += dec.feed(bytearray(data[i:i + 1]))
        assert dec.buffered <= max(len(encode(c)) for c in STREAM_CMDS)
    assert commands_of(events) == expected


def test_caller_buffer_mutation_does_not_corrupt_pending_frame():
    data, expected = stream_bytes()
    buf = bytearray(data[:50])
    dec = StreamDecoder()
    events = dec.feed(buf)
    buf[:] = b"\xee" * len(buf)
    events += dec.feed(data[50:])
    assert commands_of(events) == expected


def test_garbage_between_frames_is_reported_and_resynced():
    data, expected = stream_bytes()
    first = encode(STREAM_CMDS[0])
    garbage = b"\xff\xff\xff\xffGARBAGE-GARBAGE\x00\x01"
    stream = first + garbage + data[len(first):]
    events = decode_stream(stream)
    assert commands_of(events) == expected
    errors = [e for e in events if isinstance(e, DecodeError)]
    resyncs = [e for e in events if isinstance(e, Resync)]
    assert len(errors) == 1 and errors[0].offset == len(first) and errors[0].reason == "negative frame length"
    assert resyncs == [Resync(offset=len(first) + len(garbage), skipped=len(garbage))]
    assert_partition(events, len(stream))


@pytest.mark.parametrize("prefix,reason", [
    (struct.pack(">iI", 2**31 - 1, 10), "frame length exceeds maximum"),
    (struct.pack(">iI", -5, 10), "negative frame length"),
    (struct.pack(">iI", 100, 500), "header length exceeds frame length"),
    (struct.pack(">iI", 100, (7 << 24) | 10), "unknown serialize type"),
    (struct.pack(">iI", 5, 1), "frame length too small"),
])
def test_absurd_prefix_loses_framing_then_resyncs(prefix, reason):
    data, expected = stream_bytes()
    stream = prefix + data
    events = decode_stream(stream)
    assert isinstance(events[0], DecodeError) and events[0].reason == reason and events[0].offset == 0
    assert events[1] == Resync(offset=len(prefix), skipped=len(prefix))
    assert commands_of(events) == expected
    assert_partition(events, len(stream))


def test_complete_frame_with_bad_header_keeps_framing():
    data, expected = stream_bytes()
    bad = [raw_frame(b"{not json}"), raw_frame(b"", b"only-body"),
           raw_frame(binary_header(10, 0, 0, 0, 0, b"", [])[:15], b"0123456789", stype=ROCKETMQ),
           raw_frame(b'{"code":1,"remark":"\xff\xfe"}')]
    stream = b"".join(bad) + data
    events = decode_stream(stream)
    kinds = [type(e).__name__ for e in events]
    assert kinds[:3] == ["DecodeError"] * 3
    assert not any(isinstance(e, Resync) for e in events)
    assert [e.length for e in events[:3]] == [len(b) for b in bad[:3]]
    # invalid UTF-8 in a JSON header is tolerated (not an error)
    assert isinstance(events[3], Frame) and events[3].command.code == 1
    assert commands_of(events)[1:] == expected
    assert_partition(events, len(stream))


def test_gap_mid_frame_reports_partial_and_finds_next_frame():
    data, expected = stream_bytes()
    f0 = encode(STREAM_CMDS[0])
    dec = StreamDecoder()
    events = dec.feed(f0[:40])
    assert events == []
    events += dec.gap(30)                     # bytes 40..69 of the first frame lost
    assert events == [DecodeError("frame truncated by capture gap", 0, 70)]
    events += dec.feed(data[70:])
    events += dec.close()
    assert events[1] == Resync(offset=len(f0), skipped=len(f0) - 70)
    assert commands_of(events) == expected[1:]
    assert dec.offset == len(data)
    assert_partition(events, len(data))


def test_gap_longer_than_frame_rest_resyncs():
    data, expected = stream_bytes()
    f0, f1 = encode(STREAM_CMDS[0]), encode(STREAM_CMDS[1])
    dec = StreamDecoder()
    events = dec.feed(data[:20])
    lost = len(f0) - 20 + 15                 # the rest of frame 0 and 15 bytes of frame 1
    events += dec.gap(lost)
    events += dec.feed(data[20 + lost:]) + dec.close()
    assert events[0] == DecodeError("frame truncated by capture gap", 0, len(f0))
    assert events[1] == Resync(offset=len(f0) + len(f1), skipped=len(f1))
    assert commands_of(events) == expected[2:]
    assert_partition(events, len(data))


def test_stream_ending_inside_a_gap_truncated_frame():
    big = encode(RemotingCommand(code=0, flag=1, body=b"q" * 5000))
    dec = StreamDecoder()
    events = dec.feed(big[:100]) + dec.gap(100) + dec.feed(big[200:1000]) + dec.close()
    assert events == [DecodeError("frame truncated by capture gap", 0, 200),
                      DecodeError("no frame found before end of stream", 200, 800)]
    assert_partition(events, 1000)


def test_gap_with_partial_prefix_and_at_boundary():
    data, expected = stream_bytes()
    f0 = encode(STREAM_CMDS[0])
    dec = StreamDecoder()
    events = dec.feed(data[:3]) + dec.gap(len(f0) - 3) + dec.feed(data[len(f0):]) + dec.close()
    assert events[0] == DecodeError("frame truncated by capture gap", 0, 3)
    assert events[1] == Resync(offset=len(f0), skipped=len(f0) - 3)
    assert commands_of(events) == expected[1:]
    dec = StreamDecoder()
    events = dec.feed(f0) + dec.gap(0) + dec.gap(7) + dec.feed(data[len(f0) + 7:]) + dec.close()
    assert isinstance(events[0], Frame)
    assert isinstance(events[1], Resync) and events[1].skipped >= 7
    assert_partition(events, len(data))


def test_start_in_resync_mid_frame():
    data, expected = stream_bytes()
    f0 = encode(STREAM_CMDS[0])
    for start in (1, 5, 9, 30, len(f0) - 1):
        events = decode_stream(data[start:], start_in_resync=True)
        assert events[0] == Resync(offset=len(f0) - start, skipped=len(f0) - start), start
        assert commands_of(events) == expected[1:]
        assert_partition(events, len(data) - start)


def test_start_in_resync_at_frame_start_emits_no_resync():
    data, expected = stream_bytes()
    events = decode_stream(data, start_in_resync=True)
    assert all(isinstance(e, Frame) for e in events)
    assert commands_of(events) == expected


def test_resync_rejects_candidate_whose_header_fails():
    data, expected = stream_bytes()
    fake = raw_frame(b'{"nope')  # plausible prefix and '{"', but not JSON
    stream = b"\xaa" * 9 + fake + data
    events = decode_stream(stream, start_in_resync=True)
    assert events[0] == Resync(offset=9 + len(fake), skipped=9 + len(fake))
    assert commands_of(events) == expected


def test_close_with_partial_frame():
    data, _ = stream_bytes()
    f0 = encode(STREAM_CMDS[0])
    dec = StreamDecoder()
    events = dec.feed(data[:len(f0) + 10])
    assert len(events) == 1 and dec.buffered == 10
    assert dec.close() == [DecodeError("incomplete frame at end of stream", len(f0), 10)]
    assert dec.buffered == 0


def test_close_in_resync_reports_unsynchronised_bytes():
    junk = b"\x01\x02\x03 plain garbage with no frame"
    events = decode_stream(junk, start_in_resync=True)
    assert events == [DecodeError("no frame found before end of stream", 0, len(junk))]


def test_garbage_memory_is_bounded():
    dec = StreamDecoder(start_in_resync=True)
    for _ in range(50):
        assert dec.feed(b"\x00" * 10000 + b"x{" * 1000) == []
        assert dec.buffered < 32
    data, expected = stream_bytes()
    events = dec.feed(data)
    assert events[0] == Resync(offset=50 * 12000, skipped=50 * 12000)
    assert commands_of(events) == expected


def test_partial_frame_never_holds_more_than_declared():
    big = encode(RemotingCommand(code=0, flag=1, body=b"z" * 100000))
    dec = StreamDecoder()
    events = []
    for i in range(0, len(big) + 37, 4096):
        events += dec.feed((big + encode(REPRESENTATIVE[11]))[i:i + 4096])
        assert dec.buffered <= len(big) + 4096
    assert [c.body_len for c in commands_of(events)] == [100000, 0]


def test_max_frame_is_honoured():
    f = encode(RemotingCommand(code=0, flag=1, body=b"z" * 2000))
    events = decode_stream(f, max_frame=1024)
    assert events[0].reason == "frame length exceeds maximum"
    assert not frames_of(events)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cuts=st.lists(st.integers(0, 600), max_size=8), garbage=st.binary(max_size=60),
       where=st.integers(0, 4))
def test_random_chunking_and_garbage_keep_accounting(cuts, garbage, where):
    frames = [encode(c) for c in STREAM_CMDS]
    stream = b"".join(frames[:where]) + garbage + b"".join(frames[where:])
    dec = StreamDecoder()
    events = []
    pos = 0
    for cut in sorted(cuts):
        events += dec.feed(stream[pos:cut])
        pos = max(pos, cut)
    events += dec.feed(stream[pos:]) + dec.close()
    assert_partition(events, len(stream))
    got = commands_of(events)
    # frames before the garbage always decode; at least the last frame is recovered after it
    assert got[:where] == [decode_frame(f) for f in frames[:where]]
    if where < len(frames):
        assert got[-1] == decode_frame(frames[-1])


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pieces=st.lists(st.one_of(st.sampled_from(range(len(STREAM_CMDS))).map(lambda i: encode(STREAM_CMDS[i])),
                                 st.binary(max_size=40)), min_size=1, max_size=8),
       ops=st.lists(st.tuples(st.booleans(), st.integers(1, 80)), min_size=1, max_size=40),
       start_in_resync=st.booleans(), max_frame=st.sampled_from([1 << 20, 1 << 26]))
def test_gaps_and_garbage_never_crash_and_account_every_byte(pieces, ops, start_in_resync, max_frame):
    stream = b"".join(pieces)
    dec = StreamDecoder(max_frame=max_frame, start_in_resync=start_in_resync)
    events = []
    pos = 0
    for is_gap, n in ops:
        events += dec.gap(n) if is_gap else dec.feed(stream[pos:pos + n])
        pos += n
    events += dec.feed(stream[pos:]) + dec.close()
    assert dec.buffered == 0
    assert_partition(events, dec.offset)


@settings(max_examples=400, deadline=None)
@given(pairs=st.lists(st.tuples(st.binary(max_size=6), st.binary(max_size=8)), max_size=5),
       damage=st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=2))
def test_the_peek_reads_binary_extfields_as_the_decoder_does(pairs, damage):
    """``_peek_binary_ext`` gives the decoder's map or None, never another map, and takes
    every well-formed ASCII block; ``_check_binary_ext`` (responses) accepts exactly the
    blocks the decoder reads without error."""
    import struct as _struct

    from dissectors.remoting.frame import _binary_ext
    from dissectors.remoting.stream import _check_binary_ext, _peek_binary_ext

    buf = bytearray(b"".join(_struct.pack(">H", len(k)) + k + _struct.pack(">I", len(v)) + v for k, v in pairs))
    for at, byte in damage:
        if buf:
            buf[at % len(buf)] = byte
    blk = bytes(buf)
    try:
        full = _binary_ext(blk, 0, len(blk), 0)
    except FrameError:
        full = None
    fast = _peek_binary_ext(blk, 0, len(blk))
    if fast is not None:
        assert fast == full
    elif full is not None:
        assert not blk.isascii()
    framed = b"\x00\x07" + blk + b"\x00\x00\x00\x05"  # inside a frame, with bytes on both sides
    assert _check_binary_ext(framed, 2, len(blk)) == (full is not None)


# JSON header pieces for the peek: values the decoder keeps, converts, restores or rejects
_J_INTS = ["0", "1", "-1", "310", "-0", "2147483647", "2147483648", "-2147483648", "-2147483649",
           "9223372036854775807", "9223372036854775808", "18446744073709551616", "-9223372036854775809"]
_J_OTHER = ["1.0", "1e2", "1.5e999", "true", "false", "null", '"7"', '"JAVA"', '""', '"\\u00e9\\u4e2d"',
            '"\\ud800"', '"\\ud83d\\ude00"', '"a\\"b"', '[1,2]', '{}', 'NaN']
_J_TEXT = ['"T"', '"TopicTest"', '"\\u0074opic"', '"\xc3\xa9"', '"\xff"', '"\xed\xa0\x80"', '"a\tb"', '1', 'null',
           'true', '{"x":"y"}']
_J_KEYS = ["code", "flag", "opaque", "version", "language", "remark", "extFields", "serializeTypeCurrentRPC",
           "Code", "co\\u0064e", "OPAQUE", "x"]


@st.composite
def _json_headers(draw) -> bytes:
    def value(usual: list[str]) -> str:  # mostly what clients send, sometimes anything
        return draw(st.sampled_from(usual if draw(st.integers(0, 3)) else _J_INTS + _J_OTHER))

    fields = {"code": value(["310", "11", "0"]), "flag": value(["0", "1", "2"]), "opaque": value(["7", "-1"]),
              "version": value(["479"]), "language": value(['"JAVA"'])}
    if draw(st.booleans()):
        pairs = draw(st.lists(st.tuples(st.sampled_from(["a", "b", "topic", "consumerGroup", "to\\u0070ic", "\xc3\xa9",
                                                            "\xff"]),
                                        st.sampled_from(_J_TEXT[:2] if draw(st.booleans()) else _J_TEXT)),
                              max_size=4))
        fields["extFields"] = "{" + ",".join(f'"{k}":{v}' for k, v in pairs) + "}"
    items = list(fields.items())
    for _ in range(draw(st.integers(0, 3))):  # odd keys and values, duplicates among them
        items.insert(draw(st.integers(0, len(items))),
                     (draw(st.sampled_from(_J_KEYS)), draw(st.sampled_from(_J_INTS + _J_OTHER))))
    if items and draw(st.booleans()):
        del items[draw(st.integers(0, len(items) - 1))]
    doc = ("{" + ",".join(f'"{k}":{v}' for k, v in items) + "}").encode("latin-1")
    for at, byte in draw(st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=2)):
        doc = doc[:at % len(doc)] + bytes([byte]) + doc[at % len(doc) + 1:]
    return doc


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(header=_json_headers())
def test_the_peek_reads_json_headers_as_the_decoder_does(header):
    """``peek_one`` on a JSON frame gives what the decoder decodes without error (code, flag,
    opaque; a request's extFields), or None: never other values, never a frame the decoder
    rejects. The decoder parses with orjson, falling back to a lenient parser; the peek with
    msgspec into typed fields."""
    frame = struct.pack(">iI", 4 + len(header), len(header)) + header
    peeked = StreamDecoder().peek_one(frame, 0, len(frame))
    if peeked is None:
        return
    events = StreamDecoder().feed(frame)
    assert [type(e) for e in events] == [Frame], events
    assert isinstance(events[0], Frame)
    cmd = events[0].command
    assert peeked == (cmd.code, cmd.flag, cmd.opaque, None if cmd.flag & 1 else cmd.ext)


def test_the_peek_takes_the_common_json_headers():
    """... and it does take the headers real clients send."""
    for flag, ext in ((0, {"b": "TopicTest", "a": "PG"}), (1, {"msgId": "X", "queueId": "1"}), (0, None)):
        frame = encode(RemotingCommand(310, flag, 7, ext=ext, serialize=JSON))
        assert StreamDecoder().peek_one(frame, 0, len(frame)) == (310, flag, 7, None if flag & 1 else ext)


def test_a_key_length_java_reads_as_negative_is_refused_by_every_reader():
    """A 32 KiB key: its 16-bit length is negative to Java, so the decoder reports it and
    neither peek reader takes it, although the block's lengths add up."""
    from dissectors.remoting.frame import _binary_ext
    from dissectors.remoting.stream import _check_binary_ext, _peek_binary_ext

    blk = struct.pack(">H", 0x8000) + b"k" * 0x8000 + struct.pack(">I", 1) + b"v"
    with pytest.raises(FrameError):
        _binary_ext(blk, 0, len(blk), 0)
    assert not _check_binary_ext(blk, 0, len(blk))
    assert _peek_binary_ext(blk, 0, len(blk)) is None
    ok = struct.pack(">H", 0x7F7F) + b"k" * 0x7F7F + struct.pack(">I", 1) + b"v"  # (ASCII length bytes)
    assert _check_binary_ext(ok, 0, len(ok)) and _peek_binary_ext(ok, 0, len(ok)) == {"k" * 0x7F7F: "v"}
