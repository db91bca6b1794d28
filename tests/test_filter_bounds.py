"""Filters run in bounded time and bounded depth: ``~`` is RE2 (linear in the value, no
backtracking), and nesting past MAX_DEPTH is a FilterError with a position, never a
RecursionError."""
from __future__ import annotations

import pytest

from rmqsniff.filter import Columns, FilterError, compile_filter
from rmqsniff.filter.parser import MAX_DEPTH
from rmqsniff.pipeline import analyze
from tests.support.remoting_scenario import NAMESRV, _req, _resp, write_scenario

LONG_TOPIC = "a" * 5000 + "b"


@pytest.fixture(scope="module")
def long_topic_exchanges(tmp_path_factory):
    """One route query for a topic of 5000 'a's and a 'b', and one for orders_eu."""
    scenario = {
        "long": (("10.0.1.3", 40003), NAMESRV, _req(105, 3001, {"topic": LONG_TOPIC}),
                 _resp(17, 3001, remark="no route"), 0.005),
        "short": (("10.0.1.3", 40003), NAMESRV, _req(105, 3002, {"topic": "orders_eu"}),
                  _resp(17, 3002, remark="no route"), 0.005),
    }
    path = tmp_path_factory.mktemp("bounds") / "long.pcap"
    write_scenario(path, scenario)
    res = analyze([str(path)])
    assert not res.errors and len(res.exchanges) == 2
    return res.exchanges


@pytest.mark.timeout(10)
def test_a_catastrophic_regex_does_not_hang(long_topic_exchanges):
    # With Python's re this search backtracks 2**5000 ways on the long topic (the issue:
    # 9 s on 27 characters, doubling per character); RE2 is linear in the value.
    f = compile_filter('topic ~ "(a+)+$"')
    assert [f(ex) for ex in long_topic_exchanges] == [False, False]
    g = compile_filter('topic ~ "(a+)+b$"')
    assert [g(ex) for ex in long_topic_exchanges] == [True, False]
    # the column engine (the TUI's) runs the same compiled test
    cols = Columns()
    assert g.columnar(cols).mask(long_topic_exchanges, 0, 2) == b"\x01\x00"  # type: ignore[union-attr]


@pytest.mark.parametrize("expr,hits", [
    ('topic ~ "rders"', [False, True]),  # a search, not a full match
    ('topic ~ "ORDERS"', [False, False]),  # case-sensitive
    ('topic ~ "(?i)ORDERS"', [False, True]),
    ('topic ~ "^orders_(eu|us)$"', [False, True]),
    (r'topic ~ "^a{3}\w+b$"', [True, False]),
    ('topic ~ "(?P<x>ord)"', [False, True]),
])
def test_ordinary_regexes_keep_their_meaning(long_topic_exchanges, expr, hits):
    f = compile_filter(expr)
    assert [f(ex) for ex in long_topic_exchanges] == hits


@pytest.mark.parametrize("pattern,what", [
    (r"(a)\\1", "backreference \\1"),
    ("(?P<n>a)(?P=n)", "backreference (?P=...)"),
    ("orders(?=_eu)", "lookahead (?="),
    ("orders(?!_us)", "negative lookahead (?!"),
    ("(?<=x)a", "lookbehind (?<="),
    ("(?<!x)a", "negative lookbehind (?<!"),
])
def test_backreferences_and_lookaround_are_filter_errors(pattern, what):
    expr = f'topic == x or topic ~ "{pattern}"'
    with pytest.raises(FilterError) as ei:
        compile_filter(expr)
    e = ei.value
    assert e.message == f"unsupported in filters (RE2): {what}"  # one line
    assert e.position == expr.index('"')  # at the regex token, underlined whole
    assert e.length == len(expr) - e.position


@pytest.mark.parametrize("pattern,msg", [("(", "missing )"), ("a**", "bad repetition"), ("x{1001}", "repetition")])
def test_bad_regexes_say_why(pattern, msg):
    with pytest.raises(FilterError) as ei:
        compile_filter(f'topic ~ "{pattern}"')
    assert ei.value.message.startswith("bad regular expression: ") and msg in ei.value.message
    assert ei.value.position == 8


@pytest.mark.parametrize("n", [MAX_DEPTH + 1, 330, 10_000])
def test_deep_parentheses_are_a_filter_error(n):
    for expr in ("(" * n + "topic" + ")" * n, "(" * n):
        with pytest.raises(FilterError) as ei:
            compile_filter(expr)
        assert ei.value.message == f"filter nested too deeply (more than {MAX_DEPTH} levels)"
        assert ei.value.position == MAX_DEPTH  # the first "(" past the limit
        assert ei.value.caret().split("\n")[1] == " " * MAX_DEPTH + "^"


@pytest.mark.parametrize("neg", ["not ", "!", "not (", "(not "])
def test_deep_not_is_a_filter_error(neg):
    expr = neg * 10_000 + "topic"
    with pytest.raises(FilterError) as ei:
        compile_filter(expr)
    assert "nested too deeply" in ei.value.message
    assert ei.value.position < len(expr)


def test_nesting_up_to_the_limit_compiles_and_runs(long_topic_exchanges):
    n = MAX_DEPTH
    assert [compile_filter("(" * n + 'topic ~ "^orders"' + ")" * n)(ex) for ex in long_topic_exchanges] == [False, True]
    half = n // 2
    expr = "(not " * half + "topic == orders_eu" + ")" * half
    assert [compile_filter(expr)(ex) for ex in long_topic_exchanges] == [False, True]
    chain = "(" * (n - 1) + " or ".join(["(topic == x)"] * 500) + ")" * (n - 1)  # long, not deep
    assert [compile_filter(chain)(ex) for ex in long_topic_exchanges] == [False, False]
