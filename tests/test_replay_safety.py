"""Replay safety on what addresses are: every spelling of the capture's own name server is refused,
with zero connections to a listener standing in for it (also with --dry-run), and a real staging
address is still allowed and connected to."""
from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from dissectors.remoting.frame import encode
from replay.engine import Guard, SafetyError
from rmqsniff.capwriter import CaptureWriter, TcpSession
from rmqsniff.synth import _route

ROOT = Path(__file__).resolve().parent.parent
SPELLINGS = ["localhost", "127.1", "0.0.0.0", "[::ffff:127.0.0.1]", "2130706433", "0x7f000001", "127.0.0.1",
             "127.0.0.2", "[::1]", "[::]", "0177.0.0.1"]


class Listener:
    """A loopback listener that counts the connections it accepts (and answers nothing)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port: int = self.sock.getsockname()[1]
        self.accepted = 0
        self._held: list[socket.socket] = []
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()

    def _loop(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            self._held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for c in self._held:
            c.close()


@pytest.fixture
def prod():
    lst = Listener()
    yield lst
    lst.close()


def _capture(path: Path, port: int) -> None:
    """A client asking the name server 127.0.0.1:``port`` for two routes."""
    rng = random.Random(7)
    with open(path, "wb") as f:
        w = CaptureWriter(f)
        s = TcpSession(w, ("127.0.0.1", 45000), ("127.0.0.1", port))
        ts = 1700000000.0
        s.handshake(ts)
        for i in range(2):
            t = _route(rng, 100 + i, 0, i)
            ts += 0.01
            s.send(ts, True, encode(t.request))
            assert t.response is not None
            s.send(ts + 0.001, False, encode(t.response), ack=True)
        s.close(ts + 0.1)


def _replay(cap: Path, port: int, target: str, allow: str, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "rmqsniff", "replay", str(cap), "--target", target,
                           "--allow-target", allow, "-Y", "code == GET_ROUTEINFO_BY_TOPIC", "--port", str(port),
                           "--no-progress", "--timeout", "0.5", *extra],
                          capture_output=True, text=True, timeout=60, cwd=ROOT, env=env)


@pytest.mark.parametrize("mode", [[], ["--direct"], ["--dry-run"]], ids=["proxy", "direct", "dry-run"])
def test_every_spelling_of_the_captured_server_is_refused(prod, tmp_path, mode):
    cap = tmp_path / "ns.pcap"
    _capture(cap, prod.port)
    with ThreadPoolExecutor(4) as ex:
        runs = list(ex.map(lambda sp: (sp, _replay(cap, prod.port, f"{sp}:{prod.port}", sp, *mode)),
                           SPELLINGS))
    for sp, res in runs:
        assert res.returncode != 0, (sp, res.stdout, res.stderr)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and "refused" in lines[0], (sp, res.stderr)
        assert "Traceback" not in res.stderr
        if mode == ["--dry-run"]:
            assert "(REFUSED:" in res.stdout, (sp, res.stdout)
    assert prod.accepted == 0


def test_the_production_override_still_reaches_it(prod, tmp_path):
    """The guard's refusal is what kept the listener untouched: with the override it is reached."""
    cap = tmp_path / "ns.pcap"
    _capture(cap, prod.port)
    res = _replay(cap, prod.port, f"localhost:{prod.port}", "localhost", "--direct", "--i-know-this-is-production")
    assert "refused" not in res.stderr, res.stderr
    assert prod.accepted >= 1


def test_a_staging_target_is_allowed_and_connected_to_as_approved(prod, tmp_path):
    staging = Listener()
    try:
        cap = tmp_path / "ns.pcap"
        _capture(cap, prod.port)
        res = _replay(cap, prod.port, f"localhost:{staging.port}", "localhost", "--dry-run")
        assert res.returncode == 0, res.stderr
        assert f"(allowed: 127.0.0.1:{staging.port})" in res.stdout
        res = _replay(cap, prod.port, f"localhost:{staging.port}", "localhost", "--direct")
        assert "refused" not in res.stderr.lower(), res.stderr  # it may fail later: staging answers nothing
        assert staging.accepted >= 1 and prod.accepted == 0
    finally:
        staging.close()


def test_guard_resolves_and_normalises():
    g = Guard(["localhost", "[::ffff:10.9.8.7]:10911"], {("127.0.0.1", 9876), ("10.9.8.7", 10911)})
    assert g.approve(("localhost", 39876), "target") == ("127.0.0.1", 39876)
    assert g.approve(("127.1", 39876), "target") == ("127.0.0.1", 39876)  # the allowlist's localhost too
    for sp in SPELLINGS:
        host = sp.strip("[]")
        with pytest.raises(SafetyError, match="refused"):
            Guard([host], {("127.0.0.1", 9876)}).approve((host, 9876), "target name server")
    # a broker address learnt from staging's route answer is checked the same way
    with pytest.raises(SafetyError, match="is a server in the capture"):
        g.approve(("::ffff:10.9.8.7", 10911), "staging broker")
    with pytest.raises(SafetyError, match="not allowed"):
        g.approve(("10.9.8.7", 10912), "staging broker")  # the allowlist entry names port 10911
    # a captured server on any local address meets any local target on its port (0.0.0.0 binds all)
    with pytest.raises(SafetyError, match="production"):
        Guard(["127.0.0.1"], {("0.0.0.0", 9876)}).approve(("127.0.0.1", 9876), "target")
    assert Guard(["127.0.0.1"], {("127.0.0.1", 9876)}, True).approve(("127.1", 9876), "t") == ("127.0.0.1", 9876)
