"""Distributed replay with Locust: the session sharding (quick), the command lines, and a real
Locust master with two workers (headless, one machine) replaying a producer capture into the
real RocketMQ 5.3 cluster."""
from __future__ import annotations

import json
import shlex
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from dissectors.remoting.codes import request_name
from replay.engine import build_plan
from replay.locust.shares import assign, parse_share, share_count, share_units, units
from rmqsniff.cli_replay import replay
from rmqsniff.pipeline import analyze

ROOT = Path(__file__).resolve().parent.parent
CAPTURE = ROOT / "captures" / "remoting_json.pcap"
TRUTH = ROOT / "captures" / "remoting_json.truth.json"


@pytest.fixture(scope="module")
def plan():
    return build_plan(analyze([str(CAPTURE)]).exchanges)


# ------------------------------------------------------------------ sharding

@pytest.mark.parametrize("weights,n", [([5, 1, 1, 9, 3, 3, 2], 3), ([1] * 10, 4), ([7], 3), ([], 2),
                                       ([4, 4, 4, 4], 1), ([100, 1, 1, 1, 1], 2)])
def test_assign_is_disjoint_complete_and_balanced(weights, n):
    owner = assign(weights, n)
    assert len(owner) == len(weights) and all(0 <= k < n for k in owner)  # each unit in exactly one share
    loads = [sum(w for w, k in zip(weights, owner, strict=True) if k == s) for s in range(n)]
    assert sum(loads) == sum(weights)
    # greedy bound: no share exceeds the ideal by more than the heaviest unit
    if weights:
        assert max(loads) <= sum(weights) / n + max(weights)
    assert assign(list(weights), n) == owner  # stable


def test_shares_of_a_real_plan_partition_every_session_copy(plan):
    copies = 3
    everything = units(plan, copies)
    assert len(everything) == len(plan.sessions) * copies
    for n in (1, 2, 3, 5):
        parts = [share_units(plan, copies, i, n) for i in range(n)]
        flat = [u for p in parts for u in p]
        assert sorted(flat) == sorted(everything) and len(set(flat)) == len(flat)
        assert parts == [share_units(plan, copies, i, n) for i in range(n)]  # same answer every time
    # two workers with --scale 2: each gets one copy of every session (equal request counts)
    two = [share_units(plan, 2, i, 2) for i in range(2)]
    assert all(two) and sum(len(plan.sessions[si].steps) for si, _ in two[0]) == \
        sum(len(plan.sessions[si].steps) for si, _ in two[1])


def test_parse_share_and_count_split():
    assert parse_share("1/3") == (1, 3)
    for bad in ("3/3", "x/2", "1", "-1/2", "1/0"):
        with pytest.raises(ValueError):
            parse_share(bad)
    assert sum(share_count(10, i, 3) or 0 for i in range(3)) == 10  # (None only without a total)
    assert share_count(None, 0, 2) is None


def test_share_replays_keep_the_whole_run_schedule(plan):
    from replay.engine import RATE, Guard, Options, Pacing, Replay
    from replay.locust.shares import ShareReplay

    opts = Options(target=("127.0.0.1", 1), guard=Guard(["127.0.0.1"]), pacing=Pacing(mode=RATE, rate=100.0),
                   copies=3)
    run = Replay(plan, opts)
    whole = run.report
    parts = [ShareReplay(plan, opts, i, 2) for i in range(2)]
    assert sum(p.report.planned for p in parts) == whole.planned == plan.requests * 3
    rates = [p.report.requested_rate or 0.0 for p in parts]  # None: no rate, fails both checks
    assert sum(rates) == pytest.approx(100.0)  # the rate divided among workers
    assert all(r > 0 for r in rates)
    due = [(si, c, st.index) for p in parts for si, c in p.units for st in plan.sessions[si].steps]
    assert sorted(due) == sorted((si, c, st.index) for si, s in enumerate(plan.sessions) for c in range(3)
                                 for st in s.steps)
    for p in parts:  # each share's requests are due when the whole run would send them
        assert all(p.schedule.due(0, c, si, i) == run.schedule.due(0, c, si, i) for si, c, i in due)


def test_a_failing_share_is_a_locust_failure(tmp_path):
    """Real Locust master and two workers; nothing listens on the target, so each share's replay
    fails to reach its name server: that must come out as failures, not as an empty success."""
    stats = tmp_path / "locust"
    proc = subprocess.run([sys.executable, "-m", "rmqsniff", "replay", str(CAPTURE), "--target", "127.0.0.1:1",
                           "--allow-target", "127.0.0.1", "--locust", "--workers", "2", "--report",
                           str(tmp_path / "summary.json"), f"--locust-opt=--json-file={stats}"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode != 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["complete"] and all(d["exit"] != 0 for d in summary["share"])
    rows = {(r["method"], r["name"]): r for r in json.loads(stats.with_suffix(".json").read_text())}
    assert rows[("rmqsniff", "replay share")]["num_failures"] == 2
    assert "cannot connect to the target name server" in proc.stderr


# ------------------------------------------------------------------ command lines

def test_locust_print_forwards_the_replay_options_only():
    res = CliRunner().invoke(replay, [str(CAPTURE), "--target", "127.0.0.1:1", "--allow-target", "127.0.0.1",
                                      "--map-topic", "TopicTest=T2", "--scale", "2", "--rate", "50/s",
                                      "--direct", "--sample-by", "topic", "50%", "--locust", "--workers", "3",
                                      "--locust-print", "--report", "x.json"])
    assert res.exit_code == 0, res.output
    master = next(line for line in res.output.splitlines() if line.startswith("locust ") and "--master" in line)
    worker = next(line for line in res.output.splitlines() if "--worker" in line)
    argv = shlex.split(master)
    assert argv[argv.index("--expect-workers") + 1] == "3" and argv[argv.index("-u") + 1] == "3"
    fwd = shlex.split(argv[argv.index("--replay-args") + 1])
    assert fwd[0] == str(CAPTURE.resolve())
    assert fwd[1:] == ["--target", "127.0.0.1:1", "--allow-target", "127.0.0.1", "--direct", "--map-topic",
                       "TopicTest=T2", "--rate", "50/s", "--scale", "2", "--sample-by", "topic", "50%"]
    assert "--master-host MASTER_HOST" in worker and "-f -" in worker


def test_share_and_locust_refusals():
    base = [str(CAPTURE), "--target", "127.0.0.1:1", "--allow-target", "127.0.0.1"]
    res = CliRunner().invoke(replay, [*base, "--share", "2/2"])
    assert res.exit_code == 1 and "I must be in 0..N-1" in res.output
    res = CliRunner().invoke(replay, [*base, "--events", "-"])
    assert res.exit_code == 1 and "--events goes with --share" in res.output
    res = CliRunner().invoke(replay, [*base, "--locust", "--share", "0/2"])
    assert res.exit_code == 1 and "leave out --share" in res.output
    # the capture's own servers are refused before Locust is started, as without --locust
    res = CliRunner().invoke(replay, [str(CAPTURE), "--target", "127.0.0.1:9876", "--allow-target", "127.0.0.1",
                                      "--locust"])
    assert res.exit_code == 1 and "production" in res.output


# ------------------------------------------------------------------ real cluster

@pytest.mark.rocketmq
def test_locust_master_and_two_workers_replay_into_the_real_cluster(rocketmq_cluster, tmp_path, plan):
    from tests.support.replay_cluster import consume, prod_flag

    cluster = rocketmq_cluster
    topic = f"LocustTopic_{uuid.uuid4().hex[:6]}"
    # the producer's client also looked up its push consumer's retry topic: staging gets it too,
    # so that every replayed request can succeed
    looked_up = {st.ex.request.command.ext.get("topic") for s in plan.sessions for st in s.steps
                 if request_name(st.code) == "GET_ROUTEINFO_BY_TOPIC"}
    cluster.admin(f"topic={topic}", *(f"topic={t}" for t in sorted(looked_up) if t and t.startswith("%RETRY%")))
    summary_file, stats_file = tmp_path / "summary.json", tmp_path / "locust.json"
    scale = 2
    cmd = [sys.executable, "-m", "rmqsniff", "replay", str(CAPTURE), "--target", cluster.namesrv_addr,
           "--allow-target", "127.0.0.1", "--map-topic", f"TopicTest={topic}", "--scale", str(scale), "--max",
           *prod_flag(cluster), "--locust", "--workers", "2", "--headless", "--report", str(summary_file),
           f"--locust-opt=--json-file={stats_file.with_suffix('')}", f"--locust-opt=--csv={tmp_path / 'run'}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]

    # Locust's statistics: every replayed request, by name, none failed
    rows = json.loads(stats_file.read_text())
    got = Counter({(r["method"], r["name"]): r["num_requests"] for r in rows})
    want: Counter[tuple[str, str]] = Counter()
    for s in plan.sessions:
        for st in s.steps:
            want[("remoting-oneway" if st.oneway else "remoting", request_name(st.code))] += scale
    assert got == want
    assert sum(r["num_failures"] for r in rows) == 0
    assert (tmp_path / "run_stats.csv").exists()

    # both workers took a disjoint, non-empty share; together all of it
    summary = json.loads(summary_file.read_text())
    assert summary["complete"] and [d["index"] for d in summary["share"]] == [0, 1]
    shares = [{tuple(u) for u in d["units"]} for d in summary["share"]]
    assert all(shares) and not shares[0] & shares[1]
    assert shares[0] | shares[1] == set(units(plan, scale))
    for d in summary["share"]:
        r = d["report"]
        assert d["exit"] == 0 and r["sent"] == r["planned"] > 0 and r["errors"] == 0 and not r["not_sent"]
    assert sum(d["report"]["sent"] for d in summary["share"]) == plan.requests * scale

    # the staging topic holds exactly the captured messages, scale times
    truth = json.loads(TRUTH.read_text())
    captured = Counter((m["body_sha256"], m["tags"], m["keys"]) for m in truth["sent"])
    consumed = Counter((m["body_sha256"], m["tags"], m["keys"])
                       for m in consume(cluster, topic, expected=scale * len(truth["sent"])))
    assert consumed == Counter({k: scale * n for k, n in captured.items()})
