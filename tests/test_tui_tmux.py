"""Run ``rmqsniff tui`` in a real terminal (tmux), read the screen, quit with q."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CAPTURE = ROOT / "captures" / "remoting_json.pcap"

pytestmark = [
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (apt-get install tmux)"),
    pytest.mark.skipif(not CAPTURE.exists(), reason="no real capture in captures/ yet"),
]


def _tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, check=False).stdout


def _screen(session: str) -> str:
    return _tmux("capture-pane", "-p", "-t", session)


def _wait(session: str, text: str, timeout: float = 30.0) -> str:
    end = time.monotonic() + timeout
    screen = ""
    while time.monotonic() < end:
        screen = _screen(session)
        if text in screen:
            return screen
        time.sleep(0.2)
    raise AssertionError(f"{text!r} never appeared; screen was:\n{screen}")


def test_tui_in_tmux_shows_the_capture_and_quits(tmp_path):
    from rmqsniff.pipeline import analyze

    ref = analyze([str(CAPTURE)]).exchanges
    session = f"rmqsniff-test-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = f"{sys.executable} -m rmqsniff.cli_tui {CAPTURE}; echo EXITED-$?; sleep 30"
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "170", "-y", "45", cmd], check=True, env=env)
    try:
        screen = _wait(session, f"loaded {len(ref)} exchanges")
        (tmp_path / "screen.txt").write_text(screen)
        lines = screen.splitlines()
        assert "rmqsniff" in lines[0] and CAPTURE.name in lines[0]
        assert "topic/group" in lines[1]
        first = lines[2].split()
        assert first[0] == str(ref[0].index)
        assert "Request" in screen and "extFields" in screen  # the detail tree of the first exchange
        _tmux("send-keys", "-t", session, "?")
        _wait(session, "every key and command")
        _tmux("send-keys", "-t", session, "Escape")
        time.sleep(0.5)
        _tmux("send-keys", "-t", session, "q")
        _wait(session, "EXITED-0")
    finally:
        _tmux("kill-session", "-t", session)
