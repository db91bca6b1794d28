"""``rmqsniff replay --workers N``: local processes replaying one share each, reports merged."""
from __future__ import annotations

import json
import pickle
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import pytest

from dissectors.remoting.codes import request_name
from replay.engine import build_plan
from replay.report import Report
from rmqsniff.pipeline import analyze
from rmqsniff.stats import Stats
from tests.support.exchanges import request_of

ROOT = Path(__file__).resolve().parent.parent
CAPTURE = ROOT / "captures" / "remoting_json.pcap"
TRUTH = ROOT / "captures" / "remoting_json.truth.json"


def _fed(exchanges) -> Stats:
    st = Stats(prefix="t")
    for ex in exchanges:
        if ex.request is not None:
            st.request_started(ex)
        st.exchange_done(ex)
    return st


def test_stats_of_two_halves_pickled_and_merged_equal_the_stats_of_all():
    exchanges = list(analyze([str(CAPTURE)]).exchanges)
    half = len(exchanges) // 2
    a, b = _fed(exchanges[:half]), pickle.loads(pickle.dumps(_fed(exchanges[half:])))
    a.merge(b)
    got, want = a.snapshot(), _fed(exchanges).snapshot()
    assert got["counters"]["request"] == len([e for e in exchanges if e.request is not None]) > 0
    for k in ("counters", "codes", "responses", "breakdowns", "histograms", "exchanges"):
        assert got[k] == want[k], k
    assert {n: g["value"] for n, g in got["gauges"].items()} == {n: g["value"] for n, g in want["gauges"].items()}


def test_report_merge_adds_counts_rates_and_keeps_the_send_window():
    a, b = Report(requested_rate=100.0, planned=10), Report(requested_rate=50.0, planned=5)
    a.sent, a.first_send, a.last_send, a.pace_start = 6, 10.0, 11.0, 10.0
    b.sent, b.first_send, b.last_send, b.pace_start = 4, 10.1, 12.0, 10.0
    a.not_sent["--duration reached"] = 4
    b.not_sent["--duration reached"] = 1
    b.diff_counts["code: SUCCESS -> SYSTEM_ERROR"] = 2
    a.merge(pickle.loads(pickle.dumps(b)))
    d = a.to_dict()
    assert (d["planned"], d["sent"], d["not_sent"]) == (15, 10, {"--duration reached": 5})
    assert d["rate"]["requested"] == 150.0 and d["rate"]["achieved"] == pytest.approx(9 / 2.0, abs=0.1)
    assert d["diff"]["mismatches"] == {"code: SUCCESS -> SYSTEM_ERROR": 2}


def test_a_worker_without_a_report_is_named_and_its_share_counted_as_not_sent(tmp_path):
    report = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, "-m", "rmqsniff", "replay", str(CAPTURE), "--target", "127.0.0.1:1",
                           "--allow-target", "127.0.0.1", "--max", "--direct", "--workers", "2",
                           "--report", str(report)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    d = json.loads(report.read_text())
    plan = build_plan(analyze([str(CAPTURE)]).exchanges)
    assert d["sent"] == 0 and d["planned"] == plan.requests
    assert sum(n for k, n in d["not_sent"].items() if k.startswith("worker ")) == plan.requests
    assert sum("worker 0/2:" in n or "worker 1/2:" in n for n in d["notes"]) == 2


def test_workers_refuse_share():
    proc = subprocess.run([sys.executable, "-m", "rmqsniff", "replay", str(CAPTURE), "--target", "127.0.0.1:1",
                           "--allow-target", "127.0.0.1", "--workers", "2", "--share", "0/2"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "leave out --share" in proc.stderr


@pytest.mark.rocketmq
def test_two_workers_replay_the_whole_plan_into_the_real_cluster(rocketmq_cluster, tmp_path):
    from tests.support.replay_cluster import consume, prod_flag

    cluster = rocketmq_cluster
    plan = build_plan(analyze([str(CAPTURE)]).exchanges)
    topic = f"WorkersTopic_{uuid.uuid4().hex[:6]}"
    looked_up = {request_of(st.ex).ext.get("topic") for s in plan.sessions for st in s.steps
                 if request_name(st.code) == "GET_ROUTEINFO_BY_TOPIC"}
    cluster.admin(f"topic={topic}", *(f"topic={t}" for t in sorted(looked_up) if t and t.startswith("%RETRY%")))
    report, scale = tmp_path / "report.json", 3
    proc = subprocess.run([sys.executable, "-m", "rmqsniff", "replay", str(CAPTURE), "--target", cluster.namesrv_addr,
                           "--allow-target", "127.0.0.1", "--map-topic", f"TopicTest={topic}", "--scale", str(scale),
                           "--rate", "200/s", *prod_flag(cluster), "--workers", "2", "--report", str(report)],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    d = json.loads(report.read_text())

    # one report: the single-process plan's counts, per request code, nothing lost
    assert d["planned"] == d["sent"] == plan.requests * scale and not d["not_sent"]
    assert d["errors"] == 0 and d["answered"] + d["oneway"] == d["sent"]
    want: Counter[str] = Counter()
    for s in plan.sessions:
        for st in s.steps:
            want[request_name(st.code)] += scale
    assert Counter({r["name"]: r["count"] for r in d["codes"]}) == want
    assert d["stats"]["counters"]["request"] == d["sent"]
    diff = d["diff"]
    assert diff["compared"] >= diff["matched"] > 0 and set(diff["examples"]) == set(diff["mismatches"])
    assert not any(k.startswith("code") and "SEND" in str(diff["examples"][k][0]["request"])
                   for k in diff["mismatches"])  # every send succeeded as captured
    assert d["rate"]["requested"] == pytest.approx(200.0)
    assert [n for n in d["notes"] if n.startswith("share ")] and "2 worker processes" in d["notes"][-1]
    proxy = d["proxy"]["counters"]  # each worker's built-in proxy, summed
    assert proxy["request"] == d["sent"] and proxy["answered"] == d["answered"] and proxy["oneway"] == d["oneway"]

    truth = json.loads(TRUTH.read_text())
    captured = Counter((m["body_sha256"], m["tags"], m["keys"]) for m in truth["sent"])
    consumed = Counter((m["body_sha256"], m["tags"], m["keys"])
                       for m in consume(cluster, topic, expected=scale * len(truth["sent"])))
    assert consumed == Counter({k: scale * n for k, n in captured.items()})
