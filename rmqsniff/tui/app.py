"""The rmqsniff TUI: exchanges list, decoded tree and hex panes, filter and command
lines, stats/follow/help views.  Loading, filtering and sorting run in threads;
the list only ever renders its visible rows."""
from __future__ import annotations

import contextlib
import sys
import threading
import time
from array import array
from collections.abc import Sequence
from pathlib import Path

import orjson
from rich.text import Text
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.css.query import NoMatches
from textual.widgets import Input, ProgressBar, Static, Tree

from ..filter import FilterError, compile_filter
from ..flows import PortSpec
from ..pipeline import Pipeline
from ..protocols.tls import TlsKeys
from ..sources.wire import WireReader
from ..text import shown
from . import commands
from .commands import CommandError, CommandSuggester, FilterSuggester
from .detail import Node, exchange_json, exchange_tree, frame_bytes, hexdump
from .exchange_list import ExchangeTable
from .exporting import export_exchanges
from .screens import FollowScreen, HelpScreen, JourneyScreen, StatsScreen
from .store import COLUMNS, Store, View, filter_into, load, load_live, sort_view

TICK = 0.2  # seconds between list/progress refreshes while loading
SWITCH_INTERVAL = 0.0005  # seconds; see on_mount


class DetailTree(Tree):
    BINDINGS = [Binding("j", "cursor_down", show=False), Binding("k", "cursor_up", show=False),
                Binding("g", "scroll_home", show=False), Binding("G", "scroll_end", show=False)]


class HexPane(VerticalScroll):
    BINDINGS = [Binding("j", "scroll_down", show=False), Binding("k", "scroll_up", show=False),
                Binding("g", "scroll_home", show=False), Binding("G", "scroll_end", show=False)]


class RmqSniffApp(App[None]):
    """``RmqSniffApp(paths)``: open at once, load the captures in the background."""

    TITLE = "rmqsniff"
    CSS = """
    #title { height: 1; background: $primary-background; color: $text; }
    #list { height: 1fr; border-bottom: solid $panel; }
    #panes { height: 45%; }
    #detail { width: 1fr; border-right: solid $panel; }
    #hex { width: 80; }
    #hex-caption { height: 1; background: $panel; }
    #line { display: none; border: none; height: 1; padding: 0; }
    #line.-open { display: block; }
    #line.-bad { background: $error 40%; }
    #line.-good { background: $success 25%; }
    #line-msg { display: none; height: auto; max-height: 3; color: $error; }
    #line-msg.-open { display: block; }
    #status { height: 1; background: $panel; }
    #status-text { width: 1fr; }
    #progress { width: 40; display: none; }
    #progress.-loading { display: block; }
    ExchangeTable:focus, DetailTree:focus, HexPane:focus { background-tint: $accent 6%; }
    """
    BINDINGS = [
        Binding("slash", "open_line('filter')", "filter"),
        Binding("colon", "open_line('command')", "command"),
        Binding("tab", "pane(1)", "next pane", show=False, priority=True),
        Binding("shift+tab", "pane(-1)", "previous pane", show=False, priority=True),
        Binding("p", "partner", "request↔response"),
        Binding("f", "follow", "follow"),
        Binding("t", "journey", "journey"),
        Binding("y", "yank", "copy JSON"),
        Binding("s", "stats('envoy')", "stats"),
        Binding("r", "reverse", "reverse sort", show=False),
        *[Binding(str(k), f"sort({(k - 1) % 10})", f"sort {k}", show=False) for k in range(10)],
        Binding("escape", "escape", "back", show=False),
        Binding("question_mark", "help", "help"),
        Binding("q", "quit", "quit"),
    ]

    def __init__(self, paths: Sequence[str] = (), *, redact: bool = True, ports: Sequence[PortSpec] = (),
                 only_ports: bool = False, initial_filter: str | None = None, interfaces: Sequence[str] = (),
                 bpf: str | None = None, tls_keylogs: Sequence[str] = ()) -> None:
        super().__init__()
        self.paths = list(paths)
        self.interfaces = list(interfaces)  # a live tap instead of files
        self.bpf = bpf
        self.redact = redact
        self.ports = list(ports)
        self.only_ports = only_ports
        self.initial_filter = initial_filter
        self.store = Store()
        self.tls_keys = TlsKeys.from_options(tls_keylogs, live=bool(interfaces))  # TLS exchanges show a lock
        # files: packets tracked, so the hex pane and pcapng export read the captured bytes back
        self.pipeline = Pipeline(stats=self.store.stats, ports=self.ports, only_ports=only_ports,
                                 track_packets=bool(self.paths) and not self.interfaces, tls_keys=self.tls_keys)
        self.wire = WireReader(self.paths)
        self._stop = threading.Event()
        self.filter_text = ""
        self.filter_error: FilterError | None = None
        self.sort: tuple[int, bool] | None = None
        self.view: View = range(0)
        self._gen = 0  # bumps on every new filter/sort: older view workers stop
        self.view_gen = 0  # the generation the list shows
        self._view_busy = False
        self.view_ready = threading.Event()  # set when the view matches filter/sort over everything loaded
        self.side = "request"
        self.detail_pos: int | None = None
        self.first_screen_at: float | None = None  # monotonic time the first rows were shown
        self.line_mode = "filter"
        self.last_export = ""  # what the last :export did (or why it failed)
        self._errors_shown = 0
        self._last_text: dict[str, str] = {}

    def _q(self, *query):
        """A widget of the main view (whatever screen is on top)."""
        return self.screen_stack[0].query_one(*query)

    # ------------------------------------------------------------ layout
    def compose(self) -> ComposeResult:
        yield Static(id="title")
        yield ExchangeTable(id="list")
        with Horizontal(id="panes"):
            yield DetailTree(Text("select an exchange"), id="detail")
            with HexPane(id="hex"):
                yield Static(id="hex-caption")
                yield Static(id="hex-text")
        yield Input(id="line", placeholder="")
        yield Static(id="line-msg")
        with Horizontal(id="status"):
            yield Static(id="status-text")
            yield ProgressBar(total=100, id="progress", show_eta=False)

    def on_mount(self) -> None:
        # Background threads hold the GIL for up to the switch interval (5 ms) each time the
        # event loop gives it up; a shorter one keeps keys snappy while loading/filtering.
        self._switch = sys.getswitchinterval()
        sys.setswitchinterval(SWITCH_INTERVAL)
        self._q("#progress").add_class("-loading")
        self._q(ExchangeTable).focus()
        self._refresh_chrome()
        if self.initial_filter:
            self.apply_filter(self.initial_filter)
        if self.interfaces:
            threading.Thread(target=load_live, name="rmqsniff-live", daemon=True,
                             args=(self.store, self.interfaces, self.bpf, self._stop),
                             kwargs={"ports": self.ports, "only_ports": self.only_ports,
                                     "tls_keys": self.tls_keys}).start()
        else:
            threading.Thread(target=load, name="rmqsniff-load", daemon=True,
                             args=(self.store, self.paths, self.pipeline, self._stop)).start()
        self.set_interval(TICK, self._tick)

    def on_unmount(self) -> None:
        self._stop.set()
        self._gen += 1
        sys.setswitchinterval(self._switch)

    # ------------------------------------------------------------ loading and the view
    @property
    def exchanges(self) -> list:
        return self.store.exchanges

    def _tick(self) -> None:
        with contextlib.suppress(NoMatches):  # shutting down: the widgets are gone already
            self._update_list()

    def _update_list(self) -> None:
        n = len(self.store.exchanges)
        table = self._q(ExchangeTable)
        if not self.filter_text and self.sort is None:
            if len(self.view) != n:
                self.view = range(n)
                table.grow(self.store.exchanges, self.view)
            if not self.store.loading:
                self.view_ready.set()
        elif len(table.view) != len(self.view):
            table.grow(self.store.exchanges, self.view)
        if n and self.first_screen_at is None:
            self.first_screen_at = time.monotonic()
        if table.current is not None and self.detail_pos is None:
            self.show_detail(table.current)
        self._refresh_chrome()

    def _refresh_chrome(self) -> None:
        st = self.store
        names = (f"live: {', '.join(self.interfaces)}" + (f" ({self.bpf})" if self.bpf else "") if self.interfaces
                 else ", ".join(Path(p).name for p in self.paths) or "(no capture)")
        n = len(st.exchanges)
        listed = len(self.view)
        t = Text(f" rmqsniff  {names}  ·  {n} exchanges", style="bold")
        if self.filter_text:
            t.append(f"  ·  {listed} shown  ·  filter: {shown(self.filter_text)}", style="bold yellow")
        if self.sort is not None:
            col, rev = self.sort
            t.append(f"  ·  sort: {COLUMNS[col].title} {'▼' if rev else '▲'}")
        self._update("#title", t)
        status = Text()
        bar = self._q("#progress", ProgressBar)
        if st.live:
            bar.remove_class("-loading")
            state = "capturing" if st.capturing else ("starting capture…" if st.loading else "capture stopped")
            status.append(f" {state}: {n} exchanges, {st.packets} packets", style="bold")
        elif st.loading:
            status.append(f" loading… {100 * st.progress:.0f}%  {n} exchanges", style="bold")
            bar.update(progress=100 * st.progress)
        else:
            bar.remove_class("-loading")
            took = (st.finished or time.monotonic()) - st.started
            status.append(f" loaded {n} exchanges, {st.packets} packets in {took:.1f}s")
        if self._view_busy:
            status.append("  ·  filtering/sorting…", style="italic")
        if st.errors:
            status.append(f"  ·  {len(st.errors)} problem(s): {shown(st.errors[0])}", style="bold red")
            while self._errors_shown < min(5, len(st.errors)):
                self.notify(shown(st.errors[self._errors_shown]), title="capture", severity="error", timeout=10,
                            markup=False)
                self._errors_shown += 1
        if not st.loading and st.files_read == 0 and self.paths and not st.live:
            status.append("  ·  nothing could be read", style="bold red")
        status.append("   ? help  / filter  : command  q quit", style="dim")
        self._update("#status-text", status)

    def _update(self, selector: str, text: Text) -> None:
        """Update a Static only when its text changed (no needless repaints while busy)."""
        if self._last_text.get(selector) != text.plain:
            self._last_text[selector] = text.plain
            self._q(selector, Static).update(text)

    def apply_filter(self, text: str) -> bool:
        """Filter the list with the filter language (empty: no filter); False if invalid."""
        text = text.strip()
        pred = None
        if text:
            try:
                pred = compile_filter(text)
            except FilterError as e:
                self.filter_error = e
                self._line_message(f"bad filter: {e.message}\n{e.caret()}")
                return False
        self.filter_error = None
        self.filter_text = text
        self._restart_view(pred)
        return True

    def _restart_view(self, pred=None) -> None:
        self._gen += 1
        self.view_ready.clear()
        if pred is None and self.filter_text:
            pred = compile_filter(self.filter_text)
        if pred is None and self.sort is None:
            self.view = range(len(self.store.exchanges))
            self.view_gen = self._gen
            self._q(ExchangeTable).set_view(self.store.exchanges, self.view, keep=self.detail_pos)
            self._view_busy = False
            if not self.store.loading:
                self.view_ready.set()
            self._refresh_chrome()
            return
        self._view_busy = True
        self._refresh_chrome()
        self._view_worker(self._gen, pred, self.sort)

    @work(thread=True, exclusive=True, group="view", exit_on_error=False)
    def _view_worker(self, gen: int, pred, sort: tuple[int, bool] | None) -> None:
        exchanges = self.store.exchanges
        out = array("l")
        upto = 0
        first = True
        shown = [0.0]  # when the partial list was last shown
        try:
            while gen == self._gen:
                loading = self.store.loading
                n = len(exchanges)
                t0 = time.monotonic()
                if pred is not None:
                    shown[0] = time.monotonic() - 1.0

                    def partial(_done: int) -> None:  # the list fills while the filter runs
                        nonlocal first
                        if sort is None and time.monotonic() - shown[0] > 0.3 and gen == self._gen:
                            shown[0] = time.monotonic()
                            self.call_from_thread(self._set_view, gen, out, first, False)
                            first = False
                    if not filter_into(exchanges, pred, upto, n, out, lambda: gen != self._gen, chunk=16384,
                                       progress=partial):
                        return
                    base: View = out
                else:
                    base = range(n)
                upto = n
                view = sort_view(exchanges, base, *sort) if sort is not None else base
                if gen != self._gen:
                    return
                done = not loading and upto == len(exchanges)
                self.call_from_thread(self._set_view, gen, view, first, done)
                first = False
                if done:
                    return
                time.sleep(max(TICK, 2 * (time.monotonic() - t0)) if sort is not None else TICK)
        except Exception as e:  # shown, never a traceback
            self.call_from_thread(self.notify, f"filter failed: {type(e).__name__}: {e}", severity="error")
            self.call_from_thread(self._set_view, gen, out, True, True)

    def _set_view(self, gen: int, view: View, first: bool, done: bool) -> None:
        if gen != self._gen or not self.screen_stack:
            return
        self.view = view
        self.view_gen = gen
        table = self._q(ExchangeTable)
        if first:
            table.set_view(self.store.exchanges, view, keep=self.detail_pos)
        else:
            table.grow(self.store.exchanges, view)
        if done:
            self._view_busy = False
            self.view_ready.set()
        self._refresh_chrome()

    # ------------------------------------------------------------ detail panes
    def on_exchange_table_cursor_moved(self, event: ExchangeTable.CursorMoved) -> None:
        if event.position is not None and event.position != self.detail_pos:
            self.side = "request" if self.store.exchanges[event.position].request is not None else "response"
            self.show_detail(event.position)

    def on_exchange_table_opened(self, event: ExchangeTable.Opened) -> None:
        self.show_detail(event.position)
        tree = self._q(DetailTree)
        tree.focus()
        self._tree_to_side()

    def show_detail(self, pos: int) -> None:
        self.detail_pos = pos
        ex = self.store.exchanges[pos]
        tree = self._q(DetailTree)
        try:
            root = exchange_tree(ex, self.redact)
        except Exception as e:  # a decoder problem is shown, not raised
            root = Node(f"#{ex.index}: cannot show this exchange: {type(e).__name__}: {e}")
        tree.clear()
        tree.root.set_label(Text(root.label))
        tree.root.data = None
        _fill(tree.root, root.children)
        tree.root.expand()
        self._show_hex()

    def _show_hex(self) -> None:
        if self.detail_pos is None:
            return
        ex = self.store.exchanges[self.detail_pos]
        try:
            data, caption = frame_bytes(ex, self.side, self.wire, self.redact, self.store.exchanges)
        except (OSError, ValueError) as e:
            data, caption = None, f"cannot read the {self.side}'s bytes: {type(e).__name__}: {e}"
        self._q("#hex-caption", Static).update(Text(f" {caption}  (p: request ↔ response)", style="bold"))
        self._q("#hex-text", Static).update(Text(hexdump(data) if data else ""))

    def _tree_to_side(self) -> None:
        """Put the tree's cursor on the current side (once the tree has laid out its lines)."""
        self.call_after_refresh(self._tree_cursor_to_side)

    def _tree_cursor_to_side(self) -> None:
        tree = self._q(DetailTree)
        for node in tree.root.children:
            if node.data == self.side:
                tree.move_cursor(node)
                tree.scroll_to_node(node, animate=False)
                return

    # ------------------------------------------------------------ actions
    _LIST_ACTIONS = frozenset({"partner", "follow", "journey", "yank", "sort", "reverse", "stats", "open_line"})

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """List actions only while the main view is on screen."""
        return not (action in self._LIST_ACTIONS and len(self.screen_stack) > 1)

    def _current(self):
        pos = self._q(ExchangeTable).current
        return None if pos is None else self.store.exchanges[pos]

    def action_partner(self) -> None:
        ex = self.store.exchanges[self.detail_pos] if self.detail_pos is not None else None
        if ex is None:
            return
        other = "response" if self.side == "request" else "request"
        if getattr(ex, other) is None:
            self.notify(f"this exchange has no {other} ({ex.status})", severity="warning")
            return
        self.side = other
        self._show_hex()
        self._tree_to_side()

    def action_follow(self) -> None:
        ex = self._current()
        if ex is None:
            self.notify("nothing to follow", severity="warning")
            return
        cid = ex.connection.id
        self.apply_filter(f"conn == {cid}")
        self.push_screen(FollowScreen(self.store.exchanges, cid, self.redact))

    def action_journey(self) -> None:
        ex = self._current()
        if ex is None:
            self.notify("no exchange selected", severity="warning")
            return
        self.push_screen(JourneyScreen(self.store.exchanges, ex))

    def action_yank(self) -> None:
        ex = self._current()
        if ex is None:
            return
        text = orjson.dumps(exchange_json(ex, self.redact), option=orjson.OPT_INDENT_2, default=str).decode()
        self.copy_to_clipboard(text)
        self.notify(f"copied exchange #{ex.index} as JSON ({len(text)} characters)")

    def action_sort(self, column: int) -> None:
        rev = False
        if self.sort is not None and self.sort[0] == column:
            rev = not self.sort[1]
        self._set_sort((column, rev))

    def action_reverse(self) -> None:
        self._set_sort((self.sort[0], not self.sort[1]) if self.sort else (0, True))

    def _set_sort(self, sort: tuple[int, bool] | None) -> None:
        old, self.sort = self.sort, sort
        self._q(ExchangeTable).set_sort_mark(*(sort if sort else (None, False)))
        if (old and sort and old[0] == sort[0] and self.view_ready.is_set() and not self.store.loading
                and isinstance(self.view, array)):
            self._gen += 1  # only the direction changed: reverse the sorted view in place of a re-sort
            self._set_view(self._gen, array("l", reversed(self.view)), True, True)
            return
        self._restart_view()

    def action_stats(self, tab: str = "envoy") -> None:
        what = f" (filter: {self.filter_text})" if self.filter_text else ""

        def done(expr: str | None) -> None:
            if expr:
                self.apply_filter(expr)
                self._q(ExchangeTable).focus()
        self.push_screen(StatsScreen(self.store, self.store.exchanges, self.view, tab, what), done)

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_pane(self, delta: int) -> None:
        line: Input = self._q("#line", Input)
        if self.focused is line:
            if line._suggestion:  # tab completes
                line.value = line._suggestion
                line.cursor_position = len(line.value)
            return
        if self.screen is not self.screen_stack[0]:
            self.screen.focus_next() if delta > 0 else self.screen.focus_previous()
            return
        panes = [self._q(ExchangeTable), self._q(DetailTree), self._q(HexPane)]
        i = panes.index(self.focused) if self.focused in panes else -1
        panes[(i + delta) % len(panes)].focus()

    def action_escape(self) -> None:
        if self._q("#line").has_class("-open"):
            self._close_line()
        elif self.focused is not self._q(ExchangeTable):
            self._q(ExchangeTable).focus()
        elif self.filter_text:
            self.apply_filter("")

    # ------------------------------------------------------------ the input line
    def action_open_line(self, mode: str) -> None:
        line = self._q("#line", Input)
        self.line_mode = mode
        line.suggester = FilterSuggester() if mode == "filter" else CommandSuggester()
        line.value = self.filter_text if mode == "filter" else ""
        line.placeholder = ("filter, e.g. code == SEND_MESSAGE_V2 and latency > 5ms (empty: all)" if mode == "filter"
                            else "command: stats topics groups conns follow export FILE filter EXPR clear help")
        line.remove_class("-good", "-bad")
        line.add_class("-open")
        line.border_title = mode
        self._line_message(None)
        line.focus()
        line.cursor_position = len(line.value)

    def _close_line(self) -> None:
        self._q("#line").remove_class("-open", "-good", "-bad")
        self._line_message(None)
        self._q(ExchangeTable).focus()

    def _line_message(self, msg: str | None) -> None:
        w = self._q("#line-msg", Static)
        if msg:
            w.update(Text(msg))
            w.add_class("-open")
        else:
            w.update("")
            w.remove_class("-open")

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id != "line" or self.line_mode != "filter":
            return
        text = event.value.strip()
        line = event.input
        if not text:
            line.remove_class("-bad", "-good")
            self._line_message(None)
            return
        try:
            compile_filter(text)
        except FilterError as e:
            line.remove_class("-good")
            line.add_class("-bad")
            self._line_message(f"{e.message}\n{e.caret()}")
            return
        line.remove_class("-bad")
        line.add_class("-good")
        self._line_message(None)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id != "line":
            return
        if self.line_mode == "filter":
            if self.apply_filter(event.value):
                self._close_line()
            return
        self._close_line()
        try:
            self.run_command(event.value)
        except CommandError as e:
            self.notify(shown(str(e)), title="command", severity="error", markup=False)
            self._line_message(str(e))

    def run_command(self, line: str) -> None:
        """Run one ``:`` command line (raises CommandError)."""
        name, arg = commands.parse(line)
        if name in commands.STATS_TABS:
            self.action_stats(commands.STATS_TABS[name])
        elif name == "follow":
            self.action_follow()
        elif name == "filter":
            if not self.apply_filter(arg):
                raise CommandError(f"bad filter: {self.filter_error.message}" if self.filter_error else "bad filter")
        elif name == "clear":
            self.sort = None
            self._q(ExchangeTable).set_sort_mark(None)
            self.apply_filter("")
        elif name == "sort":
            if not (arg.isdigit() and len(arg) == 1):
                raise CommandError(":sort takes a column number 1-9 or 0")
            self.action_sort((int(arg) - 1) % 10)
        elif name == "export":
            self.export(arg)
        elif name == "help":
            self.action_help()
        elif name == "quit":
            self.exit()

    @work(thread=True, group="export", exit_on_error=False)
    def export(self, target: str) -> None:
        """Write the listed exchanges (in list order) to ``target``."""
        view = list(self.view)
        exchanges = self.store.exchanges
        try:
            msg = export_exchanges(target, [exchanges[i] for i in view], captures=self.paths, redact=self.redact,
                                   ports=self.ports, only_ports=self.only_ports)
        except Exception as e:  # shown, never a traceback
            why = str(e) if isinstance(e, (OSError, ValueError)) else f"{type(e).__name__}: {e}"
            self.last_export = f"export failed: {why}"
            self.call_from_thread(self.notify, self.last_export, title="export", severity="error")
            return
        self.last_export = msg
        self.call_from_thread(self.notify, msg, title="export")


def _fill(parent, nodes: list[Node]) -> None:
    for n in nodes:
        if n.children:
            child = parent.add(Text(n.label), data=n.side, expand=n.expand)
            _fill(child, n.children)
        else:
            parent.add_leaf(Text(n.label), data=n.side)
