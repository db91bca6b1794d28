"""The bytes exchanges were carried in, read back from the capture files by packet number."""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from .link import tcp_segment
from .pcapfile import CaptureError, open_capture

CACHE_PACKETS = 4096  # payloads kept after a read (a detail pane shows one exchange at a time)


class WireReader:
    """TCP payloads of packets numbered as the pipeline numbered them (0-based across ``paths``)."""

    def __init__(self, paths: Sequence[str]) -> None:
        self.paths = list(paths)
        self._cache: OrderedDict[int, bytes] = OrderedDict()

    def payload(self, packets: Sequence[int]) -> bytes:
        """The TCP payloads of ``packets``, in order, joined."""
        missing = {n for n in packets if n not in self._cache}
        if missing:
            self._read(missing)
        return b"".join(self._cache.get(n, b"") for n in packets)

    def _read(self, wanted: set[int]) -> None:
        last = max(wanted)
        base = 0
        for path in self.paths:
            try:
                reader = open_capture(path)
            except CaptureError:
                continue  # the pipeline skipped it too, counting no packets
            try:
                for no, (_ts, linktype, frame) in enumerate(reader, base):
                    if no in wanted:
                        seg = tcp_segment(frame, linktype)
                        self._put(no, bytes(seg[7]) if not isinstance(seg, str) else b"")
                    if no >= last:
                        return
            finally:
                base += reader.packets
                reader.f.close()

    def _put(self, no: int, data: bytes) -> None:
        self._cache[no] = data
        if len(self._cache) > CACHE_PACKETS:
            self._cache.popitem(last=False)
