"""The replay engine's fast path against the real RocketMQ 5.3 cluster: sends re-sent from
pre-encoded frames (several copies, several loops) store exactly the captured messages."""
from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter

import pytest

from dissectors.remoting.message import parse_properties
from replay.engine import MAX, Guard, Options, Pacing, Replay, Rules, build_plan
from replay.engine.safety import endpoint
from rmqsniff.filter import compile_filter
from rmqsniff.pipeline import analyze
from tests.support.exchanges import request_of
from tests.support.replay_cluster import PRODUCER_CAPTURE as CAPTURE
from tests.support.replay_cluster import PRODUCER_TRUTH as TRUTH
from tests.support.replay_cluster import consume

pytestmark = pytest.mark.rocketmq

COPIES, LOOPS = 3, 2


def test_templated_sends_store_the_captured_messages(rocketmq_cluster):
    cluster = rocketmq_cluster
    topic = f"ReplayFast_{uuid.uuid4().hex[:6]}"
    cluster.admin(f"topic={topic}")
    exchanges = analyze([str(CAPTURE)]).exchanges
    plan = build_plan(exchanges, flt=compile_filter("code == SEND_MESSAGE_V2"))
    opts = Options(target=endpoint(cluster.namesrv_addr), guard=Guard(["127.0.0.1"], plan.servers, True),
                   pacing=Pacing(MAX), rules=Rules(topics={"TopicTest": topic}), copies=COPIES,
                   loops=LOOPS, via_proxy=False)
    run = Replay(plan, opts)
    rep = asyncio.run(run.run()).to_dict()

    sends = [request_of(st.ex) for s in plan.sessions for st in s.steps]
    oneway = sum(1 for cmd in sends if cmd.is_oneway)
    runs = COPIES * LOOPS
    assert rep["sent"] == rep["planned"] == runs * len(sends)
    assert rep["answered"] == runs * (len(sends) - oneway) and rep["errors"] == 0
    # every send after the first use of its step went out from a template
    assert run.templated == (runs - 1) * len(sends)

    # what the broker stored: each captured (body, tags, keys) once per copy and loop, under its
    # UNIQ_KEY; bodies as the scenario's ground truth has them (big ones went compressed)
    ids = {parse_properties(cmd.ext.get("i", "")).get("UNIQ_KEY") for cmd in sends}
    truth = [m for m in json.loads(TRUTH.read_text())["sent"] if m["msg_id"] in ids]
    assert len(truth) == len(sends)
    captured = Counter((m["body_sha256"], m["tags"], m["keys"]) for m in truth)
    got = consume(cluster, topic, expected=runs * len(sends))
    consumed = Counter((m["body_sha256"], m["tags"], m["keys"]) for m in got)
    assert consumed == Counter({k: runs * n for k, n in captured.items()})
    assert {m["msgId"] for m in got} <= ids
