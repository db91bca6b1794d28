"""The one stats model: Envoy's ``rocketmq_proxy`` stat set plus richer breakdowns.

Captures, the live tap, the proxy and replay all feed the same :class:`Stats` with
events from the pairing layer.  Names are rooted at ``rocketmq.<prefix>.``.

Envoy stats (all really updated; Envoy itself never updates some of them):

| name | type | meaning in rmqsniff |
|---|---|---|
| request | counter | every request seen, decoded or not |
| request_decoding_success | counter | requests decoded (``request_started`` calls) |
| request_decoding_error | counter | request frames that failed to decode |
| response | counter | every response seen, decoded or not (orphans included) |
| response_decoding_success | counter | responses decoded |
| response_decoding_error | counter | response frames that failed to decode |
| response_success | counter | decoded responses classified success *or* no_message: "nothing to deliver" answers (PULL_NOT_FOUND, NO_MESSAGE, POLLING_TIMEOUT, ...) count as success |
| response_error | counter | decoded responses classified error; unanswered requests are not counted here (see ``unanswered``) |
| heartbeat | counter | HEART_BEAT (34) requests seen |
| unregister | counter | UNREGISTER_CLIENT (35) requests seen |
| get_topic_route | counter | GET_ROUTEINFO_BY_TOPIC (105) requests seen |
| send_message_v1 | counter | SEND_MESSAGE (10) requests seen |
| send_message_v2 | counter | SEND_MESSAGE_V2 (310) requests seen; SEND_BATCH_MESSAGE (320) is not included (Envoy does not know it), it has its own ``request_code.SEND_BATCH_MESSAGE.requests`` |
| pop_message | counter | POP_MESSAGE (200050) requests seen |
| ack_message | counter | ACK_MESSAGE (200051) requests seen |
| get_consumer_list | counter | GET_CONSUMER_LIST_BY_GROUP (38) requests seen |
| maintenance_failure | counter | error answers to heartbeat, unregister, get_consumer_list and get_topic_route (the requests Envoy answers itself) |
| request_active | gauge | non-oneway requests in flight now |
| send_message_v1_active | gauge | SEND_MESSAGE requests in flight |
| send_message_v2_active | gauge | SEND_MESSAGE_V2 requests in flight |
| pop_message_active | gauge | POP_MESSAGE requests in flight |
| get_topic_route_active | gauge | GET_ROUTEINFO_BY_TOPIC requests in flight |
| send_message_pending | gauge | proxy only: sends waiting for an upstream connection (0 for captures) |
| pop_message_pending | gauge | proxy only: pops waiting for an upstream connection |
| get_topic_route_pending | gauge | proxy only: route queries waiting for an upstream connection |
| total_pending | gauge | proxy only: sum of the three above |
| request_time_ms | histogram | request->response latency of answered exchanges (hdrhistogram, 3 significant digits, recorded in us, reported in ms) |

Beyond Envoy (same root):

| name | type | meaning |
|---|---|---|
| answered | counter | exchanges with a request and its response |
| unanswered | counter | requests never answered (end of capture, evicted, or displaced by a duplicate) |
| oneway | counter | oneway requests (no answer expected) |
| orphan | counter | responses whose request was not seen |
| duplicate | counter | requests reusing a still-pending (connection, direction, opaque) |
| response_no_message | counter | the "nothing to deliver" part of response_success |
| ``<gauge>_max`` | gauge | highest value each gauge reached |
| request_code.``<NAME>``.requests | counter | requests per request code (every code, 320 included) |
| request_code.``<NAME>``.errors | counter | error answers per request code |
| request_code.``<NAME>``.request_time_ms | histogram | latency per request code (log buckets, <= 3.2 % error) |
| response_code.``<NAME>`` | counter | responses per response code (orphans included) |
| transport.``<kind>`` | counter | packets, bytes, flows, flows_evicted, gap, gap_bytes, retransmission, out_of_order, resync |
| transport.tls_``<status>`` | counter | TLS connections by their final status: decrypted, no_key, unsupported_cipher, mid_session, decrypt_failed, incomplete (handshake never finished) |

Breakdowns (JSON and Prometheus only): ``by_topic``, ``by_group``, ``by_client``
(client IP), ``by_broker`` (server ``ip:port``) and ``by_nameserver``.  A server
endpoint is a name server when its port is 9876 or once a name-server-only request
(100-106, 206, 216, 217, 219, 224, 304) is sent to it; its earlier rows then move from
by_broker to by_nameserver.  Each row: requests, errors, error_pct, bytes (request +
response ``Message.size``), answered, mean and p50/p90/p99/max latency in ms (log
buckets, <= 3.2 % error; max exact).  Rows count exchanges that had a request
(answered, unanswered, oneway), so each breakdown sums to ``answered + unanswered +
oneway`` (by_broker and by_nameserver together); orphans are left out.  Requests without
a topic or group count under ``<none>``.  At most ``max_keys`` rows per breakdown:
after ``max_keys - 1`` keys, new keys fold into ``<other>`` and ``overflow`` counts the
exchanges folded.

Journeys (``stats --by topic|group``, JSON ``journeys``, Prometheus ``rocketmq_journey_*``), when
the run joins them (:mod:`.journeys`): per topic and group, messages in and out (messages, not
requests) and their rates over the capture's span, delivery latency (stored → first delivery)
and end-to-end latency (born → acked) p50/p90/p99 in ms.

Pairing contract: ``request_started`` once per decoded request (oneway too);
``exchange_done`` once per exchange (orphans only get this); ``duplicate`` only counts
(the displaced request still gets ``exchange_done`` as unanswered).  Per-exchange work
is a few dict operations; row updates and hdrhistogram recording are batched and done
when the stats are read.  Not thread-safe: feed and read from one thread (or lock).
"""  # noqa: E501 - the tables' rows document one stat each and cannot wrap
from __future__ import annotations

from .breakdowns import NONE, OTHER, Table
from .buckets import bucket_of, bucket_percentiles, bucket_value
from .model import Stats
from .names import (
    BREAKDOWNS,
    ENVOY_BUCKETS_MS,
    ENVOY_COUNTERS,
    ENVOY_QUANTILES,
    EXTRA_COUNTERS,
    GAUGES,
    PENDING_KINDS,
    TRANSPORT_KINDS,
)

__all__ = [
    "BREAKDOWNS", "ENVOY_BUCKETS_MS", "ENVOY_COUNTERS", "ENVOY_QUANTILES", "EXTRA_COUNTERS", "GAUGES", "NONE",
    "OTHER", "PENDING_KINDS", "TRANSPORT_KINDS", "Stats", "Table", "bucket_of", "bucket_percentiles",
    "bucket_value",
]
