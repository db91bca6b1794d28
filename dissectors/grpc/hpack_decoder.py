"""A tolerant HPACK decoder (RFC 7541) for passive capture.

Unlike an endpoint decoder it never gives up on a header block: a reference to a
dynamic-table entry inserted before the capture started (or before a gap) decodes
to :data:`UNKNOWN` and is listed in :attr:`HeaderBlock.unresolved`; entries keep being
inserted (unknown names included) so later indices stay aligned.  Once more than the
table's maximum size has been inserted since the cut, every older entry has been
evicted and decoding is exact again.  Huffman strings use the ``hpack`` package's
decoder and static table.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from hpack.exceptions import HPACKDecodingError
from hpack.huffman_table import decode_huffman
from hpack.table import HeaderTable

UNKNOWN = "<unknown>"
STATIC: tuple[tuple[str, str], ...] = tuple(
    (n.decode("latin-1"), v.decode("latin-1")) for n, v in HeaderTable.STATIC_TABLE)
N_STATIC = len(STATIC)  # 61
DEFAULT_TABLE_SIZE = 4096
UNSEEN_SETTINGS_LIMIT = 65536  # SETTINGS not captured: accept what real peers use
MAX_TABLE_LIMIT = 1 << 20  # never hold more than 1 MiB of header table per direction
MAX_BLOCK_HEADERS = 4096


class HpackError(ValueError):
    """A header block that is malformed (not merely referring to unknown entries)."""


@dataclass(slots=True)
class HeaderBlock:
    """One decoded header block."""

    headers: list[tuple[str, str]]
    # (position in headers, slot before the cut / name token) of every header whose name
    # (and, for indexed references, value) is still :data:`UNKNOWN`
    unresolved: list[tuple[int, int]] = field(default_factory=list)


class TolerantDecoder:
    """HPACK decoder for one direction of a connection.

    An entry inserted with a name taken from an unknown (pre-cut) entry keeps that
    entry's slot as a name token, so encoders that always reference the newest entry of
    a name (hpack, Netty) do not spread the loss forever: once the name of the token is
    learned (:meth:`learn_name`), every entry carrying it is resolved.
    """

    __slots__ = ("table", "size", "max_size", "cut", "since_cut", "backfill", "names", "misses", "limit")

    def __init__(self, cut: bool = False, max_size: int = DEFAULT_TABLE_SIZE) -> None:
        # newest first: (name or name token, value, size); a token is the int slot it came from
        self.table: deque[tuple[str | int, str, int]] = deque()
        self.size = 0
        self.max_size = max_size
        self.cut = cut  # True while entries from before a cut may still be referenced
        self.since_cut = 0
        self.backfill: dict[int, tuple[str, str]] = {}  # slot before the cut -> learned entry
        self.names: dict[int, str] = {}  # name token -> learned name
        self.misses = 0  # unresolved references so far
        # the largest table the encoder may ask for: the receiver's SETTINGS_HEADER_TABLE_SIZE
        # when seen (set_limit), else a generous ceiling for captures that missed the SETTINGS
        self.limit = UNSEEN_SETTINGS_LIMIT

    def reset(self) -> None:
        """Forget the table: the stream was cut (capture start or gap)."""
        self.table.clear()
        self.size = 0
        self.cut = True
        self.since_cut = 0
        self.backfill.clear()
        self.names.clear()

    @property
    def exact(self) -> bool:
        """No entry from before the cut can be referenced any more (names may still be tokens)."""
        return not self.cut

    def learn(self, slot: int, name: str, value: str) -> None:
        """Back-fill a pre-cut slot whose content was inferred (e.g. ``:path``)."""
        if self.cut and len(self.backfill) < 256:
            self.backfill[slot] = (name, value)
        self.learn_name(slot, name)

    def learn_name(self, token: int, name: str) -> None:
        """The name behind a name token (inferred, e.g. from the value's shape)."""
        if len(self.names) < 256:
            self.names[token] = name

    # ----------------------------------------------------------------- table
    def _add(self, name: str | int, value: str) -> None:
        size = 32 + len(value.encode()) + (len(name.encode()) if type(name) is str else 0)
        if self.cut:
            self.since_cut += size
            if self.since_cut > self.max_size:  # everything from before the cut is gone
                self.cut = False
                self.backfill.clear()
        if size > self.max_size:
            self.table.clear()
            self.size = 0
            self.cut = False
            self.backfill.clear()
            return
        self.table.appendleft((name, value, size))
        self.size += size
        self._evict()

    def _evict(self) -> None:
        t = self.table
        while self.size > self.max_size and t:
            self.size -= t.pop()[2]
            if self.cut:  # a known entry evicted: the pre-cut region is gone
                self.cut = False
                self.backfill.clear()

    def set_limit(self, n: int) -> None:
        """The receiver advertised SETTINGS_HEADER_TABLE_SIZE ``n`` (capped, so a peer cannot
        make the decoder hold an unbounded table)."""
        self.limit = min(n, MAX_TABLE_LIMIT)

    def _resize(self, n: int) -> None:
        self.max_size = n
        if n == 0:
            self.cut = False
            self.backfill.clear()
        self._evict()

    def _get(self, index: int) -> tuple[str | int, str]:
        if index == 0:
            raise HpackError("index 0")
        if index <= N_STATIC:
            return STATIC[index - 1]
        i = index - N_STATIC - 1
        t = self.table
        if i < len(t):
            e = t[i]
            return e[0], e[1]
        slot = i - len(t)
        if self.cut:
            got = self.backfill.get(slot)
            if got is not None:
                return got
            self.misses += 1
            return slot, UNKNOWN
        raise HpackError(f"dynamic table index {index} beyond the table ({len(t)} entries)")

    # ----------------------------------------------------------------- decode
    def decode(self, data: bytes) -> HeaderBlock:
        """Decode one complete header block (HEADERS plus CONTINUATIONs).

        Raises :class:`HpackError` for malformed blocks; the table may then be out of step
        and the caller should :meth:`reset`.
        """
        headers: list[tuple[str, str]] = []
        unresolved: list[tuple[int, int]] = []
        names = self.names
        pos, n = 0, len(data)
        while pos < n:
            b = data[pos]
            if len(headers) >= MAX_BLOCK_HEADERS:
                raise HpackError("too many header fields")
            if b & 0x80:  # indexed
                idx, pos = _int(data, pos, 7)
                name, value = self._get(idx)
            elif b & 0xC0 == 0x40 or b & 0xF0 in (0x00, 0x10):  # literals
                indexing = b & 0xC0 == 0x40
                idx, pos = _int(data, pos, 6 if indexing else 4)
                if idx:
                    name = self._get(idx)[0]
                else:
                    name, pos = _str(data, pos)
                value, pos = _str(data, pos)
                if indexing:
                    self._add(name, value)
            elif b & 0xE0 == 0x20:  # dynamic table size update
                size, pos = _int(data, pos, 5)
                if size > self.limit:
                    raise HpackError(f"table size update to {size} exceeds the advertised {self.limit}")
                self._resize(size)
                continue
            else:  # pragma: no cover - all bit patterns are covered above
                raise HpackError(f"bad representation 0x{b:02x}")
            if isinstance(name, int):  # a slot of the dynamic table the capture never showed
                known = names.get(name)
                if known is None or value is UNKNOWN:
                    unresolved.append((len(headers), name))
                name = known if known is not None else UNKNOWN
            headers.append((name, value))
        return HeaderBlock(headers, unresolved)


def _int(data: bytes, pos: int, prefix: int) -> tuple[int, int]:
    mask = (1 << prefix) - 1
    v = data[pos] & mask
    pos += 1
    if v < mask:
        return v, pos
    shift = 0
    while True:
        if pos >= len(data):
            raise HpackError("truncated integer")
        b = data[pos]
        pos += 1
        v += (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return v, pos
        if shift > 35:
            raise HpackError("integer too long")


def _str(data: bytes, pos: int) -> tuple[str, int]:
    if pos >= len(data):
        raise HpackError("truncated string")
    huff = data[pos] & 0x80
    ln, pos = _int(data, pos, 7)
    end = pos + ln
    if end > len(data):
        raise HpackError("truncated string")
    raw = data[pos:end]
    if huff:
        try:
            raw = decode_huffman(raw)
        except HPACKDecodingError as e:
            raise HpackError(f"bad Huffman string: {e}") from None
    return raw.decode("utf-8", "replace"), end
