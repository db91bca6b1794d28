"""A tolerant HPACK decoder (RFC 7541) for passive capture.

Unlike an endpoint decoder it never gives up on a header block: a reference to a
dynamic-table entry inserted before the capture started (or before a gap) decodes
to :data:`UNKNOWN` and is listed in :attr:`HeaderBlock.unresolved`; entries keep being
inserted (unknown names included) so later indices stay aligned.  Once more than the
table's maximum size has been inserted since the cut, every older entry has been
evicted and decoding is exact again.  The static table (RFC 7541 Appendix A) and the
Huffman code (Appendix B) are written here, so nothing depends on the internals of the
``hpack`` package (whose public API has no Huffman decoder and no static table).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

UNKNOWN = "<unknown>"
# RFC 7541 Appendix A: the static table, index 1..61
STATIC: tuple[tuple[str, str], ...] = (
    (":authority", ""), (":method", "GET"), (":method", "POST"), (":path", "/"),
    (":path", "/index.html"), (":scheme", "http"), (":scheme", "https"), (":status", "200"),
    (":status", "204"), (":status", "206"), (":status", "304"), (":status", "400"),
    (":status", "404"), (":status", "500"), ("accept-charset", ""), ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""), ("accept-ranges", ""), ("accept", ""), ("access-control-allow-origin", ""),
    ("age", ""), ("allow", ""), ("authorization", ""), ("cache-control", ""),
    ("content-disposition", ""), ("content-encoding", ""), ("content-language", ""), ("content-length", ""),
    ("content-location", ""), ("content-range", ""), ("content-type", ""), ("cookie", ""),
    ("date", ""), ("etag", ""), ("expect", ""), ("expires", ""),
    ("from", ""), ("host", ""), ("if-match", ""), ("if-modified-since", ""),
    ("if-none-match", ""), ("if-range", ""), ("if-unmodified-since", ""), ("last-modified", ""),
    ("link", ""), ("location", ""), ("max-forwards", ""), ("proxy-authenticate", ""),
    ("proxy-authorization", ""), ("range", ""), ("referer", ""), ("refresh", ""),
    ("retry-after", ""), ("server", ""), ("set-cookie", ""), ("strict-transport-security", ""),
    ("transfer-encoding", ""), ("user-agent", ""), ("vary", ""), ("via", ""),
    ("www-authenticate", ""),
)
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


# RFC 7541 Appendix B: the Huffman code length of every symbol 0..255 and EOS (256).  The code
# is canonical (codes of one length are consecutive, in symbol order, shorter codes first), so
# the lengths determine every code; :func:`_huffman_tables` rebuilds them.
_HUFFMAN_LENGTHS = (
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28,  # 0x00
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28,  # 0x10
    6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6,  # 0x20  !"#$%&'()*+,-./
    5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10,  # 0x30 0-9:;<=>?
    13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,  # 0x40 @A-O
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6,  # 0x50 P-Z[\]^_
    15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5,  # 0x60 `a-o
    6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28,  # 0x70 p-z{|}~ DEL
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23,  # 0x80
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24,  # 0x90
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23,  # 0xa0
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23,  # 0xb0
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25,  # 0xc0
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27,  # 0xd0
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23,  # 0xe0
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,  # 0xf0
    30,  # EOS
)
_EOS = 256
_PEEK = 12  # bits looked up at once: all codes of up to 12 bits, one or two symbols per step
_PEEK_MASK = (1 << _PEEK) - 1


def _huffman_tables() -> tuple[list[int], list[bytes], list[int], dict[int, tuple[int, int, list[int]]]]:
    """Lookup tables for the next ``_PEEK`` bits ``w`` of a Huffman string:

    * ``single[w]``: ``symbol << 5 | length`` of the code ``w`` starts with, 0 if it is longer;
    * ``chunk[w]``, ``used[w]``: every whole code at the start of ``w`` (the symbols and their
      total length in bits; 0 bits if the first code is longer than ``_PEEK``);
    * ``long[length] = (first code, count, symbols)`` for the longer codes.
    """
    order = sorted(range(len(_HUFFMAN_LENGTHS)), key=lambda sym: (_HUFFMAN_LENGTHS[sym], sym))
    single = [0] * (1 << _PEEK)
    long: dict[int, tuple[int, int, list[int]]] = {}
    code, prev = -1, _HUFFMAN_LENGTHS[order[0]]
    for sym in order:  # canonical codes: each is the previous one + 1, shifted to its length
        ln = _HUFFMAN_LENGTHS[sym]
        code = (code + 1) << (ln - prev)
        prev = ln
        if ln <= _PEEK:
            lo, n = code << (_PEEK - ln), 1 << (_PEEK - ln)
            single[lo:lo + n] = [sym << 5 | ln] * n
        else:
            first, count, syms = long.get(ln, (code, 0, []))
            syms.append(sym)
            long[ln] = (first, count + 1, syms)
    chunk, used = [b""] * (1 << _PEEK), [0] * (1 << _PEEK)
    for w in range(1 << _PEEK):
        bits, out = 0, bytearray()
        while True:
            e = single[(w << bits) & _PEEK_MASK]
            if not e or bits + (e & 31) > _PEEK:
                break
            bits += e & 31
            out.append(e >> 5)
        chunk[w], used[w] = bytes(out), bits
    return single, chunk, used, long


_SINGLE, _CHUNK, _USED, _LONG_CODES = _huffman_tables()


def _huffman_codes() -> tuple[int, ...]:
    """The code of every symbol (the canonical code rebuilt from the lengths)."""
    codes = [0] * len(_HUFFMAN_LENGTHS)
    code, prev = -1, 0
    for sym in sorted(range(len(_HUFFMAN_LENGTHS)), key=lambda s: (_HUFFMAN_LENGTHS[s], s)):
        code = (code + 1) << (_HUFFMAN_LENGTHS[sym] - prev)
        prev = _HUFFMAN_LENGTHS[sym]
        codes[sym] = code
    return tuple(codes)


HUFFMAN_CODES = _huffman_codes()
HUFFMAN_LENGTHS = _HUFFMAN_LENGTHS
"""RFC 7541 Appendix B: code and code length (bits) of every byte value (and EOS, 256)."""


def huffman_encode(data: bytes) -> bytes:
    """``data`` as an HPACK Huffman string: the codes, padded with the top bits of EOS (ones)."""
    v = bits = 0
    for b in data:
        v = (v << _HUFFMAN_LENGTHS[b]) | HUFFMAN_CODES[b]
        bits += _HUFFMAN_LENGTHS[b]
    pad = -bits % 8
    return ((v << pad) | ((1 << pad) - 1)).to_bytes((bits + pad) // 8, "big")
_LONG_LENGTHS = tuple(sorted(_LONG_CODES))


def huffman_decode(raw: bytes) -> bytes:
    """Decode an HPACK Huffman string (RFC 7541 section 5.2); :class:`HpackError` if it is
    not one (a code cut off, EOS inside, padding longer than 7 bits or not all ones)."""
    v = int.from_bytes(raw, "big")
    rem = len(raw) * 8  # bits not yet consumed: the low ``rem`` bits of v
    chunk, used = _CHUNK, _USED
    out = bytearray()
    while rem >= _PEEK:
        w = (v >> (rem - _PEEK)) & _PEEK_MASK
        n = used[w]
        if n:
            out += chunk[w]
            rem -= n
        else:
            rem = _long_code(v, rem, out)
    while rem:  # fewer than _PEEK bits left: whole codes, then the padding
        tail = v & ((1 << rem) - 1)
        if rem < 8 and tail == (1 << rem) - 1:  # padding: the most significant bits of EOS
            break
        e = _SINGLE[(tail << (_PEEK - rem)) | ((1 << (_PEEK - rem)) - 1)]
        if not e or e & 31 > rem:
            raise HpackError("bad Huffman string: code cut off or bad padding")
        out.append(e >> 5)
        rem -= e & 31
    return bytes(out)


def _long_code(v: int, rem: int, out: bytearray) -> int:
    """Decode the code longer than ``_PEEK`` bits that starts the low ``rem`` bits of ``v``."""
    for ln in _LONG_LENGTHS:
        if ln > rem:
            break
        first, count, syms = _LONG_CODES[ln]
        i = ((v >> (rem - ln)) & ((1 << ln) - 1)) - first
        if 0 <= i < count:
            sym = syms[i]
            if sym == _EOS:
                raise HpackError("bad Huffman string: EOS inside")
            out.append(sym)
            return rem - ln
    raise HpackError("bad Huffman string: code cut off")


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
        raw = huffman_decode(raw)
    return raw.decode("utf-8", "replace"), end
