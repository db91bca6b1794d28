"""The committed captures (``captures/``: ``NAME.pcap`` with ``NAME.truth.json``, the
clients' own record of what they did) and the parameters of tests run on each of them."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent.parent
CAPTURES = REPO / "captures"


def plaintext_pcaps() -> list[Path]:
    """The committed ``*.pcap`` files that decode without a key log: a TLS capture has its key
    log beside it (``NAME.keys``) and is tests/test_tls_real.py's."""
    return sorted(p for p in CAPTURES.glob("*.pcap") if not p.with_suffix(".keys").exists())


def remoting_truths() -> list[str]:
    names = []
    for p in sorted(CAPTURES.glob("*.truth.json")):
        t = json.loads(p.read_text())
        plain = "tls_capture" not in t  # TLS twins need their key log (tests/test_tls_real.py)
        if plain and t.get("protocol", "remoting") == "remoting" and (CAPTURES / f"{p.name[:-11]}.pcap").exists():
            names.append(p.name[:-11])
    return names


def real_params():
    names = remoting_truths()
    if not names:
        return [pytest.param(None, marks=pytest.mark.skip(
            reason="no remoting capture with ground truth in captures/ yet (python -m tests.rocketmq writes them)"))]
    return names
