"""Real TLS between two OpenSSL endpoints (Python's ``ssl``), for the decryption tests.

:func:`make_cert` makes a throwaway self-signed certificate with ``cryptography``;
:func:`tls_talk` runs a client and a server over memory BIOs (no sockets) and returns
what each side put on the wire, in order, while the client's context writes its key log
(``keylog_filename``: OpenSSL's own NSS key log writer).
"""
from __future__ import annotations

import contextlib
import datetime
import ssl
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

Wire = list[tuple[bool, bytes]]  # (from_client, bytes) as each side sent them


def make_cert(directory: Path, kind: str = "ec", name: str = "rmqsniff.test") -> tuple[str, str]:
    """(cert file, key file) of a self-signed certificate for ``name`` (key ``ec`` or ``rsa``)."""
    key = ec.generate_private_key(ec.SECP256R1()) if kind == "ec" else rsa.generate_private_key(65537, 2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(key, hashes.SHA256()))
    cf, kf = directory / f"{kind}-cert.pem", directory / f"{kind}-key.pem"
    cf.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    kf.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()))
    kf.chmod(0o600)
    return str(cf), str(kf)


def contexts(cert: tuple[str, str], keylog: Path, *, version: ssl.TLSVersion | None = None,
             ciphers: str | None = None, alpn: list[str] | None = None) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(client, server) contexts; the client writes the key log."""
    cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    cctx.check_hostname = False
    cctx.verify_mode = ssl.CERT_NONE
    cctx.keylog_filename = str(keylog)
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(*cert)
    for ctx in (cctx, sctx):
        if version is not None:
            ctx.minimum_version = ctx.maximum_version = version
        if ciphers:
            ctx.set_ciphers(ciphers)
        if alpn:
            ctx.set_alpn_protocols(alpn)
    return cctx, sctx


def tls_talk(cctx: ssl.SSLContext, sctx: ssl.SSLContext, messages: list[tuple[bool, bytes]],
             session: ssl.SSLSession | None = None, sni: str = "rmqsniff.test") -> tuple[Wire, ssl.SSLObject]:
    """Handshake, then each ``(from_client, payload)`` written by its side and read by the other;
    returns the wire and the client's SSL object (its ``session`` resumes a later talk)."""
    cin, cout, sin, sout = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    c = cctx.wrap_bio(cin, cout, server_hostname=sni, session=session)
    s = sctx.wrap_bio(sin, sout, server_side=True)
    wire: Wire = []

    def pump() -> bool:
        moved = False
        for src, dst, fc in ((cout, sin, True), (sout, cin, False)):
            data = src.read()
            if data:
                wire.append((fc, data))
                dst.write(data)
                moved = True
        return moved

    def step(obj: ssl.SSLObject) -> bool:
        try:
            obj.do_handshake()
            return True
        except ssl.SSLWantReadError:
            return False

    done_c = done_s = False
    for _ in range(20):
        done_c = done_c or step(c)
        pump()
        done_s = done_s or step(s)
        pump()
        if done_c and done_s:
            break
    assert done_c and done_s, "handshake did not finish"
    for fc, payload in messages:
        w, r = (c, s) if fc else (s, c)
        w.write(payload)
        got = b""
        while len(got) < len(payload):
            pump()
            with contextlib.suppress(ssl.SSLWantReadError):
                got += r.read(1 << 20)
        assert got == payload
    for obj in (c, s):  # e.g. session tickets the client has not read yet
        with contextlib.suppress(ssl.SSLWantReadError):
            obj.read(1)
        pump()
    return wire, c


def openssl_talk(cert: tuple[str, str], keylog: Path, lines: list[bytes], *, client_args: tuple[str, ...] = (),
                 server_args: tuple[str, ...] = ()) -> Wire:
    """The ``openssl`` command's own client and server (``s_server -rev`` answers each line
    reversed) through a recording relay; the client writes the key log (``-keylogfile``).  A
    line ``b"k"`` makes the client send a KeyUpdate (s_client's interactive command).  For
    what Python's ``ssl`` cannot choose: TLS 1.3 cipher suites, groups (HelloRetryRequest)."""
    return openssl_sessions(cert, keylog, [(lines, client_args)], server_args=server_args)[0]


def openssl_sessions(cert: tuple[str, str], keylog: Path, clients: list[tuple[list[bytes], tuple[str, ...]]], *,
                     server_args: tuple[str, ...] = ()) -> list[Wire]:
    """As :func:`openssl_talk` for several ``s_client`` runs one after another against one
    ``s_server`` (e.g. ``-sess_out``/``-sess_in`` for session resumption): one wire each."""
    import socket
    import subprocess
    import threading
    import time

    def free_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])

    sport = free_port()
    server = subprocess.Popen(["openssl", "s_server", "-accept", f"127.0.0.1:{sport}", "-cert", cert[0],
                               "-key", cert[1], "-rev", "-naccept", str(len(clients)), *server_args],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    wires: list[Wire] = []
    lock = threading.Lock()

    def relay(wire: Wire) -> None:
        c, _ = lsock.accept()
        for _ in range(100):
            try:
                s = socket.create_connection(("127.0.0.1", sport))
                break
            except OSError:
                time.sleep(0.05)

        def copy(a: socket.socket, b: socket.socket, fc: bool) -> None:
            while data := a.recv(65536):
                with lock:
                    wire.append((fc, data))
                b.sendall(data)
            b.shutdown(socket.SHUT_WR)

        t = threading.Thread(target=copy, args=(s, c, False), daemon=True)
        t.start()
        copy(c, s, True)
        t.join(10)
        c.close()
        s.close()

    time.sleep(0.3)  # the server is listening
    try:
        for lines, client_args in clients:
            wire: Wire = []
            rt = threading.Thread(target=relay, args=(wire,), daemon=True)
            rt.start()
            client = subprocess.Popen(["openssl", "s_client", "-connect", f"127.0.0.1:{lsock.getsockname()[1]}",
                                       "-keylogfile", str(keylog), "-servername", "rmqsniff.test", *client_args],
                                      stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            assert client.stdin is not None
            time.sleep(0.5)
            for line in lines:
                client.stdin.write(line + b"\n")
                client.stdin.flush()
                time.sleep(0.3)
            client.stdin.close()
            client.wait(10)
            rt.join(10)
            wires.append(wire)
    finally:
        server.kill()
        server.wait()
        lsock.close()
    return wires


def check_grpc_truth(rows: list[dict[str, Any]], truth: list[dict[str, Any]]) -> None:
    """``read --format jsonl`` rows of a TLS gRPC capture against the client's own record of
    its sessions (``tests/test_tls_real.py``): per connection, the calls in order with their
    grpc-status, answered, with the cipher, version and ALPN the client negotiated."""
    by_port: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        by_port.setdefault(int(r["connection"]["client"].rsplit(":", 1)[1]), []).append(r)
    assert sorted(by_port) == sorted(t["local_port"] for t in truth)
    for t in truth:
        got = by_port[t["local_port"]]
        assert [(r["request"]["method"], r["response"]["grpc_status"]) for r in got] == \
            [(c["method"], c["grpc_status"]) for c in t["calls"]]
        assert all(r["status"] == "answered" for r in got)
        assert {r["tls"]["cipher"] for r in got} == {t["cipher"]}
        assert {r["tls"]["version"] for r in got} == {t["version"]}
        assert got[0]["connection"]["tls"]["alpn"] == "h2"
        assert got[0]["connection"]["tls"]["client_random"] == t["client_random"]
