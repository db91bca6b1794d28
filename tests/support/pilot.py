"""Driving a textual app under test: wait for a condition while the app runs."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any


async def until(pilot: Any, cond: Callable[..., Any], timeout: float = 20.0) -> None:
    """Let the app run until ``cond()`` holds (an AssertionError after ``timeout`` seconds)."""
    for _ in range(int(timeout / 0.05)):
        if cond():
            return
        await pilot.pause(0.05)
    raise AssertionError("condition not reached")
