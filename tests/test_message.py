"""Stored message records, batch bodies, properties and message ids (reference section 4)."""
from __future__ import annotations

import struct
import zlib

import lz4.frame
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from dissectors.remoting.message import (
    BatchMessage,
    DecompressionLimitExceeded,
    PayloadError,
    StoredMessage,
    decode_batch,
    decode_offset_msg_id,
    decode_stored_messages,
    decode_unique_key,
    encode_batch,
    encode_stored_message,
    offset_msg_id,
    parse_properties,
    properties_to_string,
)

# ---------------------------------------------------------------- properties (4.3 table)

PROPERTY_CASES = [
    ("k1\x01v1", {"k1": "v1"}),
    ("", {}),
    (" ", {}),
    ("aaa", {}),
    ("k1\x01", {}),
    ("\x01v1", {}),
    ("k1\x01v1\x02", {"k1": "v1"}),
    ("k1\x01v1\x02k2\x01v2", {"k1": "v1", "k2": "v2"}),
    ("k1\x01v1\x02\x01v2", {"k1": "v1"}),
    ("k1\x01v1\x02k2\x01", {"k1": "v1"}),
    ("\x01v1\x02k2\x01v2", {"k2": "v2"}),
    ("k1\x01\x02k2\x01v2", {"k2": "v2"}),
    ("1\x011\x022\x012", {"1": "1", "2": "2"}),
    ("1\x01\x022\x012", {"2": "2"}),
    ("\x011\x022\x012", {"2": "2"}),
    ("1\x011\x022\x01", {"1": "1"}),
    ("1\x011\x02\x012", {"1": "1"}),
]


@pytest.mark.parametrize("text,expected", PROPERTY_CASES)
def test_parse_properties_reference_table(text: str, expected: dict[str, str]) -> None:
    assert parse_properties(text) == expected


def test_value_keeps_later_separators() -> None:
    assert parse_properties("a\x01b\x01c\x02") == {"a": "b\x01c"}


def test_properties_to_string_format() -> None:
    assert properties_to_string({"TAGS": "t", "KEYS": "a b", "X": None}) == "TAGS\x01t\x02KEYS\x01a b\x02"


@settings(max_examples=100)
@given(st.dictionaries(st.text(st.characters(blacklist_characters="\x01\x02"), min_size=1, max_size=8),
                       st.text(st.characters(blacklist_characters="\x02"), min_size=1, max_size=8), max_size=6))
def test_properties_round_trip(d: dict[str, str]) -> None:
    assert parse_properties(properties_to_string(d)) == d


# ---------------------------------------------------------------- message ids

def test_offset_msg_id_reference_example() -> None:
    assert offset_msg_id("127.0.0.1", 10911, 4096) == "7F00000100002A9F0000000000001000"
    assert decode_offset_msg_id("7F00000100002A9F0000000000001000") == ("127.0.0.1", 10911, 4096)


def test_offset_msg_id_ipv6() -> None:
    s = offset_msg_id("fe80::1", 10911, 2**40 + 5)
    assert len(s) == 56
    assert s.startswith("FE800000000000000000000000000001")
    assert decode_offset_msg_id(s) == ("fe80::1", 10911, 2**40 + 5)


def test_decode_offset_msg_id_rejects_wrong_length() -> None:
    with pytest.raises(ValueError):
        decode_offset_msg_id("7F000001")


def test_decode_unique_key_fields() -> None:
    raw = bytes([10, 1, 2, 3]) + struct.pack(">HiiH", 4242, -2, 123456, 7)
    d = decode_unique_key(raw.hex().upper())
    assert d == {"ip": "10.1.2.3", "pid": 4242, "class_loader_hash": 0xFFFFFFFE,
                 "time_offset_ms": 123456, "counter": 7}
    assert "error" in decode_unique_key("XYZ")
    assert "error" in decode_unique_key("00" * 5)


# ---------------------------------------------------------------- stored messages

def _msg(**kw: object) -> StoredMessage:
    base = dict(
        magic=1, queue_id=3, flag=9, queue_offset=77, physical_offset=4096, sys_flag=0,
        born_timestamp=1_700_000_000_000, born_host="10.0.0.5:54321", store_timestamp=1_700_000_000_123,
        store_host="127.0.0.1:10911", reconsume_times=2, prepared_transaction_offset=0,
        body=b"hello rocketmq", topic="TopicTest",
        properties={"UNIQ_KEY": "0A0000051F9018B4AAC2", "TAGS": "TagA", "KEYS": "k1 k2", "WAIT": "true"},
    )
    base.update(kw)
    return StoredMessage(**base)  # type: ignore[arg-type]


def _roundtrip(m: StoredMessage) -> StoredMessage:
    raw = encode_stored_message(m)
    msgs, problems = decode_stored_messages(raw)
    assert problems == []
    assert len(msgs) == 1
    assert msgs[0].total_size == len(raw)
    return msgs[0]


def test_ipv4_v1_layout_offsets_and_round_trip() -> None:
    m = _msg()
    raw = encode_stored_message(m)
    # fixed IPv4 offsets from 4.1
    assert struct.unpack_from(">I", raw, 4)[0] == 0xDAA320A7
    assert struct.unpack_from(">i", raw, 8)[0] == zlib.crc32(b"hello rocketmq") & 0x7FFFFFFF
    assert struct.unpack_from(">q", raw, 28)[0] == 4096
    assert raw[64:68] == bytes([127, 0, 0, 1])
    assert struct.unpack_from(">i", raw, 84)[0] == len(b"hello rocketmq")
    assert raw[88:88 + 14] == b"hello rocketmq"
    props_len = len(properties_to_string(m.properties).encode())
    assert len(raw) == 88 + 14 + 1 + len("TopicTest") + 2 + props_len
    got = _roundtrip(m)
    for name in ("queue_id", "flag", "queue_offset", "physical_offset", "sys_flag", "born_timestamp",
                 "born_host", "store_timestamp", "store_host", "reconsume_times", "body", "topic",
                 "properties", "magic"):
        assert getattr(got, name) == getattr(m, name), name
    assert got.msg_id == "7F00000100002A9F0000000000001000"
    assert got.unique_key == "0A0000051F9018B4AAC2"
    assert got.tags == "TagA"
    assert got.keys == ["k1", "k2"]
    assert got.crc_ok
    assert not got.compressed and got.compression is None
    assert got.transaction_type == "not"
    assert got.delay_level is None
    assert got.payload() == b"hello rocketmq"


def test_ipv6_hosts_round_trip_and_set_flags() -> None:
    m = _msg(born_host="[2001:db8::5]:40000", store_host="[fe80::1]:10911", sys_flag=0x10 | 0x20)
    got = _roundtrip(m)
    assert got.born_host == "[2001:db8::5]:40000"
    assert got.store_host == "[fe80::1]:10911"
    assert got.sys_flag == 0x30
    assert len(got.msg_id or "") == 56
    assert decode_offset_msg_id(got.msg_id or "") == ("fe80::1", 10911, 4096)


def test_mixed_hosts_only_store_v6() -> None:
    got = _roundtrip(_msg(store_host="[::1]:1"))
    assert got.sys_flag & 0x30 == 0x20
    assert got.born_host == "10.0.0.5:54321"


def test_v2_magic_with_long_topic() -> None:
    topic = "%RETRY%" + "g" * 100 + "+" + "t" * 100
    m = _msg(magic=2, topic=topic)
    raw = encode_stored_message(m)
    assert struct.unpack_from(">I", raw, 4)[0] == 0xDAA320AB
    got = _roundtrip(m)
    assert got.magic == 2 and got.topic == topic


def test_v1_refuses_long_topic() -> None:
    with pytest.raises(ValueError):
        encode_stored_message(_msg(topic="t" * 128))


@pytest.mark.parametrize("name,type_bits,compress", [
    ("zlib", 0, zlib.compress),
    ("zlib", 3, zlib.compress),
    ("lz4", 1, lz4.frame.compress),
    ("zstd", 2, zstandard.ZstdCompressor().compress),
])
def test_compressed_bodies(name: str, type_bits: int, compress: object) -> None:
    original = b"payload " * 2000
    stored = compress(original)  # type: ignore[operator]
    got = _roundtrip(_msg(body=stored, sys_flag=0x1 | (type_bits << 8)))
    assert got.compressed and got.compression == name
    assert got.body == stored
    assert got.crc_ok  # CRC is over the stored (compressed) bytes
    assert got.payload() == original


@pytest.mark.parametrize("type_bits,compress", [
    (3, zlib.compress), (1, lz4.frame.compress), (2, zstandard.ZstdCompressor().compress)])
def test_decompression_bomb_is_capped(type_bits: int, compress: object) -> None:
    bomb = compress(b"\0" * (8 * 1024 * 1024))  # type: ignore[operator]
    m = _msg(body=bomb, sys_flag=0x1 | (type_bits << 8))
    with pytest.raises(DecompressionLimitExceeded):
        m.payload(max_size=1024 * 1024)
    assert len(m.payload(max_size=8 * 1024 * 1024)) == 8 * 1024 * 1024


@pytest.mark.parametrize("type_bits,compress", [
    (3, zlib.compress), (1, lz4.frame.compress), (2, zstandard.ZstdCompressor().compress)])
def test_truncated_or_garbage_compressed_body(type_bits: int, compress: object) -> None:
    data = compress(bytes(range(256)) * 50)  # type: ignore[operator]
    with pytest.raises(PayloadError):
        _msg(body=data[: len(data) // 2], sys_flag=0x1 | (type_bits << 8)).payload()
    with pytest.raises(PayloadError):
        _msg(body=b"not compressed at all", sys_flag=0x1 | (type_bits << 8)).payload()


def test_crc_mismatch_detected() -> None:
    raw = bytearray(encode_stored_message(_msg()))
    raw[88] ^= 0xFF  # first body byte
    msgs, problems = decode_stored_messages(bytes(raw))
    assert problems == []
    assert msgs[0].crc_ok is False


def test_flags_and_properties_derived() -> None:
    got = _roundtrip(_msg(sys_flag=0x4 | 0x40 | 0x80, properties={"DELAY": "3", "INNER_NUM": "2"}))
    assert got.transaction_type == "prepared"
    assert got.delay_level == 3
    assert got.inner_batch
    assert got.unique_key is None and got.keys == [] and got.tags is None
    assert _msg(sys_flag=0x8).transaction_type == "commit"
    assert _msg(sys_flag=0xC).transaction_type == "rollback"


def test_inner_batch_unwraps() -> None:
    inner = [BatchMessage(body=b"a", properties={"UNIQ_KEY": "1"}), BatchMessage(body=b"bb", properties={})]
    got = _roundtrip(_msg(body=encode_batch(inner), sys_flag=0xC0))
    msgs, problems = got.inner_messages()
    assert problems == [] and [m.body for m in msgs] == [b"a", b"bb"]


def test_several_records_with_a_corrupt_one_in_the_middle() -> None:
    a = encode_stored_message(_msg(queue_offset=1))
    b = bytearray(encode_stored_message(_msg(queue_offset=2)))
    c = encode_stored_message(_msg(queue_offset=3, magic=2))
    b[4:8] = b"\x00\x00\x00\x00"  # unknown magic, totalSize still right
    msgs, problems = decode_stored_messages(a + bytes(b) + c)
    assert [m.queue_offset for m in msgs] == [1, 3]
    assert [m.offset for m in msgs] == [0, len(a) + len(b)]
    assert len(problems) == 1 and f"offset {len(a)}" in problems[0] and "magic" in problems[0]


def test_record_whose_fields_overrun_is_skipped() -> None:
    a = encode_stored_message(_msg(queue_offset=1))
    b = bytearray(encode_stored_message(_msg(queue_offset=2)))
    struct.pack_into(">i", b, 84, 10_000)  # bodyLength past the record end
    msgs, problems = decode_stored_messages(bytes(b) + a)
    assert [m.queue_offset for m in msgs] == [1]
    assert len(problems) == 1 and problems[0].startswith("offset 0")


def test_implausible_total_size_stops_and_reports() -> None:
    a = encode_stored_message(_msg())
    tail = struct.pack(">i", 1_000_000) + b"\x00" * 100
    msgs, problems = decode_stored_messages(a + tail)
    assert len(msgs) == 1
    assert len(problems) == 1 and f"offset {len(a)}" in problems[0]


def test_truncated_body_and_garbage_never_raise() -> None:
    raw = encode_stored_message(_msg())
    for cut in range(0, len(raw)):
        msgs, problems = decode_stored_messages(raw[:cut])
        assert msgs == [] and (problems or cut == 0)


@settings(max_examples=200)
@given(st.binary(max_size=400))
def test_random_bytes_never_raise(data: bytes) -> None:
    msgs, problems = decode_stored_messages(data)
    assert isinstance(msgs, list) and isinstance(problems, list)
    batch, bproblems = decode_batch(data)
    assert isinstance(batch, list) and isinstance(bproblems, list)


# ---------------------------------------------------------------- batch (4.2)

def test_batch_encode_layout_and_decode() -> None:
    ms = [
        BatchMessage(body=b"first", properties={"UNIQ_KEY": "AA", "TAGS": "x"}, flag=1),
        BatchMessage(body=b"", properties={}, flag=0),
        BatchMessage(body=b"third" * 50, properties={"KEYS": "a b"}, flag=7),
    ]
    raw = encode_batch(ms)
    first_props = properties_to_string(ms[0].properties).encode()
    assert struct.unpack_from(">iiiii", raw, 0) == (20 + 5 + 2 + len(first_props), 0, 0, 1, 5)
    got, problems = decode_batch(raw)
    assert problems == []
    assert [(m.body, m.properties, m.flag) for m in got] == [(m.body, m.properties, m.flag) for m in ms]
    assert got[0].unique_key == "AA" and got[2].keys == ["a", "b"]


def test_batch_bad_entry_reported() -> None:
    good = encode_batch([BatchMessage(body=b"ok", properties={"A": "1"})])
    bad = bytearray(good)
    struct.pack_into(">i", bad, 16, 999)  # bodyLength too big for its totalSize
    got, problems = decode_batch(bytes(bad) + good)
    assert [m.body for m in got] == [b"ok"]
    assert len(problems) == 1 and problems[0].startswith("offset 0")
