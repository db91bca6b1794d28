"""Record loopback traffic with tcpdump, waiting until it really captures and is really done."""
from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import time
from pathlib import Path


class CaptureError(RuntimeError):
    """tcpdump could not start or did not finish cleanly."""


class Capture:
    """``tcpdump -i lo -U -w FILE 'tcp port A or tcp port B ...'`` as a context manager."""

    def __init__(self, path: Path, ports: list[int], interface: str = "lo", snaplen: int = 0,
                 host: str | None = "127.0.0.1") -> None:
        self.path = Path(path)
        self.host = host
        self.ports = sorted(set(ports))
        self.interface = interface
        self.snaplen = snaplen
        self.proc: subprocess.Popen | None = None
        self.stderr_text = ""

    @property
    def filter(self) -> str:
        ports = " or ".join(f"tcp port {p}" for p in self.ports)
        return f"host {self.host} and ({ports})" if self.host else ports

    def start(self, timeout: float = 15.0) -> Capture:
        exe = shutil.which("tcpdump")
        if exe is None:
            raise CaptureError("tcpdump not found on PATH")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        cmd = [exe, "-i", self.interface, "-U", "-s", str(self.snaplen), "-w", str(self.path), self.filter]
        if os.geteuid() == 0:
            cmd[1:1] = ["-Z", "root"]  # keep root so the file stays writable wherever it is
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        buf = b""
        assert self.proc.stderr is not None
        while b"listening on" not in buf:
            if self.proc.poll() is not None:
                buf += self.proc.stderr.read() or b""
                raise CaptureError(f"tcpdump exited ({self.proc.returncode}): {buf.decode(errors='replace')}")
            if time.monotonic() > deadline:
                self._kill()
                raise CaptureError(f"tcpdump did not start listening within {timeout}s: {buf!r}")
            ready, _, _ = select.select([self.proc.stderr], [], [], 0.2)
            if ready:
                chunk = os.read(self.proc.stderr.fileno(), 4096)
                if not chunk:
                    continue
                buf += chunk
        self.stderr_text = buf.decode(errors="replace")
        return self

    def stop(self, timeout: float = 15.0) -> Path:
        """SIGINT tcpdump and wait, so the file is flushed and complete."""
        if self.proc is None:
            return self.path
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                _, err = self.proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._kill()
                raise CaptureError("tcpdump did not exit after SIGINT") from None
            self.stderr_text += (err or b"").decode(errors="replace")
        self.proc = None
        if not self.path.exists():
            raise CaptureError(f"tcpdump wrote no file: {self.stderr_text}")
        return self.path

    def _kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def __enter__(self) -> Capture:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
