"""TLS termination in the proxy with real OpenSSL clients (Python ``ssl``): permissive and
enforcing listeners, certificates from the local CA per SNI name, upstream TLS with
verification, ALPN, the key log, and ``-w`` recordings that read back decrypted.

The upstream here is a stand-in remoting server (a thread answering each request with
its opaque), so that these tests run without the cluster; the real cluster behind the
TLS proxy is in ``test_proxy_tls_rocketmq.py``."""
from __future__ import annotations

import contextlib
import os
import re
import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest

from dissectors.remoting import RemotingCommand, StreamDecoder, codes, encode
from dissectors.remoting.stream import Frame
from replay.proxy import BROKER, GRPC, Mapping, ProxyConfig, ProxyError
from replay.proxy.tls import LocalCA
from rmqsniff.exporters.exchanges import exchange_to_dict
from rmqsniff.pipeline import analyze
from tests.support.proxy import ProxyProcess, ProxyThread

pytestmark = pytest.mark.timeout(60)
VER = codes.version_ordinal(5, 3, 3)


class Upstream:
    """Stand-in upstream (a real broker is in the real-cluster tests): answers every remoting
    request with a response of the same opaque and the request's body; TLS when given a
    context, remembering the SNI and ALPN each client offered."""

    def __init__(self, ctx: ssl.SSLContext | None = None) -> None:
        self.srv = socket.create_server(("127.0.0.1", 0))
        self.port = self.srv.getsockname()[1]
        self.ctx = ctx
        self.hellos: list[tuple[str | None, str | None, str | None]] = []  # (sni, alpn, version)
        self.errors: list[BaseException] = []
        if ctx is not None:
            ctx.sni_callback = self._sni
        self._sni_seen: str | None = None
        threading.Thread(target=self._accept, daemon=True).start()

    def _sni(self, obj, name, ctx) -> None:
        self._sni_seen = name

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.srv.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            if self.ctx is not None:
                conn = self.ctx.wrap_socket(conn, server_side=True)
                self.hellos.append((self._sni_seen, conn.selected_alpn_protocol(), conn.version()))
            conn.settimeout(10)
            dec = StreamDecoder()
            while data := conn.recv(65536):
                for ev in dec.feed(data):
                    if isinstance(ev, Frame):
                        conn.sendall(encode(RemotingCommand(0, 1, ev.command.opaque, version=VER,
                                                            body=ev.command.body)))
        except (OSError, ssl.SSLError) as e:
            self.errors.append(e)
        finally:
            conn.close()

    def close(self) -> None:
        self.srv.close()


def _request(opaque: int, body: bytes) -> bytes:
    return encode(RemotingCommand(codes.GET_MAX_OFFSET, 0, opaque, version=VER, body=body,
                                  ext={"topic": "TopicTls", "queueId": "0"}))


def _ask(sock: socket.socket, opaque: int, body: bytes) -> RemotingCommand:
    sock.sendall(_request(opaque, body))
    sock.settimeout(10)
    dec = StreamDecoder()
    while data := sock.recv(65536):
        frames = [ev.command for ev in dec.feed(data) if isinstance(ev, Frame)]
        if frames:
            assert len(frames) == 1, frames
            return frames[0]
    raise AssertionError("closed without an answer")


def _client_ctx(ca: LocalCA, *, alpn: list[str] | None = None, version: ssl.TLSVersion | None = None,
                ciphers: str | None = None, keylog: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=ca.cert_path)  # verifies the proxy's certificate
    if alpn:
        ctx.set_alpn_protocols(alpn)
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    if ciphers:
        ctx.set_ciphers(ciphers)
    if keylog is not None:
        ctx.keylog_filename = str(keylog)
    return ctx


def _closed(s: socket.socket) -> bool:
    """The peer closed (FIN or reset) before sending anything."""
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True


def _sans(s: ssl.SSLSocket) -> tuple:
    cert = s.getpeercert()
    assert cert is not None  # verified
    sans = cert["subjectAltName"]
    assert isinstance(sans, tuple)
    return sans


def _mode(path: str | Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def upstream_ca(tmp_path):
    """A CA (made the proxy's way, in its own directory) and a TLS context for the stand-in upstream."""
    ca = LocalCA(str(tmp_path / "upstream-ca"))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    pem = tmp_path / "upstream.pem"
    pem.write_bytes(ca.leaf(["upstream.test", "127.0.0.1"]))
    ctx.load_cert_chain(str(pem))
    ctx.set_alpn_protocols(["h2"])
    return ca, ctx


def _tls_proxy(tmp_path, upstream_port: int, kind: str = BROKER, **kw) -> ProxyThread:
    cfg = ProxyConfig([Mapping.parse(kind, f"0=127.0.0.1:{upstream_port}")], tls_ca_dir=str(tmp_path / "ca"),
                      **({"tls": "permissive"} | kw))
    return ProxyThread(cfg)


# ------------------------------------------------------------------ permissive / enforcing

def test_permissive_takes_tls_and_plaintext_on_one_port_and_records_plaintext(tmp_path, upstream_ca):
    """A TLS client (TLS 1.3, verifying the proxy's certificate for its SNI name against the
    local CA) and a plaintext client on the same listener both get their answers; upstream
    over TLS, verified against --upstream-ca, with the client's SNI; both legs' secrets in
    the key log (0600); the recording holds the plaintext and reads back as the exchanges."""
    ca_up, up_ctx = upstream_ca
    up = Upstream(up_ctx)
    keylog = tmp_path / "keys.log"
    rec = tmp_path / "rec.pcapng"
    pt = _tls_proxy(tmp_path, up.port, upstream_tls=True, upstream_ca=ca_up.cert_path, tls_keylog=str(keylog),
                    record=str(rec))
    try:
        ca = LocalCA(str(tmp_path / "ca"))  # made by the proxy on first use
        host, port = pt.listen(BROKER)
        ctx = _client_ctx(ca)
        with ctx.wrap_socket(socket.create_connection((host, port), timeout=10), server_hostname="upstream.test") as s:
            assert s.version() == "TLSv1.3"
            assert _sans(s) == (("DNS", "upstream.test"),)
            answers = [_ask(s, i, b"tls-%d" % i) for i in range(1, 4)]
        with socket.create_connection((host, port), timeout=10) as s:
            plain = _ask(s, 7, b"plain")
        stats = pt.stats()
        lines = list(pt.lines)
    finally:
        pt.stop()
        up.close()
    assert [(a.opaque, a.body) for a in answers] == [(i, b"tls-%d" % i) for i in range(1, 4)]
    assert (plain.opaque, plain.body) == (7, b"plain")
    t = stats["transport"]
    assert (t["tls_client"], t["tls_plaintext_client"], t["tls_upstream"]) == (1, 1, 2)
    assert stats["counters"]["answered"] == 4
    assert up.hellos[0][0] == "upstream.test"  # SNI passed through
    assert up.errors == []
    assert any("local CA" in ln for ln in lines)

    # files with key material: 0600, the CA's directory 0700
    assert _mode(tmp_path / "ca") == 0o700
    assert _mode(ca.key_path) == _mode(ca.cert_path) == _mode(keylog) == 0o600
    assert [p.name for p in (tmp_path / "ca").iterdir()] and not list((tmp_path / "ca").glob(".leaf-*"))
    text = keylog.read_text()
    randoms = set(re.findall(r"^CLIENT_TRAFFIC_SECRET_0 ([0-9a-f]{64}) ", text, re.M))
    assert len(randoms) == 3  # client leg + the two upstream legs

    # the recording is plaintext TCP: it reads back as the four exchanges, answered
    a = analyze([str(rec)])
    assert a.errors == []
    assert a.stats.snapshot()["counters"]["answered"] == 4


def test_enforcing_refuses_a_plaintext_client_with_one_line(tmp_path):
    up = Upstream()
    pt = _tls_proxy(tmp_path, up.port, tls="enforcing")
    try:
        host, port = pt.listen(BROKER)
        with socket.create_connection((host, port), timeout=10) as s:
            s.sendall(_request(1, b"x"))
            s.settimeout(10)
            assert _closed(s)
        ca = LocalCA(str(tmp_path / "ca"))
        with _client_ctx(ca).wrap_socket(socket.create_connection((host, port), timeout=10),
                                         server_hostname="localhost") as s:
            assert _ask(s, 2, b"ok").body == b"ok"
        stats = pt.stats()
        lines = list(pt.lines)
    finally:
        pt.stop()
        up.close()
    refused = [ln for ln in lines if "refused" in ln]
    assert len(refused) == 1 and refused[0].startswith(f"rmqsniff proxy: broker {host}:{port}: client 127.0.0.1:")
    assert refused[0].endswith(": plaintext connection refused (--tls enforcing)")
    assert stats["transport"]["tls_refused"] == 1 and stats["transport"]["tls_client"] == 1
    assert stats["transport"]["flows"] == 1  # the refused connection never became a session


@pytest.mark.parametrize("version,ciphers,want,iana", [
    (ssl.TLSVersion.TLSv1_2, "ECDHE-RSA-CHACHA20-POLY1305:ECDHE-ECDSA-CHACHA20-POLY1305",
     "ECDHE-ECDSA-CHACHA20-POLY1305", "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"),
    (ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-ECDSA-AES256-GCM-SHA384",
     "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"),
    (ssl.TLSVersion.TLSv1_3, None, "TLS_AES_256_GCM_SHA384", "TLS_AES_256_GCM_SHA384"),
])
def test_tls12_and_13_suites_and_exchanges_marked(tmp_path, version, ciphers, want, iana):
    """Each suite carries many records each way; the exchanges (as /exchanges and JSON show
    them) are marked with the client leg's version and IANA cipher name, the connection with
    its SNI too."""
    up = Upstream()
    pt = _tls_proxy(tmp_path, up.port)
    try:
        ca = LocalCA(str(tmp_path / "ca"))
        with _client_ctx(ca, version=version, ciphers=ciphers).wrap_socket(
                socket.create_connection(pt.listen(BROKER), timeout=10), server_hostname="broker.test") as s:
            assert (s.cipher() or ("",))[0] == want
            assert _ask(s, 1, b"x" * 100_000).body == b"x" * 100_000
        with socket.create_connection(pt.listen(BROKER), timeout=10) as s:
            assert _ask(s, 2, b"plain").body == b"plain"
        pt.stats()  # readers catch up with the deferred decoding first
        exs = pt.call(lambda: [exchange_to_dict(ex) for ex in pt.proxy.recent.select(None, 0)])
    finally:
        pt.stop()
        up.close()
    assert [ex["request"]["opaque"] for ex in exs] == [1, 2]
    tls_ex, plain_ex = exs
    v = "TLS 1.3" if version == ssl.TLSVersion.TLSv1_3 else "TLS 1.2"
    assert tls_ex["tls"] == {"version": v, "cipher": iana}
    assert tls_ex["connection"]["tls"] == {"status": "decrypted", "version": v, "cipher": iana, "sni": "broker.test"}
    assert "tls" not in plain_ex and "tls" not in plain_ex["connection"]


def test_no_sni_gets_the_default_certificate_for_the_listen_address(tmp_path):
    up = Upstream()
    pt = _tls_proxy(tmp_path, up.port)
    try:
        ca = LocalCA(str(tmp_path / "ca"))
        host, port = pt.listen(BROKER)
        ctx = _client_ctx(ca)
        with ctx.wrap_socket(socket.create_connection((host, port), timeout=10), server_hostname=host) as s:
            assert ("IP Address", "127.0.0.1") in _sans(s)
            assert _ask(s, 1, b"y").body == b"y"
    finally:
        pt.stop()
        up.close()


# ------------------------------------------------------------------ ALPN, upstream verification

def test_grpc_listener_negotiates_h2_and_passes_it_upstream(tmp_path, upstream_ca):
    """ALPN: the gRPC listener offers h2 (what Java/Go gRPC clients require), and the upstream
    leg offers the protocol the client chose."""
    ca_up, up_ctx = upstream_ca
    up = Upstream(up_ctx)
    pt = _tls_proxy(tmp_path, up.port, kind=GRPC, upstream_tls=True, upstream_insecure=True)
    try:
        ca = LocalCA(str(tmp_path / "ca"))
        with _client_ctx(ca, alpn=["h2"]).wrap_socket(socket.create_connection(pt.listen(GRPC), timeout=10),
                                                    server_hostname="localhost") as s:
            assert s.selected_alpn_protocol() == "h2"
            s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            s.settimeout(5)
            s.recv(1)  # the stand-in closes: it does not speak HTTP/2
    except (OSError, ssl.SSLError):
        pass
    finally:
        pt.stop()
        up.close()
    assert up.hellos and up.hellos[0][1] == "h2"


def test_untrusted_upstream_is_a_clear_connect_failure(tmp_path, upstream_ca):
    """Verification is on by default: an upstream certificate from an unknown CA fails the
    upstream connection, and the client's request is answered with SYSTEM_ERROR saying why."""
    _, up_ctx = upstream_ca
    up = Upstream(up_ctx)
    pt = _tls_proxy(tmp_path, up.port, upstream_tls=True)
    try:
        ca = LocalCA(str(tmp_path / "ca"))
        with _client_ctx(ca).wrap_socket(socket.create_connection(pt.listen(BROKER), timeout=10),
                                         server_hostname="localhost") as s:
            ans = _ask(s, 5, b"z")
        lines = list(pt.lines)
    finally:
        pt.stop()
        up.close()
    assert (ans.code, ans.opaque) == (codes.SYSTEM_ERROR, 5)
    assert "certificate verify failed" in (ans.remark or "")
    assert any("cannot connect to upstream" in ln and "certificate verify failed" in ln for ln in lines)


def test_a_failed_client_handshake_is_counted_and_reported(tmp_path):
    up = Upstream()
    pt = _tls_proxy(tmp_path, up.port)
    try:
        ctx = ssl.create_default_context()  # does not trust the local CA
        with pytest.raises(ssl.SSLCertVerificationError):
            ctx.wrap_socket(socket.create_connection(pt.listen(BROKER), timeout=10), server_hostname="localhost")
        with socket.create_connection(pt.listen(BROKER), timeout=10) as s:
            s.sendall(b"\x16\x03\x01\x00\x05hello")  # a record that is no ClientHello
            s.settimeout(10)
            with pytest.raises(OSError):
                while s.recv(100):
                    pass
                raise ConnectionResetError
        stats = pt.stats()
        lines = list(pt.lines)
    finally:
        pt.stop()
        up.close()
    assert stats["transport"]["tls_failed"] == 2
    assert sum("TLS handshake failed" in ln for ln in lines) == 2
    assert stats["transport"]["flows"] == 0


def test_given_certificate_and_config_errors(tmp_path):
    ca = LocalCA(str(tmp_path / "other"))
    pem = tmp_path / "server.pem"
    pem.write_bytes(ca.leaf(["given.test"]))
    up = Upstream()
    pt = ProxyThread(ProxyConfig([Mapping.parse(BROKER, f"0=127.0.0.1:{up.port}")], tls="permissive",
                                 tls_cert=str(pem)))
    try:
        with _client_ctx(ca).wrap_socket(socket.create_connection(pt.listen(BROKER), timeout=10),
                                         server_hostname="given.test") as s:
            assert _ask(s, 1, b"g").body == b"g"
    finally:
        pt.stop()
        up.close()
    from replay.proxy import ConfigError

    m = [Mapping.parse(BROKER, "0=127.0.0.1:1")]
    for kw, msg in (({"tls": "sometimes"}, "expected off"), ({"tls_cert": str(pem)}, "need --tls"),
                    ({"upstream_insecure": True}, "need --upstream-tls")):
        with pytest.raises(ConfigError, match=msg):
            ProxyConfig(m, **kw).validate()
    with pytest.raises(ProxyError, match="TLS set-up"):
        ProxyThread(ProxyConfig(m, tls="permissive", tls_cert=str(tmp_path / "missing.pem")))
    # an encrypted key is refused in one line (OpenSSL would otherwise prompt on the terminal)
    from cryptography.hazmat.primitives import serialization

    key_pem, _, chain = ca.leaf(["given.test"]).partition(b"-----END PRIVATE KEY-----\n")
    key = serialization.load_pem_private_key(key_pem + b"-----END PRIVATE KEY-----\n", None)
    (tmp_path / "enc.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                         serialization.BestAvailableEncryption(b"pw")))
    (tmp_path / "enc.crt").write_bytes(chain)
    with pytest.raises(ProxyError, match="TLS set-up: the key of --tls-cert is encrypted"):
        ProxyThread(ProxyConfig(m, tls="permissive", tls_cert=str(tmp_path / "enc.crt"),
                                tls_key=str(tmp_path / "enc.key")))


def test_a_stalled_handshake_is_ended_and_stop_ends_connections_without_a_session(tmp_path, monkeypatch):
    """A client that starts a handshake and goes quiet is closed after the handshake timeout
    (shortened here) with one line; a connection that has not spoken is ended by stop()."""
    import replay.proxy.tls as tls

    monkeypatch.setattr(tls, "HANDSHAKE_TIMEOUT", 0.5)
    up = Upstream()
    pt = _tls_proxy(tmp_path, up.port)
    try:
        with socket.create_connection(pt.listen(BROKER), timeout=10) as stalled:
            stalled.sendall(b"\x16\x03\x01")  # the start of a record, then nothing
            stalled.settimeout(10)
            assert _closed(stalled)
        silent = socket.create_connection(pt.listen(BROKER), timeout=10)
        lines = list(pt.lines)
        stats = pt.stats()
    finally:
        pt.stop()
        up.close()
    with silent:
        silent.settimeout(10)
        assert _closed(silent)
    assert [ln for ln in lines if "TLS handshake" in ln] == [
        ln for ln in lines if ln.endswith("TLS handshake not done after 0.5 s")]
    assert len([ln for ln in lines if "TLS handshake" in ln]) == 1
    assert stats["transport"]["tls_failed"] == 1 and stats["transport"]["flows"] == 0


def test_certificates_per_sni_name_are_bounded(tmp_path, monkeypatch):
    """The contexts made per SNI name are kept for the last MAX_SNI_CONTEXTS names (2 here);
    a name no certificate can carry keeps the default certificate."""
    import replay.proxy.tls as tls

    monkeypatch.setattr(tls, "MAX_SNI_CONTEXTS", 2)
    cfg = ProxyConfig([Mapping.parse(BROKER, "0=127.0.0.1:1")], tls="permissive")
    st = tls.ServerTls(cfg, [], LocalCA(str(tmp_path / "ca")))
    objs = []
    for name in ("a.test", "b.test", "c.test", "b.test", "\u00fc.test"):
        obj = st.default.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_side=True)
        objs.append(obj)
        st._sni(obj, name, st.default)
        assert st.sni[obj] == name
    assert list(st.contexts) == ["c.test", "b.test"]
    assert objs[-1].context is st.default and objs[0].context is not st.default


def test_cli_key_log_defaults_to_sslkeylogfile_and_is_made_0600(tmp_path, monkeypatch):
    """``rmqsniff proxy`` writes the key log named by SSLKEYLOGFILE (as curl and browsers do),
    created 0600 even under a permissive umask; without either nothing is written (the
    library's own SSLKEYLOGFILE handling is not left to make a 0644 file)."""
    up = Upstream()
    keylog = tmp_path / "env-keys.log"
    monkeypatch.setenv("SSLKEYLOGFILE", str(keylog))
    old = os.umask(0o022)
    try:
        p = ProxyProcess("--broker", f"127.0.0.1:0=127.0.0.1:{up.port}", "--tls", "permissive",
                         "--tls-ca-dir", str(tmp_path / "ca"))
    finally:
        os.umask(old)
    try:
        host, port = p.listeners()["broker"][0][0].rsplit(":", 1)
        with _client_ctx(LocalCA(str(tmp_path / "ca"))).wrap_socket(
                socket.create_connection((host, int(port)), timeout=10), server_hostname="localhost") as s:
            assert _ask(s, 1, b"k").body == b"k"
    finally:
        assert p.stop() == 0, "\n".join(p.lines)
        up.close()
    assert _mode(keylog) == 0o600
    assert re.search(r"^CLIENT_TRAFFIC_SECRET_0 [0-9a-f]{64} ", keylog.read_text(), re.M)
    assert not any(keylog.read_text()[-40:] in ln for ln in p.lines)  # no secret on stderr

    monkeypatch.delenv("SSLKEYLOGFILE")
    other = tmp_path / "lib-default.log"
    cfg = ProxyConfig([Mapping.parse(BROKER, "0=127.0.0.1:1")], upstream_tls=True)
    monkeypatch.setenv("SSLKEYLOGFILE", str(other))
    from replay.proxy.tls import upstream_context

    assert upstream_context(cfg, ()).keylog_filename is None and not other.exists()


def test_hostile_client_hellos(tmp_path):
    """A ClientHello split over 100 TCP segments completes its handshake; a handshake message
    claiming 2^24 - 1 bytes and a record over the 2^14 + 256 limit are each one failed
    handshake, counted and reported in one line."""
    up = Upstream()
    pt = _tls_proxy(tmp_path, up.port)
    try:
        ca = LocalCA(str(tmp_path / "ca"))
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = _client_ctx(ca).wrap_bio(incoming, outgoing, server_hostname="localhost")
        with socket.create_connection(pt.listen(BROKER), timeout=10) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with pytest.raises(ssl.SSLWantReadError):
                obj.do_handshake()
            hello = outgoing.read()
            step = -(-len(hello) // 100)
            for i in range(0, len(hello), step):
                s.sendall(hello[i:i + step])
            while True:
                try:
                    obj.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    s.sendall(outgoing.read())
                    incoming.write(s.recv(65536))
            s.sendall(outgoing.read())
            obj.write(_request(1, b"split"))
            s.sendall(outgoing.read())
            dec = StreamDecoder()
            frames: list = []
            while not frames:
                incoming.write(s.recv(65536))
                with contextlib.suppress(ssl.SSLWantReadError):
                    frames = [ev for ev in dec.feed(obj.read(65536)) if isinstance(ev, Frame)]
            assert frames[0].command.body == b"split"
        for hostile in (b"\x16\x03\x01\x00\x08\x01\xff\xff\xff" + b"\x03\x03" * 2,  # ClientHello of 2^24 - 1 bytes
                        b"\x16\x03\x01\xff\xff" + b"\x00" * 1000):  # a 65535-byte record
            with socket.create_connection(pt.listen(BROKER), timeout=10) as s:
                s.sendall(hostile)
                s.settimeout(10)
                while True:
                    try:
                        if not s.recv(65536):
                            break
                    except ConnectionResetError:
                        break
        stats = pt.stats()
        lines = list(pt.lines)
    finally:
        pt.stop()
        up.close()
    t = stats["transport"]
    assert (t["tls_client"], t["tls_failed"]) == (1, 2)
    failed = [ln for ln in lines if "TLS handshake failed" in ln]
    assert len(failed) == 2, lines


def test_upstream_tls_error_mid_session_answers_with_its_reason(tmp_path, upstream_ca):
    """Stand-in upstream (a real broker does not corrupt its own TLS records): after the
    handshake it answers the first request with a record that fails authentication.  The
    waiting request gets SYSTEM_ERROR naming the TLS error, and the client is closed."""
    _, up_ctx = upstream_ca
    srv = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        raw, _ = srv.accept()
        conn = up_ctx.wrap_socket(raw, server_side=True)
        conn.recv(65536)
        socket.socket.sendall(conn, b"\x17\x03\x03\x00\x20" + b"\x00" * 32)  # under the TLS layer
        conn.settimeout(10)
        with contextlib.suppress(OSError):
            conn.recv(1)
        conn.close()

    threading.Thread(target=serve, daemon=True).start()
    pt = _tls_proxy(tmp_path, srv.getsockname()[1], upstream_tls=True, upstream_insecure=True)
    try:
        with _client_ctx(LocalCA(str(tmp_path / "ca"))).wrap_socket(
                socket.create_connection(pt.listen(BROKER), timeout=10), server_hostname="localhost") as s:
            ans = _ask(s, 9, b"q")
            s.settimeout(10)
            assert _closed(s)
    finally:
        pt.stop()
        srv.close()
    assert (ans.code, ans.opaque) == (codes.SYSTEM_ERROR, 9)
    assert "reset the connection (TLS error: " in (ans.remark or ""), ans.remark
