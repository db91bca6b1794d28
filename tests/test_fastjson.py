"""Tolerant fastjson reader: quirks of section 5, bounds, round trips."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dissectors.remoting.fastjson import MAX_DEPTH, JsonError, ObjectKey, loads


def test_unquoted_integer_keys_become_strings() -> None:
    v = loads(b'{"brokerAddrs":{0:"127.0.0.1:10911",1:"127.0.0.2:10911"}}')
    assert v == {"brokerAddrs": {"0": "127.0.0.1:10911", "1": "127.0.0.2:10911"}}


def test_object_keys_are_frozen_and_comparable() -> None:
    text = ('{"offsetTable":{{"brokerName":"b","queueId":0,"topic":"t"}:11110,'
            '{"topic":"t","queueId":1,"brokerName":"b"}:7}}')
    table = loads(text)["offsetTable"]
    keys = list(table)
    assert all(isinstance(k, ObjectKey) for k in keys)
    assert keys[0].as_dict() == {"brokerName": "b", "queueId": 0, "topic": "t"}
    # field order in the text does not matter: same key either way
    assert table[ObjectKey((("brokerName", "b"), ("queueId", 1), ("topic", "t")))] == 7
    assert keys[1].get("queueId") == 1


def test_gson_pair_list_stays_plain_json() -> None:
    text = '{"offsetTable":[[{"brokerName":"b","queueId":0,"topic":"t"},11110]]}'
    assert loads(text) == {"offsetTable": [[{"brokerName": "b", "queueId": 0, "topic": "t"}, 11110]]}


def test_single_quotes_identifier_keys_trailing_commas() -> None:
    v = loads("{clientID:'10.0.0.1@1', groups:['g1','g2',], n:{a:1,},}")
    assert v == {"clientID": "10.0.0.1@1", "groups": ["g1", "g2"], "n": {"a": 1}}


def test_raw_control_characters_inside_strings() -> None:
    header = (b'{"code":310,"extFields":{"i":"KEYS\x01k1\x02UNIQ_KEY\x01AB\x02","f":"0"},'
              b'"flag":0,"language":"JAVA","opaque":1575,"version":373}')
    v = loads(header)
    assert v["extFields"]["i"] == "KEYS\x01k1\x02UNIQ_KEY\x01AB\x02"
    assert v["opaque"] == 1575


def test_control_characters_with_a_quirk_use_the_tolerant_parser() -> None:
    assert loads("{0:'a\x01b\x02'}") == {"0": "a\x01b\x02"}


def test_big_integers_and_literals() -> None:
    v = loads("{a:123456789012345678901234567890,b:-9223372036854775809,c:true,d:false,e:null,f:1.5e3}")
    assert v == {"a": 123456789012345678901234567890, "b": -9223372036854775809,
                 "c": True, "d": False, "e": None, "f": 1500.0}


def test_escapes_in_tolerant_mode() -> None:
    assert loads(r"{k:'\u00e9\ud83d\ude00\n\'x\x41'}") == {"k": "é😀\n'xA"}


@pytest.mark.parametrize("bad", ["", "{", '{"a":1', '{"a" 1}', "[1,,2]", '{"a":1} x', "'abc",
                                 "[NaN]", "{:1}", "[1 2]", '{"a":}'])
def test_malformed_input_raises_json_error_with_offset(bad: str) -> None:
    with pytest.raises(JsonError) as info:
        loads(bad)
    assert isinstance(info.value, ValueError)
    assert 0 <= info.value.offset <= len(bad)


def test_error_offset_points_at_the_problem() -> None:
    with pytest.raises(JsonError) as info:
        loads('{0:"a", 1 "b"}')
    assert info.value.offset == 10


@pytest.mark.parametrize("opener,closer", [("[", "]"), ('{"a":', "}"), ("{{", "}")])
def test_depth_bomb_is_refused_without_recursion_error(opener: str, closer: str) -> None:
    with pytest.raises(JsonError) as info:
        loads(opener * 100_000 + closer * 100_000)
    assert "nesting" in info.value.reason


def test_depth_limit_is_exact() -> None:
    assert loads("[" * MAX_DEPTH + "]" * MAX_DEPTH) is not None
    with pytest.raises(JsonError):
        loads("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1))


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    text = '{"s":"' + "[" * 5000 + '"}'
    assert loads(text) == {"s": "[" * 5000}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(), children, max_size=5),
    max_leaves=30,
)


@settings(max_examples=150)
@given(json_values)
def test_standard_json_round_trips(v: object) -> None:
    assert loads(json.dumps(v)) == v
    assert loads(json.dumps(v).encode()) == v


@settings(max_examples=100)
@given(st.dictionaries(st.integers(min_value=0, max_value=10**6), st.text(max_size=10), max_size=6))
def test_unquoted_integer_key_maps(d: dict[int, str]) -> None:
    text = "{" + ",".join(f"{k}:{json.dumps(v)}" for k, v in d.items()) + "}"
    assert loads(text) == {str(k): v for k, v in d.items()}
