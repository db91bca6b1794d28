"""The project's own gRPC client (replay/engine/grpcclient.py) over Python's ``ssl`` (OpenSSL,
``keylog_filename``) against the real RocketMQ 5.3 proxy's gRPC port (TLS permissive, its
test-mode self-signed certificate), recorded by tcpdump on loopback: ``rmqsniff read
--tls-keylog`` gives exactly the calls the client made, with their answers, for TLS 1.3 and
TLS 1.2 with ChaCha20-Poly1305, AES-256-GCM and AES-128-GCM; a key log that lacks one
session reports exactly that connection as ``no key``.  Marker ``rocketmq``."""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import ssl
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from replay.engine.grpcclient import GrpcClient
from rmqsniff.cli import main
from tests.rocketmq.capture import Capture
from tests.support.grpc_wire import SERVICE, heartbeat_request, query_route_request, request_headers, send_request
from tests.support.tcpdump import settle
from tests.support.tlspair import check_grpc_truth

pytestmark = [pytest.mark.rocketmq, pytest.mark.timeout(600)]

# (version, OpenSSL cipher list for TLS 1.2 or None): what each connection offers
SESSIONS: list[tuple[ssl.TLSVersion, str | None]] = [
    (ssl.TLSVersion.TLSv1_3, None),
    (ssl.TLSVersion.TLSv1_2, "ECDHE-RSA-CHACHA20-POLY1305:ECDHE-ECDSA-CHACHA20-POLY1305"),
    (ssl.TLSVersion.TLSv1_2, "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES256-GCM-SHA384"),
    (ssl.TLSVersion.TLSv1_2, "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES128-GCM-SHA256"),
]
OPENSSL_TO_IANA = {  # the cipher names the client's ssl reports
    "TLS_AES_256_GCM_SHA384": "TLS_AES_256_GCM_SHA384", "TLS_AES_128_GCM_SHA256": "TLS_AES_128_GCM_SHA256",
    "TLS_CHACHA20_POLY1305_SHA256": "TLS_CHACHA20_POLY1305_SHA256",
    "ECDHE-RSA-CHACHA20-POLY1305": "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    "ECDHE-RSA-AES256-GCM-SHA384": "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "ECDHE-RSA-AES128-GCM-SHA256": "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "ECDHE-ECDSA-CHACHA20-POLY1305": "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384": "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "ECDHE-ECDSA-AES128-GCM-SHA256": "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
}


def context(version: ssl.TLSVersion, ciphers: str | None, keylog: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the proxy's test-mode self-signed certificate
    ctx.minimum_version = ctx.maximum_version = version
    if ciphers:
        ctx.set_ciphers(ciphers)
    ctx.set_alpn_protocols(["h2"])
    ctx.keylog_filename = str(keylog)
    return ctx


async def one_session(port: int, ctx: ssl.SSLContext, n: int) -> dict[str, Any]:
    """QueryRoute, Heartbeat and two SendMessage calls; the client's own record of them."""
    client = await GrpcClient.connect(("127.0.0.1", port), 10.0, tls=ctx)
    assert client.transport is not None
    obj = client.transport.get_extra_info("ssl_object")
    calls = []
    plan = [("QueryRoute", query_route_request("GrpcTopic")), ("Heartbeat", heartbeat_request("GID_TLS")),
            ("SendMessage", send_request("GrpcTopic", 100 * n, b"tls-body-1")),
            ("SendMessage", send_request("GrpcTopic", 100 * n + 1, b"tls-body-2"))]
    for i, (method, body) in enumerate(plan):
        call = client.start(SERVICE + method, request_headers(method, 10 * n + i), [body], end=True)
        assert call.done is not None
        await asyncio.wait_for(call.done, 15)
        calls.append({"method": method, "grpc_status": call.grpc_status, "responses": len(call.messages)})
    client.close()
    await asyncio.sleep(0.2)
    return {"local_port": client.local[1] if client.local else 0, "cipher": OPENSSL_TO_IANA[obj.cipher()[0]],
            "version": obj.version().replace("v", " "), "calls": calls}


def read_jsonl(*args: str) -> tuple[list[dict[str, Any]], str]:
    r = CliRunner().invoke(main, ["read", *args, "--format", "jsonl"])
    assert r.exit_code == 0, r.output
    return [orjson.loads(x) for x in r.stdout.splitlines()], r.stderr


def keep(out: Path, pcap: Path, keylogs: list[Path], truth: list[dict[str, Any]]) -> None:
    """``$RMQSNIFF_TLS_CAPTURE_DIR``: keep the capture, its key log (0600) and the client's truth
    there as ``grpc_python.*`` (how ``captures/tls/`` got them)."""
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(pcap, out / "grpc_python.pcap")
    keys = out / "grpc_python.keys"
    fd = os.open(keys, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("".join(k.read_text() for k in keylogs))
    doc = {"scenario": "tls/grpc_python", "protocol": "grpc", "tls": True,
           "description": __doc__.split("\n\n")[0].replace("\n", " "),
           "client": "rmqsniff replay/engine/grpcclient.py over Python ssl (OpenSSL)", "sessions": truth}
    (out / "grpc_python.truth.json").write_text(json.dumps(doc, indent=1) + "\n")


def test_grpc_over_tls_to_the_real_proxy(rocketmq_cluster, tmp_path: Path) -> None:
    port = rocketmq_cluster.ports.grpc
    pcap = tmp_path / "grpc_tls.pcap"
    keylogs = [tmp_path / f"keys{i}.log" for i in range(len(SESSIONS))]
    truth = []
    with Capture(pcap, [port]):
        for i, (version, ciphers) in enumerate(SESSIONS):
            truth.append(asyncio.run(one_session(port, context(version, ciphers, keylogs[i]), i)))
        settle(pcap)
    chosen = {t["cipher"] for t in truth}
    assert any("CHACHA20" in c for c in chosen) and any("AES256" in c or "AES_256" in c for c in chosen)

    for i, t in enumerate(truth):
        t["client_random"] = next(ln.split()[1] for ln in keylogs[i].read_text().splitlines()
                                  if ln.split()[:1] in (["CLIENT_RANDOM"], ["CLIENT_TRAFFIC_SECRET_0"]))
    if os.environ.get("RMQSNIFF_TLS_CAPTURE_DIR"):
        keep(Path(os.environ["RMQSNIFF_TLS_CAPTURE_DIR"]), pcap, keylogs, truth)

    rows, err = read_jsonl(str(pcap), *(x for k in keylogs for x in ("--tls-keylog", str(k))))
    check_grpc_truth(rows, truth)
    assert "no key" not in err

    # the key log of the second session left out: exactly that connection is "no key"
    rows, err = read_jsonl(str(pcap), *(x for k in keylogs if k != keylogs[1] for x in ("--tls-keylog", str(k))))
    ports = {int(r["connection"]["client"].rsplit(":", 1)[1]) for r in rows}
    assert ports == {t["local_port"] for t in truth} - {truth[1]["local_port"]}
    no_key = [ln for ln in err.splitlines() if "TLS no key" in ln]
    assert len(no_key) == 1 and f":{truth[1]['local_port']} -> " in no_key[0]
    assert no_key[0].split("client random ")[1].rstrip(")") == truth[1]["client_random"]
