"""The ``:`` command line and the key bindings: one table each, shown by ``?``; and
completion for both input lines."""
from __future__ import annotations

from textual.suggester import Suggester

from ..filter import FIELDS

# name, argument, help
COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("stats", "", "the Envoy stat set, grouped tables and charts"),
    ("codes", "", "stats per request code"),
    ("topics", "", "stats per topic"),
    ("groups", "", "stats per producer/consumer group"),
    ("clients", "", "stats per client IP"),
    ("brokers", "", "stats per broker / name server"),
    ("conns", "", "connections"),
    ("latency", "", "latency histogram of the listed exchanges"),
    ("rate", "", "requests over time of the listed exchanges"),
    ("follow", "", "follow the connection of the selected exchange"),
    ("export", "FILE", "write the listed exchanges (.jsonl, .csv or .pcapng)"),
    ("filter", "EXPR", "filter the list (same as /)"),
    ("clear", "", "clear the filter and the sort"),
    ("sort", "N", "sort by column N (1-9, 0); again to reverse"),
    ("help", "", "every key and command"),
    ("quit", "", "leave"),
)
NAMES = tuple(c[0] for c in COMMANDS)
# which stats tab a command opens
STATS_TABS = {"stats": "envoy", "codes": "code", "topics": "topic", "groups": "group", "clients": "client",
              "brokers": "broker", "conns": "conns", "latency": "latency", "rate": "rate"}

# key, what it does (the App's bindings follow this table)
KEYS: tuple[tuple[str, str], ...] = (
    ("/", "filter the list (filter language; red while invalid, enter applies, empty clears)"),
    (":", "command line (tab or → completes)"),
    ("tab / shift+tab", "next / previous pane"),
    ("j k ↓ ↑", "down / up"),
    ("g G home end", "first / last row"),
    ("pgdn pgup space ctrl+f ctrl+b", "page down / up"),
    ("enter", "open the exchange (detail tree); in the stats view: filter the list to the row"),
    ("p", "jump request ↔ response (tree and hex)"),
    ("f", "follow the connection of the selected exchange"),
    ("t", "journey of the message the selected exchange carries"),
    ("1-9 0", "sort by that column; r reverses"),
    ("r", "reverse the sort"),
    ("y", "copy the exchange as JSON (secrets redacted)"),
    ("s", "stats view (its lag tab: o cycles the sort: lag, in flight, group, topic)"),
    ("escape", "close a view or the input line; in the list: clear the filter"),
    ("?", "this help"),
    ("q", "quit"),
)


class CommandError(ValueError):
    """A command line that cannot be run; the message says why."""


def parse(line: str) -> tuple[str, str]:
    """``"export out.jsonl"`` -> ``("export", "out.jsonl")``; unique prefixes are accepted."""
    text = line.strip().lstrip(":").strip()
    if not text:
        raise CommandError("empty command; try :help")
    name, _, arg = text.partition(" ")
    name = name.lower()
    if name in ("q", "q!", "wq"):
        name = "quit"
    elif name == "w":
        name = "export"
    if name not in NAMES:
        matches = [n for n in NAMES if n.startswith(name)]
        if len(matches) != 1:
            hint = f" (did you mean {', '.join(matches)}?)" if matches else f"; commands: {', '.join(NAMES)}"
            raise CommandError(f"unknown command {name!r}{hint}")
        name = matches[0]
    arg = arg.strip()
    need = dict((c[0], c[1]) for c in COMMANDS)[name]
    if need in ("FILE", "EXPR") and not arg:
        raise CommandError(f":{name} needs {need}")
    return name, arg


def _complete_word(value: str, words: tuple[str, ...]) -> str | None:
    """``value`` with its last word completed from ``words`` (None: nothing to add)."""
    head, sep, last = value.rpartition(" ")
    start = len(head) + len(sep)
    last = value[start:]
    if not last:
        return None
    low = last.lower()
    for w in words:
        if w.startswith(low) and w != low:
            return value[:start] + w
    return None


class CommandSuggester(Suggester):
    """Completes command names, and filter field names after ``filter``."""

    def __init__(self) -> None:
        super().__init__(use_cache=False, case_sensitive=True)

    async def get_suggestion(self, value: str) -> str | None:
        if " " not in value.strip():
            return _complete_word(value, NAMES)
        if value.lstrip().lower().startswith("filter "):
            return _complete_word(value, tuple(FIELDS))
        return None


class FilterSuggester(Suggester):
    """Completes the field name being typed."""

    def __init__(self) -> None:
        super().__init__(use_cache=False, case_sensitive=True)

    async def get_suggestion(self, value: str) -> str | None:
        return _complete_word(value, tuple(FIELDS) + ("and", "or", "not", "in"))
