"""A tcpdump recording as the tests use it: whether the kernel dropped packets, and waiting
until the file has stopped growing."""
from __future__ import annotations

import re
import time

from tests.rocketmq.capture import Capture


def kernel_drops(cap: Capture) -> int:
    """Packets tcpdump says the kernel dropped (the capture would have holes)."""
    m = re.search(r"^(\d+) packets? dropped by kernel", cap.stderr_text, re.M)
    assert m, cap.stderr_text
    return int(m[1])


def settle(pcap, quiet: float = 1.5, limit: float = 10.0) -> None:
    """Wait until the capture file has stopped growing for ``quiet`` seconds (at most ``limit``).
    ``quiet`` is longer than libpcap's read timeout (tcpdump: 1 s): with TPACKET_V3 the kernel
    hands packets over in blocks, a partly filled one only when that timeout expires, so a
    shorter pause in the file's growth does not mean the capture is complete."""
    deadline = time.monotonic() + limit
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        size = pcap.stat().st_size if pcap.exists() else 0
        if size != last:
            last, since = size, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        time.sleep(0.05)
