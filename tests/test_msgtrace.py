"""RocketMQ message-trace bodies (dissectors/msgtrace.py): every record type in the layouts the
Java client's trace encoder writes (old and new forms), compressed bodies and malformed records.
Real bodies from a client with enableMsgTrace are checked in tests/test_tracectx_real.py."""
from __future__ import annotations

import zlib

from hypothesis import given, settings
from hypothesis import strategies as st

from dissectors.msgtrace import MAX_RECORDS, looks_like_trace_body, parse_trace_body

F, R = "\x01", "\x02"
PUB = F.join(["Pub", "1700000000000", "DefaultRegion", "PG", "TopicTest", "7F000001AAAA", "TagA", "k1 k2",
              "127.0.0.1:10911", "12", "3", "0", "7F00000100002A9F0000000000000000", "true"]) + R
SUB_BEFORE = F.join(["SubBefore", "1700000000100", "DefaultRegion", "CG", "req-1", "7F000001AAAA", "0", "k1 k2"]) + R
SUB_AFTER = F.join(["SubAfter", "req-1", "7F000001AAAA", "5", "true", "k1 k2", "0", "1700000000105", "CG"]) + R
END_TX = F.join(["EndTransaction", "1700000000200", "DefaultRegion", "PG", "TopicTx", "7F000001BBBB", "null",
                 "null", "127.0.0.1:10911", "1", "tx-1", "COMMIT_MESSAGE", "false"]) + R


def test_each_type():
    recs = parse_trace_body((PUB + SUB_BEFORE + SUB_AFTER + END_TX).encode())
    assert [r.type for r in recs] == ["Pub", "SubBefore", "SubAfter", "EndTransaction"]
    assert all(r.problem is None for r in recs)
    pub, before, after, end = recs
    assert (pub.msg_id, pub.offset_msg_id, pub.topic, pub.tags, pub.keys, pub.group, pub.store_host, pub.cost_ms,
            pub.success, pub.timestamp_ms) == ("7F000001AAAA", "7F00000100002A9F0000000000000000", "TopicTest",
                                               "TagA", ["k1", "k2"], "PG", "127.0.0.1:10911", 3, True, 1700000000000)
    assert pub.extra == {"region": "DefaultRegion", "body_length": "12", "msg_type": "Normal_Msg"}
    assert (before.msg_id, before.group, before.extra["retry_times"], before.extra["request_id"]) == (
        "7F000001AAAA", "CG", "0", "req-1")
    assert (after.msg_id, after.cost_ms, after.success, after.group, after.timestamp_ms,
            after.extra["consume_return"]) == ("7F000001AAAA", 5, True, "CG", 1700000000105, "SUCCESS")
    assert (end.msg_id, end.tags, end.keys, end.extra["transaction_state"], end.extra["msg_type"]) == (
        "7F000001BBBB", None, [], "COMMIT_MESSAGE", "Trans_Msg_Half")
    assert pub.to_json()["keys"] == ["k1", "k2"] and "problem" not in pub.to_json()


def test_old_and_new_forms():
    old_pub = PUB.replace(F + "7F00000100002A9F0000000000000000", "")  # 13 fields: no offset msg id
    r = parse_trace_body(old_pub.encode())[0]
    assert r.problem is None and r.offset_msg_id is None and r.success is True
    with_host = PUB[:-1] + F + "10.0.0.9" + R
    assert parse_trace_body(with_host.encode())[0].client_host == "10.0.0.9"
    short_after = F.join(["SubAfter", "req-1", "7F000001AAAA", "5", "false", "k1"]) + R
    r = parse_trace_body(short_after.encode())[0]
    assert (r.problem, r.success, r.group, r.timestamp_ms) == (None, False, None, None)


def test_compressed_body():
    body = zlib.compress((PUB * 3).encode())
    assert looks_like_trace_body(body)
    assert [r.msg_id for r in parse_trace_body(body)] == ["7F000001AAAA"] * 3


def test_malformed_records_are_reported_and_decoding_goes_on():
    body = ("Pub" + F + "x" + R + "Bogus" + F + "1" + R + PUB.replace("1700000000000", "soon") + SUB_BEFORE).encode()
    recs = parse_trace_body(body)
    assert [r.type for r in recs] == ["Pub", "unknown", "Pub", "SubBefore"]
    assert "2 fields" in (recs[0].problem or "") and "Bogus" in (recs[1].problem or "")
    assert "not a number" in (recs[2].problem or "") and recs[2].msg_id == "7F000001AAAA"
    assert recs[3].problem is None
    assert "not inflated" in (parse_trace_body(b"\x78garbage")[0].problem or "")
    assert parse_trace_body(b"") == [] and not looks_like_trace_body(b"hello")


def test_record_count_is_bounded():
    recs = parse_trace_body((SUB_BEFORE * (MAX_RECORDS + 5)).encode())
    assert len(recs) == MAX_RECORDS + 1 and "5 records past" in (recs[-1].problem or "")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.sampled_from(["Pub", "SubBefore", "SubAfter", "EndTransaction", "Recall", "1", "x",
                                          "true", "null", "", "\xff"]), max_size=16), max_size=6))
def test_any_records_decode_without_raising(records):
    body = "".join("\x01".join(r) + "\x02" for r in records).encode()
    for r in parse_trace_body(body):
        assert r.type and isinstance(r.to_json(), dict)
