"""Where replay may connect: only allowed targets, never the capture's own servers."""
from __future__ import annotations

from rmqsniff.model import Endpoint
from rmqsniff.model import endpoint_text as ep_text


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


class Guard:
    """Checks every address replay (or its proxy) is about to connect to."""

    def __init__(self, allow: list[str], production: set[Endpoint] | frozenset = frozenset(),
                 i_know_this_is_production: bool = False) -> None:
        if not allow:
            raise SafetyError("replay needs --allow-target HOST[:PORT] (the staging addresses it may connect to)")
        self.allow = [parse_endpoint(a) for a in allow]
        self.production = set(production)
        self.override = i_know_this_is_production

    def allowed(self, ep: Endpoint) -> bool:
        return any(h == ep[0] and (p is None or p == ep[1]) for h, p in self.allow)

    def check(self, ep: Endpoint, what: str) -> None:
        """Raise :class:`SafetyError` unless ``ep`` may be used."""
        if not self.allowed(ep):
            raise SafetyError(f"{what} {ep_text(ep)} is not allowed by --allow-target "
                              f"({', '.join(a if p is None else f'{a}:{p}' for a, p in self.allow)})")
        if ep in self.production and not self.override:
            raise SafetyError(f"{what} {ep_text(ep)} is a server in the capture (production?); "
                              "refusing without --i-know-this-is-production")
