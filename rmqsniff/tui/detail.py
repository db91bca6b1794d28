"""What the detail panes show for one exchange: a decoded tree, the bytes it was carried in
as hex, and the exchange as JSON (for ``y``).  Secrets are redacted unless asked not to.

Every protocol builds its own branches (:meth:`rmqsniff.protocols.base.Protocol.detail`).
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..exporters.exchanges import exchange_to_dict
from ..model import Exchange
from ..protocols import protocol_of, tracing
from ..tree import Node
from .store import result_of

MAX_HEX = 64 * 1024  # bytes shown in the hex pane

__all__ = ["MAX_HEX", "Node", "exchange_json", "exchange_tree", "frame_bytes", "hexdump"]


def exchange_tree(ex: Exchange, redact: bool = True) -> Node:
    """The detail tree of an exchange: a summary line, then request and response."""
    lat = ex.latency_ms
    root = Node(f"#{ex.index} {ex.protocol} {ex.status} ({result_of(ex)})"
                + (f"  {lat:.3f} ms" if lat is not None else ""), expand=True)
    conn = ex.connection
    root.add(f"connection {conn.id}: {conn.label} (roles by {conn.role_source}, {ex.protocol} by {conn.recognised_by})")
    protocol_of(ex).detail(root, ex, redact)
    tracing.detail(root, protocol_of(ex).messages(ex))
    for note in ex.notes:
        root.add(f"note: {note}")
    return root


def frame_bytes(ex: Exchange, side: str, wire: Any = None, redact: bool = True,
                others: Iterable[Exchange] = ()) -> tuple[bytes | None, str]:
    """The captured bytes of the request or response side and a caption: the TCP payload of the
    packets that carried it, read back from the capture (``wire``: a
    :class:`rmqsniff.sources.wire.WireReader`), with secret values overwritten unless
    ``redact`` is False — its own and those of ``others`` (the exchanges of the connection:
    HTTP/2 streams share packets, so one side's packets may carry another's headers)."""
    m = ex.request if side == "request" else ex.response
    if m is None:
        return None, f"no {side}"
    if wire is None or not m.packets:
        return None, f"{side}: the capture's bytes are not at hand (live, or packets not tracked)"
    data = wire.payload(m.packets)
    n = len(m.packets)
    caption = f"{side}: {len(data)} B of TCP payload in {n} packet{'s' if n != 1 else ''} as captured"
    if redact:
        secrets, hidden = protocol_of(ex).secrets(m)
        mine = set(m.packets)
        for o in others:
            if o is not ex and o.connection.id == ex.connection.id:
                for om in (o.request, o.response):
                    if om is not None and om.packets and not mine.isdisjoint(om.packets):
                        secrets = secrets + protocol_of(o).secrets(om)[0]
        masked = data
        for v in secrets:
            masked = masked.replace(v, b"*" * len(v))
        if hidden and masked == data:
            return None, f"{side}: not shown, it carries a secret header in encoded form (--no-redact shows it)"
        if masked != data:
            caption += ", secrets overwritten"
        data = masked
    return data, caption


def hexdump(data: bytes, limit: int = MAX_HEX) -> str:
    """``offset  16 hex bytes  ascii`` lines, at most ``limit`` bytes."""
    lines = []
    shown = data[:limit]
    for off in range(0, len(shown), 16):
        chunk = shown[off:off + 16]
        hx = " ".join(f"{b:02x}" for b in chunk)
        if len(chunk) > 8:
            hx = hx[:23] + " " + hx[23:]
        asc = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{off:08x}  {hx:<49} {asc}")
    if len(data) > limit:
        lines.append(f"… {len(data) - limit} more bytes")
    return "\n".join(lines)


def exchange_json(ex: Exchange, redact: bool = True) -> dict[str, Any]:
    """The exchange as JSON: exactly ``read --format json``'s object."""
    return exchange_to_dict(ex, redact=redact)
