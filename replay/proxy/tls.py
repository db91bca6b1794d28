"""TLS termination: each listener can take TLS clients (``--tls permissive|enforcing``),
and upstream connections can speak TLS (``--upstream-tls``).

A TLS connection is an :class:`ssl.SSLObject` over two memory BIOs between the raw TCP
transport and the session's :class:`~replay.proxy.session.Leg`: the leg sees a
:class:`TlsTransport` that takes and gives plaintext, so everything above it (taps,
route rewriting, stats, ``-w``) is the plaintext path.  Plaintext connections never pass
through here: a permissive listener hands them straight to the leg after the first bytes.
"""
from __future__ import annotations

import asyncio
import contextlib
import fcntl
import ipaddress
import os
import socket
import ssl
import tempfile
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, cast

from .config import ProxyConfig

OFF, PERMISSIVE, ENFORCING = "off", "permissive", "enforcing"
TLS_MODES = (OFF, PERMISSIVE, ENFORCING)
HANDSHAKE = 0x16  # a TLS record carrying a handshake: what every ClientHello starts with
READ_CHUNK = 256 * 1024  # plaintext taken from the TLS object at a time
HANDSHAKE_TIMEOUT = 10.0  # seconds a client may take for its TLS handshake
MAX_SNI_CONTEXTS = 256  # server contexts (one per SNI name, generated certificates) kept
CA_FILES = ("ca-cert.pem", "ca-key.pem")


def config_dir() -> str:
    """``$XDG_CONFIG_HOME/rmqsniff`` or ``~/.config/rmqsniff``."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "rmqsniff")


def write_private(path: str, data: bytes) -> None:
    """Write ``data`` to a new file readable by its owner only (0600 from creation on)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(data)


def open_keylog(path: str) -> str:
    """Create (or keep) the key log file with mode 0600 before OpenSSL appends to it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    return path


# ------------------------------------------------------------------ certificates

class LocalCA:
    """A certificate authority kept in the user's config directory (directory 0700, files
    0600), made on first use; it signs a leaf certificate per server name."""

    def __init__(self, directory: str | None = None) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        self.dir = directory or os.path.join(config_dir(), "ca")
        self.cert_path, self.key_path = (os.path.join(self.dir, n) for n in CA_FILES)
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        with open(os.path.join(self.dir, ".lock"), "a") as lock:  # proxies starting together make one CA
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (os.path.exists(self.cert_path) and os.path.exists(self.key_path)):
                self._create()
            with open(self.key_path, "rb") as f:
                key = serialization.load_pem_private_key(f.read(), None)
            with open(self.cert_path, "rb") as f:
                self.cert = x509.load_pem_x509_certificate(f.read())
        from cryptography.hazmat.primitives.asymmetric import ec

        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{self.key_path}: expected the EC key rmqsniff made")
        self.key = key

    def _create(self) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        os.chmod(self.dir, 0o700)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "rmqsniff"),
                          x509.NameAttribute(NameOID.COMMON_NAME, f"rmqsniff proxy CA ({socket.gethostname()})")])
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (_validity(x509.CertificateBuilder(), 3650).subject_name(name).issuer_name(name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                               critical=True)
                .add_extension(ski, critical=False)
                .sign(key, hashes.SHA256()))
        write_private(self.key_path, key.private_bytes(serialization.Encoding.PEM,
                                                       serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
        write_private(self.cert_path, cert.public_bytes(serialization.Encoding.PEM))

    def leaf(self, names: list[str]) -> bytes:
        """PEM of a new key and a certificate for ``names`` (DNS names or IP addresses) signed by this CA."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        sans: list[x509.GeneralName] = []
        for n in dict.fromkeys(names):
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                sans.append(x509.DNSName(n))
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key())
        cert = (_validity(x509.CertificateBuilder(), 365)
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0][:64])]))
                .issuer_name(self.cert.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .add_extension(x509.SubjectAlternativeName(sans), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .add_extension(aki, critical=False)
                .sign(self.key, hashes.SHA256()))
        return (key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())
                + cert.public_bytes(serialization.Encoding.PEM) + self.cert.public_bytes(serialization.Encoding.PEM))


def _validity(b: Any, days: int) -> Any:
    import datetime

    now = datetime.datetime.now(datetime.timezone.utc)
    return b.not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=days))


def _load_pem_chain(ctx: ssl.SSLContext, pem: bytes, directory: str) -> None:
    """``load_cert_chain`` from memory: through a 0600 temporary file, removed at once."""
    fd, path = tempfile.mkstemp(prefix=".leaf-", suffix=".pem", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        ctx.load_cert_chain(path)
    finally:
        os.unlink(path)


# ------------------------------------------------------------------ contexts

class ServerTls:
    """The server side of the listeners: the certificate given (``--tls-cert/--tls-key``)
    or one per SNI name from the local CA; the SNI seen per connection."""

    def __init__(self, cfg: ProxyConfig, alpn: list[str], ca: LocalCA | None) -> None:
        self.alpn = alpn
        self.keylog = cfg.tls_keylog
        self.ca = None if cfg.tls_cert else ca
        self.contexts: OrderedDict[str, ssl.SSLContext] = OrderedDict()
        self.sni: weakref.WeakKeyDictionary[ssl.SSLObject, str] = weakref.WeakKeyDictionary()
        if cfg.tls_cert:
            self.default = self._context()
            self.default.load_cert_chain(cfg.tls_cert, cfg.tls_key or None, password=_no_password)
        else:
            names = ["localhost", "127.0.0.1", "::1", socket.gethostname()]
            names += [cfg.advertise] if cfg.advertise else []
            names += [m.listen[0] for m in cfg.mappings if m.listen[0] not in ("", "0.0.0.0", "::")]
            self.default = self._leaf_context(names)
        self.default.sni_callback = self._sni

    def _context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.alpn:
            ctx.set_alpn_protocols(self.alpn)
        if self.keylog:
            ctx.keylog_filename = self.keylog
        return ctx

    def _leaf_context(self, names: list[str]) -> ssl.SSLContext:
        assert self.ca is not None  # only with a local CA
        ctx = self._context()
        _load_pem_chain(ctx, self.ca.leaf(names), self.ca.dir)
        return ctx

    def _sni(self, obj: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> int | None:
        if not name:
            return None
        self.sni[obj] = name
        if self.ca is not None:
            ctx = self.contexts.get(name)
            if ctx is None:
                try:
                    ctx = self._leaf_context([name])
                except (ValueError, OSError, ssl.SSLError):  # a name no certificate can carry: the default one
                    return None
                self.contexts[name] = ctx
                while len(self.contexts) > MAX_SNI_CONTEXTS:
                    self.contexts.popitem(last=False)
            else:
                self.contexts.move_to_end(name)
            obj.context = ctx
        return None


def _no_password() -> str:
    """An encrypted key would make OpenSSL prompt on the terminal: refuse it instead."""
    raise ValueError("the key of --tls-cert is encrypted: give an unencrypted key (file mode 0600)")


def upstream_context(cfg: ProxyConfig, alpn: tuple[str, ...]) -> ssl.SSLContext:
    """The client side of upstream connections offering ``alpn``: verified against the
    system CAs or ``--upstream-ca`` unless ``--upstream-insecure``."""
    # not create_default_context: it opens $SSLKEYLOGFILE itself (a file OpenSSL would make 0644);
    # the key log is written only where --tls-keylog (which the CLI defaults to it) says
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the certificate and the host name
    if cfg.upstream_ca:
        ctx.load_verify_locations(cafile=cfg.upstream_ca)
    else:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    if cfg.upstream_insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cfg.tls_keylog:
        ctx.keylog_filename = cfg.tls_keylog
    return ctx


# ------------------------------------------------------------------ the TLS layer

class TlsLink(asyncio.Protocol):
    """The raw TCP side of a TLS connection: ciphertext to and from the socket, plaintext
    to and from ``app`` (a leg) through :attr:`transport`.  ``app`` is connected once the
    handshake is done; ``ready`` tells the outcome of the handshake."""

    def __init__(self, app: asyncio.Protocol, ctx: ssl.SSLContext, server_side: bool,
                 server_hostname: str | None = None, on_failure: Callable[[TlsLink, str], None] | None = None,
                 on_ready: Callable[[TlsLink], None] | None = None,
                 on_settled: Callable[[], None] | None = None) -> None:
        self.app = app
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.incoming, self.outgoing, server_side=server_side,
                                server_hostname=server_hostname)
        self.raw: asyncio.Transport | None = None
        self.transport = TlsTransport(self)
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.connected = False  # app.connection_made was called
        self.eof = False
        self.failure: str | None = None  # why the TLS layer ended the connection
        self.on_failure = on_failure
        self.on_ready = on_ready
        self.on_settled = on_settled  # called once the handshake is over, one way or another
        self.server_side = server_side

    # raw side
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.raw = cast(asyncio.Transport, transport)
        if not self.server_side:
            self._handshake()  # the ClientHello

    def data_received(self, data: bytes) -> None:
        self.incoming.write(data)
        if not self.connected:
            self._handshake()
            if not self.connected:
                return
        self._read()

    def eof_received(self) -> bool | None:
        self.incoming.write_eof()
        if self.connected and not self.eof:
            self.eof = True
            return self.app.eof_received()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.on_settled is not None:
            self.on_settled()
        if not self.ready.done():
            self.ready.set_exception(ConnectionResetError("connection closed during the TLS handshake"))
            self.ready.exception()  # retrieved: nobody may be waiting
        if self.connected:
            self.app.connection_lost(ConnectionResetError(self.failure) if self.failure and exc is None else exc)

    def pause_writing(self) -> None:
        if self.connected:
            self.app.pause_writing()

    def resume_writing(self) -> None:
        if self.connected:
            self.app.resume_writing()

    # TLS
    def _flush(self) -> None:
        out = self.outgoing.read()
        if out and self.raw is not None and not self.raw.is_closing():
            self.raw.write(out)

    def _handshake(self) -> None:
        try:
            self.obj.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return
        except (ssl.SSLError, OSError) as e:
            self._flush()
            self._fail(f"TLS handshake failed: {reason(e)}")
            return
        self._flush()
        self.connected = True
        if self.on_settled is not None:
            self.on_settled()
        if not self.ready.done():
            self.ready.set_result(None)
        if self.on_ready is not None:
            self.on_ready(self)
        self.app.connection_made(self.transport)

    def _fail(self, why: str) -> None:
        self.failure = why
        if self.on_settled is not None:
            self.on_settled()
        if not self.ready.done():
            self.ready.set_exception(ssl.SSLError(why))
            self.ready.exception()
        if self.on_failure is not None:
            self.on_failure(self, why)
        if self.raw is not None:
            self.raw.abort()

    def _read(self) -> None:
        obj, app = self.obj, self.app
        while True:
            try:
                chunk = obj.read(READ_CHUNK)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:  # close_notify
                chunk = b""
            except ssl.SSLError as e:
                self._flush()
                self._fail(f"TLS error: {reason(e)}")
                return
            if not chunk:
                self._flush()
                if not self.eof:
                    self.eof = True
                    if not app.eof_received():
                        self.transport.close()
                return
            app.data_received(chunk)
        self._flush()  # tickets, KeyUpdate answers

    def write(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        while view:
            try:
                n = self.obj.write(view)
            except ssl.SSLError as e:
                self._fail(f"TLS error: {reason(e)}")
                return
            view = view[n:]
        self._flush()


def tls_info(obj: ssl.SSLObject, sni: str | None) -> dict[str, Any]:
    """A terminated connection as the shared TLS description (``Connection.tls``): status,
    version ("TLS 1.3"), IANA cipher name, SNI and ALPN when known."""
    cipher = obj.cipher()
    info: dict[str, Any] = {"status": "decrypted", "version": (obj.version() or "").replace("TLSv", "TLS "),
                            "cipher": iana_cipher(cipher[0]) if cipher else "?"}
    if sni:
        info["sni"] = sni
    alpn = obj.selected_alpn_protocol()
    if alpn:
        info["alpn"] = alpn
    return info


def iana_cipher(name: str) -> str:
    """OpenSSL's name of a TLS 1.2 suite as IANA's (``ECDHE-RSA-AES128-GCM-SHA256`` ->
    ``TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256``); TLS 1.3 names are IANA's already; a shape
    not known here stays as OpenSSL names it."""
    if name.startswith("TLS_"):
        return name
    parts = name.split("-")
    at = next((i for i, p in enumerate(parts) if p.startswith(("AES1", "AES2", "CHACHA20"))), None)
    if at is None:
        return name
    kx = "_".join(parts[:at]) or "RSA"
    rest = parts[at:]
    if rest == ["CHACHA20", "POLY1305"]:
        bulk = "CHACHA20_POLY1305_SHA256"
    elif len(rest) == 3 and rest[1] == "GCM":
        bulk = f"AES_{rest[0][3:]}_GCM_{rest[2]}"
    elif len(rest) == 2 and rest[1].startswith("SHA"):
        bulk = f"AES_{rest[0][3:]}_CBC_{rest[1]}"
    else:
        return name
    return f"TLS_{kx}_WITH_{bulk}"


def reason(e: BaseException) -> str:
    """One line for a TLS failure."""
    if isinstance(e, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {e.verify_message}"
    if isinstance(e, ssl.SSLError) and e.reason:
        return e.reason.lower().replace("_", " ")
    return str(e) or type(e).__name__


class TlsTransport(asyncio.Transport):
    """What a leg sees of a TLS connection: plaintext in and out; flow control and
    addresses are the raw transport's."""

    def __init__(self, link: TlsLink) -> None:
        super().__init__()
        self._link = link

    def _raw(self) -> asyncio.Transport:
        raw = self._link.raw
        assert raw is not None  # the leg is connected after the raw transport
        return raw

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        obj = self._link.obj
        if name == "ssl_object":
            return obj
        if name == "cipher":
            return obj.cipher()
        return self._raw().get_extra_info(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._raw().is_closing():
            self._link.write(data)

    def can_write_eof(self) -> bool:
        return False  # a TLS stream has no half-close of its own

    def is_closing(self) -> bool:
        return self._raw().is_closing()

    def close(self) -> None:
        raw = self._raw()
        if raw.is_closing():
            return
        with contextlib.suppress(ssl.SSLError, OSError):
            self._link.obj.unwrap()  # close_notify
        self._link._flush()
        raw.close()

    def abort(self) -> None:
        self._raw().abort()

    def pause_reading(self) -> None:
        self._raw().pause_reading()

    def resume_reading(self) -> None:
        self._raw().resume_reading()

    def is_reading(self) -> bool:
        return self._raw().is_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._raw().set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self._raw().get_write_buffer_size()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._link.app = cast(asyncio.Protocol, protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._link.app


class TlsGate(asyncio.Protocol):
    """A TLS listener's connection until its first bytes: a ClientHello (``16 03 0x``)
    goes to a :class:`TlsLink`; plaintext goes straight to the leg (permissive) or is
    refused (enforcing).  ``note(counter, peer, why)`` counts each outcome (and reports
    a refused connection when ``why`` is given)."""

    def __init__(self, mode: str, make_leg: Callable[[], asyncio.Protocol], tls: ServerTls,
                 note: Callable[[str, str, str | None], None], unsettled: set[asyncio.Transport]) -> None:
        self.mode = mode
        self.make_leg = make_leg
        self.tls = tls
        self.note = note
        self.unsettled = unsettled  # connections not yet in a session (the proxy aborts them when stopping)
        self.raw: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.raw = cast(asyncio.Transport, transport)
        self.unsettled.add(self.raw)

    def data_received(self, data: bytes) -> None:
        raw = self.raw
        assert raw is not None  # connected first
        if data[0] == HANDSHAKE:
            link = TlsLink(self.make_leg(), self.tls.default, server_side=True,
                           on_failure=lambda lk, why: self.note("tls_failed", self._peer(), why),
                           on_ready=lambda lk: self.note("tls_client", self._peer(), None), on_settled=self._settled)
            self.timer = asyncio.get_running_loop().call_later(HANDSHAKE_TIMEOUT, self._expire, link)
            raw.set_protocol(link)
            link.connection_made(raw)
            link.data_received(data)
            return
        self._settled()
        if self.mode == PERMISSIVE:
            self.note("tls_plaintext_client", self._peer(), None)
            leg = self.make_leg()
            raw.set_protocol(leg)
            leg.connection_made(raw)
            leg.data_received(data)
        else:
            self.note("tls_refused", self._peer(), "plaintext connection refused (--tls enforcing)")
            raw.abort()

    def _settled(self) -> None:
        if self.raw is not None:
            self.unsettled.discard(self.raw)
        if self.timer is not None:
            self.timer.cancel()

    def _expire(self, link: TlsLink) -> None:
        if not link.connected:
            link._fail(f"TLS handshake not done after {HANDSHAKE_TIMEOUT:g} s")

    def _peer(self) -> str:
        from .config import endpoint_text

        peer = self.raw.get_extra_info("peername") if self.raw is not None else None
        return endpoint_text(tuple(peer[:2])) if peer else "?"

    def eof_received(self) -> bool | None:
        return None  # nothing was said: close

    def connection_lost(self, exc: Exception | None) -> None:
        self._settled()
