"""The ``trace`` and ``lag`` commands' JSONL output against the journey scenario's ground truth
(``tests/rocketmq/java/Journey.java``: every send, consume attempt, DLQ copy, and
``mqadmin consumerProgress`` at the end). Each ``check_*`` returns every difference as one line,
so a test shows all of them at once."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from rmqsniff.cli import main

CLOCK_SLACK_S = 0.05  # tcpdump and the client JVM read the same host clock; this covers rounding


def command(name: str, *args: str) -> list[dict[str, Any]]:
    """``rmqsniff NAME ARGS... --format jsonl`` run like a user would; one dict per line."""
    if name not in main.commands:
        pytest.skip(f"`rmqsniff {name}` is not on this branch yet (issue #21: built on its own branch)")
    r = CliRunner().invoke(main, [name, *args, "--format", "jsonl"])
    assert r.exit_code == 0, f"rmqsniff {name} exited {r.exit_code}: {r.output[-2000:]}"
    return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]


def journeys(*pcaps: Path, args: tuple[str, ...] = ()) -> dict[str, dict[str, Any]]:
    """``rmqsniff trace PCAP...``: unique key -> journey."""
    out = command("trace", *map(str, pcaps), *args)
    by_key = {j["unique_key"]: j for j in out}
    assert len(by_key) == len(out), "a unique key shown as two journeys"
    return by_key


def events(j: dict[str, Any], kind: str, **where: Any) -> list[dict[str, Any]]:
    return [e for e in j["events"] if e["kind"] == kind and all(e.get(k) == v for k, v in where.items())]


def check_journeys(js: dict[str, dict[str, Any]], truth: dict[str, Any]) -> list[str]:
    """Every journey of the scenario's messages against the client's record of it."""
    p: list[str] = []
    group, retry_topic = truth["group"], truth["retry_topic"]
    for m in truth["messages"]:
        key = m["msg_id"]
        j = js.get(key)
        if j is None:
            p.append(f"{key} ({m['keys']}): no journey")
            continue
        p += [f"{key}: {d}" for d in _check_one(j, m, group, retry_topic)]
    return p


def _check_one(j: dict[str, Any], m: dict[str, Any], group: str, retry_topic: str) -> list[str]:
    p: list[str] = []
    ts = [e["ts"] for e in j["events"]]
    if ts != sorted(ts):
        p.append("events not in time order")
    for e in j["events"]:
        missing = {"kind", "ts", "exchange", "connection", "protocol"} - set(e)
        if missing:
            p.append(f"{e['kind']} event without {sorted(missing)}")
    if (j["topic"], j["tags"]) != (m["topic"], m["tags"]) or m["keys"] not in j["keys"]:
        p.append(f"topic/tags/keys {j['topic']} {j['tags']} {j['keys']} != {m['topic']} {m['tags']} {m['keys']}")
    if m["offset_msg_id"] not in j["offset_msg_ids"]:
        p.append(f"offset msg id {m['offset_msg_id']} not in {j['offset_msg_ids']}")
    sent = events(j, "sent")
    if len(sent) != 1 or sent[0]["protocol"] != "remoting":
        p.append(f"{len(sent)} sent events, the producer sent it once over remoting")
    stored = events(j, "stored")
    if [(e.get("queue"), e.get("offset")) for e in stored] != [(m["queue_id"], m["queue_offset"])]:
        p.append(f"stored {[(e.get('queue'), e.get('offset')) for e in stored]} != "
                 f"{[(m['queue_id'], m['queue_offset'])]} (queue, offset from SendResult)")
    p += _check_deliveries(j, m, group, retry_topic)
    p += _check_outcome(j, m)
    p += check_trace_context(j.get("trace"), m["trace"])
    return p


def _check_outcome(j: dict[str, Any], m: dict[str, Any]) -> list[str]:
    """Retried, dead-lettered, acked, finished and the latencies, against the consumer's attempts."""
    p: list[str] = []
    failed = [a for a in m["attempts"] if a["result"] == "RECONSUME_LATER"]
    if bool(events(j, "retried")) != bool(failed):
        p.append(f"{len(events(j, 'retried'))} retried events, {len(failed)} failed consume attempts")
    if bool(events(j, "dead_lettered")) != m["dead_lettered"]:
        p.append(f"dead_lettered events {len(events(j, 'dead_lettered'))}, client read it back from the DLQ: "
                 f"{m['dead_lettered']}")
    dead = [e["ts"] for e in events(j, "dead_lettered")]
    last_try = max((a["ts_ms"] for a in m["attempts"]), default=None)
    if dead and last_try is not None and min(dead) < last_try / 1000 - CLOCK_SLACK_S:
        p.append(f"dead_lettered at {min(dead):.3f}, before the consumer's last attempt ({last_try / 1000:.3f})")
    consumed = any(a["result"] == "CONSUME_SUCCESS" for a in m["attempts"])
    if consumed and not events(j, "acked"):
        p.append("consumed and its offset committed, but no acked event")
    lat = j["latency_ms"]
    if set(lat) != {"store", "first_delivery", "ack"}:
        p.append(f"latency_ms keys {sorted(lat)}")
    elif lat["store"] is None or not 0 <= lat["store"] < 15000:
        p.append(f"latency_ms.store {lat['store']}")
    elif m["attempts"] and (lat["first_delivery"] is None or lat["first_delivery"] < 0):
        p.append(f"latency_ms.first_delivery {lat['first_delivery']} for a delivered message")
    elif not m["attempts"] and lat["first_delivery"] is not None:
        p.append(f"latency_ms.first_delivery {lat['first_delivery']} for a message never delivered")
    if j["finished"] != bool(consumed or m["dead_lettered"]):
        p.append(f"finished {j['finished']}; consumed {consumed}, dead-lettered {m['dead_lettered']}")
    return p


def _check_deliveries(j: dict[str, Any], m: dict[str, Any], group: str, retry_topic: str) -> list[str]:
    """One delivery to ``group`` per consume attempt, in order, with its reconsume count; each
    before its attempt began and after the attempt before it ended; retries from %RETRY%."""
    p: list[str] = []
    got = sorted(events(j, "delivered", group=group), key=lambda e: e["ts"])
    attempts = sorted(m["attempts"], key=lambda a: a["ts_ms"])
    if [e.get("reconsume") for e in got] != [a["reconsume_times"] for a in attempts]:
        return [f"deliveries to {group} with reconsume {[e.get('reconsume') for e in got]} != the consumer's "
                f"attempts {[a['reconsume_times'] for a in attempts]}"]
    for k, (e, a) in enumerate(zip(got, attempts, strict=True)):
        if e["ts"] > a["ts_ms"] / 1000 + CLOCK_SLACK_S:
            p.append(f"delivery {k} at {e['ts']:.3f} after the attempt began ({a['ts_ms'] / 1000:.3f})")
        if k and e["ts"] < attempts[k - 1]["done_ms"] / 1000 - CLOCK_SLACK_S:
            p.append(f"delivery {k} at {e['ts']:.3f} before attempt {k - 1} ended")
        if a["topic"] == retry_topic and e.get("topic") != retry_topic:
            p.append(f"delivery {k} (reconsume {a['reconsume_times']}) from {e.get('topic')}, not {retry_topic}")
        if e.get("queue") != a["queue_id"]:
            p.append(f"delivery {k} queue {e.get('queue')} != {a['queue_id']} ({a['topic']})")
    return p


def check_trace_context(got: dict[str, Any] | None, want: dict[str, Any] | None) -> list[str]:
    """The ``trace`` object against the traceparent / sw8 the producer set (or neither)."""
    if want is None:
        return [] if got is None else [f"trace {got} on a message without trace context"]
    if got is None:
        return [f"no trace object; the producer set {want['property']}={want['header']}"]
    p = []
    if (got.get("format"), got.get("trace_id")) != (want["format"], want["trace_id"]):
        p.append(f"trace {got.get('format')} {got.get('trace_id')} != {want['format']} {want['trace_id']}")
    if want["format"] == "w3c" and (got.get("span_id"), got.get("sampled")) != (want["span_id"], True):
        p.append(f"traceparent span {got.get('span_id')} sampled {got.get('sampled')} != {want['span_id']} True")
    if want["format"] == "sw8":
        text = json.dumps(got)  # where the segment id / service go is the decoder's choice
        for part in ("segment_id", "service", "instance", "endpoint"):
            if want[part] not in text:
                p.append(f"sw8 {part} {want[part]!r} not in {got}")
    return p


def check_traced(js: dict[str, dict[str, Any]], truth: dict[str, Any]) -> list[str]:
    """enableMsgTrace: every message has the producer's trace record joined (``traced``), a
    consumed one the consumer's too; the trace topic's own messages are as many as mqadmin says."""
    p = []
    for m in truth["messages"]:
        j = js.get(m["msg_id"])
        if j is None:
            continue  # check_journeys says so
        want = 2 if m["attempts"] else 1  # Pub; SubBefore/SubAfter per consume
        if len(events(j, "traced")) < want:
            p.append(f"{m['msg_id']}: {len(events(j, 'traced'))} traced events, want at least {want}")
    on_topic = sum(1 for j in js.values() if j["topic"] == truth["trace_topic"]["topic"])
    if on_topic != truth["trace_topic"]["messages"]:
        p.append(f"{on_topic} journeys on {truth['trace_topic']['topic']}, mqadmin topicStatus counts "
                 f"{truth['trace_topic']['messages']}")
    return p


def check_grpc_journeys(js: dict[str, dict[str, Any]], truth: dict[str, Any]) -> list[str]:
    """grpc_java's SimpleConsumer messages: each journey joins both legs of every hop: the
    client's SendMessage and the proxy's SEND_MESSAGE_V2, the proxy's POP_MESSAGE and the client's
    ReceiveMessage, the proxy's ACK_MESSAGE and the client's AckMessage."""
    p = []
    want = {("sent", "grpc"), ("sent", "remoting"), ("stored", None), ("delivered", "grpc"),
            ("delivered", "remoting"), ("acked", "grpc"), ("acked", "remoting")}
    for r in truth["received"]["simple"]:
        j = js.get(r["msg_id"])
        if j is None:
            p.append(f"{r['msg_id']}: no journey")
            continue
        have = {(e["kind"], e["protocol"]) for e in j["events"]}
        have |= {(k, None) for k, _ in have}
        missing = sorted(want - have, key=str)
        if missing:
            p.append(f"{r['msg_id']}: no {missing} (has {sorted(have - {(k, None) for k, _ in have})})")
        if r.get("changed_invisible_duration") and not events(j, "invisible_changed"):
            p.append(f"{r['msg_id']}: ChangeInvisibleDuration not joined (invisible_changed)")
        if (j["topic"], j["keys"]) != (r["topic"], r["keys"]):
            p.append(f"{r['msg_id']}: topic/keys {j['topic']} {j['keys']} != {r['topic']} {r['keys']}")
    return p


def lag_rows(pcap: Path, *args: str) -> list[dict[str, Any]]:
    return command("lag", str(pcap), *args)


def check_lag_at_end(rows: list[dict[str, Any]], truth: dict[str, Any]) -> list[str]:
    """``rmqsniff lag`` for the scenario's group equals ``mqadmin consumerProgress``, queue by
    queue: broker offset, consumer offset, lag (mqadmin's Diff)."""
    p = []
    group = truth["group"]
    broker_port = truth["capture"]["ports"]["broker"]
    mine = [r for r in rows if r["group"] == group]
    by_queue = {(r["topic"], r["queue"]): r for r in mine}
    if len(by_queue) != len(mine):
        p.append(f"several rows for one queue of {group}: {Counter((r['topic'], r['queue']) for r in mine)}")
    want = {(w["topic"], w["queue"]): w for w in truth["consumer_progress"]["rows"]}
    if set(by_queue) != set(want):
        p.append(f"queues of {group}: {sorted(by_queue)} != mqadmin's {sorted(want)}")
    for q in sorted(set(by_queue) & set(want)):
        r, w = by_queue[q], want[q]
        got = (r["broker_offset"], r["consumer_offset"], r["lag"])
        if got != (w["broker_offset"], w["consumer_offset"], w["diff"]):
            p.append(f"{q}: broker/consumer offset, lag {got} != mqadmin {w['broker_offset']}, "
                     f"{w['consumer_offset']}, {w['diff']}")
        if r["broker"] != w["broker"] and not str(r["broker"]).endswith(f":{broker_port}"):
            p.append(f"{q}: broker {r['broker']!r} is neither {w['broker']!r} nor the broker's address")
        if not isinstance(r["ts"], float):
            p.append(f"{q}: ts {r['ts']!r}")
    return p


def _interval_time(rows: list[dict[str, Any]]) -> float:
    """When an interval's rows hold: its end if given (values are carried with their age), else
    the latest fact in it."""
    end = rows[0].get("interval_end")
    return float(end) if end is not None else max(r["ts"] for r in rows)


def check_lag_over_time(rows: list[dict[str, Any]], truth: dict[str, Any]) -> list[str]:
    """``--interval``: the group's lag on its topic rises during the slow burst above what it was
    while the consumer kept up, and is back to 0 once it drained (before the tail it never
    consumes)."""
    ph = {k: v / 1000 for k, v in truth["phases"].items()}
    per: dict[Any, list[dict[str, Any]]] = {}
    for r in rows:
        if r["group"] == truth["group"] and r["topic"] == truth["topic"]:
            # the contract names the interval, not its key: ``interval`` or ``interval_start``
            per.setdefault(r.get("interval", r.get("interval_start")), []).append(r)
    series = sorted((_interval_time(rs), sum(r["lag"] for r in rs if r["lag"] is not None),
                     any(r["lag"] is not None for r in rs)) for rs in per.values())
    known = [(t, lag) for t, lag, ok in series if ok]
    p = []
    before = [lag for t, lag in known if t < ph["slow_start_ms"]]
    during = [lag for t, lag in known if ph["slow_start_ms"] + 2 <= t <= ph["slow_end_ms"]]
    drained = [lag for t, lag in known if ph["drained_ms"] + 1.5 <= t < ph["tail_sent_ms"]]
    if not during or max(during) < 8:
        p.append(f"lag during the slow burst {during}: want a peak of at least 8")
    if not drained or drained[-1] != 0:
        p.append(f"lag after draining, before the tail {drained}: want 0 at the end")
    if during and drained and max(during) <= max(drained):
        p.append("lag did not fall after the burst")
    if during and before and max(during) <= max(before):
        p.append(f"lag did not rise in the slow burst: {max(before)} before it")
    if not p:
        return p
    return [*p, f"(series ts, lag: {[(round(t, 1), lag) for t, lag in known]})"]
