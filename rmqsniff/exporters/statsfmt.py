"""Render :class:`rmqsniff.stats.Stats` as Envoy admin text, Prometheus exposition or JSON.

Every renderer takes a ``Stats`` or a ``Stats.snapshot()`` dict (e.g. one loaded back
from a JSON file), so the three outputs always agree.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    SummaryMetricFamily,
)

_SUMMARY_QUANTILES = (("0.5", "p50"), ("0.9", "p90"), ("0.99", "p99"), ("1", "max"))


def _snap(stats: Any, top: int | None = None) -> dict[str, Any]:
    return stats if isinstance(stats, dict) else stats.snapshot(top)


def _num(v: float) -> str:
    return f"{round(float(v), 3):.12g}"


def _stat_part(name: str) -> str:
    """A name usable as one dotted Envoy stat segment."""
    return re.sub(r"[^A-Za-z0-9_]", "_", name.replace("<other>", "OTHER"))


def _code_stem(key: str, row: dict[str, Any]) -> str:
    base = f"request_code.{_stat_part(row['name'])}"
    return f"{_stat_part(row['protocol'])}.{base}" if ":" in key else base


def _envoy_hist(name: str, h: dict[str, Any], count: int) -> str:
    if not count:
        return f"{name}: No recorded values"
    # rmqsniff has no flush intervals: the interval value is nan, as Envoy prints it
    # when nothing was recorded since the last flush.
    parts = " ".join(f"P{q}(nan,{_num(v)})" for q, v in h["quantiles"].items())
    return f"{name}: {parts}"


def render_envoy(stats: Any) -> str:
    """Envoy admin ``/stats`` style: ``rocketmq.<prefix>.<name>: <value>`` lines.

    Counters and gauges sorted by name, then histograms in Envoy's summary form
    (``P0(interval,cumulative) P25(..) .. P100(..)``) sorted by name.  Breakdowns are
    left out (JSON / Prometheus only).
    """
    s = _snap(stats)
    root = s["root"]
    vals: dict[str, int | float] = dict(s["counters"])
    for g, d in s["gauges"].items():
        vals[g] = d["value"]
        vals[f"{g}_max"] = d["max"]
    for k, v in s["transport"].items():
        vals[f"transport.{_stat_part(k)}"] = v
    hists: dict[str, str] = {}
    rt = s["histograms"]["request_time_ms"]
    hists["request_time_ms"] = _envoy_hist(root + "request_time_ms", rt, rt["count"])
    for key, row in s["codes"].items():
        stem = _code_stem(key, row)
        vals[f"{stem}.requests"] = row["requests"]
        vals[f"{stem}.errors"] = row["errors"]
        name = f"{stem}.request_time_ms"
        hists[name] = _envoy_hist(root + name, row, row["answered"])
    for key, row in s["responses"].items():
        proto = f"{_stat_part(row['protocol'])}." if ":" in key else ""
        vals[f"{proto}response_code.{_stat_part(key.split(':')[-1])}"] = row["count"]
    lines = [f"{root}{k}: {_num(vals[k])}" for k in sorted(vals)]
    lines += [hists[k] for k in sorted(hists)]
    return "\n".join(lines) + "\n"


def render_json(stats: Any, top: int | None = None) -> str:
    """``orjson`` dump of the snapshot."""
    return orjson.dumps(_snap(stats, top), option=orjson.OPT_NON_STR_KEYS).decode()


# ---------------------------------------------------------------- Prometheus
def _summary(name: str, doc: str, labels: list[str],
             rows: Iterable[tuple[list[str], dict[str, Any]]]) -> Metric:
    fam = SummaryMetricFamily(name, doc, labels=labels)
    for lv, row in rows:
        fam.add_metric(lv, row["answered"], row["sum"])
        base = dict(zip(labels, lv, strict=True))
        for q, field in _SUMMARY_QUANTILES:
            fam.add_sample(name, {**base, "quantile": q}, row[field])
    return fam


class StatsCollector:
    """A ``prometheus_client`` collector over a :class:`Stats` (or a snapshot dict).

    Register it on any ``CollectorRegistry`` (e.g. for ``start_http_server``).
    """

    def __init__(self, stats: Any, top: int | None = None) -> None:
        self.stats = stats
        self.top = top

    def describe(self) -> list[Metric]:
        return []  # names are dynamic; avoids a collect() at register time

    def collect(self) -> Iterator[Metric]:
        s = _snap(self.stats, self.top)
        pre = s["stat_prefix"]
        lp = ["stat_prefix"]
        for name, v in s["counters"].items():
            counter = CounterMetricFamily(f"rocketmq_{name}", f"rocketmq.{pre}.{name} counter", labels=lp)
            counter.add_metric([pre], v)
            yield counter
        for name, d in s["gauges"].items():
            for suffix, key in (("", "value"), ("_max", "max")):
                gauge = GaugeMetricFamily(f"rocketmq_{name}{suffix}",
                                          f"rocketmq.{pre}.{name} gauge ({key})", labels=lp)
                gauge.add_metric([pre], d[key])
                yield gauge
        h = s["histograms"]["request_time_ms"]
        hist = HistogramMetricFamily("rocketmq_request_time_ms", "latency of answered requests (ms)", labels=lp)
        buckets = [(_num(le), c) for le, c in h["buckets"]] + [("+Inf", h["count"])]
        hist.add_metric([pre], buckets, h["sum"])
        yield hist

        cl = lp + ["protocol", "code", "name"]
        rows = [([pre, r["protocol"], str(r["code"]), r["name"]], r) for r in s["codes"].values()]
        for metric, field, doc in (
            ("rocketmq_requests_by_code", "requests", "requests per request code"),
            ("rocketmq_request_errors_by_code", "errors", "error answers per request code"),
            ("rocketmq_request_bytes_by_code", "bytes", "request+response bytes per code"),
        ):
            fam = CounterMetricFamily(metric, doc, labels=cl)
            for lv, r in rows:
                fam.add_metric(lv, r[field])
            yield fam
        yield _summary("rocketmq_request_time_by_code_ms",
                       "latency per request code (ms)", cl, rows)

        fam = CounterMetricFamily("rocketmq_responses_by_code", "responses per response code",
                                  labels=cl)
        for key, r in s["responses"].items():
            fam.add_metric([pre, r["protocol"], str(r["code"]), key.split(":")[-1]], r["count"])
        yield fam
        fam = CounterMetricFamily("rocketmq_transport_events", "TCP transport events",
                                  labels=lp + ["kind"])
        for k, v in s["transport"].items():
            fam.add_metric([pre, k], v)
        yield fam
        fam = CounterMetricFamily("rocketmq_decoding_errors_by_reason",
                                  "frames that failed to decode", labels=lp + ["reason"])
        for k, v in s["decoding_errors"].items():
            fam.add_metric([pre, k], v)
        yield fam

        bl = lp + ["by", "key"]
        brows = [([pre, by[3:], key], r) for by, bd in s["breakdowns"].items()
                 for key, r in bd["rows"].items()]
        for metric, field, doc in (
            ("rocketmq_breakdown_requests", "requests", "requests per breakdown key"),
            ("rocketmq_breakdown_errors", "errors", "error answers per breakdown key"),
            ("rocketmq_breakdown_bytes", "bytes", "request+response bytes per breakdown key"),
        ):
            fam = CounterMetricFamily(metric, doc, labels=bl)
            for lv, r in brows:
                fam.add_metric(lv, r[field])
            yield fam
        yield _summary("rocketmq_breakdown_request_time_ms",
                       "latency per breakdown key (ms)", bl, brows)
        fam = CounterMetricFamily("rocketmq_breakdown_overflow",
                                  "exchanges folded into <other> (key cap reached)",
                                  labels=lp + ["by"])
        for by, bd in s["breakdowns"].items():
            fam.add_metric([pre, by[3:]], bd["overflow"])
        yield fam
        if "lag" in s:
            yield from _lag_metrics(pre, s["lag"])
        if "journeys" in s:
            yield from _journey_metrics(pre, s["journeys"])


_LAG_GAUGES = (
    ("rocketmq_consumer_lag_messages", "lag", "broker max offset minus the group's committed offset"),
    ("rocketmq_consumer_offset", "consumer_offset", "the group's committed offset (latest seen)"),
    ("rocketmq_consumer_inflight_messages", "inflight", "messages a pop / gRPC consumer received, not acked"),
    ("rocketmq_consumer_inflight_oldest_seconds", "inflight_oldest_s",
     "age of the oldest message in flight (s)"),
)


def _lag_metrics(pre: str, lag: dict[str, Any]) -> Iterator[Metric]:
    """Consumer lag gauges (:mod:`rmqsniff.lag`): one series per group, topic, broker and
    queue, only where the value is known."""
    rows = lag["rows"]
    gl = ["stat_prefix", "group", "topic", "broker", "queue"]
    for metric, field, doc in _LAG_GAUGES:
        fam = GaugeMetricFamily(metric, doc, labels=gl)
        for r in rows:
            if r["group"] is not None and r[field] is not None:
                fam.add_metric([pre, r["group"], r["topic"], r["broker"], str(r["queue"])], r[field])
        yield fam
    fam = GaugeMetricFamily("rocketmq_broker_offset", "the queue's max offset (highest seen)",
                            labels=["stat_prefix", "topic", "broker", "queue"])
    done: set[tuple[str, str, int]] = set()
    for r in rows:
        k = (r["topic"], r["broker"], r["queue"])
        if r["broker_offset"] is not None and k not in done:
            done.add(k)
            fam.add_metric([pre, r["topic"], r["broker"], str(r["queue"])], r["broker_offset"])
    yield fam
    counter = CounterMetricFamily("rocketmq_consumer_lag_dropped", "lag facts not kept: a table was full",
                                  labels=["stat_prefix", "table"])
    for table, n in sorted(lag["overflow"].items()):
        counter.add_metric([pre, table], n)
    yield counter


def _journey_metrics(pre: str, j: dict[str, Any]) -> Iterator[Metric]:
    """Per topic and group: messages in and out, delivery and end-to-end latency quantiles."""
    bl = ["stat_prefix", "by", "key"]
    rows = [([pre, by[3:], key], r) for by in ("by_topic", "by_group") for key, r in j[by]["rows"].items()]
    for metric, field, doc in (("rocketmq_journey_messages_in", "messages_in", "messages stored (not requests)"),
                               ("rocketmq_journey_messages_out", "messages_out", "messages delivered, per group")):
        fam = CounterMetricFamily(metric, doc, labels=bl)
        for lv, r in rows:
            fam.add_metric(lv, r[field])
        yield fam
    for name, doc in (("delivery", "stored to first delivery (ms)"), ("e2e", "born to acked (ms)")):
        g = GaugeMetricFamily(f"rocketmq_journey_{name}_latency_ms", doc, labels=bl + ["quantile"])
        for lv, r in rows:
            for q, p in (("0.5", "p50"), ("0.9", "p90"), ("0.99", "p99")):
                if r[f"{name}_{p}"] is not None:
                    g.add_metric(lv + [q], r[f"{name}_{p}"])
        yield g
    g = GaugeMetricFamily("rocketmq_journey_flushed_unfinished", "journeys flushed unfinished by the cap",
                          labels=["stat_prefix"])
    g.add_metric([pre], j["flushed_unfinished"])
    yield g


def render_prometheus(stats: Any, top: int | None = None) -> str:
    """Prometheus text exposition (``generate_latest`` on a private registry)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(StatsCollector(_snap(stats, top)))
    return generate_latest(reg).decode()
