"""TCP reassembly and pairing: any segmentation, reordering and retransmission of a
stream gives the same exchanges as the clean stream."""
from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dissectors.remoting.command import RemotingCommand
from dissectors.remoting.frame import encode
from rmqsniff.flows import FlowTable
from rmqsniff.pairing import PairingSink
from rmqsniff.sources.link import TH_ACK, TH_SYN
from rmqsniff.stats import Stats
from rmqsniff.synth import conversation

CLIENT = (b"\x0a\x00\x00\x01", 40001)
SERVER = (b"\x0a\x00\x00\x02", 10911)


def _table(**kw) -> tuple[FlowTable, list, Stats]:
    out: list = []
    stats = Stats()
    sink = PairingSink(stats, out.append, ordered=True)
    return FlowTable(stats, sink, **kw), out, stats


def _messages(seed: int, turns: int, batch: int) -> list[tuple[bool, bytes]]:
    """(from_client, bytes) in send order: ``batch`` pipelined requests, then their answers."""
    rng = random.Random(seed)
    kind = rng.choice(["producer", "consumer", "namesrv"])
    ts = list(conversation(rng, turns, kind, ser_mix=0.5))
    msgs: list[tuple[bool, bytes]] = []
    for i in range(0, len(ts), batch):
        group = ts[i:i + batch]
        msgs.append((True, b"".join(encode(t.request) for t in group)))
        answers = b"".join(encode(t.response) for t in group if t.response is not None)
        if answers:
            msgs.append((False, answers))
    return msgs


def _feed(table: FlowTable, segments: list[tuple[bool, int, bytes, int]], isn: dict[bool, int],
          handshake: bool) -> None:
    ts = 1000.0
    if handshake:
        table.packet(ts, *CLIENT, *SERVER, isn[True] - 1, 0, TH_SYN, b"")
        table.packet(ts, *SERVER, *CLIENT, isn[False] - 1, isn[True], TH_SYN | TH_ACK, b"")
    for from_client, seq, data, ack in segments:
        ts += 0.001
        src, dst = (CLIENT, SERVER) if from_client else (SERVER, CLIENT)
        table.packet(ts, *src, *dst, seq % (1 << 32), ack % (1 << 32), TH_ACK, data)
    table.finish()


def _fingerprint(exchanges: list) -> list:
    def side(m):
        if m is None:
            return None
        c = m.command
        return (c.code, c.flag, c.opaque, c.serialize, c.remark, c.ext, c.body, m.from_client)
    return [(e.status, side(e.request), side(e.response)) for e in exchanges]


def _segments(msgs, rng: random.Random | None, isn: dict[bool, int], max_chunk: int):
    """Split every message into chunks; with ``rng``, shuffle/duplicate/overlap within a message.

    The first segment of each direction stays first: without a SYN, the first bytes
    seen define where the stream starts (as in a capture that begins mid-connection).
    """
    seq = dict(isn)
    seen: set[bool] = set()
    out: list[tuple[bool, int, bytes, int]] = []
    for from_client, data in msgs:
        chunks = []
        i = 0
        ack = seq[not from_client]  # everything the peer sent so far has arrived
        while i < len(data):
            n = rng.randint(1, max_chunk) if rng else len(data)
            chunks.append((from_client, seq[from_client] + i, data[i:i + n], ack))
            i += n
        if rng:
            extra = []
            for c in chunks:
                r = rng.random()
                if r < 0.15:
                    extra.append(c)  # plain retransmission
                elif r < 0.25 and len(c[2]) > 2:
                    cut = rng.randint(1, len(c[2]) - 1)  # overlapping retransmission of a tail
                    extra.append((c[0], c[1] + cut, c[2][cut:], c[3]))
            first = chunks[0]
            chunks += extra
            rng.shuffle(chunks)
            if from_client not in seen:
                chunks.remove(first)
                chunks.insert(0, first)
        seen.add(from_client)
        seq[from_client] += len(data)
        out += chunks
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), turns=st.integers(1, 12), batch=st.integers(1, 5),
       max_chunk=st.integers(8, 700), handshake=st.booleans(),
       isn_c=st.integers(0, (1 << 32) - 1), isn_s=st.integers(0, (1 << 32) - 1))
def test_any_segmentation_reorder_and_retransmission_gives_the_same_exchanges(
        seed, turns, batch, max_chunk, handshake, isn_c, isn_s):
    msgs = _messages(seed, turns, batch)
    isn = {True: isn_c, False: isn_s}
    clean, clean_out, clean_stats = _table()
    _feed(clean, _segments(msgs, None, isn, 0), isn, True)
    messy, messy_out, messy_stats = _table()
    _feed(messy, _segments(msgs, random.Random(seed), isn, max_chunk), isn, handshake)
    assert _fingerprint(messy_out) == _fingerprint(clean_out)
    assert all(e.status == "answered" for e in clean_out)
    a, b = clean_stats.snapshot()["counters"], messy_stats.snapshot()["counters"]
    assert a == b
    assert b["request_decoding_error"] == 0 and b["response_decoding_error"] == 0


def test_exchange_count_matches_the_conversation():
    msgs = _messages(7, 30, 3)
    isn = {True: 1, False: 2}
    t, out, stats = _table()
    _feed(t, _segments(msgs, random.Random(1), isn, 50), isn, True)
    c = stats.snapshot()["counters"]
    assert len(out) == 30 == c["request"] == c["response"]
    assert [e.index for e in out] == sorted(e.index for e in out)  # emitted in request order


def test_gap_in_the_middle_is_counted_and_decoding_resumes():
    msgs = _messages(3, 12, 1)
    isn = {True: 100, False: 200}
    segs = _segments(msgs, None, isn, 0)
    lost = 4  # the 3rd request (index 4 in send order) never reaches the capture
    assert segs[lost][0] is True
    t, out, stats = _table()
    _feed(t, segs[:lost] + segs[lost + 1:], isn, True)
    snap = stats.snapshot()
    assert snap["transport"]["gap"] == 1
    assert snap["transport"]["gap_bytes"] == len(segs[lost][2])
    statuses = [e.status for e in out]
    assert statuses.count("orphan") == 1  # the lost request's answer
    assert statuses.count("answered") == 11


def test_capture_starting_mid_frame_resyncs_on_the_next_frame():
    msgs = _messages(5, 6, 1)
    isn = {True: 10, False: 20}
    segs = _segments(msgs, None, isn, 0)
    first = segs[0]
    cut = len(first[2]) // 2
    segs[0] = (True, first[1] + cut, first[2][cut:], first[3])  # capture begins in the middle of request 1
    t, out, stats = _table()
    _feed(t, segs, isn, False)
    statuses = [e.status for e in out]
    assert statuses[0] == "orphan"  # its answer, request never seen
    assert statuses.count("answered") == 5
    assert stats.snapshot()["counters"]["request_decoding_error"] == 0  # skipped, not misdecoded


def test_oneway_duplicate_unanswered_and_server_initiated():
    t, out, stats = _table()
    frames = [
        (True, RemotingCommand(37, 2, 1, ext={"producerGroup": "PG"})),  # END_TRANSACTION oneway
        (True, RemotingCommand(310, 0, 2, ext={"a": "PG", "b": "T"})),
        (True, RemotingCommand(310, 0, 2, ext={"a": "PG", "b": "T"})),  # opaque reused
        (False, RemotingCommand(0, 1, 2)),
        (False, RemotingCommand(39, 0, 77, ext={"msgId": "X"})),  # broker asks the producer
        (True, RemotingCommand(0, 1, 77)),
        (True, RemotingCommand(11, 0, 3, ext={"topic": "T", "consumerGroup": "G"})),  # never answered
        (False, RemotingCommand(0, 1, 999)),  # answer to nothing
    ]
    seq = {True: 1, False: 1}
    segs = []
    for fc, cmd in frames:
        data = encode(cmd)
        segs.append((fc, seq[fc], data, seq[not fc]))
        seq[fc] += len(data)
    _feed(t, segs, {True: 1, False: 1}, True)
    by = {(e.status, e.code if e.request else None) for e in out}
    assert ("oneway", 37) in by
    assert ("answered", 39) in by and any(e.server_initiated for e in out if e.code == 39)
    assert ("unanswered", 11) in by
    assert ("orphan", None) in by
    c = stats.snapshot()["counters"]
    assert c["duplicate"] == 1 and c["oneway"] == 1 and c["orphan"] == 1
    assert c["unanswered"] == 2  # the displaced duplicate and the pull
    assert c["send_message_v2"] == 2


def test_roles_from_frames_when_no_syn_and_no_known_port():
    t, out, stats = _table()
    a, b = (b"\x0a\x00\x00\x05", 31000), (b"\x0a\x00\x00\x06", 45000)  # the server has the higher port
    req = encode(RemotingCommand(105, 0, 5, ext={"topic": "T"}))
    resp = encode(RemotingCommand(0, 1, 5, body=b"{}"))
    t.packet(1.0, *a, *b, 1, 1, TH_ACK, req)  # the side sending requests is the client
    t.packet(1.1, *b, *a, 1, 1 + len(req), TH_ACK, resp)
    t.finish()
    assert len(out) == 1 and out[0].status == "answered"
    assert out[0].connection.client == ("10.0.0.5", 31000)
    assert out[0].connection.role_source == "flags"


def test_non_remoting_flows_are_set_aside_not_counted_as_errors():
    t, out, stats = _table()
    junk = bytes(range(256)) * 400  # 100 KiB of non-RocketMQ data on an unknown port
    t.packet(1.0, b"\x0a\x00\x00\x07", 50000, b"\x0a\x00\x00\x08", 5432, 1, 1, TH_ACK, junk)
    tls = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64
    t.packet(1.0, b"\x0a\x00\x00\x07", 50001, b"\x0a\x00\x00\x08", 10911, 1, 1, TH_ACK, tls)
    t.finish()
    c = stats.snapshot()["counters"]
    assert c["request_decoding_error"] == 0 and not out
    assert sum(t.other_flows.values()) == 1
    # the TLS flow is a TLS connection (rmqsniff.protocols.tls): its handshake never finished
    assert stats.snapshot()["transport"]["tls_incomplete"] == 1


def test_remoting_is_recognised_on_an_unknown_port_without_syn():
    t, out, stats = _table()
    a, b = (b"\x0a\x00\x00\x05", 52000), (b"\x0a\x00\x00\x06", 7777)
    seq = {True: 1, False: 1}
    frames = [(True, RemotingCommand(310, 0, 1, ext={"a": "PG", "b": "T"}, body=b"x" * 40)),
              (False, RemotingCommand(0, 1, 1, ext={"msgId": "M", "queueId": "0", "queueOffset": "0"})),
              (True, RemotingCommand(34, 0, 2, body=b"{}")),
              (False, RemotingCommand(0, 1, 2))]
    for fc, cmd in frames:
        data = encode(cmd)
        src, dst = (a, b) if fc else (b, a)
        t.packet(1.0, *src, *dst, seq[fc], seq[not fc], TH_ACK, data)
        seq[fc] += len(data)
    t.finish()
    assert [(e.status, e.code) for e in out] == [("answered", 310), ("answered", 34)]
    assert out[0].connection.server == ("10.0.0.6", 7777)
    assert not t.other_flows
