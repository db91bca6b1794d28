"""Python ``rocketmq-python-client`` (gRPC, plaintext) producer + simple consumer with ground truth.

Runs inside the client's own venv (see build.python_client_venv), never the project env.
Usage: python py_client_scenario.py ENDPOINT TOPIC OUT_JSON [--group G] [--messages N] [--late-preface-ms MS]
       [--trace-context]

``--trace-context`` gives the messages trace context user properties by turns, under the names
tracing agents use: W3C ``traceparent`` + ``tracestate``, SkyWalking ``sw8``, Zipkin ``b3``, the
``X-B3-*`` set and Jaeger ``uber-trace-id``; the truth's ``sent[].user_properties`` hold them.

``--late-preface-ms MS`` puts a byte relay (:class:`LatePrefaceRelay`) between the client and
ENDPOINT: every connection the client opens is connected through to ENDPOINT at once, but the
client's bytes (its HTTP/2 preface first) are held back for MS milliseconds, so the server has
that long to speak first. The relay changes no byte; it records what the server sent meanwhile.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import socket
import sys
import threading
import time


class LatePrefaceRelay:
    """127.0.0.1:PORT -> ``upstream``, unchanged bytes both ways; client bytes start ``delay`` s late."""

    def __init__(self, upstream: str, delay: float) -> None:
        host, port = upstream.rsplit(":", 1)
        self.upstream = (host, int(port))
        self.delay = delay
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.connections: list[dict] = []  # per upstream connection: what the server sent during the delay
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        up = socket.create_connection(self.upstream)
        for s in (client, up):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        rec = {"local_port": up.getsockname()[1], "server_bytes_during_delay": 0}
        with self._lock:
            self.connections.append(rec)
        t_connect = time.monotonic()
        # server -> client flows at once; count what the server says before the client may speak
        threading.Thread(target=self._pump, args=(up, client, rec, t_connect), daemon=True).start()
        time.sleep(self.delay)
        self._pump(client, up, None, t_connect)

    def _pump(self, src: socket.socket, dst: socket.socket, rec: dict | None, t_connect: float) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if rec is not None:
                    waited = time.monotonic() - t_connect
                    rec.setdefault("server_first_bytes_after_ms", round(waited * 1000))
                    if waited < self.delay:
                        rec["server_bytes_during_delay"] += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for how, s in ((socket.SHUT_WR, dst), (socket.SHUT_RD, src)):
                with contextlib.suppress(OSError):
                    s.shutdown(how)

    def close(self) -> None:
        self.listener.close()


def trace_properties(i: int) -> dict[str, str]:
    """Trace context for message ``i``: one format by turns, fresh random ids."""
    import base64
    import secrets

    def b64(s: str) -> str:
        return base64.b64encode(s.encode()).decode()

    turn = i % 5
    if turn == 0:
        return {"traceparent": f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01",
                "tracestate": f"rmqsniff={i},congo=t61rcWkgMzE"}
    if turn == 1:
        parts = ["1", b64(f"{secrets.token_hex(8)}.{i}"), b64(f"seg.{secrets.token_hex(4)}"), str(i),
                 b64("py-service"), b64("py@host"), b64(f"/py/{i}"), b64("127.0.0.1:8081")]
        return {"sw8": "-".join(parts)}
    if turn == 2:
        return {"b3": f"{secrets.token_hex(16)}-{secrets.token_hex(8)}-1-{secrets.token_hex(8)}"}
    if turn == 3:
        return {"X-B3-TraceId": secrets.token_hex(8), "X-B3-SpanId": secrets.token_hex(8), "X-B3-Sampled": "1"}
    return {"uber-trace-id": f"{secrets.token_hex(16)}:{secrets.token_hex(8)}:0:1"}


def main(endpoint: str, topic: str, out: str, group: str = "GID_py", messages: int = 10,
         late_preface_ms: int = 0, trace: bool = False) -> int:
    from rocketmq import ClientConfiguration, Credentials, FilterExpression, Message, Producer, SimpleConsumer

    t0 = time.time()
    relay = LatePrefaceRelay(endpoint, late_preface_ms / 1000) if late_preface_ms else None
    cfg = ClientConfiguration(relay.address if relay else endpoint, Credentials())
    counts: dict[str, int] = {}
    sent: list[dict] = []
    producer = Producer(cfg, (topic,))
    producer.startup()
    try:
        for i in range(messages):
            m = Message()
            m.topic = topic
            m.body = f"python grpc message {i}".encode()
            m.tag = "TagPy"
            m.keys = f"py-{i}"
            m.add_property("kind", "normal")
            m.add_property("idx", str(i))
            extra = trace_properties(i) if trace else {}
            for k, v in extra.items():
                m.add_property(k, v)
            r = producer.send(m)
            counts["send_normal"] = counts.get("send_normal", 0) + 1
            sent.append({
                "kind": "normal", "msg_id": r.message_id, "topic": topic, "tags": "TagPy", "keys": [f"py-{i}"],
                "queue_id": getattr(r.message_queue, "queue_id", None), "queue_offset": r.offset,
                "user_properties": {"idx": str(i), "kind": "normal", **extra},
                "body_len": len(m.body), "body_sha256": hashlib.sha256(m.body).hexdigest(),
            })
    finally:
        producer.shutdown()

    got: list[dict] = []
    consumer = SimpleConsumer(cfg, group, {topic: FilterExpression()}, await_duration=5)
    consumer.startup()
    want = {str(i) for i in range(messages)}
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
    if relay is not None:
        relay.close()
        truth["late_preface"] = {"delay_ms": late_preface_ms, "relay": relay.address,
                                 "connections": relay.connections}
    with open(out, "w") as f:
        json.dump(truth, f, indent=2)
        f.write("\n")
    print(f"OK sent={len(sent)} counts={counts}")
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("endpoint")
    ap.add_argument("topic")
    ap.add_argument("out")
    ap.add_argument("--group", default="GID_py")
    ap.add_argument("--messages", type=int, default=10)
    ap.add_argument("--late-preface-ms", type=int, default=0)
    ap.add_argument("--trace-context", action="store_true")
    a = ap.parse_args()
    sys.exit(main(a.endpoint, a.topic, a.out, a.group, a.messages, a.late_preface_ms, a.trace_context))
