"""The stats model: :class:`Stats`, fed with pairing events (applied in batches) and
read as counters, gauges, the latency histogram, per-code rows and breakdowns."""
from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Generator, Iterable
from itertools import islice
from typing import Any

from hdrh.histogram import HdrHistogram

from rmqsniff.model import ANSWERED, Exchange
from rmqsniff.model import endpoint_text as _ep
from rmqsniff.protocols import Classifier, classifier, protocol_named

from .breakdowns import NONE, OTHER, REQ, Table, merge_row, merge_table, row_dict
from .buckets import bucket_of
from .names import (
    BREAKDOWNS,
    ENVOY_BUCKETS_MS,
    ENVOY_COUNTERS,
    ENVOY_QUANTILES,
    EXTRA_COUNTERS,
    GAUGES,
    PENDING_KINDS,
    TRANSPORT_KINDS,
    quantile_name,
)

_BUCKETS_US = [le * 1000 for le in ENVOY_BUCKETS_MS]
_ALL_PCTS = tuple(sorted(set(ENVOY_QUANTILES) | {50, 90, 99}))
_MAX_US = 3_600_000_000  # one hour: larger latencies are clamped
_AGG_FLUSH = 16384  # distinct pending row keys before they are folded into the rows
_AGG_VALS_FLUSH = 1 << 16  # pending latencies (all keys) before that
_EV_BATCH = 256  # started / finished events collected before they are applied


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
        # consumer lag (rmqsniff.lag.LagTable), when a source feeds it (live, proxy): its rows
        # go into the snapshot as ``lag`` and into Prometheus as the lag gauges
        self.lag: Any = None
        # per-message figures (rmqsniff.stats.journeys.JourneyStats), when a run joins journeys
        self.journeys: Any = None

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
        req = ex.request
        assert req is not None  # the pairing layer calls this for requests only
        cmd = req.command
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

    def apply(self, protocol: str, events: Iterable[Any]) -> None:  # noqa: C901 - hot loop: every stats event
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
                for v, cnt in Counter(lats).items():
                    q = v.bit_length() - 11
                    if q > 0:
                        v = (v >> q) << q
                    pend[v] = pend.get(v, 0) + cnt
                    i = bucket_of(v)  # an hdr-equivalent value keeps its log bucket
                    bks[i] = bks.get(i, 0) + cnt
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
                merge_row(ns.rows.get(srv) or ns.new(srv, old[REQ]), old)
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
        d["journeys"] = None  # per-message figures stay with the run that joined them
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
        self._le_counts = [a + b for a, b in zip(self._le_counts, other._le_counts, strict=True)]
        self._h_n += other._h_n
        self._h_sum_us += other._h_sum_us
        self._h_min_us = min(self._h_min_us, other._h_min_us)
        self._h_max_us = max(self._h_max_us, other._h_max_us)
        for p, ps in other._protos.items():
            mine_ps = self._ps(p)
            merge_table(mine_ps.codes, ps.codes)
            merge_table(mine_ps.responses, ps.responses)
        for name, t in other._bd.items():
            merge_table(self._bd[name], t)
        self._ns_servers |= other._ns_servers
        merge_table(self._decode_reasons, other._decode_reasons)

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
        for le, cnt in zip(ENVOY_BUCKETS_MS, self._le_counts, strict=True):
            cum += cnt
            buckets.append([le, cum])
        return {
            "count": n,
            "sum": self._h_sum_us / 1000.0,
            "mean": (self._h_sum_us / n / 1000.0) if n else 0.0,
            "min": pct(0), "p50": pct(50), "p90": pct(90), "p99": pct(99), "max": mx,
            "quantiles": {quantile_name(q): pct(q) for q in ENVOY_QUANTILES},
            "buckets": buckets,
        }

    def breakdown(self, name: str, top: int | None = None) -> dict[str, Any]:
        """One breakdown: rows (busiest first, at most ``top``), cap and overflow."""
        self._catch_up()
        self._flush_rows()
        t = self._bd[name]
        items = sorted(list(t.rows.items()), key=lambda kv: -kv[1][REQ])
        if top is not None:
            items = items[:top]
        return {"cap": t.cap, "overflow": t.overflow,
                "rows": {_ep(k): row_dict(r) for k, r in items}}

    def snapshot(self, top: int | None = None) -> dict[str, Any]:
        """Everything as plain JSON-able data (see the module docstring for meanings)."""
        steps = self.snapshot_steps(top)
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return done.value

    def snapshot_steps(self, top: int | None = None) -> Generator[None, None, dict[str, Any]]:
        """:meth:`snapshot` in small steps (a generator that yields between code rows and
        breakdowns, whose percentiles are the costly part, and returns the snapshot), so a
        server on the forwarding loop can let traffic through in between.  Counts that move
        between steps may then differ a little from section to section."""
        self._catch_up()
        self._flush_rows()
        c = dict(self._c)
        codes: dict[str, Any] = {}
        responses: dict[str, Any] = {}
        for proto, ps in list(self._protos.items()):
            cl = ps.cl
            pre = protocol_named(proto).code_prefix
            for code, row in list(ps.codes.rows.items()):
                yield
                d = row_dict(row, quantiles=True)
                d["name"] = OTHER if code == OTHER else cl.request_name(code)
                d["code"] = code
                d["protocol"] = proto
                codes[f"{pre}{code}"] = d
            for code, row in list(ps.responses.rows.items()):
                name = OTHER if code == OTHER else cl.response_name(code)
                responses[f"{pre}{name}"] = {"code": code, "count": row[0], "protocol": proto}
        yield
        latency = self.latency_summary()
        breakdowns: dict[str, Any] = {}
        for n in BREAKDOWNS:
            yield
            breakdowns[n] = self.breakdown(n, top)
        return {
            "stat_prefix": self.prefix,
            "root": self.root,
            "counters": c,
            "gauges": {n: {"value": self._g[n], "max": self._gmax[n]} for n in GAUGES},
            "histograms": {"request_time_ms": latency},
            "codes": codes,
            "responses": responses,
            "breakdowns": breakdowns,
            "transport": dict(self._t),
            "exchanges": {k: c[k] for k in ("answered", "unanswered", "oneway", "orphan",
                                            "duplicate")}
            | {"in_flight": self._g["request_active"]},
            "decoding_errors": {k: r[0] for k, r in list(self._decode_reasons.rows.items())},
        } | ({"lag": {"rows": self.lag.rows(), "overflow": dict(self.lag.overflow)}} if self.lag is not None else {}) \
          | ({"journeys": self.journeys.snapshot()} if self.journeys is not None else {})

