"""The terminal UI (``rmqsniff tui``): :class:`RmqSniffApp` over a capture's exchanges."""
from __future__ import annotations

from .app import RmqSniffApp

__all__ = ["RmqSniffApp"]
