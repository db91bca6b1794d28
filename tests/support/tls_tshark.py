"""Wireshark's view of a TLS capture and its key log: an independent check (not rmqsniff's
code) that the key log really decrypts every connection, and the plaintext it yields.

``tls_connections`` lists each TCP stream that starts with a ClientHello, with its client
random, version, cipher and whether its Finished message decrypted (both TLS 1.2 and 1.3
send Finished encrypted, so tshark shows it only with the right secrets). ``plaintext``
returns the decrypted application data per stream and direction (``follow,tls,raw``).
"""
from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tests.rocketmq.tls import keylog_sessions

VERSIONS = {"0x0303": "TLS 1.2", "0x0304": "TLS 1.3"}
CIPHERS = {"0x1301": "TLS_AES_128_GCM_SHA256", "0x1302": "TLS_AES_256_GCM_SHA384",
           "0x1303": "TLS_CHACHA20_POLY1305_SHA256",
           "0xc02f": "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "0xc030": "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
           "0xcca8": "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"}
HANDSHAKE_FINISHED = "20"


@dataclass
class TlsConnection:
    stream: int
    client_port: int = 0
    server_port: int = 0
    client_random: str = ""
    session_id: str = ""  # the ServerHello's (TLS 1.2 key logs may name sessions by it)
    version: str = ""
    cipher: str = ""
    alpn: str = ""
    finished: int = 0  # Finished messages tshark decrypted (2 when both sides' secrets are right)
    app_records: int = 0
    handshake_types: list[str] = field(default_factory=list)

    @property
    def decrypted(self) -> bool:
        return self.finished >= 2

    def key_id(self, ids: set[str]) -> str:
        """How a key log names this session: its client random, else its session id."""
        return self.client_random if self.client_random in ids or self.session_id not in ids else self.session_id


def key_ids(keylog: Path) -> set[str]:
    """The sessions a key log has secrets for, lower-case hex: client randoms, and the session
    ids of ``RSA Session-ID:<id> Master-Key:<secret>`` lines (extract-tls-secrets' TLS 1.2 form)."""
    return {s.lower() for s in keylog_sessions(keylog.read_text())}


def tshark() -> str | None:
    return shutil.which("tshark")


def _run(pcap: Path, keylog: Path | None, *args: str) -> str:
    exe = tshark()
    assert exe, "tshark not found"
    opts = ["-o", f"tls.keylog_file:{keylog}"] if keylog else ["-o", "tls.keylog_file:"]
    proc = subprocess.run([exe, "-n", "-r", str(pcap), *opts, *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def tls_connections(pcap: Path, keylog: Path | None) -> dict[int, TlsConnection]:
    """Every TCP stream of ``pcap`` that carries a ClientHello, as tshark decrypts it with ``keylog``."""
    fields = ["tcp.stream", "tcp.srcport", "tcp.dstport", "tls.handshake.type", "tls.handshake.random",
              "tls.handshake.session_id",
              "tls.handshake.extensions.supported_version", "tls.handshake.version",
              "tls.handshake.ciphersuite", "tls.handshake.extensions_alpn_str", "tls.record.content_type"]
    out = _run(pcap, keylog, "-Y", "tls", "-T", "fields", "-E", "separator=\t", "-E", "occurrence=a",
               "-E", "aggregator=,", *(x for f in fields for x in ("-e", f)))
    conns: dict[int, TlsConnection] = {}
    for line in out.splitlines():
        cols = (line.split("\t") + [""] * len(fields))[:len(fields)]
        stream, sport, dport, types, randoms, sids, sv, hv, suites, alpn, ctypes = cols
        kinds = [t for t in types.split(",") if t]
        c = conns.get(int(stream))
        if "1" in kinds and c is None:  # ClientHello: the client's port and random
            c = conns[int(stream)] = TlsConnection(int(stream), int(sport), int(dport),
                                                   randoms.split(",")[0].replace(":", "").lower())
        if c is None:
            continue
        c.handshake_types += kinds
        if "2" in kinds:  # ServerHello: chosen version and suite
            versions = [v for v in sv.split(",") if v] or [v for v in hv.split(",") if v]
            c.version = VERSIONS.get(versions[-1], versions[-1]) if versions else ""
            suite = suites.split(",")[-1]
            c.cipher = CIPHERS.get(suite, suite)
            c.session_id = sids.split(",")[-1].replace(":", "").lower()
        if alpn and not c.alpn:
            c.alpn = alpn.split(",")[-1]
        c.finished += kinds.count(HANDSHAKE_FINISHED)
        c.app_records += ctypes.split(",").count("23")
    return conns


def plaintext(pcap: Path, keylog: Path, conns: dict[int, TlsConnection]) -> dict[int, tuple[bytes, bytes]]:
    """Decrypted application data of ``conns``: (client's bytes, server's bytes) per stream.

    ``follow,tls,raw`` prints node 0's chunks flush left and node 1's indented; its "Node 0"
    line names the address, so the side is told by port, not assumed."""
    out = _run(pcap, keylog, "-q", *(x for s in conns for x in ("-z", f"follow,tls,raw,{s}")))
    chunks: dict[int, tuple[bytearray, bytearray]] = {}
    current: int | None = None
    node0_is_server = False
    for line in out.splitlines():
        if line.startswith("Filter: tcp.stream eq "):
            current = int(line.rsplit(" ", 1)[1])
            chunks[current] = (bytearray(), bytearray())
        elif line.startswith("Node 0: ") and current is not None:
            node0_is_server = line.rsplit(":", 1)[1] == str(conns[current].server_port)
        elif current is not None and line and all(c in "0123456789abcdef\t" for c in line):
            client, server = chunks[current]
            node1 = line.startswith("\t")
            (client if node1 == node0_is_server else server).extend(bytes.fromhex(line.strip()))
    return {k: (bytes(c), bytes(s)) for k, (c, s) in chunks.items()}
