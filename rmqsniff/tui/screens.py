"""The TUI's other views: stats (with drill-down), follow a connection, a message's journey, help."""
from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Log, Static, TabbedContent, TabPane

from ..model import Exchange
from ..text import shown
from ..views import conversation, render_conversation
from . import charts, stats_tables
from .commands import COMMANDS, KEYS
from .store import Store, View

MAX_FOLLOW_FRAMES = 20000


class VimTable(DataTable):
    """A DataTable with j/k/g/G."""

    BINDINGS = [
        Binding("j", "cursor_down", show=False), Binding("k", "cursor_up", show=False),
        Binding("g", "scroll_top", show=False), Binding("G", "scroll_bottom", show=False),
    ]


CHART_TABS = ("latency", "rate")


class StatsScreen(Screen[str | None]):
    """Envoy stats, grouped tables, connections and charts; Enter on a row returns its filter."""

    BINDINGS = [
        Binding("escape,q,s", "close", "back"),
        Binding("h,left", "tab(-1)", "previous tab", show=False),
        Binding("l,right", "tab(1)", "next tab", show=False),
        Binding("question_mark", "app.help", "help", show=False),
        Binding("o", "sort_lag", "lag tab: next sort", show=False),
    ]
    DEFAULT_CSS = """
    StatsScreen #stats-title { height: 1; background: $panel; }
    StatsScreen .chart { padding: 0 1; }
    """

    def __init__(self, store: Store, exchanges: Sequence[Exchange], view: View, tab: str = "envoy",
                 what: str = "") -> None:
        super().__init__()
        self.store = store
        self.exchanges = exchanges
        self.view = view
        self.initial = tab
        self.what = what
        self.filters: dict[str, list[str | None]] = {}
        self.loaded: set[str] = set()
        self.lag_sort = 0  # index into stats_tables.LAG_SORTS

    def compose(self) -> ComposeResult:
        more = " (still loading: figures so far)" if self.store.loading else ""
        yield Static(Text(f" stats: enter filters the list to a row · h/l or ←/→ switch tabs · esc back{more}"),
                     id="stats-title")
        with TabbedContent(initial=f"tab-{self.initial}", id="stats-tabs"):
            for tab in stats_tables.TABS:
                with TabPane(tab, id=f"tab-{tab}"):
                    yield VimTable(id=f"t-{tab}", cursor_type="row", zebra_stripes=True)
            for tab in CHART_TABS:
                with TabPane(tab, id=f"tab-{tab}"), VerticalScroll():
                    yield Static(Text("computing…"), id=f"c-{tab}", classes="chart")

    def on_mount(self) -> None:
        self._load(self.initial)
        self._focus_tab(self.initial)

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        if event.pane.id != self.query_one(TabbedContent).active:
            # a stale activation (later keys moved on): focusing its table would pull the tabs back
            return
        tab = (event.pane.id or "tab-").removeprefix("tab-")
        self._load(tab)
        self._focus_tab(tab)

    def _focus_tab(self, tab: str) -> None:
        if tab in stats_tables.TABS:
            self.query_one(f"#t-{tab}", VimTable).focus()

    def _load(self, tab: str) -> None:
        if tab not in self.loaded:
            self.loaded.add(tab)
            self._compute(tab)

    @work(thread=True, group="stats")
    def _compute(self, tab: str) -> None:
        try:
            if tab == "latency":
                result: object = charts.render_histogram(charts.latency_buckets(self.exchanges, self.view))
            elif tab == "rate":
                result = charts.render_rate(charts.rate_series(self.exchanges, self.view, bins=100))
            elif tab == "lag":  # over the listed exchanges, like the charts
                result = stats_tables.lag_table([self.exchanges[i] for i in self.view])
            else:
                result = stats_tables.build(self.store, tab)
        except Exception as e:  # shown, never a traceback
            result = Text(f"could not compute {tab}: {type(e).__name__}: {e}", style="red")
        self.app.call_from_thread(self._show, tab, result)

    def _show(self, tab: str, result: object) -> None:
        if tab in CHART_TABS or isinstance(result, Text):
            if tab in CHART_TABS:
                head = Text(f"over the {len(self.view)} listed exchanges{self.what}\n\n", style="dim")
                self.query_one(f"#c-{tab}", Static).update(head + result)
            else:
                self.notify(shown(str(result)), severity="error", markup=False)
            return
        assert isinstance(result, stats_tables.Table)
        t = self.query_one(f"#t-{tab}", VimTable)
        t.clear(columns=True)
        t.add_columns(*result.columns)
        for i, row in enumerate(result.rows):  # Text cells: a str cell would be parsed as markup
            t.add_row(*(Text(c) for c in row), key=str(i))
        self.filters[tab] = result.filters

    def action_sort_lag(self) -> None:
        """On the lag tab: sort by the next of lag, in flight, group, topic."""
        tabs = self.query_one(TabbedContent)
        if tabs.active != "tab-lag":
            return
        self.lag_sort = (self.lag_sort + 1) % len(stats_tables.LAG_SORTS)
        column, key = stats_tables.LAG_SORTS[self.lag_sort]
        t = self.query_one("#t-lag", VimTable)
        if t.row_count:
            t.sort(t.ordered_columns[stats_tables.LAG_COLUMNS.index(column)].key, key=lambda c: key(str(c)))
        self.notify(f"lag: sorted by {column}")

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        tab = (event.data_table.id or "t-").removeprefix("t-")
        flt = self.filters.get(tab, [])
        i = int(event.row_key.value or -1)  # the row's place when built (rows may be sorted since)
        expr = flt[i] if 0 <= i < len(flt) else None
        if expr is None:
            self.notify("this row has no drill-down", severity="warning")
            return
        self.dismiss(expr)

    def action_tab(self, delta: int) -> None:
        tabs = self.query_one(TabbedContent)
        order = [f"tab-{t}" for t in stats_tables.TABS + CHART_TABS]
        i = order.index(tabs.active) if tabs.active in order else 0
        tabs.active = order[(i + delta) % len(order)]

    def action_close(self) -> None:
        self.dismiss(None)


class LogView(Screen[None]):
    """A titled, scrollable text view (follow, journey): j/k, g/G, esc closes."""

    BINDINGS = [Binding("j", "scroll(1)", show=False), Binding("k", "scroll(-1)", show=False),
                Binding("g", "top", show=False), Binding("G", "bottom", show=False)]

    def action_scroll(self, d: int) -> None:
        log = self.query_one(Log)
        log.scroll_to(y=log.scroll_offset.y + d, animate=False)

    def action_top(self) -> None:
        self.query_one(Log).scroll_home(animate=False)

    def action_bottom(self) -> None:
        self.query_one(Log).scroll_end(animate=False)

    def action_close(self) -> None:
        self.dismiss(None)


class FollowScreen(LogView):
    """One connection's conversation, both directions, decoded (``rmqsniff follow``)."""

    BINDINGS = [Binding("escape,q,f", "close", "back")]

    def __init__(self, exchanges: Sequence[Exchange], conn_id: int, redact: bool = True) -> None:
        super().__init__()
        self.exchanges = exchanges
        self.conn_id = conn_id
        self.redact = redact

    def compose(self) -> ComposeResult:
        yield Static(Text(f" follow: connection {self.conn_id} · the list is filtered to it · esc back"),
                     id="follow-title")
        yield Log(id="follow-log", highlight=False)

    def on_mount(self) -> None:
        self.query_one(Log).focus()
        self._build()

    @work(thread=True)
    def _build(self) -> None:
        ex0 = next((ex for ex in self.exchanges if ex.connection.id == self.conn_id), None)
        if ex0 is None:
            text = f"connection {self.conn_id} has no exchanges"
        else:
            frames = conversation(self.exchanges, self.conn_id)
            cut = len(frames) - MAX_FOLLOW_FRAMES
            text = render_conversation(ex0.connection, frames[:MAX_FOLLOW_FRAMES], self.redact)
            if cut > 0:
                text += f"… {cut} more frames (export the list to see them all)\n"
        self.app.call_from_thread(self._show, text)

    def _show(self, text: str) -> None:
        log = self.query_one(Log)
        log.clear()
        log.write_lines(text.splitlines())
        log.scroll_home(animate=False)


class JourneyScreen(LogView):
    """The journey of the (first) message an exchange carries or names (``rmqsniff trace``)."""

    BINDINGS = [Binding("escape,q,t", "close", "back")]

    def __init__(self, exchanges: Sequence[Exchange], ex: Exchange) -> None:
        super().__init__()
        self.exchanges = exchanges
        self.ex = ex

    def compose(self) -> ComposeResult:
        yield Static(Text(f" journey of the message exchange #{self.ex.index} carries · esc back"),
                     id="journey-title")
        yield Log(id="journey-log", highlight=False)

    def on_mount(self) -> None:
        log = self.query_one(Log)
        log.write_line(f"joining the hops of {len(self.exchanges)} exchanges…")
        log.focus()
        self._build()

    @work(thread=True)
    def _build(self) -> None:
        from ..journey import Journey, JourneyEngine
        from ..journey.text import journey_lines
        from ..protocols import protocol_of

        evs = protocol_of(self.ex).journey_events(self.ex)
        names = [n for e in evs for n in ([e.unique_key] if e.unique_key else []) + [*e.aliases, *e.refs]]
        if not names:
            self.app.call_from_thread(self._show, [f"exchange #{self.ex.index} carries no message"])
            return
        name = names[0]
        found: list[Journey] = []

        def keep(j: Journey) -> None:
            if name in j.names:
                found.append(j)
        engine = JourneyEngine(emit=keep)
        for ex in list(self.exchanges):
            engine.feed(ex)
        for j in engine.finish():
            keep(j)
        lines = [line for j in found for line, _ in journey_lines(j)]
        self.app.call_from_thread(self._show, lines or [f"no journey found for {name}"])

    def _show(self, lines: list[str]) -> None:
        log = self.query_one(Log)
        log.clear()
        log.write_lines([shown(x) for x in lines])
        log.scroll_home(animate=False)


class HelpScreen(ModalScreen[None]):
    """Every key binding and command."""

    BINDINGS = [Binding("escape,q,question_mark", "close", "close")]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll { width: 96; height: 90%; border: round $accent; background: $surface;
                                  padding: 0 1; }
    """

    def compose(self) -> ComposeResult:
        t = Text()
        t.append("every key and command — ↑ ↓ pgup pgdn scroll, esc closes\n\n", style="dim")
        t.append("Keys\n", style="bold underline")
        for key, what in KEYS:
            t.append(f"  {key:<30}", style="bold cyan")
            t.append(f"{what}\n")
        t.append("\nCommands (:)\n", style="bold underline")
        for name, arg, what in COMMANDS:
            t.append(f"  :{name + (' ' + arg if arg else ''):<17}", style="bold cyan")
            t.append(f"{what}\n")
        t.append("\nFilter fields (/)\n", style="bold underline")
        from ..filter import FIELDS

        for f in FIELDS.values():
            t.append(f"  {f.name:<18}", style="bold cyan")
            t.append(f"{f.help}\n")
        with VerticalScroll():
            yield Static(t, id="help-text")

    def action_close(self) -> None:
        self.dismiss(None)
