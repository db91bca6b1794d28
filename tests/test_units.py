"""rmqsniff.units: the one duration parser (filter, command line, live, replay pacing) and the
size parser."""
from __future__ import annotations

import pytest

from rmqsniff.filter import FilterError, compile_filter
from rmqsniff.units import parse_duration, parse_duration_ms, parse_size


@pytest.mark.parametrize("text,ms", [("50ms", 50.0), ("7", 7.0), (" 1.5s ", 1500.0), ("2.", 2.0), (".5", 0.5),
                                     ("5 ms", 5.0), ("1MIN", 60000.0), ("3us", 0.003), ("3µs", 0.003),
                                     ("3μs", 0.003), ("3ΜS", 0.003), ("500ns", 0.0005), ("2h", 7200000.0)])
def test_duration_ms(text, ms):
    assert parse_duration_ms(text) == pytest.approx(ms)


def test_a_bare_number_is_in_the_callers_unit():
    assert parse_duration_ms("1.5", bare="s") == 1500.0
    assert parse_duration_ms("1.5ms", bare="s") == 1.5
    assert parse_duration("10") == 10.0


@pytest.mark.parametrize("text", ["", "ms", "fast", "-3ms", "5 parsecs", "1e3", "5ſ", "5 m s", "5.5.5"])
def test_not_a_duration(text):
    assert parse_duration_ms(text) is None
    with pytest.raises(ValueError, match=r"expected e\.g\. 30s, 5m, 250ms"):
        parse_duration(text)


def test_seconds_as_replay_took_them():
    assert parse_duration("250ms") == 0.25 and parse_duration("5m") == 300.0 and parse_duration("1 h") == 3600.0
    assert parse_duration(" 30S ") == 30.0 and parse_duration("0") == 0.0


def test_a_quoted_duration_that_is_no_unit_is_a_filter_error_not_a_crash():
    assert compile_filter('latency > "5μs"').fields == {"latency"}
    with pytest.raises(FilterError, match="not a duration"):
        compile_filter('latency > "5ſ"')


@pytest.mark.parametrize("text,n", [("4KiB", 4096), ("1.5kB", 1500), ("100", 100), ("12 B", 12), ("1Ti", 1 << 40)])
def test_sizes(text, n):
    assert parse_size(text) == n


@pytest.mark.parametrize("text", ["", "lots", "5 parsecs", "-1", "4XB"])
def test_not_a_size(text):
    assert parse_size(text) is None
