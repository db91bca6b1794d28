"""Stateful pull/offset replay against the real RocketMQ 5.3 cluster.

A real push consumer (``tests/rocketmq/consumer/OffsetScenario.java``) is captured while it
resumes a group whose stored offsets are not zero (3 per queue: the 12 messages produced before
the capture count as consumed) and consumes 20 more (PULL_MESSAGE, QUERY_CONSUMER_OFFSET, UPDATE_CONSUMER_OFFSET). The
consumer side alone (``consumers_only``) is replayed to a fresh topic and group that a real
producer filled with 20 messages: the recorded offsets (3 and 8 per queue) mean nothing there,
so every pull must use the offsets staging returned, the pulls must yield each staged message
once, and the offsets the broker stores must be what the replay consumed.
"""
from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from dissectors.remoting import codes as c
from dissectors.remoting.command import RemotingCommand
from dissectors.remoting.message import decode_stored_messages
from replay.engine import SPEED, Guard, Options, Pacing, Replay, Rules, build_plan
from replay.engine.client import Client
from replay.engine.safety import endpoint
from rmqsniff.pipeline import analyze
from tests.support.exchanges import request_of
from tests.support.replay_report import Recording

SRC = Path(__file__).resolve().parent / "rocketmq" / "consumer" / "OffsetScenario.java"
BEFORE, N = 12, 20  # consumed before the capture / produced and consumed in it
NO_MESSAGE = {c.PULL_NOT_FOUND, c.PULL_RETRY_IMMEDIATELY}

pytestmark = pytest.mark.rocketmq


def _scenario(cluster, mode: str, topic: str, group: str, n: int) -> list[dict]:
    from tests.rocketmq import build

    classes = build._javac([SRC], build.build_server(), build.cache_dir() / "offset-scenario-classes")
    cmd = cluster.java_cmd("clients/offset", classes, "OffsetScenario", mode, cluster.namesrv_addr,
                           topic, group, str(n))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=200)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def pull_capture(rocketmq_cluster, tmp_path_factory):
    """(pcap, topic, group): a push consumer resuming at stored offsets, captured."""
    from tests.rocketmq.capture import Capture
    from tests.rocketmq.scenarios import capture_ports

    cluster = rocketmq_cluster
    sfx = uuid.uuid4().hex[:6]
    topic, group = f"OffRec_{sfx}", f"CG_offrec_{sfx}"
    cluster.admin(f"topic={topic}", f"group={group}")
    _scenario(cluster, "produce", topic, group, BEFORE)
    # the group has consumed those: 3 per queue (committed with an answer, not a client's oneway)
    asyncio.run(_commit(endpoint(cluster.broker_addr), topic, group, {q: BEFORE // 4 for q in range(4)}))
    pcap = Path(tmp_path_factory.mktemp("pull")) / "pull.pcap"
    cap = Capture(pcap, capture_ports(cluster))
    cap.start()
    try:
        lines = _scenario(cluster, "produce-push", topic, group, N)
        time.sleep(1.0)  # let the last oneway offset commits reach the capture
    finally:
        cap.stop()
    assert Counter(x["op"] for x in lines) == {"sent": N, "recv": N}
    return pcap, topic, group


async def _commit(broker: tuple[str, int], topic: str, group: str, offsets: dict[int, int]) -> None:
    cl = await Client.connect(broker)
    try:
        for q, off in offsets.items():
            r = await cl.request(RemotingCommand(c.UPDATE_CONSUMER_OFFSET, ext={
                "topic": topic, "consumerGroup": group, "queueId": str(q), "commitOffset": str(off)}))
            assert r.code == c.SUCCESS, (q, r.code, r.remark)
    finally:
        cl.close()


async def _committed(broker: tuple[str, int], topic: str, group: str, queues: int) -> dict[int, int]:
    """The consumer offsets the broker stores (QUERY_CONSUMER_OFFSET over our own client)."""
    cl = await Client.connect(broker)
    try:
        out = {}
        for q in range(queues):
            r = await cl.request(RemotingCommand(c.QUERY_CONSUMER_OFFSET, ext={
                "topic": topic, "consumerGroup": group, "queueId": str(q), "setZeroIfNotFound": "false"}))
            assert r.code == c.SUCCESS, (q, r.code, r.remark)
            assert r.ext is not None
            out[q] = int(r.ext["offset"])
        return out
    finally:
        cl.close()


def test_pull_consumer_replay_uses_the_offsets_staging_returned(rocketmq_cluster, pull_capture):
    cluster = rocketmq_cluster
    pcap, rec_topic, rec_group = pull_capture
    exchanges = analyze([str(pcap)]).exchanges
    rec_pulls = [ex for ex in exchanges if ex.code == c.PULL_MESSAGE and request_of(ex).ext["topic"] == rec_topic]
    rec_offsets = {request_of(ex).ext["queueOffset"] for ex in rec_pulls}
    assert rec_offsets == {str(BEFORE // 4), str((BEFORE + N) // 4)}  # what the capture pulled at: 3 and 8

    sfx = uuid.uuid4().hex[:6]
    topic, group = f"OffStg_{sfx}", f"CG_offstg_{sfx}"
    cluster.admin(f"topic={topic}", f"group={group}")
    staged = _scenario(cluster, "produce", topic, group, N)  # a real producer fills the fresh topic
    max_offset: dict[int, int] = Counter()
    for m in staged:
        max_offset[m["queueId"]] = max(max_offset[m["queueId"]], m["offset"] + 1)

    plan = build_plan(exchanges, consumers_only=True)
    assert not any(st.code in c.SEND_REQUESTS for s in plan.sessions for st in s.steps)
    assert plan.skipped["producer traffic (--consumers-only)"] == N
    # the capture was made on this very cluster: its servers are "production" to the guard. Paced,
    # not --max: the captured gap between the long polls (carrying a commitOffset) and the final
    # UPDATE_CONSUMER_OFFSET is kept, as the real consumer had it.
    opts = Options(target=endpoint(cluster.namesrv_addr), guard=Guard(["127.0.0.1"], plan.servers, True),
                   pacing=Pacing(mode=SPEED, speed=2.0),
                   rules=Rules(topics={rec_topic: topic}, groups={rec_group: group}),
                   timeout=2.0, via_proxy=True)
    rep = Recording(opts.diff, None, plan.requests, SPEED, cluster.namesrv_addr, "proxy")
    asyncio.run(asyncio.wait_for(Replay(plan, opts, rep).run(), 120))
    d = rep.to_dict()

    # every pull of the topic asked at an offset staging handed out for that queue
    returned: dict[int, list[int]] = defaultdict(list)
    consumed: Counter = Counter()
    pulled_ids: list[str] = []
    for q, a in rep.pairs:
        if q.code == c.QUERY_CONSUMER_OFFSET and q.ext["topic"] == topic and a.code == c.SUCCESS:
            returned[int(q.ext["queueId"])].append(int(a.ext["offset"]))
        if q.code == c.PULL_MESSAGE and q.ext["topic"] == topic:
            assert a.code == c.SUCCESS or a.code in NO_MESSAGE, (c.response_name(a.code), a.remark)
            qid = int(q.ext["queueId"])
            assert int(q.ext["queueOffset"]) in returned[qid], (qid, q.ext["queueOffset"], returned[qid])
            returned[qid].append(int(a.ext["nextBeginOffset"]))
            if a.code == c.SUCCESS:
                msgs, problems = decode_stored_messages(a.body)
                assert not problems
                consumed[qid] += len(msgs)
                for msg in msgs:
                    assert msg.unique_key is not None  # the producer gave every message its UNIQ_KEY
                    pulled_ids.append(msg.unique_key)
    assert sorted(pulled_ids) == sorted(m["msgId"] for m in staged), consumed  # each pulled once
    assert sorted(returned) == [0, 1, 2, 3] and all(r[0] == 0 for r in returned.values()), returned

    # no stale-offset answers; the only failures are the long polls the capture left unanswered too
    answers = Counter(c.response_name(a.code) for q, a in rep.pairs if q.code == c.PULL_MESSAGE)
    assert not set(answers) & {"PULL_OFFSET_MOVED", "OFFSET_ILLEGAL"}, answers
    unanswered_in_capture = sum(1 for ex in exchanges if ex.code == c.PULL_MESSAGE and ex.response is None)
    pulls = {r["name"]: r for r in d["codes"]}["PULL_MESSAGE"]
    assert pulls["errors_by_response"] == {"TIMEOUT": unanswered_in_capture}, pulls
    assert not rep.unmapped and not d["not_sent"], (rep.unmapped, d["not_sent"])

    # the broker stores what the replay consumed (the recorded commit offsets were 8); the commits
    # are oneway, so the broker may apply them a moment after the replay ended
    want = {q: consumed[q] for q in range(4)}
    assert want == {q: max_offset[q] for q in range(4)}, (consumed, max_offset)
    deadline = time.monotonic() + 10
    while (committed := asyncio.run(_committed(endpoint(cluster.broker_addr), topic, group, 4))) != want:
        assert time.monotonic() < deadline, (committed, want)
        time.sleep(0.5)

    # the report and the proxy it went through count the same traffic
    proxy, mine = d["proxy"]["counters"], d["stats"]["counters"]
    server_requests = sum(d["server_requests"].values())
    assert proxy["request"] == d["sent"] + server_requests == mine["request"] + server_requests
    assert proxy["answered"] == mine["answered"] == d["answered"]
    assert proxy["unanswered"] == mine["unanswered"] == d["unanswered"] == unanswered_in_capture, (
        proxy, mine, d["proxy"]["exchanges"])
    assert proxy["response_error"] == mine["response_error"]

