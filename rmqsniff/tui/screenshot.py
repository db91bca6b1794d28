"""Save an SVG screenshot of the TUI's main view (for the docs).

    python -m rmqsniff.tui.screenshot OUT.svg CAPTURE... [--row N] [--size 180x48]
"""
from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence

from .app import RmqSniffApp


async def screenshot(out: str, captures: Sequence[str], row: int = 0, size: tuple[int, int] = (180, 48)) -> str:
    """Load ``captures`` headless, put the cursor on ``row``, open it, and save ``out``."""
    app = RmqSniffApp(captures)
    async with app.run_test(size=size) as pilot:
        for _ in range(400):
            if not app.store.loading and app.view_ready.is_set():
                break
            await pilot.pause(0.05)
        for _ in range(row):
            await pilot.press("j")
        await pilot.press("enter")
        await pilot.press("escape")  # focus back on the list, the tree stays open
        await pilot.pause(0.2)
        app.save_screenshot(out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("captures", nargs="+")
    ap.add_argument("--row", type=int, default=0)
    ap.add_argument("--size", default="180x48")
    a = ap.parse_args()
    w, h = (int(x) for x in a.size.split("x"))
    print(asyncio.run(screenshot(a.out, a.captures, a.row, (w, h))))


if __name__ == "__main__":
    main()
