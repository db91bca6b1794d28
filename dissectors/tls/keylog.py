"""NSS key log text (what ``SSLKEYLOGFILE`` writers produce) into secrets by client random.

One secret per line, ``LABEL <client random, 64 hex> <secret hex>``; ``#`` lines are comments.
The older OpenSSL form ``RSA Session-ID:<hex> Master-Key:<hex>`` (a TLS 1.2 master secret by
session id, what the ``extract-tls-secrets`` Java agent writes for TLS 1.2) is read too.
:meth:`KeyLog.feed` takes text as it grows (a partial last line waits for the rest), so a
key log being written can be re-read.  Lines that are not secrets are counted with a
one-line reason, never fatal.  Secrets are never part of any text this module produces.
"""
from __future__ import annotations

import binascii

LABELS = frozenset({
    "CLIENT_RANDOM",  # TLS 1.2 master secret
    "CLIENT_EARLY_TRAFFIC_SECRET", "CLIENT_HANDSHAKE_TRAFFIC_SECRET", "SERVER_HANDSHAKE_TRAFFIC_SECRET",
    "CLIENT_TRAFFIC_SECRET_0", "SERVER_TRAFFIC_SECRET_0", "EXPORTER_SECRET", "EARLY_EXPORTER_SECRET",
})
MAX_SESSIONS = 1_000_000  # client randoms kept; later ones are counted as dropped
MAX_LINE = 1024  # a longer line is garbage (a real one is under 250 characters)
MAX_PROBLEMS = 100  # reasons kept (all are counted)


class KeyLog:
    """Secrets by client random, fed incrementally."""

    __slots__ = ("secrets", "by_session", "lines", "bad", "problems", "_tail", "version")

    def __init__(self) -> None:
        self.secrets: dict[bytes, dict[str, bytes]] = {}  # client random -> label -> secret
        self.by_session: dict[bytes, bytes] = {}  # TLS 1.2 session id -> master secret ("RSA Session-ID:")
        self.lines = 0  # lines read
        self.bad = 0  # lines that were not a secret nor a comment
        self.problems: list[str] = []  # "line N: reason", the first MAX_PROBLEMS
        self._tail = ""
        self.version = 0  # bumped when a secret is added (a waiting connection looks again)

    def feed(self, text: str) -> int:
        """More key log text; returns the secrets it added.  A last line without its newline
        is kept until the rest arrives (or :meth:`end`)."""
        text = self._tail + text
        lines = text.split("\n")
        self._tail = lines.pop()
        if len(self._tail) > MAX_LINE:
            self._line(self._tail)
            self._tail = ""
        return sum(self._line(ln) for ln in lines)

    def end(self) -> int:
        """The text is complete: a last line without a newline counts too."""
        tail, self._tail = self._tail, ""
        return self._line(tail) if tail.strip() else 0

    def _line(self, line: str) -> int:
        self.lines += 1
        line = line.strip()
        if not line or line.startswith("#"):
            return 0
        if len(line) > MAX_LINE:
            return self._bad(f"longer than {MAX_LINE} characters")
        parts = line.split()
        if parts[0] == "RSA" and len(parts) == 3 and parts[1].startswith("Session-ID:"):
            return self._session_line(parts[1][len("Session-ID:"):], parts[2])
        if len(parts) != 3:
            return self._bad(f"{len(parts)} fields, expected LABEL CLIENT_RANDOM SECRET")
        label, cr_hex, secret_hex = parts
        if label not in LABELS:
            return self._bad("unknown label" if label.isidentifier() else "not a key log line")
        if len(cr_hex) != 64:
            return self._bad(f"{label}: client random of {len(cr_hex)} hex digits, expected 64")
        try:
            cr = binascii.unhexlify(cr_hex)
            secret = binascii.unhexlify(secret_hex)
        except (binascii.Error, ValueError):
            return self._bad(f"{label}: not hex")
        if not 16 <= len(secret) <= 64:
            return self._bad(f"{label}: secret of {len(secret)} bytes")
        entry = self.secrets.get(cr)
        if entry is None:
            if len(self.secrets) >= MAX_SESSIONS:
                return self._bad(f"more than {MAX_SESSIONS} sessions: dropped")
            entry = self.secrets[cr] = {}
        if entry.get(label) == secret:
            return 0
        entry[label] = secret
        self.version += 1
        return 1

    def _session_line(self, sid_hex: str, master_field: str) -> int:
        if not master_field.startswith("Master-Key:"):
            return self._bad("RSA Session-ID line without Master-Key:")
        try:
            sid = binascii.unhexlify(sid_hex)
            master = binascii.unhexlify(master_field[len("Master-Key:"):])
        except (binascii.Error, ValueError):
            return self._bad("RSA Session-ID: not hex")
        if not 1 <= len(sid) <= 32 or len(master) != 48:
            return self._bad(f"RSA Session-ID: session id of {len(sid)} bytes, master secret of {len(master)}")
        if self.by_session.get(sid) == master:
            return 0
        if sid not in self.by_session and len(self.by_session) >= MAX_SESSIONS:
            return self._bad(f"more than {MAX_SESSIONS} sessions: dropped")
        self.by_session[sid] = master
        self.version += 1
        return 1

    def learn(self, client_random: bytes, master: bytes) -> None:
        """Note the TLS 1.2 master secret a connection found by its session id under its client
        random too, so :meth:`lines_for` gives it as a ``CLIENT_RANDOM`` line."""
        entry = self.secrets.get(client_random)
        if entry is None:
            if len(self.secrets) >= MAX_SESSIONS:
                return
            entry = self.secrets[client_random] = {}
        entry.setdefault("CLIENT_RANDOM", master)

    def _bad(self, reason: str) -> int:
        self.bad += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(f"key log line {self.lines}: {reason}")
        return 0

    def get(self, client_random: bytes, label: str) -> bytes | None:
        entry = self.secrets.get(client_random)
        return None if entry is None else entry.get(label)

    def lines_for(self, client_randoms: set[bytes]) -> str:
        """The key log lines of these sessions (for a pcapng Decryption Secrets Block)."""
        out = []
        for cr in sorted(client_randoms):
            for label, secret in sorted(self.secrets.get(cr, {}).items()):
                out.append(f"{label} {cr.hex()} {secret.hex()}\n")
        return "".join(out)
