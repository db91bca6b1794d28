"""``:export FILE``: the listed exchanges to JSON lines, CSV or pcapng (by the file's
extension), through :mod:`rmqsniff.exporters.export`."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..exporters import export as ex_mod
from ..flows import PortSpec
from ..model import Exchange
from ..pipeline import Pipeline

FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".pcapng": "pcapng",
           ".pcap": "pcapng"}


def export_exchanges(target: str, exchanges: Sequence[Exchange], *, captures: Sequence[str], redact: bool = True,
                     ports: Sequence[PortSpec] = (), only_ports: bool = False) -> str:
    """Write ``exchanges`` to ``target``; returns what was written, for the status line.

    pcapng copies the original packets (found by re-reading the captures with packet
    tracking; exchange indices are the same on every read of the same files), so it
    holds whatever the packets held, secrets included."""
    path = Path(target).expanduser()
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"cannot tell the format of {target!r}: use .jsonl, .csv or .pcapng")
    if fmt == "pcapng":
        if not captures:
            raise ValueError("pcapng export copies packets from capture files; for a live tap use "
                             "`rmqsniff live -w FILE`, or export .jsonl/.csv")
        wanted_idx = {ex.index for ex in exchanges}
        p = Pipeline(ports=ports, only_ports=only_ports, track_packets=True)
        selected = (ex for ex in p.run(captures) if ex.index in wanted_idx)
        packets = ex_mod.packets_of(selected)
        with path.open("wb") as f:
            n = ex_mod.write_pcapng(captures, packets, f)
        return f"wrote {n} packets of {len(exchanges)} exchanges to {path}"
    with path.open("w", encoding="utf-8", newline="") as f:
        n = ex_mod.write_csv(exchanges, f) if fmt == "csv" else ex_mod.write_jsonl(exchanges, f, redact=redact)
    return f"wrote {n} exchanges to {path} ({fmt})"
