"""Replayed response vs recorded response: response code, remark class, header fields.

Noise (ignored by default): header fields that differ on every run by nature - message
ids, offsets, timestamps, queue ids, handles. ``ignore`` adds keys, ``keep`` compares
keys the default rules would ignore, ``noise=False`` drops the default rules.
Secret header values (AccessKey, Signature, SecurityToken …) are shown ``<redacted>`` on
both sides unless ``redact=False`` (a differing secret still counts as a mismatch).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from dissectors.remoting.codes import response_name
from dissectors.remoting.command import RemotingCommand
from dissectors.remoting.headers import REDACTED, is_secret

DEFAULT_NOISE = re.compile(r"(msgid|offset|time|queue|qid|handle|transactionid|region|"
                           r"^id$|^bname$|brokername|brokerid|trace_on)", re.I)
_HEX = re.compile(r"\b[0-9A-Fa-f]{16,}\b")
_ADDR = re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b|\[[0-9a-fA-F:]+\](?::\d+)?")
_NUM = re.compile(r"\d+")
_URL = re.compile(r"https?://\S+")

NO_ANSWER = "no answer"


@dataclass(slots=True)
class DiffRules:
    noise: bool = True
    ignore: frozenset[str] = frozenset()
    keep: frozenset[str] = frozenset()
    names: dict[str, str] = field(default_factory=dict)  # captured name -> replayed name (map-topic/group)
    redact: bool = True  # secret values shown as <redacted> on both sides
    _memo: dict[str, bool] = field(default_factory=dict, repr=False, compare=False)
    _remarks: dict[tuple[str | None, bool], str] = field(default_factory=dict, repr=False, compare=False)
    _keys: dict[tuple, list[str]] = field(default_factory=dict, repr=False, compare=False)

    def compared_keys(self, rext: dict[str, str], pext: dict[str, str]) -> list[str]:
        """The header keys of either side that are not noise, sorted; remembered per key set."""
        ck = (tuple(rext), tuple(pext))
        got = self._keys.get(ck)
        if got is None:
            got = sorted(k for k in set(rext) | set(pext) if not self.is_noise(k))
            if len(self._keys) < 4096:
                self._keys[ck] = got
        return got

    def remark(self, remark: str | None, recorded: bool) -> str:
        """:func:`remark_class` of a recorded (names mapped) or replayed remark, remembered."""
        key = (remark, recorded)
        got = self._remarks.get(key)
        if got is None:
            got = remark_class(remark, self.names if recorded else None)
            if len(self._remarks) < 4096:  # remarks with ids are numerous: only the first are kept
                self._remarks[key] = got
        return got

    def is_noise(self, key: str) -> bool:
        got = self._memo.get(key)
        if got is None:
            got = key not in self.keep and (key in self.ignore or (self.noise and bool(DEFAULT_NOISE.search(key))))
            if len(self._memo) < 4096:  # header keys are few; a flood of odd ones is not remembered
                self._memo[key] = got
        return got


def remark_class(remark: str | None, names: dict[str, str] | None = None) -> str:
    """A remark without what varies between runs: ids, addresses, numbers, URLs."""
    if not remark:
        return ""
    text = remark.strip().splitlines()[0] if remark.strip() else ""
    for a, b in (names or {}).items():
        if a:
            text = re.sub(rf"(?<![\w%-]){re.escape(a)}(?![\w-])", b.replace("\\", "\\\\"), text)
    text = _URL.sub("<url>", text)
    text = _ADDR.sub("<addr>", text)
    text = _HEX.sub("<id>", text)
    return _NUM.sub("#", text)[:200]


def compare(recorded: RemotingCommand | None, replayed: RemotingCommand | None,
            rules: DiffRules) -> list[tuple[str, str, str]]:
    """Mismatches as ``(kind, recorded, replayed)``; empty when equal under the rules.

    A request the capture shows unanswered (end of capture, oneway) is not compared.
    """
    if recorded is None:
        return []
    if replayed is None:
        return [(NO_ANSWER, response_name(recorded.code), "-")]
    if recorded.code != replayed.code:
        return [("code", response_name(recorded.code), response_name(replayed.code))]
    out: list[tuple[str, str, str]] = []
    rc, pc = rules.remark(recorded.remark, True), rules.remark(replayed.remark, False)
    if rc != pc:
        out.append(("remark", rc or "-", pc or "-"))
    rext, pext = recorded.ext or {}, replayed.ext or {}
    for k in rules.compared_keys(rext, pext):
        a, b = rext.get(k), pext.get(k)
        if a is not None and b is not None and rules.names.get(a) == b:
            continue
        if a != b:
            hide = rules.redact and is_secret(k)
            out.append((f"header {k}", "-" if a is None else REDACTED if hide else a[:80],
                        "-" if b is None else REDACTED if hide else b[:80]))
    return out
