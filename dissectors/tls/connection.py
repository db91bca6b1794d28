"""One TLS connection, passively decrypted: both directions' ciphertext in, plaintext out.

:class:`TlsConnection` is sans-I/O.  The caller feeds each direction's in-order bytes;
events come back:

* :class:`Plaintext` — application data of one direction, in order;
* :class:`Status` — the connection's TLS status changed (``decrypted``, ``no key (client
  random …)``, ``unsupported cipher …``, ``started mid-session``, ``decrypt failed at
  record N``);
* :class:`Problem` — something that could not be read (one line, decoding goes on where
  it can).

Secrets come from a :class:`~.keylog.KeyLog`; a connection whose key is missing keeps up
to ``hold`` bytes of records (all connections together at most the :class:`HoldBudget`) and
decrypts them if the key log grows in time
(a live tap re-reads it), otherwise it stays ``no key``.  TLS 1.3: handshake keys after
the ServerHello (HelloRetryRequest skipped), application keys after each side's
Finished, KeyUpdate.  TLS 1.2: keys at each side's ChangeCipherSpec from the master
secret logged for the client random, or — for a session resumed by id or ticket — the
master secret of the session it resumes.  Nothing here ever shows a secret.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag

from . import handshake as hs
from .keylog import KeyLog
from .keys import (
    TLS13,
    VERSION_NAMES,
    RecordCipher,
    Suite,
    cipher13,
    ciphers12,
    next_traffic_secret,
    suite_of,
)
from .records import ALERT, APPLICATION_DATA, CHANGE_CIPHER_SPEC, HANDSHAKE, Record, RecordReader, record_header_ok

MAX_PENDING = 256 * 1024  # record bytes a connection keeps while its key is missing (default hold)
MAX_HELD_TOTAL = 64 * 1024 * 1024  # record bytes all connections sharing a HoldBudget keep
MAX_RESUMABLE = 100_000  # session ids / tickets remembered for TLS 1.2 resumption

DECRYPTED = "decrypted"
MID_SESSION = "started mid-session"


@dataclass(slots=True)
class Plaintext:
    from_client: bool
    data: bytes
    start: int  # the record's span in its direction's ciphertext stream
    end: int


@dataclass(slots=True)
class Status:
    status: str


@dataclass(slots=True)
class Problem:
    from_client: bool
    reason: str


Event = Plaintext | Status | Problem


def looks_tls(data: bytes) -> bool:
    """The first bytes of a direction are a TLS record header."""
    return record_header_ok(data)


class Resumable:
    """TLS 1.2 master secrets by session id and by ticket, learnt from connections seen."""

    __slots__ = ("by_id",)

    def __init__(self) -> None:
        self.by_id: dict[bytes, bytes] = {}

    def add(self, key: bytes, master: bytes) -> None:
        if key and (key in self.by_id or len(self.by_id) < MAX_RESUMABLE):
            self.by_id[key] = master


class HoldBudget:
    """Record bytes the connections that share it may hold, together, while keys are missing."""

    __slots__ = ("left",)

    def __init__(self, total: int = MAX_HELD_TOTAL) -> None:
        self.left = total


class _Dir:
    __slots__ = ("reader", "hs_plain", "hs_enc", "protected", "cipher", "want", "pending", "secret", "app")

    def __init__(self) -> None:
        self.reader = RecordReader()
        self.hs_plain = hs.HandshakeReader()
        self.hs_enc = hs.HandshakeReader()
        self.protected = False  # records are encrypted from now on
        self.cipher: RecordCipher | None = None
        self.want: Callable[[], RecordCipher | None] | None = None  # builds the cipher once keys exist
        self.pending: list[Record] = []
        self.secret = b""  # TLS 1.3: the current traffic secret
        self.app = False  # TLS 1.3: application keys (after this side's Finished)


class TlsConnection:
    """Passive TLS 1.2 / 1.3 decryption of one connection."""

    def __init__(self, keylog: KeyLog, resumable: Resumable | None = None, *, hold: int = MAX_PENDING,
                 budget: HoldBudget | None = None) -> None:
        self.keylog = keylog
        self.resumable = resumable if resumable is not None else Resumable()
        self.dirs = {True: _Dir(), False: _Dir()}
        self.ch: hs.ClientHello | None = None
        self.sh: hs.ServerHello | None = None
        self.suite: Suite | None = None
        self.version = ""  # "TLS 1.2" / "TLS 1.3" once the ServerHello is seen
        self.sni: str | None = None
        self.alpn: str | None = None
        self.status = ""
        self.records = 0  # records seen, both directions
        self.dead = False  # nothing more is decrypted (the status says why)
        self.master = b""  # TLS 1.2
        self.pending_bytes = 0
        self.hold = hold  # record bytes kept while a key is missing (0: none, the key log is complete)
        self.budget = budget if budget is not None else HoldBudget()
        self.retried = False  # a HelloRetryRequest was seen
        self.key_updates = 0
        self._kl_version = -1
        self._out: list[Event] = []

    # ------------------------------------------------------------------ info
    @property
    def cipher(self) -> str:
        return self.suite.name if self.suite is not None else ""

    @property
    def client_random(self) -> bytes:
        return self.ch.random if self.ch is not None else b""

    def info(self) -> dict[str, Any]:
        """Status, version, cipher, SNI and ALPN (what is known)."""
        d: dict[str, Any] = {"status": self.status or "handshake"}
        for k, v in (("version", self.version), ("cipher", self.cipher), ("sni", self.sni), ("alpn", self.alpn)):
            if v:
                d[k] = v
        if self.ch is not None:
            d["client_random"] = self.ch.random.hex()  # public (in the ClientHello): names the key log line
        return d

    # ----------------------------------------------------------------- input
    def data(self, from_client: bool, data: bytes) -> list[Event]:
        """In-order bytes of one direction."""
        out = self._out = []
        d = self.dirs[from_client]
        if d.reader.broken:
            return out
        recs = d.reader.feed(data)
        if self._kl_version != self.keylog.version:
            self._retry_keys()
        for rec in recs:
            self._record(from_client, d, rec)
        if d.reader.broken:
            if not self.status and self.ch is None and self.sh is None:
                self._set_status(MID_SESSION)
            self._problem(from_client, d.reader.broken)
        return out

    def lost(self, from_client: bool) -> list[Event]:
        """Bytes of one direction are missing: record boundaries and sequence numbers are gone."""
        out = self._out = []
        if not self.dead and (self.ch is not None or self.sh is not None):
            self._problem(from_client, f"bytes missing from the capture after record {self.records}")
            self._fail(f"decrypt failed at record {self.records + 1}")
        self.dirs[from_client].reader.broken = "gap in the capture"
        return out

    def close(self) -> list[Event]:
        """End of the connection: a key still missing makes the status final."""
        out = self._out = []
        if self._kl_version != self.keylog.version:
            self._retry_keys()
        self._release()
        return out

    def swap(self) -> None:
        d = self.dirs
        d[True], d[False] = d[False], d[True]

    # ----------------------------------------------------------------- records
    def _record(self, fc: bool, d: _Dir, rec: Record) -> None:
        self.records += 1
        if self.dead:
            return
        typ = rec.type
        if d.protected and (typ == APPLICATION_DATA or self.version != "TLS 1.3") and typ != CHANGE_CIPHER_SPEC:
            if d.cipher is None:
                self._hold(d, rec)
                return
            self._decrypt(fc, d, rec)
            return
        if typ == HANDSHAKE:
            try:
                for mt, body in d.hs_plain.feed(rec.fragment):
                    self._handshake(fc, mt, body)
            except hs.HandshakeError as e:
                if self.ch is None:
                    self._set_status(MID_SESSION)
                    self.dead = True
                else:
                    self._problem(fc, f"handshake: {e}")
        elif typ == CHANGE_CIPHER_SPEC:
            if self.sh is not None and self.version != "TLS 1.3":
                d.protected = True
                d.want = self._want12(fc)
                d.cipher = d.want()
                if d.cipher is None:
                    self._no_key()
        elif typ == APPLICATION_DATA:
            if self.ch is None or self.sh is None:
                self._set_status(MID_SESSION)
                self.dead = True
        elif typ == ALERT and self.sh is None and self.ch is None:
            self._set_status(MID_SESSION)
            self.dead = True

    def _decrypt(self, fc: bool, d: _Dir, rec: Record) -> None:
        assert d.cipher is not None
        try:
            pt = d.cipher.decrypt(rec.header, rec.fragment)
        except (InvalidTag, ValueError):
            self._fail(f"decrypt failed at record {self.records}")
            return
        if self.status != DECRYPTED:
            self._set_status(DECRYPTED)
        typ = rec.type
        if d.cipher.tls13:  # the real type is the last non-zero byte (zero padding after it)
            end = len(pt)
            if end and pt[end - 1]:
                typ = pt[end - 1]
            else:
                while end and not pt[end - 1]:
                    end -= 1
                if not end:
                    self._problem(fc, f"record {self.records}: no content type")
                    return
                typ = pt[end - 1]
            pt = pt[:end - 1]
        if typ == APPLICATION_DATA:
            if pt:
                self._out.append(Plaintext(fc, pt, rec.offset, rec.offset + 5 + len(rec.fragment)))
        elif typ == HANDSHAKE:
            try:
                for mt, body in d.hs_enc.feed(pt):
                    self._encrypted_handshake(fc, d, mt, body)
            except hs.HandshakeError as e:
                self._problem(fc, f"handshake: {e}")

    def _hold(self, d: _Dir, rec: Record) -> None:
        """A record whose key is missing: kept (bounded) in case the key log grows."""
        if d.want is None:
            return
        n = len(rec.fragment) + 5
        if self.pending_bytes + n > self.hold or n > self.budget.left:
            for x in self.dirs.values():
                x.want = None
            self._release()
            self.dead = True
            return
        self.pending_bytes += n
        self.budget.left -= n
        d.pending.append(rec)

    def _release(self) -> None:
        """Held records are dropped (or were decrypted): their bytes go back to the budget."""
        for d in self.dirs.values():
            d.pending.clear()
        self.budget.left += self.pending_bytes
        self.pending_bytes = 0

    def _retry_keys(self) -> None:
        self._kl_version = self.keylog.version
        for fc in (True, False):
            d = self.dirs[fc]
            if d.cipher is None and d.want is not None:
                d.cipher = d.want()
                if d.cipher is not None:
                    held, d.pending = d.pending, []
                    for rec in held:
                        if self.dead:
                            break
                        if d.cipher is None:  # the next key (after Finished) is missing too
                            d.pending.append(rec)
                        else:
                            self._decrypt(fc, d, rec)
        if not any(d.pending for d in self.dirs.values()):
            self._release()

    # -------------------------------------------------------------- handshake
    def _handshake(self, fc: bool, mt: int, body: bytes) -> None:
        if mt == hs.CLIENT_HELLO and fc:
            ch = hs.parse_client_hello(body)
            if self.ch is None:  # the second ClientHello after a HelloRetryRequest keeps the random
                self.ch = ch
                self.sni = ch.sni
        elif mt == hs.SERVER_HELLO and not fc:
            sh = hs.parse_server_hello(body)
            if sh.retry:
                self.retried = True
                return
            if self.ch is None:
                self._set_status(MID_SESSION)
                self.dead = True
                return
            self._server_hello(sh)
        elif mt == hs.NEW_SESSION_TICKET and not fc and self.master:
            self.resumable.add(hs.parse_ticket12(body), self.master)

    def _server_hello(self, sh: hs.ServerHello) -> None:
        self.sh = sh
        self.version = VERSION_NAMES.get(sh.version, f"0x{sh.version:04X}")
        self.suite = suite = suite_of(sh.cipher)
        if sh.alpn:
            self.alpn = sh.alpn
        if not suite.aead or sh.version not in (0x0303, TLS13) or suite.tls13 != (sh.version == TLS13):
            self._set_status(f"unsupported cipher {suite.name}")
            self.dead = True
            return
        if sh.version == TLS13:
            for fc, label in ((True, "CLIENT_HANDSHAKE_TRAFFIC_SECRET"), (False, "SERVER_HANDSHAKE_TRAFFIC_SECRET")):
                d = self.dirs[fc]
                d.protected = True
                d.want = self._want13(d, label)
                d.cipher = d.want()
                if d.cipher is None:
                    self._no_key()

    def _encrypted_handshake(self, fc: bool, d: _Dir, mt: int, body: bytes) -> None:
        if mt == hs.ENCRYPTED_EXTENSIONS and not fc:
            alpn = hs.parse_encrypted_extensions(body)
            if alpn:
                self.alpn = alpn
        elif mt == hs.FINISHED and self.version == "TLS 1.3" and not d.app:
            d.app = True
            label = "CLIENT_TRAFFIC_SECRET_0" if fc else "SERVER_TRAFFIC_SECRET_0"
            d.want = self._want13(d, label)
            d.cipher = d.want()
            if d.cipher is None:
                self._no_key()
        elif mt == hs.KEY_UPDATE and self.suite is not None and d.cipher is not None:
            self.key_updates += 1
            d.secret = next_traffic_secret(d.secret, self.suite)
            d.cipher = cipher13(self.suite, d.secret)

    def _want13(self, d: _Dir, label: str) -> Callable[[], RecordCipher | None]:
        def want() -> RecordCipher | None:
            secret = self.keylog.get(self.client_random, label)
            if secret is None or self.suite is None:
                return None
            d.secret = secret
            return cipher13(self.suite, secret)
        return want

    def _want12(self, fc: bool) -> Callable[[], RecordCipher | None]:
        def want() -> RecordCipher | None:
            master = self.master or self._master12()
            if not master or self.suite is None or self.ch is None or self.sh is None:
                return None
            self.master = master
            self.resumable.add(self.sh.session_id, master)
            return ciphers12(self.suite, master, self.ch.random, self.sh.random)[0 if fc else 1]
        return want

    def _master12(self) -> bytes:
        ch, sh = self.ch, self.sh
        assert ch is not None and sh is not None
        m = self.keylog.get(ch.random, "CLIENT_RANDOM")
        if m is None and ch.ticket:
            m = self.resumable.by_id.get(ch.ticket)
        if m is None and sh.session_id and sh.session_id == ch.session_id:
            m = self.resumable.by_id.get(sh.session_id)
        if m is None and sh.session_id:  # "RSA Session-ID:" key log lines: by the session the server named
            m = self.keylog.by_session.get(sh.session_id)
            if m is not None:
                self.keylog.learn(ch.random, m)
        return m or b""

    # ------------------------------------------------------------------ status
    def _no_key(self) -> None:
        if not self.status.startswith("no key"):
            self._set_status(f"no key (client random {self.client_random.hex()})")

    def _fail(self, status: str) -> None:
        self._set_status(status)
        self.dead = True
        self._release()

    def _set_status(self, status: str) -> None:
        if status != self.status:
            self.status = status
            self._out.append(Status(status))

    def _problem(self, fc: bool, reason: str) -> None:
        self._out.append(Problem(fc, f"tls: {reason}"))
