"""The filter language: selection on a capture whose every exchange the test wrote itself,
errors with positions, literals, robustness, and selection on the real captures."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dissectors.remoting import codes
from rmqsniff.filter import FilterError, compile_filter, parse_duration_ms, parse_size
from rmqsniff.pipeline import analyze
from tests.support.captures import CAPTURES, real_params
from tests.support.remoting_scenario import SCENARIO, label_of, offset_id, write_scenario


@pytest.fixture(scope="module")
def scenario_exchanges(tmp_path_factory):
    path = tmp_path_factory.mktemp("flt") / "scenario.pcap"
    write_scenario(path)
    res = analyze([str(path)])
    assert not res.errors
    assert sorted(label_of(e) for e in res.exchanges) == sorted(SCENARIO)
    return res.exchanges


def sel(exchanges, expr: str) -> set[str]:
    f = compile_filter(expr)
    return {label_of(e) for e in exchanges if f(e)}


ALL = set(SCENARIO)
CASES = [
    ("code == SEND_MESSAGE_V2", {"a1", "a2", "a3"}),
    ("code == 310", {"a1", "a2", "a3"}),
    ("code == send_message_v2", {"a1", "a2", "a3"}),
    ("code in {PULL_MESSAGE, 38}", {"b1", "b2", "b3"}),
    ("code not in (PULL_MESSAGE, 38)", ALL - {"b1", "b2", "b3"}),
    ('code ~ "^SEND"', {"a1", "a2", "a3", "a5"}),
    ("code >= 300", {"a1", "a2", "a3", "a5"}),
    ('topic ~ "^orders"', {"a1", "a2", "b1", "b2", "c1"}),
    ("topic == orders_eu and latency > 5ms", {"b2", "c1"}),
    ("latency > 6ms and latency < 0.025s", {"a2", "a3"}),
    ("latency >= 0.5 and latency <= 2.5", {"a1", "b1"}),
    ("latency", {"a1", "a2", "a3", "a5", "b1", "b2", "c1"}),
    ("not latency", {"a4", "b3"}),
    ("status == error", {"a2", "c1"}),
    ("status == ERROR", {"a2", "c1"}),
    ("status == success", {"a1", "a3", "a5", "b1"}),
    ("status == no_message", {"b2"}),
    ("status == unanswered", {"b3"}),
    ("status == oneway", {"a4"}),
    ("status == answered", ALL - {"a4", "b3"}),
    ("status != answered", {"a4", "b3"}),
    ("response_code == SYSTEM_BUSY", {"a2"}),
    ("response_code != 0", {"a2", "b2", "c1"}),
    ("not response_code == 0", {"a2", "b2", "c1", "a4", "b3"}),
    ('response_code ~ "NOT"', {"b2", "c1"}),
    ("tag == TagB", {"b1"}),
    ("tag == TagA", {"a1"}),
    ("tag == TagC", {"a5"}),
    ("keys == k2", {"a1"}),
    ("keys in {bk1, zz}", {"a5"}),
    ("msgid == U2", {"b1"}),
    ("msgid == M1 or msgid == 'U1'", {"a1"}),
    ("msgid == UB2 and msgid == MB2", {"a5"}),
    (f"msgid == {offset_id('10.0.0.10', 10911, 8192)}", {"b1"}),
    ("client == 10.0.1.2", {"b1", "b2", "b3"}),
    ('client == "10.0.1.1:40001"', {"a1", "a2", "a3", "a4", "a5"}),
    ("broker == 10.0.0.9:9876", {"c1"}),
    ('broker ~ ":10911$"', ALL - {"c1"}),
    ("size > 4KiB", {"a3"}),
    ("size < 4KiB", ALL - {"a3"}),
    ("size >= 5000B and size < 5.5kB", {"a3"}),
    ("language == go", {"b1", "b2", "b3"}),
    ("version < V5_0_0", {"b1", "b2", "b3"}),
    ("version == 479", ALL - {"b1", "b2", "b3"}),
    ("opaque == 1003", {"a3"}),
    ("protocol == remoting", ALL),
    ("protocol == grpc", set()),
    ("group in (CG1, PG1)", ALL - {"c1"}),
    ("topic not in {orders_eu}", {"a2", "a3", "a5"}),
    ("topic != orders_eu", {"a2", "a3", "a5"}),
    ("not topic", {"a4", "b3"}),
    ("(code == 310 or code == 11) and not status == error", {"a1", "a3", "b1", "b2"}),
    ("code == 310 or code == 11 and latency > 10ms", {"a1", "a2", "a3", "b2"}),
    ("code == 310 || code == 11 && latency > 10ms", {"a1", "a2", "a3", "b2"}),
    ("!(status == error) && topic == payments", {"a3"}),
    ("NOT status == success AND protocol == remoting", ALL - {"a1", "a3", "a5", "b1"}),
]


@pytest.mark.parametrize("expr,want", CASES, ids=[c[0] for c in CASES])
def test_filter_selects_exactly(scenario_exchanges, expr, want):
    assert sel(scenario_exchanges, expr) == want


def test_conn_field_follows_the_connection(scenario_exchanges):
    b_conn = {e.connection.id for e in scenario_exchanges if e.connection.client == ("10.0.1.2", 40002)}
    assert len(b_conn) == 1
    assert sel(scenario_exchanges, f"conn == {b_conn.pop()}") == {"b1", "b2", "b3"}


ERRORS = [
    ("code == SEND_MESAGE_V2", 8, "unknown code"),
    ("latency > 5 parsecs", 12, "unexpected"),
    ("latency > fast", 10, "not a duration"),
    ("topci == x", 0, "unknown field"),
    ('topic ~ "("', 8, "regular expression"),
    ("(topic == a", 11, "expected ')'"),
    ("topic == ", 9, "expected a value"),
    ("size > lots", 7, "not a size"),
    ("status < error", 9, "cannot be ordered"),
    ("topic = x", 6, "use =="),
    ('topic == "open', 9, "unterminated"),
    ("conn == abc", 8, "whole number"),
    ("topic in {a b}", 12, "expected ','"),
    ("and topic", 0, "expected a field"),
    ("topic == a or", 13, "expected a field"),
    ("version > V9_9_9", 10, "not a version"),
    ("", 0, "empty"),
    ("topic == a $", 11, "unexpected"),
]


@pytest.mark.parametrize("expr,pos,msg", ERRORS, ids=[e[0] or "<empty>" for e in ERRORS])
def test_bad_expressions_point_at_the_offending_token(expr, pos, msg):
    with pytest.raises(FilterError) as ei:
        compile_filter(expr)
    e = ei.value
    assert msg in e.message
    assert e.position == pos
    lines = e.caret().split("\n")
    assert lines[0] == expr
    assert lines[1].index("^") == pos


def test_caret_underlines_the_whole_token():
    with pytest.raises(FilterError) as ei:
        compile_filter("code == SEND_MESAGE_V2 and topic == x")
    assert ei.value.caret().split("\n")[1] == " " * 8 + "^" + "~" * (len("SEND_MESAGE_V2") - 1)


@pytest.mark.parametrize("text,ms", [("50ms", 50.0), ("1.5s", 1500.0), ("7", 7.0), ("250us", 0.25),
                                     ("2m", 120000.0), ("1h", 3600000.0), ("500ns", 0.0005)])
def test_durations(text, ms):
    assert parse_duration_ms(text) == pytest.approx(ms)


@pytest.mark.parametrize("text,n", [("4KiB", 4096), ("1.5kB", 1500), ("100", 100), ("2MiB", 2 * 1024 * 1024),
                                    ("3MB", 3_000_000), ("12B", 12), ("1GiB", 1 << 30)])
def test_sizes(text, n):
    assert parse_size(text) == n


@pytest.mark.parametrize("text", ["fast", "5 parsecs", "ms", "-3ms"])
def test_not_durations(text):
    assert parse_duration_ms(text) is None


_ALPHABET = st.sampled_from(list("()!=<>~{},'\" &|") + ["code", "topic", "latency", "and", "or", "not", "in",
                                                       "5ms", "4KiB", "SEND_MESSAGE_V2", "x", "msgid",
                                                       "status", "error", "1.5", "tag", "=="])


@settings(max_examples=400, deadline=None)
@given(st.lists(_ALPHABET, max_size=12).map(" ".join) | st.text(max_size=30))
def test_any_text_compiles_or_raises_filter_error(scenario_exchanges, text):
    try:
        f = compile_filter(text)
    except FilterError as e:
        assert 0 <= e.position <= len(text)
        lines = e.caret().split("\n")
        assert len(lines) == 2 and len(lines[0]) == len(text) and lines[1].index("^") == e.position
        return
    for ex in scenario_exchanges:
        assert f(ex) in (True, False)


# ---------------------------------------------------------------- real captures

SINGLE_SEND_KINDS = ("sync", "async", "oneway", "ordered", "delay", "timer", "compressed", "transaction_half")


@pytest.fixture(scope="module")
def real():
    cache: dict = {}

    def get(name):
        if name not in cache:
            truth = json.loads((CAPTURES / f"{name}.truth.json").read_text())
            cache[name] = (analyze([str(CAPTURES / f"{name}.pcap")]).exchanges, truth)
        return cache[name]
    return get


@pytest.mark.parametrize("name", real_params())
def test_real_send_filters_match_client_counts(real, name):
    exchanges, truth = real(name)
    topic = truth["topic"]
    counts = truth.get("counts", {})
    n = lambda expr: sum(1 for e in exchanges if compile_filter(expr)(e))  # noqa: E731
    singles = sum(counts.get(k, 0) for k in SINGLE_SEND_KINDS)
    # the Go client sends SEND_MESSAGE (10) and never sets the oneway flag (truth says so)
    send = codes.request_name(truth.get("send_request_code", 310))
    oneway = counts.get("oneway", 0) if truth.get("oneway_flag", True) else 0
    assert n(f'code == {send} and topic == "{topic}"') == singles
    assert n(f'code == SEND_BATCH_MESSAGE and topic == "{topic}"') == counts.get("batch", 0)
    assert n(f'code == {send} and topic == "{topic}" and status == oneway') == oneway
    tags: dict[str, int] = {}
    for s in truth["sent"]:
        if s["kind"] != "batch" and s.get("tags"):
            tags[s["tags"]] = tags.get(s["tags"], 0) + 1
    for tag, k in tags.items():
        assert n(f'code == {send} and topic == "{topic}" and tag == "{tag}"') == k, tag


@pytest.mark.parametrize("name", real_params())
def test_real_msgid_filter_finds_the_send_and_the_deliveries(real, name):
    from rmqsniff.views import messages_of

    exchanges, truth = real(name)
    singles = [s for s in truth["sent"] if s["kind"] != "batch"][:15]
    assert singles
    for s in singles:
        f = compile_filter(f'msgid == "{s["msg_id"]}"')
        got = [e for e in exchanges if f(e)]
        sends = [e for e in got if e.code in (310, 10)]
        assert len(sends) == 1, s["msg_id"]
        # every selected exchange carries it, and every exchange that carries it is selected
        carriers = [e for e in exchanges if any(s["msg_id"] in m.ids for m in messages_of(e))]
        assert {e.index for e in got} >= {e.index for e in carriers}
        if s.get("offset_msg_id"):
            send = codes.request_name(truth.get("send_request_code", 310))
            g = compile_filter(f'msgid == "{s["offset_msg_id"]}" and code == {send}')
            assert [e.index for e in exchanges if g(e)] == [sends[0].index]
