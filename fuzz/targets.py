"""Fuzz targets: one function per decoder, ``target(data: bytes) -> None``.

Each target feeds arbitrary bytes to a decoder and checks what the decoder promises
beyond "does not crash": only its documented exception type escapes, every stream byte
is accounted for exactly once, buffers stay under their caps, error messages are one
line, and well-formed parts still decode. A failed check raises ``AssertionError``;
any other exception escaping a target is a finding too.

The targets have no fuzzing-engine dependency: ``fuzz/run.py`` drives them with
atheris (coverage-guided), ``tests/test_fuzz.py`` with hypothesis, and
``fuzz/seeds.py`` gives each one valid inputs to start from.
"""
from __future__ import annotations

import functools
import io
from collections.abc import Callable
from pathlib import Path

from dissectors.remoting import bodies, fastjson, headers
from dissectors.remoting.codes import LANGUAGES
from dissectors.remoting.command import JSON, RemotingCommand
from dissectors.remoting.frame import DEFAULT_MAX_FRAME, FrameError, decode_frame, encode
from dissectors.remoting.message import (
    PayloadError,
    decode_batch,
    decode_stored_messages,
    decompress_body,
    parse_properties,
)
from dissectors.remoting.stream import DecodeError, Frame, Resync, StreamDecoder

MAX_PAYLOAD = 1 << 16  # decompression cap used by the body targets (keeps bombs cheap)
_I31 = 1 << 31


class Input:
    """Consume a fuzz input as small integers and byte strings (never raises)."""

    __slots__ = ("d", "p")

    def __init__(self, data: bytes) -> None:
        self.d = data
        self.p = 0

    @property
    def left(self) -> int:
        return len(self.d) - self.p

    def byte(self) -> int:
        if self.p >= len(self.d):
            return 0
        b = self.d[self.p]
        self.p += 1
        return b

    def u16(self) -> int:
        return (self.byte() << 8) | self.byte()

    def take(self, n: int) -> bytes:
        out = self.d[self.p:self.p + n]
        self.p += len(out)
        return out

    def rest(self) -> bytes:
        return self.take(self.left)


def _one_line(msg: str) -> None:
    assert isinstance(msg, str) and msg and "\n" not in msg, repr(msg)


# ------------------------------------------------------------------ remoting frames

def _int32(*vals: int) -> bool:
    return all(-_I31 <= v < _I31 for v in vals)


def remoting_frame(data: bytes) -> None:
    """``decode_frame`` on one frame: FrameError only; a decoded frame re-encodes to the
    same header, and the extFields helpers (long names, topic/group, describe, redaction)
    accept whatever was decoded."""
    try:
        cmd = decode_frame(data)
    except FrameError as e:
        _one_line(str(e))
        return
    assert cmd.frame_len == len(data)
    assert 0 <= cmd.header_len <= len(data) - 8
    assert len(cmd.body or b"") == len(data) - 8 - cmd.header_len
    assert cmd.ext is None or all(type(k) is str and type(v) is str for k, v in cmd.ext.items())
    headers.long_ext(cmd)
    headers.topic_of(cmd)
    headers.group_of(cmd)
    headers.queue_id_of(cmd)
    headers.describe(cmd)
    headers.redacted_command(cmd)
    if cmd.language not in LANGUAGES or not _int32(cmd.code, cmd.flag, cmd.opaque, cmd.version):
        return
    try:
        again = encode(cmd)
    except (ValueError, TypeError):  # e.g. a lone surrogate from a \ud800 escape: JSON cannot carry it
        return
    back = decode_frame(again)
    assert (back.code, back.flag, back.opaque, back.version, back.language) == \
        (cmd.code, cmd.flag, cmd.opaque, cmd.version, cmd.language)
    assert (back.remark or None) == (cmd.remark or None)
    assert (back.ext or None) == (cmd.ext or None)
    assert back.body == cmd.body


def remoting_stream(data: bytes) -> None:
    """``StreamDecoder`` fed in fuzz-chosen pieces with gaps: never raises, holds back
    less than one maximum frame, and every stream byte ends up in exactly one event
    span (Frame / DecodeError / Resync), as its docstring promises. With no gap, each
    Frame is exactly what ``decode_frame`` makes of its bytes."""
    inp = Input(data)
    mode = inp.byte()
    max_frame = DEFAULT_MAX_FRAME if mode & 1 else 29 + inp.u16() % 2048
    dec = StreamDecoder(max_frame=max_frame, start_in_resync=bool(mode & 2))
    stream = bytearray()
    gaps = False
    events: list = []
    while inp.left:
        op = inp.byte()
        if op < 24:  # a capture gap
            n = inp.u16() % 4096 + 1
            events += dec.gap(n)
            stream += b"\0" * n
            gaps = True
        else:
            chunk = inp.take(1 + ((op << 8 | inp.byte()) % 1536))
            events += dec.feed(chunk)
            stream += chunk
        assert dec.buffered < max(max_frame, 25), (dec.buffered, max_frame)
    events += dec.close()
    assert dec.offset == len(stream)
    spans = []
    for ev in events:
        if type(ev) is Frame:
            spans.append((ev.offset, ev.offset + ev.length))
            if not gaps:
                assert decode_frame(stream[ev.offset:ev.offset + ev.length]) == ev.command
        elif type(ev) is DecodeError:
            _one_line(ev.reason)
            if ev.length:
                spans.append((ev.offset, ev.offset + ev.length))
        else:
            assert type(ev) is Resync and ev.skipped > 0
            spans.append((ev.offset - ev.skipped, ev.offset))
    spans.sort()
    at = 0
    for s, e in spans:
        assert s == at and e > s, ("hole or overlap in the event spans", at, s, e)
        at = e
    assert at == len(stream), ("bytes not accounted for", at, len(stream))


# ------------------------------------------------------------------ bodies

_BODY_CODES = sorted(set(bodies._REQUEST_DECODERS) | set(bodies._RESPONSE_DECODERS) | {0, 10, 310, 3442})
_COMPRESSED = (0, 0x1, 0x101, 0x201, 0x301)  # sysFlag: none, zlib (old), lz4, zstd, unknown type


def remoting_body(data: bytes) -> None:
    """Body decoders (stored messages, batches, properties, register-broker, JSON
    bodies, compressed sends): ``decode_body`` never reports a decoder failure, the
    record decoders never raise, decompression raises only PayloadError and stays
    under its cap."""
    inp = Input(data)
    code = _BODY_CODES[inp.byte() % len(_BODY_CODES)]
    how = inp.byte()
    sys_flag = _COMPRESSED[how % len(_COMPRESSED)]
    ext = {"sysFlag": str(sys_flag), "f": str(sys_flag), "properties": "TAGS\x01a\x02KEYS\x01k\x02", "topic": "T"}
    body = inp.rest()
    if how & 0x80:
        req = RemotingCommand(code, 0, 1, "JAVA", 0, None, ext, b"", JSON)
        cmd = RemotingCommand(how & 0x3, 1, 1, "JAVA", 0, None, ext, body, JSON)
    else:
        req = None
        cmd = RemotingCommand(code, 0, 1, "JAVA", 0, None, ext, body, JSON)
    view = bodies.decode_body(cmd, req, max_payload=MAX_PAYLOAD)
    for e in view.errors:
        assert "body decoder failed" not in e, e
        _one_line(e)

    msgs, problems = decode_stored_messages(body)
    for p in problems:
        _one_line(p)
    for m in msgs:
        m.msg_id, m.unique_key, m.tags, m.keys, m.crc_ok, m.compression, m.transaction_type  # noqa: B018
        m.delay_level, m.inner_batch  # noqa: B018
        try:
            assert len(m.payload(MAX_PAYLOAD)) <= MAX_PAYLOAD
        except PayloadError as e:
            _one_line(str(e))
        inner, iprob = m.inner_messages(MAX_PAYLOAD)
        for p in iprob:
            _one_line(p)
    batch, problems = decode_batch(body)
    for p in problems:
        _one_line(p)
    for b in batch:
        b.unique_key, b.tags, b.keys  # noqa: B018
    value, problems = bodies.decode_register_broker(body, MAX_PAYLOAD)
    for p in problems:
        _one_line(p)
    parse_properties(body.decode("utf-8", "replace"))
    for flag in _COMPRESSED[1:]:
        try:
            out = decompress_body(body, flag, MAX_PAYLOAD)
        except PayloadError as e:
            _one_line(str(e))
        else:
            assert len(out) <= MAX_PAYLOAD


def fastjson_loads(data: bytes) -> None:
    """fastjson-style JSON: ``loads`` raises only JsonError, for bytes and for text."""
    for text in (data, data.decode("utf-8", "replace")):
        try:
            fastjson.loads(text)
        except fastjson.JsonError as e:
            _one_line(str(e))


# ------------------------------------------------------------------ gRPC: HTTP/2, HPACK, protobuf

def hpack_blocks(data: bytes) -> None:
    """HPACK: ``TolerantDecoder.decode`` raises only HpackError and the dynamic table
    stays within its size (the caller resets after an error, as the connection does)."""
    from dissectors.grpc.hpack_decoder import HpackError, TolerantDecoder

    inp = Input(data)
    mode = inp.byte()
    dec = TolerantDecoder(cut=bool(mode & 1), max_size=(4096, 0, 256, 65536)[(mode >> 1) & 3])
    while inp.left:
        block = inp.take(inp.u16())
        try:
            hb = dec.decode(block)
        except HpackError as e:
            _one_line(str(e))
            dec.reset()
            continue
        assert len(hb.headers) <= 4096
        for name, value in hb.headers:
            assert type(name) is str and type(value) is str
        assert dec.size == sum(e[2] for e in dec.table) <= dec.max_size


def grpc_connection(data: bytes) -> None:
    """A whole HTTP/2 gRPC connection (frames, HPACK, gRPC messages, protobuf bodies,
    compression) fed in fuzz-chosen pieces from both sides with gaps: events only,
    never an exception; problems are one line; open streams stay under the cap."""
    from dissectors.grpc import CallEnded, CallStarted, Encrypted, GrpcConnection, Problem, Resynced

    inp = Input(data)
    mode = inp.byte()
    conn = GrpcConnection(mid_stream=bool(mode & 1), max_message=1 << 16, max_streams=64, keep_messages=8)
    ts = 0.0
    while inp.left:
        op = inp.byte()
        fc = bool(op & 1)
        if op < 8:
            evs = conn.gap(fc, inp.u16() % 4096 + 1)
        else:
            ts += 0.001
            evs = conn.feed(fc, inp.take(1 + inp.u16() % 2048), ts)
        for ev in evs:
            assert type(ev) in (CallStarted, CallEnded, Problem, Resynced, Encrypted), ev
            if type(ev) is Problem:
                _one_line(ev.reason)
        assert len(conn.streams) <= 64
    for ev in conn.close():
        if type(ev) is CallEnded:
            ev.call.method  # noqa: B018
    assert not conn.streams


def protobuf_messages(data: bytes) -> None:
    """Protobuf bodies of every MessagingService type: ``clean_parse`` never raises, and
    whatever parses converts to plain JSON-safe data."""
    from google.protobuf.message import DecodeError as PbDecodeError

    from dissectors.grpc import messages
    from dissectors.grpc.schema import CLASSES

    names = sorted(CLASSES)
    inp = Input(data)
    name = names[inp.byte() % len(names)]
    body = inp.rest()
    messages.clean_parse(name, body)
    try:
        m = messages.parse(name, body)
    except (PbDecodeError, RuntimeError, ValueError):
        return
    import orjson

    orjson.dumps(messages.jsonable(messages.to_dict(m)))


# ------------------------------------------------------------------ filter language

_SAMPLES: list | None = None


def _samples() -> list:
    """A few real exchanges (remoting and gRPC) to apply fuzzed filters to."""
    global _SAMPLES
    if _SAMPLES is None:
        from pathlib import Path

        from rmqsniff.pipeline import analyze

        caps = Path(__file__).resolve().parent.parent / "captures"
        out = []
        for name in ("remoting_json.pcap", "remoting_rocketmq.pcap", "grpc_java.pcap"):
            p = caps / name
            if p.exists():
                out += analyze([str(p)]).exchanges[:40]
        _SAMPLES = out
    return _SAMPLES


def filter_expression(data: bytes) -> None:
    """``compile_filter`` raises only FilterError (with a caret inside the expression);
    a compiled filter answers True/False on real exchanges without raising."""
    from rmqsniff.filter import FilterError, compile_filter

    text = data.decode("utf-8", "replace")
    try:
        flt = compile_filter(text)
    except FilterError as e:
        _one_line(e.message)
        assert 0 <= e.position <= len(text), (e.position, len(text))
        e.caret()
        return
    for ex in _samples():
        assert flt(ex) in (True, False)


# ------------------------------------------------------------------ capture files

def capture_file(data: bytes) -> None:
    """pcap/pcapng bytes through the reader, link/IP/TCP decoding and the whole
    pipeline (flow table, reassembly, remoting + gRPC decoding, pairing, stats): only
    CaptureError at open; problems are one line each; counts agree."""
    from rmqsniff.pipeline import Pipeline
    from rmqsniff.sources.link import SUPPORTED_LINKTYPES, tcp_segment
    from rmqsniff.sources.pcapfile import CaptureError, CaptureReader

    try:
        reader = CaptureReader(io.BytesIO(data), "fuzz")
    except CaptureError as e:
        _one_line(str(e))
        return
    p = Pipeline(max_frame=1 << 16)
    n = 0
    for ts, linktype, frame in reader:
        n += 1
        seg = tcp_segment(frame, linktype)
        if type(seg) is tuple:
            p.table.packet(ts, *seg)
        else:
            assert type(seg) is str
        for lt in SUPPORTED_LINKTYPES:
            tcp_segment(frame, lt)
    assert n == reader.packets
    for err in reader.errors:
        _one_line(err)
    p.table.finish()
    for err in p.errors:
        _one_line(err)
    p.stats.snapshot()


def tcp_reassembly(data: bytes) -> None:
    """A known remoting conversation cut into segments that arrive in a fuzz-chosen
    order, with retransmissions and overlaps: when every byte arrives at least once,
    every request and every response decodes exactly once; never a decoding error.
    (Pairing may see a response before its request, as the two directions are fed
    independently: those are orphans, correctly.)"""
    from rmqsniff.pipeline import Pipeline

    streams = _conversation()
    inp = Input(data)
    segs: list[tuple[bool, int, int]] = []
    while inp.left >= 3:
        fc = bool(inp.byte() & 1)
        size = len(streams[fc])
        start = inp.u16() % size
        segs.append((fc, start, min(size, start + 1 + inp.byte() * 4)))
    for fc in (True, False):  # make sure every byte arrives at least once, at the end
        size = len(streams[fc])
        segs += [(fc, i, min(size, i + 700)) for i in range(0, size, 700)]
    p = Pipeline()
    cli, srv = b"\x0a\x00\x00\x01", b"\x0a\x00\x00\x02"
    isn = {True: 1000, False: 900_000}
    p.table.packet(0.0, cli, 40000, srv, 10911, isn[True] - 1, 0, 0x02, b"")
    p.table.packet(0.0, srv, 10911, cli, 40000, isn[False] - 1, isn[True], 0x12, b"")
    for fc, s, e in segs:
        src, sp, dst, dp = (cli, 40000, srv, 10911) if fc else (srv, 10911, cli, 40000)
        p.table.packet(0.0, src, sp, dst, dp, (isn[fc] + s) & 0xFFFFFFFF, 0, 0x08, streams[fc][s:e])
    p.table.finish()
    st = p.stats
    assert st.counter("request_decoding_error") == 0 and st.counter("response_decoding_error") == 0, p.errors
    assert st.counter("request") == _N_EXCHANGES and st.counter("response") == _N_EXCHANGES, p.errors
    assert st.counter("answered") + st.counter("orphan") == _N_EXCHANGES


_N_EXCHANGES = 6
_CONV: dict[bool, bytes] | None = None


def _conversation() -> dict[bool, bytes]:
    global _CONV
    if _CONV is None:
        from dissectors.remoting.command import ROCKETMQ

        c, s = [], []
        for i in range(_N_EXCHANGES):
            ser = ROCKETMQ if i % 2 else JSON
            c.append(encode(RemotingCommand(310, 0, i, "JAVA", 479, None, {"b": "TopicTest", "a": "PG"},
                                            bytes(range(256)) * (i + 1), ser)))
            s.append(encode(RemotingCommand(0, 1, i, "JAVA", 479, None, {"msgId": f"M{i}", "queueId": "1"},
                                            None, ser)))
        _CONV = {True: b"".join(c), False: b"".join(s)}
    return _CONV


_TLS_KEYS = Path(__file__).resolve().parent.parent / "captures" / "tls" / "grpc_python.keys"


@functools.lru_cache(maxsize=1)
def _tls_keylog_text() -> str:
    """The real key log of the bundled TLS capture (its seeds then decrypt: the fuzzer starts
    from records that authenticate, and mutations reach every failure path)."""
    return _TLS_KEYS.read_text() if _TLS_KEYS.exists() else ""


def tls_connection(data: bytes) -> None:
    """Both directions of a TLS connection (records, handshake messages, key schedules,
    AEAD) in fuzz-chosen pieces with capture gaps, decrypted with a real key log: events
    only, never an exception; problems and statuses are one line; the records held for a
    key and the record buffers stay within their bounds."""
    from dissectors.tls import KeyLog, Plaintext, Problem, Status, TlsConnection
    from dissectors.tls.records import MAX_BUFFER

    keylog = KeyLog()
    keylog.feed(_tls_keylog_text())
    inp = Input(data)
    conn = TlsConnection(keylog)
    while inp.left:
        op = inp.byte()
        fc = bool(op & 1)
        evs = conn.lost(fc) if op < 4 else conn.data(fc, inp.take(1 + inp.u16() % 4096))
        for ev in evs:
            assert type(ev) in (Plaintext, Status, Problem), ev
            if type(ev) is Problem:
                _one_line(ev.reason)
            elif type(ev) is Status:
                _one_line(ev.status)
        for d in conn.dirs.values():
            assert len(d.reader.buf) <= MAX_BUFFER
    for ev in conn.close():
        assert type(ev) in (Status, Problem), ev


def tls_keylog(data: bytes) -> None:
    """Key log text fed in fuzz-chosen pieces: never an exception; every line is counted as
    a secret, a comment or a one-line problem that shows no secret."""
    from dissectors.tls import KeyLog

    text = data.decode("utf-8", "replace")
    kl = KeyLog()
    cut = len(text) // 2
    kl.feed(text[:cut])
    kl.feed(text[cut:])
    kl.end()
    assert kl.bad <= kl.lines
    for p in kl.problems:
        _one_line(p)
        assert p.startswith("key log line ")
    secrets = [v.hex() for entry in kl.secrets.values() for v in entry.values()]
    secrets += [v.hex() for v in kl.by_session.values()]
    for p in kl.problems:
        assert not any(len(x) >= 32 and x in p.lower() for x in secrets)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "remoting_frame": remoting_frame,
    "remoting_stream": remoting_stream,
    "remoting_body": remoting_body,
    "fastjson": fastjson_loads,
    "hpack": hpack_blocks,
    "grpc_connection": grpc_connection,
    "protobuf": protobuf_messages,
    "filter": filter_expression,
    "capture": capture_file,
    "tcp_reassembly": tcp_reassembly,
    "tls_connection": tls_connection,
    "tls_keylog": tls_keylog,
}
