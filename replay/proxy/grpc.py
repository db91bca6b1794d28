"""RocketMQ 5.x gRPC on a proxied connection: both directions fed to the gRPC decoder
(:class:`rmqsniff.protocols.grpc.handler.GrpcHandler`) so calls land in the one stats model, and the
endpoints in QueryRoute / QueryAssignment answers replaced with proxy listeners.

Server -> client bytes are cut at HTTP/2 frame boundaries; frames pass unchanged except
the DATA of a QueryRoute/QueryAssignment answer, which is held until its gRPC message is
complete (:class:`GrpcRouteAnswer`), then re-sent with the addresses replaced, the gRPC
message length recomputed and DATA frames of at most 16 KiB.  When the answer got
shorter, DATA padding keeps the flow-controlled size equal; when it got longer (a port
with a longer varint) the client is sent those few bytes more than the server counted.
"""
from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from rmqsniff.model import Connection

DATA, HEADERS, GOAWAY = 0, 1, 7
END_STREAM, PADDED = 0x1, 0x8
INTERNAL_ERROR = 2
MAX_DATA = 16384  # SETTINGS_MAX_FRAME_SIZE's initial value: every peer accepts it
MAX_HELD = 4 * 1024 * 1024
ROUTE_ANSWERS = {"QueryRoute": "QueryRouteResponse", "QueryAssignment": "QueryAssignmentResponse"}
_HDR = struct.Struct(">I")


def frame(ftype: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    return _HDR.pack(len(payload))[1:] + bytes((ftype, flags)) + _HDR.pack(stream_id & 0x7FFFFFFF) + payload


def goaway(last_stream_id: int, reason: str) -> bytes:
    """An HTTP/2 GOAWAY frame (INTERNAL_ERROR) carrying ``reason`` as debug data."""
    return frame(GOAWAY, 0, 0, struct.pack(">II", last_stream_id & 0x7FFFFFFF, INTERNAL_ERROR)
                 + reason.encode()[:512])


def _addresses(msg) -> list:
    """Every Address message in a QueryRoute/QueryAssignment response."""
    out = []
    queues = [a.message_queue for a in msg.assignments] if hasattr(msg, "assignments") else list(msg.message_queues)
    for mq in queues:
        if mq.HasField("broker") and mq.broker.HasField("endpoints"):
            out += [(mq.broker.endpoints, a) for a in mq.broker.endpoints.addresses]
    return out


@dataclass(slots=True)
class GrpcRouteAnswer:
    """A complete route answer of one stream, held back for rewriting."""

    kind = "grpc"
    stream_id: int
    type_name: str
    data: bytes  # the stream's DATA bytes held (gRPC message(s), padding removed)
    flow_size: int  # flow-controlled size of the frames they came in
    end_stream: bool
    addrs: list[str]

    def apply(self, mapping: dict[str, str]) -> bytes:
        """DATA frames carrying the answer with ``mapping`` applied."""
        from dissectors.grpc.schema import message_class

        data = self.data
        if mapping and len(data) >= 5 and data[0] == 0:
            n = _HDR.unpack_from(data, 1)[0]
            msg = message_class(self.type_name)()
            msg.ParseFromString(data[5:5 + n])
            changed = False
            for eps, a in _addresses(msg):
                new = mapping.get(f"{a.host}:{a.port}")
                if new is not None:
                    host, _, port = new.rpartition(":")
                    a.host, a.port = host, int(port)
                    try:
                        ipaddress.IPv4Address(host)
                    except ValueError:
                        eps.scheme = 3  # DOMAIN_NAME
                    changed = True
            if changed:
                body = msg.SerializeToString()
                data = data[:1] + _HDR.pack(len(body)) + body + data[5 + n:]
        return self._frames(data)

    def _frames(self, data: bytes) -> bytes:
        out = []
        chunks = [data[i:i + MAX_DATA] for i in range(0, len(data), MAX_DATA)] or [b""]
        short = self.flow_size - len(data)  # pad the last frame so flow control stays even
        for i, chunk in enumerate(chunks):
            last = i == len(chunks) - 1
            flags = END_STREAM if last and self.end_stream else 0
            if last and short > 0 and len(chunk) + short <= MAX_DATA:
                out.append(frame(DATA, flags | PADDED, self.stream_id, bytes((short - 1,)) + chunk
                                 + bytes(short - 1)))
            else:
                out.append(frame(DATA, flags, self.stream_id, chunk))
        return b"".join(out)


class FrameBoundary:
    """Where a forwarded byte stream stands in its HTTP/2 framing, from the 9-byte frame
    headers alone: :attr:`at_boundary` is True when every frame forwarded so far is
    complete, i.e. a frame the proxy makes up may follow without corrupting the stream."""

    __slots__ = ("need", "head")

    def __init__(self) -> None:
        self.need = 0  # bytes of the current frame still to come
        self.head = b""  # a frame header cut short

    def feed(self, data: bytes) -> None:
        n = len(data)
        pos = self.need
        if self.head:
            take = 9 - len(self.head)
            h = self.head + data[:take]
            if len(h) < 9:
                self.head = h
                return
            self.head = b""
            pos = take + int.from_bytes(h[:3], "big")
        while pos + 9 <= n:
            pos += 9 + int.from_bytes(data[pos:pos + 3], "big")
        if pos >= n:
            self.need = pos - n
        else:
            self.head, self.need = bytes(data[pos:]), 0

    @property
    def at_boundary(self) -> bool:
        return not self.need and not self.head


class _Held:
    __slots__ = ("data", "flow")

    def __init__(self) -> None:
        self.data = bytearray()
        self.flow = 0


class GrpcTap:
    """Decoding and route rewriting for one proxied gRPC (HTTP/2) connection."""

    protocol = "grpc"

    def __init__(self, conn: Connection, sink, stats, rewrite_routes: bool = False) -> None:
        from rmqsniff.protocols.grpc.handler import GrpcHandler

        self.handler = GrpcHandler(conn, sink, stats, mid_stream=False)
        self.server_spoke = False
        self.rewrite = rewrite_routes
        self._buf = bytearray()
        self._held: dict[int, _Held] = {}
        self._passthrough = False
        self.sent = FrameBoundary()  # server bytes forwarded as they came (no rewriting)

    def from_client(self, data: bytes, ts: float) -> None:
        self.handler.data(True, data, ts)

    def server_fast(self, data: bytes) -> bytes | None:
        """Server bytes to forward at once (rewriting off), before :meth:`server_decoded`;
        None: they must go through :meth:`from_server`."""
        if self.rewrite and not self._passthrough:
            return None
        self.sent.feed(data)
        return data

    def server_decoded(self, data: bytes, ts: float) -> bytes:
        self.server_spoke = True
        self.handler.data(False, data, ts)
        return b""

    def from_server(self, data: bytes, ts: float) -> list[bytes | GrpcRouteAnswer]:
        self.server_spoke = True
        if not self.rewrite or self._passthrough:
            self.sent.feed(data)
            self.handler.data(False, data, ts)
            return [data]
        try:
            return self._frames(data)
        finally:  # after the framing: the decoder ends calls (and forgets their method) on trailers
            self.handler.data(False, data, ts)

    def _frames(self, data: bytes) -> list[bytes | GrpcRouteAnswer]:
        buf = self._buf
        buf += data
        out: list[bytes | GrpcRouteAnswer] = []
        pos = start = 0
        n = len(buf)
        while n - pos >= 9:
            length = int.from_bytes(buf[pos:pos + 3], "big")
            if length > MAX_HELD:  # not HTTP/2 as we know it: stop looking
                self._passthrough = True
                break
            end = pos + 9 + length
            if end > n:
                break
            ftype, flags = buf[pos + 3], buf[pos + 4]
            sid = _HDR.unpack_from(buf, pos + 5)[0] & 0x7FFFFFFF
            type_name = self._route_type(sid) if ftype == DATA else None
            if type_name is not None or sid in self._held:
                if pos > start:
                    out.append(bytes(buf[start:pos]))
                start = end
                if ftype == DATA and type_name is not None:
                    ans = self._hold(sid, flags, bytes(buf[pos + 9:end]), type_name)
                    if ans is not None:
                        out.append(ans)
                else:  # trailers or a reset before the answer completed: send what was held as it was
                    out.append(self._release(sid) + bytes(buf[pos:end]))
            pos = end
        if self._passthrough:
            out.append(bytes(buf[start:]))
            for sid in list(self._held):
                out.insert(len(out) - 1, self._release(sid))
            buf.clear()
            return out
        if pos > start:
            out.append(bytes(buf[start:pos]))
        del buf[:pos]
        return out

    def _route_type(self, sid: int) -> str | None:
        ex = self.handler.exchanges.get(sid)
        if ex is None or ex.request is None:
            return None
        return ROUTE_ANSWERS.get(ex.request.command.name)

    def _hold(self, sid: int, flags: int, payload: bytes, type_name: str) -> GrpcRouteAnswer | None:
        h = self._held.get(sid)
        if h is None:
            h = self._held[sid] = _Held()
        h.flow += len(payload)
        if flags & PADDED and payload:
            payload = payload[1:len(payload) - payload[0]]
        h.data += payload
        d = h.data
        complete = len(d) >= 5 and len(d) >= 5 + _HDR.unpack_from(d, 1)[0]
        if not (complete or flags & END_STREAM) and len(d) < MAX_HELD:
            return None
        del self._held[sid]
        addrs = []
        if complete and d[0] == 0:
            from dissectors.grpc.schema import message_class

            try:
                msg = message_class(type_name)()
                msg.ParseFromString(bytes(d[5:5 + _HDR.unpack_from(d, 1)[0]]))
                addrs = sorted({f"{a.host}:{a.port}" for _, a in _addresses(msg)})
            except Exception:  # noqa: BLE001 - not what we expected: forward unchanged
                addrs = []
        return GrpcRouteAnswer(sid, type_name, bytes(d), h.flow, bool(flags & END_STREAM), addrs)

    def _release(self, sid: int) -> bytes:
        h = self._held.pop(sid, None)
        if h is None:
            return b""
        return GrpcRouteAnswer(sid, "", bytes(h.data), h.flow, False, [])._frames(bytes(h.data))

    def failure(self, reason: str, ts: float) -> bytes:
        """A GOAWAY for the client when the server's preface already reached it and the
        last frame forwarded is complete (so the GOAWAY is well-formed there); open calls
        then fail as UNAVAILABLE in the client.  Otherwise nothing: the connection closes."""
        if not self.server_spoke or self._passthrough or not self.sent.at_boundary:
            return b""
        f = goaway(max(self.handler.exchanges, default=0), reason)
        self.handler.data(False, f, ts)
        return f

    def close(self) -> None:
        self.handler.close()
