"""The TUI's data side, free of any widget: the exchange store, its loader thread,
table columns, filtering and sorting into index arrays.

The store keeps the :class:`Exchange` objects the pipeline yields, in order, and
beside them only the filter columns (:class:`rmqsniff.filter.Columns`: code, status,
topic, group, latency, ... as small ids and numbers) the loader fills so that a filter
over millions of exchanges runs at column speed: a view is an ``array('l')`` of
positions into ``Store.exchanges`` (or a ``range`` when nothing is filtered or sorted).
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import gc
import os
import threading
import time
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import compress
from typing import Any

from ..exporters.exchanges import result_of
from ..filter import Columns, Filter, getter
from ..flows import PortSpec
from ..model import Exchange, _ep
from ..pipeline import Pipeline
from ..protocols import protocol_of
from ..stats import Stats
from ..text import shown

View = Sequence[int]  # positions into Store.exchanges

_topic = getter("topic")
_group = getter("group")


# ---------------------------------------------------------------- columns

def request_name(ex: Exchange) -> str:
    if ex.request is None:
        return "-"
    return protocol_of(ex).classifier.request_name(ex.request.command.code)


def response_name(ex: Exchange) -> str:
    if ex.response is None:
        return "-"
    return protocol_of(ex).classifier.response_name(ex.response.command.code)


def where(ex: Exchange) -> str:
    """``topic/group`` (either may be missing)."""
    return "/".join(x for x in (_topic(ex), _group(ex)) if x)


def _sizes(ex: Exchange) -> tuple[int, int]:
    return (ex.request.size if ex.request else 0, ex.response.size if ex.response else 0)


def _conn(ex: Exchange) -> str:
    c = ex.connection
    arrow = "←" if ex.server_initiated else "→"
    return f"{c.id} {_ep(c.client)} {arrow} {_ep(c.server)}"


def _time(ts: float) -> str:
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).strftime("%H:%M:%S.%f")[:-3]


@dataclass(frozen=True, slots=True)
class Column:
    title: str
    width: int
    text: Callable[[Exchange], str]
    key: Callable[[Exchange], Any]  # sort key (never None)
    right: bool = False


def _lat_text(ex: Exchange) -> str:
    lat = ex.latency_ms
    return "-" if lat is None else f"{lat:.3f}"


def _lat_key(ex: Exchange) -> float:
    lat = ex.latency_ms
    return -1.0 if lat is None else lat


# number keys 1..9, 0 sort by these, in this order
COLUMNS: tuple[Column, ...] = (
    Column("#", 7, lambda ex: str(ex.index), lambda ex: ex.index, right=True),
    Column("time", 12, lambda ex: _time(ex.ts), lambda ex: ex.ts),
    Column("connection", 36, _conn, lambda ex: ex.connection.id),
    Column("proto", 10, lambda ex: ex.protocol + (" 🔒" if ex.connection.tls else ""), lambda ex: ex.protocol),
    Column("request", 24, request_name, request_name),
    Column("topic/group", 28, where, where),
    Column("status", 10, lambda ex: ex.status, result_of),
    Column("response", 16, response_name, response_name),
    Column("ms", 9, _lat_text, _lat_key, right=True),
    Column("bytes req/resp", 14, lambda ex: "{}/{}".format(*_sizes(ex)), lambda ex: sum(_sizes(ex)), right=True),
)

ROW_STYLE = {"success": "green", "no_message": "green", "error": "bold red", "unanswered": "yellow",
             "oneway": "cyan", "orphan": "magenta"}


def row_cells(ex: Exchange) -> list[str]:
    """The list's cells for ``ex``, wire text with its control characters escaped."""
    return [shown(c.text(ex)) for c in COLUMNS]


# ---------------------------------------------------------------- filtering and sorting

class ExchangeList(list):
    """The store's list of exchanges, with the filter columns over it (``columns``)."""

    __slots__ = ("columns",)

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.columns = Columns()


def filter_into(exchanges: Sequence[Exchange], pred: Callable[[Exchange], bool], start: int, end: int,
                out: array, cancelled: Callable[[], bool] = lambda: False, chunk: int = 65536,
                progress: Callable[[int], None] = lambda _done: None) -> bool:
    """Append to ``out`` the positions in ``[start, end)`` whose exchange matches, a chunk
    at a time (``progress(done)`` after each); False if ``cancelled`` stopped it.  A
    :class:`Filter` over an :class:`ExchangeList` evaluates on its columns."""
    columns = getattr(exchanges, "columns", None)
    fast = pred.columnar(columns) if isinstance(pred, Filter) and columns is not None else None
    for lo in range(start, end, chunk):
        if cancelled():
            return False
        hi = min(end, lo + chunk)
        if fast is not None:
            out.extend(compress(range(lo, hi), fast.mask(exchanges, lo, hi)))
        else:
            out.extend(compress(range(lo, hi), map(pred, exchanges[lo:hi])))
        progress(hi)
    return True


def sort_view(exchanges: Sequence[Exchange], view: View, column: int, reverse: bool = False) -> array:
    """``view`` ordered by ``COLUMNS[column]`` (stable: ties keep capture order)."""
    key = COLUMNS[column].key
    keys = [key(exchanges[i]) for i in view]
    order = sorted(range(len(keys)), key=keys.__getitem__, reverse=reverse)
    v = view if isinstance(view, array) else array("l", view)
    return array("l", [v[j] for j in order])


# ---------------------------------------------------------------- the store and its loader

@dataclass
class Store:
    """Exchanges loaded so far (appended by the loader thread), the stats they fed and
    how far loading got.  ``lock`` guards ``stats`` while the loader feeds it."""

    exchanges: list[Exchange] = field(default_factory=ExchangeList)
    stats: Stats = field(default_factory=Stats)
    lock: threading.Lock = field(default_factory=threading.Lock)
    errors: list[str] = field(default_factory=list)
    loading: bool = True
    progress: float = 0.0  # 0..1 of the capture bytes
    packets: int = 0
    files_read: int = 0
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    live: bool = False  # fed by a live tap (loading ends when the capture stops)
    capturing: bool = False  # the tap is running

    def snapshot(self) -> dict[str, Any]:
        """The stats snapshot, read under the loader's lock."""
        with self.lock:
            return self.stats.snapshot()


def _total_size(paths: Sequence[str]) -> int:
    total = 0
    for p in paths:
        with contextlib.suppress(OSError):
            total += os.path.getsize(p)
    return total


def _bytes_done(p: Pipeline, it: Iterator[Exchange], sizes: dict[str, int]) -> int | None:
    """Bytes of the captures read so far: ``Pipeline.progress()`` when it exists, else the
    position of the file the running ``Pipeline.run`` generator has open."""
    prog = getattr(p, "bytes_read", None)
    if isinstance(prog, int):
        return prog
    frame = getattr(it, "gi_frame", None)
    if frame is None:
        return None
    loc = frame.f_locals
    reader, path = loc.get("reader"), loc.get("path")
    f = getattr(reader, "f", None)
    if f is None or path is None:
        return None
    try:
        pos = f.tell()
    except (OSError, ValueError):
        return None
    done = 0
    for name, size in sizes.items():
        if name == path:
            return done + pos
        done += size
    return None


def load(store: Store, paths: Sequence[str], pipeline: Pipeline, stop: threading.Event,
         on_batch: Callable[[], None] = lambda: None, first_batch: int = 256, batch: int = 20000,
         max_wait: float = 0.25) -> None:
    """Run ``pipeline`` over ``paths`` into ``store`` (call it in a thread).  Exchanges are
    published in batches: a small first one so the first screen shows at once, then
    bigger ones, at least every ``max_wait`` seconds."""
    sizes = {p: s for p in paths if (s := _total_size([p]))}
    total = sum(sizes.values()) or 1
    it = pipeline.run(paths)
    exchanges = store.exchanges
    want = first_batch
    try:
        exhausted = False
        while not exhausted and not stop.is_set():
            buf: list[Exchange] = []
            deadline = time.monotonic() + max_wait
            with store.lock:
                for ex in it:
                    buf.append(ex)
                    if len(buf) >= want or (len(buf) & 255 == 0 and time.monotonic() > deadline):
                        break
                else:
                    exhausted = True
                done = _bytes_done(pipeline, it, sizes)
            exchanges.extend(buf)
            columns = getattr(exchanges, "columns", None)
            if columns is not None:  # the filter columns, while the batch is at hand
                columns.extend_to(exchanges, len(exchanges))
            # Stored exchanges live as long as the app: keep the cyclic GC from walking
            # millions of them again and again (full collections froze the UI for seconds).
            gc.freeze()
            if done is not None:
                store.progress = min(1.0, done / total)
            on_batch()
            want = batch
    except Exception as e:  # a pipeline bug must not take the UI down: show it
        store.errors.append(f"loading stopped: {type(e).__name__}: {e}")
    finally:
        store.errors[:0] = pipeline.errors
        store.packets = pipeline.packets
        store.files_read = pipeline.files_read
        store.progress = 1.0
        store.loading = False
        store.finished = time.monotonic()
        on_batch()


def load_live(store: Store, interfaces: Sequence[str], bpf: str | None, stop: threading.Event, *,
              ports: Sequence[PortSpec] = (), only_ports: bool = False, tick: float = 0.25,
              on_batch: Callable[[], None] = lambda: None, tls_keys: Any = None) -> None:
    """Capture on ``interfaces`` into ``store`` until ``stop`` (call it in a thread).  The
    tap appends each exchange under its lock, which becomes ``store.lock``."""
    from ..live import LiveTap
    from ..sources.afpacket import AfPacketSource

    store.live = True
    sources: list[AfPacketSource] = []
    tap = None
    try:
        for name in interfaces:
            sources.append(AfPacketSource(name, bpf))
        tap = LiveTap(sources, stats=store.stats, ports=ports, only_ports=only_ports,
                      on_exchange=store.exchanges.append, tls_keys=tls_keys)
        store.lock = tap.lock
        store.capturing = True

        def on_tick(t: LiveTap) -> None:
            gc.freeze()  # as in load(): the stored exchanges stay
            store.packets = t.packets
            on_batch()
        tap.run(stop=stop.is_set, tick=tick, on_tick=on_tick)
    except Exception as e:  # CaptureSetupError (permissions, unknown interface, bad filter) and the rest
        store.errors.append(str(e) if type(e).__name__ == "CaptureSetupError" else f"{type(e).__name__}: {e}")
        for s in sources:
            s.close()
    finally:
        if tap is not None:
            tap.finish()
            store.packets = tap.packets
            store.errors[:0] = tap.errors
        store.capturing = False
        store.loading = False
        store.finished = time.monotonic()
        on_batch()
