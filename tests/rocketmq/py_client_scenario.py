"""Python ``rocketmq-python-client`` (gRPC, plaintext) producer + simple consumer with ground truth.

Runs inside the client's own venv (see build.python_client_venv), never the project env.
Usage: python py_client_scenario.py ENDPOINT TOPIC OUT_JSON
"""
from __future__ import annotations

import hashlib
import json
import sys
import time


def main(endpoint: str, topic: str, out: str) -> int:
    from rocketmq import ClientConfiguration, Credentials, FilterExpression, Message, Producer, SimpleConsumer

    t0 = time.time()
    cfg = ClientConfiguration(endpoint, Credentials())
    counts: dict[str, int] = {}
    sent: list[dict] = []
    producer = Producer(cfg, (topic,))
    producer.startup()
    try:
        for i in range(10):
            m = Message()
            m.topic = topic
            m.body = f"python grpc message {i}".encode()
            m.tag = "TagPy"
            m.keys = f"py-{i}"
            m.add_property("kind", "normal")
            m.add_property("idx", str(i))
            r = producer.send(m)
            counts["send_normal"] = counts.get("send_normal", 0) + 1
            sent.append({
                "kind": "normal", "msg_id": r.message_id, "topic": topic, "tags": "TagPy", "keys": [f"py-{i}"],
                "queue_id": getattr(r.message_queue, "queue_id", None), "queue_offset": r.offset,
                "user_properties": {"idx": str(i), "kind": "normal"},
                "body_len": len(m.body), "body_sha256": hashlib.sha256(m.body).hexdigest(),
            })
    finally:
        producer.shutdown()

    got: list[dict] = []
    consumer = SimpleConsumer(cfg, "GID_py", {topic: FilterExpression()}, await_duration=5)
    consumer.startup()
    want = {str(i) for i in range(10)}
    deadline = time.time() + 90
    try:
        while {g["idx"] for g in got} < want and time.time() < deadline:
            counts["receive_calls"] = counts.get("receive_calls", 0) + 1
            try:
                msgs = consumer.receive(16, 20) or []
            except Exception as e:  # noqa: BLE001 - only the start-up race below is retried
                # The client sends its settings on its telemetry stream in the background; a
                # receive that reaches the RocketMQ proxy first fails there with an NPE
                # ("settings" is null). A real client would retry too.
                if '"settings" is null' not in str(e):
                    raise
                counts["receive_errors"] = counts.get("receive_errors", 0) + 1
                time.sleep(0.5)
                continue
            for mv in msgs:
                consumer.ack(mv)
                counts["ack"] = counts.get("ack", 0) + 1
                body = mv.body or b""
                got.append({
                    "msg_id": mv.message_id, "topic": mv.topic, "tags": mv.tag, "keys": list(mv.keys or []),
                    "delivery_attempt": mv.delivery_attempt, "kind": (mv.properties or {}).get("kind"),
                    "idx": (mv.properties or {}).get("idx"),
                    "body_len": len(body), "body_sha256": hashlib.sha256(body).hexdigest(),
                })
    finally:
        consumer.shutdown()
    if not {g["idx"] for g in got} >= want:
        print("simple consumer missed messages", file=sys.stderr)
        return 1
    from importlib.metadata import version

    truth = {
        "client": f"python rocketmq-python-client {version('rocketmq-python-client')}",
        "protocol": "grpc", "endpoint": endpoint, "tls": False, "topic": topic,
        "counts": counts, "sent": sent, "received": {"simple": got},
        "elapsed_ms": int((time.time() - t0) * 1000),
    }
    with open(out, "w") as f:
        json.dump(truth, f, indent=2)
        f.write("\n")
    print(f"OK sent={len(sent)} counts={counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
