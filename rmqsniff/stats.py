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

Pairing contract: ``request_started`` once per decoded request (oneway too);
``exchange_done`` once per exchange (orphans only get this); ``duplicate`` only counts
(the displaced request still gets ``exchange_done`` as unanswered).  Per-exchange work
is a few dict operations; row updates and hdrhistogram recording are batched and done
when the stats are read.  Not thread-safe: feed and read from one thread (or lock).
"""
from __future__ import annotations

import math
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable
from itertools import islice
from typing import Any, Callable

from hdrh.histogram import HdrHistogram

from rmqsniff.model import ANSWERED, Exchange
from rmqsniff.model import endpoint_text as _ep
from rmqsniff.protocols import Classifier, classifier, protocol_named

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
_BUCKETS_US = [le * 1000 for le in ENVOY_BUCKETS_MS]
_ALL_PCTS = tuple(sorted(set(ENVOY_QUANTILES) | {50, 90, 99}))
OTHER = "<other>"
NONE = "<none>"
_MAX_US = 3_600_000_000  # one hour: larger latencies are clamped
_AGG_FLUSH = 16384  # distinct pending row keys before they are folded into the rows
_AGG_VALS_FLUSH = 1 << 16  # pending latencies (all keys) before that
_EV_BATCH = 256  # started / finished events collected before they are applied


# ---------------------------------------------------------------- log-bucket histogram
# Values (us) below 32 are exact; above, 16 sub-buckets per power of two (<=3.2 % error
# at the bucket midpoint).  A row stores {bucket: count}: a few dozen entries at most.

def bucket_of(us: int) -> int:
    """Log bucket index of a latency in microseconds."""
    if us < 32:
        return us
    b = us.bit_length()
    return (b << 4) | ((us >> (b - 5)) & 15)


def bucket_value(idx: int) -> float:
    """Representative (midpoint) value in microseconds of a bucket index."""
    if idx < 32:
        return float(idx)
    shift = (idx >> 4) - 5
    low = (16 | (idx & 15)) << shift
    return low + ((1 << shift) - 1) / 2.0


def bucket_percentiles(buckets: dict[int, int], n: int, max_us: int,
                       ps: tuple[float, ...] = (50, 90, 99)) -> list[float]:
    """Percentiles (ms) from log buckets; the value at rank ceil(p/100*n), capped by max."""
    if n <= 0:
        return [0.0 for _ in ps]
    items = sorted(buckets.items())
    out: list[float] = []
    for p in ps:
        rank = max(1, math.ceil(p / 100.0 * n))
        seen = 0
        val = float(max_us)
        for idx, cnt in items:
            seen += cnt
            if seen >= rank:
                val = min(bucket_value(idx), float(max_us))
                break
        out.append(val / 1000.0)
    return out


# row layout (lists for speed): requests, errors, bytes, lat_n, lat_sum_us, lat_max_us, buckets
_REQ, _ERR, _BYTES, _LN, _LSUM, _LMAX, _BK = range(7)


def _new_row() -> list:
    return [0, 0, 0, 0, 0, 0, {}]


def _merge_row(dst: list, src: list) -> None:
    for i in (_REQ, _ERR, _BYTES, _LN, _LSUM):
        dst[i] += src[i]
    dst[_LMAX] = max(dst[_LMAX], src[_LMAX])
    bk = dst[_BK]
    for k, v in src[_BK].items():
        bk[k] = bk.get(k, 0) + v


class Table:
    """A bounded key -> row map of at most ``cap`` rows; once ``cap - 1`` keys exist,
    new keys fold into ``<other>`` and ``overflow`` counts the folded events."""

    __slots__ = ("rows", "cap", "overflow")

    def __init__(self, cap: int) -> None:
        self.rows: dict[Any, list] = {}
        self.cap = cap
        self.overflow = 0

    def new(self, key: Any, n: int = 1) -> list:
        """Row for a key not yet present (called only on a miss, for ``n`` events)."""
        rows = self.rows
        if len(rows) >= self.cap - 1:  # keep the last slot for <other>
            self.overflow += n
            key = OTHER
            row = rows.get(key)
            if row is not None:
                return row
        row = rows[key] = _new_row()
        return row


def _merge_table(dst: Table, src: Table) -> None:
    for key, row in src.rows.items():
        _merge_row(dst.rows.get(key) or dst.new(key, row[_REQ]), row)
    dst.overflow += src.overflow


class _ProtoState:
    __slots__ = ("cl", "codes", "responses", "klass", "envoy_counter", "active_gauge")

    def __init__(self, cl: Classifier, cap: int) -> None:
        self.cl = cl
        self.codes = Table(cap)  # request code -> row (requests counted at request_started)
        self.responses = Table(cap)  # response code -> [count]
        self.klass: dict[tuple, str] = {}  # (request code, response code) -> cl.classify(...)
        self.envoy_counter = cl.envoy_counter
        self.active_gauge = cl.active_gauge

    def classify(self, code: int | None, rcode: int) -> str:
        k = self.klass[(code, rcode)] = self.cl.classify(code, rcode)
        if len(self.klass) > 65536:
            self.klass.clear()
        return k


class Stats:
    """Counters, gauges, latency histogram and bounded breakdowns for one stat prefix."""

    def __init__(self, prefix: str = "rmqsniff", max_keys: int = 10_000,
                 max_code_keys: int = 2_048) -> None:
        self.prefix = prefix
        self.root = f"rocketmq.{prefix}."
        self.max_keys = max_keys
        self._c: dict[str, int] = dict.fromkeys(ENVOY_COUNTERS + EXTRA_COUNTERS, 0)
        self._g: dict[str, int] = dict.fromkeys(GAUGES, 0)
        self._gmax: dict[str, int] = dict.fromkeys(GAUGES, 0)
        self._t: dict[str, int] = dict.fromkeys(TRANSPORT_KINDS, 0)
        self._hist = HdrHistogram(1, _MAX_US, 3)
        self._h_pend: dict[int, int] = {}  # hdr-equivalent value (us) -> count, unflushed
        self._h_n = 0
        self._le_counts = [0] * len(ENVOY_BUCKETS_MS)  # per Envoy bucket (not cumulative)
        self._h_sum_us = 0
        self._h_min_us = _MAX_US
        self._h_max_us = 0
        self._code_cap = max_code_keys
        self._protos: dict[str, _ProtoState] = {}
        self._bd: dict[str, Table] = {name: Table(max_keys) for name in BREAKDOWNS}
        self._bd_topic, self._bd_group, self._bd_client, self._bd_broker, self._bd_ns = (
            self._bd[name] for name in BREAKDOWNS)
        self._ns_servers: set[Any] = set()
        self._agg: dict[tuple, list] = {}  # row key -> accumulator, not yet in the rows
        self._agg_vals = 0  # latencies held by the accumulators
        self._decode_reasons = Table(256)
        # called before every read: sources whose decoding lags (the proxy's batches) catch up
        self.feeders: list[Callable[[], None]] = []
        self._ev: list = []  # [protocol, event, ...]: started / finished, applied in batches

    # ------------------------------------------------------------------ events
    def _ps(self, protocol: str) -> _ProtoState:
        ps = self._protos.get(protocol)
        if ps is None:
            ps = self._protos[protocol] = _ProtoState(classifier(protocol), self._code_cap)
        return ps

    def _gauge(self, name: str, delta: int) -> None:
        v = self._g[name] + delta
        self._g[name] = v
        if v > self._gmax[name]:
            self._gmax[name] = v

    def request_started(self, ex: Exchange) -> None:
        """A request was seen (oneway ones too); its answer is not known yet."""
        cmd = ex.request.command
        self.started(ex.protocol, cmd.code, cmd.is_oneway)

    def started(self, protocol: str, code: int, oneway: bool) -> None:
        """:meth:`request_started` from raw fields."""
        self._collect(protocol, (code,) if oneway else code)

    def exchange_done(self, ex: Exchange) -> None:
        """Final event of an exchange: answered, unanswered, oneway or orphan."""
        req, resp, status = ex.request, ex.response, ex.status
        rcode = resp.command.code if resp is not None else None
        if req is None:
            self.finished(ex.protocol, None, False, rcode, status, 0, 0, None, None, None, None)
            return
        cmd = req.command
        cl = (self._protos.get(ex.protocol) or self._ps(ex.protocol)).cl
        conn = ex.connection
        self.finished(ex.protocol, cmd.code, cmd.is_oneway, rcode, status,
                      resp.ts - req.ts if resp is not None else 0.0,
                      req.size + (resp.size if resp is not None else 0),
                      cl.topic_of(cmd), cl.group_of(cmd), conn.client[0], conn.server)

    def finished(self, protocol: str, code: int | None, oneway: bool, rcode: int | None, status: str,
                 latency: float, nbytes: int, topic: str | None, group: str | None,
                 client_host: str | None, server: Any) -> None:
        """:meth:`exchange_done` from raw fields: ``code`` is None for an orphan, ``rcode``
        None without a response, ``latency`` in seconds."""
        self._collect(protocol, (code, oneway, rcode, status, latency, nbytes, topic, group, client_host, server))

    def _collect(self, protocol: str, event: Any) -> None:
        """Hold ``event`` for :meth:`apply`, in a batch of one protocol's events."""
        ev = self._ev
        if not ev:
            ev.append(protocol)
        elif ev[0] != protocol:
            self._apply_events()
            ev = self._ev
            ev.append(protocol)
        ev.append(event)
        if len(ev) > _EV_BATCH:
            self._apply_events()

    def _apply_events(self) -> None:
        """Apply what :meth:`started` and :meth:`finished` collected (one protocol's events)."""
        ev = self._ev
        if ev:
            self._ev = []
            self.apply(ev[0], islice(ev, 1, None))

    def apply(self, protocol: str, events: Iterable[Any]) -> None:
        """Stats events of one protocol, in order: the one implementation behind
        :meth:`started` and :meth:`finished`, fed in batches by the stats-only fast path.

        An ``int`` is a request started (not one-way); a 1-tuple ``(code,)`` a one-way
        request started; a 10-tuple ``(code, oneway, rcode, status, latency, nbytes, topic,
        group, client_host, server)`` an exchange finished (see :meth:`finished`)."""
        if self._ev:  # what started / finished collected comes first
            self._apply_events()
        c, g, m = self._c, self._g, self._gmax
        ps = self._protos.get(protocol) or self._ps(protocol)
        codes, envoy, active, klassd = ps.codes, ps.envoy_counter, ps.active_gauge, ps.klass
        responses = ps.responses
        agg = self._agg
        # the busiest counters and request_active are kept in locals and written back once
        n_req = n_resp = n_ok = n_ans = held = 0
        in_flight = g["request_active"]
        in_flight_max = m["request_active"]
        try:
            for e in events:
                if type(e) is int:  # a request started
                    code, oneway = e, False
                elif len(e) == 1:  # a one-way request started
                    code, oneway = e[0], True
                else:
                    code, oneway, rcode, status, latency, nbytes, topic, group, client_host, server = e
                    err = 0
                    if rcode is not None:
                        n_resp += 1
                        klass = klassd.get((code, rcode)) or ps.classify(code, rcode)
                        if klass == "success":
                            n_ok += 1
                        elif klass == "error":
                            err = 1
                            c["response_error"] += 1
                            if code in ps.cl.maintenance:
                                c["maintenance_failure"] += 1
                        else:
                            n_ok += 1
                            if klass == "no_message":
                                c["response_no_message"] += 1
                        rrow = responses.rows.get(rcode)
                        if rrow is None:
                            rrow = responses.new(rcode)
                        rrow[0] += 1
                    if code is None:  # an orphan response: no request, nothing more to attribute
                        c["orphan"] += 1
                        continue
                    if not oneway:
                        in_flight -= 1
                        name = active.get(code)
                        if name is not None:
                            g[name] -= 1
                    # Rows and the latency histogram are updated in bulk (see _flush_rows): here an
                    # exchange only bumps the small accumulator of its row key and lists its latency.
                    key = (ps, code, topic, group, client_host, server, err)
                    a = agg.get(key)
                    if a is None:
                        if len(agg) >= _AGG_FLUSH or self._agg_vals + held >= _AGG_VALS_FLUSH:
                            self._agg_vals += held
                            held = 0
                            self._flush_rows()
                            agg = self._agg
                        a = agg[key] = [0, 0, []]  # exchanges, bytes, latencies (us)
                    a[0] += 1
                    a[1] += nbytes
                    if status == ANSWERED and rcode is not None:
                        n_ans += 1
                        a[2].append(int(latency * 1e6 + 0.5))
                        held += 1
                    elif status in c:
                        c[status] += 1
                    continue
                n_req += 1
                row = codes.rows.get(code)
                if row is None:
                    row = codes.new(code)
                row[0] += 1
                name = envoy.get(code)
                if name is not None:
                    c[name] += 1
                if not oneway:
                    in_flight += 1
                    if in_flight > in_flight_max:
                        in_flight_max = in_flight
                    name = active.get(code)
                    if name is not None:
                        v = g[name] + 1
                        g[name] = v
                        if v > m[name]:
                            m[name] = v
        finally:
            if n_req:
                c["request"] += n_req
                c["request_decoding_success"] += n_req
            if n_resp:
                c["response"] += n_resp
                c["response_decoding_success"] += n_resp
                c["response_success"] += n_ok
                c["answered"] += n_ans
            g["request_active"] = in_flight
            m["request_active"] = in_flight_max
            if held:
                self._agg_vals += held
                if self._agg_vals >= _AGG_VALS_FLUSH:
                    self._flush_rows()

    def _flush_rows(self) -> None:
        """Fold the accumulated exchanges into the code rows, the breakdowns and the
        pending latency histogram."""
        agg = self._agg
        self._agg = {}
        self._agg_vals = 0
        ns_servers = self._ns_servers
        pend = self._h_pend
        for (ps, code, topic, group, client, srv, err), (n, nbytes, lats) in agg.items():
            cl = ps.cl
            if srv in ns_servers or srv[1] in cl.nameserver_ports:
                st = self._bd_ns
            elif code in cl.nameserver_codes:
                st = self._mark_nameserver(srv)
            else:
                st = self._bd_broker
            bks: dict[int, int] = {}
            n_lat = len(lats)
            if n_lat:
                min_us, max_us = min(lats), max(lats)
                if min_us < 0 or max_us > _MAX_US:  # clock steps: clamp into the histogram's range
                    lats = [0 if v < 0 else _MAX_US if v > _MAX_US else v for v in lats]
                    min_us, max_us = min(lats), max(lats)
                sum_us = sum(lats)
                self._h_n += n_lat
                self._h_sum_us += sum_us
                if max_us > self._h_max_us:
                    self._h_max_us = max_us
                if min_us < self._h_min_us:
                    self._h_min_us = min_us
                # hdrhistogram's record_value costs ~1-2 us in pure Python: count per
                # hdr-equivalent value (3 significant digits = 2048 sub-buckets per octave,
                # so at most ~47k distinct values up to 1 h) and feed hdr when read
                for v, k in Counter(lats).items():
                    q = v.bit_length() - 11
                    if q > 0:
                        v = (v >> q) << q
                    pend[v] = pend.get(v, 0) + k
                    i = bucket_of(v)  # an hdr-equivalent value keeps its log bucket
                    bks[i] = bks.get(i, 0) + k
            # the request itself was counted in the code row at request_started
            for t, k, first in ((ps.codes, code, 0), (self._bd_topic, topic or NONE, n),
                                (self._bd_group, group or NONE, n),
                                (self._bd_client, client, n), (st, srv, n)):
                row = t.rows.get(k) or t.new(k, n)
                row[0] += first
                row[1] += err * n
                row[2] += nbytes
                if n_lat:
                    row[3] += n_lat
                    row[4] += sum_us
                    if max_us > row[5]:
                        row[5] = max_us
                    bk = row[6]
                    for i, c in bks.items():
                        bk[i] = bk.get(i, 0) + c

    def _flush_hist(self) -> None:
        """Feed the pending latency counts to hdrhistogram and the Envoy buckets."""
        pend, self._h_pend = self._h_pend, {}
        rec = self._hist.record_value
        le = self._le_counts
        for v, n in pend.items():
            rec(v, n)
            i = bisect_left(_BUCKETS_US, v)
            if i < len(le):
                le[i] += n

    def _mark_nameserver(self, srv: Any) -> Table:
        """Remember ``srv`` as a name server and move its by_broker row over."""
        ns = self._bd["by_nameserver"]
        if len(self._ns_servers) < self.max_keys:
            self._ns_servers.add(srv)
            old = self._bd["by_broker"].rows.pop(srv, None)
            if old is not None:
                _merge_row(ns.rows.get(srv) or ns.new(srv, old[_REQ]), old)
        return ns

    # ------------------------------------------------------------------ transfer and merge
    def __getstate__(self) -> dict[str, Any]:
        """Picklable (another process's share of a replay): the histogram encoded, the
        protocol states by protocol name, nothing pending (no feeders either)."""
        self._catch_up()
        self._flush_rows()
        self._flush_hist()
        d = dict(self.__dict__)
        d["feeders"] = []
        d["_hist"] = self._hist.encode()
        d["_protos"] = {p: (ps.codes, ps.responses) for p, ps in self._protos.items()}
        d["_bd_topic"] = d["_bd_group"] = d["_bd_client"] = d["_bd_broker"] = d["_bd_ns"] = None
        return d

    def __setstate__(self, d: dict[str, Any]) -> None:
        protos = d.pop("_protos")
        self.__dict__.update(d)
        self._hist = HdrHistogram.decode(d["_hist"])
        self._protos = {}
        for p, (codes, responses) in protos.items():
            ps = self._ps(p)
            ps.codes, ps.responses = codes, responses
        self._bd_topic, self._bd_group, self._bd_client, self._bd_broker, self._bd_ns = (
            self._bd[name] for name in BREAKDOWNS)

    def merge(self, other: Stats) -> None:
        """Add ``other``'s counts to these (shares of one run): counters, gauges and their
        maxima summed (an upper bound for concurrent shares), latency, rows and breakdowns."""
        for st in (self, other):
            st._catch_up()
            st._flush_rows()
            st._flush_hist()
        for mine, theirs in ((self._c, other._c), (self._t, other._t), (self._g, other._g),
                             (self._gmax, other._gmax)):
            for k, v in theirs.items():
                mine[k] = mine.get(k, 0) + v
        self._hist.add(other._hist)
        self._le_counts = [a + b for a, b in zip(self._le_counts, other._le_counts)]
        self._h_n += other._h_n
        self._h_sum_us += other._h_sum_us
        self._h_min_us = min(self._h_min_us, other._h_min_us)
        self._h_max_us = max(self._h_max_us, other._h_max_us)
        for p, ps in other._protos.items():
            mine_ps = self._ps(p)
            _merge_table(mine_ps.codes, ps.codes)
            _merge_table(mine_ps.responses, ps.responses)
        for name, t in other._bd.items():
            _merge_table(self._bd[name], t)
        self._ns_servers |= other._ns_servers
        _merge_table(self._decode_reasons, other._decode_reasons)

    def decoding_error(self, is_request: bool, reason: str, conn: Any = None) -> None:
        """A frame that could not be decoded."""
        c = self._c
        if is_request:
            c["request"] += 1
            c["request_decoding_error"] += 1
        else:
            c["response"] += 1
            c["response_decoding_error"] += 1
        t = self._decode_reasons
        (t.rows.get(reason) or t.new(reason))[0] += 1

    def duplicate(self, ex: Exchange) -> None:
        """A request reused a (connection, direction, opaque) that was still pending."""
        self._c["duplicate"] += 1

    def tcp(self, kind: str, n: int = 1) -> None:
        """Transport event (see :data:`TRANSPORT_KINDS`)."""
        self._t[kind] = self._t.get(kind, 0) + n

    def pending_changed(self, kind: str, delta: int) -> None:
        """Proxy only: requests waiting for an upstream connection (kind in PENDING_KINDS)."""
        if kind not in PENDING_KINDS:
            raise ValueError(f"unknown pending kind {kind!r}")
        self._gauge(f"{kind}_pending", delta)
        self._gauge("total_pending", delta)

    # ------------------------------------------------------------------ reading
    def _catch_up(self) -> None:
        for feed in self.feeders:
            feed()
        self._apply_events()

    def counter(self, name: str) -> int:
        self._catch_up()
        return self._c[name]

    def gauge(self, name: str) -> int:
        self._catch_up()
        return self._g[name]

    def latency_summary(self) -> dict[str, Any]:
        """The ``request_time_ms`` histogram: count, mean, sum, min, p50/p90/p99, max,
        Envoy's quantiles and cumulative counts at Envoy's default bucket bounds."""
        self._catch_up()
        self._flush_rows()
        self._flush_hist()
        h = self._hist
        n = self._h_n
        mx = self._h_max_us / 1000.0

        # one pass over the counts for all percentiles (each lookup scans the array)
        vals = h.get_percentile_to_value_dict(list(_ALL_PCTS)) if n else {}

        def pct(p: float) -> float:
            if n == 0:
                return 0.0
            if p >= 100:
                return mx
            if p <= 0:
                return self._h_min_us / 1000.0
            return min(vals[p] / 1000.0, mx)

        buckets: list[list[float]] = []
        cum = 0
        for le, cnt in zip(ENVOY_BUCKETS_MS, self._le_counts):
            cum += cnt
            buckets.append([le, cum])
        return {
            "count": n,
            "sum": self._h_sum_us / 1000.0,
            "mean": (self._h_sum_us / n / 1000.0) if n else 0.0,
            "min": pct(0), "p50": pct(50), "p90": pct(90), "p99": pct(99), "max": mx,
            "quantiles": {_qname(q): pct(q) for q in ENVOY_QUANTILES},
            "buckets": buckets,
        }

    @staticmethod
    def _row_dict(row: list, quantiles: bool = False) -> dict[str, Any]:
        p50, p90, p99 = bucket_percentiles(row[_BK], row[_LN], row[_LMAX])
        req = row[_REQ]
        d = {
            "requests": req, "errors": row[_ERR],
            "error_pct": round(100.0 * row[_ERR] / req, 3) if req else 0.0,
            "bytes": row[_BYTES], "answered": row[_LN], "sum": row[_LSUM] / 1000.0,
            "mean": (row[_LSUM] / row[_LN] / 1000.0) if row[_LN] else 0.0,
            "p50": p50, "p90": p90, "p99": p99, "max": row[_LMAX] / 1000.0,
        }
        if quantiles:
            vals = bucket_percentiles(row[_BK], row[_LN], row[_LMAX], ENVOY_QUANTILES)
            d["quantiles"] = {_qname(q): v for q, v in zip(ENVOY_QUANTILES, vals)}
        return d

    def breakdown(self, name: str, top: int | None = None) -> dict[str, Any]:
        """One breakdown: rows (busiest first, at most ``top``), cap and overflow."""
        self._catch_up()
        self._flush_rows()
        t = self._bd[name]
        items = sorted(list(t.rows.items()), key=lambda kv: -kv[1][_REQ])
        if top is not None:
            items = items[:top]
        return {"cap": t.cap, "overflow": t.overflow,
                "rows": {_ep(k): self._row_dict(r) for k, r in items}}

    def snapshot(self, top: int | None = None) -> dict[str, Any]:
        """Everything as plain JSON-able data (see the module docstring for meanings)."""
        self._catch_up()
        self._flush_rows()
        c = dict(self._c)
        codes: dict[str, Any] = {}
        responses: dict[str, Any] = {}
        for proto, ps in list(self._protos.items()):
            cl = ps.cl
            pre = protocol_named(proto).code_prefix
            for code, row in list(ps.codes.rows.items()):
                d = self._row_dict(row, quantiles=True)
                d["name"] = OTHER if code == OTHER else cl.request_name(code)
                d["code"] = code
                d["protocol"] = proto
                codes[f"{pre}{code}"] = d
            for code, row in list(ps.responses.rows.items()):
                name = OTHER if code == OTHER else cl.response_name(code)
                responses[f"{pre}{name}"] = {"code": code, "count": row[0], "protocol": proto}
        return {
            "stat_prefix": self.prefix,
            "root": self.root,
            "counters": c,
            "gauges": {n: {"value": self._g[n], "max": self._gmax[n]} for n in GAUGES},
            "histograms": {"request_time_ms": self.latency_summary()},
            "codes": codes,
            "responses": responses,
            "breakdowns": {n: self.breakdown(n, top) for n in BREAKDOWNS},
            "transport": dict(self._t),
            "exchanges": {k: c[k] for k in ("answered", "unanswered", "oneway", "orphan",
                                            "duplicate")}
            | {"in_flight": self._g["request_active"]},
            "decoding_errors": {k: r[0] for k, r in list(self._decode_reasons.rows.items())},
        }


def _qname(q: float) -> str:
    return f"{q:g}"
