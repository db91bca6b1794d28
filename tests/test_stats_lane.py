"""The stats-only fast path (``FlowTable.consume``: peeked frames, ``Pairing.lite``) must
give exactly the stats of the general path (commands, messages, exchanges) on any input.

``Pipeline.consume`` takes the fast path with unordered output; ordered output (or
packet tracking) keeps the general path, so the two are compared run against run.
"""
from __future__ import annotations

import random
from typing import cast

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dissectors.remoting.command import JSON, ROCKETMQ, RemotingCommand
from dissectors.remoting.frame import encode
from rmqsniff.capwriter import CaptureWriter, TcpSession
from rmqsniff.flows import FlowTable
from rmqsniff.pairing import PairingSink
from rmqsniff.pipeline import Pipeline
from rmqsniff.sources.link import DLT_EN10MB, tcp_segment
from rmqsniff.stats import Stats
from rmqsniff.synth import conversation, write_capture
from tests.support.captures import plaintext_pcaps

CAPTURES = plaintext_pcaps()


def _both(paths: list[str]) -> tuple[Pipeline, Pipeline]:
    general = Pipeline(ordered=True)
    general.consume(paths)
    lane = Pipeline(ordered=False)
    lane.consume(paths)
    return general, lane


def _same(general: Pipeline, lane: Pipeline) -> None:
    assert lane.stats.snapshot() == general.stats.snapshot()
    assert lane.errors == general.errors
    assert lane.skipped == general.skipped
    assert lane.packets == general.packets
    assert general.table.peeked == 0


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.name)
def test_fast_path_equals_the_general_path_on_every_bundled_capture(path):
    general, lane = _both([str(path)])
    _same(general, lane)
    if path.name.startswith("remoting_"):
        # the fast path really ran (the Go client writes most frames in two segments:
        # those take the general path)
        frames = lane.stats.counter("request") + lane.stats.counter("response")
        assert lane.table.peeked > (frames // 3 if "go" in path.name else frames // 2), (lane.table.peeked, frames)


def test_fast_path_equals_the_general_path_on_a_generated_capture(tmp_path):
    path = str(tmp_path / "gen.pcap")
    counts = write_capture(path, 3000, seed=7, connections=12)
    general, lane = _both([path])
    _same(general, lane)
    assert lane.stats.counter("request") == counts["exchanges"]
    assert lane.table.peeked > 0.9 * 2 * counts["exchanges"] - counts["exchanges"] * 0.1


# ---------------------------------------------------------------- messy traffic

class _Frames:
    """A capture writer that keeps the frames (TcpSession writes Ethernet frames to it)."""

    def __init__(self) -> None:
        self.records: list[tuple[float, int, bytes]] = []

    def write(self, ts: float, frame: bytes) -> None:
        self.records.append((ts, DLT_EN10MB, frame))


def _odd_frames(rng: random.Random, opaque: int) -> list[tuple[bool, bytes]]:
    """Frames the fast path must leave to the general path (or count the same way)."""
    out: list[tuple[bool, bytes]] = []
    pick = rng.randrange(8)
    if pick == 0:  # extFields value that is not text: converted by the general decoder
        hdr = orjson.dumps({"code": 310, "flag": 0, "opaque": opaque, "language": "JAVA", "version": 1,
                            "extFields": {"b": "T", "a": "G", "e": 3}})
        out.append((True, len(hdr).to_bytes(4, "big") + hdr))
    elif pick == 1:  # no flag, no language: Java's defaults
        hdr = orjson.dumps({"code": 11, "opaque": opaque, "version": 1, "extFields": {"topic": "T"}})
        out.append((True, hdr))
    elif pick == 2:  # a header that is not JSON: a decoding error
        out.append((True, b"{not json at all}"))
    elif pick == 3:  # 5.x pop code truncated to 16 bits by a binary header
        out.append((True, encode(RemotingCommand(200050 & 0xFFFF, 0, opaque, ext={"topic": "T"},
                                                 serialize=ROCKETMQ))))
    elif pick == 4:  # response without a request (orphan)
        out.append((False, encode(RemotingCommand(0, 1, opaque + 500_000, serialize=JSON))))
    elif pick == 5:  # oneway request
        out.append((True, encode(RemotingCommand(34, 2, opaque, ext={"consumerGroup": "CG"}))))
    elif pick == 6:  # version as text, remark null
        hdr = orjson.dumps({"code": 0, "flag": 1, "opaque": opaque, "language": "GO", "version": "7",
                            "remark": None})
        out.append((False, hdr))
    else:  # binary header with a broken extFields length: a decoding error
        f = bytearray(encode(RemotingCommand(310, 0, opaque, ext={"b": "T"}, serialize=ROCKETMQ)))
        f[8 + 17 + 3] = 0xFF
        out.append((True, bytes(f)))
    framed = []
    for from_client, payload in out:
        if payload[:1] == b"{":  # a raw JSON header: wrap it in a frame
            payload = (4 + len(payload)).to_bytes(4, "big") + len(payload).to_bytes(4, "big") + payload
        framed.append((from_client, payload))
    return framed


def _turn_frames(rng: random.Random, t, dup: float, odd: float) -> list[tuple[bool, bytes]]:
    """The frames of one turn: the request (with chance ``dup`` twice, the same opaque again
    before the answer), with chance ``odd`` odd frames, then the answer if there is one."""
    msgs = [(True, encode(t.request))]
    if rng.random() < dup:  # the same opaque again before the answer
        msgs.append((True, encode(t.request)))
    if rng.random() < odd:
        msgs += _odd_frames(rng, t.request.opaque + 100_000)
    if t.response is not None:
        msgs.append((False, encode(t.response)))
    return msgs


def _write_messy(rng: random.Random, s: TcpSession, ts: float, from_client: bool, data: bytes, drop: float,
                 split: float) -> None:
    """``data`` onto ``s`` at ``ts``: cut at a random point (chance ``split``), segments lost
    (chance ``drop``) or retransmitted, sometimes followed by a pure ACK the other way."""
    segs = s.segments(from_client, data)
    if rng.random() < split and len(data) > 20:  # two frames' worth of cuts
        seq0, whole = segs[0][0], b"".join(c for _, c in segs)
        cut = rng.randrange(1, len(whole))
        segs = [(seq0, whole[:cut]), (seq0 + cut, whole[cut:])]
    for seq, chunk in segs:
        if rng.random() < drop:
            continue  # lost from the capture: a gap
        s.write_segment(ts, from_client, seq, chunk)
        if rng.random() < 0.1:
            s.write_segment(ts, from_client, seq, chunk)  # retransmission
    if rng.random() < 0.3:
        s.w.write(ts, s._frame(not from_client, 0x10, s.seq[not from_client], s.seq[from_client]))


def _messy_records(seed: int, conns: int, turns: int, drop: float, dup: float, odd: float,
                   split: float) -> list[tuple[float, int, bytes]]:
    rng = random.Random(seed)
    w = _Frames()
    sessions = []
    for c in range(conns):
        # TcpSession only calls write(): _Frames stands in for the file writer
        s = TcpSession(cast(CaptureWriter, w), (f"10.1.0.{c + 1}", 41000 + c), ("10.0.0.10", 10911),
                       isn_client=rng.randrange(1 << 32), isn_server=rng.randrange(1 << 32), mss=1460)
        if rng.random() < 0.8:
            s.handshake(1000.0)
        kind = rng.choice(["producer", "consumer", "namesrv"])
        sessions.append((s, list(conversation(rng, turns, kind, ser_mix=0.5))))
    ts = 1000.0
    # interleave the connections turn by turn (so many requests are in flight at once)
    for i in range(turns):
        for s, conv in sessions:
            for from_client, data in _turn_frames(rng, conv[i], dup, odd):
                ts += rng.uniform(0.0001, 0.002)
                _write_messy(rng, s, ts, from_client, data, drop, split)
    for s, _ in sessions:
        if rng.random() < 0.7:
            s.close(ts + 0.01)
    return w.records


def _general(records) -> Stats:
    stats = Stats()
    table = FlowTable(stats, PairingSink(stats, lambda ex: None, ordered=True))
    for ts, lt, frame in records:
        seg = tcp_segment(frame, lt)
        table.packet(ts, *seg)
    table.finish()
    return stats


def _lane(records) -> tuple[Stats, FlowTable]:
    stats = Stats()
    table = FlowTable(stats, PairingSink(stats, lambda ex: None, ordered=False))
    table.consume(((frame, lt, [(ts, 0, len(frame))]) for ts, lt, frame in records), {})
    table.finish()
    return stats, table


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), conns=st.integers(1, 6), turns=st.integers(1, 25),
       drop=st.sampled_from([0.0, 0.02, 0.1]), dup=st.sampled_from([0.0, 0.05, 0.3]),
       odd=st.sampled_from([0.0, 0.1, 0.5]), split=st.sampled_from([0.0, 0.2]))
def test_fast_path_equals_the_general_path_on_messy_traffic(seed, conns, turns, drop, dup, odd, split):
    records = _messy_records(seed, conns, turns, drop, dup, odd, split)
    general = _general(records)
    lane, _table = _lane(records)
    g, f = general.snapshot(), lane.snapshot()
    for key in g:
        assert f[key] == g[key], key


def test_messy_traffic_really_exercises_the_odd_cases():
    """The generator above produces what the equality test claims to cover."""
    records = _messy_records(3, 4, 40, 0.05, 0.2, 0.5, 0.2)
    stats = _general(records)
    c = stats.snapshot()["counters"]
    assert c["duplicate"] > 0 and c["orphan"] > 0 and c["oneway"] > 0
    assert c["request_decoding_error"] > 0
    assert stats.snapshot()["transport"].get("gap", 0) > 0
    lane, table = _lane(records)
    assert lane.snapshot() == stats.snapshot()
    assert table.peeked > 0
