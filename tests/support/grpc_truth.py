"""A proxy's ``-w`` recording of the real Java gRPC client's scenario, read back with the
pipeline (as ``rmqsniff read`` does), against the client's own truth."""
from __future__ import annotations

import hashlib
from pathlib import Path

from rmqsniff.model import ANSWERED
from rmqsniff.pipeline import analyze
from tests.test_grpc_real import calls, delivered, sent_messages


def check_grpc_recording(rec: Path, truth: dict) -> list:
    """Every gRPC call in ``rec`` answered, nothing undecodable; each message the client sent
    (id, topic, tag, properties, body digest) and each it received (body digest) found;
    at least as many ReceiveMessage calls as the client made; every simple-consumer receipt
    acked.  Returns the gRPC exchanges."""
    a = analyze([str(rec)])
    assert a.errors == []
    exs = [ex for ex in a.exchanges if ex.protocol == "grpc"]
    assert exs and all(ex.status == ANSWERED for ex in exs)
    assert a.stats.snapshot()["decoding_errors"] == {}
    sent = {m.system_properties.message_id: m for m in sent_messages(exs)}
    assert sorted(sent) == sorted(x["msg_id"] for x in truth["sent"])
    for x in truth["sent"]:
        m = sent[x["msg_id"]]
        assert (m.topic.name, m.system_properties.tag, dict(m.user_properties)) == (
            x["topic"], x["tags"], x["user_properties"])
        assert hashlib.sha256(m.body).hexdigest() == x["body_sha256"]
    got = {m.system_properties.message_id: m for m in delivered(exs)}
    want = [r for lst in truth["received"].values() for r in lst]
    assert want and {r["msg_id"] for r in want} <= set(got)
    assert all(hashlib.sha256(got[r["msg_id"]].body).hexdigest() == r["body_sha256"] for r in want)
    assert len(calls(exs, "ReceiveMessage")) >= truth["counts"]["receive_calls"]
    acked = {e.message_id for ex in calls(exs, "AckMessage") for e in ex.request.command.messages[0].message.entries}
    assert {r["msg_id"] for r in truth["received"].get("simple", [])} <= acked
    return exs
