"""gRPC replay (``--grpc-target``): rewriting of real captured calls, selection, safety,
and a replay of the Java gRPC capture against the real RocketMQ 5.3 proxy whose
messages a real consumer then reads back."""
from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from dissectors.grpc.messages import parse
from replay.engine import DiffRules, Rules, build_plan
from replay.engine.grpcdiff import compare
from replay.engine.grpcrewrite import GrpcRewriter
from rmqsniff.cli_replay import replay
from rmqsniff.pipeline import analyze
from tests.support.exchanges import request_of

ROOT = Path(__file__).resolve().parent.parent
JAVA = ROOT / "captures" / "grpc_java.pcap"
PY = ROOT / "captures" / "grpc_python.pcap"


def _calls(path: Path, method: str) -> list:
    return [ex for ex in analyze([str(path)]).exchanges
            if ex.protocol == "grpc" and ex.request is not None and ex.request.command.method == method]


def _request(ex):
    return next(p.message for p in ex.request.command.messages if p.message is not None)


# -- rewriting -------------------------------------------------------------------------------

def test_send_message_round_trip_with_mapped_topic_and_properties():
    ex = _calls(PY, "SendMessage")[0]
    src = _request(ex)
    rules = Rules(topics={"PyTopic": "StagingTopic"}, set_properties={"replay": "yes"}, drop_properties=("idx",))
    now_ms = 1_900_000_000_123
    out = GrpcRewriter(rules, copy=1, access_point=("10.0.0.5", 18081)).request(src, now_ms)
    # messages built from the schema at run time: fields unknown to the type checker (Any)
    back: Any = parse("SendMessageRequest", out.SerializeToString())  # what staging receives
    (m,), (s,) = back.messages, src.messages
    assert m.topic.name == "StagingTopic" and s.topic.name == "PyTopic"  # the capture is untouched
    assert m.body == s.body and m.system_properties.tag == s.system_properties.tag
    assert list(m.system_properties.keys) == list(s.system_properties.keys)
    assert m.system_properties.message_id == s.system_properties.message_id  # kept without --fresh-ids
    assert dict(m.user_properties) == {**{k: v for k, v in s.user_properties.items() if k != "idx"}, "replay": "yes"}
    born = m.system_properties.born_timestamp
    assert born.seconds * 1000 + born.nanos // 1_000_000 == now_ms


def test_fresh_ids_and_delivery_time_moves_with_born_time():
    ex = next(e for e in _calls(JAVA, "SendMessage")
              if _request(e).messages[0].system_properties.HasField("delivery_timestamp"))
    src = _request(ex).messages[0].system_properties
    delay = (src.delivery_timestamp.ToMilliseconds() - src.born_timestamp.ToMilliseconds())
    rw = GrpcRewriter(Rules(fresh_ids=True))
    a_req: Any = rw.request(_request(ex), 2_000_000_000_000)
    b_req: Any = rw.request(_request(ex), 2_000_000_000_000)
    a, b = a_req.messages[0].system_properties, b_req.messages[0].system_properties
    assert a.delivery_timestamp.ToMilliseconds() - a.born_timestamp.ToMilliseconds() == delay > 0
    assert a.born_timestamp.ToMilliseconds() == 2_000_000_000_000
    ids = {a.message_id, b.message_id, src.message_id}
    assert len(ids) == 3 and all(len(i) == 34 and i.startswith("01") for i in ids)
    int(a.message_id, 16)


def test_resources_and_access_point_are_mapped_in_every_request_type():
    rules = Rules(topics={"GrpcTopic": "T2", "FifoTopic": "F2"}, groups={"GID_push": "G2"})
    rw = GrpcRewriter(rules, access_point=("10.1.2.3", 9999))
    route: Any = rw.request(_request(_calls(JAVA, "QueryRoute")[0]))
    assert [(a.host, a.port) for a in route.endpoints.addresses] == [("10.1.2.3", 9999)]
    assert route.endpoints.scheme == 1  # IPv4
    tel: list[Any] = [rw.request(_request(ex)) for ex in _calls(JAVA, "Telemetry")]
    pub = [t.settings for t in tel if t.settings.HasField("publishing")]
    names = {r.name for s in pub for r in s.publishing.topics}
    assert "T2" in names and "F2" in names and "GrpcTopic" not in names
    assert all(s.access_point.addresses[0].port == 9999 for s in pub)
    subs = [t.settings.subscription for t in tel if t.settings.HasField("subscription")]
    assert "G2" in {s.group.name for s in subs} and "GID_push" not in {s.group.name for s in subs}
    hb: list[Any] = [rw.request(_request(ex)) for ex in _calls(JAVA, "Heartbeat")]
    assert any(h.group.name == "G2" for h in hb) and not any(h.group.name == "GID_push" for h in hb)


def test_headers_client_id_per_copy_and_authorization():
    hs = _calls(PY, "SendMessage")[0].request.command.headers
    cid = dict(hs)["x-mq-client-id"]
    assert "authorization" in dict(hs)
    h0 = dict(GrpcRewriter(Rules(), 0).headers(hs, 1_800_000_000))
    h1 = dict(GrpcRewriter(Rules(), 1).headers(hs, 1_800_000_000))
    assert h0["x-mq-client-id"] != h1["x-mq-client-id"] and cid in h0["x-mq-client-id"]
    assert h0["x-mq-request-id"] != dict(hs)["x-mq-request-id"]
    assert "authorization" not in h0  # production credentials never leave
    assert h0["x-mq-date-time"] == "20270115T080000Z"
    signed = dict(GrpcRewriter(Rules(access_key="ak1", secret_key="sk1")).headers(hs, 1_800_000_000))
    mac = hmac.new(b"sk1", b"20270115T080000Z", hashlib.sha1).hexdigest()
    assert signed["authorization"].lower() == (f"MQv2-HMAC-SHA1 Credential=ak1, SignedHeaders=x-mq-date-time, "
                                               f"Signature={mac}").lower()


def test_diff_compares_status_codes_not_ids():
    ex = _calls(PY, "SendMessage")[0]
    rec = ex.response.command
    other = _calls(PY, "SendMessage")[1].response.command  # another id, same outcome
    assert compare(rec, other, DiffRules()) == []
    qr = _calls(PY, "QueryRoute")[0].response.command
    rules = DiffRules()
    assert compare(rec, None, rules) == [("no answer", "OK", "-")]
    fake = type(rec)(rec.stream_id, False, code=40402, status_code=40402)
    assert compare(qr, fake, rules) == [("code", "OK", "TOPIC_NOT_FOUND")]


def _replayed_receive(recorded, order: list[int], ids: dict[int, str]):
    """A replayed ReceiveMessage answer made from the recorded one: messages in ``order``,
    new receipt handles, some ids changed (``ids``)."""
    from dissectors.grpc.call import GrpcMessage, GrpcPayload

    status = [p for p in recorded.messages if p.message.WhichOneof("content") != "message"]
    msgs = [p for p in recorded.messages if p.message.WhichOneof("content") == "message"]
    out = []
    for i in order:
        m = type(msgs[i].message)()
        m.CopyFrom(msgs[i].message)
        m.message.system_properties.receipt_handle = f"staging-handle-{i}"
        if i in ids:
            m.message.system_properties.message_id = ids[i]
        out.append(GrpcPayload(0.0, b"", message=m))
    return GrpcMessage(1, False, code=20000, messages=[*status[:1], *out])


def test_receipt_handles_pair_by_message_id_then_position():
    from replay.engine.grpcstate import GrpcConsumerState, delivered

    recv = _calls(PY, "ReceiveMessage")[0]
    rec = recv.response.command
    got = delivered(rec)
    assert len(got) == 10 and all(h for _, h in got)
    st = GrpcConsumerState()
    # staging delivers in another order; two messages come with other ids (e.g. --fresh-ids)
    replayed = _replayed_receive(rec, [9, 8, 7, 6, 5, 4, 3, 2, 1, 0], {0: "X0", 1: "X1"})
    st.learn("ReceiveMessage", rec, replayed, [])
    for i, (mid, handle) in enumerate(got):
        if i > 1:
            assert st.handles[handle] == (mid, f"staging-handle-{i}")  # same id wins
    # the two without a same-id partner pair by position among the unpaired ones
    assert {st.handles[got[0][1]][0], st.handles[got[1][1]][0]} == {"X0", "X1"}
    acks = [_request(ex) for ex in _calls(PY, "AckMessage")]
    out: list[Any] = [GrpcRewriter(Rules()).request(a) for a in acks]
    assert all(st.apply("AckMessage", [m]) is None for m in out)
    assert sorted(e.receipt_handle for m in out for e in m.entries) == sorted(f"staging-handle-{i}" for i in range(10))
    # a handle staging never gave is not sent
    fresh = GrpcConsumerState()
    fresh.learn("ReceiveMessage", rec, _replayed_receive(rec, [3], {}), [])
    reasons = [fresh.apply("AckMessage", [GrpcRewriter(Rules()).request(a)]) for a in acks]
    assert reasons.count(None) == 1 and set(reasons) - {None} == {"AckMessage of messages staging did not deliver"}


# -- selection, safety, dry run -------------------------------------------------------------

def test_plan_selects_producer_calls_and_explains_the_rest():
    exs = analyze([str(PY)]).exchanges
    n_grpc = sum(ex.protocol == "grpc" and ex.request is not None for ex in exs)
    remoting_only = build_plan(exs)  # the capture also holds the proxy's own remoting traffic
    assert remoting_only.skipped["grpc (use --grpc-target)"] == n_grpc > 0
    assert not any(s.kind == "grpc" for s in remoting_only.sessions)
    plan = build_plan(exs, grpc=True, remoting=False)
    methods = Counter(request_of(st.ex).method for s in plan.sessions for st in s.steps)
    assert methods == Counter({"SendMessage": 10, "QueryRoute": 2, "Telemetry": 1, "NotifyClientTermination": 1})
    assert all(s.kind == "grpc" for s in plan.sessions)
    assert plan.skipped["gRPC consumer traffic (use --consumers)"] == 10 + 1 + 1 + 1  # acks, receive, telemetry, notify
    # a step waits for the Telemetry settings reply, not for the end of the long-lived stream
    prod = next(s for s in plan.sessions if any(request_of(st.ex).method == "SendMessage" for st in s.steps))
    tel = next(st for st in prod.steps if request_of(st.ex).method == "Telemetry")
    waiter = next(st for st in prod.steps if tel.index in st.deps)
    assert request_of(waiter.ex).method == "SendMessage"


def test_dry_run_lists_grpc_sessions_and_refuses_the_captured_server():
    res = CliRunner().invoke(replay, [str(PY), "--grpc-target", "127.0.0.1:8081", "--allow-target", "127.0.0.1",
                                      "--map-topic", "PyTopic=Staged", "--dry-run"])
    assert res.exit_code == 1, res.output  # a refusal fails the dry run too
    assert "target gRPC endpoint 127.0.0.1:8081 (REFUSED" in res.output and "production" in res.output
    assert "[grpc] 13 request(s): SendMessage 10" in res.output and "topics Staged" in res.output
    res = CliRunner().invoke(replay, [str(PY), "--grpc-target", "127.0.0.1:8081", "--allow-target", "127.0.0.1",
                                      "--no-progress"])
    assert res.exit_code == 1 and "is a server in the capture" in res.output
    res = CliRunner().invoke(replay, [str(PY), "--allow-target", "127.0.0.1"])
    assert res.exit_code == 1 and "--grpc-target" in res.output


# -- the real cluster ------------------------------------------------------------------------

KINDS = {"normal": ("GrpcTopic", ""), "fifo": ("FifoTopic", ":FIFO"), "delay": ("DelayTopic", ":DELAY"),
         "transaction": ("TxTopic", ":TRANSACTION")}


def _consume_all(cluster, topics: dict[str, int], timeout_ms: int) -> dict[str, list[dict]]:
    """Read each topic from the beginning with the remoting lite pull consumer, in parallel,
    until the expected count arrived (a rolled-back or wrongly resolved transactional
    message would take the place of a committed one)."""
    from tests.support.replay_cluster import consumer_classes

    classes = consumer_classes()
    procs = {t: subprocess.Popen(cluster.java_cmd(f"clients/replay-{t}", classes, "ReplayConsumer",
                                                  cluster.namesrv_addr, t, f"CG_{t}", str(n), str(timeout_ms)),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for t, n in topics.items()}
    out = {}
    for t, p in procs.items():
        try:
            so, se = p.communicate(timeout=timeout_ms / 1000 + 90)
        except subprocess.TimeoutExpired:
            p.kill()
            so, se = p.communicate()
            pytest.fail(f"consumer of {t} did not finish: {se[-2000:]}")
        assert p.returncode == 0, so[-2000:] + se[-2000:]
        out[t] = [json.loads(line) for line in so.splitlines() if line.startswith("{")]
    return out


@pytest.mark.rocketmq
def test_replay_java_grpc_capture_twice_into_new_topics(rocketmq_cluster, tmp_path):
    cluster = rocketmq_cluster
    tag = uuid.uuid4().hex[:6]
    new = {kind: f"GReplay{kind.capitalize()}_{tag}" for kind in KINDS}
    cluster.admin(*(f"topic={new[k]}{typ}" for k, (_, typ) in KINDS.items()))
    ours = ("127.0.0.1", cluster.ports.grpc)
    prod = ["--i-know-this-is-production"] if ours == ("127.0.0.1", 8081) else []
    report_file = tmp_path / "report.json"
    res = CliRunner().invoke(replay, [
        str(JAVA), "--grpc-target", cluster.grpc_addr, "--allow-target", "127.0.0.1",
        *(a for k, (old, _) in KINDS.items() for a in ("--map-topic", f"{old}={new[k]}")),
        "--scale", "2", "--max", "--report", str(report_file), "--format", "json", "--no-progress", *prod])
    assert res.exit_code == 0, res.output
    rep = json.loads(report_file.read_text())

    truth = json.loads((ROOT / "captures" / "grpc_java.truth.json").read_text())
    want: dict[str, Counter] = {new[k]: Counter() for k in KINDS}
    for m in truth["sent"]:
        if m.get("planned_resolution") == "ROLLBACK":
            continue
        want[new[m["kind"]]][(m["body_sha256"], m["tags"], " ".join(m["keys"]) or None)] += 2
    got = _consume_all(cluster, {t: sum(c.values()) for t, c in want.items()}, timeout_ms=60_000)
    for t, c in want.items():
        assert Counter((m["body_sha256"], m["tags"], m["keys"]) for m in got[t]) == c, t
    # kept ids: every consumed message carries its captured gRPC message id
    assert {m["msgId"] for ms in got.values() for m in ms} <= {m["msg_id"] for m in truth["sent"]}

    codes = {r["name"]: r for r in rep["codes"]}
    plan = build_plan(analyze([str(JAVA)]).exchanges, grpc=True, remoting=False)
    n_sends = sum(request_of(st.ex).method == "SendMessage" for s in plan.sessions for st in s.steps)
    assert n_sends == len(truth["sent"])  # one SendMessage per captured message
    assert codes["SendMessage"]["count"] == codes["SendMessage"]["success"] == 2 * n_sends
    assert codes["EndTransaction"]["count"] == codes["EndTransaction"]["success"] == 2 * 2
    assert codes["Telemetry"]["success"] == codes["Telemetry"]["count"] > 0
    assert rep["errors"] == 0 and not rep["unmapped_state"] and not rep["not_sent"]
    assert rep["sent"] == rep["planned"] == rep["answered"]
    assert {r["name"] for r in rep["topics"]} >= set(new.values())
    assert rep["diff"]["compared"] == rep["diff"]["matched"] == rep["sent"]
    # the built-in proxy saw exactly what the report counts, as gRPC calls
    proxy = rep["proxy"]["counters"]
    assert rep["via"] == "proxy"
    assert proxy["request"] == rep["sent"] and proxy["answered"] == rep["answered"]
    assert proxy["send_message_v2"] == codes["SendMessage"]["count"]
    assert proxy["response_error"] == rep["errors"] == 0


def _run(args: list[str]) -> dict:
    res = CliRunner().invoke(replay, [*args, "--format", "json", "--no-progress"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


@pytest.mark.rocketmq
def test_replay_python_grpc_consumer_acks_what_staging_delivered(rocketmq_cluster):
    cluster = rocketmq_cluster
    tag = uuid.uuid4().hex[:6]
    topic, group = f"GReplayCons_{tag}", f"GID_replay_{tag}"
    cluster.admin(f"topic={topic}")
    prod = ["--i-know-this-is-production"] if cluster.ports.grpc == 8081 else []
    common = [str(PY), "--grpc-target", cluster.grpc_addr, "--allow-target", "127.0.0.1", "--max",
              "--map-topic", f"PyTopic={topic}", "--map-group", f"GID_py={group}", *prod]
    sent = _run(common)  # the producer side first: staging then holds the captured messages
    assert sent["errors"] == 0 and {r["name"]: r["count"] for r in sent["codes"]}["SendMessage"] == 10

    rep = _run([*common, "--consumers", "-Y", "code != SendMessage"])
    codes = {r["name"]: r for r in rep["codes"]}
    assert codes["ReceiveMessage"]["success"] == 1
    # every captured ack went out with the handle staging gave the same message; a captured
    # (production) handle would be refused with INVALID_RECEIPT_HANDLE
    assert codes["AckMessage"]["count"] == codes["AckMessage"]["success"] == 10
    assert rep["errors"] == 0 and not rep["unmapped_state"] and not rep["not_sent"]
    assert rep["proxy"]["counters"]["ack_message"] == 10 and rep["proxy"]["counters"]["pop_message"] == 1

    again = _run([*common, "--consumers", "-Y", "code != SendMessage"])  # all acked: nothing to deliver
    codes = {r["name"]: r for r in again["codes"]}
    assert "AckMessage" not in codes
    assert again["unmapped_state"] == {"AckMessage of messages staging did not deliver": 10}
    assert again["not_sent"] == again["unmapped_state"]
    assert again["diff"]["mismatches"] == {"code: OK -> MESSAGE_NOT_FOUND": 1}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("via", ["--direct", "--via-proxy"])
def test_unreachable_grpc_target_is_counted_not_lost(via):
    """Nothing listens on the target: direct, sessions are not sent (and say why); through the
    proxy, the proxy accepts and then cannot reach upstream, so calls fail - all counted."""
    target = f"127.0.0.1:{_free_port()}"
    res = CliRunner().invoke(replay, [str(PY), "--grpc-target", target, "--allow-target", "127.0.0.1", via,
                                      "--max", "--timeout", "1", "--format", "json", "--no-progress"])
    assert res.exit_code in (0, 1), res.output
    rep = json.loads(res.stdout)
    assert rep["planned"] == 14
    lost = sum(rep["not_sent"].values())
    assert rep["sent"] + lost == rep["planned"]
    assert rep["answered"] == 0 and rep["errors"] == rep["sent"]
    if via == "--direct":
        assert rep["sent"] == 0 and any(k.startswith(f"cannot connect to {target}") for k in rep["not_sent"])
    else:
        assert rep["sent"] > 0
