"""A journey as lines of text (``trace``'s table, the TUI's journey view): a heading, then a
line per hop, each with the style it is shown in."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from .engine import Journey, journey_to_dict

KIND_STYLE = {"sent": "green", "stored": "green", "delivered": "cyan", "acked": "bold green",
              "dead_lettered": "bold red", "retried": "yellow", "rolled_back": "red", "invisible_changed": "yellow"}
_SKIP = ("kind", "ts", "exchange", "connection", "protocol", "capture")


def _time(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%H:%M:%S.%f")[:-3]


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}ms"


def journey_lines(j: Journey, multi: bool = False) -> list[tuple[str, str]]:
    """(line, style) pairs: the heading (key, topic, tags, keys, finished or UNFINISHED,
    latencies, trace id), then a line per hop in time order."""
    d: dict[str, Any] = journey_to_dict(j, multi)
    lat = d["latency_ms"]
    state = "finished" if d["finished"] else "UNFINISHED" + (" (flushed: cap)" if j.flushed else "")
    head = (f"{d['unique_key'] or '(no unique key)'}  topic={d['topic']}  tags={d['tags']}  "
            f"keys={','.join(d['keys'])}  {state}  store={_ms(lat['store'])} "
            f"first_delivery={_ms(lat['first_delivery'])} ack={_ms(lat['ack'])}")
    if d["trace"]:
        head += f"  trace={d['trace'].get('trace_id')}"
    out = [(head, "bold" if d["finished"] else "bold yellow")]
    for e in d["events"]:
        what = " ".join(f"{k}={v}" for k, v in e.items() if k not in _SKIP and v is not None)
        where = f"{e['capture']}#{e['exchange']}" if multi else f"#{e['exchange']}"
        line = f"  {_time(e['ts'])}  {e['kind']:<17} {e['protocol']:<8} {where:<8} {e['connection']:<44} {what}"
        out.append((line, KIND_STYLE.get(e["kind"], "")))
    return out
