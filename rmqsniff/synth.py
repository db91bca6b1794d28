"""Synthetic RocketMQ remoting traffic, built with the project's own encoder.

Real captures (``captures/``) are the ground truth; this generator exists for
what they cannot give: sizes (benchmarks over 200k+ packets), and exact
knowledge of every frame for property tests of reassembly.  Its shapes follow
what real Java clients send (SEND_MESSAGE_V2 short keys, long-polling pulls
answered with stored-message bodies, heartbeats, route lookups).
"""
from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from dissectors.remoting.command import JSON, ROCKETMQ, RemotingCommand
from dissectors.remoting.frame import encode
from dissectors.remoting.message import StoredMessage, encode_stored_message, properties_to_string

from .capwriter import CaptureWriter, TcpSession

BROKER = ("10.0.0.10", 10911)
NAMESRV = ("10.0.0.9", 9876)
TOPICS = ["TopicTest", "orders", "payments", "audit"]


@dataclass
class Turn:
    """One request and its answer (None for oneway) on a connection."""

    request: RemotingCommand
    response: RemotingCommand | None
    delay: float  # seconds between request and response


def _send(rng: random.Random, opaque: int, ser: int, i: int) -> Turn:
    topic = rng.choice(TOPICS)
    uniq = f"0A00000{rng.randrange(10)}{i:025X}"[:32]
    props = properties_to_string({"UNIQ_KEY": uniq, "WAIT": "true", "TAGS": "TagA", "KEYS": f"k{i}"})
    body = rng.randbytes(rng.choice((64, 256, 1024)))
    req = RemotingCommand(310, 0, opaque, "JAVA", 479, None, {
        "a": "PG_bench", "b": topic, "c": "TBW102", "d": "4", "e": str(i % 4), "f": "0",
        "g": str(1700000000000 + i), "h": "0", "i": props, "j": "0", "k": "false", "m": "false",
    }, body, ser)
    resp = RemotingCommand(0, 1, opaque, "JAVA", 479, None, {
        "msgId": f"0A00000A00002A9F{i:016X}", "queueId": str(i % 4), "queueOffset": str(i),
        "MSG_REGION": "DefaultRegion", "TRACE_ON": "true",
    }, None, ser)
    return Turn(req, resp, rng.uniform(0.0005, 0.004))


def _pull(rng: random.Random, opaque: int, ser: int, i: int) -> Turn:
    topic = rng.choice(TOPICS)
    req = RemotingCommand(11, 0, opaque, "JAVA", 479, None, {
        "consumerGroup": "CG_bench", "topic": topic, "queueId": str(i % 4), "queueOffset": str(i),
        "maxMsgNums": "32", "sysFlag": "3", "commitOffset": "0", "suspendTimeoutMillis": "15000",
        "subVersion": "1700000000000", "expressionType": "TAG",
    }, None, ser)
    if rng.random() < 0.3:
        resp = RemotingCommand(19, 1, opaque, "JAVA", 479, "OFFSET_OVERFLOW_ONE", {
            "suggestWhichBrokerId": "0", "nextBeginOffset": str(i), "minOffset": "0", "maxOffset": str(i),
        }, None, ser)
        return Turn(req, resp, rng.uniform(0.01, 0.05))
    body = b"".join(
        encode_stored_message(StoredMessage(
            queue_id=i % 4, queue_offset=i + k, physical_offset=4096 * (i + k), born_timestamp=1700000000000 + i,
            born_host="10.0.0.1:50000", store_timestamp=1700000000001 + i, store_host="10.0.0.10:10911",
            body=rng.randbytes(200), topic=topic,
            properties={"UNIQ_KEY": f"0A000001{i:024X}", "TAGS": "TagA"},
        )) for k in range(rng.randint(1, 3))
    )
    resp = RemotingCommand(0, 1, opaque, "JAVA", 479, "FOUND", {
        "suggestWhichBrokerId": "0", "nextBeginOffset": str(i + 3), "minOffset": "0", "maxOffset": str(i + 3),
    }, body, ser)
    return Turn(req, resp, rng.uniform(0.0005, 0.003))


def _heartbeat(rng: random.Random, opaque: int, ser: int, i: int) -> Turn:
    body = (b'{"clientID":"10.0.0.1@4242#1","consumerDataSet":[],"producerDataSet":'
            b'[{"groupName":"PG_bench"},{"groupName":"CLIENT_INNER_PRODUCER"}]}')
    req = RemotingCommand(34, 0, opaque, "JAVA", 479, None, {}, body, ser)
    resp = RemotingCommand(0, 1, opaque, "JAVA", 479, None, {}, None, ser)
    return Turn(req, resp, rng.uniform(0.0002, 0.001))


def _route(rng: random.Random, opaque: int, ser: int, i: int) -> Turn:
    topic = rng.choice(TOPICS)
    req = RemotingCommand(105, 0, opaque, "JAVA", 479, None, {"topic": topic}, None, ser)
    body = (b'{"brokerDatas":[{"brokerAddrs":{"0":"10.0.0.10:10911"},"brokerName":"broker-a",'
            b'"cluster":"DefaultCluster","enableActingMaster":false}],"filterServerTable":{},'
            b'"queueDatas":[{"brokerName":"broker-a","perm":6,"readQueueNums":4,"topicSysFlag":0,'
            b'"writeQueueNums":4}]}')
    resp = RemotingCommand(0, 1, opaque, "JAVA", 479, None, None, body, ser)
    return Turn(req, resp, rng.uniform(0.0002, 0.001))


def conversation(rng: random.Random, n: int, kind: str, ser_mix: float = 0.2) -> Iterator[Turn]:
    """``n`` turns of one client connection of ``kind`` ("producer", "consumer", "namesrv")."""
    opaque = rng.randrange(1000)
    for i in range(n):
        opaque += 1
        ser = ROCKETMQ if rng.random() < ser_mix else JSON
        if kind == "namesrv":
            yield _route(rng, opaque, ser, i)
        elif i % 50 == 0:
            yield _heartbeat(rng, opaque, ser, i)
        elif kind == "producer":
            yield _send(rng, opaque, ser, i)
        else:
            yield _pull(rng, opaque, ser, i)


def write_capture(path: str, exchanges: int, seed: int = 1, connections: int = 20,
                  fmt: str = "pcap") -> dict[str | int, int]:
    """Write a capture of about ``exchanges`` exchanges; returns what was written: the
    ``exchanges`` and ``packets`` counts and, per request code, its requests."""
    rng = random.Random(seed)
    counts: dict[str | int, int] = {"exchanges": 0, "packets": 0}
    with open(path, "wb") as f:
        w = CaptureWriter(f, fmt)
        orig_write = w.write

        def write(ts: float, frame: bytes) -> None:
            counts["packets"] += 1
            orig_write(ts, frame)

        w.write = write  # type: ignore[method-assign]
        per = max(1, exchanges // connections)
        ts = 1700000000.0
        for c in range(connections):
            kind = "namesrv" if c % 10 == 9 else ("producer" if c % 2 == 0 else "consumer")
            server = NAMESRV if kind == "namesrv" else BROKER
            s = TcpSession(w, (f"10.0.1.{c % 250 + 1}", 40000 + c), server, isn_client=rng.randrange(1 << 32),
                           isn_server=rng.randrange(1 << 32), mss=1460)
            s.handshake(ts)
            for t in conversation(rng, per, kind):
                ts += rng.uniform(0.0001, 0.001)
                s.send(ts, True, encode(t.request))
                counts["exchanges"] += 1
                counts[t.request.code] = counts.get(t.request.code, 0) + 1
                if t.response is not None:
                    ts += t.delay
                    s.send(ts, False, encode(t.response), ack=rng.random() < 0.5)
            s.close(ts + 0.01)
        w.close()
    return counts
