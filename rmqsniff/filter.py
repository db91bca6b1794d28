"""The display-filter language shared by read, stats, export, the TUI, live and replay.

    code == SEND_MESSAGE_V2 and topic ~ "order.*" and latency > 5ms
    status == error or (group in {CG_a, CG_b} and not tag)

Grammar (keywords also as ``&&``, ``||``, ``!``)::

    expr    := and ("or" and)*
    and     := unary ("and" unary)*
    unary   := "not" unary | "(" expr ")" | test
    test    := FIELD [("==" | "!=" | "<" | "<=" | ">" | ">=" | "~") value
                      | ["not"] "in" set]
    set     := "{" value ("," value)* "}" | "(" value ("," value)* ")"
    value   := "quoted" | 'quoted' | bare word (SEND_MESSAGE_V2, 10.0.0.1, 5ms, 4KiB)

A field alone tests that it is present.  A field that does not apply to an
exchange (``topic`` of a heartbeat, ``latency`` of a oneway send) is *missing*:
every comparison on it is false, so ``not`` of it is true.  Multi-valued fields
(``tag``, ``keys``, ``msgid`` of a batch or a pull) match when any value does;
``!=`` is ``not ==`` and ``not in`` is ``not (in)``, both for a present field.  ``~`` is a regex search (on the name for codes); regexes
are compiled and code names resolved when the filter is compiled.  Durations are
in ms unless a unit is given (ns, us, ms, s, m, h); sizes in bytes unless given
(B, kB, KiB, MB, MiB, GB, GiB).

Protocol-specific fields come from each protocol's ``fields`` (:mod:`rmqsniff.protocols`); ``status``, ``latency``, ``size``, ``client``,
``broker``, ``conn`` and ``protocol`` hold for every protocol.
"""
from __future__ import annotations

import operator
import re
import threading
from array import array
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import compress, repeat
from typing import Any

from dissectors.remoting import codes

from .model import Exchange, endpoint_text
from .protocols import PROTOCOLS, protocol_named, protocol_of
from .units import parse_duration_ms, parse_size

Getter = Callable[[Exchange], Any]
Predicate = Callable[[Exchange], bool]


class FilterError(ValueError):
    """A filter expression that cannot be compiled; ``position`` is where the problem is."""

    def __init__(self, message: str, position: int, expression: str = "", length: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.position = position
        self.expression = expression
        self.length = max(1, length)

    def caret(self) -> str:
        """The expression (on one line), and a caret line under the offending token."""
        shown = "".join(c if c.isprintable() else " " for c in self.expression)
        return f"{shown}\n{' ' * self.position}^{'~' * (self.length - 1)}"

    def __str__(self) -> str:
        return f"{self.message} (at column {self.position + 1})"


# ---------------------------------------------------------------- tokens

@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # "op", "word", "str", "punct", "end"
    text: str
    pos: int
    end: int


_OPS = ("==", "!=", "<=", ">=", "&&", "||", "<", ">", "~", "!", "=")
_PUNCT = "(){},"
_WORD = re.compile(r"[A-Za-z0-9_.:\-@%/*+$#\[\]]+")


def tokenize(expr: str) -> list[Token]:
    """Split ``expr`` into tokens; raises FilterError on a stray character or open quote."""
    out: list[Token] = []
    i, n = 0, len(expr)
    while i < n:
        ch = expr[i]
        if ch.isspace():
            i += 1
            continue
        if ch in "\"'":
            j = i + 1
            buf = []
            while j < n and expr[j] != ch:
                if expr[j] == "\\" and j + 1 < n and expr[j + 1] in (ch, "\\"):
                    j += 1
                buf.append(expr[j])
                j += 1
            if j >= n:
                raise FilterError("unterminated string", i, expr, n - i)
            out.append(Token("str", "".join(buf), i, j + 1))
            i = j + 1
            continue
        if ch in _PUNCT:
            out.append(Token("punct", ch, i, i + 1))
            i += 1
            continue
        for op in _OPS:
            if expr.startswith(op, i):
                if op == "=":
                    raise FilterError("use == to compare", i, expr)
                out.append(Token("op", op, i, i + len(op)))
                i += len(op)
                break
        else:
            m = _WORD.match(expr, i)
            if not m:
                raise FilterError(f"unexpected character {ch!r}", i, expr)
            out.append(Token("word", m.group(), i, m.end()))
            i = m.end()
    out.append(Token("end", "", n, n))
    return out


# ---------------------------------------------------------------- literals

_VERSION = re.compile(r"^V(\d)_(\d)_(\d)(_SNAPSHOT)?$", re.I)


def _version_value(text: str) -> int | None:
    if text.upper() == "HIGHER_VERSION":
        return codes.HIGHER_VERSION
    m = _VERSION.match(text)
    if m:
        try:
            return codes.version_ordinal(int(m.group(1)), int(m.group(2)), int(m.group(3)), bool(m.group(4)))
        except ValueError:
            return None
    try:
        return int(text)
    except ValueError:
        return None


# ---------------------------------------------------------------- fields
# kinds: int, code, version, duration (ms), size (bytes), str, enum (case-insensitive)

@dataclass(frozen=True, slots=True)
class Field:
    name: str
    kind: str
    help: str
    multi: bool = False  # the getter returns a tuple of values


FIELDS: dict[str, Field] = {f.name: f for f in (
    Field("code", "code", "request code, number or name (SEND_MESSAGE_V2)"),
    Field("response_code", "code", "response code, number or name (SYSTEM_BUSY)"),
    Field("status", "enum", "answered/unanswered/oneway/orphan, or the answer's class "
                            "success/no_message/error", multi=True),
    Field("topic", "str", "topic named by the request (or response) header"),
    Field("group", "str", "producer or consumer group"),
    Field("tag", "str", "tags of the messages carried", multi=True),
    Field("keys", "str", "keys of the messages carried", multi=True),
    Field("msgid", "str", "message ids carried: unique key (UNIQ_KEY) and offset msg id", multi=True),
    Field("client", "str", "client endpoint ip:port (or just ip)", multi=True),
    Field("broker", "str", "server endpoint ip:port (or just ip), or the broker name in the header",
          multi=True),
    Field("conn", "int", "connection id"),
    Field("latency", "duration", "request to response time (50ms, 1.5s; bare numbers are ms)"),
    Field("size", "size", "request + response frame bytes (4KiB)"),
    Field("language", "enum", "client language of the request (JAVA, GO, ...)"),
    Field("version", "version", "client version of the request (ordinal or V5_3_3)"),
    Field("opaque", "int", "opaque (request id) of the exchange"),
    Field("protocol", "enum", "remoting or grpc"),
)}

_MISSING = None


def _req_cmd(ex: Exchange) -> Any:
    return ex.request.command if ex.request is not None else None


def _any_cmd(ex: Exchange) -> Any:
    m = ex.request or ex.response
    return m.command if m is not None else None


def _proto_getter(name: str) -> Getter:
    last: list[Any] = [None, None]  # protocol name -> getter, for the common single-protocol case

    def get(ex: Exchange) -> Any:
        p = ex.protocol
        if p is last[0]:
            g = last[1]
        else:
            g = protocol_named(p).fields.get(name)
            last[0], last[1] = p, g
        return g(ex) if g is not None else None
    return get


def _protocol_code(text: str) -> tuple[frozenset[str] | None, int] | None:
    """A code literal: a number (any protocol), or a name one protocol knows, as
    (protocols it applies to or None for all, code)."""
    try:
        return None, int(text, 0)
    except ValueError:
        pass
    for p in PROTOCOLS.values():
        n = p.code_literal(text)
        if n is not None:
            return frozenset({p.name}), n
    return None


def _status(ex: Exchange) -> tuple[str, ...]:
    if ex.response is not None:
        cl = protocol_of(ex).classifier  # the stats' success/no_message/error rule
        req = ex.request
        return (ex.status, cl.classify(req.command.code if req is not None else None, ex.response.command.code))
    return (ex.status,)


def _size(ex: Exchange) -> int:
    return (ex.request.size if ex.request is not None else 0) + (ex.response.size if ex.response is not None else 0)


def _broker(ex: Exchange) -> tuple[str, ...]:
    srv = ex.connection.server
    name = _proto_getter("broker_name")(ex)
    return (endpoint_text(srv), srv[0], name) if name else (endpoint_text(srv), srv[0])


COMMON_FIELDS: dict[str, Getter] = {
    "status": _status,
    "latency": lambda ex: ex.latency_ms,
    "size": _size,
    "client": lambda ex: (endpoint_text(ex.connection.client), ex.connection.client[0]),
    "broker": _broker,
    "conn": lambda ex: ex.connection.id,
    "protocol": lambda ex: ex.protocol,
}


def getter(name: str) -> Getter:
    """The value getter of a field (None result = missing)."""
    g = COMMON_FIELDS.get(name)
    return g if g is not None else _proto_getter(name)


# ---------------------------------------------------------------- compiling

class Filter:
    """A compiled filter: call it with an exchange, or (over a :class:`Columns` store of
    many exchanges) ask :meth:`columnar` for a whole-chunk evaluator."""

    __slots__ = ("expression", "fields", "_pred", "_tree")

    def __init__(self, expression: str, pred: Predicate, fields: frozenset[str], tree: Any = None) -> None:
        self.expression = expression
        self._pred = pred
        self.fields = fields
        self._tree = tree

    def __call__(self, ex: Exchange) -> bool:
        return self._pred(ex)

    def columnar(self, columns: Columns) -> ColumnarFilter | None:
        """An evaluator of this filter over chunks of the exchanges ``columns`` describes,
        or None when no part of it can use columns (then call the filter per exchange)."""
        if self._tree is None or columns.broken or not _uses_columns(self._tree):
            return None
        return ColumnarFilter(self, columns)

    def __repr__(self) -> str:
        return f"Filter({self.expression!r})"


def compile_filter(expression: str) -> Filter:
    """Parse and compile ``expression``; raises :class:`FilterError` with a position."""
    p = _Parser(expression)
    tree = p.parse()
    return Filter(expression, tree.pred, frozenset(p.fields), tree)


def select(exchanges: Iterable[Exchange], expression: str | Filter | None) -> Iterable[Exchange]:
    """The exchanges that match (all of them when ``expression`` is None or empty)."""
    if expression is None or expression == "":
        return exchanges
    f = expression if isinstance(expression, Filter) else compile_filter(expression)
    return (ex for ex in exchanges if f(ex))


_KEYWORDS = {"and", "or", "not", "in"}
_CMP_OPS = {"==", "!=", "<", "<=", ">", ">=", "~"}


class _Parser:
    def __init__(self, expr: str) -> None:
        self.expr = expr
        self.toks = tokenize(expr)
        self.i = 0
        self.fields: set[str] = set()

    # helpers
    def err(self, msg: str, tok: Token) -> FilterError:
        return FilterError(msg, tok.pos, self.expr, max(1, tok.end - tok.pos))

    @property
    def tok(self) -> Token:
        return self.toks[self.i]

    def kw(self, *words: str) -> bool:
        t = self.tok
        return t.kind == "word" and t.text.lower() in words

    def take(self) -> Token:
        t = self.toks[self.i]
        self.i += 1
        return t

    # grammar
    def parse(self) -> _Node:
        if self.tok.kind == "end":
            raise self.err("empty filter", self.tok)
        pred = self.or_()
        if self.tok.kind != "end":
            raise self.err(f"unexpected {self.tok.text!r}: expected and, or or the end", self.tok)
        return pred

    def or_(self) -> _Node:
        nodes = [self.and_()]
        while self.kw("or") or (self.tok.kind == "op" and self.tok.text == "||"):
            self.take()
            nodes.append(self.and_())
        if len(nodes) == 1:
            return nodes[0]
        parts = [n.pred for n in nodes]
        if len(parts) == 2:
            a, b = parts
            return _Node("or", lambda ex: a(ex) or b(ex), nodes)
        return _Node("or", lambda ex: any(p(ex) for p in parts), nodes)

    def and_(self) -> _Node:
        nodes = [self.unary()]
        while self.kw("and") or (self.tok.kind == "op" and self.tok.text == "&&"):
            self.take()
            nodes.append(self.unary())
        if len(nodes) == 1:
            return nodes[0]
        parts = [n.pred for n in nodes]
        if len(parts) == 2:
            a, b = parts
            return _Node("and", lambda ex: a(ex) and b(ex), nodes)
        return _Node("and", lambda ex: all(p(ex) for p in parts), nodes)

    def unary(self) -> _Node:
        t = self.tok
        if self.kw("not") or (t.kind == "op" and t.text == "!"):
            self.take()
            node = self.unary()
            inner = node.pred
            return _Node("not", lambda ex: not inner(ex), [node])
        if t.kind == "punct" and t.text == "(":
            self.take()
            inner = self.or_()
            if not (self.tok.kind == "punct" and self.tok.text == ")"):
                raise self.err("expected ')'", self.tok)
            self.take()
            return inner
        return self.test()

    def test(self) -> _Node:
        t = self.take()
        if t.kind != "word" or t.text.lower() in _KEYWORDS:
            what = "the end of the filter" if t.kind == "end" else repr(t.text)
            raise FilterError(f"expected a field name, got {what}", t.pos, self.expr,
                              max(1, t.end - t.pos))
        field = FIELDS.get(t.text.lower())
        if field is None:
            raise self.err(f"unknown field {t.text!r}; fields: {', '.join(FIELDS)}", t)
        self.fields.add(field.name)
        nxt = self.tok
        negate = False
        if self.kw("not") and self.toks[self.i + 1].kind == "word" and self.toks[self.i + 1].text.lower() == "in":
            self.take()
            negate = True
            nxt = self.tok
        if self.kw("in"):
            self.take()
            pred, values = self.in_set(field)
            if not negate:
                return _Node("leaf", pred, field=field.name, op="in", value=frozenset(values))
            get = getter(field.name)  # "not in", like "!=", needs the field present
            return _Node("leaf", lambda ex: get(ex) is not None and not pred(ex), field=field.name,
                         op="not in", value=frozenset(values))
        if nxt.kind == "op" and nxt.text in _CMP_OPS:
            self.take()
            vt = self.take()
            if vt.kind not in ("word", "str"):
                raise self.err("expected a value", vt)
            pred = _compare(field, nxt.text, vt, self)
            lit = _coerce(field, vt, self) if nxt.text != "~" else vt.text
            return _Node("leaf", pred, field=field.name, op=nxt.text, value=lit)
        # a bare field: present
        get = getter(field.name)
        return _Node("leaf", lambda ex: get(ex) is not None, field=field.name, op="present")

    def in_set(self, field: Field) -> tuple[Predicate, list[Any]]:
        open_ = self.take()
        if not (open_.kind == "punct" and open_.text in "{("):
            raise self.err("expected '{' or '(' after in", open_)
        close = "}" if open_.text == "{" else ")"
        values: list[Any] = []
        while True:
            vt = self.take()
            if vt.kind not in ("word", "str"):
                raise self.err("expected a value", vt)
            values.append(_coerce(field, vt, self))
            sep = self.take()
            if sep.kind == "punct" and sep.text == close:
                break
            if not (sep.kind == "punct" and sep.text == ","):
                raise self.err(f"expected ',' or '{close}'", sep)
        return _membership(field, values), values


def _coerce(field: Field, tok: Token, p: _Parser) -> Any:
    """The literal ``tok`` as a value of ``field``'s kind (resolved once, at compile time)."""
    text = tok.text
    kind = field.kind
    if kind == "int":
        try:
            return int(text, 0)
        except ValueError:
            raise p.err(f"{field.name} takes a whole number, not {text!r}", tok) from None
    if kind == "code":
        c = _protocol_code(text)
        if c is None:
            raise p.err(f"unknown code {text!r}", tok)
        return c
    if kind == "version":
        v = _version_value(text)
        if v is None:
            raise p.err(f"not a version: {text!r} (use an ordinal or a name such as V5_3_3)", tok)
        return v
    if kind == "duration":
        v = parse_duration_ms(text)
        if v is None:
            raise p.err(f"not a duration: {text!r} (e.g. 50ms, 1.5s)", tok)
        return v
    if kind == "size":
        v = parse_size(text)
        if v is None:
            raise p.err(f"not a size: {text!r} (e.g. 512, 4KiB, 1MB)", tok)
        return v
    if kind == "enum":
        return text.lower()
    return text


def _norm(field: Field) -> Callable[[Any], Any]:
    if field.kind == "enum":
        return lambda v: v.lower() if isinstance(v, str) else v
    return lambda v: v


def _code_matcher(lits: list[tuple[frozenset[str] | None, int]]) -> Callable[[Exchange, Any], bool]:
    """Does code ``v`` of ``ex`` equal one of the literals (a named code only in its protocol)?"""
    if len(lits) == 1:
        protos, n = lits[0]
        if protos is None:
            return lambda ex, v: v == n
        return lambda ex, v: v == n and ex.protocol in protos
    return lambda ex, v: any(v == n and (ps is None or ex.protocol in ps) for ps, n in lits)


def _compare(field: Field, op: str, tok: Token, p: _Parser) -> Predicate:
    get = getter(field.name)
    multi = field.multi
    if op == "~":
        try:
            rx = re.compile(tok.text)
        except re.error as e:
            raise p.err(f"bad regular expression: {e}", tok) from None
        search = rx.search
        if field.kind == "code":
            get = getter("code_name" if field.name == "code" else "response_code_name")
        if multi:
            return lambda ex: (v := get(ex)) is not None and any(search(str(x)) for x in v)
        return lambda ex: (v := get(ex)) is not None and search(str(v)) is not None
    lit = _coerce(field, tok, p)
    norm = _norm(field)
    if field.kind == "code":
        if op in ("==", "!="):
            m = _code_matcher([lit])
            eq = op == "=="
            return lambda ex: (v := get(ex)) is not None and (m(ex, v) is eq)
        lit = lit[1]  # ordering: the number
    if op in ("==", "!="):
        eq = op == "=="
        if multi:
            if field.kind == "enum":
                return lambda ex: (v := get(ex)) is not None and ((lit in [x.lower() for x in v]) is eq)
            return lambda ex: (v := get(ex)) is not None and ((lit in v) is eq)
        if field.kind == "enum":
            return lambda ex: (v := get(ex)) is not None and ((norm(v) == lit) is eq)
        return lambda ex: (v := get(ex)) is not None and ((v == lit) is eq)
    # ordering
    if field.kind == "enum":
        raise p.err(f"{field.name} cannot be ordered with {op}; use ==, != , ~ or in", tok)
    cmp = {"<": lambda a: a < lit, "<=": lambda a: a <= lit, ">": lambda a: a > lit,
           ">=": lambda a: a >= lit}[op]
    if multi:
        return lambda ex: (v := get(ex)) is not None and any(cmp(x) for x in v)
    if field.kind == "code":
        return lambda ex: type(v := get(ex)) is int and cmp(v)
    return lambda ex: (v := get(ex)) is not None and cmp(v)


def _membership(field: Field, values: list[Any]) -> Predicate:
    get = getter(field.name)
    s = frozenset(values)
    if field.multi:
        if field.kind == "enum":
            return lambda ex: (v := get(ex)) is not None and any(x.lower() in s for x in v)
        return lambda ex: (v := get(ex)) is not None and any(x in s for x in v)
    if field.kind == "code":
        m = _code_matcher(values)
        return lambda ex: (v := get(ex)) is not None and m(ex, v)
    norm = _norm(field)
    if field.kind == "enum":
        return lambda ex: (v := get(ex)) is not None and norm(v) in s
    return lambda ex: (v := get(ex)) is not None and v in s


def describe_fields() -> str:
    """One line per field, for ``--help`` texts."""
    return "\n".join(f"  {f.name:<14} {f.help}" for f in FIELDS.values())


# ---------------------------------------------------------------- columnar evaluation
# For a store of many exchanges (the TUI), the values of the common fields are taken out
# once into columns; a filter then evaluates chunk by chunk, as 0/1 byte masks combined
# with big-int bit operations, at C speed for the parts that have columns.
#
# * categorical columns (code, response_code, status, topic, group, protocol) hold, per
#   exchange, a small id of its key: the field's value (with the protocol for codes).
#   A test on such a field depends on the exchange only through that key, so it is
#   evaluated once per distinct key, on the first exchange that had it (the very same
#   compiled per-exchange test), into a translation table from id to 0/1.
# * numeric columns (latency, size, conn) hold the values (NaN for a missing latency),
#   compared with the literal through ``map`` over the array.
# Every other test (tag, keys, msgid, ``~`` on a number, ...) is evaluated per exchange,
# and only on the exchanges the rest of its ``and`` / ``or`` left undecided.

class _Node:
    """A parsed filter: ``kind`` is and/or/not/leaf, ``pred`` its per-exchange test."""

    __slots__ = ("kind", "pred", "children", "field", "op", "value")

    def __init__(self, kind: str, pred: Predicate, children: list[_Node] | None = None, *,
                 field: str = "", op: str = "", value: Any = None) -> None:
        self.kind = kind
        self.pred = pred
        self.children = children or []
        self.field = field
        self.op = op
        self.value = value


# field -> the key its tests depend on (besides the getter's value)
_CATEGORICAL = ("code", "response_code", "status", "topic", "group", "protocol")
_CODE_KEYED = frozenset({"code", "response_code"})  # code tests also look at the protocol
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
        self.ids: bytearray | array = bytearray()  # per exchange: id of its key
        self.reps: list[Exchange] = []  # per id: the first exchange with that key
        self.index: dict[Any, int] = {}  # key -> id

    def extend(self, keys: list[Any], exs: list[Exchange]) -> None:
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
        self.numeric = {"latency": array("d"), "size": array("q"), "conn": array("q")}
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

    def _extend(self, exs: list[Exchange]) -> None:
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
                for f, col in _COLUMN_OF.items():
                    if col == name:
                        self.usable[f] = False
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

    def _eval(self, node: _Node, chunk: list[Exchange], lo: int, n: int, care: bytes | None) -> bytes:
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
    def _per_exchange(pred: Predicate, chunk: list[Exchange], n: int, care: bytes | None) -> bytes:
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
                return ids[lo:hi].translate(bytes(table[:256]).ljust(256, b"\0"))
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
