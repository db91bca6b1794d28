"""Proxy configuration: ``LISTEN=UPSTREAM`` mappings and the options around them."""
from __future__ import annotations

from dataclasses import dataclass, field

from rmqsniff.model import endpoint_text as endpoint_text  # re-exported: the proxy's modules import it here

Endpoint = tuple[str, int]

NAMESRV = "namesrv"
BROKER = "broker"
GRPC = "grpc"
TRANSPARENT = "transparent"
WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::", "*"})


class ConfigError(ValueError):
    """A configuration problem, explained in one line."""


def parse_endpoint(text: str, default_host: str = "127.0.0.1", what: str = "address") -> Endpoint:
    """``HOST:PORT``, ``[V6]:PORT`` or ``PORT`` (on ``default_host``)."""
    t = text.strip()
    host, sep, port = t.rpartition(":")
    if not sep:
        host, port = default_host, t
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host == "*":
        host = "0.0.0.0"
    if not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"{what} {text!r}: expected HOST:PORT")
    return (host or default_host, int(port))


@dataclass(frozen=True, slots=True)
class Mapping:
    """One listener: what it accepts (``listen``), where it forwards (``upstream``) and how."""

    kind: str  # NAMESRV, BROKER, GRPC or TRANSPARENT
    listen: Endpoint
    upstream: Endpoint | None = None  # None for TRANSPARENT: the original destination

    @classmethod
    def parse(cls, kind: str, text: str) -> Mapping:
        """``LISTEN=UPSTREAM`` where LISTEN is ``[HOST:]PORT`` (0 = any free port)."""
        listen, sep, upstream = text.partition("=")
        if not sep or not upstream:
            raise ConfigError(f"--{kind} {text!r}: expected LISTEN=UPSTREAM, e.g. 127.0.0.1:19876=127.0.0.1:9876")
        return cls(kind, parse_endpoint(listen, what=f"--{kind} listen address"),
                   parse_endpoint(upstream, what=f"--{kind} upstream address"))


@dataclass(slots=True)
class ProxyConfig:
    """Everything ``rmqsniff proxy`` can be told."""

    mappings: list[Mapping] = field(default_factory=list)
    advertise: str | None = None  # host put into rewritten route answers
    record: str | None = None  # -w FILE.pcapng
    admin: Endpoint | None = None
    admin_token: str | None = None  # bearer token the admin endpoint asks for (made up off loopback when None)
    stat_prefix: str = "rmqsniff"
    connect_timeout: float = 3.0
    rewrite_routes: bool = True
    max_exchanges: int = 1000  # recent exchanges kept for /exchanges (0: none)
    redact: bool = True
    max_frame: int = 16 * 1024 * 1024
    drain_timeout: float = 5.0  # after one side closed, how long the other may still talk
    mark: int = 0  # SO_MARK on upstream connections (transparent mode: exempt them from the redirect)
    tls: str = "off"  # TLS clients on every listener: "off", "permissive" (TLS or plaintext) or "enforcing"
    tls_cert: str | None = None  # server certificate (PEM); None: one per SNI name from the local CA
    tls_key: str | None = None
    tls_ca_dir: str | None = None  # the local CA's directory (None: the user's config directory)
    tls_keylog: str | None = None  # NSS key log written for both legs
    upstream_tls: bool = False
    upstream_insecure: bool = False  # do not verify the upstream's certificate
    upstream_ca: str | None = None  # verify against these CAs instead of the system's

    def validate(self) -> None:
        if not self.mappings:
            raise ConfigError("nothing to proxy: give --namesrv, --broker, --grpc or --transparent")
        if self.max_exchanges < 0:
            raise ConfigError(f"--recent must be 0 or more, not {self.max_exchanges}")
        if self.tls not in ("off", "permissive", "enforcing"):
            raise ConfigError(f"--tls {self.tls!r}: expected off, permissive or enforcing")
        if self.tls_key and not self.tls_cert:
            raise ConfigError("--tls-key needs --tls-cert")
        if (self.tls_cert or self.tls_ca_dir) and self.tls == "off":
            raise ConfigError("--tls-cert/--tls-ca-dir need --tls permissive or --tls enforcing")
        if (self.upstream_insecure or self.upstream_ca) and not self.upstream_tls:
            raise ConfigError("--upstream-insecure/--upstream-ca need --upstream-tls")
        seen: set[Endpoint] = set()
        for m in self.mappings:
            if m.listen[1] and m.listen in seen:
                raise ConfigError(f"{endpoint_text(m.listen)} is given twice as a listen address")
            seen.add(m.listen)
        if self.rewrite_routes and self.advertise is None and any(
                m.kind in (NAMESRV, GRPC) and m.listen[0] in WILDCARD_HOSTS for m in self.mappings):
            raise ConfigError("a listener on a wildcard address needs --advertise HOST "
                              "(the host clients should be sent to)")

    def advertise_host(self, listen_host: str) -> str:
        """The host written into rewritten answers for a listener bound on ``listen_host``."""
        if self.advertise:
            return self.advertise
        return "127.0.0.1" if listen_host in WILDCARD_HOSTS else listen_host
