"""The proxy's tap, sans-I/O: its fast way (peeked frames, ``Pairing.lite``, exchanges kept as
frame bytes) must count and show exactly what the full decode does, on real traffic."""
from __future__ import annotations

from pathlib import Path

import pytest

from dissectors.remoting import JSON, ROCKETMQ, RemotingCommand, StreamDecoder, encode
from dissectors.remoting.codec import Frame
from replay.proxy.remoting import RemotingTap
from replay.proxy.server import Recent
from rmqsniff.exporters.exchanges import exchange_to_dict
from rmqsniff.model import Connection
from rmqsniff.pairing import PairingSink
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
        if type(seg) is str:
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
    sink = PairingSink(stats, recent.add, ordered=False, keep=recent.add_raw)
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
    assert len(shown) == 1 and shown[0].request.command.body == b"body"
