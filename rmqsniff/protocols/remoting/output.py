"""Remoting exchanges shown: JSON sides, follow entries and the detail tree."""
from __future__ import annotations

from typing import Any

from dissectors.remoting import bodies, codes, headers
from dissectors.remoting.message import PayloadError, parse_properties

from ...model import Exchange, Message
from ...text import preview, preview_any, time_text
from ...tree import MAX_CHILDREN, Node, json_node
from ..base import Side, follow_entry


def _ext(cmd: Any, is_response: bool, redact: bool) -> dict[str, str] | None:
    ext = headers.redact_ext(cmd.ext, redact)
    if ext is not None and not is_response:
        ext = headers.long_ext(type(cmd)(cmd.code, cmd.flag, cmd.opaque, ext=ext))
    return ext


def _side(m: Message, is_response: bool, redact: bool) -> dict[str, Any]:
    cmd = m.command
    d: dict[str, Any] = {
        "ts": m.ts,
        "code": cmd.code,
        "name": codes.response_name(cmd.code) if is_response else codes.request_name(cmd.code),
        "opaque": cmd.opaque,
        "flag": cmd.flag,
        "language": cmd.language,
        "version": cmd.version,
        "version_name": codes.version_name(cmd.version),
        "serialize": cmd.serialize_name,
        "remark": cmd.remark,
        "ext": _ext(cmd, is_response, redact),
        "body_len": cmd.body_len,
        "frame_len": m.size,
        "from": "client" if m.from_client else "server",
    }
    if cmd.code_truncated:
        d["wire_code"] = cmd.wire_code
        d["code_truncated"] = True
    return d


def sides(ex: Exchange, redact: bool) -> tuple[Side, Side]:
    return (_side(ex.request, False, redact) if ex.request else None,
            _side(ex.response, True, redact) if ex.response else None)


# -- follow

def _body_summary(ex: Exchange, m: Message) -> str:
    cmd = m.command
    if not cmd.body:
        return ""
    req = ex.request.command if (ex.request is not None and m is ex.response) else None
    view = bodies.decode_body(cmd, req)
    n = len(cmd.body)
    if view.kind in ("messages", "batch"):
        return f"body {n} B: {len(view.value)} message(s)"
    if view.kind in ("message", "text", "binary"):
        return f"body {n} B: {preview(bytes(view.value), 40)}"
    return f"body {n} B: {view.kind}"


def follow(ex: Exchange, m: Message, redact: bool) -> dict[str, Any]:
    cmd = m.command
    is_resp = m is ex.response
    name = codes.response_name(cmd.code) if is_resp else codes.request_name(cmd.code)
    summary = _body_summary(ex, m)
    return follow_entry(ex, m, name, cmd.opaque, cmd.flag, cmd.remark, _ext(cmd, is_resp, redact),
                        [summary] if summary else [])


# -- detail tree

def _props_node(parent: Node, label: str, props: dict[str, str], redact: bool) -> None:
    n = parent.add(f"{label} ({len(props)})")
    for k, v in props.items():
        n.add(f"{k} = {headers.REDACTED if redact and headers.is_secret(k) else preview_any(v)}")


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
    n.add(f"body ({len(body)} B): {preview_any(body)}")


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
                b.add(f"body: {preview_any(m.body)}")
    elif view.kind in ("message", "text", "binary", "error"):
        n.add(preview_any(view.value if view.value is not None else b""))
    elif view.kind != "empty":
        for k, v in (view.value.items() if isinstance(view.value, dict) else enumerate(view.value or ())):
            json_node(n, str(k), v)
    for e in view.errors:
        n.add(f"problem: {e}")


def _detail_side(root: Node, m: Message, ex: Exchange, is_response: bool, redact: bool, ts_text: str) -> None:
    cmd = m.command
    req = ex.request.command if ex.request is not None else None
    name = codes.response_name(cmd.code) if is_response else codes.request_name(cmd.code)
    side = root.add(f"{'Response' if is_response else 'Request'} {name} ({cmd.code})  "
                    f"{ts_text}  {m.size} B  {'client -> server' if m.from_client else 'server -> client'}",
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
            e.add(f"{k} = {preview_any(v)}" + (f"   # {meaning}" if meaning else ""))
    _body(side, cmd, req if is_response else None, redact)


def detail(root: Node, ex: Exchange, redact: bool) -> None:
    for is_resp, m in ((False, ex.request), (True, ex.response)):
        if m is not None:
            _detail_side(root, m, ex, is_resp, redact, time_text(m.ts))
