"""Capture files in, exchanges and stats out: the glue every command uses.

    source (pcap/pcapng records) -> link/IP/TCP (sources.link) -> flow table and
    reassembly (flows, tcp) -> remoting stream decoder (dissectors.remoting)
    -> pairing -> Exchange -> sinks (stats, exporters, TUI, replay)
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from .flows import FlowTable, PortSpec
from .model import Exchange
from .pairing import PairingSink
from .protocols.tls import TlsKeys
from .sinks import Sink
from .sources.link import tcp_segment
from .sources.pcapfile import CaptureError, open_capture
from .stats import Stats


@dataclass
class Analysis:
    """Everything one run over some captures produced."""

    exchanges: list[Exchange]
    stats: Stats
    errors: list[str]
    packets: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    files_read: int = 0


class Pipeline:
    """Decode captures into exchanges, feeding one :class:`Stats` on the way."""

    def __init__(
        self,
        *,
        stats: Stats | None = None,
        stat_prefix: str = "rmqsniff",
        ports: Iterable[PortSpec] = (),
        only_ports: bool = False,
        ordered: bool = True,
        max_frame: int = 16 * 1024 * 1024,
        track_packets: bool = False,
        sinks: Sequence[Sink] = (),
        tls_keys: TlsKeys | None = None,
    ) -> None:
        # TLS secrets: --tls-keylog / SSLKEYLOGFILE files, and the captures' Decryption Secrets Blocks
        self.tls_keys = tls_keys if tls_keys is not None else TlsKeys()
        self.stats = stats if stats is not None else Stats(prefix=stat_prefix)
        self.errors: list[str] = []
        self.packets = 0
        self.files_read = 0
        self.skipped: dict[str, int] = {}
        self._out: list[Exchange] = []
        self.sink = PairingSink(self.stats, self._out.append, ordered=ordered, sinks=sinks)
        self.table = FlowTable(self.stats, self.sink, ports=ports, only_ports=only_ports,
                               max_frame=max_frame, errors=self.errors, track_packets=track_packets,
                               tls_keys=self.tls_keys)
        self.track_packets = track_packets

    def run(self, paths: Sequence[str], *, stats_only: bool = False) -> Iterator[Exchange]:
        """Yield exchanges from the captures, read one after another as one stream."""
        out = self._out
        for path in paths:
            try:
                reader = open_capture(path)
            except CaptureError as e:
                self.errors.append(str(e))
                continue
            self.files_read += 1
            reader.on_secrets = self.tls_keys.add_text
            try:
                if stats_only:
                    self.stats.tcp("bytes", self.table.consume(reader.batches(), self.skipped))
                else:
                    yield from self._packets(reader, out)
            finally:
                self.errors.extend(reader.errors)
                self.packets += reader.packets
                reader.f.close()
        self.table.finish()
        self.errors.extend(self.tls_keys.problems())
        self.stats.tcp("packets", self.packets)
        if out:
            yield from out
            out.clear()

    def consume(self, paths: Sequence[str]) -> None:
        """Run for the stats only: exchanges are counted, then dropped. Unless packets are
        tracked or output is ordered, the common frames take the stats-only fast path
        (:meth:`FlowTable.consume`), which builds no exchanges at all."""
        self.sink.emit = _discard
        for _ in self.run(paths, stats_only=not self.track_packets and not self.sink.ordered):
            pass

    def _packets(self, reader, out: list[Exchange]) -> Iterator[Exchange]:
        table = self.table
        packet = table.packet
        skipped = self.skipped
        nbytes = 0
        track = self.track_packets
        base = self.packets - 1  # the reader counts a record before yielding it
        for ts, linktype, frame in reader:
            if track:
                table.packet_no = base + reader.packets
            seg = tcp_segment(frame, linktype)
            if type(seg) is str:
                skipped[seg] = skipped.get(seg, 0) + 1
                continue
            nbytes += len(seg[7])
            packet(ts, *seg)
            if out:
                yield from out
                out.clear()
        self.stats.tcp("bytes", nbytes)


def _discard(_ex: Exchange) -> None:
    pass


def analyze(paths: Sequence[str], **kwargs) -> Analysis:
    """Decode captures completely and keep every exchange (for tests and small captures)."""
    p = Pipeline(**kwargs)
    exchanges = list(p.run(paths))
    return Analysis(exchanges, p.stats, p.errors, p.packets, dict(p.skipped), p.files_read)
