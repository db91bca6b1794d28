"""The display-filter language shared by read, stats, export, the TUI, live and replay.

    code == SEND_MESSAGE_V2 and topic ~ "order.*" and latency > 5ms
    status == error or (group in {CG_a, CG_b} and not tag)

A field alone tests that it is present.  A field that does not apply to an
exchange (``topic`` of a heartbeat, ``latency`` of a oneway send) is *missing*:
every comparison on it is false, so ``not`` of it is true.  Multi-valued fields
(``tag``, ``keys``, ``msgid`` of a batch or a pull) match when any value does;
``!=`` is ``not ==`` and ``not in`` is ``not (in)``, both for a present field.
``~`` is a regex search (on the name for codes), with RE2 (linear time; no backreferences
or lookaround: :mod:`.regex`); regexes are compiled and code names resolved when the
filter is compiled.  Durations are in ms unless a unit is given
(ns, us, ms, s, m, h); sizes in bytes unless given (B, kB, KiB, MB, MiB, GB, GiB).

Protocol-specific fields come from each protocol's ``fields`` (:mod:`rmqsniff.protocols`);
``status``, ``latency``, ``size``, ``client``, ``broker``, ``conn`` and ``protocol`` hold
for every protocol.

The modules, in the order a filter goes through them:

* :mod:`.lexer`   - tokens, and :class:`FilterError` (with the position of the problem);
* :mod:`.fields`  - the fields, their getters, literals read as a field's kind;
* :mod:`.regex`   - the ``~`` regexes, compiled with RE2;
* :mod:`.parser`  - the grammar, :func:`compile_filter` and :class:`Filter`;
* :mod:`.columns` - :class:`Columns` and :class:`ColumnarFilter`: a filter over whole
  chunks of a store of many exchanges (the TUI).
"""
from __future__ import annotations

from ..units import parse_duration_ms, parse_size
from .columns import COLUMN_FIELDS, ColumnarFilter, Columns
from .fields import COMMON_FIELDS, FIELDS, Field, Getter, Predicate, describe_fields, getter
from .lexer import FilterError, Token, tokenize
from .parser import Filter, compile_filter, select

__all__ = [
    "COLUMN_FIELDS", "COMMON_FIELDS", "FIELDS", "ColumnarFilter", "Columns", "Field", "Filter", "FilterError",
    "Getter", "Predicate", "Token", "compile_filter", "describe_fields", "getter", "parse_duration_ms",
    "parse_size", "select", "tokenize",
]
