"""The stat names: Envoy's ``rocketmq_proxy`` counters and gauges, rmqsniff's own, the
transport kinds and breakdowns, and Envoy's summary quantiles and histogram buckets
(see :mod:`rmqsniff.stats` for what each one means)."""
from __future__ import annotations

ENVOY_COUNTERS: tuple[str, ...] = (
    "request", "request_decoding_error", "request_decoding_success",
    "response", "response_decoding_error", "response_decoding_success",
    "response_error", "response_success",
    "heartbeat", "unregister", "get_topic_route", "send_message_v1", "send_message_v2",
    "pop_message", "ack_message", "get_consumer_list", "maintenance_failure",
)
EXTRA_COUNTERS: tuple[str, ...] = (
    "answered", "unanswered", "oneway", "orphan", "duplicate", "response_no_message",
)
GAUGES: tuple[str, ...] = (
    "request_active", "send_message_v1_active", "send_message_v2_active",
    "pop_message_active", "get_topic_route_active",
    "send_message_pending", "pop_message_pending", "get_topic_route_pending", "total_pending",
)
PENDING_KINDS: tuple[str, ...] = ("send_message", "pop_message", "get_topic_route")
TRANSPORT_KINDS: tuple[str, ...] = (
    "packets", "bytes", "flows", "flows_evicted", "gap", "gap_bytes",
    "retransmission", "out_of_order", "resync",
)
BREAKDOWNS: tuple[str, ...] = ("by_topic", "by_group", "by_client", "by_broker", "by_nameserver")
# Envoy's /stats summary quantiles
ENVOY_QUANTILES: tuple[float, ...] = (0, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 100)
# Envoy's default histogram buckets (ms), used for the Prometheus histogram
ENVOY_BUCKETS_MS: tuple[float, ...] = (
    0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000,
    300000, 600000, 1800000, 3600000,
)


def quantile_name(q: float) -> str:
    """A quantile as its key in the outputs: ``99.9`` -> ``"99.9"``, ``50.0`` -> ``"50"``."""
    return f"{q:g}"
