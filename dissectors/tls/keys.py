"""Cipher suites, key schedules and record protection (TLS 1.2 and 1.3, AEAD suites).

* TLS 1.3: key and IV from a traffic secret with HKDF-Expand-Label (RFC 8446 7.1, 7.3);
  KeyUpdate's next secret; nonce = IV xor the record sequence number.
* TLS 1.2: the key block from the master secret with the PRF (RFC 5246 5, 6.3); AES-GCM
  (RFC 5288: 4-byte salt + 8-byte explicit nonce) and ChaCha20-Poly1305 (RFC 7905).
CBC suites are named but not decrypted (``unsupported cipher``).  The primitives are the
``cryptography`` package's.
"""
from __future__ import annotations

import hmac
import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

TLS12 = 0x0303
TLS13 = 0x0304
VERSION_NAMES = {0x0301: "TLS 1.0", 0x0302: "TLS 1.1", TLS12: "TLS 1.2", TLS13: "TLS 1.3"}


@dataclass(frozen=True, slots=True)
class Suite:
    name: str  # the IANA name
    aead: str  # "aes-gcm", "chacha20-poly1305" or "" (not supported)
    key_len: int
    hash: str  # "sha256" / "sha384"
    tls13: bool = False

    @property
    def hash_len(self) -> int:
        return 48 if self.hash == "sha384" else 32


def _s(name: str, aead: str = "", key: int = 16, tls13: bool = False) -> Suite:
    return Suite(name, aead, key, "sha384" if name.endswith("SHA384") else "sha256", tls13)


SUITES: dict[int, Suite] = {
    0x1301: _s("TLS_AES_128_GCM_SHA256", "aes-gcm", 16, True),
    0x1302: _s("TLS_AES_256_GCM_SHA384", "aes-gcm", 32, True),
    0x1303: _s("TLS_CHACHA20_POLY1305_SHA256", "chacha20-poly1305", 32, True),
    0x1304: _s("TLS_AES_128_CCM_SHA256", tls13=True),
    0x1305: _s("TLS_AES_128_CCM_8_SHA256", tls13=True),
    0x009C: _s("TLS_RSA_WITH_AES_128_GCM_SHA256", "aes-gcm", 16),
    0x009D: _s("TLS_RSA_WITH_AES_256_GCM_SHA384", "aes-gcm", 32),
    0x009E: _s("TLS_DHE_RSA_WITH_AES_128_GCM_SHA256", "aes-gcm", 16),
    0x009F: _s("TLS_DHE_RSA_WITH_AES_256_GCM_SHA384", "aes-gcm", 32),
    0xC02B: _s("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "aes-gcm", 16),
    0xC02C: _s("TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", "aes-gcm", 32),
    0xC02F: _s("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "aes-gcm", 16),
    0xC030: _s("TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", "aes-gcm", 32),
    0xCCA8: _s("TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256", "chacha20-poly1305", 32),
    0xCCA9: _s("TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", "chacha20-poly1305", 32),
    0xCCAA: _s("TLS_DHE_RSA_WITH_CHACHA20_POLY1305_SHA256", "chacha20-poly1305", 32),
    0x002F: _s("TLS_RSA_WITH_AES_128_CBC_SHA"),
    0x0035: _s("TLS_RSA_WITH_AES_256_CBC_SHA"),
    0x003C: _s("TLS_RSA_WITH_AES_128_CBC_SHA256"),
    0xC009: _s("TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA"),
    0xC00A: _s("TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA"),
    0xC013: _s("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA"),
    0xC014: _s("TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA"),
    0xC023: _s("TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256"),
    0xC027: _s("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256"),
}


def suite_of(code: int) -> Suite:
    return SUITES.get(code) or Suite(f"0x{code:04X}", "", 0, "sha256")


def _hash(name: str) -> hashes.HashAlgorithm:
    return hashes.SHA384() if name == "sha384" else hashes.SHA256()


def hkdf_expand_label(secret: bytes, label: str, context: bytes, length: int, hash_name: str) -> bytes:
    """HKDF-Expand-Label (RFC 8446 7.1)."""
    full = b"tls13 " + label.encode()
    info = struct.pack("!HB", length, len(full)) + full + bytes([len(context)]) + context
    return HKDFExpand(_hash(hash_name), length, info).derive(secret)


def next_traffic_secret(secret: bytes, suite: Suite) -> bytes:
    """The traffic secret after a KeyUpdate (RFC 8446 7.2)."""
    return hkdf_expand_label(secret, "traffic upd", b"", suite.hash_len, suite.hash)


def prf12(secret: bytes, label: bytes, seed: bytes, length: int, hash_name: str) -> bytes:
    """The TLS 1.2 PRF, P_<hash>(secret, label + seed) (RFC 5246 5)."""
    seed = label + seed
    out = b""
    a = seed
    while len(out) < length:
        a = hmac.digest(secret, a, hash_name)
        out += hmac.digest(secret, a + seed, hash_name)
    return out[:length]


def _aead(suite: Suite, key: bytes) -> AESGCM | ChaCha20Poly1305:
    return AESGCM(key) if suite.aead == "aes-gcm" else ChaCha20Poly1305(key)


class RecordCipher:
    """Record protection of one direction under one key: decrypts its records in order."""

    __slots__ = ("aead", "iv", "iv_int", "seq", "tls13", "explicit")

    def __init__(self, suite: Suite, key: bytes, iv: bytes, tls13: bool) -> None:
        self.aead = _aead(suite, key)
        self.iv = iv  # 12 bytes (TLS 1.3, ChaCha20), or the 4-byte GCM salt (TLS 1.2)
        self.iv_int = int.from_bytes(iv, "big")
        self.seq = 0
        self.tls13 = tls13
        self.explicit = not tls13 and suite.aead == "aes-gcm"

    def decrypt(self, header: bytes, fragment: bytes) -> bytes:
        """The plaintext of one record (raises ``cryptography.exceptions.InvalidTag``)."""
        seq = self.seq
        self.seq = seq + 1
        if self.tls13:
            return self.aead.decrypt((self.iv_int ^ seq).to_bytes(12, "big"), fragment, header)
        if self.explicit:
            nonce = self.iv + fragment[:8]
            body = fragment[8:]
        else:
            nonce = (self.iv_int ^ seq).to_bytes(12, "big")
            body = fragment
        aad = struct.pack("!QBHH", seq, header[0], (header[1] << 8) | header[2], max(len(body) - 16, 0))
        return self.aead.decrypt(nonce, body, aad)


def cipher13(suite: Suite, secret: bytes) -> RecordCipher:
    """A TLS 1.3 direction's record protection from its traffic secret."""
    key = hkdf_expand_label(secret, "key", b"", suite.key_len, suite.hash)
    iv = hkdf_expand_label(secret, "iv", b"", 12, suite.hash)
    return RecordCipher(suite, key, iv, True)


def ciphers12(suite: Suite, master: bytes, client_random: bytes, server_random: bytes
              ) -> tuple[RecordCipher, RecordCipher]:
    """(client's, server's) TLS 1.2 record protection from the master secret."""
    iv_len = 4 if suite.aead == "aes-gcm" else 12
    k = suite.key_len
    block = prf12(master, b"key expansion", server_random + client_random, 2 * (k + iv_len), suite.hash)
    ck, sk = block[:k], block[k:2 * k]
    civ, siv = block[2 * k:2 * k + iv_len], block[2 * k + iv_len:2 * (k + iv_len)]
    return RecordCipher(suite, ck, civ, False), RecordCipher(suite, sk, siv, False)
