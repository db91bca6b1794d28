"""Synthetic benchmark captures, written once and kept in the temp folder for later runs."""
from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from typing import Any


def cached_capture(stem: str, n: int, write: Callable[[str, int], Any], folder: str = "rmqsniff-bench") -> str:
    """``<tmp>/<folder>/<stem>-<n>-s1.pcap``, written by ``write(path, n)`` when missing (into a
    part file of this process first, so two runs never share a half-written file)."""
    d = os.path.join(tempfile.gettempdir(), folder)
    os.makedirs(d, exist_ok=True)
    out = os.path.join(d, f"{stem}-{n}-s1.pcap")
    if not os.path.exists(out):
        print(f"generating {n} exchanges into {out} (cached for later runs) ...", flush=True)
        t = time.perf_counter()
        part = f"{out}.{os.getpid()}.part"
        made = write(part, n)
        os.replace(part, out)
        print(f"  generated in {time.perf_counter() - t:.0f} s{f': {made}' if made else ''}", flush=True)
    return out
