"""Remoting on a proxied connection, sans-I/O: decode both directions into the one
model (pairing -> stats), find the route answers to rewrite, answer for a failed upstream.

Client bytes are forwarded as they come. Server bytes too with ``framed`` off; with it on
(route rewriting on, not transparent) they are released in whole frames, so that a failure
answer never lands inside a frame, and on a name-server link (``rewrite_routes``)
GET_ROUTEINFO_BY_TOPIC and GET_BROKER_CLUSTER_INFO answers are held and rewritten
(:class:`RouteAnswer`).

With ``deferred`` (see :meth:`RemotingTap.server_fast`), decoding may lag the forwarding:
the caller feeds the bytes later, in order, through :meth:`from_client` and
:meth:`server_later`, and catches up before any other call.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from dissectors.remoting import codes, encode, fastjson
from dissectors.remoting.command import FLAG_RESPONSE, RemotingCommand
from dissectors.remoting.stream import Frame
from rmqsniff.model import Connection, Message
from rmqsniff.pairing import Pairing, command_of
from rmqsniff.protocols.remoting.handler import RemotingHandler

ROUTE_CODES = frozenset({codes.GET_ROUTEINFO_BY_TOPIC, codes.GET_BROKER_CLUSTER_INFO})
_PREFIX = struct.Struct(">iI")


@dataclass(slots=True)
class RouteAnswer:
    """A whole route answer frame whose broker addresses (``addrs``) are to be replaced."""

    kind = "remoting"
    frame: bytes
    addrs: list[str]

    def apply(self, mapping: dict[str, str]) -> bytes:
        return rewrite_frame(self.frame, mapping) if mapping else self.frame


def broker_addrs(body: bytes) -> list[str]:
    """Every ``brokerAddrs`` value (``ip:port``) in a topic route or cluster info body."""
    try:
        doc = fastjson.loads(body)
    except Exception:  # noqa: BLE001 - not JSON we understand: nothing to rewrite
        return []
    out: list[str] = []

    def walk(v: object) -> None:
        if isinstance(v, dict):
            for k, x in v.items():
                if k == "brokerAddrs" and isinstance(x, dict):
                    out.extend(a for a in x.values() if isinstance(a, str) and a not in out)
                else:
                    walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)

    walk(doc)
    return out


def rewrite_frame(frame: bytes, mapping: dict[str, str]) -> bytes:
    """``frame`` with each quoted ``"old"`` address of its body replaced by ``"new"``;
    the length field is recomputed, the header and everything else stay as they were."""
    _length, mark = _PREFIX.unpack_from(frame, 0)
    hend = 8 + (mark & 0xFFFFFF)
    body = frame[hend:]
    for old, new in mapping.items():
        if old != new:
            body = body.replace(f'"{old}"'.encode(), f'"{new}"'.encode())
    return _PREFIX.pack(hend - 4 + len(body), mark) + frame[8:hend] + body


def error_answer(request: RemotingCommand, remark: str) -> RemotingCommand:
    """A SYSTEM_ERROR response to ``request`` in the client's own serialization."""
    return RemotingCommand(codes.SYSTEM_ERROR, FLAG_RESPONSE, request.opaque, language="JAVA",
                           version=request.version, remark=remark, serialize=request.serialize)


class RemotingTap:
    """Decoding, rewriting and failure answers for one proxied remoting connection."""

    protocol = "remoting"

    def __init__(self, conn: Connection, sink, stats, *, rewrite_routes: bool = False,
                 framed: bool = False, max_frame: int = 16 * 1024 * 1024) -> None:
        self.conn = conn
        self.stats = stats
        # decoding and pairing: the one remoting handler (its peek lane for whole frames)
        self.handler = RemotingHandler(conn, sink, stats, max_frame=max_frame)
        self._srv = self.handler.dec[False]  # the server direction's decoder (framing questions)
        self._frames: list | None = None  # decoded server frames, while from_server wants them
        if rewrite_routes:
            self.handler.watch(self._on_frame)
        self.rewrite = rewrite_routes
        self.framed = framed or rewrite_routes  # a rewriting link is always framed
        self.deferred = False  # decoding lags forwarding (never with rewrite_routes)
        self._held = bytearray()  # server bytes not yet released (framed mode): a frame's start
        self._passthrough = False  # rewrite mode gave up (the stream is not remoting)
        self._route_opaques: set[int] = set()  # route requests (rewrite mode) not answered yet
        # whole frames are peeked and paired with Pairing.lite (no command, message or
        # exchange built) once the session reports to the proxy's sink directly
        self.lite = False

    @property
    def pairing(self) -> Pairing:
        return self.handler.pairing

    # -- bytes in ------------------------------------------------------------------
    def from_client(self, data: bytes, ts: float) -> None:
        """Client bytes (forwarded unchanged by the caller)."""
        self._feed(True, data, ts)

    def from_server(self, data: bytes, ts: float) -> list[bytes | RouteAnswer]:
        """Server bytes; returns what to send to the client, in order."""
        if not self.framed or self._passthrough:
            self._feed(False, data, ts)
            return [data]
        held = self._held
        base = self._srv.offset - len(held)  # stream offset of held[0]
        held += data
        out: list[bytes | RouteAnswer] = []
        pos = 0  # released up to held[pos]
        for fr, req_code in self._feed(False, data, ts, want_frames=True):
            if self.rewrite and req_code in ROUTE_CODES and fr.command.code == 0 and fr.command.body:
                addrs = broker_addrs(fr.command.body)
                if addrs:
                    start = fr.offset - base
                    if start > pos:
                        out.append(bytes(held[pos:start]))
                    out.append(RouteAnswer(bytes(held[start:start + fr.length]), addrs))
                    pos = start + fr.length
        dec = self._srv
        if dec.in_resync:  # not remoting after all: forward everything from now on
            self._passthrough = True
            end = len(held)
        else:
            end = len(held) - dec.buffered
        if end > pos:
            out.append(bytes(held[pos:end]))
        del held[:end]
        if self._passthrough:
            held.clear()
        return out

    def server_fast(self, data: bytes) -> bytes | None:
        """Server bytes releasable at once, before they are decoded: with ``framed`` off,
        all of them; with it on and no route request waiting for its answer, the whole
        frames (found from the length prefixes alone; a partial frame is held, as by
        :meth:`from_server`).  The caller sends them, then calls :meth:`server_decoded`
        (or, deferred, :meth:`server_later`).
        None: this data must go through :meth:`from_server` (route answer possible, or a
        prefix the fast path does not vouch for); a deferring caller catches up first."""
        if not self.framed or self._passthrough:
            return data
        held = self._held
        if self._route_opaques or (not self.deferred and len(held) != self._srv.buffered):
            return None
        n0 = len(held)
        buf: bytes | bytearray = data
        if n0:
            held += data
            buf = held
        pos, end, max_len = 0, len(buf), self._srv.max_frame - 4
        unpack = _PREFIX.unpack_from
        while end - pos >= 8:
            length, mark = unpack(buf, pos)
            # the decoder's own framing test: what passes here, it frames the same way
            if length > max_len or length < 6 or (mark >> 24) > 1 or (mark & 0xFFFFFF) > length - 4 \
                    or (mark >> 24 and length < 25):
                del held[n0:]
                return None
            nxt = pos + 4 + length
            if nxt > end:
                break
            pos = nxt
        if not n0:  # the usual case: whole frames, nothing held before: no copy
            if pos < end:
                held += memoryview(data)[pos:]
            return data if pos == end else data[:pos]
        out = bytes(held[:pos])
        del held[:pos]
        return out

    def server_decoded(self, data: bytes, ts: float) -> bytes:
        """Decode server bytes that :meth:`server_fast` dealt with; returns held bytes the
        decoder now lets go too (normally none)."""
        self._feed(False, data, ts)
        if not self.framed or self._passthrough:
            return b""
        dec, held = self._srv, self._held
        if dec.in_resync:  # not remoting after all: forward everything from now on
            self._passthrough = True
            out = bytes(held)
            held.clear()
            return out
        extra = len(held) - dec.buffered
        if extra > 0:
            out = bytes(held[:extra])
            del held[:extra]
            return out
        return b""

    def server_later(self, data: bytes, ts: float) -> bytes:
        """Deferred decoding of server bytes that :meth:`server_fast` released (possibly
        long before: ``_held`` may hold a later frame's start by now, so it is not compared
        with the decoder, whose framing is the fast path's unless it lost sync).  Returns
        held bytes to send now: all of them once the stream turns out not to be remoting."""
        self._feed(False, data, ts)
        if self.framed and not self._passthrough and self._srv.in_resync:
            self._passthrough = True
            out = bytes(self._held)
            self._held.clear()
            return out
        return b""

    def _on_peek(self, from_client: bool, code: int, flag: int, opaque: int) -> None:
        """A peeked frame (rewrite mode): route requests wait for their answers."""
        if flag & FLAG_RESPONSE:
            if not from_client:
                self._route_opaques.discard(opaque)
        elif from_client and code in ROUTE_CODES:
            self._route_opaques.add(opaque)

    def _on_frame(self, from_client: bool, fr: Frame, req_code: int | None) -> None:
        """A decoded frame (rewrite mode), before it is paired."""
        cmd = fr.command
        self._on_peek(from_client, cmd.code, cmd.flag, cmd.opaque)
        if self._frames is not None and not from_client:
            self._frames.append((fr, req_code))

    def _feed(self, from_client: bool, data: bytes, ts: float, want_frames: bool = False) -> list:
        h = self.handler
        if self.lite and not want_frames:
            pos = h.peek(from_client, data, ts, self._on_peek if self.rewrite else None)
            if pos == len(data):
                return []
            if pos:
                data = data[pos:]
        if not want_frames:
            h.data(from_client, data, ts)
            return []
        self._frames = []
        try:
            h.data(from_client, data, ts)
            return self._frames
        finally:
            self._frames = None

    # -- failure and end -------------------------------------------------------------
    def failure(self, reason: str, ts: float) -> bytes:
        """The upstream is gone: SYSTEM_ERROR answers for every request still waiting,
        counted like real answers.  Returns the bytes to send to the client: none when part
        of a server frame already went to the client (an answer would land inside that frame;
        the requests then end unanswered when the connection closes)."""
        if self._srv.buffered and (not self.framed or self._passthrough):
            return b""
        self._held.clear()
        out = []
        for ex in list(self.pairing.pending_c.values()):
            if isinstance(ex, tuple):
                request = command_of(ex)
            else:
                assert ex.request is not None  # a pending exchange is a request waiting
                request = ex.request.command
            cmd = error_answer(request, reason)
            try:
                frame = encode(cmd)
            except ValueError:
                continue
            cmd.frame_len = len(frame)
            self.pairing.frame(Message(ts, cmd, False, 0, len(frame)))
            out.append(frame)
        return b"".join(out)

    def close(self) -> None:
        """End of the connection: partial frames are reported, pending requests unanswered."""
        self.handler.close()
