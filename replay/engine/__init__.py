"""Replay engine: captured client sessions re-sent to a staging cluster.

    plan.py     exchanges -> sessions of steps (sampling, dependencies); what to select and how
                to treat it is asked of the exchange's protocol: ``protocol_of(ex).planner``
    remotingplan.py  remoting's planner (grpcplan.py gRPC's): selection, session kind, topics,
                sampling values, answer times, answer diff
    rewrite.py  topics, groups, properties, timestamps, client ids, ACL
    pacing.py   --speed / --rate / --max schedules
    routes.py   staging routes from the target name server
    safety.py   --allow-target, refusal of the capture's own servers
    client.py   asyncio remoting connection (opaques renumbered)
    frames.py   pre-encoded request frames (only opaque and clock patched per send)
    via.py      the built-in proxy hook (--via-proxy)
    diff.py     replayed vs recorded answers
    state.py    consumer state: replayed receipt handles / offsets into later acks, pulls, commits
    grpc*.py    gRPC sessions (--grpc-target): planner, rewriting, HTTP/2 client, session
                runner, receipt-handle state, answer diff
    runner.py   Replay: runs it all, feeds replay.report.Report
"""
from __future__ import annotations

from .diff import DiffRules
from .pacing import MAX, RATE, SPEED, Pacing, Schedule, parse_duration, parse_rate, parse_speed
from .plan import Plan, Session, Step, build_plan, parse_percent
from .rewrite import RewriteError, Rewriter, Rules, parse_pairs, sign
from .routes import RouteError
from .runner import Options, Replay, Target
from .safety import Guard, SafetyError
from .via import ProxyUnavailable

__all__ = ["DiffRules", "Pacing", "Schedule", "SPEED", "RATE", "MAX", "parse_speed", "parse_rate",
           "parse_duration", "Plan", "Session", "Step", "build_plan", "parse_percent", "Rules", "Rewriter",
           "RewriteError", "parse_pairs", "sign", "RouteError", "Options", "Replay", "Target", "Guard",
           "SafetyError", "ProxyUnavailable"]
