"""The one data model that flows from every source to every sink.

A capture file, a live tap and the built-in proxy all produce :class:`Exchange`
objects: a request, its response (when there is one), their timestamps and the
TCP connection they travelled on.  Stats, exporters, the TUI and replay only ever
look at exchanges.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Endpoint = tuple[str, int]

# Exchange.status values
ANSWERED = "answered"
UNANSWERED = "unanswered"
ONEWAY = "oneway"
ORPHAN = "orphan"


@dataclass(slots=True)
class Connection:
    """One TCP connection, oriented client -> server."""

    id: int
    client: Endpoint
    server: Endpoint
    first_ts: float = 0.0
    # how the roles were decided: "syn", "port", "flags" or "guess"
    role_source: str = "guess"
    # packets without payload that shape the connection (SYN, FIN, RST), when tracked
    control_packets: list[int] | None = None
    # packets that carry the connection's own state (HTTP/2 preface and SETTINGS…), without which
    # no exchange on it decodes again: exported with any of them, when tracked
    setup_packets: list[int] | None = None
    # how its protocol was known: "port" (well-known), "forced" (--port), "preface" / "settings"
    # (HTTP/2's first bytes), "frames" (plausible remoting frames on another port)
    recognised_by: str = ""
    # TLS under the protocol: status, version, cipher, sni, alpn (see rmqsniff.protocols.tls)
    tls: dict[str, Any] | None = None

    @property
    def label(self) -> str:
        return f"{endpoint_text(self.client)} -> {endpoint_text(self.server)}"

    def to_dict(self) -> dict[str, Any]:
        d = {"id": self.id, "client": endpoint_text(self.client), "server": endpoint_text(self.server)}
        if self.recognised_by:
            d["recognised_by"] = self.recognised_by
        if self.tls is not None:
            d["tls"] = dict(self.tls)
        return d


def endpoint_text(ep: object) -> str:
    """``host:port``, or ``[host]:port`` for an IPv6 host.  Anything that is not a tuple or a
    list (a stats key that is a name, not an endpoint) is shown as ``str(ep)``."""
    if type(ep) is not tuple and not isinstance(ep, (tuple, list)):  # (a plain tuple skips isinstance: hot)
        return str(ep)
    host = ep[0]
    return f"[{host}]:{ep[1]}" if ":" in host else f"{host}:{ep[1]}"


_ep = endpoint_text  # the name rmqsniff's modules import


@dataclass(slots=True)
class Message:
    """One side of an exchange: a decoded protocol message and when it was seen.

    ``command`` is the protocol's own decoded object (a
    :class:`dissectors.remoting.command.RemotingCommand` for remoting).
    ``from_client`` tells the direction it travelled on the connection.
    """

    ts: float
    command: Any
    from_client: bool
    stream_offset: int = 0
    size: int = 0
    # ordinals (0-based, across the files of one run) of the packets that carried
    # this message; only filled when the pipeline runs with track_packets=True
    packets: list[int] | None = None


@dataclass(slots=True)
class Exchange:
    """A request and its response, paired on one connection."""

    index: int
    connection: Connection
    protocol: str
    status: str
    request: Message | None = None
    response: Message | None = None
    # free-form notes such as "duplicate opaque", "code truncated to 16 bits"
    notes: list[str] = field(default_factory=list)

    @property
    def latency_ms(self) -> float | None:
        if self.request is None or self.response is None:
            return None
        return (self.response.ts - self.request.ts) * 1000.0

    @property
    def ts(self) -> float:
        m = self.request or self.response
        return m.ts if m else 0.0

    @property
    def code(self) -> int | None:
        """The request code (None for an orphan response)."""
        return self.request.command.code if self.request is not None else None

    @property
    def response_code(self) -> int | None:
        return self.response.command.code if self.response is not None else None

    @property
    def server_initiated(self) -> bool:
        """True for requests the server sent to the client (e.g. CHECK_TRANSACTION_STATE)."""
        m = self.request or self.response
        if m is None:
            return False
        return (not m.from_client) if self.request is not None else m.from_client


@dataclass(slots=True)
class MessageRow:
    """One message carried by an exchange (``read --messages``), whatever the protocol."""

    exchange: int
    ts: float
    kind: str  # sent, batch-sent, pulled, popped, peeked, queried, checked, consumed, received
    connection: str
    topic: str | None = None
    queue: int | None = None
    offset: int | None = None
    msg_id: str | None = None  # offset message id (store host + commit-log offset)
    unique_key: str | None = None  # UNIQ_KEY / the gRPC message id: the client's message id
    tags: str | None = None
    keys: list[str] = field(default_factory=list)
    properties: dict[str, str] = field(default_factory=dict)
    born_host: str | None = None
    born_ts: int | None = None  # ms
    store_host: str | None = None
    store_ts: int | None = None  # ms
    body: bytes = b""
    result: str | None = None  # the answer's name, "unanswered" or "oneway"
    notes: list[str] = field(default_factory=list)
    message_group: str | None = None  # FIFO message group (gRPC)
    delivery_ts: int | None = None  # ms: when a delayed / timed message becomes visible
    reconsume: int | None = None  # delivery attempt (gRPC) or reconsume times (remoting)

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(x for x in (self.unique_key, self.msg_id) if x)


# OffsetFact.kind values
BROKER_OFFSET = "broker_offset"  # the queue's max offset (or a lower bound of it: a send's queueOffset + 1)
CONSUMER_OFFSET = "consumer_offset"  # the group's committed offset
DELIVERED = "delivered"  # a message handed to a pop / gRPC consumer (in flight until acked)
ACKED = "acked"  # that message acked (or sent to the dead-letter queue)
BROKER_ADDRESS = "broker_address"  # ``broker`` (a name) serves at ``server`` (an address)


@dataclass(frozen=True, slots=True)
class OffsetFact:
    """One thing an exchange says about a consumer queue (see :mod:`rmqsniff.lag`).

    ``broker`` is the broker's name when the exchange names it, else None: then ``server``
    (the connection's server address) stands for it until a route answer or a request that
    names the broker maps the address to a name.  ``offset`` is the queue offset the fact
    is about (for DELIVERED / ACKED: the message's own queue offset)."""

    kind: str
    ts: float
    server: str
    broker: str | None = None
    topic: str | None = None
    queue: int | None = None
    group: str | None = None
    offset: int | None = None
    exchange: int = -1


@dataclass(slots=True)
class JourneyEvent:
    """One hop of one message's journey (sent, stored, delivered, acked …), as a protocol saw it.

    A message is named by its ``unique_key`` (UNIQ_KEY / the gRPC message id) when the hop
    carries it; ``aliases`` are other names of the same message learned here (``omid:`` offset
    message id, ``tx:`` transaction id, ``rh:`` receipt handle, ``qo:`` topic/queue/offset) and
    ``refs`` names it is found by when the hop carries no unique key.  ``covers`` is an offset
    commit ``(group, topic, queue, next offset)``: it acks what that group was delivered below it.
    """

    kind: str
    ts: float
    exchange: int
    connection: str
    protocol: str
    unique_key: str | None = None
    aliases: tuple[str, ...] = ()
    refs: tuple[str, ...] = ()
    topic: str | None = None
    tags: str | None = None
    keys: list[str] = field(default_factory=list)
    born_ts: int | None = None  # ms
    properties: dict[str, str] | None = None
    info: dict[str, Any] = field(default_factory=dict)  # what the hop says: queue, offset, group …
    covers: tuple[str, str, int, int] | None = None
    body: bytes | None = None  # the message body, for message-trace topics only

    @classmethod
    def hop(cls, ex: Exchange, protocol: str, kind: str, ts: float, r: MessageRow | None = None,
            **kw: Any) -> JourneyEvent:
        """An event of ``ex``; a message row ``r`` gives it the message's key, topic, tags, keys,
        birth time and properties."""
        ev = cls(kind, ts, ex.index, r.connection if r is not None else ex.connection.label, protocol, **kw)
        if r is not None:
            ev.unique_key = ev.unique_key or r.unique_key
            ev.topic, ev.tags, ev.keys, ev.born_ts = r.topic, r.tags, r.keys, r.born_ts
            ev.properties = r.properties
        return ev
