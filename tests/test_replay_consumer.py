"""Stateful consumer replay against the real RocketMQ 5.3 cluster: the captured pop consumer
(``captures/remoting_pop.pcap``: 10 messages popped by ``CG_pop`` on ``TopicPop``, each acked)
replayed to another topic and group; every ACK_MESSAGE must carry a receipt handle the replayed
POP_MESSAGE handed out, so staging answers none of them with an error."""
from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from dissectors.remoting import codes as c
from dissectors.remoting.message import decode_stored_messages
from replay.engine import MAX, Guard, Options, Pacing, Replay, Rules, build_plan
from replay.engine.safety import endpoint
from rmqsniff.cli_replay import replay
from rmqsniff.pipeline import analyze
from tests.support.exchanges import request_of
from tests.support.replay_report import Recording

ROOT = Path(__file__).resolve().parent.parent
CAPTURE = ROOT / "captures" / "remoting_pop.pcap"
TRUTH = ROOT / "captures" / "remoting_pop.truth.json"

pytestmark = pytest.mark.rocketmq


def _handles(req, resp) -> dict[str, tuple[str, str, str]]:
    """Receipt handles a client builds from a POP_MESSAGE answer (as the Java client's
    ``MQClientAPIImpl.processPopResponse``) -> (UNIQ_KEY, queueId, queueOffset)."""
    e = resp.ext
    starts = {}
    for part in e.get("startOffsetInfo", "").split(";"):
        f = part.split()
        if len(f) == 3:
            starts[f[1]] = f[2]
    out = {}
    msgs, problems = decode_stored_messages(resp.body)
    assert not problems
    for m in msgs:
        assert m.unique_key is not None  # the producer gave every message its UNIQ_KEY
        q, o = str(m.queue_id), str(m.queue_offset)
        handle = " ".join((starts[q], e["popTime"], e["invisibleTime"], e["reviveQid"], "0",
                           req.ext["bname"], q, o))
        out[handle] = (m.unique_key, q, o)
    return out


def test_pop_consumer_replay_acks_what_the_replayed_pop_returned(rocketmq_cluster, tmp_path):
    cluster = rocketmq_cluster
    sfx = uuid.uuid4().hex[:6]
    topic, group = f"PopReplay_{sfx}", f"CG_popreplay_{sfx}"
    cluster.admin(f"topic={topic}", f"group={group}", f"pop={topic}:{group}")  # group in POP mode
    exchanges = analyze([str(CAPTURE)]).exchanges
    servers = {ex.connection.server for ex in exchanges}
    ours = {("127.0.0.1", cluster.ports.namesrv), ("127.0.0.1", cluster.ports.broker)}
    prod = bool(servers & ours)  # a cluster on the capture's own ports is "production" to replay

    # 1. the producer part of the capture: the same 10 messages into the new topic
    res = CliRunner().invoke(replay, [
        str(CAPTURE), "--target", cluster.namesrv_addr, "--allow-target", "127.0.0.1", "--direct",
        "--map-topic", f"TopicPop={topic}", "--map-group", f"CG_pop={group}", "--max",
        "--format", "json", "--no-progress", *(["--i-know-this-is-production"] if prod else [])])
    assert res.exit_code == 0, res.output
    sends = {r["name"]: r for r in json.loads(res.stdout)["codes"]}["SEND_MESSAGE_V2"]
    assert sends["count"] == sends["success"] == 10

    # 2. the consumer part (everything but the sends), with state mapping
    plan = build_plan(exchanges, consumers=True, flt=lambda ex: request_of(ex).code not in c.SEND_REQUESTS)
    opts = Options(target=endpoint(cluster.namesrv_addr), guard=Guard(["127.0.0.1"], plan.servers, prod),
                   pacing=Pacing(mode=MAX), rules=Rules(topics={"TopicPop": topic}, groups={"CG_pop": group}),
                   timeout=3.0, via_proxy=False)
    rep = Recording(opts.diff, None, plan.requests, MAX, cluster.namesrv_addr, "direct")
    asyncio.run(asyncio.wait_for(Replay(plan, opts, rep).run(), 120))
    d = rep.to_dict()
    codes = {r["name"]: r for r in d["codes"]}

    pops = [(q, a) for q, a in rep.pairs if q.code == c.POP_MESSAGE and a.code == c.SUCCESS]
    handed_out: dict[str, tuple[str, str, str]] = {}
    for q, a in pops:
        handed_out.update(_handles(q, a))
    truth = json.loads(TRUTH.read_text())
    assert {v[0] for v in handed_out.values()} == {m["msg_id"] for m in truth["sent"]}  # all 10 popped

    acks = [(q, a) for q, a in rep.pairs if q.code == c.ACK_MESSAGE]
    assert len(acks) == codes["ACK_MESSAGE"]["count"] == 10
    assert codes["ACK_MESSAGE"]["errors"] == 0 and codes["ACK_MESSAGE"]["success"] == 10
    acked = []
    for q, a in acks:
        assert a.code == c.SUCCESS, (a.code, a.remark)
        assert not any(w in (a.remark or "").lower() for w in ("receipt", "extrainfo", "illegal", "invalid"))
        e = q.ext
        assert e["topic"] == topic and e["consumerGroup"] == group
        uniq, qid, off = handed_out[e["extraInfo"]]  # a handle the replayed pop returned ...
        assert (e["queueId"], e["offset"]) == (qid, off)  # ... for the message it names
        acked.append(uniq)
    assert sorted(acked) == sorted(m["msg_id"] for m in truth["sent"])  # each message acked once
    assert not rep.unmapped and not any("did not return" in k for k in rep.not_sent)
