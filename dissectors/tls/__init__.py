"""TLS under RocketMQ: a passive, sans-I/O decryptor driven by an NSS key log.

* :mod:`.keylog` — NSS key log text (``SSLKEYLOGFILE``) into a store keyed by client random;
* :mod:`.records` — record framing per direction, bounded;
* :mod:`.handshake` — handshake message reassembly and the hello/extension parsers;
* :mod:`.keys` — cipher suites, TLS 1.3 HKDF-Expand-Label, TLS 1.2 PRF, record protection;
* :mod:`.connection` — :class:`TlsConnection`: both directions' ciphertext in, plaintext out.

The AEAD ciphers, HKDF and HMAC come from ``cryptography``; only the framing and the key
schedule glue are written here.
"""
from __future__ import annotations

from .connection import Plaintext, Problem, Status, TlsConnection, looks_tls
from .keylog import KeyLog

__all__ = ["KeyLog", "Plaintext", "Problem", "Status", "TlsConnection", "looks_tls"]
