"""What the detail panes show for one exchange: a decoded tree, frame bytes as hex,
and the exchange as JSON (for ``y``).  Secrets are redacted unless asked not to.

Protocol knowledge sits here only: remoting uses the dissectors directly; gRPC uses
``rmqsniff.exporters.grpc_json.grpc_sides`` when it is there (else the command's own
redacted headers and decoded messages).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dissectors.remoting import bodies, codes, headers
from dissectors.remoting.codec import encode
from dissectors.remoting.message import PayloadError, parse_properties

from ..exporters.exchanges import exchange_to_dict
from ..model import Exchange, Message
from .store import _time, request_name, response_name, result_of

MAX_HEX = 64 * 1024  # bytes shown in the hex pane
MAX_CHILDREN = 200  # list items / dict keys shown per tree node


@dataclass
class Node:
    """A line of the detail tree; ``side`` marks the request/response nodes (for ``p``)."""

    label: str
    children: list[Node] = field(default_factory=list)
    side: str | None = None
    expand: bool = False

    def add(self, label: str, **kw: Any) -> Node:
        n = Node(label, **kw)
        self.children.append(n)
        return n

    def walk(self):
        yield self
        for c in self.children:
            yield from c.walk()


def _preview(data: bytes | str, limit: int = 120) -> str:
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            h = data[: limit // 2].hex(" ")
            return f"hex: {h}" + (" …" if len(data) > limit // 2 else "")
    else:
        text = data
    text = text if text.isprintable() else text.encode("unicode_escape").decode("ascii")
    return text if len(text) <= limit else text[:limit] + "…"


def json_node(parent: Node, key: str, value: Any) -> None:
    """``value`` (parsed JSON) under ``parent``: dicts and lists become branches."""
    if isinstance(value, dict):
        n = parent.add(f"{key}: {{{len(value)}}}")
        for i, (k, v) in enumerate(value.items()):
            if i >= MAX_CHILDREN:
                n.add(f"… {len(value) - i} more")
                break
            json_node(n, str(k), v)
    elif isinstance(value, (list, tuple)):
        n = parent.add(f"{key}: [{len(value)}]")
        for i, v in enumerate(value):
            if i >= MAX_CHILDREN:
                n.add(f"… {len(value) - i} more")
                break
            json_node(n, f"[{i}]", v)
    elif isinstance(value, (bytes, bytearray)):
        parent.add(f"{key}: {_preview(bytes(value))}")
    else:
        parent.add(f"{key}: {value!r}" if isinstance(value, str) else f"{key}: {value}")


def _props_node(parent: Node, label: str, props: dict[str, str], redact: bool) -> None:
    n = parent.add(f"{label} ({len(props)})")
    for k, v in props.items():
        n.add(f"{k} = {headers.REDACTED if redact and headers.is_secret(k) else _preview(v)}")


def _stored_message(parent: Node, i: int, m: Any, redact: bool) -> None:
    n = parent.add(f"message {i}: topic={m.topic} queue={m.queue_id} offset={m.queue_offset} "
                   f"msgId={m.msg_id or '-'}")
    for name in ("queue_id", "queue_offset", "physical_offset", "sys_flag", "flag", "born_host", "born_timestamp",
                 "store_host", "store_timestamp", "reconsume_times"):
        n.add(f"{name} = {getattr(m, name)}")
    _props_node(n, "properties", dict(m.properties), redact)
    try:
        body = m.payload()
    except PayloadError as e:
        body = m.body
        n.add(f"(body not decompressed: {e})")
    n.add(f"body ({len(body)} B): {_preview(body)}")


def _body(parent: Node, cmd: Any, request: Any, redact: bool) -> None:
    if not cmd.body:
        return
    view = bodies.decode_body(cmd, request)
    n = parent.add(f"body ({len(cmd.body)} B): {view.kind}")
    if view.kind in ("messages", "batch"):
        for i, m in enumerate(view.value[:MAX_CHILDREN]):
            if view.kind == "messages":
                _stored_message(n, i, m, redact)
            else:
                b = n.add(f"message {i}: {len(m.body)} B")
                _props_node(b, "properties", dict(m.properties), redact)
                b.add(f"body: {_preview(m.body)}")
    elif view.kind in ("message", "text", "binary", "error"):
        n.add(_preview(view.value if view.value is not None else b""))
    elif view.kind != "empty":
        for k, v in (view.value.items() if isinstance(view.value, dict) else enumerate(view.value or ())):
            json_node(n, str(k), v)
    for e in view.errors:
        n.add(f"problem: {e}")


def _remoting_side(root: Node, m: Message, ex: Exchange, is_response: bool, redact: bool) -> None:
    cmd = m.command
    req = ex.request.command if ex.request is not None else None
    name = response_name(ex) if is_response else request_name(ex)
    side = root.add(f"{'Response' if is_response else 'Request'} {name} ({cmd.code})  "
                    f"{_time(m.ts)}  {m.size} B  {'client -> server' if m.from_client else 'server -> client'}",
                    side="response" if is_response else "request", expand=True)
    h = side.add("header", expand=True)
    for label, value in (("code", f"{cmd.code} {name}"), ("flag", cmd.flag), ("opaque", cmd.opaque),
                         ("language", cmd.language),
                         ("version", f"{cmd.version} {codes.version_name(cmd.version) or ''}".rstrip()),
                         ("serialize", cmd.serialize_name), ("remark", cmd.remark)):
        if value is not None:
            h.add(f"{label} = {value}")
    if cmd.code_truncated:
        h.add(f"wire code = {cmd.wire_code} (truncated to 16 bits)")
    described = headers.describe(cmd, req.code if (is_response and req is not None) else None, redact=redact)
    if described:
        e = side.add(f"extFields ({len(described)})", expand=True)
        for k, v, meaning in described:
            if "\x01" in v:
                _props_node(e, k, parse_properties(v), redact)
                continue
            e.add(f"{k} = {_preview(v)}" + (f"   # {meaning}" if meaning else ""))
    _body(side, cmd, req if is_response else None, redact)


def _grpc_sides(ex: Exchange, redact: bool) -> dict[str, Any]:
    try:
        from ..exporters.grpc_json import grpc_sides
    except ImportError:
        out: dict[str, Any] = {}
        for key, m in (("request", ex.request), ("response", ex.response)):
            if m is not None:
                cmd = m.command
                out[key] = {"headers": dict(cmd.redacted_headers(redact)), "messages": cmd.decoded}
        return out
    return grpc_sides(ex, redact)


def exchange_tree(ex: Exchange, redact: bool = True) -> Node:
    """The detail tree of an exchange: a summary line, then request and response."""
    lat = ex.latency_ms
    root = Node(f"#{ex.index} {ex.protocol} {ex.status} ({result_of(ex)})"
                + (f"  {lat:.3f} ms" if lat is not None else ""), expand=True)
    root.add(f"connection {ex.connection.id}: {ex.connection.label} (roles by {ex.connection.role_source})")
    if ex.protocol in ("remoting", "rocketmq"):
        for is_resp, m in ((False, ex.request), (True, ex.response)):
            if m is not None:
                _remoting_side(root, m, ex, is_resp, redact)
    else:
        for key, value in _grpc_sides(ex, redact).items():
            if value is None:
                continue
            side = "response" if key == "response" else "request" if key == "request" else None
            n = root.add(key.capitalize(), side=side, expand=True)
            for k, v in (value.items() if isinstance(value, dict) else enumerate(value)):
                json_node(n, str(k), v)
    for note in ex.notes:
        root.add(f"note: {note}")
    return root


def frame_bytes(ex: Exchange, side: str, redact: bool = True) -> tuple[bytes | None, str]:
    """The bytes of the request or response frame and a caption.  Remoting frames are
    re-encoded from the decoded command (with secrets redacted unless ``redact`` is off)."""
    m = ex.request if side == "request" else ex.response
    if m is None:
        return None, f"no {side}"
    cmd = m.command
    if ex.protocol in ("remoting", "rocketmq"):
        cmd = headers.redacted_command(cmd) if redact and cmd.ext else cmd
        data = encode(cmd)
        note = ", re-encoded" + (", secrets redacted" if redact else "")
        return data, f"{side} frame: {len(data)} B{note}"
    raw = getattr(cmd, "raw", None)
    if isinstance(raw, (bytes, bytearray)) and not redact:
        return bytes(raw), f"{side}: {len(raw)} B"
    return None, f"{side}: no frame bytes for {ex.protocol} (see the tree)"


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
    """The exchange as JSON (remoting: the ``read --format jsonl`` form)."""
    if ex.protocol in ("remoting", "rocketmq"):
        return exchange_to_dict(ex, redact=redact)
    lat = ex.latency_ms
    return {"index": ex.index, "connection": ex.connection.to_dict(), "protocol": ex.protocol,
            "status": ex.status, "latency_ms": None if lat is None else round(lat, 3)} | _grpc_sides(ex, redact)
