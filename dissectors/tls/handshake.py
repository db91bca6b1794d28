"""TLS handshake messages: reassembly over records and the few fields a decryptor needs.

Handshake messages (``type(1) length(3) body``) may be split over records and several may
share one; :class:`HandshakeReader` puts them back together, bounded by
:data:`MAX_HANDSHAKE_MESSAGE`.  The parsers read ClientHello (random, session id, SNI,
ALPN, supported_versions, session ticket), ServerHello (random, version, cipher suite,
session id, ALPN, HelloRetryRequest), EncryptedExtensions (ALPN) and the TLS 1.2
NewSessionTicket.  A malformed message raises :class:`HandshakeError`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

CLIENT_HELLO = 1
SERVER_HELLO = 2
NEW_SESSION_TICKET = 4
ENCRYPTED_EXTENSIONS = 8
FINISHED = 20
KEY_UPDATE = 24
MAX_HANDSHAKE_MESSAGE = 256 * 1024  # certificate chains fit; a larger message is an error

EXT_SERVER_NAME = 0
EXT_ALPN = 16
EXT_SESSION_TICKET = 35
EXT_SUPPORTED_VERSIONS = 43
# ServerHello.random of a HelloRetryRequest: SHA-256("HelloRetryRequest") (RFC 8446 4.1.3)
HRR_RANDOM = bytes.fromhex("cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c")


class HandshakeError(ValueError):
    """A handshake message that does not parse."""


class HandshakeReader:
    """Whole handshake messages out of one direction's handshake-type plaintext."""

    __slots__ = ("buf",)

    def __init__(self) -> None:
        self.buf = b""

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buf = self.buf + data if self.buf else data
        out = []
        pos, n = 0, len(buf)
        while n - pos >= 4:
            length = int.from_bytes(buf[pos + 1:pos + 4], "big")
            if length > MAX_HANDSHAKE_MESSAGE:
                self.buf = b""
                raise HandshakeError(f"handshake message of {length} bytes (over {MAX_HANDSHAKE_MESSAGE})")
            if pos + 4 + length > n:
                break
            out.append((buf[pos], buf[pos + 4:pos + 4 + length]))
            pos += 4 + length
        self.buf = buf[pos:]
        return out


class _Cursor:
    __slots__ = ("b", "p")

    def __init__(self, b: bytes) -> None:
        self.b, self.p = b, 0

    def take(self, n: int) -> bytes:
        if self.p + n > len(self.b):
            raise HandshakeError("message shorter than its fields")
        v = self.b[self.p:self.p + n]
        self.p += n
        return v

    def u(self, n: int) -> int:
        return int.from_bytes(self.take(n), "big")

    def vec(self, n: int) -> bytes:
        return self.take(self.u(n))

    @property
    def left(self) -> int:
        return len(self.b) - self.p


@dataclass(slots=True)
class ClientHello:
    random: bytes
    session_id: bytes
    sni: str | None = None
    alpn: list[str] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)
    ticket: bytes = b""


@dataclass(slots=True)
class ServerHello:
    random: bytes
    session_id: bytes
    version: int  # the negotiated version (supported_versions when present)
    cipher: int
    alpn: str | None = None

    @property
    def retry(self) -> bool:
        """A HelloRetryRequest (TLS 1.3)."""
        return self.random == HRR_RANDOM


def _extensions(c: _Cursor) -> dict[int, bytes]:
    if not c.left:
        return {}
    ext = _Cursor(c.vec(2))
    out = {}
    while ext.left:
        t = ext.u(2)
        out[t] = ext.vec(2)
    return out


def _alpn(data: bytes) -> list[str]:
    c = _Cursor(data)
    names = _Cursor(c.vec(2))
    out = []
    while names.left:
        out.append(names.vec(1).decode("ascii", "replace"))
    return out


def _sni(data: bytes) -> str | None:
    c = _Cursor(_Cursor(data).vec(2))
    while c.left:
        kind = c.u(1)
        name = c.vec(2)
        if kind == 0:
            return name.decode("ascii", "replace")
    return None


def parse_client_hello(body: bytes) -> ClientHello:
    c = _Cursor(body)
    c.take(2)
    ch = ClientHello(c.take(32), c.vec(1))
    c.vec(2)  # cipher suites
    c.vec(1)  # compression methods
    ext = _extensions(c)
    if EXT_SERVER_NAME in ext:
        ch.sni = _sni(ext[EXT_SERVER_NAME])
    if EXT_ALPN in ext:
        ch.alpn = _alpn(ext[EXT_ALPN])
    if EXT_SUPPORTED_VERSIONS in ext:
        v = _Cursor(_Cursor(ext[EXT_SUPPORTED_VERSIONS]).vec(1))
        while v.left >= 2:
            ch.versions.append(v.u(2))
    ch.ticket = ext.get(EXT_SESSION_TICKET, b"")
    return ch


def parse_server_hello(body: bytes) -> ServerHello:
    c = _Cursor(body)
    legacy = c.u(2)
    sh = ServerHello(c.take(32), c.vec(1), legacy, 0)
    sh.cipher = c.u(2)
    c.take(1)
    ext = _extensions(c)
    sv = ext.get(EXT_SUPPORTED_VERSIONS)
    if sv is not None and len(sv) == 2:
        sh.version = int.from_bytes(sv, "big")
    if EXT_ALPN in ext:
        names = _alpn(ext[EXT_ALPN])
        sh.alpn = names[0] if names else None
    return sh


def parse_encrypted_extensions(body: bytes) -> str | None:
    """The ALPN protocol a TLS 1.3 server chose, if any."""
    ext = _extensions(_Cursor(body))
    if EXT_ALPN in ext:
        names = _alpn(ext[EXT_ALPN])
        return names[0] if names else None
    return None


def parse_ticket12(body: bytes) -> bytes:
    """The ticket of a TLS 1.2 NewSessionTicket."""
    c = _Cursor(body)
    c.take(4)
    return c.vec(2)
