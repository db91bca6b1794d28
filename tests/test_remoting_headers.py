"""Tests for the meaning of extFields (headers.py)."""
from __future__ import annotations

import pytest

from dissectors.remoting import RemotingCommand, decode_frame, encode, headers
from dissectors.remoting.command import ROCKETMQ

V2 = {"a": "pg", "b": "TopicTest", "c": "TBW102", "d": "4", "e": "2", "f": "8", "g": "1700000000000",
      "h": "0", "i": "TAGS\x01TagA\x02KEYS\x01k1 k2\x02", "j": "0", "k": "false", "m": "true", "n": "broker-a"}


def fields(rows):
    return {name: (value, meaning) for name, value, meaning in rows}


def test_send_v2_keys_table():
    assert headers.SEND_V2_KEYS["a"] == "producerGroup"
    assert headers.SEND_V2_KEYS["n"] == "bname"
    assert list(headers.SEND_V2_KEYS) == list("abcdefghijklmn")


@pytest.mark.parametrize("code", [310, 320, 325])
def test_long_ext_for_v2_requests_keeps_order(code):
    cmd = RemotingCommand(code=code, ext={**V2, "zz": "1"})
    long = headers.long_ext(cmd)
    assert list(long) == [headers.SEND_V2_KEYS[k] for k in V2] + ["zz"]
    assert long["topic"] == "TopicTest" and long["producerGroup"] == "pg" and long["bname"] == "broker-a"


def test_long_ext_leaves_others_and_responses_alone():
    resp = RemotingCommand(code=0, flag=1, ext={"a": "x", "msgId": "m"})
    assert headers.long_ext(resp) == {"a": "x", "msgId": "m"}
    assert headers.long_ext(RemotingCommand(code=11, ext={"b": "x"})) == {"b": "x"}
    assert headers.long_ext(RemotingCommand(code=310)) == {}


def test_long_ext_never_loses_a_key_on_name_clash():
    cmd = RemotingCommand(code=310, ext={"n": "broker-a", "bname": "broker-b"})
    assert headers.long_ext(cmd) == {"n": "broker-a", "bname": "broker-b"}


def test_topic_group_queue():
    v2 = RemotingCommand(code=310, ext=V2)
    assert (headers.topic_of(v2), headers.group_of(v2), headers.queue_id_of(v2)) == ("TopicTest", "pg", 2)
    pull = RemotingCommand(code=11, ext={"consumerGroup": "cg", "topic": "T", "queueId": "5"})
    assert (headers.topic_of(pull), headers.group_of(pull), headers.queue_id_of(pull)) == ("T", "cg", 5)
    back = RemotingCommand(code=36, ext={"group": "g", "originTopic": "T"})
    assert headers.group_of(back) == "g" and headers.topic_of(back) is None
    unreg = RemotingCommand(code=35, ext={"clientID": "c", "producerGroup": "pg"})
    assert headers.group_of(unreg) == "pg"
    assert headers.queue_id_of(RemotingCommand(code=11, ext={"queueId": "x"})) is None
    assert headers.topic_of(RemotingCommand(code=34)) is None
    # a send response's "a"/"b" keys are not V2 request keys
    assert headers.topic_of(RemotingCommand(code=0, flag=1, ext={"b": "no"})) is None


def test_describe_send_v2():
    rows = headers.describe(RemotingCommand(code=310, ext={**V2, "zz": "?"}))
    assert [r[0] for r in rows][:3] == ["producerGroup", "topic", "defaultTopic"]
    f = fields(rows)
    assert f["sysFlag"][1].startswith("MessageSysFlag bits: COMMIT")
    assert "TAGS=TagA" in f["properties"][1] and "KEYS=k1 k2" in f["properties"][1]
    assert "2023-11-14T22:13:20" in f["bornTimestamp"][1]
    assert "[V2 key b]" in f["topic"][1]
    assert f["zz"] == ("?", "")  # unknown key kept with empty meaning


def test_describe_send_response_and_extras():
    resp = RemotingCommand(code=0, flag=1, ext={"msgId": "7F00000100002A9F0000000000001000", "queueId": "1",
                                                "queueOffset": "9", "MSG_REGION": "DefaultRegion", "TRACE_ON": "true"})
    f = fields(headers.describe(resp, request_code=310))
    assert f["msgId"][1].startswith("offset message id")
    assert f["MSG_REGION"][1] == "broker region (regionId)"
    assert f["TRACE_ON"][1] and f["queueOffset"][1]


def test_describe_pull_sysflag_bits():
    f = fields(headers.describe(RemotingCommand(code=11, ext={"sysFlag": "23", "consumerGroup": "cg"})))
    assert f["sysFlag"][1] == "PullSysFlag bits: COMMIT_OFFSET|SUSPEND|SUBSCRIPTION|LITE_PULL"
    f = fields(headers.describe(RemotingCommand(code=361, ext={"sysFlag": "64"})))
    assert f["sysFlag"][1].endswith("0x40")


def test_describe_pull_response():
    f = fields(headers.describe(RemotingCommand(code=0, flag=1, remark="FOUND", ext={
        "suggestWhichBrokerId": "0", "nextBeginOffset": "32", "minOffset": "0", "maxOffset": "100"}), 11))
    assert "master" in f["suggestWhichBrokerId"][1]
    assert f["nextBeginOffset"][1] == "next offset to pull from"


def test_describe_pop_request_and_response():
    f = fields(headers.describe(RemotingCommand(code=200050, ext={"queueId": "-1", "initMode": "1"})))
    assert f["queueId"][1].endswith("any queue")
    assert "MAX" in f["initMode"][1]
    resp = RemotingCommand(code=0, flag=1, ext={"popTime": "1587386521445", "invisibleTime": "50000",
                                                "reviveQid": "999", "restNum": "0",
                                                "startOffsetInfo": "0 6 147;2 0 12",
                                                "msgOffsetInfo": "0 6 147,148;2 0 12",
                                                "orderCountInfo": "0 qo6%147 1"})
    f = fields(headers.describe(resp, request_code=200050))
    assert "normal topic queue 6: start offset 147" in f["startOffsetInfo"][1]
    assert "V2 pop retry topic queue 0: start offset 12" in f["startOffsetInfo"][1]
    assert "message offsets 147,148" in f["msgOffsetInfo"][1]
    assert "queue 6 at offset 147" in f["orderCountInfo"][1]
    assert "orderly" in f["reviveQid"][1]


def test_describe_ack_and_change_invisible():
    ack = RemotingCommand(code=200051, ext={"extraInfo": "147 1587386521445 50000 5 0 broker-a 6 147",
                                             "offset": "147", "consumerGroup": "cg"})
    f = fields(headers.describe(ack))
    assert "brokerName=broker-a" in f["extraInfo"][1] and "ckQueueOffset=147" in f["extraInfo"][1]
    ci = RemotingCommand(code=200053, ext={"invisibleTime": "1000"})
    assert fields(headers.describe(ci))["invisibleTime"][1] == "new invisible time (ms)"
    ci_resp = RemotingCommand(code=0, flag=1, ext={"popTime": "1", "invisibleTime": "1000", "reviveQid": "3"})
    assert fields(headers.describe(ci_resp, 200053))["popTime"][1].startswith("new pop")


@pytest.mark.parametrize("value,word", [("8", "COMMIT"), ("12", "ROLLBACK"), ("0", "TRANSACTION_NOT_TYPE")])
def test_describe_end_transaction(value, word):
    f = fields(headers.describe(RemotingCommand(code=37, flag=2, ext={"commitOrRollback": value})))
    assert f["commitOrRollback"][1].endswith(word) or word in f["commitOrRollback"][1]


def test_describe_other_families():
    for code, key in [(14, "setZeroIfNotFound"), (15, "commitOffset"), (105, "acceptStandardJsonOnly"),
                      (38, "consumerGroup"), (39, "offsetMsgId"), (35, "clientID"), (103, "haServerAddr"),
                      (200052, "maxMsgNums"), (200054, "pollTime"), (12, "key")]:
        f = fields(headers.describe(RemotingCommand(code=code, ext={key: "v"})))
        assert f[key][1], (code, key)
    f = fields(headers.describe(RemotingCommand(code=103, ext={"brokerId": "0"})))
    assert "master" in f["brokerId"][1]


def test_describe_inherited_and_extra_keys():
    cmd = RemotingCommand(code=11, ext={"ns": "n1", "nsd": "true", "bname": "b", "oway": "false", "lo": "true",
                                        "IS_SUPPORT_HEART_BEAT_V2": "true"})
    f = fields(headers.describe(cmd))
    assert all(f[k][1] for k in ("ns", "nsd", "bname", "oway", "lo", "IS_SUPPORT_HEART_BEAT_V2"))


def test_describe_bad_values_do_not_crash():
    cmd = RemotingCommand(code=11, ext={"sysFlag": "abc", "queueId": "zz"})
    f = fields(headers.describe(cmd))
    assert "not a number" in f["sysFlag"][1]
    f = fields(headers.describe(RemotingCommand(code=0, flag=1, ext={"popTime": "99999999999999999999999",
                                                                       "startOffsetInfo": "garbage"})))
    assert "unparsed" in f["startOffsetInfo"][1]


SIGNED = {"topic": "T", "AccessKey": "ak-123", "Signature": "c2lnbmF0dXJl", "securitytoken": "tok-XYZ789"}


def test_redact_ext():
    red = headers.redact_ext(SIGNED)
    assert red == {"topic": "T", "AccessKey": "<redacted>", "Signature": "<redacted>",
                   "securitytoken": "<redacted>"}
    assert SIGNED["AccessKey"] == "ak-123"  # original untouched
    assert headers.redact_ext(SIGNED, enabled=False) == SIGNED
    assert headers.redact_ext(SIGNED, enabled=False) is not SIGNED
    assert headers.redact_ext(None) is None


def test_redacted_command_and_describe_hide_secrets():
    cmd = RemotingCommand(code=105, ext=dict(SIGNED), opaque=3)
    red = headers.redacted_command(cmd)
    assert red.ext is not None and cmd.ext is not None
    assert red.ext["Signature"] == "<redacted>" and red.opaque == 3 and cmd.ext["Signature"] != "<redacted>"
    rows = headers.describe(cmd)
    assert not any(secret in str(rows) for secret in ("ak-123", "c2lnbmF0dXJl", "tok-XYZ789"))
    assert "ak-123" in str(headers.describe(cmd, redact=False))


def test_headers_work_on_decoded_binary_frames():
    cmd = RemotingCommand(code=310, ext=V2, serialize=ROCKETMQ, body=b"x")
    got = decode_frame(encode(cmd))
    assert headers.topic_of(got) == "TopicTest" and headers.queue_id_of(got) == 2


def test_topic_group_in_agrees_with_topic_in_and_group_in():
    import itertools

    from dissectors.remoting.headers import group_in, topic_group_in, topic_in

    keys = ["a", "b", "topic", "consumerGroup", "producerGroup", "group", "other"]
    for code in (10, 310, 320, 11, 0):
        for flag in (0, 1):
            assert topic_group_in(code, flag, None) == (None, None)
            for r in range(1, len(keys) + 1):
                for combo in itertools.combinations(keys, r):
                    ext = {k: k + "-v" for k in combo}
                    assert topic_group_in(code, flag, ext) == (topic_in(code, flag, ext), group_in(code, flag, ext))
