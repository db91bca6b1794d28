"""Trace context in message properties (dissectors/tracectx.py): every format, case variants and
malformed values (a context with ``problem``, never an exception).  Values are the specs' own
examples; the real clients' values are checked in tests/test_tracectx_real.py."""
from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dissectors.tracectx import MAX_VALUE, TraceContext, trace_context

TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def ctx(props: dict[str, str]) -> TraceContext:
    tc = trace_context(props)
    assert tc is not None, props
    return tc


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


SW8 = "-".join(["1", _b64("a.1.2"), _b64("seg.3"), "7", _b64("shop"), _b64("shop@host"), _b64("/order"),
                _b64("127.0.0.1:10911")])


def test_no_context():
    assert trace_context({}) is None
    assert trace_context({"KEYS": "k", "UNIQ_KEY": "x", "tracestate": "a=b"}) is None


def test_w3c():
    tc = ctx({"traceparent": TP, "tracestate": "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"})
    assert tc is not None and tc.problem is None
    assert (tc.format, tc.trace_id, tc.span_id, tc.sampled) == ("w3c", TP[3:35], TP[36:52], True)
    assert tc.extra == {"tracestate": "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"}
    assert tc.to_json()["trace_id"] == TP[3:35]
    assert ctx({"traceparent": TP[:-2] + "00"}).sampled is False
    # a later version may add fields after the four
    assert ctx({"traceparent": "01" + TP[2:] + "-what-ever"}).problem is None


@pytest.mark.parametrize("value, problem", [
    ("ff" + TP[2:], "version ff"),
    (TP.upper(), "lowercase"),  # "00" is fine, the ids are not lowercase
    ("00-" + "0" * 32 + "-00f067aa0ba902b7-01", "all zeros"),
    ("00-4bf92f3577b34da6a3ce929d0e0e4736-" + "0" * 16 + "-01", "all zeros"),
    ("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", "lowercase"),
    ("00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01", "32 lowercase"),
    ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1", "flags"),
    (TP + "-extra", "4 expected"),
    ("garbage", "fields"),
])
def test_w3c_malformed(value, problem):
    tc = ctx({"traceparent": value})
    assert tc is not None and tc.format == "w3c"
    assert tc.problem is not None and problem in (tc.problem or "")


def test_tracestate_malformed():
    tc = ctx({"traceparent": TP, "tracestate": "novalue"})
    assert "tracestate" in (tc.problem or "") and tc.trace_id == TP[3:35]
    many = ",".join(f"k{i}=v" for i in range(33))
    assert "33 members" in (ctx({"traceparent": TP, "tracestate": many}).problem or "")


def test_sw8():
    tc = ctx({"sw8": SW8, "sw8-correlation": "x"})
    assert tc.problem is None and (tc.format, tc.trace_id, tc.span_id, tc.sampled) == ("sw8", "a.1.2", "7", True)
    assert tc.extra == {"segment_id": "seg.3", "service": "shop", "instance": "shop@host", "endpoint": "/order",
                        "target_address": "127.0.0.1:10911", "correlation": "x"}


@pytest.mark.parametrize("value, problem", [
    ("1-abc", "8 expected"),
    (SW8.replace("-7-", "-x-"), "span id"),
    ("2" + SW8[1:], "sample flag"),
    (SW8.replace(_b64("shop") + "-", "!!!-", 1), "service"),
])
def test_sw8_malformed(value, problem):
    tc = ctx({"sw8": value})
    assert tc.format == "sw8" and problem in (tc.problem or "")


def test_b3_single_and_multi():
    tc = ctx({"b3": "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90"})
    assert (tc.format, tc.trace_id, tc.span_id, tc.parent_span_id, tc.sampled, tc.problem) == (
        "b3", "80f198ee56343ba864fe8b2a57d3eff7", "e457b5a2e4d86bd1", "05e3ac9a4f6e3b90", True, None)
    assert ctx({"b3": "0"}).sampled is False and ctx({"b3": "0"}).trace_id is None
    assert ctx({"b3": "463ac35c9f6413ad-a2fb4a1d1a96d312-d"}).extra == {"debug": "1"}
    for names in (("X-B3-TraceId", "X-B3-SpanId", "X-B3-Sampled"), ("x-b3-traceid", "x-b3-spanid", "x-b3-sampled")):
        tc = ctx(dict(zip(names, ("463ac35c9f6413ad", "a2fb4a1d1a96d312", "1"), strict=True)))
        assert (tc.format, tc.trace_id, tc.span_id, tc.sampled, tc.problem) == (
            "b3-multi", "463ac35c9f6413ad", "a2fb4a1d1a96d312", True, None)


@pytest.mark.parametrize("props, problem", [
    ({"b3": "463ac35c9f6413ad"}, "span id"),
    ({"b3": "463ac35c9f6413ad-a2fb4a1d1a96d312-x"}, "sampling state"),
    ({"b3": "a-b-c-d-e"}, "at most 4"),
    ({"b3": "q"}, "sampling state"),
    ({"X-B3-TraceId": "463ac35c9f6413ad"}, "X-B3-SpanId is missing"),
    ({"X-B3-TraceId": "463ac35c9f6413a", "X-B3-SpanId": "a2fb4a1d1a96d312"}, "trace id"),
])
def test_b3_malformed(props, problem):
    assert problem in (ctx(props).problem or "")


def test_jaeger():
    tc = ctx({"uber-trace-id": "5e3c1a8f2d:7ab1:0:1"})
    assert (tc.format, tc.trace_id, tc.span_id, tc.parent_span_id, tc.sampled, tc.problem) == (
        "jaeger", "5e3c1a8f2d", "7ab1", None, True, None)
    assert ctx({"Uber-Trace-Id": "5e3c1a8f2d%3A7ab1%3A12%3A3"}).extra == {"debug": "1"}
    assert "3 expected" not in (ctx({"uber-trace-id": "1:2:3"}).problem or "")
    assert "4 expected" in (ctx({"uber-trace-id": "1:2:3"}).problem or "")
    assert "trace id" in (ctx({"uber-trace-id": "0:2:0:1"}).problem or "")


def test_case_variants_and_precedence():
    assert ctx({"TraceParent": TP}).trace_id == TP[3:35]
    # the first well-formed one wins; a malformed one is reported only when none is good
    tc = ctx({"traceparent": "ff" + TP[2:], "sw8": SW8})
    assert tc.format == "sw8" and tc.problem is None
    assert ctx({"traceparent": TP, "sw8": SW8}).format == "w3c"


def test_bounded_value():
    tc = ctx({"traceparent": "0" * (MAX_VALUE + 1)})
    assert tc.format == "w3c" and str(MAX_VALUE) in (tc.problem or "")


def test_never_raises_on_junk():
    for v in ("", "-", "--", "---", "\x00\x01", "é-é-é-é", "1-" + "-" * 7, "=" * 9):
        for name in ("traceparent", "sw8", "b3", "uber-trace-id", "X-B3-TraceId", "X-B3-SpanId"):
            tc = trace_context({name: v})
            assert tc is None or tc.format


_NAMES = ("traceparent", "tracestate", "sw8", "b3", "X-B3-TraceId", "x-b3-spanid", "X-B3-Sampled", "uber-trace-id")


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(_NAMES), st.text(alphabet="0123456789abcdefABX-:=,%.\x00é", max_size=80)))
def test_any_values_give_a_context_or_none(props):
    tc = trace_context(props)
    assert tc is None or (tc.format and isinstance(tc.to_json(), dict))
