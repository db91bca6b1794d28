"""The proxy's tap, sans-I/O: its fast way (peeked frames, ``Pairing.lite``, exchanges kept as
frame bytes) must count and show exactly what the full decode does, on real traffic."""
from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dissectors.remoting import JSON, ROCKETMQ, RemotingCommand, StreamDecoder, encode
from dissectors.remoting.stream import Frame
from replay.proxy.remoting import RemotingTap
from rmqsniff.exporters.exchanges import exchange_to_dict
from rmqsniff.model import Connection
from rmqsniff.pairing import PairingSink
from rmqsniff.sinks import Recent
from rmqsniff.sources.link import tcp_segment
from rmqsniff.sources.pcapfile import open_capture
from rmqsniff.stats import Stats

CAPTURES = Path(__file__).resolve().parent.parent / "captures"


def _streams(path: Path) -> dict[tuple, list[tuple[bool, bytes, float]]]:
    """Per connection (client side first by the SYN), its payload chunks in capture order."""
    conns: dict[tuple, list] = {}
    client_of: dict[tuple, tuple] = {}
    r = open_capture(str(path))
    for ts, lt, frame in r:
        seg = tcp_segment(frame, lt)
        if isinstance(seg, str):
            continue
        src, sport, dst, dport, _seq, _ack, flags, payload = seg
        a, b = (src, sport), (dst, dport)
        key = (a, b) if (a, b) in conns else (b, a) if (b, a) in conns else None
        if key is None:
            if not flags & 0x02 or flags & 0x10:  # only connections whose SYN was captured
                continue
            key = (a, b)
            conns[key] = []
            client_of[key] = a
        if payload:
            conns[key].append((a == client_of[key], payload, ts))
    r.f.close()
    return conns


def _tap(lite: bool) -> tuple[RemotingTap, Stats, Recent]:
    stats = Stats()
    recent = Recent(100_000)
    sink = PairingSink(stats, ordered=False, sinks=[recent])
    recent.next_index = sink.next_index
    tap = RemotingTap(Connection(0, ("10.0.0.1", 40000), ("10.0.0.2", 10911), 0.0, "syn"), sink, stats)
    tap.lite = lite
    return tap, stats, recent


def _run(chunks, lite: bool, split: int = 0) -> tuple[dict, list[dict], int]:
    tap, stats, recent = _tap(lite)
    for from_client, data, ts in chunks:
        parts = [data[i:i + split] for i in range(0, len(data), split)] if split else [data]
        for part in parts:
            if from_client:
                tap.from_client(part, ts)
            else:
                assert tap.server_fast(part) == part
                tap.server_decoded(part, ts)
    tap.close()
    peeked = sum(1 for item, _ in recent.items if type(item) is tuple)  # kept as frame bytes
    shown = []
    for ex in recent.select(None, 0):
        d = exchange_to_dict(ex)
        d.pop("index")
        shown.append(d)
    return stats.snapshot(), sorted(shown, key=repr), peeked


@pytest.mark.parametrize("name", ["remoting_json.pcap", "remoting_rocketmq.pcap", "remoting_pop.pcap",
                                  "remoting_transaction.pcap", "remoting_go.pcap"])
@pytest.mark.parametrize("split", [0, 700])
def test_the_taps_fast_way_counts_and_shows_what_the_full_decode_does(name, split):
    conns = _streams(CAPTURES / name)
    assert conns
    peeked_total = 0
    for chunks in conns.values():
        full, full_shown, none = _run(chunks, lite=False, split=split)
        fast, fast_shown, peeked = _run(chunks, lite=True, split=split)
        assert none == 0
        assert fast == full
        assert fast_shown == full_shown
        peeked_total += peeked
    if not split and name != "remoting_go.pcap":  # the Go client writes most frames in two pieces
        assert peeked_total > 0


@pytest.mark.parametrize("serialize", [JSON, ROCKETMQ])
def test_failure_answers_a_peeked_pending_request_in_the_clients_serialization(serialize):
    tap, stats, recent = _tap(True)
    req = RemotingCommand(310, 0, 77, "JAVA", 479, None, {"a": "PG", "b": "T"}, b"body", serialize)
    tap.from_client(encode(req), 1.0)
    assert type(tap.pairing.pending_c[77]) is tuple  # it took the fast way
    out = tap.failure("upstream gone", 1.5)
    answers = [ev.command for ev in StreamDecoder().feed(out) if type(ev) is Frame]
    assert [(a.code, a.flag, a.opaque, a.serialize, a.version, a.remark) for a in answers] == \
        [(1, 1, 77, serialize, 479, "upstream gone")]
    c = stats.snapshot()["counters"]
    assert c["response_error"] == 1 and c["answered"] == 1 and c["request"] == 1
    shown = recent.select(None, 0)
    assert len(shown) == 1 and shown[0].request is not None and shown[0].request.command.body == b"body"


def _forward(chunks, deferred: bool, cuts: list[int], every: int = 0) -> tuple[bytes, bytes, dict, list[dict]]:
    """The session's data path over a framed broker link (whole server frames released, no
    route answers held), decoding at once or ``deferred`` (queued in arrival order, caught up
    before a slow-way call, after every ``every``-th server read as the proxy's timer does,
    and at the end). Server chunks are re-cut at ``cuts`` (cycled).
    Returns (server bytes the client got, bytes still held, stats, shown exchanges)."""
    stats = Stats()
    recent = Recent(100_000)
    sink = PairingSink(stats, ordered=False, sinks=[recent])
    recent.next_index = sink.next_index
    tap = RemotingTap(Connection(0, ("10.0.0.1", 40000), ("10.0.0.2", 10911), 0.0, "syn"), sink, stats,
                      framed=True)
    tap.lite, tap.deferred = True, deferred
    out = bytearray()
    later: list = []

    def catch_up() -> None:
        for feed, data, ts in later:
            out.extend(feed(data, ts) or b"")
        later.clear()

    k = 0
    for from_client, data, ts in chunks:
        if from_client:
            if deferred:
                later.append((tap.from_client, data, ts))
            else:
                tap.from_client(data, ts)
            continue
        while data:
            n = cuts[k % len(cuts)]
            k += 1
            part, data = data[:n], data[n:]
            fast = tap.server_fast(part)
            if fast is None:
                catch_up()
                pieces = tap.from_server(part, ts)
                assert all(type(p) is bytes for p in pieces)  # no route answers on a broker link
                out.extend(b"".join(p for p in pieces if isinstance(p, bytes)))
                continue
            out.extend(fast)
            if deferred:
                later.append((tap.server_later, part, ts))
            else:
                out.extend(tap.server_decoded(part, ts))
            if every and k % every == 0:
                catch_up()
    catch_up()
    held = bytes(tap._held)
    tap.close()
    shown = []
    for ex in recent.select(None, 0):
        d = exchange_to_dict(ex)
        d.pop("index")
        shown.append(d)
    return bytes(out), held, stats.snapshot(), sorted(shown, key=repr)


def _broker_link(name: str) -> list:
    conns = _streams(CAPTURES / name)
    return max((c for k, c in conns.items() if k[1][1] == 10911), key=len)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(["remoting_json.pcap", "remoting_rocketmq.pcap"]),
       cuts=st.lists(st.integers(1, 3000), min_size=1, max_size=8), every=st.integers(0, 12),
       junk=st.one_of(st.none(), st.tuples(st.integers(0, 40), st.binary(min_size=1, max_size=64))))
def test_deferred_decoding_forwards_and_counts_what_decoding_at_once_does(name, cuts, every, junk):
    """Deferring the decode must not change a byte sent to the client, nor what is counted:
    also when the server stream stops being remoting part-way (junk after server chunk i):
    the fast way then learns it from the decoder late and lets the held bytes go."""
    chunks = list(_broker_link(name))
    if junk is not None:
        i, garbage = junk
        servers = [j for j, c in enumerate(chunks) if not c[0]]
        j = servers[i % len(servers)]
        chunks[j] = (False, chunks[j][1] + garbage, chunks[j][2])
    sent = b"".join(d for fc, d, _ in chunks if not fc)
    at_once = _forward(chunks, False, cuts)
    later = _forward(chunks, True, cuts, every)
    assert later == at_once
    out, held, _stats, _shown = later
    assert out + held == sent  # nothing lost, nothing reordered, at most one partial frame held


def test_the_proxy_decodes_deferred_reads_in_order_in_slices_and_before_any_stats_read():
    """Proxy.defer: decoding waits for the timer, runs in slices with the loop's other work
    (the sockets) in between, keeps arrival order, and whoever reads the stats catches up."""
    import asyncio

    from replay.proxy import server
    from replay.proxy.config import Mapping, ProxyConfig

    async def scenario() -> tuple[list, list, int]:
        px = server.Proxy(ProxyConfig(mappings=[Mapping.parse("broker", "127.0.0.1:0=127.0.0.1:10911")]))
        seen: list = []
        marks: list = []
        loop = asyncio.get_running_loop()

        def feed(data: bytes, ts: float) -> None:
            if not seen:  # the sockets' turn: due before the next slice
                loop.call_soon(lambda: marks.append(len(seen)))
            seen.append((data, ts))

        for i in range(server.DRAIN_SLICE * 3 + 1):
            px.defer(feed, bytes([i]), float(i))
        assert seen == []  # nothing decoded on the data path
        for _ in range(5000):  # the timer, then the slices
            if not px.deferred_bytes:
                break
            await asyncio.sleep(0.001)
        order = [ts for _, ts in seen]
        px.defer(lambda data, ts: seen.append((data, ts)), b"x", 99.0)
        px.defer(lambda data, ts: px.stats.tcp("flows", 1), b"y", 100.0)
        flows = px.stats.snapshot()["transport"]["flows"]  # a read: everything deferred first
        await px.stop()
        return order, marks, flows

    order, marks, flows = asyncio.run(scenario())
    assert order == [float(i) for i in range(server.DRAIN_SLICE * 3 + 1)]
    assert len(marks) == 1 and server.DRAIN_SLICE <= marks[0] < len(order)
    assert flows == 1


def test_the_deferred_queue_stays_short_when_reads_keep_coming():
    """Reads arriving faster than one slice per loop turn: the queue must not grow with
    time (the slices take half of a long queue)."""
    import asyncio

    from replay.proxy import server
    from replay.proxy.config import Mapping, ProxyConfig

    async def scenario() -> tuple[int, int]:
        px = server.Proxy(ProxyConfig(mappings=[Mapping.parse("broker", "127.0.0.1:0=127.0.0.1:10911")]))
        done: list = []
        longest = 0
        for turn in range(4000):  # each turn of the loop: 3 slices' worth of new reads
            for _ in range(server.DRAIN_SLICE * 3):
                px.defer(lambda data, ts: done.append(ts), b"r", 0.0)
            if turn >= 2000:  # long after the timer started the slices
                longest = max(longest, len(px._later))
            await asyncio.sleep(0)
        await px.stop()
        return longest, len(done)

    longest, done = asyncio.run(scenario())
    assert done == 4000 * server.DRAIN_SLICE * 3
    assert longest < server.DRAIN_BACKLOG + server.DRAIN_SLICE * 3 * 2
