"""``read -T fields -e FIELD``: chosen values of each exchange as separated text, like tshark's.

A field is a filter field (:data:`rmqsniff.filter.fields.FIELDS`: ``code``, ``topic``,
``latency``...), ``time`` (the request's time, in the ``-t`` format) or a dotted path into the
exchange's JSON form (``response.code``, ``request.ext.topic``, ``connection.server``).
A value that is absent prints as nothing; several values (tags of a batch) are joined by the
aggregator; objects and lists print as JSON."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from ..filter.fields import FIELDS, getter
from ..model import Exchange
from ..text import shown
from .exchanges import exchange_to_dict

TIME_FIELD = "time"
# the top-level keys of the JSON form (exchange_to_dict): a path starts with one of them
JSON_ROOTS = ("index", "connection", "protocol", "status", "latency_ms", "request", "response", "result",
              "initiator", "notes", "tls")
_FIRST_ONLY = frozenset({"client", "broker"})  # their further values are spellings for matching (bare ip)
_QUOTES = {"d": '"', "s": "'", "n": ""}


class FieldError(ValueError):
    """A field name or -E option that means nothing; the message names it."""


@dataclass(frozen=True, slots=True)
class FieldOptions:
    """tshark's ``-E``: separator (default tab), header line, quote character, aggregator."""

    separator: str = "\t"
    header: bool = False
    quote: str = ""
    aggregator: str = ","

    @classmethod
    def parse(cls, items: Sequence[str]) -> FieldOptions:
        """``("separator=,", "header=y")`` -> options; ``/t`` and ``/s`` stand for tab and space."""
        kw: dict[str, Any] = {}
        for item in items:
            key, eq, value = item.partition("=")
            value = {"/t": "\t", "/s": " "}.get(value, value)
            if not eq:
                raise FieldError(f"{item!r} is not KEY=VALUE (separator, header, quote, aggregator)")
            if key == "separator" or key == "aggregator":
                if not value:
                    raise FieldError(f"{key} cannot be empty")
                kw[key] = value
            elif key == "header":
                if value not in ("y", "n"):
                    raise FieldError(f"header={value!r}: expected y or n")
                kw["header"] = value == "y"
            elif key == "quote":
                if value not in _QUOTES:
                    raise FieldError(f"quote={value!r}: expected d, s or n")
                kw["quote"] = _QUOTES[value]
            else:
                raise FieldError(f"unknown -E option {key!r} (separator, header, quote, aggregator)")
        return cls(**kw)


def _path_getter(path: str) -> Callable[[dict[str, Any]], Any]:
    parts = path.split(".")

    def get(d: dict[str, Any]) -> Any:
        v: Any = d
        for p in parts:
            if isinstance(v, dict):
                v = v.get(p)
            elif isinstance(v, list) and p.isdigit() and int(p) < len(v):
                v = v[int(p)]
            else:
                return None
        return v
    return get


def _first(get: Callable[[Exchange], Any]) -> Callable[[Exchange], Any]:
    def first(ex: Exchange) -> Any:
        v = get(ex)
        return v[0] if v else None
    return first


class FieldText:
    """The ``-e`` fields of each exchange as one line of text."""

    def __init__(self, names: Sequence[str], options: FieldOptions, time_text: Callable[[float], str],
                 redact: bool = True) -> None:
        if not names:
            raise FieldError("-T fields needs at least one -e FIELD")
        self.names = list(names)
        self.opt = options
        self.redact = redact
        self._cols: list[tuple[str, Callable[[Any], Any]]] = []  # (source, getter)
        for name in names:
            if name == TIME_FIELD:
                self._cols.append(("ts", time_text))
            elif name in FIELDS:
                self._cols.append(("ex", _first(getter(name)) if name in _FIRST_ONLY else getter(name)))
            elif name.split(".", 1)[0] in JSON_ROOTS:
                self._cols.append(("json", _path_getter(name)))
            else:
                raise FieldError(f"unknown field {name!r}: a filter field ({', '.join(FIELDS)}), "
                                 f"time, or a JSON path such as response.code")
        self._json = any(src == "json" for src, _ in self._cols)

    def header(self) -> str | None:
        """The header line (``-E header=y``), else None."""
        return self.opt.separator.join(map(self._quoted, self.names)) if self.opt.header else None

    def line(self, ex: Exchange) -> str:
        d = exchange_to_dict(ex, redact=self.redact) if self._json else None
        cells = []
        for src, get in self._cols:
            if src == "json":
                v = get(d)
                cells.append(self._quoted(self._text(v) if isinstance(v, (str, tuple)) or v is None
                                          else orjson.dumps(v).decode()))  # as the jsonl has it
            else:
                cells.append(self._quoted(self._text(get(ex.ts) if src == "ts" else get(ex))))
        return self.opt.separator.join(cells)

    def _text(self, v: Any) -> str:
        if v is None:
            return ""
        if isinstance(v, str):
            return shown(v)  # wire text: its control characters escaped
        if isinstance(v, tuple):
            return self.opt.aggregator.join(self._text(x) for x in v)
        if isinstance(v, float):
            return f"{v:.3f}"
        if isinstance(v, (dict, list, bool)):
            return orjson.dumps(v).decode()
        return str(v)

    def _quoted(self, s: str) -> str:
        q = self.opt.quote
        return f"{q}{s}{q}" if q else s
