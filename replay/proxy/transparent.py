"""Transparent mode: where a redirected connection was really going.

iptables ``REDIRECT`` (nat table) keeps the original destination in conntrack,
read back with ``SO_ORIGINAL_DST``; ``TPROXY`` (mangle table) leaves it as the
accepted socket's local address.  See ``docs/proxy.md`` for the iptables rules.
"""
from __future__ import annotations

import socket
import struct

from .config import Endpoint

SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h (IP6T_SO_ORIGINAL_DST is the same number)
IP_TRANSPARENT = 19  # linux/in.h


def original_dst(sock: socket.socket) -> tuple[Endpoint, str]:
    """``((host, port), how)``: ``how`` is ``"redirect"`` (SO_ORIGINAL_DST) or ``"local"``
    (the socket's own address: TPROXY, or a connection that was not redirected)."""
    if sock.family == socket.AF_INET:
        try:
            raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
            port, = struct.unpack_from(">H", raw, 2)
            return (socket.inet_ntop(socket.AF_INET, raw[4:8]), port), "redirect"
        except OSError:
            pass
    elif sock.family == socket.AF_INET6:
        try:
            raw = sock.getsockopt(socket.IPPROTO_IPV6, SO_ORIGINAL_DST, 28)
            port, = struct.unpack_from(">H", raw, 2)
            return (socket.inet_ntop(socket.AF_INET6, raw[8:24]), port), "redirect"
        except OSError:
            pass
    host, port = sock.getsockname()[:2]
    return (host, port), "local"


def allow_tproxy(sock: socket.socket) -> bool:
    """Set IP_TRANSPARENT (needed to accept TPROXY'd connections); False without CAP_NET_ADMIN."""
    try:
        level = socket.SOL_IP if sock.family == socket.AF_INET else socket.IPPROTO_IPV6
        sock.setsockopt(level, IP_TRANSPARENT if sock.family == socket.AF_INET else 75, 1)
        return True
    except OSError:
        return False
