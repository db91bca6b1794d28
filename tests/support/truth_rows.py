"""rmqsniff's JSON output (``read --format jsonl``, ``read --messages --format jsonl``) compared
with a client's ground truth: what the TLS tests check after decryption, through the CLI only
(the shared interface), so the same checks run on a plaintext capture and on its TLS twin."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent.parent


def rmqsniff(*args: str, env: dict[str, str] | None = None) -> tuple[list[dict[str, Any]], str]:
    """Run ``python -m rmqsniff ARGS`` (jsonl output); returns the rows and stderr."""
    run_env = {k: v for k, v in os.environ.items() if k != "SSLKEYLOGFILE"}
    run_env.update(env or {})
    proc = subprocess.run([sys.executable, "-m", "rmqsniff", *args], capture_output=True, text=True,
                          cwd=REPO, env=run_env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()], proc.stderr


def supports_tls_keylog() -> bool:
    """Whether this rmqsniff reads TLS key logs (``read --tls-keylog``)."""
    proc = subprocess.run([sys.executable, "-m", "rmqsniff", "read", "--help"], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    return "--tls-keylog" in proc.stdout


def remoting_message_problems(rows: list[dict[str, Any]], truth: dict[str, Any]) -> list[str]:
    """``read --messages`` rows against a remoting truth: every answered send with its id, offset
    msg id, queue and offset; every message each consumer got among the pulled rows."""
    topic = truth["topic"]
    p: list[str] = []
    sent = {r["unique_key"]: r for r in rows if r["kind"] == "sent" and r.get("topic") == topic}
    batch = [r for r in rows if r["kind"] == "batch-sent" and r.get("topic") == topic]
    singles = [s for s in truth["sent"] if s["kind"] != "batch"]
    if set(sent) != {s["msg_id"] for s in singles}:
        p.append(f"sent ids differ: {sorted(set(sent) ^ {s['msg_id'] for s in singles})[:3]}")
    for s in singles:
        r = sent.get(s["msg_id"])
        if r is None or "offset_msg_id" not in s:
            continue  # oneway: no answer, no offset
        got = (r.get("msg_id"), r.get("queue"), r.get("offset"))
        want = (s["offset_msg_id"], s["queue_id"], s["queue_offset"])
        if got != want:
            p.append(f"send {s['msg_id']}: (offset msg id, queue, offset) {got} != {want}")
    if len(batch) != truth["counts"].get("batch_messages", 0):
        p.append(f"{len(batch)} batch members != {truth['counts'].get('batch_messages', 0)}")
    pulled = Counter(r.get("msg_id") for r in rows if r["kind"] in ("pulled", "popped") and r.get("topic") == topic)
    want_rx = Counter(r["offset_msg_id"] for bucket in truth["received"].values() for r in bucket)
    missing = want_rx - pulled
    if missing:
        p.append(f"{sum(missing.values())} received messages not among the pulled rows: {list(missing)[:3]}")
    return p


def calls(rows: list[dict[str, Any]], method: str) -> list[dict[str, Any]]:
    return [r for r in rows if (r.get("request") or {}).get("method") == method]


def grpc_call_problems(rows: list[dict[str, Any]], truth: dict[str, Any]) -> list[str]:
    """``read`` rows of a gRPC capture against the Java gRPC truth: sent and received message ids."""
    p: list[str] = []
    grpc = [r for r in rows if r.get("protocol") == "grpc"]
    if not grpc:
        return ["no gRPC exchange decoded"]
    sent = [m["system_properties"]["message_id"] for r in calls(grpc, "SendMessage")
            for msg in r["request"].get("messages", []) for m in (msg.get("decoded") or {}).get("messages", [])]
    want_sent = [s["msg_id"] for s in truth["sent"]]
    if sorted(sent) != sorted(want_sent):
        p.append(f"SendMessage ids differ from the truth: {sorted(set(sent) ^ set(want_sent))[:3]}")
    got = {(msg.get("decoded") or {}).get("message", {}).get("system_properties", {}).get("message_id")
           for r in calls(grpc, "ReceiveMessage") if r.get("response") for msg in r["response"].get("messages", [])}
    want = {r["msg_id"] for bucket in truth["received"].values() for r in bucket}
    if not want <= got:
        p.append(f"received ids not delivered by ReceiveMessage: {sorted(want - got)[:3]}")
    bad = [r["index"] for r in grpc if r.get("status") != "answered"]
    if bad:
        p.append(f"gRPC exchanges not answered: {bad[:5]}")
    return p
