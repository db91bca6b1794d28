"""The column engine: :class:`Columns` of the common fields over a store of many exchanges
(the TUI's) and :class:`ColumnarFilter`, a compiled :class:`~.parser.Filter` over them.

For a store of many exchanges, the values of the common fields are taken out
once into columns; a filter then evaluates chunk by chunk, as 0/1 byte masks combined
with big-int bit operations, at C speed for the parts that have columns.

* categorical columns (code, response_code, status, topic, group, protocol) hold, per
  exchange, a small id of its key: the field's value (with the protocol for codes).
  A test on such a field depends on the exchange only through that key, so it is
  evaluated once per distinct key, on the first exchange that had it (the very same
  compiled per-exchange test), into a translation table from id to 0/1.
* numeric columns (latency, size, conn) hold the values (NaN for a missing latency),
  compared with the literal through ``map`` over the array.
Every other test (tag, keys, msgid, ``~`` on a number, ...) is evaluated per exchange,
and only on the exchanges the rest of its ``and`` / ``or`` left undecided.
"""
from __future__ import annotations

import operator
import threading
from array import array
from collections.abc import Sequence
from itertools import compress, repeat
from typing import TYPE_CHECKING, Any

from ..model import Exchange
from ..protocols import protocol_named
from .fields import Predicate

if TYPE_CHECKING:
    from .parser import Filter, _Node


# field -> the key its tests depend on (besides the getter's value)
_CATEGORICAL = ("code", "response_code", "status", "topic", "group", "protocol")
_NUMERIC = ("latency", "size", "conn")
_NUMERIC_NULLABLE = frozenset({"latency"})
_NUMERIC_OPS = frozenset({"==", "!=", "<", "<=", ">", ">=", "in", "not in", "present"})
COLUMN_FIELDS = _CATEGORICAL + _NUMERIC
_NAN = float("nan")
_NOT = bytes([1, 0]) + bytes(254)


def _columnar_leaf(n: _Node) -> bool:
    if n.field in _CATEGORICAL:
        return True
    return n.field in _NUMERIC and n.op in _NUMERIC_OPS


def _uses_columns(n: _Node) -> bool:
    if n.kind == "leaf":
        return _columnar_leaf(n)
    return any(_uses_columns(c) for c in n.children)


def _needs_fallback(n: _Node) -> bool:
    if n.kind == "leaf":
        return not _columnar_leaf(n)
    return any(_needs_fallback(c) for c in n.children)


class _Categorical:
    __slots__ = ("ids", "reps", "index")

    def __init__(self) -> None:
        self.ids: bytearray | array[int] = bytearray()  # per exchange: id of its key
        self.reps: list[Exchange] = []  # per id: the first exchange with that key
        self.index: dict[Any, int] = {}  # key -> id

    def extend(self, keys: list[Any], exs: Sequence[Exchange]) -> None:
        index, reps = self.index, self.reps
        new = set(keys).difference(index)
        for k in sorted(new, key=keys.index):  # (ids in order of first appearance)
            index[k] = len(reps)
            reps.append(exs[keys.index(k)])
        if len(reps) > 256 and isinstance(self.ids, bytearray):
            self.ids = array("I", list(self.ids))  # (not the bytes: they would be read as raw data)
        self.ids.extend(map(index.__getitem__, keys))


# the categorical column a field's tests read: code, response_code, status and protocol
# all depend only on the exchange's "shape" (protocol, status, request code, response code)
_COLUMN_OF = {"code": "shape", "response_code": "shape", "status": "shape", "protocol": "shape",
              "topic": "topic", "group": "group"}


class Columns:
    """Columns of the common filter fields over a growing list of exchanges (append-only:
    an exchange must not change once it is in).  :meth:`extend_to` fills them, all at
    once; it is safe to call from several threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.categorical = {"shape": _Categorical(), "topic": _Categorical(), "group": _Categorical()}
        self.numeric: dict[str, array[Any]] = {"latency": array("d"), "size": array("q"), "conn": array("q")}
        self.usable: dict[str, bool] = {}  # field -> False when its tests must run per exchange
        self.broken = False  # True when the columns could not be filled: no columnar filters

    def __len__(self) -> int:
        return len(self.numeric["conn"])

    def column(self, field: str) -> _Categorical:
        return self.categorical[_COLUMN_OF[field]]

    def extend_to(self, exchanges: Sequence[Exchange], n: int) -> None:
        """Make the columns cover ``exchanges[:n]``."""
        with self._lock:
            have = len(self)
            if have < n and not self.broken:
                try:
                    self._extend(exchanges[have:n])
                except Exception:  # an exchange the columns cannot read: filter per exchange
                    self.broken = True

    def _extend(self, exs: Sequence[Exchange]) -> None:
        shapes: list[Any] = []
        topics: list[Any] = []
        groups: list[Any] = []
        lat = self.numeric["latency"]
        size = self.numeric["size"]
        conn = self.numeric["conn"]
        nan = _NAN
        last: list[Any] = [None, None, None]  # protocol name, its topic and group getters
        for ex in exs:
            p = ex.protocol
            rq = ex.request
            rs = ex.response
            rc = rq.command if rq is not None else None
            sc = rs.command if rs is not None else None
            shapes.append((p, ex.status, rc.code if rc is not None else None, sc.code if sc is not None else None))
            if rq is not None and rs is not None:  # as Exchange.latency_ms and _size
                lat.append((rs.ts - rq.ts) * 1000.0)
                size.append(rq.size + rs.size)
            else:
                lat.append(nan)
                size.append(rq.size if rq is not None else (rs.size if rs is not None else 0))
            if p is not last[0]:
                f = protocol_named(p).fields
                last = [p, f.get("topic") or _absent, f.get("group") or _absent]
            topics.append(last[1](ex))
            groups.append(last[2](ex))
        conn.extend([ex.connection.id for ex in exs])
        for name, keys in (("shape", shapes), ("topic", topics), ("group", groups)):
            try:
                self.categorical[name].extend(keys, exs)
            except TypeError:  # an unhashable value: its tests stay per exchange
                for field, col in _COLUMN_OF.items():
                    if col == name:
                        self.usable[field] = False
                self.categorical[name] = _Categorical()


def _absent(_ex: Exchange) -> None:
    return None


def _and(a: bytes, b: bytes, n: int) -> bytes:
    return (int.from_bytes(a, "little") & int.from_bytes(b, "little")).to_bytes(n, "little")


def _or(a: bytes, b: bytes, n: int) -> bytes:
    return (int.from_bytes(a, "little") | int.from_bytes(b, "little")).to_bytes(n, "little")


class ColumnarFilter:
    """A :class:`Filter` over chunks of a :class:`Columns` store: ``mask(exchanges, lo, hi)``
    is one byte per exchange of ``[lo, hi)``, 1 where the filter matches."""

    def __init__(self, flt: Filter, columns: Columns) -> None:
        self.filter = flt
        self.columns = columns
        self._tables: dict[int, bytearray] = {}  # id(leaf) -> id -> 0/1

    def mask(self, exchanges: Sequence[Exchange], lo: int, hi: int) -> bytes:
        """The 0/1 mask of ``exchanges[lo:hi]`` (the columns are extended as needed).  If a
        per-exchange test raises, the chunk is redone by the plain filter (which then
        raises or not exactly as it would have on its own)."""
        self.columns.extend_to(exchanges, hi)
        chunk = exchanges[lo:hi]
        n = len(chunk)
        try:
            if self.columns.broken:
                raise LookupError("no columns")
            return self._eval(self.filter._tree, chunk, lo, n, None)
        except Exception:
            return bytes(map(bool, map(self.filter._pred, chunk)))

    def _eval(self, node: _Node, chunk: Sequence[Exchange], lo: int, n: int, care: bytes | None) -> bytes:
        kind = node.kind
        if kind == "leaf":
            if _columnar_leaf(node) and self.columns.usable.get(node.field, True):
                return self._leaf(node, lo, n)
            return self._per_exchange(node.pred, chunk, n, care)
        if kind == "not":
            return self._eval(node.children[0], chunk, lo, n, care).translate(_NOT)
        # columns first (cheap, and they narrow what the per-exchange tests must look at)
        kids = sorted(node.children, key=_needs_fallback)
        is_and = kind == "and"
        acc: bytes | None = None
        for c in kids:
            if acc is not None and _needs_fallback(c):
                # only where this node is still undecided (and where the caller cares)
                sub = acc if is_and else acc.translate(_NOT)
                if care is not None:
                    sub = _and(sub, care, n)
                m = self._eval(c, chunk, lo, n, sub)
            else:
                m = self._eval(c, chunk, lo, n, care)
            acc = m if acc is None else (_and(acc, m, n) if is_and else _or(acc, m, n))
        return acc  # type: ignore[return-value]

    @staticmethod
    def _per_exchange(pred: Predicate, chunk: Sequence[Exchange], n: int, care: bytes | None) -> bytes:
        if care is None:
            return bytes(map(bool, map(pred, chunk)))
        # correct where care is 1; 0 elsewhere (the caller ignores those positions)
        out = bytearray(n)
        for i in compress(range(n), care):
            if pred(chunk[i]):
                out[i] = 1
        return bytes(out)

    def _leaf(self, node: _Node, lo: int, n: int) -> bytes:
        name = node.field
        hi = lo + n
        if name in _CATEGORICAL:
            cat = self.columns.column(name)
            reps = cat.reps
            table = self._tables.get(id(node))
            if table is None:
                table = self._tables[id(node)] = bytearray()
            if len(table) < len(reps):
                pred = node.pred
                table.extend(1 if pred(r) else 0 for r in reps[len(table):])
            ids = cat.ids
            if isinstance(ids, bytearray):
                # (a bytearray, used as the bytes it holds)
                return ids[lo:hi].translate(bytes(table[:256]).ljust(256, b"\0"))  # type: ignore[return-value]
            return bytes(map(table.__getitem__, ids[lo:hi]))
        col = self.columns.numeric[name][lo:hi]
        op, lit = node.op, node.value
        nullable = name in _NUMERIC_NULLABLE
        if op == "present":
            return bytes(map(operator.eq, col, col)) if nullable else b"\x01" * n
        if op == "in":
            return bytes(map(lit.__contains__, col))
        if op == "not in":
            m = bytes(map(lit.__contains__, col)).translate(_NOT)
            return _and(m, bytes(map(operator.eq, col, col)), n) if nullable else m
        if op == "!=":
            m = bytes(map(operator.ne, col, repeat(lit, n)))
            return _and(m, bytes(map(operator.eq, col, col)), n) if nullable else m
        return bytes(map(_NUMERIC_CMP[op], col, repeat(lit, n)))  # NaN compares false


_NUMERIC_CMP = {"==": operator.eq, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
