"""The live tap decrypting TLS on loopback while the client's key log is still being written:
a real OpenSSL client and server (Python ``ssl`` over sockets), remoting frames inside, the
tap re-reading the key log as it grows.  Needs AF_PACKET (root or CAP_NET_RAW)."""
from __future__ import annotations

import socket
import ssl
import threading
import time
from pathlib import Path

from dissectors.remoting.command import JSON, RemotingCommand
from dissectors.remoting.frame import encode
from rmqsniff.live import LiveTap
from rmqsniff.model import Exchange
from rmqsniff.protocols.tls import TlsKeys
from rmqsniff.sources.afpacket import AfPacketSource
from tests.support.tlspair import make_cert
from tests.test_live import needs_capture

N = 8


def _recv_frame(s: ssl.SSLSocket) -> bytes:
    buf = b""
    while len(buf) < 4 or len(buf) < 4 + int.from_bytes(buf[:4], "big"):
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


@needs_capture
def test_live_tap_decrypts_with_a_growing_key_log(tmp_path: Path) -> None:
    cert = make_cert(tmp_path)
    keylog = tmp_path / "keys.log"
    keylog.touch(0o600)
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(*cert)
    cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    cctx.check_hostname, cctx.verify_mode = False, ssl.CERT_NONE
    cctx.keylog_filename = str(keylog)
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    port = lsock.getsockname()[1]
    got: list[Exchange] = []
    tap = LiveTap([AfPacketSource("lo", f"tcp port {port}")], ports=[port], on_exchange=got.append,
                  tls_keys=TlsKeys.from_options([str(keylog)], env={}, live=True))
    stop = threading.Event()
    runner = threading.Thread(target=lambda: tap.run(tick=0.1, stop=stop.is_set), daemon=True)
    runner.start()

    def serve() -> None:
        conn, _ = lsock.accept()
        with sctx.wrap_socket(conn, server_side=True) as s:
            for _ in range(N):  # each request answered in order (opaques 0..N-1)
                _recv_frame(s)
                s.sendall(answers.pop(0))

    answers = [encode(RemotingCommand(0, 1, i, "JAVA", 479, None, {"queueId": "1"}, None, JSON)) for i in range(N)]
    server = threading.Thread(target=serve, daemon=True)
    server.start()
    with cctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="rmqsniff.test") as c:
        for i in range(N):
            ext = {"a": "PG", "b": "TopicTLS", "c": "TBW102", "d": "4", "e": "0", "f": "0", "g": "1", "h": "0",
                   "j": "0", "k": "false", "m": "false"}
            c.sendall(encode(RemotingCommand(310, 0, i, "JAVA", 479, None, ext, b"tls-live-%d" % i, JSON)))
            _recv_frame(c)
    server.join(10)
    lsock.close()
    time.sleep(0.5)  # the ring hands over its last block
    stop.set()
    runner.join(10)
    tap.finish()
    sends = [ex for ex in got if ex.code == 310]
    assert len(sends) == N and all(ex.response is not None for ex in sends), tap.errors
    assert all(ex.connection.tls and ex.connection.tls["status"] == "decrypted" for ex in sends)
    assert tap.stats.snapshot()["transport"]["tls_decrypted"] == 1
