"""A virtualised exchange list: renders only the visible rows of an index array.

No per-row widgets or cells are created: :meth:`ExchangeTable.render_line` formats the
exchange under each visible line on demand (with a small cache), so a million rows
cost one ``array('l')`` of positions.
"""
from __future__ import annotations

from collections.abc import Sequence

from rich.segment import Segment
from rich.style import Style
from textual.binding import Binding
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from ..model import Exchange
from .store import COLUMNS, ROW_STYLE, View, result_of, row_cells

_HEADER_STYLE = Style(bold=True, reverse=False, underline=True)
_STYLES = {k: Style.parse(v) for k, v in ROW_STYLE.items()}


def _fit(text: str, width: int, right: bool) -> str:
    if len(text) > width:
        return text[: width - 1] + "…"
    return text.rjust(width) if right else text.ljust(width)


def format_cells(cells: Sequence[str]) -> str:
    """One line of the table: each cell fitted to its column."""
    return " ".join(_fit(c, col.width, col.right) for c, col in zip(cells, COLUMNS, strict=True))


class ExchangeTable(ScrollView, can_focus=True):
    """The exchanges list (positions ``view`` into ``exchanges``), with a cursor."""

    BINDINGS = [
        Binding("j,down", "move(1)", "down", show=False),
        Binding("k,up", "move(-1)", "up", show=False),
        Binding("pagedown,ctrl+f,space", "page(1)", "page down", show=False),
        Binding("pageup,ctrl+b", "page(-1)", "page up", show=False),
        Binding("g,home", "top", "first row", show=False),
        Binding("G,end", "bottom", "last row", show=False),
        Binding("enter", "open", "open", show=False),
    ]
    DEFAULT_CSS = """
    ExchangeTable { height: 1fr; }
    """

    cursor: reactive[int] = reactive(0, always_update=True)

    class CursorMoved(Message):
        def __init__(self, position: int | None) -> None:
            super().__init__()
            self.position = position  # a position into the store, None when the view is empty

    class Opened(Message):
        def __init__(self, position: int) -> None:
            super().__init__()
            self.position = position

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.exchanges: Sequence[Exchange] = ()
        self.view: View = range(0)
        self._cache: dict[int, str] = {}
        self._width = sum(c.width + 1 for c in COLUMNS)
        self._header = format_cells([c.title for c in COLUMNS])
        self.sort_mark: tuple[int, bool] | None = None
        self.frames = 0

    # -- data
    def set_view(self, exchanges: Sequence[Exchange], view: View, keep: int | None = None) -> None:
        """Show ``view``; the cursor goes to position ``keep`` if the view holds it."""
        self.exchanges = exchanges
        self.view = view
        self.virtual_size = Size(self._width, len(view) + 1)
        if keep is not None and len(view):
            self.cursor = _index_of(view, keep, self.cursor)
        else:
            self.cursor = min(self.cursor, max(0, len(view) - 1))
        self.refresh()

    def grow(self, exchanges: Sequence[Exchange], view: View) -> None:
        """The view got longer (rows appended while loading): keep the cursor and scroll."""
        self.exchanges = exchanges
        self.view = view
        self.virtual_size = Size(self._width, len(view) + 1)
        self.refresh()

    def set_sort_mark(self, column: int | None, reverse: bool = False) -> None:
        self.sort_mark = None if column is None else (column, reverse)
        titles = [c.title for c in COLUMNS]
        if column is not None:
            titles[column] += " ▲" if not reverse else " ▼"
        self._header = format_cells(titles)
        self.refresh()

    @property
    def current(self) -> int | None:
        """The store position under the cursor."""
        if not len(self.view):
            return None
        return self.view[min(self.cursor, len(self.view) - 1)]

    def row_text(self, n: int) -> str:
        """The text of view row ``n`` (what the line shows, before cropping)."""
        pos = self.view[n]
        text = self._cache.get(pos)
        if text is None:
            if len(self._cache) > 4096:
                self._cache.clear()
            text = self._cache[pos] = format_cells(row_cells(self.exchanges[pos]))
        return text

    # -- rendering
    def render_line(self, y: int) -> Strip:
        sx, sy = self.scroll_offset
        width = self.size.width
        if y == 0:
            self.frames += 1  # one per repaint (benchmarks wait on it)
            return Strip([Segment(self._header, _HEADER_STYLE)]).crop_extend(sx, sx + width, _HEADER_STYLE)
        n = sy + y - 1
        if n >= len(self.view):
            return Strip.blank(width)
        text = self.row_text(n)
        style = _STYLES.get(result_of(self.exchanges[self.view[n]]), Style())
        if n == self.cursor:
            style = style + Style(reverse=True, dim=not self.has_focus)
        return Strip([Segment(text, style)]).crop_extend(sx, sx + width, style if n == self.cursor else None)

    # -- cursor
    def watch_cursor(self, _old: int, new: int) -> None:
        self._scroll_to_cursor()
        self.refresh()
        self.post_message(self.CursorMoved(self.current))

    def _scroll_to_cursor(self) -> None:
        rows = max(1, self.size.height - 1)
        sy = self.scroll_offset.y
        if self.cursor < sy:
            self.scroll_to(y=self.cursor, animate=False, immediate=True)
        elif self.cursor >= sy + rows:
            self.scroll_to(y=self.cursor - rows + 1, animate=False, immediate=True)

    def _set(self, n: int) -> None:
        if len(self.view):
            self.cursor = max(0, min(len(self.view) - 1, n))

    def action_move(self, delta: int) -> None:
        self._set(self.cursor + delta)

    def action_page(self, direction: int) -> None:
        self._set(self.cursor + direction * max(1, self.size.height - 2))

    def action_top(self) -> None:
        self._set(0)

    def action_bottom(self) -> None:
        self._set(len(self.view) - 1)

    def action_open(self) -> None:
        pos = self.current
        if pos is not None:
            self.post_message(self.Opened(pos))

    def on_click(self, event) -> None:
        off = event.get_content_offset(self)
        if off is not None and off.y >= 1:
            self._set(self.scroll_offset.y + off.y - 1)

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()


def _index_of(view: View, pos: int, default: int) -> int:
    if isinstance(view, range):
        return pos - view.start if pos in view else min(default, max(0, len(view) - 1))
    try:
        return view.index(pos)  # array.index: linear but in C
    except ValueError:
        return min(default, max(0, len(view) - 1))
