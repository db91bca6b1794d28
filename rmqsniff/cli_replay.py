"""``rmqsniff replay``: a thin shell over :mod:`replay.engine` and :mod:`replay.report`."""
from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections import Counter

import click
import orjson

from .cliutil import excludes, quiet_broken_pipe, usage_error

_TARGET_HELP = ("Staging name server HOST:PORT: name-server traffic goes there, broker traffic to the broker its "
                "routes name.")


def _line(msg: str) -> None:
    click.echo(f"rmqsniff replay: {msg}", err=True)


class _Stop(Exception):
    """Explained already; exit code carried."""

    def __init__(self, code: int) -> None:
        self.code = code


@click.command("replay")
@click.argument("captures", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--target", metavar="HOST:PORT", help=_TARGET_HELP)
@click.option("--grpc-target", metavar="HOST:PORT",
              help="Staging RocketMQ proxy's gRPC endpoint: captured gRPC client connections are replayed there.")
@click.option("--allow-target", "allow", multiple=True, metavar="HOST[:PORT]",
              help="Addresses replay may connect to (required; repeat for each host or host:port).")
@click.option("--i-know-this-is-production", "prod_ok", is_flag=True,
              help="Allow targets that are servers in the capture itself.")
@click.option("--dry-run", is_flag=True,
              help="Print the plan (sessions, requests, expected duration, targets); send nothing.")
@click.option("--via-proxy/--direct", default=True, show_default=True,
              help="Pass replay traffic through the built-in proxy (its stats join the report).")
@click.option("--consumers", is_flag=True, help="Replay consumer traffic too (pull, pop, ack, offsets).")
@click.option("--consumers-only", is_flag=True,
              help="Only the consumer side: routes, consumer heartbeats, pulls, pops, acks, offsets; no sends.")
@click.option("-Y", "--filter", "expr", metavar="EXPR",
              help="Replay only these requests (filter language); replaces the default selection.")
@click.option("--map-topic", multiple=True, metavar="PROD=STAGING",
              help="Rename a topic (retry/DLQ topics follow --map-group).")
@click.option("--map-group", multiple=True, metavar="PROD=STAGING", help="Rename a producer/consumer group.")
@click.option("--map-property", multiple=True, metavar="K=V", help="Set a message property on every replayed message.")
@click.option("--drop-property", multiple=True, metavar="K", help="Remove a message property.")
@click.option("--fresh-ids", is_flag=True,
              help="New UNIQ_KEY per replayed message copy (default: keep the captured ids).")
@click.option("--access-key", metavar="AK", help="Re-sign requests (ACL 1.0) with this access key.")
@click.option("--secret-key", metavar="SK", envvar="RMQSNIFF_SECRET_KEY",
              help="Secret key for --access-key (or $RMQSNIFF_SECRET_KEY).")
@click.option("--speed", default="1x", show_default=True, metavar="Nx|N%",
              help="Captured gaps divided by N (2x, or 200%).")
@click.option("--max-gap", metavar="DURATION", help="Cap idle gaps of the captured timeline (e.g. 1s).")
@click.option("--rate", metavar="N/s", help="Fixed rate over all requests (late ones are sent late and counted).")
@click.option("--max", "as_fast", is_flag=True, help="As fast as the target answers (dependencies still kept).")
@click.option("--duration", metavar="DURATION", help="Stop sending after this long (e.g. 30s).")
@click.option("--loop", "loops", type=click.IntRange(min=1), default=1, show_default=True,
              help="Replay the capture N times.")
@click.option("--scale", type=click.IntRange(min=1, max=10_000), default=1, show_default=True,
              help="N concurrent copies of every session (distinct client ids).")
@click.option("--count", "max_requests", type=click.IntRange(min=1), help="Send at most N requests.")
@click.option("--sample", metavar="PCT", help="Keep this share of sessions (consistent hashing), e.g. 10%.")
@click.option("--sample-by", nargs=2, metavar="topic|key|client PCT",
              help="Keep this share of topics / message keys / client hosts.")
@click.option("--timeout", type=click.FloatRange(min=0.05), default=5.0, show_default=True,
              help="Seconds to wait for an answer (plus 1.5x its captured latency).")
@click.option("--diff-ignore", multiple=True, metavar="KEY", help="Also ignore this response header in the diff.")
@click.option("--diff-keep", multiple=True, metavar="KEY",
              help="Compare this header although the noise rules ignore it.")
@click.option("--no-diff-noise", is_flag=True,
              help="Drop the default noise rules (ids, offsets, timestamps, queue ids).")
@click.option("--no-redact", is_flag=True,
              help="Show AccessKey/Signature/SecurityToken/authorization values in the report's diff.")
@click.option("--report", "report_file", type=click.Path(dir_okay=False, writable=True), metavar="FILE.json",
              help="Write the final report as JSON.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True,
              help="Final report on stdout.")
@click.option("--progress/--no-progress", default=None,
              help="Live progress on stderr (default: when stderr is a terminal).")
@click.option("--port", "ports", multiple=True, metavar="P[,P…]", help="Decode these TCP ports as RocketMQ servers.")
@click.option("--tls-keylog", "tls_keylogs", multiple=True, type=click.Path(dir_okay=False), metavar="FILE",
              help="Decrypt the captures' TLS with this NSS key log (SSLKEYLOGFILE is read too).")
@click.option("--share", metavar="I/N",
              help="Replay only share I (0-based) of N: disjoint (session, copy) units, "
                   "paced on the whole run's schedule.")
@click.option("--events", "events_file", metavar="FILE|-",
              help="With --share: one JSON line per finished request (for Locust and other drivers).")
@click.option("--locust", is_flag=True,
              help="Distribute the replay over Locust workers: a local master and --workers workers, "
                   "each replaying one share.")
@click.option("--workers", type=click.IntRange(min=1, max=256),
              help="Local replay processes, process i replaying share i/N, reports merged "
                   "(with --locust: Locust workers, default 2).")
@click.option("--headless/--web-ui", default=True, show_default=True,
              help="--locust: no web UI (--web-ui: serve it and start at once).")
@click.option("--locust-print", is_flag=True,
              help="Print the Locust master and worker commands (for several machines); run nothing.")
@click.option("--locust-opt", multiple=True, metavar="ARG",
              help="--locust: pass this option to the Locust master, e.g. --locust-opt=--csv=run.")
@click.pass_context
def replay(ctx: click.Context, captures: tuple[str, ...], target: str | None, grpc_target: str | None,
           allow: tuple[str, ...], prod_ok: bool, dry_run: bool, via_proxy: bool, consumers: bool,
           consumers_only: bool, expr: str | None, map_topic: tuple[str, ...],
           map_group: tuple[str, ...], map_property: tuple[str, ...], drop_property: tuple[str, ...],
           fresh_ids: bool, access_key: str | None, secret_key: str | None, speed: str, max_gap: str | None,
           rate: str | None, as_fast: bool, duration: str | None, loops: int, scale: int,
           max_requests: int | None, sample: str | None, sample_by: tuple[str, str] | None, timeout: float,
           diff_ignore: tuple[str, ...], diff_keep: tuple[str, ...], no_diff_noise: bool, no_redact: bool,
           report_file: str | None, fmt: str, progress: bool | None, ports: tuple[str, ...], share: str | None,
           events_file: str | None, locust: bool, workers: int, headless: bool, locust_print: bool,
           locust_opt: tuple[str, ...], tls_keylogs: tuple[str, ...]) -> None:
    """Re-send captured client sessions to a staging cluster, for load testing, and report what it did differently.

    Each captured client connection becomes a new connection to staging; per-session order is
    kept, opaques are renumbered, and each request waits for the answers it waited for in the
    capture. Default selection: producer traffic (route lookups, heartbeats, sends incl.
    batch/oneway/transactional, END_TRANSACTION). Captured message ids are kept for every copy
    (see --fresh-ids).
    """
    debug = (ctx.obj or {}).get("debug", False)
    excludes(ctx, "speed", "rate")
    excludes(ctx, "speed", "as_fast")
    excludes(ctx, "rate", "as_fast")
    try:
        code = _run(locals())
    except _Stop as s:
        code = s.code
    except click.ClickException as e:  # a usage error found while running: click's message, exit 2
        raise usage_error(e) from None
    except BrokenPipeError:  # the reader went away (| head): quiet, status 0
        quiet_broken_pipe()
    except KeyboardInterrupt:
        _line("interrupted")
        code = 130
    except Exception as e:  # one clear line; the traceback only with --debug
        if debug:
            raise
        _line(f"{type(e).__name__}: {e} (run with --debug for details)")
        code = 1
    sys.exit(code)


def _bad(msg: str) -> _Stop:
    _line(msg)
    return _Stop(1)


def _settings(a: dict) -> tuple:
    """The command line's targets, rewrite rules, pacing and sampling (raises _Stop)."""
    from replay.engine import (
        MAX,
        RATE,
        SPEED,
        Pacing,
        RewriteError,
        Rules,
        SafetyError,
        parse_duration,
        parse_pairs,
        parse_percent,
        parse_rate,
        parse_speed,
    )
    from replay.engine.plan import SAMPLE_BY
    from replay.engine.safety import endpoint

    try:
        if not a["target"] and not a["grpc_target"]:
            raise _bad("give --target NAMESRV (remoting) and/or --grpc-target HOST:PORT (gRPC)")
        tgt = endpoint(a["target"]) if a["target"] else None
        gtgt = endpoint(a["grpc_target"]) if a["grpc_target"] else None
        rules = Rules(topics=parse_pairs(a["map_topic"], "--map-topic"),
                      groups=parse_pairs(a["map_group"], "--map-group"),
                      set_properties=parse_pairs(a["map_property"], "--map-property"),
                      drop_properties=tuple(a["drop_property"]), fresh_ids=a["fresh_ids"],
                      access_key=a["access_key"], secret_key=a["secret_key"])
        if bool(a["access_key"]) != bool(a["secret_key"]):
            raise _bad("--access-key and --secret-key go together")
        modes = [m for m, on in ((RATE, a["rate"]), (MAX, a["as_fast"])) if on]  # one at most (excludes())
        pacing = Pacing(mode=modes[0] if modes else SPEED, speed=parse_speed(a["speed"]),
                        rate=parse_rate(a["rate"]) if a["rate"] else 0.0,
                        max_gap=parse_duration(a["max_gap"]) if a["max_gap"] else None)
        dur = parse_duration(a["duration"]) if a["duration"] else None
        frac = parse_percent(a["sample"]) if a["sample"] else 1.0
        by = None
        if a["sample_by"]:
            field, pct = a["sample_by"]
            if field not in SAMPLE_BY:
                raise _bad(f"--sample-by {field!r}: expected one of {', '.join(SAMPLE_BY)}")
            by = (field, parse_percent(pct))
    except (ValueError, SafetyError, RewriteError) as e:
        raise _bad(str(e)) from None
    return tgt, gtgt, rules, pacing, dur, frac, by


def _run(a: dict) -> int:
    from replay.engine import DiffRules, Options, Replay, Schedule, build_plan
    from rmqsniff.pipeline import Pipeline

    from .cli import _BadInput, _compile, _ports, _tls_keys
    from .cli import _report as read_problems

    tgt, gtgt, rules, pacing, dur, frac, by = _settings(a)
    try:
        flt = _compile(a["expr"])
    except _BadInput:
        raise _Stop(1) from None

    p = Pipeline(ports=_ports(a["ports"]), tls_keys=_tls_keys(a.get("tls_keylogs", ())))
    exchanges = list(p.run(a["captures"]))
    rc = read_problems(p, quiet=False)
    if rc:
        return rc
    plan = build_plan(exchanges, consumers=a["consumers"], flt=flt, sample=frac, sample_by=by,
                      consumers_only=a["consumers_only"], grpc=gtgt is not None, remoting=tgt is not None)
    if plan.requests == 0:
        raise _bad("nothing to replay in the capture(s) with this selection"
                   + (f" (left out: {_counts(plan.skipped)})" if plan.skipped else ""))
    guard, tgt, gtgt, verdicts = _approve(a, plan.servers, tgt, gtgt)
    opts = Options(target=tgt, guard=guard, pacing=pacing, rules=rules,
                   diff=DiffRules(noise=not a["no_diff_noise"], ignore=frozenset(a["diff_ignore"]),
                                  keep=frozenset(a["diff_keep"]), names={**rules.topics, **rules.groups},
                                  redact=not a["no_redact"]),
                   copies=a["scale"], loops=a["loops"], duration=dur, max_requests=a["max_requests"],
                   timeout=a["timeout"], via_proxy=a["via_proxy"], grpc_target=gtgt)
    if a["dry_run"]:
        doc = _plan_doc(plan, opts, Schedule(plan, pacing, opts.copies), verdicts)
        if a["fmt"] == "json":
            click.echo(orjson.dumps(doc).decode())
        else:
            _print_plan(doc)
        refused = [v for v in verdicts.values() if v.startswith("REFUSED")]
        if refused:
            _line(f"dry run: refused ({refused[0].removeprefix('REFUSED: ')})")
        return 1 if refused or guard is None else 0

    if a["locust"] or a["locust_print"]:
        return _locust(a)
    show = a["progress"] if a["progress"] is not None else sys.stderr.isatty()
    if a["workers"] and a["workers"] > 1:
        if a["share"] or a["events_file"]:
            raise _bad("--workers cuts the run into shares itself: leave out --share and --events")
        from replay.workers import run_workers

        report = run_workers(plan, opts, a["workers"], lambda engine: _execute(engine, False))
    else:
        engine = _share_engine(plan, opts, a) if a["share"] or a["events_file"] else Replay(plan, opts)
        report = _execute(engine, show)
    d = report.to_dict()
    if a["report_file"]:
        with open(a["report_file"], "wb") as f:
            f.write(orjson.dumps(d, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
    if a["fmt"] == "json":
        click.echo(orjson.dumps(d, option=orjson.OPT_NON_STR_KEYS).decode())
    else:
        from .cli import _console

        report.render(_console())
    return 0 if report.sent or not report.planned else 1  # an empty --share has nothing to send


def _approve(a: dict, servers, tgt, gtgt) -> tuple:
    """The guard and the targets as it resolved them (replay connects to those addresses, no second
    lookup), with a verdict per target for --dry-run; a refusal outside --dry-run raises _Stop."""
    from replay.engine import Guard, SafetyError
    from replay.engine.safety import ep_text

    guard: Guard | None = None
    verdicts: dict[str, str] = {}  # what -> "allowed: ADDR" or "REFUSED: why" (for --dry-run)
    try:
        guard = Guard(list(a["allow"]), servers, a["prod_ok"])
    except SafetyError as e:
        if not a["dry_run"]:
            raise _bad(str(e)) from None
        verdicts = {what: f"REFUSED: {e}" for what, ep in (("target name server", tgt),
                                                          ("target gRPC endpoint", gtgt)) if ep}
    if guard is not None:  # resolved once here: replay connects to the addresses approved
        for what, ep in (("target name server", tgt), ("target gRPC endpoint", gtgt)):
            if ep is None:
                continue
            try:
                got = guard.approve(ep, what)
            except SafetyError as e:
                if not a["dry_run"]:
                    raise _bad(str(e)) from None
                verdicts[what] = f"REFUSED: {str(e).removeprefix('refused: ')}"
                continue
            verdicts[what] = "allowed" + ("" if got == ep else f": {ep_text(got)}")
            if not a["dry_run"]:
                tgt, gtgt = (got, gtgt) if what == "target name server" else (tgt, got)
    return guard, tgt, gtgt, verdicts


def _share_engine(plan, opts, a: dict):
    from replay.locust.shares import ShareReplay, open_events, parse_share, share_count

    if not a["share"]:
        raise _bad("--events goes with --share (--share 0/1 is the whole run)")
    try:
        index, n = parse_share(a["share"])
    except ValueError as e:
        raise _bad(str(e)) from None
    opts.max_requests = share_count(opts.max_requests, index, n)
    return ShareReplay(plan, opts, index, n, open_events(a["events_file"]) if a["events_file"] else None)


_NOT_FORWARDED = frozenset({"locust", "workers", "headless", "locust_print", "locust_opt", "share", "events_file",
                            "report_file", "fmt", "progress", "dry_run"})


def _forward_args(ctx: click.Context) -> list[str]:
    """The replay arguments given on the command line, for each share (environment values stay there)."""
    import os

    from click.core import ParameterSource

    out: list[str] = []
    for p in ctx.command.params:
        if p.name in _NOT_FORWARDED or ctx.get_parameter_source(p.name) != ParameterSource.COMMANDLINE:
            continue
        v = ctx.params[p.name]
        if isinstance(p, click.Argument):
            out += [os.path.abspath(x) if p.name == "captures" else str(x) for x in v]
        elif getattr(p, "is_flag", False):
            if v or p.secondary_opts:
                out.append(max(p.opts, key=len) if v else p.secondary_opts[0])
        else:
            for item in (v if p.multiple else [v]):
                out += [max(p.opts, key=len), *(str(x) for x in (item if p.nargs > 1 else [item]))]
    return out


def _locust(a: dict) -> int:
    import os

    from replay.locust.launch import Launch, commands_text, run, share_line

    if a["share"] or a["events_file"]:
        raise _bad("--locust cuts the run into shares itself: leave out --share and --events")
    spec = Launch(_forward_args(a["ctx"]), workers=a["workers"] or 2, headless=a["headless"],
                  summary=os.path.abspath(a["report_file"]) if a["report_file"] else "", extra=list(a["locust_opt"]))
    if a["locust_print"]:
        spec.port = 5557  # Locust's usual master port
        click.echo(commands_text(spec), nl=False)
        return 0
    rc, summary = run(spec)
    if not summary:
        raise _bad(f"Locust ended (exit {rc}) before any share reported")
    if a["fmt"] == "json":
        click.echo(orjson.dumps(summary, option=orjson.OPT_NON_STR_KEYS).decode())
    for d in summary["share"]:
        _line(f"share {d['index']}/{d['of']}: {share_line(d)}")
    return rc or (0 if summary["complete"] and not any(d.get("exit") for d in summary["share"]) else 1)


def _execute(engine, show: bool):
    from replay.engine import ProxyUnavailable, RouteError, SafetyError
    from replay.proxy.server import new_event_loop

    async def main():
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, engine.stop)
        if not show:
            return await engine.run()
        from rich.console import Console
        from rich.live import Live

        with Live(console=Console(stderr=True), refresh_per_second=4, transient=True) as live:
            return await engine.run(lambda r: live.update(_progress_line(r)))

    try:
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            return runner.run(main())
    except (SafetyError, RouteError, ProxyUnavailable) as e:
        raise _bad(str(e)) from None


def _progress_line(r) -> str:
    rate = r.achieved_rate()
    req = r.requested_rate
    return (f"sent {r.sent}/{r.planned}  rate {rate or 0:,.0f}/s "
            f"(requested {'max' if req is None else f'{req:,.0f}'}/s)  "
            f"in flight {r.in_flight}  errors {r.errors}  late {r.late}")


def _counts(c: Counter) -> str:
    return ", ".join(f"{k} {v}" for k, v in c.most_common())


def _plan_doc(plan, opts, schedule, verdicts: dict[str, str]) -> dict:
    """What --dry-run shows: the plan's size and pacing, each target with its verdict, each session."""
    from replay.engine import Rewriter
    from replay.engine.plan import GRPC, NAMESRV
    from replay.engine.safety import ep_text

    from .protocols import protocol_of

    rw = Rewriter(opts.rules)
    loops, copies = opts.loops, opts.copies
    targets = [{"what": what, "address": ep_text(ep), "verdict": verdicts.get(what, "REFUSED"),
                "via": "proxy" if opts.via_proxy else "direct"}
               for what, ep in (("target name server", opts.target), ("target gRPC endpoint", opts.grpc_target))
               if ep is not None]
    sessions = []
    for s in plan.sessions:
        codes = Counter(protocol_of(st.ex).classifier.request_name(st.code) for st in s.steps)
        if s.kind == GRPC:
            where = f"gRPC endpoint {ep_text(opts.grpc_target)} (topics {', '.join(map(rw.topic, s.topics)) or '-'})"
        elif s.kind == NAMESRV:
            where = f"name server {ep_text(opts.target)}"
        else:
            topics = [rw.topic(t) for t in s.topics] or ["<any broker>"]
            where = f"staging broker serving {', '.join(topics)}" + (f" ({s.broker_name})" if s.broker_name else "")
        sessions.append({"id": s.id, "connection": s.connection.label, "kind": s.kind, "requests": len(s.steps),
                         "codes": dict(codes.most_common()), "to": where})
    return {"dry_run": True, "sessions": len(plan.sessions), "copies": copies, "loops": loops,
            "requests": plan.requests * copies * loops, "pacing": opts.pacing.mode,
            "expected_duration_s": None if opts.pacing.mode == "max" else round(schedule.span(loops), 3),
            "requested_rate": schedule.requested_rate(loops) or None, "duration_s": opts.duration,
            "max_requests": opts.max_requests, "targets": targets, "plan": sessions,
            "left_out": dict(plan.skipped.most_common()),
            "refused": any(t["verdict"].startswith("REFUSED") for t in targets)}


def _print_plan(doc: dict) -> None:
    """The --dry-run plan as text (from :func:`_plan_doc`)."""
    rate, total, copies = doc["requested_rate"], doc["requests"], doc["copies"]
    span = doc["expected_duration_s"]
    click.echo(f"plan: {doc['sessions']} session(s) x {copies} cop{'y' if copies == 1 else 'ies'} x {doc['loops']} "
               f"loop(s) = {total} request(s); pacing {doc['pacing']}; expected duration "
               f"{'as fast as the target answers' if span is None else f'{span:.2f}s'}"
               + (f"; requested rate {rate:,.1f}/s" if rate else "")
               + (f"; stops after {doc['duration_s']:g}s" if doc["duration_s"] else "")
               + (f"; at most {doc['max_requests']} requests" if doc["max_requests"] else ""))
    for t in doc["targets"]:
        click.echo(f"{t['what']} {t['address']} ({t['verdict']}); via {t['via']}")
    for s in doc["plan"]:
        codes = ", ".join(f"{k} {v}" for k, v in s["codes"].items())
        click.echo(f"  session {s['id']} {s['connection']} [{s['kind']}] {s['requests']} request(s): "
                   f"{codes} -> {s['to']}")
    if doc["left_out"]:
        click.echo(f"left out: {', '.join(f'{k} {v}' for k, v in doc['left_out'].items())}")
    click.echo("dry run: nothing sent" + (" (refused)" if doc["refused"] else ""))


if __name__ == "__main__":
    replay()
