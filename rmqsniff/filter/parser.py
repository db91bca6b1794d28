"""The filter parser: an expression to a tree of compiled per-exchange tests
(:func:`compile_filter`, :class:`Filter`, :func:`select`).

Grammar (keywords also as ``&&``, ``||``, ``!``)::

    expr    := and ("or" and)*
    and     := unary ("and" unary)*
    unary   := "not" unary | "(" expr ")" | test
    test    := FIELD [("==" | "!=" | "<" | "<=" | ">" | ">=" | "~") value
                      | ["not"] "in" set]
    set     := "{" value ("," value)* "}" | "(" value ("," value)* ")"
    value   := "quoted" | 'quoted' | bare word (SEND_MESSAGE_V2, 10.0.0.1, 5ms, 4KiB)
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ..model import Exchange
from .columns import ColumnarFilter, Columns, _uses_columns
from .fields import FIELDS, Field, Predicate, coerce, getter
from .lexer import FilterError, Token, tokenize
from .regex import compile_search

# How deep parentheses and ``not`` may nest: the parser (and the tree's walkers) recurse
# once per level, so an expression of thousands of "(" must be a filter error, not a
# RecursionError (an HTTP 500 from the proxy's admin endpoint).
MAX_DEPTH = 64


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


class _Parser:
    def __init__(self, expr: str) -> None:
        self.expr = expr
        self.toks = tokenize(expr)
        self.i = 0
        self.depth = 0  # how many "(" and "not" the parser is inside
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
            self.enter(t)
            node = self.unary()
            self.depth -= 1
            inner = node.pred
            return _Node("not", lambda ex: not inner(ex), [node])
        if t.kind == "punct" and t.text == "(":
            self.take()
            self.enter(t)
            group = self.or_()
            if not (self.tok.kind == "punct" and self.tok.text == ")"):
                raise self.err("expected ')'", self.tok)
            self.take()
            self.depth -= 1
            return group
        return self.test()

    def enter(self, t: Token) -> None:
        """One more level of nesting, opened by ``t``: a FilterError past MAX_DEPTH."""
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.err(f"filter nested too deeply (more than {MAX_DEPTH} levels)", t)

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
            lit = coerce(field, vt, self.expr) if nxt.text != "~" else vt.text
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
            values.append(coerce(field, vt, self.expr))
            sep = self.take()
            if sep.kind == "punct" and sep.text == close:
                break
            if not (sep.kind == "punct" and sep.text == ","):
                raise self.err(f"expected ',' or '{close}'", sep)
        return _membership(field, values), values


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
        search = compile_search(tok, p.expr)
        if field.kind == "code":
            get = getter("code_name" if field.name == "code" else "response_code_name")
        if multi:
            return lambda ex: (v := get(ex)) is not None and any(search(str(x)) for x in v)
        return lambda ex: (v := get(ex)) is not None and search(str(v))
    lit = coerce(field, tok, p.expr)
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
