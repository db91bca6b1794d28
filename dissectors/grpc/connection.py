"""A passive gRPC-over-HTTP/2 connection: both directions' bytes in, calls out.

:class:`GrpcConnection` is sans-I/O: the caller feeds each direction's in-order bytes
(with the capture time, kept as data) and reports gaps; it returns events:

* :class:`CallStarted` when a call's request headers arrive and its method is known;
* :class:`CallEnded` when the call is over (server END_STREAM/trailers, RST_STREAM,
  GOAWAY refusal, connection close or eviction) — also for calls never started
  (method inferred at the end, or only the server side seen);
* :class:`Problem` for anything that could not be decoded (counted, decoding goes on);
* :class:`Resynced` when bytes had to be skipped to find a frame boundary again.

Memory is bounded: open streams, kept messages per call, message size and the
decompressed size are capped (what is dropped is counted in the call's notes).
"""
from __future__ import annotations

import re
import zlib
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError, Message

from . import frames as fr
from .call import GRPC_OK_NO_STATUS, NO_STATUS, GrpcCall, GrpcMessage, GrpcPayload, percent_decode
from .hpack_decoder import UNKNOWN, HpackError, TolerantDecoder
from .messages import candidates, parse
from .schema import BY_NAME, BY_PATH, METHOD_OTHER, METHOD_UNKNOWN, Rpc

MAX_MESSAGE = 16 * 1024 * 1024  # largest gRPC message reassembled (bigger ones are skipped)
MAX_STREAMS = 10_000  # open streams per connection before the oldest is given up
KEEP_MESSAGES = 1_000  # messages kept per side of a call (the rest are counted)
RECENT_CLOSED = 4_096
PSEUDO = (":method", ":scheme", ":path", ":authority")
_RST_TO_GRPC = {8: 1, 7: 14, 11: 8, 12: 7}  # HTTP/2 error code -> gRPC status (gRPC spec)


@dataclass(slots=True)
class CallStarted:
    call: GrpcCall


@dataclass(slots=True)
class CallEnded:
    call: GrpcCall


@dataclass(slots=True)
class Problem:
    from_client: bool
    reason: str
    stream_id: int = 0


@dataclass(slots=True)
class Encrypted:
    """The connection is TLS: nothing on it can be decoded (reported once)."""

    from_client: bool


@dataclass(slots=True)
class Resynced:
    from_client: bool
    offset: int
    nbytes: int
    reason: str


Event = CallStarted | CallEnded | Problem | Resynced | Encrypted


class _Reasm:
    """gRPC length-prefixed message reassembly for one direction of one stream."""

    __slots__ = ("buf", "synced", "skip")

    def __init__(self, synced: bool) -> None:
        self.buf = bytearray()
        self.synced = synced
        self.skip = 0

    def feed(self, data: bytes, max_message: int) -> tuple[list[tuple[int, bytes]], str | None]:
        out: list[tuple[int, bytes]] = []
        problem = None
        if self.skip:
            n = min(self.skip, len(data))
            self.skip -= n
            data = data[n:]
        if not data:
            return out, None
        if not self.synced:  # a DATA frame that starts a message? (most writers start one per message)
            if data[0] in (0, 1) and len(data) >= 5 and int.from_bytes(data[1:5], "big") <= max_message:
                self.synced = True
            else:
                return out, "DATA without a message boundary (stream seen mid-message): skipped"
        buf = self.buf
        buf += data
        i = 0
        while len(buf) - i >= 5:
            flag = buf[i]
            ln = int.from_bytes(buf[i + 1:i + 5], "big")
            if flag > 1:
                problem = f"bad gRPC message prefix (flag {flag})"
                self.synced = False
                i = len(buf)
                break
            if ln > max_message:
                problem = f"gRPC message of {ln} bytes over the {max_message}-byte limit: skipped"
                have = len(buf) - i - 5
                self.skip = ln - have if ln > have else 0
                i = len(buf) if ln > have else i + 5 + ln
                continue
            if len(buf) - i - 5 < ln:
                break
            out.append((flag, bytes(buf[i + 5:i + 5 + ln])))
            i += 5 + ln
        if i:
            del buf[:i]
        return out, problem


class _Stream:
    __slots__ = ("call", "reasm", "req_unresolved", "born_at")

    def __init__(self, call: GrpcCall, synced: bool, born_at: int) -> None:
        self.call = call
        self.reasm = {True: _Reasm(synced), False: _Reasm(synced)}
        self.req_unresolved: list[tuple[int, int]] = []
        self.born_at = born_at


class GrpcConnection:
    """Decode one HTTP/2 connection carrying RocketMQ gRPC calls."""

    def __init__(self, *, mid_stream: bool = False, max_message: int = MAX_MESSAGE,
                 max_streams: int = MAX_STREAMS, keep_messages: int = KEEP_MESSAGES) -> None:
        self.readers = {True: fr.FrameReader(expect_preface=not mid_stream, synced=not mid_stream),
                        False: fr.FrameReader(expect_preface=False, synced=not mid_stream)}
        self.hpack = {True: TolerantDecoder(cut=mid_stream), False: TolerantDecoder(cut=mid_stream)}
        self.lossy = mid_stream  # streams opened before what we saw may show up
        self.max_message = max_message
        self.max_streams = max_streams
        self.keep = keep_messages
        self.streams: OrderedDict[int, _Stream] = OrderedDict()
        self.closed: deque[int] = deque(maxlen=RECENT_CLOSED)
        self._closed_set: set[int] = set()
        self.max_sid = 0
        self.ended = 0
        # a header block being assembled: (stream id, flags, block so far, frame bytes); -1 bytes: the
        # block went over the size limit and its CONTINUATIONs are skipped up to END_HEADERS
        self.block: dict[bool, tuple[int, int, bytearray, int] | None] = {True: None, False: None}
        self.goaway: tuple[int, int] | None = None  # (last stream id, error code)
        self.slot_methods: dict[int, set[str]] = {}
        self.frames = 0
        self.tls = False
        self._seen = {True: False, False: False}
        self.ts = 0.0
        self._out: list[Event] = []
        # (from_client, stream id, start, end) of every frame in its direction's byte stream,
        # for a caller that maps frames to packets (None: not kept); the caller drains it
        self.spans: list[tuple[bool, int, int, int]] | None = None

    # ----------------------------------------------------------------- input
    def feed(self, from_client: bool, data: bytes, ts: float = 0.0) -> list[Event]:
        """In-order bytes of one direction; ``ts`` (capture time) is stamped on what they complete."""
        self.ts = ts
        out = self._out = []
        if self.tls:
            return out
        if not self._seen[from_client] and data:
            self._seen[from_client] = True
            if _looks_tls(data):
                self.tls = True
                out.append(Encrypted(from_client))
                return out
        spans = self.spans
        for f in self.readers[from_client].feed(data):
            if isinstance(f, fr.Frame):
                self.frames += 1
                if spans is not None:
                    spans.append((from_client, f.stream_id, f.offset, f.offset + 9 + len(f.payload)))
                self._frame(from_client, f, ts)
            else:
                self._skipped(from_client, f)
        return out

    def gap(self, from_client: bool, nbytes: int) -> list[Event]:
        """``nbytes`` of one direction are missing from the capture."""
        out = self._out = []
        if self.tls:
            return out
        for s in self.readers[from_client].gap(nbytes):
            self._skipped(from_client, s)
        self._lost_state(from_client)
        return out

    def close(self) -> list[Event]:
        """End of the connection (or capture): every open call ends."""
        out = self._out = []
        if self.tls:
            return out
        for fc in (True, False):
            for f in self.readers[fc].close():
                if isinstance(f, fr.Frame):
                    self.frames += 1
                    self._frame(fc, f, self.ts)
                else:
                    self._skipped(fc, f)
        for sid in list(self.streams):
            st = self.streams[sid]
            st.call.ended_by = st.call.ended_by or "close"
            self._finish(sid, "no end of the call before the end of the connection")
        return out

    # ----------------------------------------------------------------- frames
    def _skipped(self, from_client: bool, s: fr.Skipped) -> None:
        self._out.append(Resynced(from_client, s.offset, s.nbytes, s.reason))
        self._lost_state(from_client)

    def _lost_state(self, from_client: bool) -> None:
        """Bytes of a direction were lost or skipped: header state and message boundaries
        of that direction can no longer be trusted."""
        self.lossy = True
        self.hpack[from_client].reset()
        self.block[from_client] = None
        for st in self.streams.values():
            r = st.reasm[from_client]
            r.buf.clear()
            r.skip = 0
            r.synced = False

    def _frame(self, fc: bool, f: fr.Frame, ts: float) -> None:
        t = f.type
        pend = self.block[fc]
        if pend is not None and t != fr.CONTINUATION:
            self._problem(fc, f"{f.name} frame inside a header block", pend[0])
            self.block[fc] = None
            self.hpack[fc].reset()
            pend = None
        if t == fr.DATA:
            self._data(fc, f, ts)
        elif t == fr.HEADERS:
            self._headers(fc, f, ts)
        elif t == fr.CONTINUATION:
            self._continuation(fc, f, ts, pend)
        elif t == fr.RST_STREAM:
            self._rst_stream(fc, f, ts)
        elif t == fr.SETTINGS:
            if not f.flags & fr.ACK:
                self._settings(fc, f.payload)
        elif t == fr.GOAWAY:
            self._goaway(fc, f.payload)
        elif t == fr.PUSH_PROMISE:
            self._problem(fc, "PUSH_PROMISE (gRPC never pushes)", f.stream_id)
        # PING, PRIORITY, WINDOW_UPDATE and unknown types carry nothing for the calls

    def _headers(self, fc: bool, f: fr.Frame, ts: float) -> None:
        p = f.payload
        try:
            p = _unpad(p, f.flags)
            if f.flags & fr.PRIORITY_FLAG:
                p = p[5:]
        except ValueError as e:
            self._problem(fc, f"HEADERS: {e}", f.stream_id)
            self.hpack[fc].reset()
            return
        if f.flags & fr.END_HEADERS:
            self._block(fc, f.stream_id, f.flags, bytes(p), len(f.payload) + 9, ts)
        else:
            self.block[fc] = (f.stream_id, f.flags, bytearray(p), len(f.payload) + 9)

    def _continuation(self, fc: bool, f: fr.Frame, ts: float, pend: tuple[int, int, bytearray, int] | None) -> None:
        if pend is None or pend[0] != f.stream_id:
            self._problem(fc, "CONTINUATION without its HEADERS", f.stream_id)
            if pend is not None:
                self.block[fc] = None
                self.hpack[fc].reset()
            return
        sid, flags, buf, size = pend
        if size < 0:  # the rest of a block already reported over the limit: dropped up to its end
            if f.flags & fr.END_HEADERS:
                self.block[fc] = None
            return
        buf += f.payload
        size += len(f.payload) + 9
        if len(buf) > self.max_message:
            # one problem for the block; its remaining CONTINUATIONs are passed over
            self._problem(fc, "header block over the size limit", sid)
            self.block[fc] = None if f.flags & fr.END_HEADERS else (sid, flags, bytearray(), -1)
            self.hpack[fc].reset()
            return
        if f.flags & fr.END_HEADERS:
            self.block[fc] = None
            self._block(fc, sid, flags, bytes(buf), size, ts)
        else:
            self.block[fc] = (sid, flags, buf, size)

    def _rst_stream(self, fc: bool, f: fr.Frame, ts: float) -> None:
        st = self.streams.get(f.stream_id)
        if st is None and fc is False and f.stream_id not in self._closed_set and self.lossy \
                and f.stream_id <= self.max_sid:
            st = None  # a stream from before the capture: nothing to report
        if st is not None and len(f.payload) == 4:
            c = st.call
            c.reset_code = int.from_bytes(f.payload, "big")
            c.reset_by_client = fc
            c.ended_by = "rst_stream"
            side = c.request if fc else c.response
            side.last_ts = ts
            self._finish(f.stream_id, f"reset by the {'client' if fc else 'server'}: "
                                      f"RST_STREAM {fr.error_name(c.reset_code)}")

    def _settings(self, fc: bool, p: bytes) -> None:
        for i in range(0, len(p) - 5, 6):
            ident = int.from_bytes(p[i:i + 2], "big")
            val = int.from_bytes(p[i + 2:i + 6], "big")
            if ident == 5 and 16384 <= val <= fr.MAX_FRAME_LIMIT:
                self.readers[not fc].max_len = val  # frames sent to this peer
            elif ident == 1:  # SETTINGS_HEADER_TABLE_SIZE: bounds what the peer's encoder may use
                self.hpack[not fc].set_limit(val)

    def _goaway(self, fc: bool, p: bytes) -> None:
        if len(p) >= 8:
            last = int.from_bytes(p[:4], "big") & 0x7FFFFFFF
            err = int.from_bytes(p[4:8], "big")
            self.goaway = (last, err)
            if not fc:
                for sid in [s for s in self.streams if s > last]:
                    self.streams[sid].call.ended_by = "goaway"
                    self._finish(sid, f"refused: GOAWAY (last stream {last}, {fr.error_name(err)})")

    def _problem(self, fc: bool, reason: str, sid: int = 0) -> None:
        self._out.append(Problem(fc, reason, sid))

    def _stream(self, fc: bool, sid: int, headers: bool) -> _Stream | None:
        st = self.streams.get(sid)
        if st is not None:
            return st
        if sid == 0 or sid in self._closed_set:
            return None
        fresh = sid > self.max_sid
        if not fresh and not self.lossy:
            self._problem(fc, "frame for a stream that is not open", sid)
            return None
        call = GrpcCall(sid, GrpcMessage(sid, True), GrpcMessage(sid, False))
        if not (fresh and fc and headers):
            call.partial = True
            call.notes.append("the start of this call is not in the capture")
        # a fresh stream whose first frame is its HEADERS starts at a message boundary
        st = _Stream(call, synced=fresh and headers, born_at=self.ended)
        if sid > self.max_sid:
            self.max_sid = sid
        self.streams[sid] = st
        if len(self.streams) > self.max_streams:
            old = next(iter(self.streams))
            self.streams[old].call.ended_by = "evicted"
            self._finish(old, "evicted: too many open streams on this connection")
        return st

    def _block(self, fc: bool, sid: int, flags: int, block: bytes, size: int, ts: float) -> None:
        dec = self.hpack[fc]
        try:
            hb = dec.decode(block)
            headers, unresolved = hb.headers, hb.unresolved
        except HpackError as e:
            self._problem(fc, f"HPACK: {e}", sid)
            dec.reset()
            headers, unresolved = [(UNKNOWN, UNKNOWN)], []
        st = self._stream(fc, sid, True)
        if st is None:
            return
        c = st.call
        side = c.request if fc else c.response
        if unresolved:
            unresolved = self._infer_names(fc, headers, unresolved, side.headers_seen)
        if fc:
            c.client_seen = True
        else:
            c.server_seen = True
        side.size += size
        if not side.first_ts:
            side.first_ts = ts
        side.last_ts = ts
        if not fc and not side.headers_seen and flags & fr.END_STREAM and ":status" not in (k for k, _ in headers) \
                and c.partial:
            side.trailers = headers  # the response headers were before the capture: these are trailers
            side.unresolved += len(unresolved)
        elif not side.headers_seen:
            side.headers_seen = True
            side.headers = headers
            side.unresolved = len(unresolved)
            if not fc and flags & fr.END_STREAM:  # trailers-only response
                side.trailers = [(k, v) for k, v in headers if not k.startswith(":")]
            if fc:
                st.req_unresolved = unresolved
                self._request_headers(st)
            else:
                c.encoding_s = _header(headers, "grpc-encoding")
        else:
            side.trailers = headers
            side.unresolved += len(unresolved)
        if flags & fr.END_STREAM:
            side.end_stream = True
            if not fc:
                c.ended_by = "trailers"
                self._finish(sid, None)

    def _infer_names(self, fc: bool, headers: list[tuple[str, str]], unresolved: list[tuple[int, int]],
                     trailers: bool) -> list[tuple[int, int]]:
        """Name unknown-name headers from the shape of their value (x-mq-request-id is a
        UUID, x-mq-date-time a compact date …) and teach the HPACK decoder, which then
        resolves every table entry carrying the same name."""
        dec = self.hpack[fc]
        left = []
        for pos, token in unresolved:
            v = headers[pos][1]
            name = None if v == UNKNOWN else _name_from_value(v, fc, trailers)
            if name is None:
                left.append((pos, token))
                continue
            dec.learn_name(token, name)
            headers[pos] = (name, v)
        return left

    def _request_headers(self, st: _Stream) -> None:
        c = st.call
        req = c.request
        c.encoding_c = _header(req.headers, "grpc-encoding")
        path = _header(req.headers, ":path")
        if path is not None and path != UNKNOWN:
            req.path = path
            rpc = BY_PATH.get(path)
            if rpc is not None:
                self._set_method(c, rpc, "path")
            else:
                req.code = METHOD_OTHER
                req.method = None
                c.how = req.how = "path"
        else:
            c.how = req.how = "unknown"
            c.notes.append(":path refers to a header-table entry from before the capture")
        if c.how == "path" and not c.started:
            c.started = True
            self._out.append(CallStarted(c))

    def _set_method(self, c: GrpcCall, rpc: Rpc, how: str) -> None:
        c.request.method = c.response.method = rpc.name
        c.request.code = rpc.code
        c.how = c.request.how = how
        for p in c.request.messages:
            self._decode(p, rpc.request, True, c.stream_id)
        for p in c.response.messages:
            self._decode(p, rpc.response, False, c.stream_id)

    def _decode(self, p: GrpcPayload, type_name: str, fc: bool, sid: int) -> None:
        if p.message is not None or p.error is not None:
            return
        p.type_name = type_name
        try:
            p.message = parse(type_name, p.data)
        except (DecodeError, RuntimeError, ValueError) as e:
            p.error = f"{type_name}: {e}"
            self._problem(fc, f"protobuf {type_name} did not parse", sid)

    def _data(self, fc: bool, f: fr.Frame, ts: float) -> None:
        st = self._stream(fc, f.stream_id, False)
        if st is None:
            return
        c = st.call
        side = c.request if fc else c.response
        if fc:
            c.client_seen = True
        else:
            c.server_seen = True
        side.size += len(f.payload) + 9
        if not side.first_ts:
            side.first_ts = ts
        side.last_ts = ts
        try:
            p = _unpad(f.payload, f.flags)
        except ValueError as e:
            self._problem(fc, f"DATA: {e}", f.stream_id)
            p = b""
        if p:
            msgs, problem = st.reasm[fc].feed(p, self.max_message)
            if problem:
                self._problem(fc, problem, f.stream_id)
            for flag, body in msgs:
                self._message(st, fc, flag, body, ts)
        if f.flags & fr.END_STREAM:
            side.end_stream = True
            if not fc:
                c.ended_by = "end_stream"
                self._finish(f.stream_id, "server ended the stream without trailers")

    def _message(self, st: _Stream, fc: bool, flag: int, body: bytes, ts: float) -> None:
        c = st.call
        side = c.request if fc else c.response
        wire = 5 + len(body)
        if flag:
            enc = c.encoding_c if fc else c.encoding_s
            body, err = _decompress(body, enc, self.max_message)
            if err:
                self._problem(fc, err, c.stream_id)
                side.dropped += 1
                c.notes.append(err)
                return
        if len(side.messages) >= self.keep:
            side.dropped += 1
            if side.dropped == 1:
                c.notes.append(f"more than {self.keep} messages on one side: the rest are counted, not kept")
            return
        p = GrpcPayload(ts, body, bool(flag), wire)
        side.messages.append(p)
        rpc = BY_NAME.get(c.request.method) if c.request.method is not None else None
        if rpc is not None:
            self._decode(p, rpc.request if fc else rpc.response, fc, c.stream_id)

    # ----------------------------------------------------------------- end of calls
    def _finish(self, sid: int, note: str | None) -> None:
        st = self.streams.pop(sid, None)
        if st is None:
            return
        self.ended += 1
        if len(self.closed) == self.closed.maxlen:
            self._closed_set.discard(self.closed[0])
        self.closed.append(sid)
        self._closed_set.add(sid)
        c = st.call
        if note:
            c.notes.append(note)
        for fc in (True, False):
            r = st.reasm[fc]
            if r.buf or r.skip:
                c.notes.append(f"incomplete gRPC message from the {'client' if fc else 'server'} was dropped")
        if c.request.code == METHOD_UNKNOWN and (c.request.messages or c.response.messages):
            self._infer(st)
        self._status(c)
        self._out.append(CallEnded(c))

    def _infer(self, st: _Stream) -> None:
        c = st.call
        req = [p.data for p in c.request.messages]
        resp = [p.data for p in c.response.messages]
        gs = _int_header(c.response.trailers, "grpc-status")
        long_lived = self.ended - st.born_at > 3 and c.ended_by in ("close", "rst_stream")
        found = candidates(req, resp, grpc_status=gs, long_lived=long_lived)
        if not found:
            c.how = c.request.how = "unknown"
            c.notes.append("method unknown: the bodies fit no MessagingService method")
            return
        self._set_method(c, found[0], "inferred" if len(found) == 1 else "ambiguous")
        c.alternatives = [r.name for r in found[1:]]
        c.notes.append(f"method inferred from the bodies: {found[0].name}"
                       + (f" (also fits {', '.join(c.alternatives)})" if c.alternatives else ""))
        if len(found) == 1 and st.req_unresolved:
            self._learn_path(c, st.req_unresolved, found[0])

    def _learn_path(self, c: GrpcCall, unresolved: list[tuple[int, int]], rpc: Rpc) -> None:
        """Back-fill the pre-cut HPACK slot that held this call's ``:path``."""
        headers = c.request.headers
        known = set()
        cand = []
        pos_unres = dict(unresolved)
        for i, (k, _v) in enumerate(headers):
            if i in pos_unres:
                cand.append(pos_unres[i])
            elif k.startswith(":"):
                known.add(k)
            else:
                break  # pseudo-headers come first
        missing = [p for p in PSEUDO if p not in known]
        if ":path" not in missing:
            return
        slot = None
        if len(cand) == 1 and len(missing) == 1:
            slot = cand[0]
        elif len(cand) >= 2 and len(self.slot_methods) < 1024:
            for s in cand:
                self.slot_methods.setdefault(s, set()).add(rpc.name)
            single = [s for s in cand if len(self.slot_methods[s]) == 1]
            multi = [s for s in cand if len(self.slot_methods[s]) > 1]
            if len(single) == 1 and len(multi) == len(cand) - 1:
                slot = single[0]
        if slot is not None:
            self.hpack[True].learn(slot, ":path", rpc.path)

    def _status(self, c: GrpcCall) -> None:
        resp = c.response
        src = resp.trailers or ([] if resp.end_stream else [])
        gs = _int_header(src, "grpc-status")
        if gs is None and not resp.trailers:
            gs = _int_header(resp.headers, "grpc-status")
        resp.grpc_status = gs
        gm = _header(resp.trailers, "grpc-message") or _header(resp.headers, "grpc-message")
        resp.grpc_message = percent_decode(gm) if gm and gm != UNKNOWN else None
        for p in resp.messages:
            m = p.message
            if m is None:
                continue
            fd = m.DESCRIPTOR.fields_by_name.get("status")
            if fd is not None and m.HasField("status"):
                status = _field(m, "status")
                resp.status_code = status.code
                resp.status_message = status.message
                break
        resp.code = response_code(c)


def _field(m: Message, name: str) -> Any:
    """Field ``name`` of a message whose class is built at run time from the schema (the
    type checker only knows the ``Message`` base)."""
    return getattr(m, name)


def response_code(c: GrpcCall) -> int:
    """The stats response code of a call: a non-zero gRPC status wins (as ``-status``); a
    reset maps to a gRPC status unless the client cancelled a call the server had
    answered; else the RocketMQ ``Status.code`` of the body; else ``GRPC_OK``/``NO_STATUS``."""
    r = c.response
    gs = r.grpc_status
    if gs is not None and gs != 0:
        return -gs
    if c.reset_code is not None and gs is None \
            and not (c.reset_by_client and c.reset_code == 8 and r.status_code is not None):
        return -_RST_TO_GRPC.get(c.reset_code, 13)
    if r.status_code is not None:
        return r.status_code
    return GRPC_OK_NO_STATUS if gs == 0 else NO_STATUS


_VALUE_SHAPES: tuple[tuple[re.Pattern[str], str], ...] = tuple((re.compile(p), n) for p, n in (
    (r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "x-mq-request-id"),
    (r"\d{8}T\d{6}Z|\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d.*", "x-mq-date-time"),
    (r"MQv2-HMAC-\S+ Credential=.*", "authorization"),
    (r"\d{1,8}[HMSmun]", "grpc-timeout"),
    (r"application/grpc(\+\w+)?", "content-type"),
    (r"trailers", "te"),
    (r"[^@\s]+@\d+@\d+@[0-9a-z]+", "x-mq-client-id"),
    (r"JAVA|CPP|DOTNET|PYTHON|GO|GOLANG|RUST|HTTP|NODE_JS|PHP|RUBY", "x-mq-language"),
    (r"v2|GRPC_V2", "x-mq-protocol"),
    (r"grpc-[\w.-]+/\S+.*", "user-agent"),
    (r"(identity|deflate|gzip)(, ?(identity|deflate|gzip))+", "grpc-accept-encoding"),
))


def _name_from_value(v: str, from_client: bool, trailers: bool) -> str | None:
    if not from_client:
        if trailers and v.isdigit() and int(v) <= 16:
            return "grpc-status"
        m = _VALUE_SHAPES[4][0]
        return "content-type" if m.fullmatch(v) else None
    for pat, name in _VALUE_SHAPES:
        if pat.fullmatch(v):
            return name
    return None


def _looks_tls(data: bytes) -> bool:
    """A TLS record header (handshake 0x16 or application data 0x17, version 3.x) followed,
    when the data is long enough, by another record or the end of the data."""
    if len(data) < 5 or data[0] not in (0x16, 0x17) or data[1] != 3 or data[2] > 4:
        return False
    end = 5 + int.from_bytes(data[3:5], "big")
    return end >= len(data) or (data[end] in (0x14, 0x15, 0x16, 0x17) and data[end + 1:end + 2] in (b"\x03", b""))


def _header(headers: list[tuple[str, str]], name: str) -> str | None:
    for k, v in headers:
        if k == name:
            return v
    return None


def _int_header(headers: list[tuple[str, str]], name: str) -> int | None:
    v = _header(headers, name)
    if v is None or not v.isdigit():
        return None
    return int(v)


def _unpad(p: bytes, flags: int) -> bytes:
    if not flags & fr.PADDED:
        return p
    if not p:
        raise ValueError("PADDED frame without a pad length")
    pad = p[0]
    if pad >= len(p):
        raise ValueError(f"padding {pad} longer than the frame")
    return p[1:len(p) - pad]


def _decompress(body: bytes, encoding: str | None, limit: int) -> tuple[bytes, str | None]:
    if encoding == "gzip":
        wbits = 31
    elif encoding == "deflate":
        wbits = 15
    elif encoding in (None, UNKNOWN):
        wbits = 47  # header lost: let zlib detect gzip or zlib
    else:
        return b"", f"gRPC message compressed with unsupported {encoding!r}"
    d = zlib.decompressobj(wbits)
    try:
        out = d.decompress(body, limit)
    except zlib.error as e:
        return b"", f"gRPC message did not decompress ({encoding}): {e}"
    if d.unconsumed_tail:
        return b"", f"decompressed gRPC message over the {limit}-byte limit"
    return out, None
