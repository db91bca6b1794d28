"""The detail tree of an exchange: labelled nodes that the TUI shows and tests walk.

Protocols build it (:meth:`rmqsniff.protocols.base.Protocol.detail`); it holds text only.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .text import preview_any, shown

MAX_CHILDREN = 200  # list items / dict keys shown per tree node


@dataclass
class Node:
    """A line of the detail tree; ``side`` marks the request/response nodes (for ``p``).
    The label is for a person: control characters in it (from the wire) are kept escaped."""

    label: str
    children: list[Node] = field(default_factory=list)
    side: str | None = None
    expand: bool = False

    def __post_init__(self) -> None:
        self.label = shown(self.label)

    def add(self, label: str, **kw: Any) -> Node:
        n = Node(label, **kw)
        self.children.append(n)
        return n

    def walk(self) -> Iterator[Node]:
        yield self
        for c in self.children:
            yield from c.walk()


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
        parent.add(f"{key}: {preview_any(bytes(value))}")
    else:
        parent.add(f"{key}: {value!r}" if isinstance(value, str) else f"{key}: {value}")
