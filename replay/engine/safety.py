"""Where replay may connect: only allowed targets, never the capture's own servers.

Safety is decided on what addresses *are*, not on how they are written. Every target, every
``--allow-target`` entry and every captured server is resolved with the OS resolver
(:func:`socket.getaddrinfo`: host names, all their A/AAAA answers, and the numeric spellings
it accepts such as ``127.1``, ``2130706433`` or ``0x7f000001``) and normalised with
:mod:`ipaddress` (an IPv4-mapped ``::ffff:a.b.c.d`` is ``a.b.c.d``). Addresses are then
compared as ``(address, port)`` pairs.

The rule, deliberately conservative:

* a destination is *allowed* only when every address it resolves to is an address of some
  ``--allow-target`` entry (and that entry's port, when it names one);
* a destination *meets* a captured server when one of its addresses has the server's port and
  either is the server's address or both are "this host": loopback (all of ``127.0.0.0/8``
  and ``::1``), unspecified (``0.0.0.0`` and ``::``, which mean this host when connecting) or an
  address of one of this machine's interfaces. ``127.0.0.2:9876`` is only the same socket as
  ``127.0.0.1:9876`` when the server is bound to ``0.0.0.0``, which replay cannot know, so
  the two are treated as the same server;
* a destination that meets a captured server is refused unless ``--i-know-this-is-production``.

:meth:`Guard.approve` returns the (numeric) address replay then connects to, so the address
checked is the address used: there is no second name lookup between the check and the connect.
"""
from __future__ import annotations

import functools
import ipaddress
import socket

from rmqsniff.model import Endpoint
from rmqsniff.model import endpoint_text as ep_text

IP = ipaddress.IPv4Address | ipaddress.IPv6Address
Addr = tuple[IP, int]


class SafetyError(RuntimeError):
    """A destination replay refuses (one line for the user)."""


def parse_endpoint(text: str, default_port: int | None = None) -> tuple[str, int | None]:
    """``HOST:PORT``, ``[V6]:PORT`` or ``HOST`` (port None unless ``default_port``)."""
    t = text.strip()
    if t.startswith("["):
        host, _, rest = t[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif t.count(":") == 1:
        host, _, port = t.partition(":")
    else:
        host, port = t, ""
    if not host:
        raise SafetyError(f"{text!r}: no host")
    if port:
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise SafetyError(f"{text!r}: bad port")
        return host, int(port)
    return host, default_port


def endpoint(text: str) -> Endpoint:
    host, port = parse_endpoint(text)
    if port is None:
        raise SafetyError(f"{text!r}: expected HOST:PORT")
    return host, port


def normalise(ip: str) -> IP:
    """``ip`` (as getaddrinfo gives it) as an address; IPv4-mapped IPv6 becomes IPv4."""
    a = ipaddress.ip_address(ip.split("%", 1)[0])  # no zone index
    if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped is not None:
        return a.ipv4_mapped
    return a


def resolve(host: str) -> list[IP]:
    """Every address ``host`` resolves to (getaddrinfo order, normalised, no duplicates)."""
    try:
        infos = socket.getaddrinfo(host.strip("[]"), None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as e:
        raise SafetyError(f"cannot resolve {host!r}: {getattr(e, 'strerror', None) or e}") from None
    out: list[IP] = []
    for info in infos:
        if info[0] not in (socket.AF_INET, socket.AF_INET6):
            continue
        a = normalise(str(info[4][0]))
        if a not in out:
            out.append(a)
    if not out:
        raise SafetyError(f"cannot resolve {host!r}: no IPv4 or IPv6 address")
    return out


@functools.lru_cache(maxsize=1024)
def this_host(a: IP) -> bool:
    """Whether ``a`` reaches this machine: loopback, unspecified, or bound to an interface here
    (tested by binding a socket to it; nothing is sent)."""
    if a.is_loopback or a.is_unspecified:
        return True
    if a.is_multicast or (isinstance(a, ipaddress.IPv6Address) and a.is_link_local):
        return False
    fam = socket.AF_INET6 if isinstance(a, ipaddress.IPv6Address) else socket.AF_INET
    try:
        with socket.socket(fam, socket.SOCK_STREAM) as s:
            s.bind((str(a), 0))
    except OSError:
        return False
    return True


def meets(a: Addr, b: Addr) -> bool:
    """Whether connecting to ``a`` may reach the server at ``b`` (see the module's rule)."""
    if a[1] != b[1]:
        return False
    return a[0] == b[0] or (this_host(a[0]) and this_host(b[0]))


def _text(a: Addr) -> str:
    return ep_text((str(a[0]), a[1]))


class Guard:
    """Checks every address replay (or its proxy) is about to connect to."""

    def __init__(self, allow: list[str], production: set[Endpoint] | frozenset = frozenset(),
                 i_know_this_is_production: bool = False) -> None:
        if not allow:
            raise SafetyError("replay needs --allow-target HOST[:PORT] (the staging addresses it may connect to)")
        self.allow_text = list(allow)
        self.allow: list[tuple[list[IP], int | None]] = []
        for a in allow:
            host, port = parse_endpoint(a)
            try:
                self.allow.append((resolve(host), port))
            except SafetyError as e:
                raise SafetyError(f"--allow-target {a}: {e}") from None
        self.production: list[Addr] = []
        self._unresolved: set[Endpoint] = set()  # captured servers getaddrinfo did not take: compared as written
        for host, port in production:
            try:
                self.production += [(ip, port) for ip in resolve(host)]
            except SafetyError:
                self._unresolved.add((host.lower(), port))
        self.override = i_know_this_is_production
        self._approved: dict[Endpoint, Endpoint] = {}  # resolve once: the same answer every time

    def _allowed(self, a: Addr) -> bool:
        return any(a[0] in ips and (p is None or p == a[1]) for ips, p in self.allow)

    def approve(self, ep: Endpoint, what: str) -> Endpoint:
        """The numeric address to connect to for ``ep``; raises :class:`SafetyError` (a one-line
        "refused: ..." message) when any address ``ep`` resolves to is not allowed or meets a
        captured server."""
        got = self._approved.get(ep)
        if got is not None:
            return got
        try:
            addrs = [(ip, ep[1]) for ip in resolve(ep[0])]
        except SafetyError as e:
            raise SafetyError(f"refused: {what} {ep_text(ep)}: {e}") from None
        shown = ", ".join(_text(a) for a in addrs)
        same = "" if [ep_text(ep)] == [_text(a) for a in addrs] else f" (= {shown})"
        bad = [a for a in addrs if not self._allowed(a)]
        if bad:
            raise SafetyError(f"refused: {what} {ep_text(ep)}{same} is not allowed by --allow-target "
                              f"({', '.join(self.allow_text)})")
        if not self.override:
            hits = [(a, s) for a in addrs for s in self.production if meets(a, s)]
            if hits or (ep[0].lower(), ep[1]) in self._unresolved:
                srv = _text(hits[0][1]) if hits else ep_text(ep)
                where = "" if srv == ep_text(ep) else f"; it reaches captured server {srv}"
                raise SafetyError(f"refused: {what} {ep_text(ep)}{same} is a server in the capture "
                                  f"(production?){where}; replay goes there only with --i-know-this-is-production")
        ip = addrs[0][0]
        got = self._approved[ep] = (str(ip), ep[1])
        self._approved[got] = got
        return got

    def check(self, ep: Endpoint, what: str) -> None:
        """Raise :class:`SafetyError` unless ``ep`` may be used (see :meth:`approve`)."""
        self.approve(ep, what)
