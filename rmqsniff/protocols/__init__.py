"""The protocols rmqsniff decodes: each is one :class:`~.base.Protocol` object that supplies
everything the rest of rmqsniff needs of it (recognition, connection handler, stats
classifier, filter fields, JSON, detail tree, message rows, follow lines, replay planning).

    from rmqsniff.protocols import protocol_of
    protocol_of(exchange).sides(exchange, redact=True)

Adding a protocol, or a layer under one (TLS), touches this package only.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .base import GENERIC, UNKNOWN, Classifier, Protocol
from .grpc import GRPC
from .remoting import REMOTING

if TYPE_CHECKING:
    from ..model import Exchange

PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (REMOTING, GRPC)}
# recognition from first bytes is tried in this order
RECOGNISERS: tuple[Protocol, ...] = (GRPC,)


_UNKNOWN: dict[str, Protocol] = {}
MAX_UNKNOWN = 64  # names of protocols nobody registered that get a generic object of their own


def protocol_named(name: str) -> Protocol:
    """The protocol called ``name``; a name nobody registered gets a generic one (known by
    its codes only, shown as ``name:CODE``)."""
    p = PROTOCOLS.get(name)
    if p is None:
        p = _UNKNOWN.get(name)
        if p is None:
            if len(_UNKNOWN) >= MAX_UNKNOWN:
                return UNKNOWN
            p = _UNKNOWN[name] = Protocol()
            p.name, p.code_prefix = name, f"{name}:"
    return p


def protocol_of(ex: Exchange) -> Protocol:
    """The protocol of an exchange."""
    return PROTOCOLS.get(ex.protocol) or protocol_named(ex.protocol)


def classifier(name: str) -> Classifier:
    """The stats classifier of the protocol called ``name``."""
    return protocol_named(name).classifier


def recognise(data: bytes, from_client: bool) -> tuple[Protocol, str] | None:
    """The protocol whose start ``data`` (first bytes of one direction) shows, and how."""
    for p in RECOGNISERS:
        how = p.recognise(data, from_client)
        if how is not None:
            return p, how
    return None


def by_port(port: int) -> Protocol | None:
    """The protocol a well-known server port means, if any."""
    for p in PROTOCOLS.values():
        if port in p.well_known_ports:
            return p
    return None


__all__ = ["GENERIC", "GRPC", "PROTOCOLS", "REMOTING", "Classifier", "Protocol", "by_port", "classifier",
           "protocol_named", "protocol_of", "recognise"]
