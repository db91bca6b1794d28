"""decode_body: what frame bodies mean, by (request) code (reference sections 3 and 4)."""
from __future__ import annotations

import base64
import json
import struct
import zlib

import lz4.frame
from hypothesis import given, settings
from hypothesis import strategies as st

from dissectors.remoting.bodies import (
    BodyView,
    broker_addresses,
    decode_body,
    heartbeat_summary,
    reset_offsets,
)
from dissectors.remoting.command import FLAG_RESPONSE, RemotingCommand
from dissectors.remoting.message import BatchMessage, StoredMessage, encode_batch, encode_stored_message


def req(code: int, body: bytes | None = None, ext: dict[str, str] | None = None) -> RemotingCommand:
    return RemotingCommand(code=code, body=body, ext=ext)


def resp(body: bytes | None, code: int = 0) -> RemotingCommand:
    return RemotingCommand(code=code, flag=FLAG_RESPONSE, body=body)


def _stored(offset: int) -> bytes:
    return encode_stored_message(StoredMessage(
        topic="TopicTest", body=b"m%d" % offset, queue_offset=offset, physical_offset=1000 + offset,
        born_host="10.0.0.5:5000", store_host="10.0.0.1:10911", properties={"UNIQ_KEY": f"K{offset}"}))


# ---------------------------------------------------------------- stored messages

def test_pull_response_decodes_messages() -> None:
    view = decode_body(resp(_stored(1) + _stored(2)), req(11))  # PULL_MESSAGE
    assert view.kind == "messages" and view.errors == []
    assert [m.unique_key for m in view.value] == ["K1", "K2"]


def test_pop_response_with_truncated_code() -> None:
    for code in (200050, 3442):  # POP_MESSAGE and its 16-bit wire form
        view = decode_body(resp(_stored(5)), req(code))
        assert view.kind == "messages" and view.value[0].queue_offset == 5


def test_other_message_bearing_commands() -> None:
    for code in (361, 200052, 12, 33):
        assert decode_body(resp(_stored(1)), req(code)).kind == "messages"
    for code in (39, 309):  # CHECK_TRANSACTION_STATE, CONSUME_MESSAGE_DIRECTLY requests
        assert decode_body(req(code, _stored(1))).kind == "messages"


def test_corrupt_record_reported_others_kept() -> None:
    bad = bytearray(_stored(2))
    bad[4:8] = b"\xde\xad\xbe\xef"
    view = decode_body(resp(_stored(1) + bytes(bad) + _stored(3)), req(11))
    assert view.kind == "messages"
    assert [m.queue_offset for m in view.value] == [1, 3]
    assert len(view.errors) == 1 and "magic" in view.errors[0]


def test_garbage_pull_body_is_an_error() -> None:
    view = decode_body(resp(b"\x00\x00\x00\x05abcdefgh"), req(11))
    assert view.kind == "error" and view.errors


def test_response_without_request_sniffs_stored_messages() -> None:
    assert decode_body(resp(_stored(1))).kind == "messages"


# ---------------------------------------------------------------- send

def test_send_v2_compressed_body_is_inflated() -> None:
    original = b"x" * 5000
    cmd = req(310, zlib.compress(original), {"a": "g", "b": "T", "f": str(0x1 | (3 << 8))})
    view = decode_body(cmd)
    assert view == BodyView("message", original, [])


def test_send_v1_lz4_and_uncompressed() -> None:
    original = b"hello " * 1000
    v1 = decode_body(req(10, lz4.frame.compress(original), {"sysFlag": str(0x1 | (1 << 8))}))
    assert v1.kind == "message" and v1.value == original
    plain = decode_body(req(325, b"\x01raw", {"f": "0"}))
    assert plain.kind == "message" and plain.value == b"\x01raw"


def test_send_bad_compressed_body_reported() -> None:
    view = decode_body(req(310, b"not zlib", {"f": "1"}))
    assert view.kind == "message" and view.value == b"not zlib"
    assert view.errors and "zlib" in view.errors[0]


def test_send_batch() -> None:
    body = encode_batch([BatchMessage(body=b"a", properties={"UNIQ_KEY": "U1"}),
                         BatchMessage(body=b"b", properties={"UNIQ_KEY": "U2"})])
    view = decode_body(req(320, body, {"m": "true"}))
    assert view.kind == "batch" and [m.unique_key for m in view.value] == ["U1", "U2"]


# ---------------------------------------------------------------- heartbeat

HEARTBEAT = (
    b'{"clientID":"10.0.0.5@4242#1","consumerDataSet":[{"consumeFromWhere":"CONSUME_FROM_LAST_OFFSET",'
    b'"consumeType":"CONSUME_PASSIVELY","groupName":"cg","messageModel":"CLUSTERING",'
    b'"subscriptionDataSet":[{"classFilterMode":false,"codeSet":[2598919,2598920],"expressionType":"TAG",'
    b'"subString":"TagA || TagB","subVersion":1700000000000,"tagsSet":["TagA","TagB"],"topic":"TopicTest"}],'
    b'"unitMode":false}],"heartbeatFingerprint":0,"producerDataSet":[{"groupName":"pg"},'
    b'{"groupName":"CLIENT_INNER_PRODUCER"}],"withoutSub":false}'
)


def test_heartbeat_body_and_summary() -> None:
    view = decode_body(req(34, HEARTBEAT))
    assert view.kind == "heartbeat"
    s = heartbeat_summary(view.value)
    assert s["clientID"] == "10.0.0.5@4242#1"
    assert s["producerGroups"] == ["pg", "CLIENT_INNER_PRODUCER"]
    (c,) = s["consumerGroups"]
    assert (c["groupName"], c["consumeType"], c["messageModel"], c["consumeFromWhere"]) == (
        "cg", "CONSUME_PASSIVELY", "CLUSTERING", "CONSUME_FROM_LAST_OFFSET")
    assert c["subscriptions"] == [{"topic": "TopicTest", "expressionType": "TAG",
                                   "subString": "TagA || TagB", "tags": ["TagA", "TagB"]}]


def test_heartbeat_with_capitalised_keys() -> None:
    body = b'{"ClientID":"c1","ProducerDataSet":[{"GroupName":"pg"}],"ConsumerDataSet":[]}'
    s = heartbeat_summary(decode_body(req(34, body)).value)
    assert s["clientID"] == "c1" and s["producerGroups"] == ["pg"] and s["consumerGroups"] == []


# ---------------------------------------------------------------- routes and cluster

FASTJSON_ROUTE = (
    b'{"brokerDatas":[{"brokerAddrs":{0:"10.0.0.1:10911",1:"10.0.0.2:10911"},"brokerName":"broker-a",'
    b'"cluster":"DefaultCluster"}],"filterServerTable":{},"queueDatas":[{"brokerName":"broker-a","perm":6,'
    b'"readQueueNums":4,"topicSynFlag":0,"writeQueueNums":4}]}'
)
STANDARD_ROUTE = (
    b'{"brokerDatas":[{"brokerAddrs":{"0":"10.2.3.117:10911"},"brokerName":"broker-a","cluster":'
    b'"DefaultCluster","enableActingMaster":false}],"filterServerTable":{},"queueDatas":[{"brokerName":'
    b'"broker-a","perm":6,"readQueueNums":8,"topicSysFlag":0,"writeQueueNums":8}]}'
)


def test_fastjson_route_with_unquoted_keys_and_old_flag_name() -> None:
    view = decode_body(resp(FASTJSON_ROUTE), req(105, ext={"topic": "TopicTest"}))
    assert view.kind == "topic_route" and view.errors == []
    assert broker_addresses(view.value) == {"broker-a": {0: "10.0.0.1:10911", 1: "10.0.0.2:10911"}}
    qd = view.value["queueDatas"][0]
    assert qd["topicSysFlag"] == 0 and qd["readQueueNums"] == 4


def test_standard_route() -> None:
    view = decode_body(resp(STANDARD_ROUTE), req(105))
    assert view.kind == "topic_route"
    assert broker_addresses(view.value) == {"broker-a": {0: "10.2.3.117:10911"}}
    assert view.value["brokerDatas"][0]["enableActingMaster"] is False


def test_cluster_info() -> None:
    body = (b'{"brokerAddrTable":{"broker-a":{"brokerAddrs":{0:"10.0.0.1:10911"},"brokerName":"broker-a",'
            b'"cluster":"c1"}},"clusterAddrTable":{"c1":["broker-a"]}}')
    view = decode_body(resp(body), req(106))
    assert view.kind == "cluster_info"
    assert view.value["clusterAddrTable"] == {"c1": ["broker-a"]}
    assert view.value["brokerAddrTable"]["broker-a"]["brokerAddrs"] == {"0": "10.0.0.1:10911"}


def test_route_not_found_text_response() -> None:
    view = decode_body(resp(b"No topic route info", code=17), req(105))
    assert view.kind == "text" and view.value == "No topic route info"


# ---------------------------------------------------------------- register broker

DATA_VERSION = {"counter": 3, "stateVersion": 0, "timestamp": 1623318239471}


def _lp(b: bytes) -> bytes:
    return struct.pack(">i", len(b)) + b


def _compressed_register_body(with_mapping: bool) -> bytes:
    topics = [b"TopicTest 4 4 6 SINGLE_TAG {}", b"SELF_TEST_TOPIC 1 1 6 SINGLE_TAG",
              b'Attr 8 8 6 MULTI_TAG {"+queue.type":"BatchCQ"}']
    raw = _lp(json.dumps(DATA_VERSION).encode()) + struct.pack(">i", len(topics))
    raw += b"".join(_lp(t) for t in topics) + _lp(b'["10.0.0.9:40000"]')
    if with_mapping:
        raw += struct.pack(">i", 1) + _lp(b'{"bname":"broker-a","epoch":1,"topic":"Static","totalQueues":2}')
    return zlib.compress(raw, 9)


def test_register_broker_compressed_form() -> None:
    view = decode_body(req(103, _compressed_register_body(True), {"compressed": "true", "brokerName": "broker-a"}))
    assert view.kind == "register_broker" and view.errors == []
    w = view.value["topicConfigSerializeWrapper"]
    assert w["dataVersion"] == DATA_VERSION
    assert w["topicConfigTable"]["TopicTest"] == {
        "topicName": "TopicTest", "readQueueNums": 4, "writeQueueNums": 4, "perm": 6,
        "topicFilterType": "SINGLE_TAG", "attributes": {}}
    assert "attributes" not in w["topicConfigTable"]["SELF_TEST_TOPIC"]
    assert w["topicConfigTable"]["Attr"]["attributes"] == {"+queue.type": "BatchCQ"}
    assert w["topicQueueMappingInfoMap"]["Static"]["totalQueues"] == 2
    assert view.value["filterServerList"] == ["10.0.0.9:40000"]


def test_register_broker_compressed_without_flag_and_mapping() -> None:
    # 5.x writes compressed=false even for the zlib form
    view = decode_body(req(103, _compressed_register_body(False), {"compressed": "false"}))
    assert view.kind == "register_broker"
    assert set(view.value["topicConfigSerializeWrapper"]["topicConfigTable"]) == {
        "TopicTest", "SELF_TEST_TOPIC", "Attr"}


def test_register_broker_truncated_compressed_form() -> None:
    raw = zlib.decompress(_compressed_register_body(False))
    view = decode_body(req(103, zlib.compress(raw[:-10]), {"compressed": "true"}))
    assert view.kind == "register_broker"
    assert view.value["topicConfigSerializeWrapper"]["dataVersion"] == DATA_VERSION
    assert view.errors and "filter server list" in view.errors[0]


def test_register_broker_json_form() -> None:
    body = (b'{"filterServerList":[],"topicConfigSerializeWrapper":{"dataVersion":{"counter":3,'
            b'"timestamp":1623318239471},"topicConfigTable":{"TopicTest":{"order":false,"perm":6,'
            b'"readQueueNums":4,"topicFilterType":"SINGLE_TAG","topicName":"TopicTest","topicSysFlag":0,'
            b'"writeQueueNums":4}}}}')
    view = decode_body(req(103, body, {"compressed": "false"}))
    assert view.kind == "register_broker"
    assert view.value["topicConfigSerializeWrapper"]["topicConfigTable"]["TopicTest"]["perm"] == 6


# ---------------------------------------------------------------- consumers, acks, locks, resets

def test_consumer_list() -> None:
    view = decode_body(resp(b'{"consumerIdList":["10.0.0.5@1","10.0.0.6@2"]}'), req(38))
    assert view.kind == "consumer_list" and view.value["consumerIdList"] == ["10.0.0.5@1", "10.0.0.6@2"]


def test_batch_ack_bitset() -> None:
    # java.util.BitSet.toByteArray: bit i is bit i%8 of byte i/8
    bits = base64.b64encode(bytes([0b00000101, 0b10000000])).decode()
    body = json.dumps({"acks": [{"b": bits, "c": "cg", "it": 30000, "pt": 1700000000000, "q": 1,
                                 "r": "0", "rq": 5, "so": 100, "t": "TopicTest"},
                                {"bitSet": base64.b64encode(b"\x02").decode(), "consumerGroup": "cg",
                                 "startOffset": 7, "topic": "T2"}],
                       "brokerName": "broker-a"}).encode()
    for code in (200151, 3543):
        view = decode_body(req(code, body))
        assert view.kind == "batch_ack" and view.errors == []
        first, second = view.value["acks"]
        assert first["offsets"] == [100, 102, 115]
        assert (first["consumerGroup"], first["topic"], first["queueId"], first["reviveQueueId"]) == (
            "cg", "TopicTest", 1, 5)
        assert second["offsets"] == [8] and second["topic"] == "T2"
        assert view.value["brokerName"] == "broker-a"


def test_reset_offset_object_keys_and_c_form() -> None:
    body = (b'{"offsetTable":{{"brokerName":"b","queueId":0,"topic":"t"}:11110,'
            b'{"brokerName":"b","queueId":1,"topic":"t"}:5}}')
    view = decode_body(req(220, body, {"topic": "t", "group": "g"}))
    assert view.kind == "json"
    assert sorted(reset_offsets(view.value), key=lambda e: e["queueId"]) == [
        {"topic": "t", "brokerName": "b", "queueId": 0, "offset": 11110},
        {"topic": "t", "brokerName": "b", "queueId": 1, "offset": 5}]
    c_form = b'{"offsetTable":[{"brokerName":"b","offset":9,"queueId":2,"topic":"t"}]}'
    assert reset_offsets(decode_body(req(220, c_form)).value) == [
        {"topic": "t", "brokerName": "b", "queueId": 2, "offset": 9}]


def test_lock_batch_mq() -> None:
    body = (b'{"clientId":"c","consumerGroup":"g","mqSet":[{"brokerName":"b","queueId":0,"topic":"t"}],'
            b'"onlyThisBroker":false}')
    view = decode_body(req(41, body))
    assert view.kind == "json" and view.value["mqSet"][0]["queueId"] == 0
    ok = decode_body(resp(b'{"lockOKMQSet":[]}'), req(41, body))
    assert ok.kind == "json" and ok.value == {"lockOKMQSet": []}


# ---------------------------------------------------------------- fallbacks

def test_generic_kinds() -> None:
    assert decode_body(req(999)).kind == "empty"
    assert decode_body(req(999, b"")).kind == "empty"
    assert decode_body(req(999, b'{a:1}')) == BodyView("json", {"a": 1}, [])
    assert decode_body(req(999, b"hello\nworld")) == BodyView("text", "hello\nworld", [])
    assert decode_body(req(999, b"\x00\xff\x10")) == BodyView("binary", b"\x00\xff\x10", [])
    broken = decode_body(req(999, b'{"a":'))
    assert broken.kind == "text" and broken.errors


def test_bad_json_for_known_code_is_error() -> None:
    view = decode_body(req(34, b'{"clientID":'))
    assert view.kind == "error" and "offset" in view.errors[0]


@settings(max_examples=150)
@given(st.sampled_from([10, 11, 12, 33, 34, 38, 39, 41, 103, 105, 106, 220, 309, 310, 320, 3442, 200151, 999]),
       st.booleans(), st.binary(max_size=300), st.sampled_from(["0", "1", "257", "513", "x"]))
def test_never_raises(code: int, is_response: bool, body: bytes, flag: str) -> None:
    ext = {"f": flag, "sysFlag": flag, "compressed": "true"}
    view = decode_body(resp(body), req(code, ext=ext)) if is_response else decode_body(req(code, body, ext))
    assert isinstance(view, BodyView)
    assert not any(e.startswith("body decoder failed") for e in view.errors), view.errors


@settings(max_examples=150)
@given(st.binary(max_size=200), st.integers(min_value=0, max_value=60))
def test_register_broker_never_raises_on_inflatable_garbage(tail: bytes, cut: int) -> None:
    raw = zlib.decompress(_compressed_register_body(True))
    body = zlib.compress(raw[:cut] + tail)
    view = decode_body(req(103, body, {"compressed": "true"}))
    assert view.kind in ("register_broker", "error")
    assert not any(e.startswith("body decoder failed") for e in view.errors), view.errors
