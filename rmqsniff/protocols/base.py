"""What every protocol supplies, and the registry the rest of rmqsniff asks.

A protocol (remoting, gRPC) is one :class:`Protocol` object: recognition, the
per-connection handler, the stats classifier, filter fields, JSON output, the detail
tree, message rows, follow lines and replay planning.  Code outside
:mod:`rmqsniff.protocols` asks :func:`protocol_of` / :func:`protocol_named` and never
branches on a protocol's name.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from typing import Protocol as TypingProtocol

if TYPE_CHECKING:
    from ..model import Exchange, JourneyEvent, Message, MessageRow, OffsetFact
    from ..tree import Node
    from .facts import DoctorFacts

Getter = Callable[["Exchange"], Any]
Side = dict[str, Any] | None


class Handler(TypingProtocol):
    """What every protocol's connection handler does."""

    lane_ok: bool  # takes whole peeked frames in stats-only runs (``lane``)

    def data(self, from_client: bool, data: bytes, ts: float) -> None:
        """In-order bytes of one direction."""

    def lost(self, from_client: bool, nbytes: int) -> None:
        """Bytes of one direction missing from the capture."""

    def close(self, ts: float = 0.0) -> None:
        """End of the connection (or of the capture): whatever is open ends."""

    def swap(self) -> None:
        """The roles were the wrong way round."""

    def track(self, packets_for: Callable[[bool, int, int], list[int]]) -> None:
        """Fill ``Message.packets`` with the packets that carried each side."""

    def lane(self, buf: Any, t: int, n: int, ts: float, from_client: bool, start: int, events: list[Any],
             apply: Callable[[str, list[Any]], None]) -> bool:
        """Stats-only fast lane for a segment ``buf[t:t+n]`` (only called when ``lane_ok``)."""
        return False


@dataclass(frozen=True, slots=True)
class Classifier:
    """What the stats need of a protocol: names, success/error rule, topic and group."""

    request_name: Callable[[int], str]
    response_name: Callable[[int], str]
    classify: Callable[[int | None, int], str]  # "success" | "no_message" | "error"
    topic_of: Callable[[Any], str | None]
    group_of: Callable[[Any], str | None]
    envoy_counter: dict[int, str]  # request code -> Envoy per-request counter
    active_gauge: dict[int, str]  # request code -> Envoy *_active gauge
    maintenance: frozenset[int]  # error answers to these count as maintenance_failure
    nameserver_codes: frozenset[int]
    nameserver_ports: frozenset[int]


def _none(_cmd: Any) -> str | None:
    return None


GENERIC = Classifier(
    request_name=lambda c: f"CODE_{c}", response_name=lambda c: f"CODE_{c}",
    classify=lambda req, resp: "success" if resp == 0 else "error",
    topic_of=_none, group_of=_none, envoy_counter={}, active_gauge={},
    maintenance=frozenset(), nameserver_codes=frozenset(), nameserver_ports=frozenset(),
)


class Protocol:
    """The interface; the defaults describe a protocol known only by its classifier."""

    name = "unknown"
    classifier: Classifier = GENERIC
    # server ports that mean this protocol when nothing else tells
    well_known_ports: frozenset[int] = frozenset()
    # how a code is shown when several protocols share a table (``grpc:SendMessage``)
    code_prefix = ""

    # -- recognition and decoding ------------------------------------------------
    def recognise(self, data: bytes, from_client: bool) -> str | None:
        """How the first bytes of one direction show this protocol (``"preface"``,
        ``"settings"`` …), or None."""
        return None

    def handler(self, conn: Any, sink: Any, stats: Any, mid_stream: bool | tuple[bool, bool], *,
                owner: Any = None, candidate: bool = False, max_frame: int = 16 * 1024 * 1024) -> Any:
        """A per-connection handler (see :class:`Handler`); it reports exchanges to ``sink`` and
        problems to ``stats`` and its ``owner``.  ``mid_stream``: the connection's start was not
        seen (for both directions, or client's and server's); ``candidate``: not known to be
        this protocol yet."""
        raise NotImplementedError(f"{self.name}: no connection handler")

    # -- questions about exchanges ---------------------------------------------------
    @property
    def fields(self) -> Mapping[str, Getter]:
        """Filter fields (see :mod:`rmqsniff.filter`); absent ones are missing."""
        return _classifier_fields(self.classifier)

    def code_literal(self, text: str) -> int | None:
        """A request or response code named in a filter, or None."""
        return None

    def code_key(self, code: int) -> str:
        """The request code as a table key (``SEND_MESSAGE_V2``, ``grpc:SendMessage``)."""
        return self.code_prefix + self.classifier.request_name(code)

    def result(self, ex: Exchange) -> str | None:
        """success / no_message / error for an answered exchange, else None."""
        if ex.request is None or ex.response is None:
            return None
        return self.classifier.classify(ex.request.command.code, ex.response.command.code)

    # -- output -----------------------------------------------------------------------
    def sides(self, ex: Exchange, redact: bool) -> tuple[Side, Side]:
        """(request, response) JSON objects, secrets redacted unless ``redact`` is False."""
        cl = self.classifier

        def side(m: Message | None, is_resp: bool) -> Side:
            if m is None:
                return None
            code = m.command.code
            return {"ts": m.ts, "code": code, "name": cl.response_name(code) if is_resp else cl.request_name(code),
                    "frame_len": m.size, "from": "client" if m.from_client else "server"}
        return side(ex.request, False), side(ex.response, True)

    def detail(self, root: Node, ex: Exchange, redact: bool) -> None:
        """Add the request and response branches of the detail tree under ``root``."""
        from ..tree import json_node

        for key, value in zip(("request", "response"), self.sides(ex, redact), strict=True):
            if value is not None:
                n = root.add(key.capitalize(), side=key, expand=True)
                for k, v in value.items():
                    json_node(n, str(k), v)

    def secrets(self, m: Message) -> tuple[list[bytes], bool]:
        """Secret values one side carries, as they stand on the wire, and whether some are
        encoded so that they cannot be found in its bytes (e.g. Huffman-coded)."""
        return [], False

    def wire_secrets(self, m: Message) -> list[list[tuple[bytes, bytes]]]:
        """For every secret value of one side, the forms it may take in the TCP payload, each
        with a replacement of the same length that keeps the frames valid (for overwriting
        in place)."""
        return []

    def messages(self, ex: Exchange) -> list[MessageRow]:
        """The messages the exchange carries (sent, delivered …), one row each."""
        return []

    # request codes whose exchanges may have offset facts (None: any); lets a caller skip
    # building exchanges that cannot (a lane's peeked frames)
    offset_codes: frozenset[int] | None = frozenset()

    def offset_facts(self, ex: Exchange) -> list[OffsetFact]:
        """What the exchange says about queue offsets: the broker's max offset, a group's
        committed offset, messages delivered to / acked by pop consumers (consumer lag)."""
        return []

    def journey_events(self, ex: Exchange) -> list[JourneyEvent]:
        """The hops of message journeys the exchange shows (see :mod:`rmqsniff.journey`)."""
        return []

    def follow(self, ex: Exchange, m: Message, redact: bool) -> dict[str, Any]:
        """One side of an exchange as a ``follow`` entry (see :func:`rmqsniff.views.frame_to_dict`)."""
        side = self.sides(ex, redact)[1 if m is ex.response else 0] or {}
        return follow_entry(ex, m, side.get("name", str(m.command.code)), None, None, None, None, [], side)

    def doctor_facts(self, ex: Exchange) -> DoctorFacts | None:
        """What ``rmqsniff doctor`` needs of an exchange (None: nothing it can judge)."""
        return None

    def pending_kind(self, code: int) -> str | None:
        """Which proxy ``*_pending`` gauge a request of ``code`` waiting for its upstream counts in."""
        return _PENDING_OF.get(self.classifier.envoy_counter.get(code, ""))

    # -- replay -----------------------------------------------------------------------
    @property
    def planner(self) -> Any:
        """The replay planning module for this protocol (None: not replayable)."""
        return None


_PENDING_OF = {"send_message_v1": "send_message", "send_message_v2": "send_message",
               "pop_message": "pop_message", "get_topic_route": "get_topic_route"}


def follow_entry(ex: Exchange, m: Message, name: str, opaque: Any, flag: int | None, remark: str | None,
                 ext: dict[str, str] | None, body: list[str], detail: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON of one ``follow`` frame; ``body`` holds one line per carried part."""
    d: dict[str, Any] = {
        "exchange": ex.index, "ts": m.ts, "direction": "client->server" if m.from_client else "server->client",
        "role": "response" if m is ex.response else "request", "code": m.command.code, "name": name,
        "opaque": opaque, "flag": flag, "remark": remark, "ext": ext, "frame_len": m.size,
        "body": body[0] if len(body) == 1 else "\n".join(body),
    }
    if detail is not None:
        d["detail"] = detail
    return d


def _classifier_fields(cl: Classifier) -> dict[str, Getter]:
    def req(ex: Exchange) -> Any:
        return ex.request.command if ex.request is not None else None

    return {
        "code": lambda ex: c.code if (c := req(ex)) is not None else None,
        "response_code": lambda ex: ex.response.command.code if ex.response is not None else None,
        "topic": lambda ex: cl.topic_of(c) if (c := req(ex)) is not None else None,
        "group": lambda ex: cl.group_of(c) if (c := req(ex)) is not None else None,
        "code_name": lambda ex: cl.request_name(c.code) if (c := req(ex)) is not None else None,
        "response_code_name": lambda ex: (cl.response_name(ex.response.command.code)
                                          if ex.response is not None else None),
    }


UNKNOWN = Protocol()
UNKNOWN.code_prefix = "unknown:"
