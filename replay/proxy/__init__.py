"""The built-in transparent proxy: forward every byte between RocketMQ clients and a
cluster, decode every frame into the one stats model, rewrite route answers so that
clients stay on the proxy, record the traffic for replay (``rmqsniff proxy``).

    config.py       LISTEN=UPSTREAM mappings, options
    server.py       Proxy: listeners (given and discovered per broker), sessions, stats
    session.py      one connection: two asyncio Protocols, backpressure, upstream failure answers
    remoting.py     remoting tap (sans-I/O): decode, route rewriting, SYSTEM_ERROR answers
    grpc.py         gRPC tap: calls into the same stats
    recorder.py     -w: pcapng with synthesised TCP/IP
    admin.py        /stats, /stats/prometheus, /exchanges, /routes: capped, timed out, token off loopback
    accept.py       accept loop: accept errors (EMFILE ...) back off and are counted
    transparent.py  SO_ORIGINAL_DST / TPROXY
    tls.py          TLS termination: permissive/enforcing listeners, local CA, upstream TLS, key log
"""
from __future__ import annotations

from .config import BROKER, GRPC, NAMESRV, TRANSPARENT, ConfigError, Mapping, ProxyConfig
from .server import Listener, Proxy, ProxyError, mappings, new_event_loop, running

__all__ = ["Proxy", "ProxyConfig", "ProxyError", "ConfigError", "Mapping", "Listener", "mappings", "running",
           "new_event_loop", "NAMESRV", "BROKER", "GRPC", "TRANSPARENT"]
