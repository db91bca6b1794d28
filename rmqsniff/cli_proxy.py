"""``rmqsniff proxy``: a thin shell over :mod:`replay.proxy`."""
from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time

import click


def _line(msg: str) -> None:
    click.echo(f"rmqsniff proxy: {msg}", err=True)


def _mark(text: str) -> int:
    try:
        v = int(text, 0)
    except ValueError:
        v = -1
    if not 0 <= v <= 0xFFFFFFFF:
        raise click.BadParameter(f"{text!r}: expected a 32-bit number, e.g. 0x524d")
    return v


@click.command("proxy")
@click.option("--namesrv", "namesrv", multiple=True, metavar="LISTEN=UPSTREAM",
              help="Name-server listener, e.g. 127.0.0.1:19876=127.0.0.1:9876. Route answers are rewritten.")
@click.option("--broker", "brokers", multiple=True, metavar="LISTEN=UPSTREAM",
              help="A fixed broker listener (others are opened on demand as routes name them).")
@click.option("--grpc", "grpc", multiple=True, metavar="LISTEN=UPSTREAM",
              help="gRPC (RocketMQ 5 proxy endpoint) listener, e.g. 127.0.0.1:18081=127.0.0.1:8081.")
@click.option("--transparent", "transparent", multiple=True, metavar="[HOST:]PORT",
              help="Accept iptables REDIRECT/TPROXY'd connections here (see docs/proxy.md).")
@click.option("--mark", default="0", metavar="N", callback=lambda c, p, v: _mark(v),
              help="Set SO_MARK N on upstream connections so redirect rules can exempt them (needs CAP_NET_ADMIN).")
@click.option("--advertise", metavar="HOST", help="Host put into rewritten route answers (default: the listen host).")
@click.option("-w", "record", type=click.Path(dir_okay=False, writable=True), metavar="FILE.pcapng",
              help="Record both directions of every connection as a pcapng.")
@click.option("--admin", metavar="HOST:PORT", help="Admin HTTP endpoint: /stats, /stats/prometheus, /exchanges.")
@click.option("--admin-token", envvar="RMQSNIFF_ADMIN_TOKEN", metavar="TOKEN",
              help="Bearer token the admin endpoint asks for (env RMQSNIFF_ADMIN_TOKEN). Off loopback one is "
                   "made up and printed once when none is given.")
@click.option("--stat-prefix", default="rmqsniff", show_default=True, help="Stats are rooted at rocketmq.<prefix>.")
@click.option("--connect-timeout", type=click.FloatRange(min=0.05), default=3.0, show_default=True,
              help="Seconds to wait for an upstream connection.")
@click.option("--no-rewrite", is_flag=True, help="Forward route answers unchanged.")
@click.option("--no-redact", is_flag=True, help="Show AccessKey/Signature/SecurityToken in /exchanges.")
@click.option("--recent", type=click.IntRange(min=0), default=1000, show_default=True, metavar="N",
              help="Recent exchanges kept for /exchanges (0: none, which saves their CPU and memory).")
@click.option("--duration", type=click.FloatRange(min=0), default=0,
              help="Stop after this many seconds (0: run until Ctrl-C).")
@click.option("--stats-on-exit", is_flag=True, help="Print the Envoy stats when stopping.")
@click.option("--tls", "tls", type=click.Choice(["off", "permissive", "enforcing"]), default="off", show_default=True,
              help="TLS clients on every listener: permissive takes TLS and plaintext (told apart by the first "
                   "bytes), enforcing refuses plaintext.")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), metavar="PEM",
              help="Server certificate chain (default: one per SNI name from the local CA, made on first use).")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), metavar="PEM",
              help="Private key of --tls-cert (when not in the same file).")
@click.option("--tls-ca-dir", type=click.Path(file_okay=False), metavar="DIR",
              help="Directory of the local CA (default: $XDG_CONFIG_HOME/rmqsniff/ca or ~/.config/rmqsniff/ca).")
@click.option("--tls-keylog", type=click.Path(dir_okay=False), metavar="FILE", envvar="SSLKEYLOGFILE",
              help="Append both legs' TLS secrets to FILE (NSS key log, mode 0600) for Wireshark and rmqsniff "
                   "(default: $SSLKEYLOGFILE).")
@click.option("--upstream-tls", is_flag=True, help="Connect to upstreams over TLS (SNI and ALPN as the client's).")
@click.option("--upstream-insecure", is_flag=True, help="Do not verify the upstream's certificate.")
@click.option("--upstream-ca", type=click.Path(exists=True, dir_okay=False), metavar="PEM",
              help="Verify upstream certificates against these CAs instead of the system's.")
@click.pass_context
def proxy(ctx: click.Context, namesrv: tuple[str, ...], brokers: tuple[str, ...], grpc: tuple[str, ...],
          transparent: tuple[str, ...], mark: int, advertise: str | None, record: str | None, admin: str | None,
          admin_token: str | None, stat_prefix: str, connect_timeout: float, no_rewrite: bool, no_redact: bool,
          recent: int, duration: float, stats_on_exit: bool, tls: str, tls_cert: str | None, tls_key: str | None,
          tls_ca_dir: str | None, tls_keylog: str | None, upstream_tls: bool, upstream_insecure: bool,
          upstream_ca: str | None) -> None:
    """Transparent proxy between RocketMQ clients and a cluster: forwards every byte, counts every request.

    Point clients at the --namesrv listener: broker addresses in route answers are replaced with proxy
    listeners (opened on demand; the mapping is printed), so all traffic flows through the proxy.
    Runs until Ctrl-C / SIGTERM.
    """
    from replay.proxy import ConfigError, Proxy, ProxyConfig, ProxyError, mappings, new_event_loop
    from replay.proxy.config import parse_endpoint

    try:
        cfg = ProxyConfig(
            mappings=mappings(list(namesrv), list(brokers), list(grpc), list(transparent)),
            advertise=advertise, record=record,
            admin=parse_endpoint(admin, what="--admin address") if admin else None, admin_token=admin_token or None,
            stat_prefix=stat_prefix, connect_timeout=connect_timeout, rewrite_routes=not no_rewrite,
            redact=not no_redact, mark=mark, max_exchanges=recent,
            tls=tls, tls_cert=tls_cert, tls_key=tls_key, tls_ca_dir=tls_ca_dir, tls_keylog=tls_keylog,
            upstream_tls=upstream_tls, upstream_insecure=upstream_insecure, upstream_ca=upstream_ca,
        )
        cfg.validate()
    except ConfigError as e:
        _line(str(e))
        sys.exit(1)

    async def main() -> int:
        p = Proxy(cfg, notify=lambda line: click.echo(line, err=True))
        try:
            await p.start()
        except ProxyError as e:
            _line(str(e))
            return 1
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        t0 = time.monotonic()
        try:
            while not stop.is_set():
                timeout = 1.0
                if duration:
                    timeout = min(timeout, max(0.0, t0 + duration - time.monotonic()))
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout)
                if duration and time.monotonic() - t0 >= duration:
                    break
        finally:
            await p.stop()
        if stats_on_exit:
            from rmqsniff.exporters.statsfmt import render_envoy

            click.echo(render_envoy(p.stats), nl=False)
        if p.recorder is not None:
            if p.recorder.error:
                _line(p.recorder.error)
                return 1
            click.echo(f"recorded to {cfg.record}", err=True)
        return 0

    try:
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            code = runner.run(main())
    except KeyboardInterrupt:
        code = 0
    sys.exit(code)


if __name__ == "__main__":
    proxy()
