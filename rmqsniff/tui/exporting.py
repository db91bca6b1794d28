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
    tracking; exchange indices are the same on every read of the same files), with the
    secret values overwritten in place unless ``redact`` is False
    (:class:`rmqsniff.exporters.export.Scrub`)."""
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
        scrub = ex_mod.Scrub() if redact else None
        seen = p.run(captures) if scrub is None else scrub.watch(p.run(captures))
        packets = ex_mod.packets_of(ex for ex in seen if ex.index in wanted_idx)
        if scrub is not None:
            scrub.locate(captures, packets)
        else:
            ex_mod.private_file(str(path))
        with path.open("wb") as f:
            n = ex_mod.write_pcapng(captures, packets, f, scrub)
        done = f"{scrub.frames} frames with secrets overwritten" if scrub is not None else "secrets kept"
        return f"wrote {n} packets of {len(exchanges)} exchanges to {path} ({done})"
    with path.open("w", encoding="utf-8", newline="") as f:
        n = ex_mod.write_csv(exchanges, f) if fmt == "csv" else ex_mod.write_jsonl(exchanges, f, redact=redact)
    return f"wrote {n} exchanges to {path} ({fmt})"
