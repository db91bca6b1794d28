"""What ``rmqsniff doctor`` asks of one exchange, in RocketMQ's vocabulary, whatever the protocol.

Each protocol answers :meth:`rmqsniff.protocols.base.Protocol.doctor_facts`; the doctor's
detectors (:mod:`rmqsniff.doctor`) only read these fields.
"""
from __future__ import annotations

from dataclasses import dataclass

# DoctorFacts.kind
SEND = "send"  # a producer's send (single or batch)
ROUTE = "route"  # a topic route lookup
HEARTBEAT = "heartbeat"  # a client's heartbeat
IDS_CHANGED = "ids_changed"  # NOTIFY_CONSUMER_IDS_CHANGED: the broker asks a group to rebalance
TX_CHECK = "tx_check"  # the broker asks a producer about a half message
TX_END = "tx_end"  # a producer ends a transaction (commit / rollback / unknown)
OTHER = "other"

# DoctorFacts.cause: why an answer failed, named after the broker's response codes
BUSY = "busy"  # SYSTEM_BUSY, FLOW_CONTROL, "broker busy" remarks, TOO_MANY_REQUESTS
TOPIC_MISSING = "topic_missing"
NO_PERMISSION = "no_permission"
MESSAGE_ILLEGAL = "message_illegal"  # illegal or too large
FLUSH_TIMEOUT = "flush_timeout"  # FLUSH_DISK_TIMEOUT, FLUSH_SLAVE_TIMEOUT, SLAVE_NOT_AVAILABLE
SERVICE_UNAVAILABLE = "service_unavailable"
SUBSCRIPTION_NOT_LATEST = "subscription_not_latest"
SUBSCRIPTION_NOT_EXIST = "subscription_not_exist"

Subscription = tuple[str, str]  # (topic, expression)


@dataclass(slots=True)
class DoctorFacts:
    """The facts of one exchange the doctor's rules use; empty fields are unknown."""

    kind: str = OTHER
    cause: str | None = None
    topic: str | None = None
    group: str | None = None
    unique_keys: tuple[str, ...] = ()  # client message ids sent (UNIQ_KEY / gRPC message id)
    born_ms: int | None = None  # the first sent message's born timestamp
    largest_body: int = 0  # bytes of the largest message body sent
    client_id: str | None = None  # a heartbeat's client id
    client_kind: str | None = None  # language and version ("JAVA V5_3_0")
    # a heartbeat's consumer groups, each with its subscriptions
    subscriptions: tuple[tuple[str, tuple[Subscription, ...]], ...] = ()
    addresses: tuple[str, ...] = ()  # broker / proxy addresses a route answer hands out
    half_message: str | None = None  # a transaction check's message id
    unknown_state: bool = False  # a transaction ended as UNKNOW
    long_poll: bool = False  # the request may be held by the server on purpose (pull, pop, receive)
