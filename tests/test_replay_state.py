"""Stateful replay without a cluster: BATCH_ACK_MESSAGE mapping (frames built by our encoder
from the real pop capture: no 5.3 client sends a batch ack, only the proxy with
``enableBatchAck``), END_TRANSACTION mapping, and ``--consumers-only`` selection."""
from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import orjson
from click.testing import CliRunner

from dissectors.remoting import codes as c
from dissectors.remoting.bodies import decode_body
from dissectors.remoting.command import RemotingCommand
from dissectors.remoting.frame import decode_frame, encode
from dissectors.remoting.message import decode_stored_messages, encode_stored_message
from replay.engine import Rewriter, Rules, build_plan
from replay.engine.runner import _map_end_transaction, _remember_txn
from replay.engine.state import ConsumerState, decode_bitset, encode_bitset, pop_handles
from replay.report import Report
from rmqsniff.cli_replay import replay
from rmqsniff.pipeline import analyze
from tests.support.exchanges import request_of, response_of

ROOT = Path(__file__).resolve().parent.parent
POP = ROOT / "captures" / "remoting_pop.pcap"
TRANSACTION = ROOT / "captures" / "remoting_transaction.pcap"
SHIFT = 100  # staging's queue offsets are production's + SHIFT


def _wire(cmd: RemotingCommand) -> RemotingCommand:
    return decode_frame(encode(cmd))


def _popped():
    """The recorded POP_MESSAGE (request, answer) with messages, and a replayed answer for the
    same messages at other offsets, pop time and revive queue, built by our encoder."""
    ex = next(ex for ex in analyze([str(POP)]).exchanges
              if ex.code == c.POP_MESSAGE and ex.response is not None and ex.response.command.code == c.SUCCESS
              and ex.response.command.body)
    assert ex.request is not None and ex.response is not None
    req, rec = ex.request.command, ex.response.command
    msgs, problems = decode_stored_messages(rec.body)
    assert msgs and not problems
    body = b"".join(encode_stored_message(dataclasses.replace(m, queue_offset=m.queue_offset + SHIFT))
                    for m in msgs)
    e = rec.ext
    starts = ";".join(f"{' '.join(p.split()[:-1])} {int(p.split()[-1]) + SHIFT}"
                      for p in e["startOffsetInfo"].split(";") if p.strip())
    resp = _wire(RemotingCommand(c.SUCCESS, flag=1, ext={**e, "popTime": str(int(e["popTime"]) + 5000),
                                                         "reviveQid": "7", "startOffsetInfo": starts}, body=body))
    return req, rec, resp


def _batch_ack(handles, extra_offsets=()) -> RemotingCommand:
    """BATCH_ACK_MESSAGE for these recorded handles as MQClientAPIImpl groups them (short names)."""
    groups: dict[tuple, list[int]] = {}
    for h in handles:
        f = h.extra_info.split()
        groups.setdefault((f[0], f[1], f[2], f[3], f[4], f[6]), []).append(int(f[7]))
    acks = [{"c": "CG_pop", "t": "TopicPop", "r": r, "so": int(so), "q": int(q), "rq": int(rq), "pt": int(pt),
             "it": int(it), "b": encode_bitset(int(so), offs + [int(so) + x for x in extra_offsets])}
            for (so, pt, it, rq, r, q), offs in groups.items()]
    return _wire(RemotingCommand(c.BATCH_ACK_MESSAGE, body=orjson.dumps({"acks": acks, "brokerName": "broker-a"})))


def test_bitset_round_trip_matches_java_byte_order():
    # java.util.BitSet.toByteArray: bit i is bit i%8 of byte i/8, trailing zero bytes dropped
    assert encode_bitset(10, [11, 19]) == "AgI="  # bytes 0x02 0x02
    assert decode_bitset("AgI=", 10) == [11, 19]
    assert decode_bitset("not base64!", 0) == [] and encode_bitset(5, []) == ""


def test_batch_ack_gets_the_handles_the_replayed_pop_returned():
    req, rec, resp = _popped()
    st = ConsumerState()
    recorded = [h for _m, h in pop_handles(rec, req.ext["bname"])]
    batch = _batch_ack(recorded)
    assert st.needs(batch)  # nothing popped on replay yet: wait for it
    st.expect(c.POP_MESSAGE)
    st.learn(req, rec, req, resp)
    assert not st.needs(batch) and not st.errors

    cmd = Rewriter(Rules(topics={"TopicPop": "T2"}, groups={"CG_pop": "G2"})).request(batch, 0, broker_name="b2")
    assert st.apply(batch, cmd) is None
    view = decode_body(_wire(cmd))
    assert view.kind == "batch_ack" and not view.errors
    assert view.value["brokerName"] == "b2"
    replayed = {h.extra_info: h for _m, h in pop_handles(resp, req.ext["bname"])}
    acked = []
    for a in view.value["acks"]:
        assert (a["consumerGroup"], a["topic"]) == ("G2", "T2")
        assert a["popTime"] == int(resp.ext["popTime"]) and a["reviveQueueId"] == 7
        for off in a["offsets"]:
            acked.append(next(x for x in replayed if x.split()[6] == str(a["queueId"])
                              and x.split()[7] == str(off) and x.split()[0] == str(a["startOffset"])))
    assert sorted(acked) == sorted(replayed)  # every replayed handle acked once, by its own fields
    assert sorted(int(x.split()[7]) for x in acked) == sorted(int(h.offset) + SHIFT for h in recorded)


def test_batch_ack_offsets_never_popped_are_left_out_and_counted():
    req, rec, resp = _popped()
    st = ConsumerState()
    st.expect(c.POP_MESSAGE)
    st.learn(req, rec, req, resp)
    recorded = [h for _m, h in pop_handles(rec, req.ext["bname"])]
    batch = _batch_ack(recorded[:1], extra_offsets=(1000,))  # one real handle, one offset never popped
    cmd = Rewriter(Rules()).request(batch, 0)
    assert st.apply(batch, cmd) is None
    assert sum(len(a["offsets"]) for a in decode_body(_wire(cmd)).value["acks"]) == 1
    assert sum(st.dropped.values()) == 1

    stranger = _wire(RemotingCommand(c.BATCH_ACK_MESSAGE, body=orjson.dumps({"acks": [
        {"c": "CG_pop", "t": "TopicPop", "r": "0", "so": 5, "q": 0, "rq": 0, "pt": 1, "it": 1,
         "b": encode_bitset(5, [5])}]})))
    why = st.apply(stranger, Rewriter(Rules()).request(stranger, 0))
    assert why is not None and "did not return" in why
    garbage = _wire(RemotingCommand(c.BATCH_ACK_MESSAGE, body=b"\x00garbage"))
    assert st.apply(garbage, Rewriter(Rules()).request(garbage, 0)) is not None  # explained, not sent


def test_end_transaction_names_the_replayed_half_message():
    exchanges = analyze([str(TRANSACTION)]).exchanges
    sends = [ex for ex in exchanges if ex.code == c.SEND_MESSAGE_V2]
    ends = [ex for ex in exchanges if ex.code == c.END_TRANSACTION
            and request_of(ex).ext["fromTransactionCheck"] == "false"]
    assert len(sends) == len(ends) == 5
    txn: dict = {}
    for i, ex in enumerate(sends):  # staging stored each half message elsewhere
        rec = response_of(ex)
        _remember_txn(txn, rec, RemotingCommand(c.SUCCESS, ext={
            **rec.ext, "queueOffset": str(100 + i), "msgId": f"7F00000100005A0F{10_000_000 + 500 * i:016X}"}))
    rep = Report()
    for i, ex in enumerate(ends):
        cmd = RemotingCommand(c.END_TRANSACTION, ext=dict(request_of(ex).ext))
        _map_end_transaction(cmd, txn, {}, rep)
        assert cmd.ext is not None
        assert cmd.ext["commitLogOffset"] == str(10_000_000 + 500 * i) != request_of(ex).ext["commitLogOffset"]
        assert cmd.ext["tranStateTableOffset"] == str(100 + i)
    # after a check-back, staging's own offsets of the re-put half message win
    tid = request_of(ends[0]).ext["transactionId"]
    cmd = RemotingCommand(c.END_TRANSACTION, ext={**request_of(ends[0]).ext, "fromTransactionCheck": "true"})
    _map_end_transaction(cmd, txn, {tid: ("424242", "77")}, rep)
    assert cmd.ext is not None
    assert (cmd.ext["commitLogOffset"], cmd.ext["tranStateTableOffset"]) == ("424242", "77")
    assert not rep.unmapped


def test_consumers_only_selects_the_consumer_side():
    exchanges = analyze([str(POP)]).exchanges
    plan = build_plan(exchanges, consumers_only=True)
    codes = Counter(st.code for s in plan.sessions for st in s.steps)
    assert not set(codes) & (c.SEND_REQUESTS | {c.END_TRANSACTION})
    assert codes[c.POP_MESSAGE] > 0 and codes[c.ACK_MESSAGE] == 10
    assert plan.skipped["producer traffic (--consumers-only)"] == 10  # the 10 sends
    everything = build_plan(exchanges, consumers=True)
    assert everything.requests == plan.requests + sum(v for k, v in plan.skipped.items()
                                                      if "--consumers-only" in k)

    # (127.0.0.2:9876 would be the captured 127.0.0.1:9876 to the guard: any loopback address, same port)
    res = CliRunner().invoke(replay, [str(POP), "--target", "127.0.0.2:19876", "--allow-target", "127.0.0.2",
                                      "--consumers-only", "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "POP_MESSAGE" in res.output and "ACK_MESSAGE" in res.output
    assert "SEND_MESSAGE" not in res.output.replace("producer traffic", "")
    assert "producer traffic (--consumers-only) 10" in res.output
