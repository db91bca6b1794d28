"""Sinks that render the one stats model: Envoy text, Prometheus exposition, JSON."""
from __future__ import annotations

from rmqsniff.exporters.statsfmt import StatsCollector, render_envoy, render_json, render_prometheus

__all__ = ["StatsCollector", "render_envoy", "render_json", "render_prometheus"]
