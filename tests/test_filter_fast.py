"""The columnar filter path (``Filter.columnar`` over the TUI store's ``ExchangeList``)
selects exactly what the per-exchange filter selects: fixed and generated expressions
over every real capture, chunk boundaries, columns filled in steps, many distinct keys."""
from __future__ import annotations

from array import array

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dissectors.remoting.command import RemotingCommand
from rmqsniff.filter import COLUMN_FIELDS, compile_filter
from rmqsniff.model import Connection, Exchange, Message
from rmqsniff.pipeline import analyze
from rmqsniff.tui.store import ExchangeList, filter_into
from tests.support.captures import plaintext_pcaps

CAPTURES = plaintext_pcaps()
CAPTURE_NAMES: list[str | None] = [p.name for p in CAPTURES] or [None]  # None: skipped, no captures

EXPRESSIONS = [
    "code == SEND_MESSAGE_V2", "code != SEND_MESSAGE_V2", "code == 310", "code < 100", "code >= 300",
    "code ~ PULL", "code in {SEND_MESSAGE_V2, PULL_MESSAGE, 34}", "code not in {SEND_MESSAGE_V2}", "code",
    "not code", "code == SendMessage", "code == ReceiveMessage or code == QueryRoute",
    "response_code == SUCCESS", "response_code != 0", "response_code ~ SUCC", "response_code",
    "not response_code", "response_code in {SYSTEM_BUSY, PULL_NOT_FOUND, 1}", "response_code > 0",
    "status == error", "status == success", "status == oneway", "status != answered", "status ~ ans",
    "status in {unanswered, orphan, no_message}", "status not in {answered}", "status == ANSWERED",
    "latency > 3ms", "latency <= 1ms", "latency == 0", "latency != 0", "latency", "not latency",
    "latency in {0, 1}", "latency not in {0}", "latency ~ 1", "not latency > 1ms",
    "size > 1KiB", "size <= 100", "size == 0", "size != 0", "size in {0, 100}", "size not in {0}", "size",
    "conn == 3", "conn != 0", "conn < 2", "conn in {0, 2, 4}", "conn not in {1}", "conn ~ 1", "conn",
    'topic == "orders"', "topic", "not topic", "topic ~ \"^T\"", "topic != x", "topic in {a, b}",
    "topic not in {a}", "group", "group ~ \"(?i)group\"", "group != x", "not group",
    "protocol == remoting", "protocol == GRPC", "protocol != remoting", "protocol ~ rem",
    "tag", "keys", "msgid", "tag ~ Tag and code == SEND_MESSAGE_V2", "client ~ 10", "broker",
    "language == JAVA", "version > 0", "opaque < 10",
    "status == error or conn == 3", "code == SEND_MESSAGE_V2 and topic ~ o and latency > 1ms",
    "not (status == error or latency > 2ms) and (group or tag)",
    "(tag or keys) and not code == PULL_MESSAGE", "msgid or status == oneway or size < 200",
    "!(conn == 1 || conn == 2) && !topic", "code == HEART_BEAT or (not group and not tag and size > 10)",
]


def _select_plain(exs, f):
    return [i for i, ex in enumerate(exs) if f(ex)]


def _select_fast(exs, f, chunk):
    store = ExchangeList(exs)
    out = array("l")
    assert filter_into(store, f, 0, len(store), out, chunk=chunk)
    return list(out)


@pytest.fixture(scope="module", params=CAPTURE_NAMES)
def capture(request):
    if request.param is None:
        pytest.skip("no captures")
    return analyze([str(CAPTURES[0].parent / request.param)]).exchanges


def test_every_expression_selects_the_same_exchanges(capture):
    assert capture
    for expr in EXPRESSIONS:
        f = compile_filter(expr)
        want = _select_plain(capture, f)
        assert _select_fast(capture, f, 7) == want, expr
        assert _select_fast(capture, f, 65536) == want, expr


def test_columns_filled_in_steps_like_the_loader(capture):
    """The loader extends the columns batch by batch while the view worker filters."""
    store = ExchangeList()
    f = compile_filter("status == error or conn == 3 or (topic and latency > 1ms) or tag")
    out = array("l")
    done = 0
    for lo in range(0, len(capture), 5):
        store.extend(capture[lo:lo + 5])
        if lo % 10 == 0:
            store.columns.extend_to(store, len(store))
        assert filter_into(store, f, done, len(store), out, chunk=3)
        done = len(store)
    assert list(out) == _select_plain(capture, f)


def _leaf(fields_values):
    field, values = fields_values
    ops = ["==", "!=", "<", "<=", ">", ">=", "~", "in", "not in", ""]

    def build(op, v, vs):
        if op == "":
            return field
        if op in ("in", "not in"):
            return f"{field} {op} {{{', '.join(vs)}}}"
        return f"{field} {op} {v}"
    return st.builds(build, st.sampled_from(ops), st.sampled_from(values),
                     st.lists(st.sampled_from(values), min_size=1, max_size=3))


def _values(exchanges):
    """Literals worth testing per field: values the capture really has, and some it has not."""
    from rmqsniff.filter import getter

    out: dict[str, set[str]] = {f: {"0", "1", "x"} for f in COLUMN_FIELDS + ("tag", "keys", "msgid")}
    out["latency"] = {"0", "0.5ms", "2ms", "1s"}
    out["size"] = {"0", "100", "1KiB"}
    out["status"] |= {"answered", "error", "success", "oneway", "unanswered", "no_message", "orphan"}
    out["protocol"] |= {"remoting", "grpc"}
    out["code"] |= {"SEND_MESSAGE_V2", "PULL_MESSAGE", "HEART_BEAT", "SendMessage", "10"}
    out["response_code"] |= {"SUCCESS", "SYSTEM_BUSY", "PULL_NOT_FOUND"}
    for ex in exchanges[:300]:
        for f in ("code", "response_code", "conn", "topic", "group", "tag", "keys"):
            v = getter(f)(ex)
            for x in (v if isinstance(v, tuple) else (v,)):
                if x is not None and str(x).replace("_", "").replace("%", "").replace("-", "").isalnum():
                    out[f].add(str(x))
    # regex-safe and word-safe literals only
    return {f: sorted(v for v in vals if v and v.replace("_", "").replace(".", "").replace("%", "")
                      .replace("-", "").isalnum()) for f, vals in out.items()}


def _expressions(values):
    leaf = st.sampled_from(sorted(values.items())).flatmap(_leaf)
    return st.recursive(leaf, lambda inner: st.one_of(
        st.builds(lambda a: f"not ({a})", inner),
        st.builds(lambda a, b: f"({a}) and ({b})", inner, inner),
        st.builds(lambda a, b: f"({a}) or ({b})", inner, inner),
        st.builds(lambda a, b, c: f"({a}) or ({b}) and not ({c})", inner, inner, inner)), max_leaves=6)


_REAL: dict[str, tuple] = {}


def _real(name):
    if name not in _REAL:
        exs = analyze([str(CAPTURES[0].parent / name)]).exchanges
        _REAL[name] = (exs, _values(exs))
    return _REAL[name]


@pytest.mark.skipif(not CAPTURES, reason="no captures")
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from([p.name for p in CAPTURES]).flatmap(
    lambda name: st.tuples(st.just(name), _expressions(_real(name)[1]))), st.sampled_from([5, 64, 65536]))
def test_generated_expressions_select_the_same_exchanges(case, chunk):
    name, expr = case
    exs = _real(name)[0]
    try:
        f = compile_filter(expr)
    except ValueError:  # e.g. ordering an enum: not this test's business
        return
    assert _select_fast(exs, f, chunk) == _select_plain(exs, f), expr


def test_many_distinct_keys_and_mixed_protocols():
    """More than 256 topics (ids no longer fit a byte), gRPC next to remoting."""
    exs = []
    for i in range(700):
        conn = Connection(i % 5, ("10.0.0.1", 50000 + i % 5), ("10.0.0.9", 10911))
        req = RemotingCommand(310 if i % 3 else 11, 0, i, ext={"b": f"t{i % 300}", "a": f"g{i % 7}"}
                              if i % 3 else {"topic": f"t{i % 300}", "consumerGroup": f"g{i % 7}"})
        resp = RemotingCommand(i % 4, 1, i) if i % 5 else None
        ex = Exchange(i, conn, "remoting", "answered" if resp else "unanswered",
                      Message(i * 0.01, req, True, size=100 + i),
                      Message(i * 0.01 + 0.001 * (i % 9), resp, False, size=10) if resp else None)
        exs.append(ex)
    for expr in ["topic == t299", "topic in {t1, t250, t299}", "topic ~ 2.9", "not topic == t5",
                 "group == g3 and topic != t7", "code == SEND_MESSAGE_V2 and response_code == 2",
                 "status == error or latency > 5ms", "size > 500 and conn in {1, 3}"]:
        f = compile_filter(expr)
        want = _select_plain(exs, f)
        assert want, expr
        assert _select_fast(exs, f, 100) == want, expr
    store = ExchangeList(exs)
    store.columns.extend_to(store, len(store))
    assert len(store.columns.column("topic").reps) == 300


def test_a_plain_list_or_a_plain_predicate_still_filters():
    exs = ExchangeList()
    out = array("l")
    assert filter_into(exs, lambda ex: True, 0, 0, out)
    assert filter_into([], compile_filter("topic"), 0, 0, out) and not out


def test_exchanges_the_columns_cannot_read_are_filtered_per_exchange():
    class Odd:  # a protocol's command without code or ext
        opaque = 1

    conn = Connection(1, ("10.0.0.1", 50000), ("10.0.0.9", 10911))
    good = Exchange(0, conn, "remoting", "oneway", Message(0.0, RemotingCommand(105, 2, 1, ext={"topic": "t"}), True))
    odd = Exchange(1, conn, "oddproto", "oneway", Message(0.0, Odd(), True))
    store = ExchangeList([good, odd])
    store.columns.extend_to(store, 2)
    assert store.columns.broken
    f = compile_filter("protocol == remoting")
    assert f.columnar(store.columns) is None
    out = array("l")
    assert filter_into(store, f, 0, 2, out) and list(out) == [0]
