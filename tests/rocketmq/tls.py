"""TLS settings of the harness: JVM options that make RocketMQ's Java TLS readable by the
``extract-tls-secrets`` agent, and the remoting TLS (enforcing) cluster variant.

The agent sees only the JDK's own TLS engine (JSSE), not Netty's tcnative (BoringSSL):

* ``rocketmq-client-java`` (gRPC) bundles tcnative inside its shaded grpc-netty and uses it by
  default: the agent logs nothing (``test_agent_sees_nothing_of_the_clients_default_engine``).
  Netty's ``noOpenSsl`` switch, under the relocated name that copy of Netty reads, makes it run
  the same TLS on the JDK engine; its TLS settings stay at their defaults.
* The remoting client needs nothing: 5.3.3's ``TlsHelper`` builds every client context with
  ``SslProvider.JDK``. Its servers take ``SslProvider.OPENSSL`` whenever tcnative loads (the
  server lib has netty-tcnative-boringssl-static), so name server and broker get ``noOpenSsl``
  to have their side logged too.
"""
from __future__ import annotations

import os
from pathlib import Path

from . import build

# Netty's switch, under the name each copy of Netty reads (the gRPC client relocates its strings)
JDK_ENGINE_REMOTING = "-Dio.netty.handler.ssl.noOpenSsl=true"
JDK_ENGINE_GRPC_CLIENT = "-Dorg.apache.rocketmq.shaded.io.grpc.netty.shaded.io.netty.handler.ssl.noOpenSsl=true"

# remoting TLS on name server, broker and proxy: servers accept TLS only, and their own remoting
# clients (broker -> name server, proxy -> both) speak TLS; certificates: RocketMQ's test mode
# (self-signed, generated at start-up; clients do not verify the server)
REMOTING_TLS_SERVER = ("-Dtls.server.mode=enforcing", "-Dtls.enable=true", "-Dtls.test.mode.enable=true")
REMOTING_TLS_CLIENT = ("-Dtls.enable=true",)
# roles whose TLS secrets the agent can have: the proxy's remoting server builds its context with
# SslProvider.OPENSSL unconditionally (MultiProtocolTlsHelper: start-up fails under noOpenSsl),
# so the proxy keeps tcnative; its sessions with name server and broker are logged by those
KEYLOG_ROLES = ("namesrv", "broker")

# the remoting client's calls time out after 3 s by default; a first JDK TLS handshake on a loaded
# 2-core machine (C1 only) took long enough for a route lookup to miss that once
SLOW_HANDSHAKE = ("-Drmqsniff.apiTimeoutMs=15000",)

PROTOCOLS = {"1.2": "TLSv1.2", "1.3": "TLSv1.3"}


def client_protocol(version: str) -> str:
    """``-Djdk.tls.client.protocols=...``: the JDK client offers only TLS ``version``."""
    return f"-Djdk.tls.client.protocols={PROTOCOLS[version]}"


def new_keylog(path: Path) -> Path:
    """An empty key log file created 0600 (the agent appends to it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    return path


def server_jvm(role: str, keylog: Path) -> list[str]:
    """A server JVM's options in a remoting TLS cluster (the agent and JDK engine where possible)."""
    readable = [JDK_ENGINE_REMOTING, agent(keylog)] if role in KEYLOG_ROLES else []
    return [*REMOTING_TLS_SERVER, *readable]


def agent(keylog: Path) -> str:
    """``-javaagent:`` option writing the JVM's TLS secrets to ``keylog`` (created 0600 first)."""
    return f"-javaagent:{build.tls_agent()}={new_keylog(keylog)}"


def keylog_sessions(text: str) -> list[str]:
    """The sessions an NSS key log names: client randoms, or for ``RSA Session-ID:<id>
    Master-Key:<secret>`` lines (extract-tls-secrets' TLS 1.2 form) the session ids."""
    out = set()
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 3 or line.startswith("#"):
            continue
        out.add(parts[1].split(":", 1)[1] if parts[1].startswith("Session-ID:") else parts[1])
    return sorted(out)
