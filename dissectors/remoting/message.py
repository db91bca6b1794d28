"""Messages carried in remoting bodies: stored records, batch bodies, properties, ids.

Reference sections 4.1 (stored "MessageExt" records), 4.2 (batch encoding),
4.3 (properties string), 4.4 (compression) and 4.5 (message ids).
Decoders never raise on bad input: they return the problems as strings that
name the byte offset, and keep going where the record sizes allow it.
"""
from __future__ import annotations

import ipaddress
import struct
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import lz4.frame
import zstandard

__all__ = [
    "MAGIC_V1", "MAGIC_V2", "DEFAULT_MAX_PAYLOAD",
    "PayloadError", "DecompressionLimitExceeded",
    "parse_properties", "properties_to_string",
    "StoredMessage", "decode_stored_messages", "encode_stored_message",
    "BatchMessage", "decode_batch", "encode_batch",
    "compression_name", "decompress_body",
    "offset_msg_id", "decode_offset_msg_id", "decode_unique_key", "looks_like_stored_messages",
]

MAGIC_V1 = 0xDAA320A7
MAGIC_V2 = 0xDAA320AB
_MAGICS = {MAGIC_V1: 1, MAGIC_V2: 2}
_MAGIC_OF = {1: MAGIC_V1, 2: MAGIC_V2}

# MessageSysFlag
COMPRESSED_FLAG = 0x1
MULTI_TAGS_FLAG = 0x2
TRANSACTION_MASK = 0xC
BORNHOST_V6_FLAG = 0x10
STOREHOST_V6_FLAG = 0x20
NEED_UNWRAP_FLAG = 0x40
INNER_BATCH_FLAG = 0x80
COMPRESSION_TYPE_MASK = 0x700
_TRANSACTION_TYPES = {0x0: "not", 0x4: "prepared", 0x8: "commit", 0xC: "rollback"}
_COMPRESSION_TYPES = {0: "zlib", 1: "lz4", 2: "zstd", 3: "zlib"}

DEFAULT_MAX_PAYLOAD = 64 * 1024 * 1024
NAME_VALUE_SEPARATOR = "\x01"
PROPERTY_SEPARATOR = "\x02"
MAX_PROPERTIES_LEN = 32767

_HEAD = struct.Struct(">iIiiiqqiq")  # totalSize .. bornTimestamp: 48 bytes
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")
_I16 = struct.Struct(">h")
_U16 = struct.Struct(">H")
_TAIL = struct.Struct(">iqi")  # reconsumeTimes, preparedTransactionOffset, bodyLength
_BATCH_HEAD = struct.Struct(">iiiii")  # totalSize, magic, bodyCRC, flag, bodyLength
# smallest possible record: 48 + 8 + 8 + 8 + 16 + 1 (V1 topic length) + 2
_MIN_RECORD = 91


class PayloadError(ValueError):
    """A message body could not be decompressed."""


class DecompressionLimitExceeded(PayloadError):
    """Decompressing a body would exceed the allowed output size."""


# ---------------------------------------------------------------- properties

def parse_properties(s: str) -> dict[str, str]:
    """Properties string (4.3) to a dict, following ``string2messageProperties``.

    A piece between 0x02 separators counts only when it is at least 3 characters
    long and its first 0x01 is neither its first nor its last character.
    """
    out: dict[str, str] = {}
    if not s:
        return out
    for piece in s.split(PROPERTY_SEPARATOR):
        if len(piece) < 3:
            continue
        i = piece.find(NAME_VALUE_SEPARATOR)
        if 0 < i < len(piece) - 1:
            out[piece[:i]] = piece[i + 1:]
    return out


def properties_to_string(d: Mapping[str, str | None]) -> str:
    """``messageProperties2String``: ``name 0x01 value 0x02`` per non-null entry."""
    return "".join(f"{k}{NAME_VALUE_SEPARATOR}{v}{PROPERTY_SEPARATOR}" for k, v in d.items() if v is not None)


def _props_from_bytes(raw: bytes, where: int, problems: list[str]) -> dict[str, str]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        problems.append(f"offset {where}: properties are not valid UTF-8 ({e.reason} at {e.start}); replaced")
        text = raw.decode("utf-8", "replace")
    return parse_properties(text)


# ---------------------------------------------------------------- compression

def compression_name(sys_flag: int) -> str | None:
    """``"zlib"``/``"lz4"``/``"zstd"`` when sysFlag says compressed, else None.

    Type bits 8–10 = 0 with the compressed flag means zlib (older senders);
    unknown type values give ``"unknown(N)"``.
    """
    if not sys_flag & COMPRESSED_FLAG:
        return None
    t = (sys_flag & COMPRESSION_TYPE_MASK) >> 8
    return _COMPRESSION_TYPES.get(t, f"unknown({t})")


def _inflate_zlib(data: bytes, max_size: int) -> bytes:
    d = zlib.decompressobj()
    try:
        out = d.decompress(data, max_size + 1)
    except zlib.error as e:
        raise PayloadError(f"zlib: {e}") from None
    if len(out) > max_size:
        raise DecompressionLimitExceeded(f"zlib body inflates beyond {max_size} bytes")
    if not d.eof:
        raise PayloadError("zlib: truncated stream")
    return out


def _inflate_lz4(data: bytes, max_size: int) -> bytes:
    d = lz4.frame.LZ4FrameDecompressor()
    try:
        out: bytes = d.decompress(data, max_length=max_size + 1)
    except RuntimeError as e:
        raise PayloadError(f"lz4: {e}") from None
    if len(out) > max_size:
        raise DecompressionLimitExceeded(f"lz4 body inflates beyond {max_size} bytes")
    if not d.eof:
        raise PayloadError("lz4: truncated frame")
    return out


def _inflate_zstd(data: bytes, max_size: int) -> bytes:
    reader = zstandard.ZstdDecompressor().stream_reader(data, read_across_frames=True)
    parts: list[bytes] = []
    size = 0
    try:
        while True:
            chunk = reader.read(min(1 << 20, max_size + 1 - size))
            if not chunk:
                break
            parts.append(chunk)
            size += len(chunk)
            if size > max_size:
                raise DecompressionLimitExceeded(f"zstd body inflates beyond {max_size} bytes")
    except zstandard.ZstdError as e:
        raise PayloadError(f"zstd: {e}") from None
    # The reader does not say whether the frame was complete; now that the output is
    # known to be bounded, a one-shot pass tells that.
    check = zstandard.ZstdDecompressor().decompressobj()
    try:
        check.decompress(data)
    except zstandard.ZstdError as e:
        raise PayloadError(f"zstd: {e}") from None
    if not check.eof:
        raise PayloadError("zstd: truncated frame")
    return b"".join(parts)


_INFLATERS = {"zlib": _inflate_zlib, "lz4": _inflate_lz4, "zstd": _inflate_zstd}


def decompress_body(body: bytes, sys_flag: int, max_size: int = DEFAULT_MAX_PAYLOAD) -> bytes:
    """The body decompressed as ``sys_flag`` says (unchanged when not compressed).

    Output is capped at ``max_size`` bytes (``DecompressionLimitExceeded``);
    corrupt input raises ``PayloadError``.
    """
    name = compression_name(sys_flag)
    if name is None:
        return body
    inflate = _INFLATERS.get(name)
    if inflate is None:
        raise PayloadError(f"compression type {name} not supported")
    return inflate(bytes(body), max_size)


# ---------------------------------------------------------------- hosts and ids

def _split_host(addr: str) -> tuple[bytes, int]:
    """``"ip:port"`` / ``"[ip6]:port"`` to (packed address, port)."""
    try:
        if addr.startswith("["):
            host, _, port = addr[1:].partition("]:")
        else:
            host, _, port = addr.rpartition(":")
        return ipaddress.ip_address(host).packed, int(port)
    except ValueError:
        raise ValueError(f"bad host address {addr!r}; want ip:port or [ipv6]:port") from None


def _join_host(packed: bytes, port: int) -> str:
    if len(packed) == 4:
        return f"{packed[0]}.{packed[1]}.{packed[2]}.{packed[3]}:{port}"
    ip = ipaddress.ip_address(packed)
    return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"


def offset_msg_id(host: str, port: int, phys_offset: int) -> str:
    """Offset message id (4.5): hex of store address + int32 port + int64 offset."""
    packed = ipaddress.ip_address(host.strip("[]")).packed
    return (packed + _I32.pack(port) + _I64.pack(phys_offset)).hex().upper()


def decode_offset_msg_id(s: str) -> tuple[str, int, int]:
    """Inverse of ``offset_msg_id``: (host, port, commit-log offset); ValueError if malformed."""
    raw = bytes.fromhex(s)
    if len(raw) not in (16, 28):
        raise ValueError(f"offset message id must be 32 or 56 hex digits, got {len(s)}")
    n = len(raw) - 12
    return str(ipaddress.ip_address(raw[:n])), _I32.unpack_from(raw, n)[0], _I64.unpack_from(raw, n + 4)[0]


def decode_unique_key(s: str) -> dict[str, object]:
    """Best-effort split of a UNIQ_KEY (4.5); ``{"error": reason}`` when it does not fit.

    Keys: ip (clients without an address put 4 bytes of the time there, which
    cannot be told apart), pid (low 16 bits), class_loader_hash, time_offset_ms
    (since the start of the month in the client's zone), counter.
    """
    try:
        raw = bytes.fromhex(s)
    except ValueError:
        return {"error": "not hexadecimal"}
    if len(raw) not in (16, 28):
        return {"error": f"expected 16 or 28 bytes, got {len(raw)}"}
    n = len(raw) - 12
    pid, loader, offset, counter = struct.unpack_from(">HiiH", raw, n)
    return {
        "ip": str(ipaddress.ip_address(raw[:n])),
        "pid": pid,
        "class_loader_hash": loader & 0xFFFFFFFF,
        "time_offset_ms": offset,
        "counter": counter,
    }


# ---------------------------------------------------------------- stored records

@dataclass(slots=True)
class StoredMessage:
    """One stored message record (4.1).

    ``body`` is as stored (possibly compressed; see ``payload``). ``body_crc`` None
    means "compute when encoding". Hosts are ``"ip:port"`` or ``"[ipv6]:port"``.
    ``offset`` is where the record started in the decoded body (-1 if built).
    """

    total_size: int = 0
    magic: int = 1
    body_crc: int | None = None
    queue_id: int = 0
    flag: int = 0
    queue_offset: int = 0
    physical_offset: int = 0
    sys_flag: int = 0
    born_timestamp: int = 0
    born_host: str = "0.0.0.0:0"
    store_timestamp: int = 0
    store_host: str = "0.0.0.0:0"
    reconsume_times: int = 0
    prepared_transaction_offset: int = 0
    body: bytes = b""
    topic: str = ""
    properties: dict[str, str] = field(default_factory=dict)
    offset: int = field(default=-1, compare=False)

    @property
    def msg_id(self) -> str | None:
        """Offset message id from store host and physical offset; None if the host is unusable."""
        try:
            packed, port = _split_host(self.store_host)
        except ValueError:
            return None
        return (packed + _I32.pack(port) + _I64.pack(self.physical_offset)).hex().upper()

    @property
    def unique_key(self) -> str | None:
        return self.properties.get("UNIQ_KEY")

    @property
    def tags(self) -> str | None:
        return self.properties.get("TAGS")

    @property
    def keys(self) -> list[str]:
        return [k for k in self.properties.get("KEYS", "").split(" ") if k]

    @property
    def crc_ok(self) -> bool:
        return self.body_crc is not None and (zlib.crc32(self.body) & 0x7FFFFFFF) == self.body_crc

    @property
    def compressed(self) -> bool:
        return bool(self.sys_flag & COMPRESSED_FLAG)

    @property
    def compression(self) -> str | None:
        return compression_name(self.sys_flag)

    @property
    def transaction_type(self) -> str:
        return _TRANSACTION_TYPES[self.sys_flag & TRANSACTION_MASK]

    @property
    def delay_level(self) -> int | None:
        v = self.properties.get("DELAY")
        try:
            return int(v) if v is not None else None
        except ValueError:
            return None

    @property
    def inner_batch(self) -> bool:
        return bool(self.sys_flag & INNER_BATCH_FLAG)

    def payload(self, max_size: int = DEFAULT_MAX_PAYLOAD) -> bytes:
        """The body, decompressed when sysFlag says so (capped at ``max_size``)."""
        return decompress_body(self.body, self.sys_flag, max_size)

    def inner_messages(self, max_size: int = DEFAULT_MAX_PAYLOAD) -> tuple[list[BatchMessage], list[str]]:
        """For an inner-batch record, the messages packed in its body (4.2). Never raises:
        a body that does not decompress (or inflates beyond ``max_size``) is a problem."""
        try:
            body = self.payload(max_size)
        except PayloadError as e:
            return [], [f"offset {self.offset}: inner batch body not decoded: {e}"]
        return decode_batch(body)


def _decode_record(buf: bytes, start: int, end: int, problems: list[str]) -> tuple[StoredMessage, int]:
    """Decode the record at ``start`` (not past ``end``); returns it and where it ended."""
    (total, magic_raw, crc, qid, flag, qoff, poff, sys_flag, born_ts) = _HEAD.unpack_from(buf, start)
    magic = _MAGICS.get(magic_raw)
    if magic is None:
        raise ValueError(f"unknown magic code 0x{magic_raw:08X}")
    pos = start + _HEAD.size

    def need(n: int, what: str) -> None:
        if pos + n > end:
            raise ValueError(f"{what} ({n} bytes at {pos}) runs past the record end {end}")

    hosts = []
    for v6flag, name in ((BORNHOST_V6_FLAG, "bornHost"), (STOREHOST_V6_FLAG, "storeHost")):
        alen = 16 if sys_flag & v6flag else 4
        need(alen + 4 + 8, name)
        host = _join_host(buf[pos:pos + alen], _I32.unpack_from(buf, pos + alen)[0])
        pos += alen + 4
        hosts.append(host)
        if name == "bornHost":
            store_ts = _I64.unpack_from(buf, pos)[0]
            pos += 8
    need(_TAIL.size, "reconsumeTimes/preparedTransactionOffset/bodyLength")
    reconsume, prepared, body_len = _TAIL.unpack_from(buf, pos)
    pos += _TAIL.size
    if body_len < 0:
        raise ValueError(f"negative bodyLength {body_len}")
    need(body_len, "body")
    body = buf[pos:pos + body_len]
    pos += body_len
    if magic == 1:
        need(1, "topicLength")
        tlen = buf[pos]
        if tlen > 127:
            problems.append(f"offset {pos}: V1 topic length {tlen} > 127 (Java reads it as negative)")
        pos += 1
    else:
        need(2, "topicLength")
        tlen = _U16.unpack_from(buf, pos)[0]
        pos += 2
    need(tlen, "topic")
    topic_raw = buf[pos:pos + tlen]
    try:
        topic = topic_raw.decode("utf-8")
    except UnicodeDecodeError:
        problems.append(f"offset {pos}: topic is not valid UTF-8; replaced")
        topic = topic_raw.decode("utf-8", "replace")
    pos += tlen
    need(2, "propertiesLength")
    plen = _I16.unpack_from(buf, pos)[0]
    pos += 2
    if plen < 0:
        raise ValueError(f"negative propertiesLength {plen}")
    need(plen, "properties")
    props = _props_from_bytes(buf[pos:pos + plen], pos, problems)
    pos += plen
    msg = StoredMessage(
        total_size=total, magic=magic, body_crc=crc, queue_id=qid, flag=flag, queue_offset=qoff,
        physical_offset=poff, sys_flag=sys_flag, born_timestamp=born_ts, born_host=hosts[0],
        store_timestamp=store_ts, store_host=hosts[1], reconsume_times=reconsume,
        prepared_transaction_offset=prepared, body=body, topic=topic, properties=props, offset=start,
    )
    return msg, pos


def decode_stored_messages(body: bytes) -> tuple[list[StoredMessage], list[str]]:
    """Decode back-to-back stored records (4.1). Never raises.

    A record that cannot be decoded is reported and skipped using its totalSize;
    when totalSize itself is implausible the loop stops and the rest is reported.
    """
    buf = bytes(body)
    n = len(buf)
    messages: list[StoredMessage] = []
    problems: list[str] = []
    pos = 0
    while pos < n:
        if n - pos < 4:
            problems.append(f"offset {pos}: {n - pos} trailing bytes, too short for a record")
            break
        total = _I32.unpack_from(buf, pos)[0]
        if total < _MIN_RECORD or total > n - pos:
            problems.append(
                f"offset {pos}: implausible totalSize {total} ({n - pos} bytes left); "
                f"stopped, {n - pos} bytes not decoded"
            )
            break
        end = pos + total
        record_problems: list[str] = []
        try:
            msg, stop = _decode_record(buf, pos, end, record_problems)
        except (ValueError, struct.error) as e:
            problems.append(f"offset {pos}: bad record skipped ({total} bytes): {e}")
            pos = end
            continue
        problems.extend(record_problems)
        if stop != end:
            problems.append(f"offset {pos}: record fields end at {stop} but totalSize says {end}")
        messages.append(msg)
        pos = end
    return messages, problems


def looks_like_stored_messages(body: bytes) -> bool:
    """Cheap sniff: a plausible totalSize followed by a known magic code."""
    if len(body) < _MIN_RECORD:
        return False
    total, magic = struct.unpack_from(">iI", body, 0)
    return magic in _MAGICS and _MIN_RECORD <= total <= len(body)


def encode_stored_message(m: StoredMessage) -> bytes:
    """Encode a record (4.1); totalSize is computed, ``m.total_size`` ignored.

    The host-address sysFlag bits (0x10/0x20) are set from the host strings;
    ``body_crc`` None is computed from the body. V1 needs a topic of ≤ 127 bytes.
    """
    if m.magic not in _MAGIC_OF:
        raise ValueError(f"magic must be 1 or 2, not {m.magic}")
    born, born_port = _split_host(m.born_host)
    store, store_port = _split_host(m.store_host)
    sys_flag = m.sys_flag & ~(BORNHOST_V6_FLAG | STOREHOST_V6_FLAG)
    if len(born) == 16:
        sys_flag |= BORNHOST_V6_FLAG
    if len(store) == 16:
        sys_flag |= STOREHOST_V6_FLAG
    topic = m.topic.encode("utf-8")
    if m.magic == 1:
        if len(topic) > 127:
            raise ValueError(f"topic of {len(topic)} bytes needs magic 2 (V1 allows 127)")
        topic_part = bytes([len(topic)]) + topic
    else:
        if len(topic) > 0xFFFF:
            raise ValueError("topic longer than 65535 bytes")
        topic_part = _U16.pack(len(topic)) + topic
    props = properties_to_string(m.properties).encode("utf-8")
    if len(props) > MAX_PROPERTIES_LEN:
        raise ValueError(f"properties of {len(props)} bytes exceed {MAX_PROPERTIES_LEN}")
    body = bytes(m.body)
    crc = (zlib.crc32(body) & 0x7FFFFFFF) if m.body_crc is None else m.body_crc
    rest = b"".join((
        struct.pack(">iiqqiq", m.queue_id, m.flag, m.queue_offset, m.physical_offset, sys_flag, m.born_timestamp),
        born, _I32.pack(born_port), _I64.pack(m.store_timestamp), store, _I32.pack(store_port),
        _TAIL.pack(m.reconsume_times, m.prepared_transaction_offset, len(body)), body,
        topic_part, _I16.pack(len(props)), props,
    ))
    total = 12 + len(rest)
    return struct.pack(">iIi", total, _MAGIC_OF[m.magic], crc) + rest


# ---------------------------------------------------------------- batch bodies

@dataclass(slots=True)
class BatchMessage:
    """One message of a batch body (4.2)."""

    body: bytes = b""
    properties: dict[str, str] = field(default_factory=dict)
    flag: int = 0
    magic: int = 0
    body_crc: int = 0
    total_size: int = 0
    offset: int = field(default=-1, compare=False)

    @property
    def unique_key(self) -> str | None:
        return self.properties.get("UNIQ_KEY")

    @property
    def tags(self) -> str | None:
        return self.properties.get("TAGS")

    @property
    def keys(self) -> list[str]:
        return [k for k in self.properties.get("KEYS", "").split(" ") if k]


def decode_batch(body: bytes) -> tuple[list[BatchMessage], list[str]]:
    """Decode a batch body (SEND_BATCH_MESSAGE or inner batch). Never raises."""
    buf = bytes(body)
    n = len(buf)
    out: list[BatchMessage] = []
    problems: list[str] = []
    pos = 0
    while pos < n:
        if n - pos < _BATCH_HEAD.size + 2:
            problems.append(f"offset {pos}: {n - pos} trailing bytes, too short for a batch entry")
            break
        total, magic, crc, flag, body_len = _BATCH_HEAD.unpack_from(buf, pos)
        if total < _BATCH_HEAD.size + 2 or total > n - pos:
            problems.append(f"offset {pos}: implausible totalSize {total} ({n - pos} bytes left); stopped")
            break
        end = pos + total
        p = pos + _BATCH_HEAD.size
        if body_len < 0 or p + body_len + 2 > end:
            problems.append(f"offset {pos}: bodyLength {body_len} does not fit totalSize {total}; entry skipped")
            pos = end
            continue
        msg_body = buf[p:p + body_len]
        p += body_len
        plen = _I16.unpack_from(buf, p)[0]
        p += 2
        if plen < 0 or p + plen > end:
            problems.append(f"offset {pos}: propertiesLength {plen} does not fit totalSize {total}; entry skipped")
            pos = end
            continue
        props = _props_from_bytes(buf[p:p + plen], p, problems)
        p += plen
        if p != end:
            problems.append(f"offset {pos}: entry fields end at {p} but totalSize says {end}")
        out.append(BatchMessage(body=msg_body, properties=props, flag=flag, magic=magic,
                                body_crc=crc, total_size=total, offset=pos))
        pos = end
    return out, problems


def encode_batch(messages: Iterable[BatchMessage]) -> bytes:
    """``MessageDecoder.encodeMessages``: entries back to back, sizes computed."""
    parts: list[bytes] = []
    for m in messages:
        props = properties_to_string(m.properties).encode("utf-8")
        if len(props) > MAX_PROPERTIES_LEN:
            raise ValueError(f"properties of {len(props)} bytes exceed {MAX_PROPERTIES_LEN}")
        body = bytes(m.body)
        total = _BATCH_HEAD.size + len(body) + 2 + len(props)
        parts.append(_BATCH_HEAD.pack(total, m.magic, m.body_crc, m.flag, len(body)))
        parts.append(body)
        parts.append(_I16.pack(len(props)))
        parts.append(props)
    return b"".join(parts)
